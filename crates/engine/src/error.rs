//! The engine's typed errors: what went wrong, in one line, with the exit code a front end
//! should return.
//!
//! Inside the engine, code uses `anyhow` for context chains; a user-facing failure is raised
//! as an [`Error`] (see [`invalid`], [`not_found`], [`conflict`]) and travels inside the
//! `anyhow::Error` unchanged. At the engine's boundary ([`crate::Engine`]) every error is
//! turned into an [`Error`] by [`Error::from_anyhow`]: a typed one keeps its kind, anything
//! else (a netlink or SQLite failure) becomes [`ErrorKind::System`] with its whole chain on
//! one line.

use std::fmt;

/// What kind of failure: decides the exit code and how a front end reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: a flag, a name, an address, a combination. Nothing was changed.
    Invalid,
    /// A container, network or namespace that does not exist.
    NotFound,
    /// Something is already taken: a name, an address, a host port, an interface.
    Conflict,
    /// The kernel or the system cannot do it here (a missing module, a full bridge).
    Unsupported,
    /// A netlink, nf_tables, SQLite or file-system failure.
    System,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    /// One line: what is wrong and what to do.
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into().replace('\n', " ") }
    }

    /// The process exit code for a front end that has no convention of its own. Front
    /// ends with one (docker run's 125, netavark's 1) map [`ErrorKind`] themselves.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::Invalid => 2,
            ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Unsupported | ErrorKind::System => 1,
        }
    }

    /// The typed error an `anyhow` chain carries, or a [`ErrorKind::System`] one with the
    /// whole chain on one line.
    pub fn from_anyhow(e: anyhow::Error) -> Error {
        if let Some(typed) = e.downcast_ref::<Error>() {
            // Context added on the way up is kept in front of the typed message.
            let full = one_line(&e);
            return Error::new(typed.kind, full);
        }
        Error::new(ErrorKind::System, one_line(&e))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// An `anyhow` chain on one line ("context: cause: cause").
pub fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// A bad-input error, ready for `return Err(invalid(...).into())` or `bail!`.
pub fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Invalid, message)
}

pub fn not_found(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::NotFound, message)
}

pub fn conflict(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Conflict, message)
}

pub fn unsupported(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unsupported, message)
}

/// The kind of an `anyhow` error: its typed one, else System.
pub fn kind_of(e: &anyhow::Error) -> ErrorKind {
    e.downcast_ref::<Error>().map(|t| t.kind).unwrap_or(ErrorKind::System)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn typed_errors_survive_context_and_keep_their_kind() {
        let e: anyhow::Error = conflict("address 10.0.0.5 is already in use").into();
        let e = Err::<(), _>(e).context("network web").unwrap_err();
        let t = Error::from_anyhow(e);
        assert_eq!(t.kind, ErrorKind::Conflict);
        assert_eq!(t.message, "network web: address 10.0.0.5 is already in use");
        assert_eq!(t.exit_code(), 1);
    }

    #[test]
    fn untyped_errors_are_system_errors_on_one_line() {
        let e = anyhow::anyhow!("EPERM\nsecond line").context("creating bridge nwb0");
        let t = Error::from_anyhow(e);
        assert_eq!(t.kind, ErrorKind::System);
        assert!(!t.message.contains('\n'));
        assert_eq!(invalid("x").exit_code(), 2);
    }
}
