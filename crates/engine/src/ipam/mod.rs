//! IP address management: subnets, default pools, gateway/range checks and allocation.
//! Pure functions over the store's model, unit-tested without root.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Result, bail};
use ipnet::{Ipv4Net, Ipv6Net};

/// Docker's default local pools: 172.17–31.0.0/16, then 192.168.0.0/16 cut into /20s.
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let b16 = (17u8..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("valid"));
    let c20 = (0u8..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).expect("valid"));
    b16.chain(c20)
}

/// The first default pool that overlaps none of `used` (other networks and host routes).
pub fn next_free_pool(used: &[Ipv4Net]) -> Option<Ipv4Net> {
    default_pools().find(|p| !used.iter().any(|u| overlaps(p, u)))
}

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Parses a CIDR given for `what` (e.g. "--subnet"), insisting on a network address.
pub fn parse_cidr(what: &str, s: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = match s.parse() {
        Ok(n) => n,
        Err(_) => bail!("{what} {s:?} is not a valid CIDR: expected an IPv4 network such as 10.20.0.0/24"),
    };
    if net.network() != net.addr() {
        bail!("{what} {s:?} has host bits set: did you mean {}?", net.trunc());
    }
    Ok(net)
}

pub fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr> {
    match s.parse() {
        Ok(ip) => Ok(ip),
        Err(_) => bail!("{what} {s:?} is not a valid IPv4 address"),
    }
}

/// Checks a subnet/gateway/range triple and returns the gateway to use.
pub fn validate(subnet: Ipv4Net, gateway: Option<Ipv4Addr>, range: Option<Ipv4Net>) -> Result<Ipv4Addr> {
    if subnet.prefix_len() > 30 {
        bail!("subnet {subnet} is too small: use a prefix of /30 or shorter (room for a gateway and containers)");
    }
    let gw = gateway.unwrap_or_else(|| first_host(subnet));
    if !subnet.contains(&gw) {
        bail!("gateway {gw} is outside subnet {subnet}: pick an address inside it");
    }
    if gw == subnet.network() || gw == subnet.broadcast() {
        bail!("gateway {gw} is the network or broadcast address of {subnet}: pick a host address");
    }
    if let Some(r) = range {
        if !(subnet.contains(&r.network()) && subnet.contains(&r.broadcast())) {
            bail!("--ip-range {r} is not inside subnet {subnet}");
        }
        let (lo, hi) = bounds(subnet, Some(r));
        let usable = (lo..=hi).filter(|v| *v != u32::from(gw)).count();
        if usable == 0 {
            bail!("--ip-range {r} leaves no address for containers in {subnet}");
        }
    }
    Ok(gw)
}

pub fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Inclusive bounds (as integers) of the addresses containers may get.
fn bounds(subnet: Ipv4Net, range: Option<Ipv4Net>) -> (u32, u32) {
    let lo = u32::from(subnet.network()) + 1;
    let hi = u32::from(subnet.broadcast()) - 1;
    match range {
        Some(r) => (lo.max(u32::from(r.network())), hi.min(u32::from(r.broadcast()))),
        None => (lo, hi),
    }
}

/// Checks an address asked for with --ip.
pub fn check_requested(subnet: Ipv4Net, gateway: Ipv4Addr, ip: Ipv4Addr) -> Result<()> {
    if !subnet.contains(&ip) {
        bail!("--ip {ip} is outside the network's subnet {subnet}: pick an address inside it");
    }
    if ip == gateway {
        bail!("--ip {ip} is the network's gateway: pick another address");
    }
    if ip == subnet.network() || ip == subnet.broadcast() {
        bail!("--ip {ip} is the network or broadcast address of {subnet}: pick a host address");
    }
    Ok(())
}

/// Hands out the next free address after `cursor` (wrapping), skipping `reserved` (the
/// gateway, a host shim), so a
/// just-freed address is not reused at once (ARP caches elsewhere may still hold it).
/// `probe` asks the store about one address; after a run of misses the allocator asks for
/// the whole used set once (`load_used`) so a nearly full network stays O(size), not O(size) queries.
/// Returns the address and the new cursor.
pub fn allocate(
    subnet: Ipv4Net,
    reserved: &[Ipv4Addr],
    range: Option<Ipv4Net>,
    cursor: u32,
    mut probe: impl FnMut(Ipv4Addr) -> Result<bool>,
    load_used: impl FnOnce() -> Result<Vec<Ipv4Addr>>,
) -> Result<(Ipv4Addr, u32)> {
    let (lo, hi) = bounds(subnet, range);
    let size = (hi - lo + 1) as u64;
    let start = if cursor >= lo && cursor < hi { cursor + 1 } else { lo };
    let mut used: Option<HashSet<Ipv4Addr>> = None;
    let mut load_used = Some(load_used);
    for i in 0..size {
        let v = lo + ((start - lo) as u64 + i).rem_euclid(size) as u32;
        let ip = Ipv4Addr::from(v);
        if reserved.contains(&ip) {
            continue;
        }
        if used.is_none() && i >= 64 {
            used = Some(load_used.take().expect("loaded once")()?.into_iter().collect());
        }
        let taken = match &used {
            Some(set) => set.contains(&ip),
            None => probe(ip)?,
        };
        if !taken {
            return Ok((ip, v));
        }
    }
    match range {
        Some(r) => bail!("no free address left in --ip-range {r} of {subnet}: remove containers or widen the range"),
        None => bail!("no free address left in {subnet}: remove containers or use a larger subnet"),
    }
}

// ---- IPv6 (dual-stack networks) ----

/// An IPv6 CIDR given for `what`, insisting on a network address.
pub fn parse_cidr6(what: &str, s: &str) -> Result<Ipv6Net> {
    let net: Ipv6Net = match s.parse() {
        Ok(n) => n,
        Err(_) => bail!("{what} {s:?} is not a valid IPv6 CIDR: expected a network such as fd00:1::/64"),
    };
    if net.network() != net.addr() {
        bail!("{what} {s:?} has host bits set: did you mean {}?", net.trunc());
    }
    Ok(net)
}

pub fn parse_ip6(what: &str, s: &str) -> Result<Ipv6Addr> {
    match s.parse() {
        Ok(ip) => Ok(ip),
        Err(_) => bail!("{what} {s:?} is not a valid IPv6 address"),
    }
}

pub fn overlaps6(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A unique local /64 (RFC 4193: fd + a random 40-bit global ID, subnet 0) that overlaps
/// none of `used` — Docker's choice of a ULA pool for `--ipv6` without a subnet.
pub fn random_ula(used: &[Ipv6Net], mut random: impl FnMut() -> [u8; 5]) -> Ipv6Net {
    loop {
        let g = random();
        let mut o = [0u8; 16];
        o[0] = 0xfd;
        o[1..6].copy_from_slice(&g);
        let net = Ipv6Net::new(Ipv6Addr::from(o), 64).expect("valid prefix");
        if !used.iter().any(|u| overlaps6(u, &net)) {
            return net;
        }
    }
}

/// Checks an IPv6 subnet and gateway of a dual-stack network whose IPv4 subnet is `v4`, and
/// returns the gateway (default: the subnet's ::1). Containers' IPv6 addresses follow their
/// IPv4 ones (172.18.0.5 → prefix::5), so the IPv6 subnet must hold as many addresses.
pub fn validate6(subnet: Ipv6Net, gateway: Option<Ipv6Addr>, v4: Ipv4Net) -> Result<Ipv6Addr> {
    let room = 128 - subnet.prefix_len() as u32;
    if room < 32 - v4.prefix_len() as u32 {
        bail!(
            "IPv6 subnet {subnet} is smaller than the IPv4 subnet {v4}: use a prefix of /{} or shorter (a /64 is usual)",
            96 + v4.prefix_len() as u32
        );
    }
    let gw = gateway.unwrap_or_else(|| Ipv6Addr::from(u128::from(subnet.network()) + 1));
    if !subnet.contains(&gw) {
        bail!("IPv6 gateway {gw} is outside subnet {subnet}: pick an address inside it");
    }
    if gw == subnet.network() {
        bail!("IPv6 gateway {gw} is the subnet-router anycast address of {subnet}: pick another");
    }
    Ok(gw)
}

/// Checks an address asked for with --ip6.
pub fn check_requested6(subnet: Ipv6Net, gateway: Ipv6Addr, ip: Ipv6Addr) -> Result<()> {
    if !subnet.contains(&ip) {
        bail!("--ip6 {ip} is outside the network's IPv6 subnet {subnet}: pick an address inside it");
    }
    if ip == gateway || ip == subnet.network() {
        bail!("--ip6 {ip} is the network's IPv6 gateway or subnet-router address: pick another");
    }
    Ok(())
}

/// A container's IPv6 address: the IPv4 one's host part inside the IPv6 subnet
/// (10.1.0.5/24 → fd00:1::5), so both are read together at a glance. Should that be taken
/// (an `--ip6` of another container, the gateway), the same host part in the next blocks of
/// the IPv4 subnet's size, then the first free address.
pub fn allocate6(
    subnet: Ipv6Net,
    v4: Ipv4Net,
    ip: Ipv4Addr,
    gateway: Ipv6Addr,
    mut taken: impl FnMut(Ipv6Addr) -> Result<bool>,
) -> Result<Ipv6Addr> {
    let base = u128::from(subnet.network());
    let offset = (u32::from(ip) - u32::from(v4.network())) as u128;
    let block = 1u128 << (32 - v4.prefix_len() as u32);
    let last = u128::from(subnet.broadcast());
    let derived = (0..64u128).map(|k| base + k * block + offset);
    let scan = (base + 2..=last).take(1 << 16);
    for v in derived.chain(scan).filter(|v| *v <= last && *v != base) {
        let cand = Ipv6Addr::from(v);
        if cand != gateway && !taken(cand)? {
            return Ok(cand);
        }
    }
    bail!("no free IPv6 address found in {subnet}: remove containers or use a larger subnet")
}

/// Docker-style MAC derived from the IPv4 address (02:42:a:b:c:d), so a container that
/// comes back with the same address keeps the same MAC and neighbours' ARP stays valid.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// "aa:bb:cc:dd:ee:ff" (any case); None for anything else, a multicast address or zero.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| (p.len() == 2).then(|| u8::from_str_radix(p, 16).ok()).flatten())
        .collect::<Option<_>>()?;
    let mac: [u8; 6] = parts.try_into().ok()?;
    (mac[0] & 1 == 0 && mac != [0; 6]).then_some(mac)
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn pools_skip_used_ranges() {
        assert_eq!(next_free_pool(&[]), Some(net("172.17.0.0/16")));
        assert_eq!(next_free_pool(&[net("172.17.5.0/24")]), Some(net("172.18.0.0/16")));
        let all_b: Vec<_> = (17..=31).map(|b| net(&format!("172.{b}.0.0/16"))).collect();
        let mut used = all_b.clone();
        used.push(net("192.168.1.0/24"));
        assert_eq!(next_free_pool(&used), Some(net("192.168.16.0/20")));
        used.push(net("192.168.0.0/16"));
        assert_eq!(next_free_pool(&used), None);
    }

    #[test]
    fn cidr_errors_are_specific() {
        assert!(parse_cidr("--subnet", "10.0.0.0/33").unwrap_err().to_string().contains("not a valid CIDR"));
        assert!(parse_cidr("--subnet", "10.0.0.5/24").unwrap_err().to_string().contains("10.0.0.0/24"));
        assert!(validate(net("10.0.0.0/31"), None, None).is_err());
        assert!(validate(net("10.0.0.0/24"), Some("10.0.1.1".parse().unwrap()), None).is_err());
        assert!(validate(net("10.0.0.0/24"), None, Some(net("10.0.1.0/28"))).is_err());
        assert_eq!(validate(net("10.0.0.0/24"), None, None).unwrap(), Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn allocation_is_sequential_skips_gateway_and_honours_range() {
        let subnet = net("10.0.0.0/29"); // hosts .1-.6, gateway .1
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let mut taken: HashSet<Ipv4Addr> = HashSet::new();
        let mut cursor = 0;
        let mut got = vec![];
        for _ in 0..5 {
            let (ip, c) = allocate(subnet, &[gw], None, cursor, |ip| Ok(taken.contains(&ip)), || Ok(vec![])).unwrap();
            taken.insert(ip);
            got.push(ip.octets()[3]);
            cursor = c;
        }
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        assert!(allocate(subnet, &[gw], None, cursor, |ip| Ok(taken.contains(&ip)), || Ok(vec![])).is_err());
        // Freed .3 is found again only after wrapping.
        taken.remove(&Ipv4Addr::new(10, 0, 0, 3));
        let (ip, _) = allocate(subnet, &[gw], None, cursor, |ip| Ok(taken.contains(&ip)), || Ok(vec![])).unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 3));
        let (ip, _) =
            allocate(net("10.0.0.0/24"), &[gw], Some(net("10.0.0.128/25")), 0, |_| Ok(false), || Ok(vec![])).unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 128));
    }

    #[test]
    fn large_scan_switches_to_the_used_set() {
        let subnet = net("10.0.0.0/24");
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let used: Vec<Ipv4Addr> = (2..200).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        let mut probes = 0;
        let (ip, _) = allocate(
            subnet,
            &[gw],
            None,
            0,
            |ip| {
                probes += 1;
                Ok(used.contains(&ip))
            },
            || Ok(used.clone()),
        )
        .unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 200));
        assert!(probes <= 64);
    }

    #[test]
    fn ipv6_follows_ipv4_and_checks_sizes() {
        let v4 = net("10.1.0.0/24");
        let v6: Ipv6Net = "fd00:1::/64".parse().unwrap();
        let gw6 = validate6(v6, None, v4).unwrap();
        assert_eq!(gw6, "fd00:1::1".parse::<Ipv6Addr>().unwrap());
        let a = allocate6(v6, v4, "10.1.0.5".parse().unwrap(), gw6, |_| Ok(false)).unwrap();
        assert_eq!(a, "fd00:1::5".parse::<Ipv6Addr>().unwrap());
        // The IPv4 gateway is .254: a container at .1 must not get the IPv6 gateway.
        let a = allocate6(v6, v4, "10.1.0.1".parse().unwrap(), gw6, |_| Ok(false)).unwrap();
        assert_eq!(a, "fd00:1::101".parse::<Ipv6Addr>().unwrap());
        let taken: Ipv6Addr = "fd00:1::7".parse().unwrap();
        let a = allocate6(v6, v4, "10.1.0.7".parse().unwrap(), gw6, |x| Ok(x == taken)).unwrap();
        assert_eq!(a, "fd00:1::107".parse::<Ipv6Addr>().unwrap());
        assert!(
            validate6("fd00:1::/120".parse().unwrap(), None, net("10.0.0.0/16"))
                .unwrap_err()
                .to_string()
                .contains("/112")
        );
        assert!(validate6(v6, Some("fd00:2::1".parse().unwrap()), v4).is_err());
        assert!(check_requested6(v6, gw6, "fd00:2::9".parse().unwrap()).is_err());
        assert!(check_requested6(v6, gw6, gw6).is_err());
        assert!(parse_cidr6("--subnet", "fd00:1::1/64").unwrap_err().to_string().contains("fd00:1::/64"));
        let used: Vec<Ipv6Net> = vec!["fd00:100::/64".parse().unwrap()];
        let mut n = 0u8;
        let u = random_ula(&used, || {
            n += 1;
            if n == 1 { [0, 1, 0, 0, 0] } else { [9, 9, 9, 9, 9] }
        });
        assert_eq!(u, "fd09:909:909::/64".parse::<Ipv6Net>().unwrap(), "a clash is drawn again");
    }

    #[test]
    fn requested_addresses_are_checked() {
        let subnet = net("10.0.0.0/24");
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        assert!(check_requested(subnet, gw, "10.0.1.5".parse().unwrap()).is_err());
        assert!(check_requested(subnet, gw, gw).is_err());
        assert!(check_requested(subnet, gw, "10.0.0.255".parse().unwrap()).is_err());
        assert!(check_requested(subnet, gw, "10.0.0.9".parse().unwrap()).is_ok());
        assert_eq!(format_mac(mac_for("172.17.0.2".parse().unwrap())), "02:42:ac:11:00:02");
    }
}
