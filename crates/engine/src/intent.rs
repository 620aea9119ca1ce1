//! Intents: crash recovery for operations that take several steps.
//!
//! An operation that changes the kernel in several steps (create or attach a container,
//! remove one, disconnect a network, remove a network) records an *intent* — what it is
//! doing, to what, and which process does it — in the same store transaction as its first
//! write, and removes it in the same transaction as its last. A process killed in between
//! leaves the intent behind; the next netwright command that changes anything (and every
//! sweep) finds it, sees that its process is gone, and finishes or undoes the operation:
//!
//! | intent       | what the next command does                                          |
//! |--------------|---------------------------------------------------------------------|
//! | create       | undo: release what was made (ports, names, namespace) and forget it |
//! | connect      | undo: delete the interface if it was made, and the endpoint         |
//! | remove       | finish: release (idempotent) and forget the container               |
//! | disconnect   | finish: delete the interface, the endpoint (and its ports), DNS     |
//! | network-rm   | finish: delete the network's devices, rebuild the firewall          |
//!
//! Checking costs one query on a table that is almost always empty.

use anyhow::Result;

use crate::ctx::Ctx;
use crate::kernel::process;
use crate::store::{State, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Create,
    Connect,
    Remove,
    Disconnect,
    NetworkRemove,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Connect => "connect",
            Kind::Remove => "remove",
            Kind::Disconnect => "disconnect",
            Kind::NetworkRemove => "network-rm",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Create, Kind::Connect, Kind::Remove, Kind::Disconnect, Kind::NetworkRemove]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One recorded intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub kind: Kind,
    /// A container id (create, remove), an endpoint id (connect, disconnect) or a network's
    /// device name (network-rm).
    pub target: String,
    /// A second target: the container of a connect or disconnect, the name of a network.
    pub detail: String,
    pub pid: i32,
    pub pid_start: u64,
}

impl Intent {
    /// An intent of the calling process.
    pub fn mine(kind: Kind, target: &str, detail: &str) -> Intent {
        let pid = std::process::id() as i32;
        Intent {
            kind,
            target: target.to_string(),
            detail: detail.to_string(),
            pid,
            pid_start: process::start_time(pid).unwrap_or(0),
        }
    }

    fn abandoned(&self) -> bool {
        !process::alive(Some(self.pid), Some(self.pid_start))
    }
}

/// Finishes or undoes the operations of processes that died half-way. Returns what was
/// done, one line each.
pub fn resume(ctx: &Ctx, store: &mut Store) -> Result<Vec<String>> {
    let intents = store.read(|tx| tx.intents())?;
    let mut done = Vec::new();
    for i in intents.into_iter().filter(Intent::abandoned) {
        if let Some(line) = resume_one(ctx, store, &i)? {
            done.push(line);
        }
        store.write(|tx| tx.end_intent(i.kind, &i.target))?;
    }
    Ok(done)
}

fn resume_one(ctx: &Ctx, store: &mut Store, i: &Intent) -> Result<Option<String>> {
    match i.kind {
        Kind::Create | Kind::Remove => {
            let Some(mut c) = store.read(|tx| tx.container(&i.target))?.filter(|c| c.id == i.target) else {
                return Ok(None);
            };
            if i.kind == Kind::Create && c.state != State::Created {
                return Ok(None); // it got as far as running: nothing half-done
            }
            if c.state != State::Exited {
                c.pid = None; // never signal a PID that may have been reused
                crate::container::release(ctx, store, &c, 137, Some("interrupted: its netwright process was killed"))?;
            }
            crate::container::forget(ctx, store, &c)?;
            Ok(Some(format!("{} of container {} interrupted: finished", i.kind.as_str(), c.name)))
        }
        Kind::Connect => {
            // Undo: the interface may or may not have been made; the endpoint goes.
            crate::connect::finish_disconnect(ctx, store, &i.detail, &i.target)?;
            Ok(Some(format!("connect of container {} interrupted: undone", &i.detail[..12.min(i.detail.len())])))
        }
        Kind::Disconnect => {
            crate::connect::finish_disconnect(ctx, store, &i.detail, &i.target)?;
            Ok(Some(format!("disconnect of container {} interrupted: finished", &i.detail[..12.min(i.detail.len())])))
        }
        Kind::NetworkRemove => {
            crate::network::finish_remove(ctx, store, &i.target, &i.detail)?;
            Ok(Some(format!("removal of network {} interrupted: finished", i.detail)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_a_dead_process_is_abandoned() {
        for k in [Kind::Create, Kind::Connect, Kind::Remove, Kind::Disconnect, Kind::NetworkRemove] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        let mine = Intent::mine(Kind::Create, "c", "");
        assert!(!mine.abandoned(), "this process is alive");
        let gone = Intent { pid_start: mine.pid_start + 1, ..mine };
        assert!(gone.abandoned(), "same PID, another start time: another process");
    }
}
