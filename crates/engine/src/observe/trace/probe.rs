//! `trace --probe`: a real packet, followed by the kernel's own nf_tables trace.

use super::*;

/// A real packet, followed by the kernel's trace in the host namespace. From a container
/// or the host netwright connects itself; from the LAN it waits up to `wait` for the
/// user's own packet.
pub(super) fn run_probe(
    ctx: &Ctx,
    src: &End,
    dst: Ipv4Addr,
    port: Option<u16>,
    proto: Proto,
    wait: Duration,
) -> Result<Probe> {
    let Some(port) = port else { bail!("a probe needs DST:PORT") };
    let table = trace_table(ctx);
    let mut filter = Filter { proto: proto.number(), daddr: Some(dst), dport: Some(port), ..Default::default() };
    let (connected, events) = match src {
        End::Remote(r) => bail!("{} is on another host: trace from there (or from a container here)", r.ip),
        End::Ip(from) => {
            filter.saddr = Some(*from);
            let mut tracer = Tracer::arm(&table, &filter)?;
            eprintln!(
                "netwright: watching for {} from {from} to {dst}:{port} for {} s: send it now",
                proto.as_str(),
                wait.as_secs()
            );
            let events = tracer.collect(Instant::now() + wait, Duration::from_millis(500));
            (None, events)
        }
        End::Ctr(..) | End::Host => {
            let sport = rand::random_range(33000..61000u16);
            filter.sport = Some(sport);
            let mut tracer = Tracer::arm(&table, &filter)?;
            let attempt = move || connect_from(sport, dst, port, proto);
            let connected = match src {
                End::Ctr(c, _) => netns::within(&netns::open(&ctx.netns_path(&c.id))?, attempt)?,
                _ => attempt(),
            };
            (connected, tracer.collect(Instant::now() + Duration::from_millis(400), Duration::from_millis(150)))
        }
    };
    let packets = by_packet(&events);
    let (says, seen) = kernel_says(&packets, proto);
    let connected = connected.or(seen);
    let outcome = match (connected, src) {
        (Some(true), _) => "a real connection succeeded".to_string(),
        (Some(false), _) => "a real connection failed".into(),
        (None, End::Ip(_)) if events.is_empty() => format!("no such packet arrived within {} s", wait.as_secs()),
        (None, _) => "no answer (UDP): see where the kernel sent it".into(),
    };
    let names = Names::load(&events);
    let more = packets.len().saturating_sub(4);
    let kernel = packets
        .iter()
        .take(4)
        .map(|(p, evs)| TracedPacket {
            packet: p.as_ref().map(describe_packet).unwrap_or_else(|| "packet".into()),
            steps: evs.iter().filter(|e| !e.end_marker).map(|e| names.step(e)).collect(),
        })
        .collect();
    Ok(Probe { connected, outcome, kernel, more_packets: more, kernel_says: says })
}

/// The marking table of this root's probes (removed again by `reconcile` if a probe died).
pub fn trace_table(ctx: &Ctx) -> String {
    format!("{}-trace", firewall::table_name(ctx))
}

/// Connects from a fixed source port (so the trace can match it). TCP: established or
/// not; UDP: answered, refused, or unknown.
fn connect_from(sport: u16, dst: Ipv4Addr, port: u16, proto: Proto) -> Option<bool> {
    use socket2::{Domain, Socket, Type};
    let ty = if proto == Proto::Tcp { Type::STREAM } else { Type::DGRAM };
    let s = Socket::new(Domain::IPV4, ty, None).ok()?;
    s.set_reuse_address(true).ok()?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, sport)).into()).ok()?;
    let to = SocketAddr::from((dst, port)).into();
    if proto == Proto::Tcp {
        return Some(s.connect_timeout(&to, Duration::from_secs(2)).is_ok());
    }
    s.connect(&to).ok()?;
    s.send(b"netwright probe\n").ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 512];
    match s.recv(&mut buf) {
        Ok(_) => Some(true),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(false),
        Err(_) => None,
    }
}

/// Events grouped by packet. The kernel's trace id is per hook pass, so passes are
/// joined into one packet until one goes the other way (a reply) or meets a chain the
/// packet already met (a retransmission).
fn by_packet(events: &[Event]) -> Vec<(Option<Packet>, Vec<&Event>)> {
    let mut passes: Vec<(u32, Vec<&Event>)> = Vec::new();
    for e in events {
        match passes.last_mut() {
            Some((id, evs)) if *id == e.id => evs.push(e),
            _ => passes.push((e.id, vec![e])),
        }
    }
    let mut out: Vec<(Option<Packet>, Vec<&Event>)> = Vec::new();
    for (_, evs) in passes {
        let header = evs.iter().find_map(|e| e.packet.clone());
        let joins = out.last().is_some_and(|(p, seen)| {
            let same_way = match (p, &header) {
                (Some(a), Some(b)) => a.src == b.src && a.sport == b.sport,
                _ => true,
            };
            same_way && !evs.iter().any(|e| seen.iter().any(|s| s.table == e.table && s.chain == e.chain))
        });
        if joins {
            out.last_mut().expect("checked").1.extend(evs);
        } else {
            out.push((header, evs));
        }
    }
    out
}

/// The trace in one sentence, and whether it shows the connection working.
fn kernel_says(packets: &[(Option<Packet>, Vec<&Event>)], proto: Proto) -> (String, Option<bool>) {
    let Some((first, evs)) = packets.first() else {
        return ("no packet of this connection passed through the host's nftables hooks (delivered without leaving the source's bridge, or never sent)".into(), None);
    };
    if let Some(d) = evs.iter().find(|e| e.verdict.as_deref() == Some("drop")) {
        return (
            format!(
                "the first packet was dropped by {} {}/{}{}",
                family(d.family),
                d.table,
                d.chain,
                d.handle.map(|h| format!(" rule #{h}")).unwrap_or_else(|| " (chain policy)".into())
            ),
            Some(false),
        );
    }
    let reply = packets.iter().skip(1).find_map(|(p, _)| {
        let (p, f) = (p.as_ref()?, first.as_ref()?);
        (p.src != f.src || p.sport != f.sport).then_some(p)
    });
    match reply {
        Some(r) if r.flags.contains("RST") => (
            format!(
                "the first packet got through; {}:{} answered with a reset (RST): nothing accepts the connection there",
                r.src,
                r.sport.unwrap_or(0)
            ),
            Some(false),
        ),
        Some(r) => (
            format!(
                "the first packet got through and {}:{} answered{}",
                r.src,
                r.sport.unwrap_or(0),
                if r.flags.is_empty() { String::new() } else { format!(" ({})", r.flags) }
            ),
            Some(proto == Proto::Udp || r.flags.contains("SYN")),
        ),
        None => ("the first packet was accepted; no answer passed the host's hooks".into(), None),
    }
}

fn family(f: u8) -> &'static str {
    match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "?",
    }
}

fn describe_packet(p: &Packet) -> String {
    let proto = match p.proto {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        _ => "ip",
    };
    let port = |a: Ipv4Addr, p: Option<u16>| p.map(|p| format!("{a}:{p}")).unwrap_or_else(|| a.to_string());
    format!(
        "{} → {} {proto}{}",
        port(p.src, p.sport),
        port(p.dst, p.dport),
        if p.flags.is_empty() { String::new() } else { format!(" {}", p.flags) }
    )
}

/// Interface names and rule comments, read once for the tables a trace passed.
struct Names {
    links: HashMap<u32, String>,
    comments: HashMap<(u8, String, u64), String>,
}

impl Names {
    fn load(events: &[Event]) -> Names {
        let links = Netlink::open()
            .and_then(|mut nl| nl.links())
            .map(|ls| ls.into_iter().map(|l| (l.index, l.name)).collect())
            .unwrap_or_default();
        let mut comments = HashMap::new();
        let mut tables: Vec<(u8, &str)> = events.iter().map(|e| (e.family, e.table.as_str())).collect();
        tables.sort();
        tables.dedup();
        if let Ok(mut nft) = Nftables::open() {
            for (f, t) in tables {
                for r in nft.rules(f, t).unwrap_or_default() {
                    if let Some(c) = r.comment {
                        comments.insert((f, t.to_string(), r.handle), c);
                    }
                }
            }
        }
        Names { links, comments }
    }

    fn step(&self, e: &Event) -> String {
        let at = format!("{} {}/{}", family(e.family), e.table, e.chain);
        let v = e.verdict.clone().unwrap_or_default();
        let what = match (e.kind, e.handle) {
            ("rule", Some(h)) => match self.comments.get(&(e.family, e.table.clone(), h)) {
                Some(c) => format!("rule #{h} \"{c}\" → {v}"),
                None => format!("rule #{h} → {v}"),
            },
            ("policy", _) => format!("policy {v}"),
            (k, _) => k.to_string(),
        };
        let name = |i: u32| self.links.get(&i).cloned().unwrap_or_else(|| format!("ifindex {i}"));
        let ifs = [e.iif.map(|i| format!("in {}", name(i))), e.oif.map(|i| format!("out {}", name(i)))]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if ifs.is_empty() { format!("{at:<34} {what}") } else { format!("{at:<34} {what}  [{ifs}]") }
    }
}
