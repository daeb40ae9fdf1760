//! `rvs import keepalived` and `rvs import ipvsadm` on realistic files
//! (tests/fixtures/, written from keepalived.conf(5)'s and ipvsadm(8)'s
//! syntax): the YAML checks with `rvs check`, says what it should, and
//! every difference is a warning with its file and line.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::temp_dir;

fn rvs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rvs"))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The YAML checks with `rvs check`, and parses.
fn checks(yaml: &str, tag: &str) -> rvs_proxy::Config {
    let dir = temp_dir(tag);
    let path = dir.join("rvs.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = rvs().arg("check").arg("-c").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
    rvs_proxy::Config::parse(yaml, "imported").unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_keepalived_lvs_dr_pair_becomes_rvs_yaml() {
    let conf = fixtures().join("keepalived/lvs-dr.conf");
    let out = rvs()
        .args(["import", "keepalived"])
        .arg(&conf)
        .args(["--config-id", "lb1"])
        .output()
        .unwrap();
    let (yaml, warnings) = text(&out);
    assert!(out.status.success(), "{warnings}");
    let c = checks(&yaml, "keepalived");
    assert_eq!(c.services.len(), 2, "{yaml}");

    let web = &c.services[0];
    assert_eq!(
        web.listen[0].to_string(),
        "203.0.113.10:80",
        "$WEB_VIP $WEB_PORT"
    );
    assert_eq!(web.sched.scheduler.name(), "wlc");
    let p = web.sched.persistence.unwrap();
    assert_eq!(
        (p.timeout.as_secs(), p.netmask.v4().to_string()),
        (600, "255.255.255.0".into())
    );
    assert_eq!((web.health.quorum, web.health.hysteresis), (2, 1));
    assert_eq!(
        web.health.sorry_server.unwrap().to_string(),
        "198.51.100.99:8080"
    );
    // Both servers check the same two URLs: said once, for the service.
    assert_eq!(web.health.checks.len(), 2);
    let c0 = &web.health.checks[0];
    assert_eq!(
        c0.delay_loop.as_secs(),
        10,
        "the virtual server's delay_loop"
    );
    assert_eq!(
        (
            c0.connect_timeout.as_secs(),
            c0.retry,
            c0.delay_before_retry.as_secs()
        ),
        (3, 2, 2)
    );
    match &c0.kind {
        rvs_proxy::config::CheckKind::Http(h) => {
            assert_eq!(h.path, "/healthz");
            assert_eq!(h.status, [(200, 299), (301, 301)]);
        }
        k => panic!("{k:?}"),
    }
    match &web.health.checks[1].kind {
        rvs_proxy::config::CheckKind::Http(h) => {
            assert_eq!(
                h.digest.as_deref(),
                Some("5d41402abc4b2a76b9719d911017c592")
            );
        }
        k => panic!("{k:?}"),
    }
    let rs = &web.real_servers;
    assert_eq!(rs[0].params.weight, 3);
    assert_eq!(rs[0].inhibit_on_failure, Some(true));
    assert_eq!(
        (rs[1].params.u_threshold, rs[1].params.l_threshold),
        (500, 400)
    );
    assert_eq!(c.global.timeouts.tcp.as_secs(), 7200, "lvs_timeouts");

    // The included file: UDP, sh with sh-port, ops, alpha, a DNS check and
    // a program check with a dynamic weight.
    let dns = &c.services[1];
    assert_eq!(dns.proto, rvs_proxy::config::Proto::Udp);
    assert!(dns.udp.ops && dns.health.alpha && dns.sched.flags.port);
    let misc = &dns.real_servers[1].checks.as_ref().unwrap()[0];
    match &misc.kind {
        rvs_proxy::config::CheckKind::Misc(m) => {
            assert_eq!(
                m.argv,
                [
                    "/usr/local/bin/check-dns",
                    "--server",
                    "198.51.100.22",
                    "www.example.com"
                ]
            );
            assert!(m.dynamic);
            assert_eq!(m.timeout.as_secs(), 4);
        }
        k => panic!("{k:?}"),
    }

    // Every difference is a warning with its file and line, and a comment.
    let conf_s = conf.display().to_string();
    let dns_s = fixtures()
        .join("keepalived/conf.d/dns.conf")
        .display()
        .to_string();
    for (file, line, what) in [
        (&conf_s, 6, "notification_email"),
        (&conf_s, 18, "vrrp_instance VI_WEB"),
        (
            &conf_s,
            38,
            "lb_kind DR (direct routing): rvs proxies every connection (FULLNAT)",
        ),
        (&conf_s, 45, "quorum_down"),
        (&conf_s, 50, "notify_down"),
        (&dns_s, 25, "user in MISC_CHECK"),
        (&dns_s, 31, "virtual_server fwmark 7"),
    ] {
        let w = format!("{file}:{line}: warning: {what}");
        assert!(warnings.contains(&w), "missing {w:?} in\n{warnings}");
        assert!(yaml.contains(&format!("# {file}:{line}: {what}")), "{yaml}");
    }
}

#[test]
fn broken_keepalived_files_are_refused_with_their_line() {
    let dir = temp_dir("broken");
    let path = dir.join("keepalived.conf");
    std::fs::write(
        &path,
        "virtual_server 10.0.0.1 80 {\n    real_server 10.0.0.2 80 {\n        weight 1\n    }\n",
    )
    .unwrap();
    let out = rvs()
        .args(["import", "keepalived"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let (_, err) = text(&out);
    assert!(
        err.contains(&format!("{}:1: this {{ is never closed", path.display())),
        "{err}"
    );
    std::fs::write(
        &path,
        "virtual_server 10.0.0.1 80 {\n  delay_loop soon\n}\n",
    )
    .unwrap();
    let out = rvs()
        .args(["import", "keepalived"])
        .arg(&path)
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(
        err.contains(&format!(
            "{}:2: delay_loop: \"soon\" is not a number of seconds",
            path.display()
        )),
        "{err}"
    );
    let out = rvs()
        .args(["import", "keepalived"])
        .arg(dir.join("missing.conf"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn ipvsadm_rules_become_rvs_yaml() {
    let rules = fixtures().join("ipvsadm-rules.txt");
    let out = rvs()
        .args(["import", "ipvsadm"])
        .arg(&rules)
        .output()
        .unwrap();
    let (yaml, warnings) = text(&out);
    assert!(out.status.success(), "{warnings}");
    let c = checks(&yaml, "ipvsadm");
    assert_eq!(c.services.len(), 2);
    assert_eq!(c.services[0].real_servers.len(), 2);
    assert_eq!(c.services[0].real_servers[1].params.l_threshold, 400);
    assert!(c.services[1].udp.ops);
    assert_eq!(c.global.timeouts.tcp.as_secs(), 7200);
    let r = rules.display();
    assert!(
        warnings.contains(&format!("{r}:3: warning: -g (direct routing)")),
        "{warnings}"
    );
    assert!(
        warnings.contains(&format!(
            "{r}:8: warning: -f 7: rvs has no firewall-mark services"
        )),
        "{warnings}"
    );
    // Standard input works too.
    let out = rvs()
        .args(["import", "ipvsadm", "-"])
        .stdin(std::fs::File::open(&rules).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    // A bad rule: its line and ipvsadm's message.
    let dir = temp_dir("badrules");
    let bad = dir.join("rules");
    std::fs::write(
        &bad,
        "-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.0.0.2 -x nope\n",
    )
    .unwrap();
    let out = rvs()
        .args(["import", "ipvsadm"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains(&format!(
        "{}:2: illegal u_threshold specified",
        bad.display()
    )));
}
