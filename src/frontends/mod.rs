//! Front ends for container runtimes: the engine behind the protocols they already speak.
//! `netavark`: Podman's network backend protocol (setup/teardown with JSON on stdin).
//! `cni`: a CNI plugin (`netwright-cni`), for Podman's CNI backend, containerd, CRI-O.

pub mod cni;
pub mod netavark;
pub mod ui;

/// netwright's container id for a runtime's: the runtime's own when it is 12-64 hex digits
/// (Podman's, containerd's), else a stable 64-digit hash of it (Kubernetes sandbox names,
/// netavark's tests' "someID").
pub fn container_id(runtime_id: &str) -> String {
    if (12..=64).contains(&runtime_id.len()) && runtime_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return runtime_id.to_ascii_lowercase();
    }
    // FNV-1a, four times with different seeds.
    (0u64..4)
        .map(|seed| {
            let h = runtime_id
                .bytes()
                .fold(0xcbf29ce484222325u64 ^ seed, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
            format!("{h:016x}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn container_ids_map_to_netwright_ids() {
        let hex = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
        assert_eq!(super::container_id(hex), hex);
        let k8s = super::container_id("k8s_POD_default_web-0_uid");
        assert_eq!(k8s.len(), 64);
        assert_eq!(k8s, super::container_id("k8s_POD_default_web-0_uid"), "stable");
        assert_ne!(k8s, super::container_id("someID"));
    }
}
