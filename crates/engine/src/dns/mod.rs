//! The embedded DNS resolver (Docker's 127.0.0.11), in two parts: here the zone — which
//! names each container may see and what they answer — as pure functions over the store;
//! in `server` the long-lived process that listens inside container namespaces.
//!
//! A name resolves only on a network the asker shares with its owner, so DNS does not
//! leak across networks; the default `bridge` network has no names, as in Docker.

pub mod server;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::store::{Container, Endpoint, Network, State};

pub const TTL: u32 = 600;

/// What one container contributes: per network, its address and names.
#[derive(Debug, Clone, Default)]
struct Contribution {
    networks: Vec<String>,
    records: Vec<(String, IpAddr, Vec<String>)>,
}

/// Everything the resolver knows, indexed for O(1) answers; updated per container.
#[derive(Debug, Default)]
pub struct Zone {
    by_container: HashMap<String, Contribution>,
    /// name → (network, address, container): a dual-stack container's name has both.
    names: HashMap<String, Vec<(String, IpAddr, String)>>,
    /// address → (network, primary name)
    addrs: HashMap<IpAddr, Vec<(String, String)>>,
    /// container → its own --dns upstreams.
    pub upstreams_of: HashMap<String, Vec<IpAddr>>,
    /// container → gateways where it also expects the resolver (networks whose front end
    /// writes the gateway into resolv.conf, as Podman does with aardvark-dns).
    pub dns_gateways: HashMap<String, Vec<Ipv4Addr>>,
    /// The ids under which other hosts' endpoints are recorded ("remote:EP").
    remote_ids: Vec<String>,
    /// Services by name: (network, VIP, backends' addresses). `NAME` answers the VIP,
    /// `tasks.NAME` every backend (Swarm's names), on the service's network only.
    services: HashMap<String, Vec<(String, Ipv4Addr, Vec<Ipv4Addr>)>>,
}

/// A network option: its containers ask DNS at the gateway address (Podman's convention).
pub const DNS_AT_GATEWAY: &str = "netwright.dns_at_gateway";

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    pub fn build(networks: &[Network], containers: &[Container], endpoints: &[Endpoint]) -> Zone {
        let mut z = Zone::default();
        let mut eps_of: HashMap<&str, Vec<&Endpoint>> = HashMap::new();
        for e in endpoints {
            eps_of.entry(e.container_id.as_str()).or_default().push(e);
        }
        for c in containers {
            let eps: Vec<Endpoint> =
                eps_of.get(c.id.as_str()).map(|v| v.iter().map(|e| (*e).clone()).collect()).unwrap_or_default();
            z.update(networks, &c.id, Some(c), &eps);
        }
        z
    }

    /// Replaces what container `id` contributes (nothing when `c` is None or exited).
    pub fn update(&mut self, networks: &[Network], id: &str, c: Option<&Container>, eps: &[Endpoint]) {
        self.remove(id);
        // Created too: a container's resolver must be listening before its process starts.
        let Some(c) = c.filter(|c| c.state != State::Exited) else { return };
        let mut contribution = Contribution::default();
        for e in eps {
            let Some(ip) = e.ip else { continue };
            if !networks.iter().any(|n| n.id == e.network_id && n.serves_names()) {
                continue;
            }
            let mut names = vec![normalize(&c.name), normalize(&c.hostname)];
            names.extend(e.aliases.iter().map(|a| normalize(a)));
            names.dedup();
            contribution.networks.push(e.network_id.clone());
            for ip in std::iter::once(IpAddr::V4(ip)).chain(e.ip6.map(IpAddr::V6)) {
                for n in &names {
                    self.names.entry(n.clone()).or_default().push((e.network_id.clone(), ip, c.id.clone()));
                }
                self.addrs.entry(ip).or_default().push((e.network_id.clone(), names[0].clone()));
                contribution.records.push((e.network_id.clone(), ip, names.clone()));
            }
            if let Some(n) = networks.iter().find(|n| n.id == e.network_id)
                && n.options.get(DNS_AT_GATEWAY).is_some_and(|v| v == "true")
            {
                self.dns_gateways.entry(c.id.clone()).or_default().push(n.gateway);
            }
        }
        if contribution.networks.is_empty() {
            return;
        }
        self.upstreams_of.insert(c.id.clone(), c.dns.iter().filter_map(|d| d.parse().ok()).collect());
        self.by_container.insert(c.id.clone(), contribution);
    }

    /// Forgets a container's records (its names answer nothing from now on).
    pub fn remove(&mut self, id: &str) {
        self.dns_gateways.remove(id);
        let Some(old) = self.by_container.remove(id) else { return };
        self.upstreams_of.remove(id);
        for (net, ip, names) in old.records {
            for n in names {
                if let Some(v) = self.names.get_mut(&n) {
                    v.retain(|(_, _, cid)| cid != id);
                    if v.is_empty() {
                        self.names.remove(&n);
                    }
                }
            }
            if let Some(v) = self.addrs.get_mut(&ip) {
                v.retain(|(n, _)| *n != net);
                if v.is_empty() {
                    self.addrs.remove(&ip);
                }
            }
        }
    }

    /// Replaces the names of other hosts' containers on overlay networks (from the store's
    /// mirror of etcd). They answer like local ones, on the networks they are on.
    pub fn set_remotes(&mut self, networks: &[Network], remotes: &[crate::model::RemoteEndpoint]) {
        for id in std::mem::take(&mut self.remote_ids) {
            self.remove(&id);
        }
        for r in remotes {
            if !networks.iter().any(|n| n.id == r.network_id && n.serves_names()) {
                continue;
            }
            let id = format!("remote:{}", r.id);
            let mut names: Vec<String> = r.names.iter().map(|n| normalize(n)).collect();
            names.dedup();
            let Some(primary) = names.first().cloned() else { continue };
            let ip = IpAddr::V4(r.ip);
            for n in &names {
                self.names.entry(n.clone()).or_default().push((r.network_id.clone(), ip, id.clone()));
            }
            self.addrs.entry(ip).or_default().push((r.network_id.clone(), primary));
            // Recorded like a container's, so `remove` takes it out the same way; it never
            // asks, so it gets no resolver (see `served`).
            self.by_container.insert(
                id.clone(),
                Contribution { networks: vec![], records: vec![(r.network_id.clone(), ip, names)] },
            );
            self.remote_ids.push(id);
        }
    }

    /// Replaces the services (their VIPs and backends).
    pub fn set_services(&mut self, svcs: &[(crate::model::Service, Vec<crate::model::Backend>)]) {
        self.services.clear();
        for (s, backends) in svcs {
            self.services.entry(normalize(&s.name)).or_default().push((
                s.network_id.clone(),
                s.vip,
                backends.iter().map(|b| b.ip).collect(),
            ));
        }
    }

    /// A service's answer: its VIP for NAME, its backends for tasks.NAME (None: no such
    /// service on the asker's networks).
    fn service_lookup(&self, mine: &[String], name: &str) -> Option<Vec<IpAddr>> {
        let (key, tasks) = match name.strip_prefix("tasks.") {
            Some(n) => (n, true),
            None => (name, false),
        };
        let found = self.services.get(key)?.iter().find(|(net, _, _)| mine.contains(net))?;
        Some(if tasks { found.2.iter().map(|ip| IpAddr::V4(*ip)).collect() } else { vec![IpAddr::V4(found.1)] })
    }

    /// Containers that get a resolver (those on at least one user-defined network).
    pub fn served(&self) -> impl Iterator<Item = &String> {
        self.by_container.iter().filter(|(_, c)| !c.networks.is_empty()).map(|(id, _)| id)
    }

    pub fn serves(&self, id: &str) -> bool {
        self.by_container.get(id).is_some_and(|c| !c.networks.is_empty())
    }

    /// Addresses (both families) for `name` as seen by `asker`: None when no container
    /// anywhere has the name (ask upstream), Some(empty) when it exists only on other networks.
    pub fn lookup(&self, asker: &str, name: &str) -> Option<Vec<IpAddr>> {
        let mine = &self.by_container.get(asker)?.networks;
        let name = normalize(name);
        // A service's name wins over its backends' alias of the same name.
        if let Some(ips) = self.service_lookup(mine, &name) {
            return Some(ips);
        }
        let found = self.names.get(&name)?;
        let mut ips = Vec::new();
        for (net, ip, _) in found {
            if mine.contains(net) && !ips.contains(ip) {
                ips.push(*ip);
            }
        }
        Some(ips)
    }

    /// The container name for an address on a network the asker shares.
    pub fn reverse(&self, asker: &str, ip: IpAddr) -> Option<String> {
        let mine = &self.by_container.get(asker)?.networks;
        let vip = self.services.iter().find_map(|(name, v)| {
            v.iter().any(|(net, vip, _)| mine.contains(net) && IpAddr::V4(*vip) == ip).then(|| name.clone())
        });
        if vip.is_some() {
            return vip;
        }
        self.addrs.get(&ip)?.iter().find(|(n, _)| mine.contains(n)).map(|(_, name)| name.clone())
    }

    #[cfg(test)]
    fn entry_count(&self) -> usize {
        self.by_container.values().map(|c| c.records.len()).sum()
    }
}

/// 4.3.2.1.in-addr.arpa → 1.2.3.4; 32 nibbles of ….ip6.arpa → the IPv6 address.
fn ptr_address(name: &str) -> Option<IpAddr> {
    let name = normalize(name);
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let nibbles: Vec<u8> = rest
            .split('.')
            .map(|p| (p.len() == 1).then(|| u8::from_str_radix(p, 16).ok()).flatten())
            .collect::<Option<_>>()?;
        if nibbles.len() != 32 {
            return None;
        }
        let v = nibbles.iter().rev().fold(0u128, |acc, n| (acc << 4) | *n as u128);
        return Some(IpAddr::V6(Ipv6Addr::from(v)));
    }
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut o: Vec<u8> = rest.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    if o.len() != 4 {
        return None;
    }
    o.reverse();
    Some(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])))
}

/// What to do with a query.
pub enum Decision {
    Reply(Vec<u8>),
    /// Not ours: ask upstream.
    Forward,
    /// Not a query at all (a response sent to us): no answer, or two resolvers could
    /// bounce packets between them forever.
    Drop,
}

/// Answers a query from `asker` out of the zone; `rotate` turns the order of a
/// multi-address answer (round robin).
pub fn answer(zone: &Zone, asker: &str, query: &Message, rotate: usize) -> Decision {
    if query.metadata.message_type == MessageType::Response {
        return Decision::Drop;
    }
    // NOTIFY, UPDATE, STATUS, IQUERY: not something a stub resolver serves.
    if query.metadata.op_code != OpCode::Query {
        return Decision::Reply(error(query, ResponseCode::NotImp));
    }
    let Some(q) = query.queries.first() else {
        return Decision::Reply(error(query, ResponseCode::FormErr));
    };
    // Zone transfers are refused, never forwarded.
    if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
        return Decision::Reply(error(query, ResponseCode::Refused));
    }
    let qname = q.name().to_ascii();
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(q.clone());
    match q.query_type() {
        RecordType::PTR => match ptr_address(&qname) {
            Some(ip) => match zone.reverse(asker, ip) {
                Some(target) => {
                    reply.metadata.authoritative = true;
                    if let Ok(t) = Name::from_ascii(format!("{target}.")) {
                        reply.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::PTR(PTR(t))));
                    }
                }
                None => return Decision::Forward,
            },
            None => return Decision::Forward,
        },
        t => match zone.lookup(asker, &qname) {
            None => return Decision::Forward,
            Some(ips) if ips.is_empty() => reply.metadata.response_code = ResponseCode::NXDomain,
            Some(ips) => {
                reply.metadata.authoritative = true;
                // AAAA for an IPv4-only container (and any other type): NOERROR, no data.
                let mut rdata: Vec<RData> = ips
                    .into_iter()
                    .filter_map(|ip| match (t, ip) {
                        (RecordType::A, IpAddr::V4(a)) => Some(RData::A(A(a))),
                        (RecordType::AAAA, IpAddr::V6(a)) => Some(RData::AAAA(AAAA(a))),
                        _ => None,
                    })
                    .collect();
                if !rdata.is_empty() {
                    let n = rdata.len();
                    rdata.rotate_left(rotate % n);
                }
                for r in rdata {
                    reply.add_answer(Record::from_rdata(q.name().clone(), TTL, r));
                }
            }
        },
    }
    Decision::Reply(reply.to_vec().unwrap_or_else(|_| error(query, ResponseCode::ServFail)))
}

/// The common case without parsing into a Message: one A or AAAA question for a name
/// the zone knows, answered straight from the wire bytes into `out`. Anything else
/// (other types, unknown names, odd headers) returns false and takes the full path, which
/// answers the same way.
pub fn answer_fast(zone: &Zone, asker: &str, q: &[u8], rotate: usize, out: &mut Vec<u8>) -> bool {
    // Header: a standard query (QR=0, opcode 0), one question, no answers or authority.
    if q.len() < 17 || q[2] & 0xf8 != 0 || q[4..8] != [0, 1, 0, 0] || q[8..10] != [0, 0] {
        return false;
    }
    let mut name = String::with_capacity(64);
    let mut i = 12;
    loop {
        let Some(&len) = q.get(i) else { return false };
        i += 1;
        if len == 0 {
            break;
        }
        // Compression pointers or oversized labels: the full path.
        let Some(label) = q.get(i..i + len as usize).filter(|_| len < 64) else { return false };
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(std::str::from_utf8(label).unwrap_or("\u{fffd}"));
        i += len as usize;
    }
    let Some(tail) = q.get(i..i + 4) else { return false };
    let (qtype, qclass) = (u16::from_be_bytes([tail[0], tail[1]]), u16::from_be_bytes([tail[2], tail[3]]));
    if qclass != 1 || !(qtype == 1 || qtype == 28) {
        return false;
    }
    let Some(ips) = zone.lookup(asker, &name).filter(|ips| !ips.is_empty()) else { return false };
    // Only the asked family (AAAA for an IPv4-only container: NOERROR, no data).
    let mut ips: Vec<IpAddr> = ips.into_iter().filter(|ip| ip.is_ipv6() == (qtype == 28)).collect();
    if !ips.is_empty() {
        let n = ips.len();
        ips.rotate_left(rotate % n);
    }
    let end = i + 4;
    out.clear();
    out.extend_from_slice(&q[0..2]);
    // QR, AA, RD as asked, RA; NOERROR.
    out.extend_from_slice(&[0x84 | (q[2] & 0x01), 0x80, 0, 1]);
    out.extend_from_slice(&(ips.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&q[12..end]);
    for ip in ips {
        let (ty, data) = match ip {
            IpAddr::V4(a) => (1u8, a.octets().to_vec()),
            IpAddr::V6(a) => (28u8, a.octets().to_vec()),
        };
        out.extend_from_slice(&[0xc0, 0x0c, 0, ty, 0, 1]);
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    true
}

pub fn error(query: &Message, code: ResponseCode) -> Vec<u8> {
    let mut m = Message::error_msg(query.metadata.id, query.metadata.op_code, code);
    m.metadata.message_type = MessageType::Response;
    m.metadata.recursion_available = true;
    if let Some(q) = query.queries.first() {
        m.add_query(q.clone());
    }
    m.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn net(id: &str, builtin: bool) -> Network {
        Network {
            id: id.into(),
            name: id.into(),
            driver: crate::model::Driver::Bridge,
            subnet: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            ip_range: None,
            bridge: format!("br{id}"),
            mtu: 1500,
            internal: false,
            options: BTreeMap::new(),
            builtin,
            created: 0,
            cursor: 0,
            subnet6: None,
            gateway6: None,
        }
    }

    fn ctr(id: &str) -> Container {
        Container {
            id: id.into(),
            name: id.into(),
            cmd: vec![],
            hostname: format!("{id}-host"),
            state: State::Running,
            pid: None,
            monitor_pid: None,
            monitor_start: None,
            exit_code: None,
            error: None,
            auto_remove: false,
            detached: true,
            network_mode: crate::model::NetworkMode::None,
            dns: vec![],
            netns_source: None,
            egress_rate: None,
            ingress_rate: None,
            created: 0,
            started: None,
            finished: None,
        }
    }

    fn ep(c: &str, n: &str, ip: &str, aliases: &[&str]) -> Endpoint {
        Endpoint {
            id: format!("{c}{n}"),
            container_id: c.into(),
            network_id: n.into(),
            ifname: "eth0".into(),
            host_ifname: String::new(),
            ip: Some(ip.parse().unwrap()),
            requested_ip: None,
            ip6: None,
            requested_ip6: None,
            mac: String::new(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            segment: 0,
        }
    }

    #[test]
    fn names_resolve_only_on_shared_networks() {
        let nets = [net("a", false), net("b", false), net("d", true)];
        let ctrs = [ctr("web"), ctr("db"), ctr("other"), ctr("plain")];
        let eps = [
            ep("web", "a", "10.0.0.2", &["www"]),
            ep("db", "a", "10.0.0.3", &["store"]),
            ep("other", "b", "10.0.1.2", &[]),
            ep("plain", "d", "172.17.0.2", &[]),
        ];
        let z = Zone::build(&nets, &ctrs, &eps);
        assert_eq!(z.entry_count(), 3, "the default network has no names");
        assert_eq!(z.lookup("web", "DB."), Some(vec!["10.0.0.3".parse().unwrap()]));
        assert_eq!(z.lookup("web", "store"), Some(vec!["10.0.0.3".parse().unwrap()]));
        assert_eq!(z.lookup("web", "db-host"), Some(vec!["10.0.0.3".parse().unwrap()]));
        assert_eq!(z.lookup("web", "other"), Some(vec![]), "exists elsewhere: NXDOMAIN, no leak");
        assert_eq!(z.lookup("web", "example.com"), None, "unknown: forward");
        assert_eq!(z.lookup("plain", "web"), None, "default-network containers have no embedded DNS");
        assert_eq!(z.reverse("web", "10.0.0.3".parse().unwrap()).as_deref(), Some("db"));
        assert_eq!(
            ptr_address("b.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa."),
            Some("fd00:1::b".parse().unwrap())
        );
        assert_eq!(ptr_address("4.3.2.1.in-addr.arpa"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(z.reverse("web", "10.0.1.2".parse().unwrap()), None);
        assert_eq!(ptr_address("3.0.0.10.in-addr.arpa."), Some("10.0.0.3".parse().unwrap()));
    }

    #[test]
    fn aliases_round_robin() {
        let nets = [net("a", false)];
        let ctrs: Vec<Container> = (0..3).map(|i| ctr(&format!("c{i}"))).collect();
        let eps: Vec<Endpoint> =
            (0..3).map(|i| ep(&format!("c{i}"), "a", &format!("10.0.0.{}", i + 2), &["svc"])).collect();
        let mut z = Zone::build(&nets, &ctrs, &eps);
        // Incremental updates keep the indexes exact.
        z.update(&nets, "c2", None, &[]);
        assert_eq!(z.lookup("c0", "svc").map(|v| v.len()), Some(2));
        z.update(&nets, "c2", Some(&ctrs[2]), &eps[2..3]);
        let mut q = Message::query();
        q.add_query(hickory_proto::op::Query::query(Name::from_ascii("svc.").unwrap(), RecordType::A));
        let mut firsts = std::collections::HashSet::new();
        for r in 0..3 {
            let Decision::Reply(bytes) = answer(&z, "c0", &q, r) else { panic!("ours") };
            let m = Message::from_vec(&bytes).unwrap();
            assert_eq!(m.answers.len(), 3);
            firsts.insert(format!("{:?}", m.answers[0].data));
        }
        assert_eq!(firsts.len(), 3, "each address comes first once");
        // The wire-level fast path gives the same answer as the full one.
        let bytes = q.to_vec().unwrap();
        let mut out = Vec::new();
        assert!(answer_fast(&z, "c0", &bytes, 1, &mut out));
        let Decision::Reply(full) = answer(&z, "c0", &q, 1) else { panic!("ours") };
        let (fast, full) = (Message::from_vec(&out).unwrap(), Message::from_vec(&full).unwrap());
        assert_eq!(
            (fast.answers.clone(), fast.queries.clone(), fast.metadata.authoritative),
            (full.answers.clone(), full.queries.clone(), full.metadata.authoritative)
        );
        assert!(!answer_fast(&z, "c0", &q.to_vec().unwrap()[..10], 0, &mut out), "short queries take the full path");
        let mut q6 = Message::query();
        q6.add_query(hickory_proto::op::Query::query(Name::from_ascii("svc.").unwrap(), RecordType::AAAA));
        let Decision::Reply(bytes) = answer(&z, "c0", &q6, 0) else { panic!("ours") };
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 0));
    }

    #[test]
    fn responses_are_dropped_and_other_opcodes_and_transfers_refused() {
        let z = Zone::default();
        let rcode = |d: Decision| match d {
            Decision::Reply(r) => Message::from_vec(&r).unwrap().metadata.response_code,
            _ => panic!("expected a reply"),
        };
        let mut q = Message::query();
        q.add_query(hickory_proto::op::Query::query(Name::from_ascii("web.").unwrap(), RecordType::A));
        let mut reply = q.clone();
        reply.metadata.message_type = MessageType::Response;
        assert!(matches!(answer(&z, "c", &reply, 0), Decision::Drop));
        let mut status = q.clone();
        status.metadata.op_code = OpCode::Status;
        assert_eq!(rcode(answer(&z, "c", &status, 0)), ResponseCode::NotImp);
        let mut axfr = Message::query();
        axfr.add_query(hickory_proto::op::Query::query(Name::from_ascii("web.").unwrap(), RecordType::AXFR));
        assert_eq!(rcode(answer(&z, "c", &axfr, 0)), ResponseCode::Refused);
        assert!(matches!(answer(&z, "c", &q, 0), Decision::Forward), "an ordinary unknown name is forwarded");
    }
}
