//! deploy/prometheus and deploy/grafana against the real tools: promtool
//! checks the rules, runs their unit tests and checks the scrape
//! configurations; a real Prometheus server scrapes a running rvs with
//! traffic flowing, evaluates every recording rule and every dashboard
//! expression to data, and sees the real-server-down alert when a real
//! server stops. tests/run installs Debian's prometheus package.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use common::{
    Kill, Running, free_port, http_get, name_backend, output_text, root, temp_dir, udp_echo,
    wait_for,
};

fn dir() -> PathBuf {
    root().join("deploy/prometheus")
}

fn promtool(args: &[&str], cwd: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e} (tests/run installs prometheus)"))
}

/// rules.yml as YAML.
fn rules() -> serde_yaml::Value {
    let text = std::fs::read_to_string(dir().join("rules.yml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Every rule of rules.yml: (record or alert name, expression, is_alert).
fn each_rule() -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for group in rules()["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap().to_owned();
            match (rule["record"].as_str(), rule["alert"].as_str()) {
                (Some(r), None) => out.push((r.to_owned(), expr, false)),
                (None, Some(a)) => out.push((a.to_owned(), expr, true)),
                other => panic!("a rule is a record or an alert: {other:?}"),
            }
        }
    }
    out
}

/// The Grafana dashboard, as JSON.
fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("deploy/grafana/rvs-dashboard.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every expression of the dashboard: (panel title, PromQL) of each
/// panel's targets, and of each query variable (`label_values(METRIC,
/// LABEL)` gives its series selector).
fn dashboard_exprs() -> Vec<(String, String)> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_owned(),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel.to_owned())
                .unwrap_or_else(|| panic!("variable query: {q}"));
            out.push((format!("variable {}", v["name"]), inner));
        }
    }
    out
}

/// The dashboard's variables as the test's Prometheus sees them.
fn substitute(expr: &str, services: &str, real_servers: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$job", "rvs")
        .replace("$instance", ".*")
        .replace("$service", services)
        .replace("$real_server", real_servers)
}

#[test]
fn the_dashboard_is_what_its_script_writes_and_is_complete() {
    let tmp = temp_dir("dashboard").join("rvs-dashboard.json");
    let out = Command::new("python3")
        .arg(root().join("deploy/grafana/dashboard.py"))
        .arg(&tmp)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let written = std::fs::read_to_string(&tmp).unwrap();
    let kept = std::fs::read_to_string(root().join("deploy/grafana/rvs-dashboard.json")).unwrap();
    assert!(
        written == kept,
        "deploy/grafana/rvs-dashboard.json is not what dashboard.py writes: run python3 deploy/grafana/dashboard.py"
    );
    let d = dashboard();
    assert!(d["uid"].is_string() && d["title"] == "rvs");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 39);
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        vars,
        ["datasource", "job", "instance", "service", "real_server"]
    );
    let mut ids = std::collections::HashSet::new();
    let mut titles = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        let g = &p["gridPos"];
        assert!(
            g["w"].as_u64().unwrap() + g["x"].as_u64().unwrap() <= 24,
            "{p}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        assert!(p["description"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(!p["targets"].as_array().unwrap().is_empty());
        titles.push(p["title"].as_str().unwrap().to_owned());
    }
    // What an LVS operator looks for (ipvsadm --rate and -Ln), and the rest.
    for want in [
        "Connections / s",
        "Active connections per real server",
        "Inactive connections per real server",
        "Bytes / s",
        "Refusals / s by reason",
        "Connect failures and retries / s",
        "Health",
        "Reloads",
        "UDP sessions",
        "CPU",
        "Resident memory",
        "File descriptors",
    ] {
        assert!(
            titles.iter().any(|t| t == want),
            "no panel {want}: {titles:?}"
        );
    }
    // Each panel is filtered by the variables.
    for (title, expr) in dashboard_exprs() {
        if !title.starts_with("variable") {
            assert!(
                expr.contains("$job") && expr.contains("$instance"),
                "{title}: {expr}"
            );
        }
    }
    // Every expression parses: promtool checks it as a recording rule
    // (the variables set as Grafana would).
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in dashboard_exprs().iter().enumerate() {
        let e = substitute(expr, "(web|dns)", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:expr{i}\n        expr: '{}'\n",
            e.replace('\'', "''")
        ));
    }
    let tmp = temp_dir("dashboard-exprs");
    std::fs::write(tmp.join("rules.yml"), rules).unwrap();
    let out = promtool(&["check", "rules", "rules.yml"], &tmp);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(&format!("{} rules found", dashboard_exprs().len())),
        "{}",
        output_text(&out)
    );
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let out = promtool(&["check", "rules", "rules.yml"], &dir());
    assert!(out.status.success(), "{}", output_text(&out));
    let out = promtool(&["test", "rules", "rules.test.yml"], &dir());
    assert!(out.status.success(), "{}", output_text(&out));
    // Every alert is tested, and has its summary, description and runbook
    // (an entry of docs/metrics.md).
    let tests = std::fs::read_to_string(dir().join("rules.test.yml")).unwrap();
    let metrics_doc = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    for group in rules()["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            assert!(
                tests.contains(&format!("alertname: {alert}\n")),
                "{alert} has no unit test"
            );
            let a = &rule["annotations"];
            for key in ["summary", "description", "runbook"] {
                assert!(a[key].as_str().is_some(), "{alert}: no {key}");
            }
            let anchor = format!("docs/metrics.md#{}", alert.to_lowercase());
            assert_eq!(a["runbook"].as_str(), Some(anchor.as_str()), "{alert}");
            assert!(
                metrics_doc.contains(&format!("\n### {alert}\n")),
                "{alert} has no section in docs/metrics.md"
            );
        }
    }
}

#[test]
fn the_scrape_configurations_pass_promtool_check_config() {
    let out = promtool(&["check", "config", "prometheus.yml"], &dir());
    assert!(out.status.success(), "{}", output_text(&out));
    let out = promtool(&["check", "config", "prometheus-kubernetes.yml"], &dir());
    if out.status.success() {
        return;
    }
    // Debian builds Prometheus without Kubernetes discovery: check the rest
    // (the relabelling, the rules) with a static target in its place.
    let text = output_text(&out);
    assert!(
        text.contains("field kubernetes_sd_configs not found"),
        "{text}"
    );
    common::report(
        "prometheus: this promtool lacks Kubernetes discovery; checking prometheus-kubernetes.yml with a static target in its place",
    );
    let tmp = temp_dir("promk8s");
    let k8s = std::fs::read_to_string(dir().join("prometheus-kubernetes.yml")).unwrap();
    assert!(k8s.contains("    kubernetes_sd_configs:\n      - role: pod\n"));
    let swapped = k8s.replace(
        "    kubernetes_sd_configs:\n      - role: pod\n",
        "    static_configs:\n      - targets: [\"127.0.0.1:9180\"]\n",
    );
    std::fs::write(tmp.join("prometheus.yml"), swapped).unwrap();
    std::fs::copy(dir().join("rules.yml"), tmp.join("rules.yml")).unwrap();
    let out = promtool(&["check", "config", "prometheus.yml"], &tmp);
    assert!(out.status.success(), "{}", output_text(&out));
}

/// The metric names an expression uses (not recording rules' names, which
/// hold colons), with a histogram's suffixes taken off.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let word_start =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || b"_:".contains(&bytes[i - 1]));
        if word_start && (expr[i..].starts_with("rvs_") || expr[i..].starts_with("process_")) {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(expr.len(), |e| i + e);
            let name = &expr[i..end];
            if !name.contains(':') {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                names.push(base.to_owned());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_rules_use_only_documented_metrics() {
    let doc = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    let mut seen = 0;
    for (name, expr, _) in each_rule() {
        for metric in metric_names(&expr) {
            seen += 1;
            assert!(
                doc.contains(&format!("| `{metric}` |")),
                "{name} uses {metric}, which docs/metrics.md does not list"
            );
        }
    }
    assert!(seen > 15, "{seen} metric names found in the rules");
    let mut seen = 0;
    for (title, expr) in dashboard_exprs() {
        for metric in metric_names(&expr) {
            seen += 1;
            assert!(
                doc.contains(&format!("| `{metric}` |")),
                "dashboard panel {title} uses {metric}, which docs/metrics.md does not list"
            );
        }
    }
    assert!(seen > 25, "{seen} metric names found in the dashboard");
    assert_eq!(
        metric_names("sum(rate(rvs_a_bucket[1m])) / x:rvs_b:rate1m + process_c"),
        ["rvs_a", "process_c"]
    );
}

/// A query to Prometheus's HTTP API: the `data.result` array.
fn query(prom: SocketAddr, promql: &str) -> Vec<serde_json::Value> {
    let mut encoded = String::new();
    for b in promql.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let Some((200, body)) = http_get(prom, &format!("/api/v1/query?query={encoded}")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// A real server whose listener can be closed (to fail its health check).
fn stoppable_backend(name: &'static str, up: Arc<AtomicBool>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        while up.load(Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(name.as_bytes());
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    at
}

#[test]
fn a_real_prometheus_scrapes_rvs_and_evaluates_every_rule() {
    let b_up = Arc::new(AtomicBool::new(true));
    let a = name_backend("a");
    let b = stoppable_backend("b", Arc::clone(&b_up));
    let echo = udp_echo();
    let (web, dns, admin, prom) = (free_port(), free_port(), free_port(), free_port());
    let rvs = Running::start(
        "prometheus",
        &format!(
            "admin:\n  listen: \"{admin}\"\nservices:\n  - name: web\n    listen: \"{web}\"\n    health_check: {{ type: tcp, delay_loop: 1s, warmup: 0s, retry: 0 }}\n    real_servers:\n      - address: \"{a}\"\n      - address: \"{b}\"\n  - name: dns\n    proto: udp\n    listen: \"{dns}\"\n    real_servers:\n      - address: \"{echo}\"\n"
        ),
        admin,
    );
    let work = rvs.dir.clone();
    // Traffic: TCP connections and UDP requests, until the test ends.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            u.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 64];
            while !stop.load(Relaxed) {
                if let Ok(mut s) = TcpStream::connect(web) {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                }
                let _ = u.send_to(b"q", dns);
                let _ = u.recv_from(&mut buf);
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Prometheus: scraping every second, the rules with short `for:`s.
    let rules = std::fs::read_to_string(dir().join("rules.yml")).unwrap();
    let mut fast = String::new();
    for line in rules.lines() {
        match line.trim_start().strip_prefix("for: ") {
            Some(_) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                fast.push_str(&format!("{indent}for: 3s\n"));
            }
            None => {
                fast.push_str(line);
                fast.push('\n');
            }
        }
    }
    std::fs::write(work.join("rules.yml"), fast).unwrap();
    std::fs::write(
        work.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\nscrape_configs:\n  - job_name: rvs\n    static_configs:\n      - targets: [\"{admin}\"]\n"
        ),
    )
    .unwrap();
    let _prometheus = Kill(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                work.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .current_dir(&work)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(work.join("prometheus.log")).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("prometheus: {e} (tests/run installs it)")),
    );
    let plog = || std::fs::read_to_string(work.join("prometheus.log")).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(60), || http_get(prom, "/-/ready")
            .is_some_and(|(s, _)| s == 200)),
        "prometheus ready: {}",
        plog()
    );
    assert!(
        wait_for(Duration::from_secs(30), || !query(
            prom,
            "up{job=\"rvs\"} == 1"
        )
        .is_empty()),
        "rvs scraped: {}",
        plog()
    );

    // Every recording rule evaluates to data (rates need two scrapes).
    let mut missing = Vec::new();
    for (name, _, is_alert) in each_rule() {
        if is_alert {
            continue;
        }
        if !wait_for(Duration::from_secs(30), || !query(prom, &name).is_empty()) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "no data for {missing:?}");
    // Every alert's expression parses and evaluates (most return nothing
    // while all is well).
    for (name, expr, is_alert) in each_rule() {
        if is_alert {
            let (status, body) = http_get(
                prom,
                &format!(
                    "/api/v1/query?query={}",
                    expr.bytes()
                        .map(|b| format!("%{b:02X}"))
                        .collect::<String>()
                ),
            )
            .unwrap();
            assert_eq!(status, 200, "{name}: {body}");
        }
    }
    // Every dashboard expression returns data, its variables set to the
    // test's services and real servers.
    let services = "(web|dns)";
    let real_servers = format!("({a}|{b}|{echo})");
    let mut empty = Vec::new();
    for (title, expr) in dashboard_exprs() {
        let q = substitute(&expr, services, &real_servers);
        if !wait_for(Duration::from_secs(20), || !query(prom, &q).is_empty()) {
            empty.push(format!("{title}: {q}"));
        }
    }
    assert!(empty.is_empty(), "no data for {empty:#?}");
    // The share of web's connections: a and b about half each.
    let shares = query(
        prom,
        "real_server:rvs_real_server_connections:share_rate1m{service=\"web\"}",
    );
    assert_eq!(shares.len(), 2, "{shares:?}");

    // b stops: its health check fails, RvsRealServerDown fires.
    b_up.store(false, Relaxed);
    let alert = wait_for(Duration::from_secs(60), || {
        let Some((200, body)) = http_get(prom, "/api/v1/alerts") else {
            return false;
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == "RvsRealServerDown"
                    && a["labels"]["real_server"] == b.to_string().as_str()
                    && (a["state"] == "firing" || a["state"] == "pending")
            })
        })
    });
    stop.store(true, Relaxed);
    traffic.join().unwrap();
    assert!(
        alert,
        "RvsRealServerDown for {b}: {:?}",
        http_get(prom, "/api/v1/alerts")
    );
}
