//! deploy/kubernetes: every overlay renders with `kubectl kustomize`, each
//! object passes the Kubernetes API schemas strictly (PyPI's
//! kubernetes-validate, offline), the published rendering is the
//! rendering, each ConfigMap's rvs.yaml passes `rvs check`, and every pod
//! template keeps what the docs promise: the restricted Pod Security
//! profile, the probes, the config mounted as a directory, a grace period
//! that covers the drain.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{output_text, root, rvs, temp_dir};
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Kubernetes version whose schemas the objects must pass.
const KUBERNETES: &str = "1.32.0";

fn overlays() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes/overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").exists())
        .collect();
    v.sort();
    assert!(v.len() >= 2, "the ingress and sidecar overlays: {v:?}");
    v
}

fn output(cmd: &mut Command, what: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} ({what}; tests/run installs it)"))
}

fn kustomize(dir: &Path) -> String {
    let out = output(
        Command::new("kubectl").arg("kustomize").arg(dir),
        "kubectl with kustomize",
    );
    assert!(
        out.status.success(),
        "{}: {}",
        dir.display(),
        output_text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// kubernetes-validate --strict on a file: its verdict and its output.
fn validate(file: &Path) -> (bool, String) {
    let out = output(
        Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", KUBERNETES])
            .arg(file),
        "PyPI's kubernetes-validate",
    );
    (out.status.success(), output_text(&out))
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn kind<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter(|d| d["kind"] == kind).collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map_or(&[], |s| s.as_slice())
}

/// Seconds of a duration as rvs writes them in these files ("30s", "1m").
fn seconds(d: &str) -> u64 {
    let (n, unit) = d.split_at(d.len() - 1);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {d:?}"));
    match unit {
        "s" => n,
        "m" => n * 60,
        _ => panic!("duration {d:?}: use s or m here"),
    }
}

#[test]
fn every_overlay_renders_and_passes_the_api_schemas_strictly() {
    let dir = temp_dir("kustomize");
    for overlay in overlays() {
        let name = overlay.file_name().unwrap().to_string_lossy().into_owned();
        let rendered = kustomize(&overlay);
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        let (ok, out) = validate(&file);
        println!("{out}");
        assert!(ok, "{name}: {out}");
        let objects = docs(&rendered).len();
        assert_eq!(
            out.matches("passed for resource").count(),
            objects,
            "{name}: each of {objects} objects validated: {out}"
        );
    }
    // The published renderings are render.sh's output now.
    let fresh = dir.join("rendered");
    let out = output(
        Command::new(root().join("deploy/kubernetes/render.sh")).arg(&fresh),
        "kubectl with kustomize",
    );
    assert!(out.status.success(), "render.sh: {}", output_text(&out));
    for overlay in overlays() {
        let name = format!("{}.yaml", overlay.file_name().unwrap().to_string_lossy());
        let kept = std::fs::read_to_string(root().join("deploy/kubernetes/rendered").join(&name));
        let now = std::fs::read_to_string(fresh.join(&name)).unwrap();
        assert!(
            kept.is_ok_and(|k| k == now),
            "deploy/kubernetes/rendered/{name} is stale: run deploy/kubernetes/render.sh"
        );
        // And render.sh renders what kustomize does.
        assert!(now.ends_with(&kustomize(&overlay)), "{name}");
    }
    // Strict means strict: a misspelt field fails.
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  externalTrafficPolicy: Local\n  portz: []\n",
    )
    .unwrap();
    let (ok, out) = validate(&bad);
    assert!(!ok, "an unknown field passed: {out}");
}

/// What every pod template of every overlay keeps.
fn check_pod_template(overlay: &str, deployment: &Value, configs: &[&Value]) -> PodFacts {
    let name = s(&deployment["metadata"]["name"]);
    let at = format!("{overlay}: Deployment {name}");
    let pod = &deployment["spec"]["template"]["spec"];
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{at}: runAsNonRoot");
    assert_eq!(
        s(&psc["seccompProfile"]["type"]),
        "RuntimeDefault",
        "{at}: seccomp"
    );
    assert_ne!(pod["hostNetwork"], true, "{at}: hostNetwork");
    let mut all: Vec<&Value> = seq(&pod["containers"]).iter().collect();
    all.extend(seq(&pod["initContainers"]));
    for c in &all {
        let cn = s(&c["name"]);
        let sc = &c["securityContext"];
        assert_eq!(
            sc["allowPrivilegeEscalation"], false,
            "{at}/{cn}: allowPrivilegeEscalation"
        );
        assert_eq!(
            sc["readOnlyRootFilesystem"], true,
            "{at}/{cn}: readOnlyRootFilesystem"
        );
        assert!(
            seq(&sc["capabilities"]["drop"]).iter().any(|d| d == "ALL"),
            "{at}/{cn}: capabilities drop ALL"
        );
        assert!(
            seq(&sc["capabilities"]["add"]).is_empty(),
            "{at}/{cn}: no capability added"
        );
        assert_ne!(sc["privileged"], true, "{at}/{cn}: privileged");
        assert_ne!(sc["runAsNonRoot"], false, "{at}/{cn}: runAsNonRoot");
        for r in ["requests", "limits"] {
            for what in ["cpu", "memory"] {
                assert!(
                    !c["resources"][r][what].is_null(),
                    "{at}/{cn}: resources.{r}.{what}"
                );
            }
        }
    }
    // The rvs container.
    let rvs_c = all
        .iter()
        .find(|c| s(&c["image"]).contains("rvs"))
        .unwrap_or_else(|| panic!("{at}: no rvs container"));
    let port = |name: &str| {
        seq(&rvs_c["ports"])
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| {
                (
                    p["containerPort"].as_u64().unwrap(),
                    s(&p["protocol"]).to_owned(),
                )
            })
    };
    let (metrics_port, _) = port("metrics").unwrap_or_else(|| panic!("{at}: a port named metrics"));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let p = &rvs_c[probe]["httpGet"];
        assert_eq!(s(&p["path"]), path, "{at}: {probe}");
        assert_eq!(s(&p["port"]), "metrics", "{at}: {probe} port");
    }
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(s(&annotations["prometheus.io/scrape"]), "true", "{at}");
    assert_eq!(
        s(&annotations["prometheus.io/port"]),
        metrics_port.to_string(),
        "{at}: prometheus.io/port is the metrics port"
    );
    assert_eq!(s(&annotations["prometheus.io/path"]), "/metrics", "{at}");
    // The configuration: a directory mount of a ConfigMap, never subPath.
    let args: Vec<&str> = seq(&rvs_c["args"]).iter().map(s).collect();
    let file = args
        .windows(2)
        .find(|w| w[0] == "-c")
        .map(|w| w[1])
        .unwrap_or_else(|| panic!("{at}: rvs run -c FILE: {args:?}"));
    assert_eq!(args.first(), Some(&"run"), "{at}: {args:?}");
    let mount = seq(&rvs_c["volumeMounts"])
        .iter()
        .find(|m| file.starts_with(&format!("{}/", s(&m["mountPath"]))))
        .unwrap_or_else(|| panic!("{at}: nothing mounted at {file}'s directory"));
    assert!(
        mount["subPath"].is_null(),
        "{at}: subPath mounts never see ConfigMap updates"
    );
    assert_eq!(mount["readOnly"], true, "{at}: config mount read-only");
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let cm_name = s(&volume["configMap"]["name"]);
    let key = Path::new(file).file_name().unwrap().to_str().unwrap();
    let cm = configs
        .iter()
        .find(|c| s(&c["metadata"]["name"]) == cm_name)
        .unwrap_or_else(|| panic!("{at}: ConfigMap {cm_name} is not in the overlay"));
    let yaml = s(&cm["data"][key]).to_owned();
    // rvs checks it.
    let path = temp_dir("k8s-config").join(format!("{overlay}-{key}"));
    std::fs::write(&path, &yaml).unwrap();
    let out = output(rvs().arg("check").arg("-c").arg(&path), "rvs");
    assert!(out.status.success(), "{at}: {}", output_text(&out));
    let config: Value = serde_yaml::from_str(&yaml).unwrap();
    // The admin listener is the metrics port, on the pod's address.
    let admin = s(&config["admin"]["listen"]);
    assert_eq!(
        admin,
        format!("0.0.0.0:{metrics_port}"),
        "{at}: admin.listen must be reachable by the kubelet's probes"
    );
    // Each service's port is a container port of its protocol.
    for svc in seq(&config["services"]) {
        let proto = svc["proto"].as_str().unwrap_or("tcp").to_uppercase();
        let listen = s(&svc["listen"]);
        let p: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
        assert!(
            seq(&rvs_c["ports"])
                .iter()
                .any(|cp| cp["containerPort"].as_u64() == Some(p) && s(&cp["protocol"]) == proto),
            "{at}: service {listen} ({proto}) has no containerPort"
        );
    }
    // Endpoint removal races SIGTERM: a preStop pause, then the drain,
    // both within the grace period.
    let pause = rvs_c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("{at}: a preStop sleep"));
    assert!(pause >= 3, "{at}: preStop of {pause}s");
    let drain = seconds(config["global"]["shutdown_grace"].as_str().unwrap_or("30s"));
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    assert!(
        grace > pause + drain,
        "{at}: terminationGracePeriodSeconds {grace} does not cover preStop {pause} + shutdown_grace {drain}"
    );
    PodFacts {
        config,
        in_init: seq(&pod["initContainers"])
            .iter()
            .any(|c| s(&c["image"]).contains("rvs") && c["restartPolicy"] == "Always"),
        containers: seq(&pod["containers"]).len(),
        replicas: deployment["spec"]["replicas"].as_u64().unwrap_or(1),
        spread: seq(&pod["topologySpreadConstraints"])
            .iter()
            .any(|t| t["topologyKey"] == "kubernetes.io/hostname"),
        labels: deployment["spec"]["template"]["metadata"]["labels"].clone(),
    }
}

struct PodFacts {
    config: Value,
    in_init: bool,
    containers: usize,
    replicas: u64,
    spread: bool,
    labels: Value,
}

fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
}

#[test]
fn every_pod_template_keeps_the_restricted_profile_probes_and_config() {
    for overlay in overlays() {
        let name = overlay.file_name().unwrap().to_string_lossy().into_owned();
        let all = docs(&kustomize(&overlay));
        let configs = kind(&all, "ConfigMap");
        let deployments = kind(&all, "Deployment");
        assert_eq!(deployments.len(), 1, "{name}");
        let facts = check_pod_template(&name, deployments[0], &configs);
        let services = kind(&all, "Service");
        assert!(
            services
                .iter()
                .any(|svc| selects(&svc["spec"]["selector"], &facts.labels)),
            "{name}: a Service selects the pods"
        );
        match name.as_str() {
            "ingress" => {
                assert!(facts.replicas >= 2, "ingress: {} replicas", facts.replicas);
                assert!(facts.spread, "ingress: spread across nodes");
                let pdbs = kind(&all, "PodDisruptionBudget");
                assert!(
                    pdbs.iter()
                        .any(|p| selects(&p["spec"]["selector"]["matchLabels"], &facts.labels)),
                    "ingress: a PodDisruptionBudget covers the pods"
                );
                let svc = services[0];
                assert_eq!(s(&svc["spec"]["externalTrafficPolicy"]), "Local");
                let protos: Vec<&str> = seq(&svc["spec"]["ports"])
                    .iter()
                    .map(|p| s(&p["protocol"]))
                    .collect();
                assert!(
                    protos.contains(&"TCP") && protos.contains(&"UDP"),
                    "{protos:?}"
                );
                // Replicas agree on a client's server: hashing schedulers.
                for svc in seq(&facts.config["services"]) {
                    let sched = svc["scheduler"].as_str().unwrap_or("wlc");
                    assert!(
                        ["sh", "mh"].contains(&sched),
                        "ingress: service {} uses {sched}: replicas would disagree",
                        s(&svc["name"])
                    );
                }
            }
            "sidecar" => {
                assert!(facts.in_init, "sidecar: rvs is a native sidecar");
                assert!(facts.containers >= 1, "sidecar: the application");
                for svc in seq(&facts.config["services"]) {
                    for rs in seq(&svc["real_servers"]) {
                        assert!(
                            s(&rs["address"]).starts_with("127.0.0.1:"),
                            "sidecar: the application on the pod's loopback"
                        );
                    }
                }
            }
            other => panic!("an overlay this test does not know: {other}"),
        }
    }
}
