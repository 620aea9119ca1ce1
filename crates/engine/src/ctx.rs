//! The state root and everything named after it.
//!
//! Every device and file netwright makes carries a short tag derived from the root's path,
//! so two roots on one machine (parallel tests, two users) never touch each other's objects.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::store::Store;

pub const DEFAULT_ROOT: &str = "/var/lib/netwright";

#[derive(Debug, Clone)]
pub struct Ctx {
    pub root: PathBuf,
    /// 4 hex digits from the root's canonical path; goes into device names.
    pub tag: String,
}

impl Ctx {
    pub fn new(root: &Path) -> Result<Ctx> {
        std::fs::create_dir_all(root).with_context(|| format!("creating state root {}", root.display()))?;
        let root = root.canonicalize().with_context(|| format!("resolving {}", root.display()))?;
        let tag = format!("{:04x}", fnv1a(root.as_os_str().as_encoded_bytes()) & 0xffff);
        Ok(Ctx { root, tag })
    }

    pub fn store(&self) -> Result<Store> {
        Store::open(&self.root)
    }

    pub fn netns_dir(&self) -> PathBuf {
        self.root.join("netns")
    }

    pub fn netns_path(&self, container_id: &str) -> PathBuf {
        self.netns_dir().join(&container_id[..12])
    }

    /// The pinned template mount namespace containers start from (see kernel::mntns).
    pub fn mnt_template(&self) -> PathBuf {
        self.root.join("mnt-template")
    }

    pub fn container_dir(&self, container_id: &str) -> PathBuf {
        self.root.join("containers").join(container_id)
    }

    pub fn log_path(&self, container_id: &str) -> PathBuf {
        self.container_dir(container_id).join("container.log")
    }
}

/// FNV-1a: a tiny stable hash, enough to spread root paths over 65,536 tags.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

/// A random hex id of `len` characters.
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len.div_ceil(2)];
    rand::fill(&mut bytes[..]);
    let s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s[..len].to_string()
}

pub fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

static TRACE: std::sync::OnceLock<Option<std::time::Instant>> = std::sync::OnceLock::new();

/// With NETWRIGHT_TRACE set, reports how far into the command each step finished
/// (milliseconds since the first call) — where the time goes, without a profiler.
/// NETWRIGHT_TRACE=/some/file appends there (for commands run by others, like bench).
pub fn trace(step: &str) {
    die_here_if_asked(step);
    let start = TRACE.get_or_init(|| std::env::var_os("NETWRIGHT_TRACE").map(|_| std::time::Instant::now()));
    if let Some(t) = start {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros()
            % 100_000_000;
        let line = format!(
            "[trace {:>5} {:>8.3} ms @{:>9}us] {step}\n",
            std::process::id(),
            t.elapsed().as_secs_f64() * 1000.0,
            wall
        );
        match std::env::var("NETWRIGHT_TRACE") {
            Ok(p) if p.starts_with('/') => {
                use std::io::Write;
                if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(p) {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            _ => eprint!("{line}"),
        }
    }
}

static DIE_AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Fault injection for the crash tests: with NETWRIGHT_DIE_AT=STEP the process kills itself
/// with SIGKILL when it reaches the [`trace`] step STEP — a kill -9 at an exact point, so
/// that recovery from every step is tested deterministically.
fn die_here_if_asked(step: &str) {
    let at = DIE_AT.get_or_init(|| std::env::var("NETWRIGHT_DIE_AT").ok());
    if at.as_deref() == Some(step) {
        // SAFETY: raising a signal on ourselves; SIGKILL cannot be caught.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}
