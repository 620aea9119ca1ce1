//! Traffic control over rtnetlink, for per-container bandwidth limits: a token bucket (tbf)
//! as a device's root qdisc, the ingress qdisc, and a match-everything u32 filter whose
//! mirred action redirects a device's incoming packets to an ifb device (where a tbf can
//! shape them). This kernel has tbf, ingress, u32, mirred and ifb; not the police action.
//!
//! tbf has no type in netlink-packet-route, so its options are written here from the UAPI
//! (linux/pkt_sched.h: struct tc_tbf_qopt, TCA_TBF_*).

use std::io;

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector,
    TcU32SelectorFlags,
};

use super::netlink::Netlink;

/// TC_H_ROOT and TC_H_INGRESS (the ingress qdisc's parent), and the ingress qdisc's handle.
const ROOT: TcHandle = TcHandle { major: 0xffff, minor: 0xffff };
const INGRESS_PARENT: TcHandle = TcHandle { major: 0xffff, minor: 0xfff1 };
const INGRESS_HANDLE: TcHandle = TcHandle { major: 0xffff, minor: 0 };
// TCA_TBF_*.
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
/// TC_LINKLAYER_ETHERNET: the kernel computes transmit times itself (no rate table).
const LINKLAYER_ETHERNET: u8 = 1;
/// ETH_P_ALL in network order, as a filter's protocol.
const ETH_P_ALL_BE: u16 = 0x0003u16.to_be();

fn message(ifindex: u32, parent: TcHandle, handle: TcHandle) -> TcMessage {
    let mut m = TcMessage::default();
    m.header.index = ifindex as i32;
    m.header.parent = parent;
    m.header.handle = handle;
    m
}

/// A token bucket's parameters for `rate_bits` per second: a burst of 10 ms at that rate
/// (at least 16 KiB, so full-size frames and TSO bursts pass) and a queue of 50 ms.
pub fn tbf_options(rate_bits: u64) -> Vec<TcOption> {
    let rate = rate_bits / 8;
    let burst = (rate / 100).max(16 * 1024) as u32;
    let limit = ((rate / 20) as u32).saturating_add(burst);
    // struct tc_tbf_qopt { tc_ratespec rate, peakrate; u32 limit, buffer, mtu } with
    // struct tc_ratespec { u8 cell_log, linklayer; u16 overhead; s16 cell_align; u16 mpu; u32 rate }.
    let mut qopt = Vec::with_capacity(36);
    let ratespec = |bytes_per_s: u64| {
        let mut r = vec![0u8, LINKLAYER_ETHERNET, 0, 0, 0, 0, 0, 0];
        r.extend_from_slice(&(bytes_per_s.min(u32::MAX as u64) as u32).to_ne_bytes());
        r
    };
    qopt.extend(ratespec(rate));
    qopt.extend(vec![0u8; 12]); // no peak rate
    qopt.extend_from_slice(&limit.to_ne_bytes());
    qopt.extend_from_slice(&0u32.to_ne_bytes()); // buffer: given as TCA_TBF_BURST in bytes
    qopt.extend_from_slice(&0u32.to_ne_bytes()); // mtu: no peak rate
    vec![
        TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, qopt)),
        TcOption::Other(DefaultNla::new(TCA_TBF_RATE64, rate.to_ne_bytes().to_vec())),
        TcOption::Other(DefaultNla::new(TCA_TBF_BURST, burst.to_ne_bytes().to_vec())),
    ]
}

/// Replaces the device's root qdisc with a token bucket of `rate_bits` per second.
pub fn set_rate(nl: &mut Netlink, ifindex: u32, rate_bits: u64) -> io::Result<()> {
    let mut m = message(ifindex, ROOT, TcHandle { major: 1, minor: 0 });
    m.attributes.push(TcAttribute::Kind("tbf".into()));
    m.attributes.push(TcAttribute::Options(tbf_options(rate_bits)));
    nl.request(RouteNetlinkMessage::NewQueueDiscipline(m), NLM_F_CREATE | NLM_F_REPLACE)
}

/// Removes the device's root qdisc (back to the default); fine if there is none of ours.
pub fn clear_rate(nl: &mut Netlink, ifindex: u32) -> io::Result<()> {
    let m = message(ifindex, ROOT, TcHandle { major: 0, minor: 0 });
    match nl.request(RouteNetlinkMessage::DelQueueDiscipline(m), 0) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => Ok(()),
        r => r,
    }
}

/// Redirects everything arriving on `ifindex` to `to` (an ifb): the ingress qdisc and one
/// u32 filter matching every packet, with a mirred egress redirect.
pub fn redirect_ingress(nl: &mut Netlink, ifindex: u32, to: u32) -> io::Result<()> {
    let mut q = message(ifindex, INGRESS_PARENT, INGRESS_HANDLE);
    q.attributes.push(TcAttribute::Kind("ingress".into()));
    match nl.request(RouteNetlinkMessage::NewQueueDiscipline(q), NLM_F_CREATE) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        r => r?,
    }
    let mut selector = TcU32Selector::default();
    selector.flags = TcU32SelectorFlags::Terminal;
    selector.nkeys = 1;
    selector.keys = vec![TcU32Key::default()]; // mask 0: every packet matches
    let mut generic = TcActionGeneric::default();
    generic.action = TcActionType::Stolen;
    let mut mirror = TcMirror::default();
    mirror.generic = generic;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to;
    let mut action = TcAction::default();
    action.tab = 1;
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(mirror))]),
    ];
    let mut f = message(ifindex, INGRESS_HANDLE, TcHandle { major: 0, minor: 0 });
    // info: priority 1 in the high half, the protocol in the low half.
    f.header.info = (1u32 << 16) | ETH_P_ALL_BE as u32;
    f.attributes.push(TcAttribute::Kind("u32".into()));
    f.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(selector)),
        TcOption::U32(TcFilterU32Option::Action(vec![action])),
    ]));
    nl.request(RouteNetlinkMessage::NewTrafficFilter(f), NLM_F_CREATE | NLM_F_REPLACE)
}

/// Removes the ingress qdisc (and with it the redirect); fine if there is none.
pub fn clear_ingress(nl: &mut Netlink, ifindex: u32) -> io::Result<()> {
    let q = message(ifindex, INGRESS_PARENT, INGRESS_HANDLE);
    match nl.request(RouteNetlinkMessage::DelQueueDiscipline(q), 0) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => Ok(()),
        r => r,
    }
}

/// "10mbit", "1.5gbit", "500kbit", "100mbps" (bytes), "64000" (bits): bits per second.
pub fn parse_rate(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit {
        "" | "bit" => 1.0,
        "kbit" | "k" => 1e3,
        "mbit" | "m" => 1e6,
        "gbit" | "g" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return None,
    };
    let bits = (n * mult) as u64;
    (bits >= 8_000).then_some(bits) // below 1 kB/s no token bucket makes sense
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_tc_units() {
        assert_eq!(parse_rate("10mbit"), Some(10_000_000));
        assert_eq!(parse_rate("1.5gbit"), Some(1_500_000_000));
        assert_eq!(parse_rate("100mbps"), Some(800_000_000));
        assert_eq!(parse_rate("64000"), Some(64_000));
        assert_eq!(parse_rate("10"), None);
        assert_eq!(parse_rate("fast"), None);
        assert_eq!(parse_rate("10 furlongs"), None);
    }

    #[test]
    fn tbf_parameters_have_the_kernels_layout() {
        let opts = tbf_options(10_000_000);
        let TcOption::Other(parms) = &opts[0] else { panic!() };
        let mut buf = vec![0u8; netlink_packet_core::Emitable::buffer_len(parms)];
        netlink_packet_core::Emitable::emit(parms, &mut buf);
        // 4 bytes of attribute header, then struct tc_tbf_qopt (36 bytes).
        assert_eq!(buf.len(), 4 + 36);
        assert_eq!(buf[4 + 1], LINKLAYER_ETHERNET);
        assert_eq!(u32::from_ne_bytes(buf[4 + 8..4 + 12].try_into().unwrap()), 1_250_000);
    }
}
