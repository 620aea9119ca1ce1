//! Generated container names, Docker style: adjective_name.

const ADJECTIVES: &[&str] = &[
    "agile", "bold", "brave", "calm", "clever", "cool", "crisp", "eager", "fast", "fond", "gentle", "happy", "keen",
    "kind", "lucid", "merry", "nifty", "noble", "quick", "quiet", "sharp", "steady", "swift", "tidy", "vivid", "wise",
    "witty", "zen",
];

// People whose work the datapath stands on.
const NAMES: &[&str] = &[
    "baran",
    "cerf",
    "clark",
    "davies",
    "deering",
    "floyd",
    "hinden",
    "jacobson",
    "kahn",
    "kleinrock",
    "lamport",
    "metcalfe",
    "mockapetris",
    "perlman",
    "postel",
    "pouzin",
    "ritchie",
    "saltzer",
    "shannon",
    "stevens",
    "tanenbaum",
    "thompson",
    "torvalds",
    "zhang",
];

pub fn generate() -> String {
    let mut b = [0u8; 2];
    rand::fill(&mut b[..]);
    format!("{}_{}", ADJECTIVES[b[0] as usize % ADJECTIVES.len()], NAMES[b[1] as usize % NAMES.len()])
}

/// The longest name: a DNS label (a longer one could never resolve at 127.0.0.11).
pub const MAX_NAME: usize = 63;

/// Docker's rule for container, network and alias names, `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, at
/// most [`MAX_NAME`] characters.
pub fn valid(name: &str) -> bool {
    let b = name.as_bytes();
    (2..=MAX_NAME).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[1..].iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// What is wrong with a name, for the one-line error (`what`: "container name", ...).
pub fn explain(what: &str, name: &str) -> String {
    if name.len() > MAX_NAME {
        format!(
            "invalid {what} {:?}…: {} characters, at most {MAX_NAME} (a DNS label)",
            &name[..20.min(name.len())],
            name.len()
        )
    } else {
        format!(
            "invalid {what} {name:?}: use letters, digits, '_', '.', '-' (at least 2 characters, starting with a letter or digit)"
        )
    }
}

/// A hostname the kernel and DNS both accept (RFC 1123): dot-separated labels of letters,
/// digits and '-', none starting or ending with '-', each at most 63 characters, and at
/// most 64 in all (the kernel's HOST_NAME_MAX).
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= MAX_NAME
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hostnames() {
        assert!(valid("web") && valid("a.b_c-d") && !valid("a") && !valid("-x") && !valid("bad name"));
        assert!(valid(&"x".repeat(63)) && !valid(&"x".repeat(64)));
        assert!(explain("container name", &"x".repeat(300)).contains("300 characters"));
        assert!(valid_hostname("web") && valid_hostname("db-1.local"));
        for bad in ["", "a/b", "-a", "a-", "a..b", "a_b", &"h".repeat(65)] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }
}
