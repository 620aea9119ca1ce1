//! `netwright demo`: the seed documents' picture, built for real in a sandbox.
pub fn run() -> anyhow::Result<i32> { Ok(0) }
