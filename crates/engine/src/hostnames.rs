//! Names from the host: `curl http://api:8080` on the host reaches container `api`, for
//! networks created with `--opt host_names=true`.
//!
//! netwright keeps one clearly marked block in the host's /etc/hosts (or the file
//! `NETWRIGHT_HOSTS_FILE` names), one block per state root, in step with its containers:
//! rewritten after every change of a container on such a network, never touching a line
//! outside the block, removed with the last such container and by `system reset`. Written to
//! a temporary file and renamed over the original (atomic for readers); where /etc/hosts is
//! a bind mount (a rename cannot replace a mount point) it is rewritten in place. A name on
//! several such networks gets a line per address; resolvers answer the first. When
//! netwright is absent or crashed, the block stays as last written: the host's own
//! resolution is never in netwright's hands.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::ctx::Ctx;
use crate::model::State;
use crate::store::Store;

/// The network option that turns it on.
pub const OPTION: &str = "host_names";

fn hosts_file() -> PathBuf {
    std::env::var_os("NETWRIGHT_HOSTS_FILE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/etc/hosts"))
}

fn markers(ctx: &Ctx) -> (String, String) {
    (
        format!("# BEGIN netwright {} (managed by netwright: edits here are overwritten)", ctx.tag),
        format!("# END netwright {}", ctx.tag),
    )
}

/// `text` with this root's block replaced by `lines` (removed when there are none).
pub fn replace_block(text: &str, begin: &str, end: &str, lines: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for l in text.lines() {
        if l == begin {
            inside = true;
        } else if l == end && inside {
            inside = false;
        } else if !inside {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !lines.is_empty() {
        out.push_str(begin);
        out.push('\n');
        for l in lines {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str(end);
        out.push('\n');
    }
    out
}

/// Brings the block in line with the store. Cheap when no network asks for it and no block
/// was written (one read of the networks).
pub fn sync(ctx: &Ctx, store: &mut Store) -> Result<()> {
    let flag = ctx.root.join("hosts-block");
    let (networks, rows) = store.read(|tx| {
        let networks = tx.networks()?;
        let wanted: Vec<_> = networks.iter().filter(|n| n.options.get(OPTION).is_some_and(|v| v == "true")).collect();
        let mut rows = Vec::new();
        for n in &wanted {
            for e in tx.active_endpoints_on(&n.id)? {
                if let Some(c) = tx.container(&e.container_id)?.filter(|c| c.state == State::Running) {
                    rows.push((e.ip.expect("active"), c.name, c.hostname, e.aliases));
                }
            }
        }
        Ok((wanted.len(), rows))
    })?;
    if networks == 0 && !flag.exists() {
        return Ok(());
    }
    let mut by_ip: BTreeMap<std::net::Ipv4Addr, Vec<String>> = BTreeMap::new();
    for (ip, name, hostname, aliases) in rows {
        let names = by_ip.entry(ip).or_default();
        for n in std::iter::once(name).chain(std::iter::once(hostname)).chain(aliases) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let lines: Vec<String> = by_ip.into_iter().map(|(ip, names)| format!("{ip}\t{}", names.join(" "))).collect();
    let path = hosts_file();
    let lock = fs::File::create(ctx.root.join("hosts.lock"))?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking the hosts block: {e}"))?;
    let text = fs::read_to_string(&path).unwrap_or_default();
    let (begin, end) = markers(ctx);
    let new = replace_block(&text, &begin, &end, &lines);
    if new != text {
        write(&path, &new).with_context(|| format!("updating {}", path.display()))?;
    }
    if lines.is_empty() {
        let _ = fs::remove_file(&flag);
    } else {
        fs::write(&flag, "")?;
    }
    Ok(())
}

/// Atomically where possible: a temporary file renamed over the original (keeping its
/// mode); in place where the file is a mount point.
fn write(path: &std::path::Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("netwright-tmp");
    let renamed = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = fs::metadata(path) {
            fs::set_permissions(&tmp, meta.permissions())?;
        }
        fs::rename(&tmp, path)
    })();
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
        fs::write(path, text)?;
    }
    Ok(())
}

/// [`sync`], reporting a failure on stderr instead of failing the command that changed a
/// container (its network is fine; only the host's names lag).
pub fn sync_or_warn(ctx: &Ctx, store: &mut Store) {
    if let Err(e) = sync(ctx, store) {
        eprintln!("netwright: host names not updated: {}", crate::error::one_line(&e));
    }
}

/// `system reset`: the block goes.
pub fn remove(ctx: &Ctx) -> Result<()> {
    let path = hosts_file();
    let Ok(text) = fs::read_to_string(&path) else { return Ok(()) };
    let (begin, end) = markers(ctx);
    let new = replace_block(&text, &begin, &end, &[]);
    if new != text {
        write(&path, &new)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_block_changes() {
        let text =
            "127.0.0.1\tlocalhost\n# BEGIN netwright ab12 (x)\n10.0.0.9\told\n# END netwright ab12\n10.9.9.9\tmine\n";
        let (b, e) = ("# BEGIN netwright ab12 (x)", "# END netwright ab12");
        let new = super::replace_block(text, b, e, &["10.0.0.2\tweb www".into()]);
        assert_eq!(
            new,
            "127.0.0.1\tlocalhost\n10.9.9.9\tmine\n# BEGIN netwright ab12 (x)\n10.0.0.2\tweb www\n# END netwright ab12\n"
        );
        assert_eq!(super::replace_block(&new, b, e, &[]), "127.0.0.1\tlocalhost\n10.9.9.9\tmine\n");
        // Another root's block is not ours.
        let other = "# BEGIN netwright cd34 (x)\n1.1.1.1\tz\n# END netwright cd34\n";
        assert_eq!(super::replace_block(other, b, e, &[]), other);
    }
}
