//! Deployment artefacts (`deploy/`), checked without a cluster or a Docker
//! engine:
//!
//! - the kustomize base and overlays render (`kubectl kustomize`, whose
//!   kustomize is built in) and every rendered object is valid for the
//!   Kubernetes versions the manifests claim (1.29, the oldest, and 1.37):
//!   core kinds through kubernetes-validate's strict schemas, the
//!   prometheus-operator kinds through models generated from the operator's
//!   CRDs (`deploy/kubernetes/validate.py`, in the virtualenv `cargo xtask
//!   test` prepares);
//! - the rendered DaemonSet carries exactly the capabilities, probes,
//!   mounts and environment that docs/deploy.md promises, and the objects
//!   refer to each other correctly (Service → pods, ServiceMonitor →
//!   Service, volumes → ConfigMap and Secret, config port → probes);
//! - the agent config in each ConfigMap passes `sessionwatch check-config`;
//! - the PrometheusRule and the Grafana dashboard ConfigMap in the base are
//!   exactly what `dashboards/` generates (regenerate with
//!   `SESSIONWATCH_UPDATE_GENERATED=1 cargo test -p sessionwatch --test deploy`);
//! - deploy/Dockerfile builds with the README's xtask steps and copies
//!   what those steps produce (`cargo xtask test` also runs the builder's
//!   `cargo xtask` steps, see xtask/src/deploy.rs).
//!
//! Without kubectl or the validator virtualenv the parts that need them
//! print a loud SKIP (or fail when `CI` or `SESSIONWATCH_E2E_REQUIRED=1` is
//! set); the pure checks always run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// Kubernetes versions the manifests claim: the oldest supported and the
/// newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

/// Capabilities the DaemonSet grants (and docs/deploy.md explains).
/// `SYS_RESOURCE` is deliberately absent: the kernels the agent supports
/// (≥ 5.15) charge BPF memory to the memory cgroup, not `RLIMIT_MEMLOCK`.
const CAPABILITIES: [&str; 5] = [
    "BPF",
    "PERFMON",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
    "SYS_ADMIN",
];

fn kube() -> PathBuf {
    repo().join("deploy/kubernetes")
}

fn update_generated() -> bool {
    std::env::var_os("SESSIONWATCH_UPDATE_GENERATED").is_some_and(|v| v == "1")
}

/// Compares a generated file with what it should be (rewrites it first
/// when `SESSIONWATCH_UPDATE_GENERATED=1`).
fn check_generated(path: &Path, expected: &str, source: &str) {
    if update_generated() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, expected).unwrap();
    }
    let actual = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        actual == expected,
        "{} is out of date with {source}; regenerate with \
         SESSIONWATCH_UPDATE_GENERATED=1 cargo test -p sessionwatch --test deploy",
        path.display()
    );
}

const GENERATED_HEADER: &str =
    "# Regenerate: SESSIONWATCH_UPDATE_GENERATED=1 cargo test -p sessionwatch --test deploy\n";

/// The Grafana dashboard as a ConfigMap the Grafana sidecar (kube-prometheus-
/// stack, grafana helm chart) imports: label `grafana_dashboard: "1"`, the
/// JSON verbatim as a literal block.
fn dashboard_configmap(json: &str) -> String {
    let mut out = format!(
        "# GENERATED from dashboards/sessionwatch.json by agent/tests/deploy.rs — do not edit.\n\
         {GENERATED_HEADER}\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  \
           name: sessionwatch-dashboard\n  \
           labels:\n    \
             app.kubernetes.io/name: sessionwatch\n    \
             app.kubernetes.io/component: dashboard\n    \
             grafana_dashboard: \"1\"\n\
         data:\n  \
           sessionwatch.json: |\n"
    );
    for line in json.lines() {
        if !line.is_empty() {
            out.push_str("    ");
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// dashboards/generated/prometheusrule.yaml under a header naming this
/// file (kustomize cannot reference files outside its root).
fn prometheusrule_copy(generated: &str) -> String {
    let mut out = String::from(
        "# GENERATED from dashboards/generated/prometheusrule.yaml (itself generated from\n\
         # dashboards/sessionwatch-rules.yml) by agent/tests/deploy.rs — do not edit.\n",
    );
    out.push_str(GENERATED_HEADER);
    for line in generated.lines().skip_while(|l| l.starts_with('#')) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn generated_dashboard_configmap_is_up_to_date() {
    let json = std::fs::read_to_string(repo().join("dashboards/sessionwatch.json")).unwrap();
    assert!(
        !json.contains('\t') && !json.contains('\r'),
        "the dashboard must be embeddable as a YAML literal block"
    );
    check_generated(
        &kube().join("base/generated/grafana-dashboard.yaml"),
        &dashboard_configmap(&json),
        "dashboards/sessionwatch.json",
    );
}

#[test]
fn generated_prometheusrule_is_up_to_date() {
    let generated =
        std::fs::read_to_string(repo().join("dashboards/generated/prometheusrule.yaml")).unwrap();
    check_generated(
        &kube().join("base/generated/prometheusrule.yaml"),
        &prometheusrule_copy(&generated),
        "dashboards/generated/prometheusrule.yaml",
    );
}

// ---------------------------------------------------------------------------
// check-config on the ConfigMaps' configs

/// Runs `sessionwatch check-config` on a config text. The key file the
/// DaemonSet mounts from the Secret is replaced by a test key with the
/// Secret volume's mode (0400), so the check reads a real key.
fn check_config(name: &str, toml: &str) -> String {
    let dir =
        std::env::temp_dir().join(format!("sessionwatch-deploy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    let mounted = "\"/etc/sessionwatch/hash-key/key\"";
    assert!(
        toml.contains(mounted),
        "{name}: the config reads the hash key from the Secret mount {mounted}"
    );
    let toml = toml.replace(mounted, &format!("{:?}", key.to_str().unwrap()));
    let file = dir.join("sessionwatch.toml");
    std::fs::write(&file, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sessionwatch"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name}: check-config failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("valid; effective configuration"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    stdout
}

#[test]
fn configmap_configs_pass_check_config() {
    for (name, rel) in [
        ("base", "base/sessionwatch.toml"),
        ("example", "overlays/example/sessionwatch.toml"),
    ] {
        let toml = std::fs::read_to_string(kube().join(rel)).unwrap();
        let effective = check_config(name, &toml);
        // The probes and the Service use port 9477 (named `metrics`).
        assert!(
            effective.contains("listen = \"0.0.0.0:9477\""),
            "{name}: the admin endpoint must listen on every interface, port 9477:\n{effective}"
        );
        assert!(
            !toml
                .lines()
                .any(|l| l.trim_start().starts_with("node_name")),
            "{name}: node_name must stay unset so NODE_NAME (downward API) names the node"
        );
    }
}

// ---------------------------------------------------------------------------
// rendering and validation

/// `kubectl kustomize DIR`, or `None` after a loud SKIP (a panic in CI).
fn render(dir: &str) -> Option<String> {
    let Some(kubectl) = find_tool("kubectl") else {
        assert!(
            !required(),
            "kubectl (with its built-in kustomize) is required in CI to render deploy/kubernetes"
        );
        eprintln!(
            "\n!!!!!!!!!! SKIP deploy rendering: kubectl not installed — manifests NOT rendered !!!!!!!!!!\n"
        );
        return None;
    };
    let version = Command::new(&kubectl)
        .args(["version", "--client"])
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        version.contains("Kustomize Version: v5"),
        "the manifests use kustomize v5 fields (labels, patches); this kubectl has:\n{version}"
    );
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(kube().join(dir))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// The validator's Python (the virtualenv made by `cargo xtask test`):
/// `$SESSIONWATCH_DEPLOY_PYTHON`, else `deploy-venv/bin/python` in the
/// project's tool cache (as xtask computes it).
fn validator_python() -> Option<PathBuf> {
    let py = std::env::var_os("SESSIONWATCH_DEPLOY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("SESSIONWATCH_TOOLCHAIN_DIR")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("XDG_CACHE_HOME")
                        .map(|c| PathBuf::from(c).join("sessionwatch"))
                })
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sessionwatch"))
                })
                .unwrap_or_else(|| repo().join("target/xtask"))
                .join("deploy-venv/bin/python")
        });
    if py.is_file() {
        return Some(py);
    }
    assert!(
        !required(),
        "{} is missing: `cargo xtask test` (or `cargo xtask deploy-tools`) installs \
         kubernetes-validate and the prometheus-operator models there",
        py.display()
    );
    eprintln!(
        "\n!!!!!!!!!! SKIP deploy validation: {} missing (run `cargo xtask deploy-tools`) — \
         manifests NOT validated !!!!!!!!!!\n",
        py.display()
    );
    None
}

/// One rendered kustomization, validated, as JSON documents.
struct Rendered {
    name: &'static str,
    docs: Vec<Value>,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn one(&self, kind: &str, name_prefix: &str) -> &Value {
        let found: Vec<&Value> = self
            .all(kind)
            .into_iter()
            .filter(|d| {
                d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: exactly one {kind} {name_prefix}*",
            self.name
        );
        found[0]
    }

    fn daemonset(&self) -> &Value {
        self.one("DaemonSet", "sessionwatch")
    }

    fn container(&self) -> &Value {
        let c = &self.daemonset()["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().map(Vec::len), Some(1), "one container");
        &c[0]
    }
}

/// Renders and validates `dir` once per test binary.
fn rendered(dir: &'static str) -> Option<&'static Rendered> {
    static CACHE: OnceLock<Vec<Option<Rendered>>> = OnceLock::new();
    const DIRS: [&str; 4] = [
        "base",
        "overlays/example",
        "overlays/privileged",
        "overlays/kubernetes",
    ];
    let all = CACHE.get_or_init(|| {
        let Some(py) = validator_python() else {
            return DIRS.iter().map(|_| None).collect();
        };
        // Render all, then validate all at once (one validator process
        // per kustomization, every claimed version each).
        let jobs: Vec<Option<(PathBuf, std::process::Child)>> = DIRS
            .iter()
            .map(|d| {
                let yaml = render(d)?;
                let tmp = std::env::temp_dir().join(format!(
                    "sessionwatch-deploy-render-{}-{}",
                    std::process::id(),
                    d.replace('/', "-")
                ));
                std::fs::create_dir_all(&tmp).unwrap();
                let file = tmp.join("rendered.yaml");
                std::fs::write(&file, &yaml).unwrap();
                let mut cmd = Command::new(&py);
                cmd.arg(kube().join("validate.py"));
                for version in KUBERNETES_VERSIONS {
                    cmd.args(["--kubernetes-version", version]);
                }
                let child = cmd
                    .arg("--json")
                    .arg(tmp.join("rendered.json"))
                    .arg(&file)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                Some((tmp, child))
            })
            .collect();
        DIRS.iter()
            .zip(jobs)
            .map(|(d, job)| {
                let (tmp, child) = job?;
                let out = child.wait_with_output().unwrap();
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    out.status.success() && text.contains(", 0 problems"),
                    "{d}: invalid for Kubernetes {KUBERNETES_VERSIONS:?}:\n{text}"
                );
                let json = std::fs::read_to_string(tmp.join("rendered.json")).unwrap();
                let docs: Vec<Value> = serde_json::from_str(&json).unwrap();
                let _ = std::fs::remove_dir_all(&tmp);
                Some(Rendered { name: d, docs })
            })
            .collect()
    });
    let i = DIRS.iter().position(|d| *d == dir).unwrap();
    all[i].as_ref()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// Backticked items of one `## Section` of docs/deploy.md.
fn doc_section_items(section: &str) -> BTreeSet<String> {
    let doc = std::fs::read_to_string(repo().join("docs/deploy.md")).unwrap();
    let start = doc
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("docs/deploy.md has no `## {section}` section"));
    let body = &doc[start + section.len() + 5..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    body.lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1))
        .map(str::to_owned)
        .collect()
}

#[test]
fn base_daemonset_keeps_the_documented_promises() {
    let Some(r) = rendered("base") else { return };
    let ds = r.daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    let c = r.container();

    assert_eq!(
        pod["hostPID"], true,
        "the agent must see the node's processes"
    );
    assert_ne!(pod["hostNetwork"], true, "no host network needed");
    let tolerations = pod["tolerations"].as_array().unwrap();
    assert!(
        tolerations.iter().any(|t| t["operator"] == "Exists"
            && t.get("key").is_none()
            && t.get("effect").is_none()),
        "a toleration of every taint, so every node runs the agent: {tolerations:?}"
    );

    // Capabilities: exactly the documented set, nothing else.
    let sc = &c["securityContext"];
    let added = strings(&sc["capabilities"]["add"]);
    let want: BTreeSet<String> = CAPABILITIES.iter().map(|s| s.to_string()).collect();
    assert_eq!(added, want);
    assert_eq!(
        strings(&sc["capabilities"]["drop"]),
        BTreeSet::from(["ALL".to_owned()])
    );
    let documented: BTreeSet<String> = doc_section_items("Capabilities")
        .into_iter()
        .filter_map(|c| c.strip_prefix("CAP_").map(str::to_owned))
        .collect();
    assert_eq!(
        documented, want,
        "docs/deploy.md `## Capabilities` lists exactly what the DaemonSet grants"
    );
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(
        sc["runAsUser"], 0,
        "capabilities need uid 0 without ambient caps"
    );
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");

    // Probes on the admin endpoint's named port.
    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    assert_eq!(port["containerPort"], 9477);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["startupProbe"]["httpGet"]["path"], "/healthz");

    // Requests and limits for CPU and memory.
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][res].is_string(),
                "resources.{kind}.{res} is set"
            );
        }
    }

    // NODE_NAME from the downward API.
    let env = c["env"].as_array().unwrap();
    let node = env
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME env");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");

    // Mounts: exactly the documented ones, each backed by the right volume.
    let mounts = c["volumeMounts"].as_array().unwrap();
    let paths: BTreeSet<String> = mounts
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        doc_section_items("Mounts"),
        paths,
        "docs/deploy.md `## Mounts` lists exactly the DaemonSet's mounts"
    );
    let volume = |mount_path: &str| -> &Value {
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == mount_path)
            .unwrap_or_else(|| panic!("no mount at {mount_path}"));
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("no volume {} for {mount_path}", m["name"]))
    };
    let tracefs = volume("/sys/kernel/tracing");
    assert_eq!(tracefs["hostPath"]["path"], "/sys/kernel/tracing");
    assert_eq!(tracefs["hostPath"]["type"], "Directory");
    assert!(
        volume("/tmp")["emptyDir"].is_object(),
        "scratch space for a read-only root"
    );
    let key = volume("/etc/sessionwatch/hash-key");
    assert_eq!(key["secret"]["secretName"], "sessionwatch-hash-key");
    assert_eq!(
        key["secret"]["defaultMode"], 0o400,
        "the agent refuses a world-readable key"
    );

    // The config: args name the file the ConfigMap volume provides.
    let args = strings(&c["args"]);
    assert_eq!(
        c["args"],
        serde_json::json!(["run", "--config", "/etc/sessionwatch/sessionwatch.toml"])
    );
    assert!(args.contains("run"));
    let cm = r.one("ConfigMap", "sessionwatch-config");
    assert_eq!(
        volume("/etc/sessionwatch")["configMap"]["name"],
        cm["metadata"]["name"],
        "the config volume refers to the generated (hash-suffixed) ConfigMap"
    );
    let toml = cm["data"]["sessionwatch.toml"].as_str().unwrap();
    assert_eq!(
        toml,
        std::fs::read_to_string(kube().join("base/sessionwatch.toml")).unwrap()
    );
    check_config("rendered-base", toml);

    // Image: the agent's version, for the overlays' `images:` to retag.
    assert_eq!(
        c["image"],
        format!("sessionwatch:{}", env!("CARGO_PKG_VERSION")),
        "the base image tag follows the workspace version"
    );
    assert_eq!(
        pod["serviceAccountName"],
        r.one("ServiceAccount", "sessionwatch")["metadata"]["name"]
    );
}

#[test]
fn base_objects_refer_to_each_other() {
    let Some(r) = rendered("base") else { return };
    let ns = r.one("Namespace", "sessionwatch");
    let ns_name = ns["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged",
        "Pod Security Admission would reject hostPID, hostPath and added capabilities"
    );
    for d in &r.docs {
        if d["kind"] != "Namespace" {
            assert_eq!(
                d["metadata"]["namespace"], ns_name,
                "{} {} is in the agent's namespace",
                d["kind"], d["metadata"]["name"]
            );
        }
    }
    let ds = r.daemonset();
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let matches = |selector: &Value, labels: &Value| {
        selector
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| &labels[k] == v)
    };
    assert!(matches(&ds["spec"]["selector"]["matchLabels"], pod_labels));

    let svc = r.one("Service", "sessionwatch");
    assert_eq!(
        svc["spec"]["clusterIP"], "None",
        "headless: one endpoint per agent"
    );
    assert!(matches(&svc["spec"]["selector"], pod_labels));
    let svc_port = &svc["spec"]["ports"][0];
    assert_eq!(svc_port["name"], "metrics");
    assert_eq!(svc_port["targetPort"], "metrics");
    assert_eq!(
        svc["metadata"]["name"], "sessionwatch",
        "the Service name is the `job` label the dashboard and rules expect"
    );

    let sm = r.one("ServiceMonitor", "sessionwatch");
    assert!(matches(
        &sm["spec"]["selector"]["matchLabels"],
        &svc["metadata"]["labels"]
    ));
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], svc_port["name"]);
    assert_eq!(ep["path"], "/metrics");
    assert!(
        ep["relabelings"].as_array().unwrap().iter().any(|rl| {
            rl["targetLabel"] == "instance"
                && strings(&rl["sourceLabels"]).contains("__meta_kubernetes_pod_node_name")
        }),
        "`instance` is the node name (the dashboard's node variable)"
    );

    let rule = r.one("PrometheusRule", "sessionwatch");
    let groups = rule["spec"]["groups"].as_array().unwrap();
    assert!(!groups.is_empty());

    let dash = r.one("ConfigMap", "sessionwatch-dashboard");
    assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    let embedded: Value =
        serde_json::from_str(dash["data"]["sessionwatch.json"].as_str().unwrap()).unwrap();
    let source: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/sessionwatch.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        embedded, source,
        "the ConfigMap carries the dashboard unchanged"
    );
}

#[test]
fn example_overlay_applies_its_changes() {
    let Some(r) = rendered("overlays/example") else {
        return;
    };
    let c = r.container();
    assert_eq!(
        c["image"],
        "registry.example.com/security/sessionwatch:0.1.0"
    );
    assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
    // The patch merges: the base's security settings survive it.
    assert_eq!(
        strings(&c["securityContext"]["capabilities"]["add"]).len(),
        CAPABILITIES.len()
    );
    let cm = r.one("ConfigMap", "sessionwatch-config");
    let toml = cm["data"]["sessionwatch.toml"].as_str().unwrap();
    assert_eq!(
        toml,
        std::fs::read_to_string(kube().join("overlays/example/sessionwatch.toml")).unwrap()
    );
    check_config("rendered-example", toml);
    let pod = &r.daemonset()["spec"]["template"]["spec"];
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["configMap"]["name"] == cm["metadata"]["name"]),
        "the DaemonSet mounts the overlay's ConfigMap (new hash suffix)"
    );
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert_eq!(
            r.one(kind, "sessionwatch")["metadata"]["labels"]["release"],
            "kube-prometheus-stack"
        );
    }
}

#[test]
fn privileged_overlay_is_a_valid_fallback() {
    let Some(r) = rendered("overlays/privileged") else {
        return;
    };
    let sc = &r.container()["securityContext"];
    assert_eq!(sc["privileged"], true);
    // The API server rejects privileged with allowPrivilegeEscalation false
    // (a rule schema validation does not see).
    assert_eq!(sc["allowPrivilegeEscalation"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(r.daemonset()["spec"]["template"]["spec"]["hostPID"], true);
}

/// RBAC kinds: only the enrichment component may bring any.
const RBAC_KINDS: [&str; 4] = ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"];

#[test]
fn base_has_no_api_access() {
    let Some(r) = rendered("base") else {
        return;
    };
    for kind in RBAC_KINDS {
        assert!(r.all(kind).is_empty(), "base: no {kind} (least privilege)");
    }
    assert_eq!(
        r.daemonset()["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false,
        "base: no service-account token in the pod"
    );
}

/// `[kubernetes] enabled = true` passes check-config with the feature and
/// is exit 2, naming the feature, without it (never silently ignored).
fn check_kubernetes_config(name: &str, toml: &str) {
    if cfg!(feature = "kubernetes") {
        let effective = check_config(name, toml);
        assert!(
            effective.contains("[kubernetes]\nenabled = true"),
            "{effective}"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "sessionwatch-deploy-{}-{name}-nofeature",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sessionwatch.toml");
    // Only the [kubernetes] part: the rest is checked by check_config.
    let start = toml.find("[kubernetes]").expect("a [kubernetes] section");
    std::fs::write(&file, &toml[start..]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sessionwatch"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
    assert!(
        stderr.contains("kubernetes.enabled") && stderr.contains("`kubernetes` cargo feature"),
        "{name}: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kubernetes_overlay_grants_read_only_pod_access() {
    let toml =
        std::fs::read_to_string(kube().join("overlays/kubernetes/sessionwatch.toml")).unwrap();
    check_kubernetes_config("kubernetes", &toml);
    let Some(r) = rendered("overlays/kubernetes") else {
        return;
    };
    let role = r.one("ClusterRole", "sessionwatch");
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]),
        "pods, read only, nothing else"
    );
    assert!(r.all("Role").is_empty() && r.all("RoleBinding").is_empty());
    let binding = r.one("ClusterRoleBinding", "sessionwatch");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let ds = r.daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                            "namespace": ds["metadata"]["namespace"]}]),
        "bound to the DaemonSet's own service account"
    );
    assert_eq!(
        pod["automountServiceAccountToken"], true,
        "the token the agent authenticates with"
    );
    // The NODE_NAME the agent lists its node's pods by.
    let env = &r.container()["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "NODE_NAME"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "{env}"
    );
    let cm = r.one("ConfigMap", "sessionwatch-config");
    let rendered_toml = cm["data"]["sessionwatch.toml"].as_str().unwrap();
    assert_eq!(rendered_toml, toml);
    let base = std::fs::read_to_string(kube().join("base/sessionwatch.toml")).unwrap();
    assert!(
        toml.starts_with(&base),
        "the overlay's config is the base's plus [kubernetes]"
    );
}

// ---------------------------------------------------------------------------
// Dockerfile

/// Dockerfile instructions: (KEYWORD, arguments), continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (kw, rest) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
        out.push((kw.to_ascii_uppercase(), rest.trim().to_owned()));
        cur.clear();
    }
    out
}

#[test]
fn dockerfile_builds_with_the_readme_steps() {
    let ins = dockerfile();
    let froms: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(froms.len(), 2, "multi-stage: a builder and a runtime stage");
    let builder = &ins[froms[0]..froms[1]];
    let runtime = &ins[froms[1]..];

    // Builder: Debian 12 with the workspace's pinned stable Rust.
    let ws = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let rust_version = ws
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert_eq!(
        builder[0].1,
        format!("rust:{rust_version}-bookworm AS builder"),
        "the builder uses the workspace's rust-version on Debian 12"
    );
    let runs: Vec<&str> = builder
        .iter()
        .filter(|(k, _)| k == "RUN")
        .map(|(_, a)| a.as_str())
        .collect();
    assert!(
        runs.iter()
            .any(|r| r.contains("rustup toolchain install nightly") && r.contains("rust-src")),
        "the eBPF build needs the nightly with rust-src: {runs:?}"
    );
    // Every xtask step the builder runs is a real xtask command, and the
    // README's build (`cargo xtask build`) is among them.
    let xtask_main = std::fs::read_to_string(repo().join("xtask/src/main.rs")).unwrap();
    let mut steps = Vec::new();
    for r in &runs {
        for part in r.split("&&") {
            if let Some(sub) = part.trim().strip_prefix("cargo xtask ") {
                let sub = sub.split_whitespace().next().unwrap();
                let variant: String = sub
                    .split('-')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                            .unwrap_or_default()
                    })
                    .collect();
                assert!(
                    xtask_main.contains(&format!("    {variant},"))
                        || xtask_main.contains(&format!("    {variant} {{")),
                    "`cargo xtask {sub}` in the Dockerfile is not an xtask command"
                );
                steps.push(sub.to_owned());
            }
        }
    }
    assert!(steps.contains(&"build".to_owned()), "{steps:?}");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let deploy_doc = std::fs::read_to_string(repo().join("docs/deploy.md")).unwrap();
    assert!(
        readme.contains("cargo xtask build") && deploy_doc.contains("cargo xtask build"),
        "README and docs/deploy.md describe the same build as the Dockerfile"
    );
    let workdir = builder
        .iter()
        .rev()
        .find(|(k, _)| k == "WORKDIR")
        .map(|(_, a)| a.trim_end_matches('/').to_owned())
        .expect("builder WORKDIR");
    assert!(
        builder.iter().any(|(k, a)| k == "COPY" && a == ". ."),
        "the builder copies the build context (filtered by .dockerignore)"
    );

    // Runtime: no toolchain, only what the builder produced.
    assert!(
        runtime[0].1.contains("-slim"),
        "slim runtime base: {}",
        runtime[0].1
    );
    assert!(
        !runtime
            .iter()
            .any(|(k, a)| k == "RUN" && (a.contains("cargo") || a.contains("rustup"))),
        "no toolchain in the runtime image"
    );
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target", ".git"] {
        assert!(ignored.contains(&must), ".dockerignore keeps {must} out");
    }
    let mut copied = Vec::new();
    for (k, a) in runtime {
        if k != "COPY" {
            continue;
        }
        let mut parts = a.split_whitespace();
        assert_eq!(parts.next(), Some("--from=builder"), "runtime copies: {a}");
        let (src, dst) = (parts.next().unwrap(), parts.next().unwrap());
        let rel = src
            .strip_prefix(&format!("{workdir}/"))
            .unwrap_or_else(|| panic!("{src} is not under the builder's WORKDIR {workdir}"));
        if let Some(out) = rel.strip_prefix("target/") {
            // Where `cargo xtask build` puts the agent (release profile,
            // default target dir: the builder sets no CARGO_TARGET_DIR).
            assert_eq!(out, "release/sessionwatch", "{src}");
            assert!(
                xtask_main.contains("\"release/sessionwatch\""),
                "xtask's build output path changed; update the Dockerfile"
            );
        } else {
            assert!(repo().join(rel).is_file(), "COPY source {rel} exists");
            assert!(
                !ignored
                    .iter()
                    .any(|i| rel.starts_with(i.trim_start_matches('/'))),
                "{rel} is excluded from the build context by .dockerignore"
            );
        }
        copied.push((src.to_owned(), dst.to_owned()));
    }
    let entry = runtime
        .iter()
        .find(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, a)| serde_json::from_str::<Vec<String>>(a).unwrap())
        .expect("ENTRYPOINT");
    assert!(
        copied.iter().any(|(_, d)| *d == entry[0]),
        "the ENTRYPOINT is the copied binary"
    );
    let cmd = runtime
        .iter()
        .find(|(k, _)| k == "CMD")
        .map(|(_, a)| serde_json::from_str::<Vec<String>>(a).unwrap())
        .expect("CMD");
    assert_eq!(cmd[0], "run");
    if let Some(cfg) = cmd.iter().skip_while(|a| *a != "--config").nth(1) {
        assert!(
            copied.iter().any(|(_, d)| d == cfg),
            "CMD's config is in the image"
        );
    }
    assert!(
        runtime
            .iter()
            .any(|(k, a)| k == "EXPOSE" && a.split_whitespace().any(|p| p == "9477")),
        "EXPOSE the admin port"
    );
}
