//! Front ends for container runtimes: the engine behind the protocols they already speak.
//! `netavark`: Podman's network backend protocol (setup/teardown with JSON on stdin).

pub mod netavark;
