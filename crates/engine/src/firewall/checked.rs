//! The last ruleset generation this root knew to be right, so that the check every
//! attach makes ([`super::ensure`]: is the table there, every rule of the skeleton, the
//! network sets?) costs one netlink round trip instead of reading the rules.
//!
//! nf_tables numbers the committed transactions of a namespace: its *generation* goes up
//! by one with every change, whoever makes it. After a full check finds nothing missing,
//! or a rebuild, netwright records the generation; after its own changes to a table in that
//! state it records the new one — but only if the generation went up by exactly its own
//! commits (nobody slipped a change in between). While the kernel still reports the
//! recorded generation, nothing has touched any table of the namespace since: not an
//! admin's `nft flush ruleset`, not another tool, not another root. Anything else means a
//! full check, as before.
//!
//! The record names the boot and the namespace (its cookie, never reused within a boot):
//! generations start again in a new namespace and after a reboot.

use std::fs;
use std::sync::OnceLock;

use crate::ctx::Ctx;
use crate::kernel::nftables::Nftables;

const FILE: &str = "firewall.generation";

/// Where the namespace's ruleset is: which boot, which namespace, which generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    boot: String,
    netns: u64,
    generation: u32,
}

/// Where the ruleset of `nft`'s namespace is now (None if the kernel cannot say).
pub fn now(nft: &mut Nftables) -> Option<Mark> {
    static BOOT: OnceLock<String> = OnceLock::new();
    let boot = BOOT.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
    });
    if boot.is_empty() {
        return None;
    }
    Some(Mark { boot: boot.clone(), netns: nft.netns_cookie().ok()?, generation: nft.generation().ok()? })
}

fn line(m: &Mark, desired: u64) -> String {
    format!("{} {} {} {:016x}\n", m.boot, m.netns, m.generation, desired)
}

/// The fingerprint of the desired state recorded with `m`, if `m` is the generation this
/// root last knew to be right.
pub fn known_good(ctx: &Ctx, m: &Mark) -> Option<u64> {
    let s = fs::read_to_string(ctx.root.join(FILE)).ok()?;
    let mut w = s.split_whitespace();
    let (boot, netns, generation, desired) = (w.next()?, w.next()?, w.next()?, w.next()?);
    let same = boot == m.boot && netns.parse() == Ok(m.netns) && generation.parse() == Ok(m.generation);
    if same { u64::from_str_radix(desired, 16).ok() } else { None }
}

/// Records that the ruleset at `m` holds what the store wants (`desired`: the
/// fingerprint of [`super::Desired`]'s checked sets) — a full check found nothing missing,
/// or a rebuild made it so.
pub fn record(ctx: &Ctx, m: &Mark, desired: u64) {
    // Overwritten in place, never truncated to empty: on a filesystem mounted with
    // `discard` (this VM's root) freeing the file's block is a synchronous discard, which
    // took 0.3-3 ms of each attach. The line's length barely changes; a longer old tail is
    // cut after the write, within the same block (nothing freed). A reader in between sees
    // the new line first (four fields are read; the tail is past its newline).
    let text = line(m, desired);
    let _ = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(false).open(ctx.root.join(FILE))?;
        f.write_all(text.as_bytes())?;
        f.set_len(text.len() as u64)
    })();
}

/// After this root's own commits through `nft` from `before`, where the ruleset was right
/// for `desired`: the new generation is right too if nobody else committed in between.
/// (`desired`: what the tables now hold for the store — unchanged by publishing ports.)
pub fn after_own_commits(ctx: &Ctx, nft: &mut Nftables, before: Option<Mark>, desired: Option<u64>) {
    let (Some(before), Some(desired)) = (before, desired) else { return };
    if let Some(after) = now(nft)
        && after.netns == before.netns
        && after.generation == before.generation.wrapping_add(nft.commits())
    {
        record(ctx, &after, desired);
    }
}
