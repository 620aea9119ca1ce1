//! Is netwright's table what the store says it should be? Every rule of the skeleton (by
//! its comment, chain by chain) and every element of every set and map, read back from
//! the kernel. `doctor` reports the difference; every command that changes containers
//! checks the part it depends on (the skeleton and the network sets) and rebuilds the
//! table when anything is off — after an `nft flush table`, `flush chain` or `flush map`.

use std::collections::HashMap;

use anyhow::Result;

use super::{Family, USER_CHAIN, desired, sets, skeleton, table_name};
use crate::ctx::Ctx;
use crate::kernel::nftables::{Batch, Nftables};

/// How much to read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The rules and the per-network sets: a handful of elements, cheap on every command.
    Skeleton,
    /// Also the published-port maps (one element per published port).
    Full,
}

/// What differs, one line each (empty: the tables are exactly as they should be).
pub fn drift(ctx: &Ctx, inp: &super::Inputs, scope: Scope) -> Result<Vec<String>> {
    let networks = &inp.networks;
    let t = table_name(ctx);
    let mut nftc = Nftables::open()?;
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        let f = family.nfproto();
        if family == Family::V6 && !super::wants_v6(networks) {
            continue;
        }
        crate::ctx::trace("firewall: checking a table");
        if !nftc.has_table(f, &t)? {
            out.push(match family {
                Family::V4 => format!("table ip {t} is missing: no masquerade, no published ports, no isolation"),
                Family::V6 => format!("table ip6 {t} is missing: no IPv6 masquerade, published ports or isolation"),
            });
            continue;
        }
        // Rules, by chain and comment (the admin's chain is theirs, never checked).
        let mut want = Batch::new(f);
        skeleton(&mut want, &t, family);
        let mut have: HashMap<(String, Option<String>), usize> = HashMap::new();
        for r in nftc.rules(f, &t)?.into_iter().filter(|r| r.chain != USER_CHAIN) {
            *have.entry((r.chain, r.comment)).or_default() += 1;
        }
        // Named by family only where both tables exist, so IPv4-only hosts read as before.
        let prefix = if family == Family::V6 { "ip6 " } else { "" };
        for (chain, comment) in want.rules() {
            match have.get_mut(&(chain.clone(), comment.clone())) {
                Some(n) if *n > 0 => *n -= 1,
                _ => out.push(format!("{prefix}rule missing in chain {chain}: {}", comment.unwrap_or_default())),
            }
        }
        crate::ctx::trace("firewall: rules read");
        // Sets and maps, element by element.
        let d = desired(inp, family);
        // The published-port maps (one element per port) only for a full check.
        let wanted = d.checked(family, scope == Scope::Full);
        for (set, elems) in wanted {
            debug_assert!(sets(family).iter().any(|s| s.name == set));
            let live = match nftc.set_elems(f, &t, set) {
                Ok(l) => l,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    out.push(format!("{prefix}set {set} is missing"));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let missing = elems.iter().filter(|e| !live.contains(e)).count();
            let stale = live.iter().filter(|e| !elems.contains(e)).count();
            if missing > 0 {
                out.push(format!("{prefix}{set}: {missing} of {} element(s) missing", elems.len()));
            }
            if stale > 0 {
                out.push(format!("{prefix}{set}: {stale} element(s) the store does not have"));
            }
        }
        if family == Family::V4 && scope == Scope::Full {
            out.extend(service_drift(&mut nftc, &t, inp)?);
        }
    }
    Ok(out)
}

/// Each service's backend map holds exactly its backends by slot, and its chain has rules
/// while it has backends.
fn service_drift(nftc: &mut Nftables, t: &str, inp: &super::Inputs) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let rules = nftc.rules(crate::kernel::nftables::NFPROTO_IPV4, t)?;
    for (svc, backends) in &inp.services {
        let map = crate::services::map_name(svc);
        let live = match nftc.set_elems(crate::kernel::nftables::NFPROTO_IPV4, t, &map) {
            Ok(l) => l,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                out.push(format!("service {}: map {map} is missing", svc.name));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let want: Vec<crate::kernel::nftables::Elem> = backends
            .iter()
            .map(|b| crate::kernel::nftables::Elem::new(b.slot.to_ne_bytes().to_vec(), Some(b.ip.octets().to_vec())))
            .collect();
        if live.len() != want.len() || want.iter().any(|e| !live.contains(e)) {
            out.push(format!("service {}: {} backend(s) in {map}, the store has {}", svc.name, live.len(), want.len()));
        }
        let chain = crate::services::chain_name(svc);
        let n = rules.iter().filter(|r| r.chain == chain).count();
        if (n == 0) != backends.is_empty() {
            out.push(format!("service {}: chain {chain} has {n} rule(s) for {} backend(s)", svc.name, backends.len()));
        }
    }
    Ok(out)
}
