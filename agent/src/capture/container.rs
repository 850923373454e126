//! Which container a process runs in, read from `/proc/PID/cgroup`.
//!
//! Container runtimes put every container in a cgroup named after the
//! container id, so the id can be read without talking to the runtime:
//!
//! | runtime, cgroup driver | cgroup path (last components) |
//! |---|---|
//! | Docker, systemd | `/system.slice/docker-<id>.scope` |
//! | Docker, cgroupfs | `/docker/<id>` |
//! | containerd (CRI), systemd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope` |
//! | containerd, systemd cgroup path kept as given | `…/kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>` |
//! | CRI-O, systemd | `…/kubepods-pod<uid>.slice/crio-<id>.scope` |
//! | any CRI runtime, cgroupfs | `/kubepods/besteffort/pod<uid>/<id>` |
//! | Podman | `/machine.slice/libpod-<id>.scope` |
//! | GitHub Actions job container | `/actions_job/<id>` |
//!
//! Ids are 64 lowercase hex digits. On cgroup v1 every hierarchy has its own
//! line (`12:pids:/docker/<id>`); on v2 there is one line, `0::<path>`. In a
//! private cgroup namespace (the default for containers on cgroup v2, so
//! also for the agent's own pod) paths are relative to the reader's cgroup
//! and may start with `/../..`; only the last components matter, so they
//! parse the same. A nested container (Docker in Docker, kind) lists its
//! ancestors' ids first: the innermost (last) one is the process's own.
//! Runtime monitors (`crio-conmon-<id>`, `libpod-conmon-<id>`) are not
//! containers and are not reported.
#![forbid(unsafe_code)]

use std::fmt;

/// Length of a container id in hex digits (Docker, containerd, CRI-O and
/// Podman all use 256-bit ids).
const ID_LEN: usize = 64;

/// The runtime that created a container, as far as the cgroup path tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// Docker (moby), or a GitHub Actions job container (run by Docker).
    Docker,
    /// containerd's CRI plugin (`cri-containerd-` scopes).
    Containerd,
    /// CRI-O (`crio-` scopes).
    CriO,
    /// Podman (`libpod-` scopes).
    Podman,
    /// The path names the container but not the runtime (Kubernetes with
    /// the cgroupfs driver names the cgroup after the bare id).
    Unknown,
}

impl Runtime {
    /// Stable label (`targets` output, finding JSON).
    pub const fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A process's container, from its cgroup path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// Container id: 64 lowercase hex digits.
    pub id: String,
    /// Runtime, when the path names it.
    pub runtime: Runtime,
    /// Kubernetes pod UID (`8e3c…-…`), when the container is in a
    /// `kubepods` cgroup (systemd's `_` turned back into `-`).
    pub pod_uid: Option<String>,
}

impl ContainerRef {
    /// The first 12 digits, as `docker ps` and `crictl ps` show them.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// Scope-name prefixes of the runtimes (systemd cgroup driver). Monitors
/// come first so that `crio-conmon-<id>` is not read as `crio-` + junk.
const PREFIXES: [(&str, Option<Runtime>); 7] = [
    ("crio-conmon-", None),
    ("libpod-conmon-", None),
    ("docker-", Some(Runtime::Docker)),
    ("cri-containerd-", Some(Runtime::Containerd)),
    ("crio-", Some(Runtime::CriO)),
    ("libpod-", Some(Runtime::Podman)),
    ("containerd-", Some(Runtime::Containerd)),
];

/// Whether `s` is a container id: 64 lowercase hex digits.
pub(crate) fn is_id(s: &str) -> bool {
    s.len() == ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The container named by one path component, given its parent component.
fn component<'a>(comp: &'a str, parent: Option<&str>) -> Option<(Runtime, &'a str)> {
    let comp = comp.strip_suffix(".scope").unwrap_or(comp);
    // `<slice>:<prefix>:<id>`: the systemd cgroup path as the kubelet gives
    // it to containerd, kept verbatim by some setups (kind, k3s).
    if let Some((head, id)) = comp.rsplit_once(':') {
        if !is_id(id) {
            return None;
        }
        let runtime = match head.rsplit(':').next() {
            Some("cri-containerd") => Runtime::Containerd,
            Some("crio") => Runtime::CriO,
            Some("docker") => Runtime::Docker,
            _ => Runtime::Unknown,
        };
        return Some((runtime, id));
    }
    for (prefix, runtime) in PREFIXES {
        if let Some(rest) = comp.strip_prefix(prefix) {
            return match runtime {
                Some(r) if is_id(rest) => Some((r, rest)),
                _ => None,
            };
        }
    }
    if !is_id(comp) {
        return None;
    }
    let runtime = match parent {
        Some("docker" | "actions_job") => Runtime::Docker,
        Some("libpod_parent") => Runtime::Podman,
        _ => Runtime::Unknown,
    };
    Some((runtime, comp))
}

/// Pod UID from a `kubepods` component: `pod<uid>` (cgroupfs) or
/// `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(comp: &str) -> Option<String> {
    let comp = comp.strip_suffix(".slice").unwrap_or(comp);
    let uid = if let Some(rest) = comp.strip_prefix("pod") {
        rest
    } else if comp.starts_with("kubepods") {
        comp.rsplit_once("-pod")?.1
    } else {
        return None;
    };
    let ok = uid.len() == 36
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    ok.then(|| uid.replace('_', "-").to_ascii_lowercase())
}

/// The container of one cgroup path (`/kubepods/…/<id>`), innermost first.
pub fn parse_cgroup_path(path: &str) -> Option<ContainerRef> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let (at, runtime, id) = comps.iter().enumerate().rev().find_map(|(i, c)| {
        let parent = i.checked_sub(1).and_then(|p| comps.get(p)).copied();
        component(c, parent).map(|(r, id)| (i, r, id))
    })?;
    // The pod's slice is an ancestor, or the head of a `slice:prefix:id`
    // component.
    let own_slice = comps
        .get(at)
        .and_then(|c| c.split_once(':'))
        .map(|(slice, _)| slice);
    let pod_uid = own_slice
        .into_iter()
        .chain(comps.get(..at).unwrap_or_default().iter().rev().copied())
        .find_map(pod_uid);
    Some(ContainerRef {
        id: id.to_owned(),
        runtime,
        pod_uid,
    })
}

/// The container of a process from the text of `/proc/PID/cgroup`, `None`
/// when it runs in none (a host process, or a private cgroup namespace at
/// its root: `0::/`). Lines are `hierarchy-id:controllers:path`; the first
/// line that names a container wins (on cgroup v1 all hierarchies agree;
/// on hybrid systems the unified `0::` line often names only the systemd
/// scope, so every line is tried).
pub fn parse_cgroup(text: &str) -> Option<ContainerRef> {
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .find_map(parse_cgroup_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
    const OUTER: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const UID: &str = "8e3c1f0a-5b2d-4c6e-9f70-1a2b3c4d5e6f";
    const UID_: &str = "8e3c1f0a_5b2d_4c6e_9f70_1a2b3c4d5e6f";

    /// Expected (runtime, pod uid) of a table row; `None`: no container.
    type Want = Option<(Runtime, Option<&'static str>)>;

    /// (what, /proc/PID/cgroup text, expected).
    fn table() -> Vec<(&'static str, String, Want)> {
        use Runtime::*;
        vec![
            (
                "docker, systemd driver, cgroup v2",
                format!("0::/system.slice/docker-{ID}.scope\n"),
                Some((Docker, None)),
            ),
            (
                "docker, cgroupfs driver, cgroup v2",
                format!("0::/docker/{ID}\n"),
                Some((Docker, None)),
            ),
            (
                "containerd CRI, systemd driver, burstable pod",
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope\n"
                ),
                Some((Containerd, Some(UID))),
            ),
            (
                "containerd CRI, guaranteed pod (no QoS slice)",
                format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope\n"),
                Some((Containerd, Some(UID))),
            ),
            (
                "containerd, systemd path kept verbatim (kind, k3s)",
                format!(
                    "0::/system.slice/containerd.service/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}\n"
                ),
                Some((Containerd, Some(UID))),
            ),
            (
                "CRI-O, systemd driver",
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope\n"
                ),
                Some((CriO, Some(UID))),
            ),
            (
                "CRI-O, cgroupfs driver",
                format!("0::/kubepods/burstable/pod{UID}/crio-{ID}\n"),
                Some((CriO, Some(UID))),
            ),
            (
                "any CRI runtime, cgroupfs driver, cgroup v2",
                format!("0::/kubepods/besteffort/pod{UID}/{ID}\n"),
                Some((Unknown, Some(UID))),
            ),
            (
                "cgroup v1, one line per hierarchy",
                format!(
                    "12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"
                ),
                Some((Docker, None)),
            ),
            (
                "cgroup v1 kubepods, cgroupfs driver",
                format!(
                    "11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n"
                ),
                Some((Unknown, Some(UID))),
            ),
            (
                "hybrid: unified line names only a systemd scope",
                format!(
                    "1:name=systemd:/user.slice/session-2.scope\n4:pids:/docker/{ID}\n0::/user.slice/session-2.scope\n"
                ),
                Some((Docker, None)),
            ),
            (
                "GitHub Actions job container",
                format!("0::/actions_job/{ID}\n"),
                Some((Docker, None)),
            ),
            (
                "podman, systemd",
                format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
                Some((Podman, None)),
            ),
            (
                "podman conmon is not a container",
                format!("0::/machine.slice/libpod-conmon-{ID}.scope\n"),
                None,
            ),
            (
                "CRI-O conmon is not a container",
                format!("0::/kubepods.slice/crio-conmon-{ID}.scope\n"),
                None,
            ),
            (
                "nested: docker in docker, the innermost id",
                format!("0::/system.slice/docker-{OUTER}.scope/docker/{ID}\n"),
                Some((Docker, None)),
            ),
            (
                "reader in a private cgroup namespace (relative path)",
                format!("0::/../../kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope\n"),
                Some((Containerd, Some(UID))),
            ),
            (
                "systemd inside the container (init.scope below the container)",
                format!("0::/system.slice/docker-{ID}.scope/init.scope\n"),
                Some((Docker, None)),
            ),
            (
                "host process",
                "0::/user.slice/user-0.slice/session-1.scope\n".into(),
                None,
            ),
            ("private cgroup namespace root", "0::/\n".into(), None),
            ("empty", String::new(), None),
            (
                "id of the wrong length",
                format!("0::/system.slice/docker-{}.scope\n", &ID[..63]),
                None,
            ),
            (
                "uppercase hex is not an id",
                format!("0::/docker/{}\n", ID.to_ascii_uppercase()),
                None,
            ),
            ("garbage", "no colons here\n:::\n0:\n".into(), None),
        ]
    }

    #[test]
    fn runtime_formats() {
        for (what, text, want) in table() {
            let got = parse_cgroup(&text);
            match want {
                None => assert_eq!(got, None, "{what}"),
                Some((runtime, uid)) => {
                    let got = got.unwrap_or_else(|| panic!("{what}: no container in {text:?}"));
                    assert_eq!(got.id, ID, "{what}");
                    assert_eq!(got.runtime, runtime, "{what}");
                    assert_eq!(got.pod_uid.as_deref(), uid, "{what}");
                    assert_eq!(got.short_id(), &ID[..12]);
                }
            }
        }
    }

    #[test]
    fn hostile_input_never_panics() {
        let inputs = [
            "0::".to_owned(),
            "0::////".to_owned(),
            format!("0::/{}", "x/".repeat(10_000)),
            format!("0::/a:b:c:{ID}:"),
            format!("0::/pod{}/{ID}", "é".repeat(12)),
            format!("0::/kubepods-pod{}.slice/{ID}", "\u{1F600}".repeat(9)),
            "\0\0:\0:\0".to_owned(),
        ];
        for i in inputs {
            let _ = parse_cgroup(&i);
        }
        // A multibyte pod component of the right byte length is no UID.
        let r = parse_cgroup(&format!("0::/pod{}/{ID}", "é".repeat(18))).expect("container");
        assert_eq!(r.pod_uid, None);
    }
}
