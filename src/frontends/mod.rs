//! Front ends for container runtimes: the engine behind the protocols they already speak.
//! `netavark`: Podman's network backend protocol (setup/teardown with JSON on stdin).
//! `cni`: a CNI plugin (`netwright-cni`), for Podman's CNI backend, containerd, CRI-O.

pub mod cni;
pub mod netavark;
