//! The Kubernetes manifests in `deploy/`: rendered from the Kustomize tree without drift, every
//! object schema-valid against the Kubernetes API types (k8s-openapi, generated from the API's
//! OpenAPI document), internally consistent (selectors, volumes, probes, ports, references), accepted
//! by `kubectl apply --dry-run=client`, using only flags `agentctl run` has, and granting exactly the
//! RBAC the code's watchers use.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PodSpec, PodTemplateSpec, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::{NamespaceResourceScope, Resource};
use serde_json::{Value, json};
use svcnet_core::model::Kind;
use svcnet_core::source::kube::watched_resources;

/// One way of running svcnet: a rendered file in `deploy/manifests/` and its Kustomize source.
struct Variant {
    file: &'static str,
    kustomization: &'static str,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        file: "svcnet.yaml",
        kustomization: "kustomize/base",
    },
    Variant {
        file: "dns-only.yaml",
        kustomization: "kustomize/overlays/dns-only",
    },
    Variant {
        file: "svcnet-pods-verified.yaml",
        kustomization: "kustomize/overlays/pods-verified",
    },
    Variant {
        file: "svcnet-node-local.yaml",
        kustomization: "kustomize/overlays/node-local",
    },
];

/// The kinds `agentctl run` always asks its source for (`AgentOptions::kinds` in
/// agentctl/src/main.rs); the proxy adds `svcnet_core::ipvs::app::kinds_for` (its own Node
/// object with `--node-name`).
const AGENT_RUN_KINDS: [Kind; 2] = [Kind::Service, Kind::EndpointSlice];

/// ConfigMaps the workloads reference that the operator creates (documented in
/// docs/migration.md), not the manifests.
const OPERATOR_CONFIGMAPS: [&str; 1] = ["svcnet-apiserver"];

#[test]
fn the_migration_guide_tells_how_to_create_the_operator_configmaps() {
    let guide = std::fs::read_to_string(deploy_dir().join("../docs/migration.md"))
        .expect("docs/migration.md");
    for name in OPERATOR_CONFIGMAPS {
        let create = format!("kubectl -n kube-system create configmap {name}");
        assert!(
            guide.contains(&create),
            "docs/migration.md must show `{create}`"
        );
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

macro_rules! require_kubectl {
    () => {
        if !kubectl_available() {
            eprintln!("SKIPPED: kubectl is not installed (needed to render Kustomize and dry-run)");
            return;
        }
    };
}

/// A parsed object with where it came from, for error messages.
#[derive(Clone)]
struct Object {
    origin: String,
    value: Value,
}

impl Object {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
    fn at(&self) -> String {
        format!("{} ({} {})", self.origin, self.kind(), self.name())
    }
}

fn parse_documents(origin: &str, text: &str) -> Vec<Object> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{origin}: invalid YAML: {e}"));
    docs.into_iter()
        .filter(|v| !v.is_null())
        .enumerate()
        .map(|(i, value)| Object {
            origin: format!("{origin} document {i}"),
            value,
        })
        .collect()
}

fn load_variant(v: &Variant) -> Vec<Object> {
    let path = deploy_dir().join("manifests").join(v.file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let objects = parse_documents(&format!("deploy/manifests/{}", v.file), &text);
    assert!(!objects.is_empty(), "{} holds no object", path.display());
    objects
}

#[test]
fn plain_manifests_are_the_rendered_kustomizations() {
    require_kubectl!();
    let out = Command::new(deploy_dir().join("render-manifests.sh"))
        .arg("--check")
        .output()
        .expect("running deploy/render-manifests.sh");
    assert!(
        out.status.success(),
        "deploy/manifests/ drifted from deploy/kustomize/:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the check itself sees a difference when there is one.
    for v in &VARIANTS {
        let rendered = Command::new("kubectl")
            .arg("kustomize")
            .arg(deploy_dir().join(v.kustomization))
            .output()
            .expect("kubectl kustomize");
        assert!(
            rendered.status.success(),
            "kubectl kustomize {}",
            v.kustomization
        );
        let rendered = String::from_utf8(rendered.stdout).unwrap();
        let file = std::fs::read_to_string(deploy_dir().join("manifests").join(v.file)).unwrap();
        assert!(
            file.ends_with(&rendered),
            "{} is not the rendering of {}",
            v.file,
            v.kustomization
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Schema: typed decoding into the Kubernetes API types, with nothing lost on the way back.

/// Decodes `obj` as `T` and encodes it again. A wrong type fails the decoding; an unknown or
/// misspelt field does not survive the round trip; a missing required field comes back (k8s-openapi
/// always encodes required fields, and only those, when they are absent from the input).
fn check_schema<T>(obj: &Object) -> Result<(), String>
where
    T: Resource + serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_json::from_value(obj.value.clone())
        .map_err(|e| format!("{}: not a valid {}: {e}", obj.at(), T::KIND))?;
    let back = serde_json::to_value(&typed).unwrap();
    let mut unknown = Vec::new();
    diff("", &obj.value, &back, &mut unknown, true);
    let mut missing = Vec::new();
    diff("", &back, &obj.value, &mut missing, false);
    let mut problems = Vec::new();
    if !unknown.is_empty() {
        problems.push(format!(
            "fields unknown to {} {}: {}",
            T::API_VERSION,
            T::KIND,
            unknown.join(", ")
        ));
    }
    if !missing.is_empty() {
        problems.push(format!("required fields missing: {}", missing.join(", ")));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", obj.at(), problems.join("; ")))
    }
}

/// Paths of `a` that `b` lacks; with `changes`, also paths whose values differ.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>, changes: bool) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(vb) => diff(&p, va, vb, out, changes),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(xs), Value::Array(ys)) if xs.len() == ys.len() => {
            for (i, (x, y)) in xs.iter().zip(ys).enumerate() {
                diff(&format!("{path}[{i}]"), x, y, out, changes);
            }
        }
        (x, y) if x == y || !changes => {}
        _ => out.push(format!("{path} (value changed: {a} -> {b})")),
    }
}

/// A type the manifests may contain: its API identity (from k8s-openapi) and its schema check.
struct KnownType {
    api_version: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    check: fn(&Object) -> Result<(), String>,
}

fn known<T>() -> KnownType
where
    T: Resource + serde::de::DeserializeOwned + serde::Serialize,
    T::Scope: 'static,
{
    KnownType {
        api_version: T::API_VERSION,
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        plural: T::URL_PATH_SEGMENT,
        namespaced: std::any::TypeId::of::<T::Scope>()
            == std::any::TypeId::of::<NamespaceResourceScope>(),
        check: check_schema::<T>,
    }
}

fn known_types() -> Vec<KnownType> {
    vec![
        known::<ServiceAccount>(),
        known::<ConfigMap>(),
        known::<Service>(),
        known::<DaemonSet>(),
        known::<Deployment>(),
        known::<PodDisruptionBudget>(),
        known::<ClusterRole>(),
        known::<ClusterRoleBinding>(),
    ]
}

#[test]
fn every_object_is_schema_valid_with_required_metadata() {
    let types = known_types();
    let mut errors = Vec::new();
    for v in &VARIANTS {
        let mut seen = BTreeSet::new();
        for obj in load_variant(v) {
            let api_version = obj.value["apiVersion"].as_str().unwrap_or("");
            let kind = obj.kind();
            if api_version.is_empty() || kind.is_empty() || obj.name().is_empty() {
                errors.push(format!(
                    "{}: apiVersion, kind and metadata.name are required",
                    obj.at()
                ));
                continue;
            }
            let Some(ty) = types
                .iter()
                .find(|t| t.api_version == api_version && t.kind == kind)
            else {
                errors.push(format!(
                    "{}: unexpected type {api_version} {kind}",
                    obj.at()
                ));
                continue;
            };
            if let Err(e) = (ty.check)(&obj) {
                errors.push(e);
            }
            let ns = obj.value["metadata"]["namespace"].as_str();
            match (ty.namespaced, ns) {
                (true, Some("kube-system")) | (false, None) => {}
                (true, other) => errors.push(format!(
                    "{}: namespaced object must be in kube-system, is in {other:?}",
                    obj.at()
                )),
                (false, Some(ns)) => errors.push(format!(
                    "{}: cluster-scoped object has namespace {ns}",
                    obj.at()
                )),
            }
            if !seen.insert((kind.to_string(), obj.name().to_string())) {
                errors.push(format!("{}: defined twice", obj.at()));
            }
        }
    }
    assert!(errors.is_empty(), "schema problems:\n{}", errors.join("\n"));
}

#[test]
fn the_schema_check_rejects_unknown_fields_wrong_types_and_missing_required_fields() {
    let bad = |yaml: &str| {
        let obj = parse_documents("inline", yaml).remove(0);
        check_schema::<DaemonSet>(&obj)
    };
    let good = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: [{name: c, image: i}]\n";
    assert_eq!(bad(good), Ok(()));
    let typo = good.replace("containers:", "hostNetwork: true\n      containerz:");
    let err = bad(&typo).unwrap_err();
    assert!(
        err.contains("containerz") || err.contains("containers"),
        "{err}"
    );
    let unknown = good.replace(
        "      containers:",
        "      hostNetwrok: true\n      containers:",
    );
    assert!(
        bad(&unknown)
            .unwrap_err()
            .contains(".spec.template.spec.hostNetwrok")
    );
    let wrong_type = good.replace("name: c,", "name: 7,");
    assert!(bad(&wrong_type).is_err());
    let no_selector = good.replace("  selector: {matchLabels: {a: b}}\n", "");
    let err = bad(&no_selector).unwrap_err();
    assert!(
        err.contains("required fields missing: .spec.selector"),
        "{err}"
    );
    let no_container_name = good.replace("name: c, ", "");
    let err = bad(&no_container_name).unwrap_err();
    assert!(
        err.contains(".spec.template.spec.containers[0].name"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Consistency between the objects of one variant.

fn typed<T: serde::de::DeserializeOwned>(obj: &Object) -> T {
    serde_json::from_value(obj.value.clone()).unwrap_or_else(|e| panic!("{}: {e}", obj.at()))
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Checks a pod template against the other objects of its variant; returns the problems found.
fn check_pod_template(
    at: &str,
    template: &PodTemplateSpec,
    selector: &BTreeMap<String, String>,
    objects: &[Object],
) -> Vec<String> {
    let mut errors = Vec::new();
    let has = |kind: &str, name: &str| objects.iter().any(|o| o.kind() == kind && o.name() == name);
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if !labels_match(selector, &labels) {
        errors.push(format!(
            "{at}: selector {selector:?} does not match template labels {labels:?}"
        ));
    }
    let spec = template.spec.as_ref().expect("template.spec");
    match spec.service_account_name.as_deref() {
        Some(sa) if has("ServiceAccount", sa) => {}
        other => errors.push(format!(
            "{at}: serviceAccountName {other:?} is not defined here"
        )),
    }
    if spec.dns_policy.as_deref() != Some("Default") {
        errors.push(format!(
            "{at}: dnsPolicy must be Default (forwarding to the node's resolvers, never to itself)"
        ));
    }
    let volumes: BTreeMap<String, _> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), v))
        .collect();
    let mut mounted = BTreeSet::new();
    for c in &spec.containers {
        let cat = format!("{at} container {}", c.name);
        match c.image.as_deref() {
            Some(img)
                if img
                    .rsplit_once(':')
                    .is_some_and(|(_, t)| !t.is_empty() && t != "latest") => {}
            other => errors.push(format!("{cat}: image {other:?} needs a fixed tag")),
        }
        for m in c.volume_mounts.iter().flatten() {
            mounted.insert(m.name.clone());
            match volumes.get(&m.name) {
                None => errors.push(format!("{cat}: mount {} names no volume", m.name)),
                Some(vol) if vol.config_map.is_some() && m.sub_path.is_some() => errors.push(format!(
                    "{cat}: ConfigMap mount {} uses subPath, so updates never reach the reload watcher",
                    m.name
                )),
                Some(_) => {}
            }
        }
        let ports: Vec<_> = c.ports.iter().flatten().collect();
        let mut probes = Vec::new();
        for (what, p) in [
            ("liveness", &c.liveness_probe),
            ("readiness", &c.readiness_probe),
        ] {
            match p.as_ref().and_then(|p| p.http_get.as_ref()) {
                Some(get) => probes.push((what, get.port.clone())),
                None => errors.push(format!(
                    "{cat}: {what} probe must be an HTTP GET on a health endpoint"
                )),
            }
        }
        for (what, port) in probes {
            let declared = ports.iter().any(|p| match &port {
                IntOrString::Int(n) => p.container_port == *n,
                IntOrString::String(s) => p.name.as_deref() == Some(s.as_str()),
            });
            if !declared {
                errors.push(format!(
                    "{cat}: {what} probe port {port:?} is not a declared container port"
                ));
            }
        }
        for from in c.env_from.iter().flatten() {
            if let Some(cm) = &from.config_map_ref
                && !has("ConfigMap", &cm.name)
                && !OPERATOR_CONFIGMAPS.contains(&cm.name.as_str())
            {
                errors.push(format!(
                    "{cat}: envFrom ConfigMap {} is not defined",
                    cm.name
                ));
            }
        }
        if Program::of(c).is_none() {
            errors.push(format!(
                "{cat}: runs neither the image's `agentctl run` nor /svcnet-dns"
            ));
        }
    }
    for (name, vol) in &volumes {
        if !mounted.contains(name) {
            errors.push(format!("{at}: volume {name} is never mounted"));
        }
        if let Some(cm) = &vol.config_map
            && !has("ConfigMap", &cm.name)
        {
            errors.push(format!(
                "{at}: volume {name} uses ConfigMap {} that is not defined",
                cm.name
            ));
        }
    }
    errors
}

/// The two programs the image runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Program {
    /// The entrypoint: `/agentctl` with `run` as its first argument.
    AgentRun,
    /// `/svcnet-dns` as the container's command.
    Dns,
}

impl Program {
    fn of(c: &Container) -> Option<Program> {
        let first_arg = c.args.as_ref().and_then(|a| a.first()).map(String::as_str);
        match c.command.as_deref() {
            None if first_arg == Some("run") => Some(Program::AgentRun),
            Some([cmd]) if cmd == "/svcnet-dns" => Some(Program::Dns),
            _ => None,
        }
    }

    /// Long flags the program accepts, read from its `--help`; `None` when it is not built.
    fn flags(self) -> Option<BTreeSet<String>> {
        let (env, name, args): (&str, &str, &[&str]) = match self {
            Program::AgentRun => ("SVCNET_AGENTCTL", "agentctl", &["run", "--help"]),
            Program::Dns => ("SVCNET_DNS", "svcnet-dns", &["--help"]),
        };
        let bin = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/debug")
                .join(name)
        });
        let out = Command::new(&bin).args(args).output().ok()?;
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let help = String::from_utf8_lossy(&out.stdout);
        Some(
            help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=')
                .filter_map(|w| w.strip_prefix("--"))
                .map(|w| {
                    w.trim_end_matches(|c: char| !c.is_alphanumeric())
                        .to_string()
                })
                .filter(|w| !w.is_empty())
                .collect(),
        )
    }
}

/// The value of `--flag=value` in a container's arguments.
fn flag_value(c: &Container, flag: &str) -> Option<String> {
    let prefix = format!("--{flag}=");
    c.args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix(&prefix).map(str::to_owned))
}

/// A program with its container and pod, from a workload of a variant.
struct Running {
    at: String,
    program: Program,
    container: Container,
    pod: PodSpec,
}

fn running(objects: &[Object]) -> Vec<Running> {
    let mut out = Vec::new();
    for obj in objects {
        let template = match obj.kind() {
            "DaemonSet" => typed::<DaemonSet>(obj).spec.unwrap().template,
            "Deployment" => typed::<Deployment>(obj).spec.unwrap().template,
            _ => continue,
        };
        let pod = template.spec.unwrap();
        for c in &pod.containers {
            let program = Program::of(c).unwrap_or_else(|| panic!("{}: unknown program", obj.at()));
            out.push(Running {
                at: format!("{} container {}", obj.at(), c.name),
                program,
                container: c.clone(),
                pod: pod.clone(),
            });
        }
    }
    out
}

/// The content of the file at `path` in the container: a key of a ConfigMap mounted as a
/// directory there.
fn mounted_file(objects: &[Object], r: &Running, path: &str) -> Result<String, String> {
    let (dir, file) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("{}: {path} is not an absolute path", r.at))?;
    let mount = r
        .container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == dir)
        .ok_or_else(|| format!("{}: nothing is mounted at {dir} for {path}", r.at))?;
    let cm = r
        .pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.config_map.as_ref())
        .ok_or_else(|| format!("{}: {dir} is not a ConfigMap volume", r.at))?;
    objects
        .iter()
        .find(|o| o.kind() == "ConfigMap" && o.name() == cm.name)
        .and_then(|o| o.value["data"][file].as_str().map(str::to_owned))
        .ok_or_else(|| {
            format!(
                "{}: ConfigMap {} has no key {file} for {path}",
                r.at, cm.name
            )
        })
}

#[test]
fn objects_reference_each_other_consistently() {
    let mut errors = Vec::new();
    for v in &VARIANTS {
        let objects = load_variant(v);
        let has =
            |kind: &str, name: &str| objects.iter().any(|o| o.kind() == kind && o.name() == name);
        let mut pod_labels = Vec::new();
        for obj in &objects {
            match obj.kind() {
                "DaemonSet" => {
                    let ds: DaemonSet = typed(obj);
                    let spec = ds.spec.unwrap();
                    let sel = spec.selector.match_labels.clone().unwrap_or_default();
                    errors.extend(check_pod_template(
                        &obj.at(),
                        &spec.template,
                        &sel,
                        &objects,
                    ));
                    errors.extend(check_node_agent(&obj.at(), &spec.template));
                    pod_labels.push(
                        spec.template
                            .metadata
                            .and_then(|m| m.labels)
                            .unwrap_or_default(),
                    );
                }
                "Deployment" => {
                    let d: Deployment = typed(obj);
                    let spec = d.spec.unwrap();
                    let sel = spec.selector.match_labels.clone().unwrap_or_default();
                    errors.extend(check_pod_template(
                        &obj.at(),
                        &spec.template,
                        &sel,
                        &objects,
                    ));
                    if spec.replicas.unwrap_or(1) < 2 {
                        errors.push(format!("{}: DNS needs at least 2 replicas", obj.at()));
                    }
                    pod_labels.push(
                        spec.template
                            .metadata
                            .and_then(|m| m.labels)
                            .unwrap_or_default(),
                    );
                }
                _ => {}
            }
        }
        for obj in &objects {
            match obj.kind() {
                "Service" => {
                    let svc: Service = typed(obj);
                    let spec = svc.spec.unwrap();
                    let sel = spec.selector.unwrap_or_default();
                    if !pod_labels.iter().any(|l| labels_match(&sel, l)) {
                        errors.push(format!(
                            "{}: selector {sel:?} matches no pod template",
                            obj.at()
                        ));
                    }
                    if obj.name() == "kube-dns" {
                        if spec.cluster_ip.as_deref() != Some("10.96.0.10") {
                            errors.push(format!(
                                "{}: must sit at the cluster DNS IP 10.96.0.10",
                                obj.at()
                            ));
                        }
                        let p: BTreeSet<_> = spec
                            .ports
                            .iter()
                            .flatten()
                            .map(|p| (p.port, p.protocol.clone().unwrap_or_default()))
                            .collect();
                        for want in [(53, "UDP"), (53, "TCP")] {
                            if !p.contains(&(want.0, want.1.to_string())) {
                                errors.push(format!("{}: no port {want:?}", obj.at()));
                            }
                        }
                    }
                }
                "PodDisruptionBudget" => {
                    let pdb: PodDisruptionBudget = typed(obj);
                    let sel = pdb
                        .spec
                        .unwrap()
                        .selector
                        .unwrap()
                        .match_labels
                        .unwrap_or_default();
                    if !pod_labels.iter().any(|l| labels_match(&sel, l)) {
                        errors.push(format!("{}: selector matches no pod template", obj.at()));
                    }
                }
                "ClusterRoleBinding" => {
                    let b: ClusterRoleBinding = typed(obj);
                    if b.role_ref.kind != "ClusterRole" || !has("ClusterRole", &b.role_ref.name) {
                        errors.push(format!(
                            "{}: roleRef {:?} is not defined",
                            obj.at(),
                            b.role_ref
                        ));
                    }
                    for s in b.subjects.iter().flatten() {
                        if s.kind != "ServiceAccount" || !has("ServiceAccount", &s.name) {
                            errors.push(format!("{}: subject {s:?} is not defined", obj.at()));
                        }
                    }
                }
                _ => {}
            }
        }
        if !objects
            .iter()
            .any(|o| o.kind() == "DaemonSet" || o.kind() == "Deployment")
        {
            errors.push(format!("deploy/manifests/{}: no workload", v.file));
        }
        if v.file == "dns-only.yaml" && !has("PodDisruptionBudget", "svcnet-dns") {
            errors.push("dns-only.yaml: the DNS Deployment needs a PodDisruptionBudget".into());
        }
    }
    assert!(
        errors.is_empty(),
        "inconsistent manifests:\n{}",
        errors.join("\n")
    );
}

/// What a kube-proxy replacement needs from its node, checked on the DaemonSet.
fn check_node_agent(at: &str, template: &PodTemplateSpec) -> Vec<String> {
    let mut errors = Vec::new();
    let spec = template.spec.as_ref().unwrap();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            errors.push(format!("{at}: {what}"));
        }
    };
    need(spec.host_network == Some(true), "hostNetwork: true");
    need(
        spec.priority_class_name.as_deref() == Some("system-node-critical"),
        "priorityClassName system-node-critical",
    );
    need(
        spec.tolerations.iter().flatten().any(|t| {
            t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()
        }),
        "a toleration of every taint (operator: Exists, no key, no effect)",
    );
    let c = &spec.containers[0];
    let caps: BTreeSet<_> = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    need(
        caps.contains("NET_ADMIN") && caps.contains("NET_RAW"),
        "capabilities NET_ADMIN and NET_RAW",
    );
    need(
        c.env.iter().flatten().any(|e| {
            e.name == "NODE_NAME"
                && e.value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .is_some_and(|f| f.field_path == "spec.nodeName")
        }),
        "env NODE_NAME from spec.nodeName",
    );
    need(
        c.args
            .iter()
            .flatten()
            .any(|a| a == "--node-name=$(NODE_NAME)"),
        "--node-name=$(NODE_NAME)",
    );
    let host_path = |path: &str| {
        spec.volumes.iter().flatten().find_map(|v| {
            v.host_path
                .as_ref()
                .filter(|h| h.path == path)
                .map(|h| (v.name.clone(), h.type_.clone()))
        })
    };
    let mount = |name: &str| {
        c.volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == name)
            .cloned()
    };
    match host_path("/lib/modules") {
        Some((name, _)) => need(
            mount(&name)
                .is_some_and(|m| m.read_only == Some(true) && m.mount_path == "/lib/modules"),
            "/lib/modules mounted read-only at /lib/modules",
        ),
        None => need(false, "a hostPath volume /lib/modules"),
    }
    match host_path("/run/xtables.lock") {
        Some((name, ty)) => {
            need(
                ty.as_deref() == Some("FileOrCreate"),
                "/run/xtables.lock of type FileOrCreate",
            );
            need(
                mount(&name).is_some_and(|m| {
                    m.read_only != Some(true) && m.mount_path == "/run/xtables.lock"
                }),
                "/run/xtables.lock mounted writable at /run/xtables.lock",
            );
        }
        None => need(false, "a hostPath volume /run/xtables.lock"),
    }
    errors
}

/// The capabilities the node agent's code needs (issue 19 item 9; proven in a real kernel by
/// `tests/tests/vm_privileges.rs`, which reads them from the same manifest).
const NODE_AGENT_CAPABILITIES: [&str; 2] = ["NET_ADMIN", "NET_RAW"];

/// The one capability node-local DNS adds (`--node-local-dns`: a listener on port 53).
const NODE_LOCAL_DNS_CAPABILITY: &str = "NET_BIND_SERVICE";

/// Least privilege for the node agent, pinned: the agent container is not privileged, drops
/// every capability and adds back exactly [`NODE_AGENT_CAPABILITIES`], cannot gain privileges,
/// runs under the runtime's default seccomp filter; the one privileged step is the
/// `agentctl sysctls` init container, reading the agent's own proxy configuration.
#[test]
fn node_agent_runs_with_least_privilege() {
    let mut errors = Vec::new();
    let mut agents = 0;
    for v in &VARIANTS {
        for obj in load_variant(v) {
            if obj.kind() != "DaemonSet" {
                continue;
            }
            agents += 1;
            let at = obj.at();
            let pod = typed::<DaemonSet>(&obj)
                .spec
                .unwrap()
                .template
                .spec
                .unwrap();
            let mut need = |ok: bool, what: &str| {
                if !ok {
                    errors.push(format!("{at}: {what}"));
                }
            };
            let pod_seccomp = pod
                .security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.as_ref())
                .map(|p| p.type_.clone());
            need(pod.containers.len() == 1, "one container (the agent)");
            let c = &pod.containers[0];
            let sc = c.security_context.clone().unwrap_or_default();
            need(sc.privileged == Some(false), "agent: privileged: false");
            need(
                sc.allow_privilege_escalation == Some(false),
                "agent: allowPrivilegeEscalation: false",
            );
            need(
                sc.read_only_root_filesystem == Some(true),
                "agent: readOnlyRootFilesystem: true",
            );
            let caps = sc.capabilities.clone().unwrap_or_default();
            need(
                caps.drop.as_deref() == Some(&["ALL".to_string()][..]),
                "agent: capabilities drop [ALL]",
            );
            let added: BTreeSet<String> =
                caps.add.clone().unwrap_or_default().into_iter().collect();
            let mut wanted: BTreeSet<String> = NODE_AGENT_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect();
            // Node-local DNS listens on port 53 (proven in a real kernel by vm_nodelocal.rs).
            if c.args
                .iter()
                .flatten()
                .any(|a| a.starts_with("--node-local-dns"))
            {
                wanted.insert(NODE_LOCAL_DNS_CAPABILITY.to_string());
            }
            need(
                added == wanted,
                &format!("agent: capabilities add exactly {wanted:?}, not {added:?}"),
            );
            let seccomp = sc
                .seccomp_profile
                .as_ref()
                .map(|p| p.type_.clone())
                .or(pod_seccomp.clone());
            need(
                seccomp.as_deref() == Some("RuntimeDefault"),
                "agent: seccompProfile RuntimeDefault (container or pod)",
            );
            need(
                pod_seccomp.as_deref() == Some("RuntimeDefault"),
                "pod: seccompProfile RuntimeDefault",
            );
            let inits = pod.init_containers.clone().unwrap_or_default();
            need(inits.len() == 1, "one init container (agentctl sysctls)");
            let Some(init) = inits.first() else { continue };
            let args = init.args.clone().unwrap_or_default();
            need(
                init.command.is_none() && args.first().map(String::as_str) == Some("sysctls"),
                "init container: the entrypoint with `sysctls`",
            );
            need(init.image == c.image, "init container: the agent's image");
            need(
                init.security_context
                    .as_ref()
                    .is_some_and(|s| s.privileged == Some(true)),
                "init container: privileged (it writes /proc/sys)",
            );
            let config_of = |c: &Container| flag_value(c, "proxy-config");
            need(
                config_of(init).is_some() && config_of(init) == config_of(c),
                "init container: the agent's --proxy-config",
            );
            let mount_of = |c: &Container, path: &str| {
                c.volume_mounts
                    .iter()
                    .flatten()
                    .find(|m| path.starts_with(&format!("{}/", m.mount_path.trim_end_matches('/'))))
                    .map(|m| (m.name.clone(), m.mount_path.clone()))
            };
            if let Some(path) = config_of(c) {
                need(
                    mount_of(init, &path).is_some() && mount_of(init, &path) == mount_of(c, &path),
                    "init container: the proxy configuration mounted as in the agent",
                );
            }
            // Its flags are ones `agentctl sysctls` has.
            let bin = std::env::var_os("SVCNET_AGENTCTL")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/agentctl")
                });
            match Command::new(&bin).args(["sysctls", "--help"]).output() {
                Ok(out) if out.status.success() => {
                    let help = String::from_utf8_lossy(&out.stdout);
                    for a in args.iter().skip(1) {
                        let flag = a.split('=').next().unwrap_or(a);
                        need(
                            help.contains(flag),
                            &format!("init container: `agentctl sysctls` has no {flag}"),
                        );
                    }
                }
                other => panic!(
                    "{} sysctls --help: {other:?} (cargo build -p agentctl, or set SVCNET_AGENTCTL)",
                    bin.display()
                ),
            }
        }
    }
    assert!(
        agents >= 2,
        "the node agent DaemonSet is in svcnet.yaml and svcnet-pods-verified.yaml"
    );
    assert!(
        errors.is_empty(),
        "node agent privileges:\n{}",
        errors.join("\n")
    );
}

#[test]
fn every_flag_in_the_manifests_is_one_the_program_has() {
    for v in &VARIANTS {
        for r in running(&load_variant(v)) {
            let Some(flags) = r.program.flags() else {
                panic!(
                    "{}: the {:?} binary is not built (cargo build -p agentctl -p svcnet-dns, or set SVCNET_AGENTCTL/SVCNET_DNS)",
                    r.at, r.program
                );
            };
            for arg in r.container.args.iter().flatten() {
                if let Some(flag) = arg.strip_prefix("--") {
                    let flag = flag.split('=').next().unwrap();
                    assert!(
                        flags.contains(flag),
                        "{}: {:?} has no --{flag} (it has {flags:?})",
                        r.at,
                        r.program
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RBAC: exactly what the watchers use, derived from the code.

/// (apiGroup, resource, verb) triples granted by the ClusterRole of a variant.
fn granted(objects: &[Object]) -> BTreeSet<(String, String, String)> {
    let roles: Vec<ClusterRole> = objects
        .iter()
        .filter(|o| o.kind() == "ClusterRole")
        .map(typed)
        .collect();
    assert_eq!(roles.len(), 1, "exactly one ClusterRole expected");
    let mut out = BTreeSet::new();
    for rule in roles[0].rules.iter().flatten() {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "rule {rule:?}: only apiGroups/resources/verbs are expected"
        );
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    out.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    out
}

/// The kinds a running program asks its source for, from the code.
fn needed_kinds(objects: &[Object], r: &Running) -> Vec<Kind> {
    match r.program {
        Program::AgentRun => {
            let args = r.container.args.clone().unwrap_or_default();
            let flag = |f: &str| args.iter().any(|a| a == f);
            let mut kinds = AGENT_RUN_KINDS.to_vec();
            // `agentctl run` with neither flag runs both subsystems.
            if flag("--proxy") || !flag("--dns") {
                let node = args.iter().find_map(|a| a.strip_prefix("--node-name="));
                for k in svcnet_core::ipvs::app::kinds_for(node) {
                    if !kinds.contains(&k) {
                        kinds.push(k);
                    }
                }
            }
            // `agentctl run --dns --corefile` (node-local DNS) needs what its Corefile needs.
            if flag("--dns") && flag_value(&r.container, "corefile").is_some() {
                let cf = corefile_of(objects, r);
                let dns_kinds = svcnet_core::dns::plugins::serve::needed_kinds(&cf);
                // The agent on every node must not watch every pod: only its node's.
                assert!(
                    !dns_kinds.contains(&Kind::Pod)
                        || svcnet_core::dns::plugins::serve::needs_node_pods_only(&cf),
                    "{}: the node agent's Corefile needs the cluster's pods",
                    r.at
                );
                for k in dns_kinds {
                    if !kinds.contains(&k) {
                        kinds.push(k);
                    }
                }
            }
            kinds
        }
        Program::Dns => svcnet_core::dns::plugins::serve::needed_kinds(&corefile_of(objects, r)),
    }
}

#[test]
fn cluster_roles_grant_exactly_what_the_watchers_use() {
    let mut errors = Vec::new();
    for v in &VARIANTS {
        let objects = load_variant(v);
        let programs = running(&objects);
        for binding in objects.iter().filter(|o| o.kind() == "ClusterRoleBinding") {
            let b: ClusterRoleBinding = typed(binding);
            // Everything the pods running as the binding's service accounts watch.
            let accounts: BTreeSet<String> = b
                .subjects
                .iter()
                .flatten()
                .map(|s| s.name.clone())
                .collect();
            let users: Vec<&Running> = programs
                .iter()
                .filter(|r| {
                    r.pod
                        .service_account_name
                        .as_ref()
                        .is_some_and(|sa| accounts.contains(sa))
                })
                .collect();
            if users.is_empty() {
                errors.push(format!(
                    "{}: no workload runs as {accounts:?}",
                    binding.at()
                ));
            }
            let kinds: Vec<Kind> = users
                .iter()
                .flat_map(|r| needed_kinds(&objects, r))
                .collect();
            let needed: BTreeSet<_> = watched_resources(&kinds)
                .into_iter()
                .flat_map(|w| {
                    w.verbs
                        .iter()
                        .map(|verb| {
                            (
                                w.api_group.to_string(),
                                w.resource.to_string(),
                                verb.to_string(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            let role: Vec<Object> = objects
                .iter()
                .filter(|o| o.kind() == "ClusterRole" && o.name() == b.role_ref.name)
                .cloned()
                .collect();
            let granted = granted(&role);
            for missing in needed.difference(&granted) {
                errors.push(format!(
                    "{}: {} lacks {missing:?} that its watchers use",
                    v.file, b.role_ref.name
                ));
            }
            for extra in granted.difference(&needed) {
                errors.push(format!(
                    "{}: {} grants {extra:?} that no watcher uses",
                    v.file, b.role_ref.name
                ));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "RBAC is not least privilege:\n{}",
        errors.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// kubectl apply --dry-run=client, against a discovery-only API server on loopback.

/// Serves the discovery documents of the manifests' types (taken from k8s-openapi) and 404 for
/// every object, which is all a client-side dry run asks for. Returns the server address.
fn discovery_server() -> String {
    let all = known_types();
    let mut docs: BTreeMap<String, Value> = BTreeMap::new();
    let mut groups: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &all {
        let gv = if r.group.is_empty() {
            r.version.to_string()
        } else {
            format!("{}/{}", r.group, r.version)
        };
        if !r.group.is_empty() {
            groups.entry(r.group).or_default().insert(r.version);
        }
        let path = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{gv}")
        };
        let doc = docs.entry(path).or_insert_with(|| {
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": []})
        });
        doc["resources"].as_array_mut().unwrap().push(json!({
            "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
            "kind": r.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }));
    }
    docs.insert(
        "/api".into(),
        json!({"kind": "APIVersions", "versions": ["v1"],
               "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
    );
    let group_list: Vec<Value> = groups
        .iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    docs.insert(
        "/apis".into(),
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": group_list}),
    );
    docs.insert(
        "/version".into(),
        json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0"}),
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let docs = docs.clone();
            std::thread::spawn(move || serve(stream, &docs));
        }
    });
    format!("http://{addr}")
}

fn serve(stream: TcpStream, docs: &BTreeMap<String, Value>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; content_length];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or("/");
        let path = target.split('?').next().unwrap_or(target);
        let (status, doc) = match docs.get(path) {
            Some(doc) => ("200 OK", doc.clone()),
            None => (
                "404 Not Found",
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "NotFound", "code": 404, "message": format!("{path} not found")}),
            ),
        };
        let body = doc.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn kubectl_apply_client_dry_run_accepts_every_variant() {
    require_kubectl!();
    let server = discovery_server();
    let home = std::env::temp_dir().join(format!("svcnet-deploy-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    for v in &VARIANTS {
        let file = deploy_dir().join("manifests").join(v.file);
        let out = Command::new("kubectl")
            .env("HOME", &home)
            .env("KUBECONFIG", home.join("none"))
            .args([
                "apply",
                "--dry-run=client",
                "--validate=false",
                "-o",
                "name",
            ])
            .arg(format!("--server={server}"))
            .arg(format!("--cache-dir={}", home.join("cache").display()))
            .arg("-f")
            .arg(&file)
            .output()
            .expect("running kubectl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kubectl apply --dry-run=client -f {}:\n{}\n{}",
            file.display(),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        // kubectl names every object it would create, as resource.group/name.
        let names: BTreeSet<String> = stdout.lines().map(str::to_owned).collect();
        let objects = load_variant(v);
        assert_eq!(
            names.len(),
            objects.len(),
            "{}: kubectl saw {names:?}",
            v.file
        );
        for obj in &objects {
            let suffix = format!("/{}", obj.name());
            let kind = obj.kind().to_lowercase();
            assert!(
                names
                    .iter()
                    .any(|n| n.starts_with(&kind) && n.ends_with(&suffix)),
                "{}: kubectl did not handle it ({names:?})",
                obj.at()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&home);
}

// ---------------------------------------------------------------------------------------------
// The ConfigMaps load with svcnet's own parsers, and the probes and ports point at what that
// configuration serves.

/// The node `agentctl run` gives node-local autopath (`--node-local-dns` with `--node-name`,
/// as agentctl/src/main.rs passes it on); `None` for other programs.
fn node_local_autopath(r: &Running) -> Option<String> {
    if !matches!(r.program, Program::AgentRun) {
        return None;
    }
    let args = r.container.args.clone().unwrap_or_default();
    let node_local = args
        .iter()
        .any(|a| a == "--node-local-dns" || a.starts_with("--node-local-dns="));
    let node = args
        .iter()
        .find_map(|a| a.strip_prefix("--node-name="))
        .map(str::to_owned);
    node.filter(|_| node_local)
}

fn corefile_of(objects: &[Object], r: &Running) -> svcnet_core::dns::corefile::Corefile {
    use svcnet_core::dns::corefile::{self, LoadOptions, MemoryFiles};
    let path =
        flag_value(&r.container, "corefile").unwrap_or_else(|| panic!("{}: no --corefile", r.at));
    let text = mounted_file(objects, r, &path).unwrap_or_else(|e| panic!("{e}"));
    let cf = corefile::load_from(
        &format!("{} {path}", r.at),
        &text,
        // The pod's /etc/resolv.conf is the node's (dnsPolicy: Default); only parsed here.
        MemoryFiles::new().insert("/etc/resolv.conf", "nameserver 192.0.2.53\n"),
        &|_| None,
        &LoadOptions {
            autopath_node: node_local_autopath(r),
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: the Corefile does not load: {e}", r.at));
    assert!(
        cf.warnings.is_empty(),
        "{}: Corefile warnings {:?}",
        r.at,
        cf.warnings
    );
    cf
}

/// What a running program serves: (port, protocol, HTTP path or "") and the address an HTTP
/// probe must use (`None`: the pod's address).
fn served_endpoints(
    objects: &[Object],
    r: &Running,
) -> (BTreeSet<(i32, String, String)>, Option<String>) {
    let mut served = BTreeSet::new();
    let mut http = |port: u16, paths: &[&str]| {
        for path in paths.iter().chain([&""]) {
            served.insert((i32::from(port), "TCP".to_string(), path.to_string()));
        }
    };
    match r.program {
        Program::Dns => {
            corefile_served(objects, r, &mut served);
            (served, None)
        }
        Program::AgentRun => {
            let admin: std::net::SocketAddr = flag_value(&r.container, "admin")
                .unwrap_or_else(|| panic!("{}: set --admin explicitly", r.at))
                .parse()
                .expect("--admin is ADDR:PORT");
            http(
                admin.port(),
                &[
                    "/health", "/healthz", "/livez", "/ready", "/readyz", "/metrics", "/status",
                ],
            );
            let host = (!admin.ip().is_unspecified()).then(|| admin.ip().to_string());
            if let Some(path) = flag_value(&r.container, "proxy-config") {
                let text = mounted_file(objects, r, &path).unwrap_or_else(|e| panic!("{e}"));
                let loaded =
                    svcnet_core::ipvs::config::file::parse(&text, &path).unwrap_or_else(|e| {
                        panic!("{}: the KubeProxyConfiguration does not load: {e}", r.at)
                    });
                assert!(
                    loaded.ignored.is_empty(),
                    "{}: the shipped KubeProxyConfiguration has fields svcnet ignores: {:?}",
                    r.at,
                    loaded.ignored
                );
            }
            // `agentctl run --dns --corefile` (node-local DNS) serves the Corefile as well.
            if flag_value(&r.container, "corefile").is_some() {
                corefile_served(objects, r, &mut served);
            }
            (served, host)
        }
    }
}

/// What the Corefile of `r` serves: its HTTP endpoints and its DNS ports (UDP and TCP).
fn corefile_served(objects: &[Object], r: &Running, served: &mut BTreeSet<(i32, String, String)>) {
    let cf = corefile_of(objects, r);
    let mut http = |port: u16, paths: &[&str]| {
        for path in paths.iter().chain([&""]) {
            served.insert((i32::from(port), "TCP".to_string(), path.to_string()));
        }
    };
    for server in &cf.servers {
        let p = &server.plugins;
        if let Some(h) = &p.health {
            http(h.addr.port(), &["/health"]);
        }
        if let Some(rd) = &p.ready {
            http(rd.addr.port(), &["/ready"]);
        }
        if let Some(m) = &p.prometheus {
            http(m.addr.port(), &["/metrics"]);
        }
    }
    for server in &cf.servers {
        for addr in server.listen_addrs() {
            for proto in ["UDP", "TCP"] {
                served.insert((i32::from(addr.port()), proto.to_string(), String::new()));
            }
        }
    }
}

#[test]
fn configmaps_load_and_probes_and_ports_point_at_what_they_configure() {
    let mut errors = Vec::new();
    for v in &VARIANTS {
        let objects = load_variant(v);
        for r in running(&objects) {
            let (served, probe_host) = served_endpoints(&objects, &r);
            let c = &r.container;
            let ports: Vec<_> = c.ports.clone().unwrap_or_default();
            for p in &ports {
                let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                if !served.contains(&(p.container_port, proto.clone(), String::new())) {
                    errors.push(format!(
                        "{}: port {} {}/{proto} is served by nothing in its configuration",
                        r.at,
                        p.name.as_deref().unwrap_or(""),
                        p.container_port
                    ));
                }
            }
            for probe in [&c.liveness_probe, &c.readiness_probe]
                .into_iter()
                .flatten()
            {
                let Some(get) = &probe.http_get else { continue };
                let port = match &get.port {
                    IntOrString::Int(n) => Some(*n),
                    IntOrString::String(name) => ports
                        .iter()
                        .find(|p| p.name.as_deref() == Some(name))
                        .map(|p| p.container_port),
                };
                let path = get.path.clone().unwrap_or_default();
                if !port.is_some_and(|port| served.contains(&(port, "TCP".into(), path.clone()))) {
                    errors.push(format!(
                        "{}: probe {path} on {:?} is not an endpoint its configuration serves ({served:?})",
                        r.at, get.port
                    ));
                }
                if get.host != probe_host {
                    errors.push(format!(
                        "{}: probe {path} goes to host {:?}, the program listens on {:?}",
                        r.at, get.host, probe_host
                    ));
                }
                if get.host.is_some() && r.pod.host_network != Some(true) {
                    errors.push(format!(
                        "{}: a probe host of 127.0.0.1 needs hostNetwork",
                        r.at
                    ));
                }
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
