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

/// Docker's rule for container names: [a-zA-Z0-9][a-zA-Z0-9_.-]+
pub fn valid(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..].iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}
