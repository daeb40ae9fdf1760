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
            "{r}:8: warning: -f 7: rvs does not see firewall marks"
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

/// The sample Debian's ldirectord package ships.
const LDIRECTORD_SAMPLE: &str = "/usr/share/doc/ldirectord/examples/ldirectord.cf";

fn import_ldirectord(path: &Path) -> (bool, String, String) {
    let out = rvs()
        .args(["import", "ldirectord"])
        .arg(path)
        .output()
        .unwrap();
    let (yaml, warnings) = text(&out);
    (out.status.success(), yaml, warnings)
}

/// ldirectord's own sample, each of its commented blocks uncommented in
/// turn (beside the one it has active): every one converts and checks,
/// except the block that repeats the active one's address, which
/// ldirectord refuses too.
#[test]
fn ldirectords_own_sample_block_by_block() {
    let sample = std::fs::read_to_string(LDIRECTORD_SAMPLE).unwrap_or_else(|e| {
        panic!("{LDIRECTORD_SAMPLE}: {e}: install Debian's ldirectord package (tests/run does)")
    });
    let lines: Vec<&str> = sample.lines().collect();
    let is_virtual = |l: &str| {
        l.strip_prefix('#').is_some_and(|r| {
            let r = r.trim_start_matches(' ');
            (r.starts_with("virtual=") || r.starts_with("virtual6=") || r.starts_with("virtual ="))
                && !l.starts_with("##")
        })
    };
    let starts: Vec<usize> = (0..lines.len()).filter(|&i| is_virtual(lines[i])).collect();
    assert!(starts.len() >= 15, "the sample's blocks: {}", starts.len());
    let dir = temp_dir("ldsample");
    let mut seen_kinds = std::collections::BTreeSet::new();
    for (k, &start) in starts.iter().enumerate() {
        let mut text: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        text[start] = text[start][1..].to_owned();
        let mut i = start + 1;
        while i < text.len() && (text[i].starts_with("#\t") || text[i].starts_with("#    ")) {
            text[i] = text[i][1..].to_owned();
            i += 1;
        }
        let file = dir.join(format!("block{k}.cf"));
        std::fs::write(&file, text.join("\n")).unwrap();
        let (ok, yaml, warnings) = import_ldirectord(&file);
        let head = lines[start];
        if head.contains("192.168.6.240:80") {
            // The same address as the active block.
            assert!(!ok, "{head}: {yaml}");
            assert!(
                warnings.contains(&format!(
                    "{}:{}: duplicate virtual server",
                    file.display(),
                    start + 1
                )),
                "{warnings}"
            );
            // Alone (the active block commented out), it converts: the
            // range is six servers.
            let active = lines
                .iter()
                .position(|l| l.starts_with("virtual="))
                .unwrap();
            let mut j = active;
            while j < text.len() && !text[j].trim().is_empty() {
                text[j] = format!("#{}", text[j]);
                j += 1;
            }
            std::fs::write(&file, text.join("\n")).unwrap();
            let (ok, yaml, warnings) = import_ldirectord(&file);
            assert!(ok, "{head}:\n{warnings}");
            let c = checks(&yaml, &format!("ldsample{k}"));
            assert_eq!(c.services.len(), 1);
            let addrs: Vec<String> = c.services[0]
                .real_servers
                .iter()
                .map(|r| r.address.to_string())
                .collect();
            assert_eq!(addrs.len(), 7, "{head}: {addrs:?}");
            assert_eq!(
                (addrs[0].as_str(), addrs[5].as_str()),
                ("192.168.6.2:80", "192.168.6.7:80")
            );
            continue;
        }
        assert!(ok, "{head}:\n{warnings}");
        let c = checks(&yaml, &format!("ldsample{k}"));
        // The active block, always: Web Site, rr, the fallback, an HTTP
        // check of /index.html for "Test Page" with its Host.
        let web = &c.services[0];
        assert_eq!(web.name, "Web_Site");
        assert_eq!(web.sched.scheduler.name(), "rr");
        assert_eq!(web.health.sorry_server.unwrap().to_string(), "127.0.0.1:80");
        match &web.health.checks[..] {
            [chk] => {
                assert_eq!(
                    (
                        chk.delay_loop.as_secs(),
                        chk.connect_timeout.as_secs(),
                        chk.retry
                    ),
                    (1, 3, 0)
                );
                match &chk.kind {
                    rvs_proxy::config::CheckKind::Http(h) => {
                        assert_eq!(h.path, "/index.html");
                        assert_eq!(h.expect_body.as_ref().unwrap().as_str(), "Test Page");
                        assert_eq!(h.virtualhost.as_deref(), Some("www.x.y.z"));
                    }
                    k => panic!("{k:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
        assert!(!web.health.inhibit_on_failure, "quiescent=no");
        if head.trim_end() == "#virtual=1" {
            assert_eq!(c.services.len(), 1, "the fwmark block is left out");
            assert!(warnings.contains("firewall-mark"), "{warnings}");
            continue;
        }
        assert_eq!(c.services.len(), 2, "{head}: {yaml}");
        let s = &c.services[1];
        assert!(s.health.sorry_server.is_some(), "{head}: the fallback");
        let kinds: Vec<&str> = s.health.checks.iter().map(|c| c.kind.name()).collect();
        seen_kinds.extend(kinds.iter().map(|k| (*k).to_owned()));
        let count = s.real_servers.len() + s.discovery.len();
        if head.contains(":443") {
            assert_eq!(kinds, ["https"]);
        } else if head.contains(":53") {
            assert_eq!(s.proto, rvs_proxy::config::Proto::Udp, "{head}");
        } else if head.contains(":3306") {
            // sql01->sql03: three names rvs resolves, weight 10.
            assert_eq!((s.real_servers.len(), s.discovery.len()), (0, 3));
            assert_eq!(s.discovery[2].template.params.weight, 10);
            // ldirectord's MySQL check: its login, database and query.
            assert_eq!(kinds, ["mysql"], "{yaml}");
            let rvs_proxy::config::CheckKind::Protocol(p) = &s.health.checks[0].kind else {
                panic!("{yaml}");
            };
            assert_eq!(p.login.as_deref(), Some("readuser"));
            assert_eq!(p.password.as_deref(), Some("genericpassword"));
            assert_eq!(p.database.as_deref(), Some("portal"));
            assert_eq!(p.query, "SELECT * FROM link");
        } else if head.contains(":1521") {
            assert!(
                warnings.contains("service=oracle: rvs has no oracle check"),
                "{warnings}"
            );
        } else if head.contains(":23") {
            assert!(
                kinds.is_empty() && s.real_servers[0].checks.as_deref() == Some(&[]),
                "checktype=on"
            );
        } else if head.contains("virtual6") {
            assert_eq!(s.listen[0].to_string(), "[2001:db8::5]:119");
            assert_eq!(s.health.sorry_server.unwrap().to_string(), "[::1]:119");
        }
        assert!(count >= 2, "{head}: {count} servers");
        // Nothing it cannot say is dropped: each block's directives that
        // rvs does not take are warned about with their line.
        for (j, l) in text.iter().enumerate().skip(start + 1).take(i - start - 1) {
            let d = l.trim_start();
            for what in ["login", "passwd", "secret", "database"] {
                let Some(value) = d.strip_prefix(&format!("{what}=")) else {
                    continue;
                };
                // Used by the check rvs writes, or said to be left out.
                let key = if what == "passwd" { "password" } else { what };
                let used = format!("{key}: {}", value.trim_matches('"'));
                let w = format!("{}:{}: warning: {what}", file.display(), j + 1);
                assert!(
                    yaml.contains(&used) || warnings.contains(&w),
                    "{w} in\n{warnings}\nor {used} in\n{yaml}"
                );
            }
        }
        // A secret only ever where a check uses it.
        for (at, _) in yaml.match_indices("genericpassword") {
            let line_start = yaml[..at].rfind('\n').map_or(0, |i| i + 1);
            let before = yaml[line_start..at].trim_start().trim_start_matches("- ");
            assert!(
                before == "password: " || before == "secret: ",
                "a password out of place: {}",
                &yaml[line_start..]
            );
        }
    }
    for k in ["https", "dns", "tcp", "udp"] {
        assert!(seen_kinds.contains(k), "{k} among {seen_kinds:?}");
    }
}

/// A file in the shapes operators write: globals, names, ranges, per-server
/// checks, every check type, IPv6, a firewall mark.
#[test]
fn an_operators_ldirectord_cf_becomes_rvs_yaml() {
    use rvs_proxy::config::CheckKind;
    let conf = fixtures().join("ldirectord/ldirectord.cf");
    let (ok, yaml, warnings) = import_ldirectord(&conf);
    assert!(ok, "{warnings}");
    let c = checks(&yaml, "ldoperator");
    assert_eq!(c.services.len(), 7, "{yaml}");

    // localhost:http, by /etc/hosts and /etc/services.
    let web = &c.services[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.listen[0].to_string(), "127.0.0.1:80");
    assert_eq!(web.sched.scheduler.name(), "wlc");
    let p = web.sched.persistence.unwrap();
    assert_eq!(
        (p.timeout.as_secs(), p.netmask.v4().to_string()),
        (600, "255.255.255.0".into())
    );
    assert!(web.health.inhibit_on_failure, "quiescent=yes");
    assert_eq!(
        web.health.sorry_server.unwrap().to_string(),
        "127.0.0.1:8090"
    );
    // The range, the thresholds, masq keeping its port.
    let addrs: Vec<String> = web
        .real_servers
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(
        addrs,
        [
            "198.51.100.11:80",
            "198.51.100.12:8080",
            "198.51.100.20:80",
            "198.51.100.21:80",
            "198.51.100.22:80"
        ]
    );
    assert_eq!(web.real_servers[0].params.weight, 3);
    assert_eq!(
        (
            web.real_servers[4].params.l_threshold,
            web.real_servers[4].params.u_threshold
        ),
        (40, 50)
    );
    // checktype=3: a connect every 5 s and the HTTP check every 15 s;
    // failurecount 3 → two more tries; the per-server request/receive.
    let own = |i: usize| web.real_servers[i].checks.clone().unwrap();
    let (tcp, http) = (&own(0)[0], &own(0)[1]);
    assert_eq!(tcp.kind, CheckKind::Tcp);
    assert_eq!(
        (
            tcp.delay_loop.as_secs(),
            tcp.connect_timeout.as_secs(),
            tcp.retry
        ),
        (5, 4, 2)
    );
    assert_eq!(
        (http.delay_loop.as_secs(), http.connect_timeout.as_secs()),
        (15, 8)
    );
    let body = |c: &rvs_proxy::config::HealthCheck| match &c.kind {
        CheckKind::Http(h) => (
            h.path.clone(),
            h.expect_body.as_ref().map(|b| b.as_str().to_owned()),
        ),
        k => panic!("{k:?}"),
    };
    assert_eq!(body(http).0, "/healthz");
    assert!(body(http).1.unwrap().contains("(ok|degraded)"));
    assert_eq!(body(&own(1)[1]), ("/status".into(), Some("^OK$".into())));

    // external: the program and ldirectord's four arguments; gate forces
    // the virtual port.
    let mail = &c.services[1];
    assert!(!mail.health.inhibit_on_failure, "quiescent=no in the block");
    assert_eq!(mail.real_servers[1].address.to_string(), "198.51.100.32:25");
    match &mail.real_servers[1].checks.as_ref().unwrap()[0].kind {
        CheckKind::Misc(m) => {
            assert_eq!(
                m.argv,
                [
                    "/usr/local/bin/check-smtp",
                    "192.0.2.10",
                    "25",
                    "198.51.100.32",
                    "25"
                ]
            );
            assert_eq!(m.timeout.as_secs(), 7);
        }
        k => panic!("{k:?}"),
    }

    // HEAD on its own port; sh with its flags.
    let status = &c.services[2];
    assert!(status.sched.flags.port && status.sched.flags.fallback);
    let chk = &status.health.checks[0];
    assert_eq!(chk.connect_port, Some(8443));
    match &chk.kind {
        CheckKind::Http(h) => assert!(h.tls && h.method == "HEAD" && h.expect_body.is_none()),
        k => panic!("{k:?}"),
    }

    // DNS: UDP by its port, ops, a name rvs resolves.
    let dns = &c.services[3];
    assert_eq!(dns.proto, rvs_proxy::config::Proto::Udp);
    assert!(dns.udp.ops);
    assert_eq!(dns.discovery[0].target.to_string(), "dns:dns2.internal:53");
    match &dns.health.checks[0].kind {
        CheckKind::Dns(d) => assert_eq!(d.name, "www.example.com"),
        k => panic!("{k:?}"),
    }

    // on: no checks; off: weight 0.
    assert_eq!(
        c.services[4].real_servers[0].checks.as_deref(),
        Some(&[][..])
    );
    assert_eq!(c.services[5].real_servers[0].params.weight, 0);

    // IPv6: the prefix, fallback6, a connect check.
    let v6 = &c.services[6];
    assert_eq!(v6.listen[0].to_string(), "[2001:db8::10]:80");
    assert_eq!(v6.health.sorry_server.unwrap().to_string(), "[::1]:8090");
    assert_eq!(v6.health.checks[0].kind, CheckKind::Tcp);

    let f = conf.display().to_string();
    for (line, what) in [
        (11, "emailalert: rvs sends no mail"),
        (12, "logfile"),
        (13, "maintenancedir"),
        (18, "masq (NAT): rvs proxies every connection (FULLNAT)"),
        (28, "checktype=3: two checks here"),
        (33, "port 2525 with gate"),
        (38, "bogus: a virtual directive rvs does not know"),
        (53, "dns2.internal: not in /etc/hosts"),
        (57, "receive \"198.51.100.80\""),
        (74, "virtual=7: a firewall-mark service"),
    ] {
        let w = format!("{f}:{line}: warning: {what}");
        assert!(warnings.contains(&w), "missing {w:?} in\n{warnings}");
        assert!(yaml.contains(&format!("# {f}:{line}: {what}")), "{yaml}");
    }
}

#[test]
fn broken_ldirectord_files_are_refused_with_their_line() {
    let dir = temp_dir("ldbroken");
    for (text, line, reason) in [
        (
            "virtual=10.0.0.1:80\n\treal=10.0.0.2:80 route\n",
            2,
            "forward method must be gate, masq or ipip",
        ),
        (
            "virtual=10.0.0.1:80\n\treal=10.0.0.2:80 gate\n\n\tscheduler=rr\n",
            4,
            "an indented directive outside a virtual= block",
        ),
        (
            "checktimeout=soon\n",
            1,
            "checktimeout: \"soon\" is not a number",
        ),
        (
            "virtual=10.0.0.1:80\n\tchecktype=sometimes\n",
            2,
            "checktype must be",
        ),
        (
            "virtual=10.0.0.1:80\n\treal=10.0.0.9->10.0.0.2:80 gate\n",
            2,
            "invalid range",
        ),
        (
            "virtual=10.0.0.1:80\n\tprotocol=sctp\n",
            2,
            "protocol must be tcp or udp",
        ),
        (
            "virtual6=10.0.0.1:80\n",
            1,
            "virtual6 takes an IPv6 address",
        ),
        (
            "virtual=10.0.0.1:80\n\treal=10.0.0.2:80 gate 1 \"/\", \"(\"\n",
            0,
            "",
        ),
    ] {
        let file = dir.join("ldirectord.cf");
        std::fs::write(&file, text).unwrap();
        let (ok, yaml, warnings) = import_ldirectord(&file);
        if line == 0 {
            // A receive rvs's regex cannot read: said, and left out.
            assert!(ok, "{warnings}");
            assert!(
                warnings.contains("a Perl regular expression rvs's regex syntax cannot read"),
                "{warnings}"
            );
            checks(&yaml, "ldbadregex");
            continue;
        }
        assert!(!ok, "{text}: {yaml}");
        let want = format!("{}:{line}: {reason}", file.display());
        assert!(
            warnings.contains(&want),
            "{text}: want {want:?} in {warnings}"
        );
    }
}

/// Lines of a credentials file, as `/etc/shadow` holds them.
const SHADOW: &str = "root:$y$j9T$Qm3cQ0l3Xk2d$Zq9vC1p8Rw4nYb2Ue7Hh5Ls0Tk6Jx3Fa.Gd1Mz8Nc4:20228:0:99999:7:::\ndaemon:*:20228:0:99999:7:::\noperator:!hunter2secret!:20228:0:99999:7:::\n";

/// Nothing of `secret`'s lines appears in `said`.
fn echoes_nothing_of(secret: &str, said: &str) {
    for line in secret.lines() {
        for part in line.split(':').filter(|p| p.len() >= 4) {
            assert!(!said.contains(part), "{part:?} echoed in:\n{said}");
        }
    }
}

/// A file that is not what the command reads (a credentials file, given
/// by mistake or by someone probing what rvs prints) is refused by
/// position, never echoed: by `rvs check`, and by each importer, read
/// directly or through keepalived's `include`.
#[test]
fn files_that_are_not_configurations_are_refused_without_being_echoed() {
    let dir = temp_dir("noecho");
    let shadow = dir.join("shadow");
    std::fs::write(&shadow, SHADOW).unwrap();
    let check = rvs().arg("check").arg("-c").arg(&shadow).output().unwrap();
    let (out, err) = text(&check);
    assert!(!check.status.success());
    assert!(err.contains(&format!("{}:1:1:", shadow.display())), "{err}");
    echoes_nothing_of(SHADOW, &(out + &err));
    // One word: a password file.
    let pw = dir.join("password");
    std::fs::write(&pw, "hunter2secret\n").unwrap();
    let (_, err) = text(&rvs().arg("check").arg("-c").arg(&pw).output().unwrap());
    assert!(err.contains("not a configuration"), "{err}");
    assert!(!err.contains("hunter2secret"), "{err}");

    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!("global_defs {{\n}}\ninclude {}\n", shadow.display()),
    )
    .unwrap();
    for (kind, file) in [
        ("keepalived", &conf),
        ("keepalived", &shadow),
        ("ldirectord", &shadow),
        ("ipvsadm", &shadow),
    ] {
        let o = rvs().args(["import", kind]).arg(file).output().unwrap();
        let (out, err) = text(&o);
        echoes_nothing_of(SHADOW, &format!("{out}{err}"));
        assert!(err.contains("shadow:1"), "{kind}: the place is said: {err}");
    }
}

/// A line of tens of megabytes is not written back whole, in a warning or
/// an error, whichever importer reads it.
#[test]
fn a_huge_line_is_quoted_bounded() {
    let dir = temp_dir("hugeline");
    let huge = "A".repeat(30 << 20);
    let cases = [
        (
            "keepalived",
            format!("virtual_server 10.0.0.1 80 {{\n  lb_algo {huge}\n  {huge} 1\n}}\n"),
        ),
        ("keepalived", format!("{huge}\n")),
        (
            "ldirectord",
            format!("virtual=10.0.0.1:80\n\treal=10.0.0.2:80 masq\n\tscheduler={huge}\n"),
        ),
        ("ldirectord", format!("{huge}=1\n")),
        ("ipvsadm", format!("-A -t 10.0.0.1:80 -s {huge}\n")),
    ];
    for (i, (kind, body)) in cases.iter().enumerate() {
        let f = dir.join(format!("in-{i}"));
        std::fs::write(&f, body).unwrap();
        let o = rvs().args(["import", kind]).arg(&f).output().unwrap();
        let (out, err) = text(&o);
        assert!(
            err.len() < 8192,
            "{kind} case {i}: {} bytes on stderr",
            err.len()
        );
        assert!(
            !out.contains(&huge[..4096]),
            "{kind} case {i}: the line in the YAML"
        );
    }
}

/// The peak memory of a command, in KiB (the largest resident set of the
/// children of a Python that runs it).
fn peak_kib(args: &[&std::ffi::OsStr]) -> u64 {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import resource, subprocess, sys\nsubprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)\nprint(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Importing a large file (200,000 real servers) takes memory linear in
/// its size with a small constant: a keepalived.conf of 20 MB took 70
/// times its size before, as ldirectord.cf and ipvsadm rules took 15 to
/// 30 times.
#[test]
fn importers_memory_is_a_small_multiple_of_the_file() {
    let dir = temp_dir("bigimport");
    let (mut ka, mut ld, mut ipv) = (String::new(), String::new(), String::new());
    for v in 0..200 {
        let vip = format!("10.0.{v}.1");
        ka.push_str(&format!(
            "virtual_server {vip} 80 {{\n  delay_loop 6\n  lb_algo wlc\n  protocol TCP\n"
        ));
        ld.push_str(&format!("virtual={vip}:80\n"));
        ipv.push_str(&format!("-A -t {vip}:80 -s wlc\n"));
        for r in 0..1000 {
            let rs = format!("172.16.{}.{}", r / 250, r % 250);
            ka.push_str(&format!("  real_server {rs} 8080 {{\n    weight 1\n    TCP_CHECK {{\n      connect_timeout 3\n    }}\n  }}\n"));
            ld.push_str(&format!("\treal={rs}:8080 masq 1\n"));
            ipv.push_str(&format!("-a -t {vip}:80 -r {rs}:8080 -m -w 1\n"));
        }
        ka.push_str("}\n");
        ld.push_str("\tservice=http\n\tchecktype=connect\n\n");
    }
    let base = peak_kib(&[env!("CARGO_BIN_EXE_rvs").as_ref(), "--version".as_ref()]);
    for (kind, body) in [("keepalived", ka), ("ldirectord", ld), ("ipvsadm", ipv)] {
        let f = dir.join(kind);
        std::fs::write(&f, &body).unwrap();
        let peak = peak_kib(&[
            env!("CARGO_BIN_EXE_rvs").as_ref(),
            "import".as_ref(),
            kind.as_ref(),
            f.as_os_str(),
        ]);
        let size_kib = body.len() as u64 / 1024;
        common::report(&format!(
            "import {kind}: {size_kib} KiB read, peak {peak} KiB ({:.1} times)",
            peak as f64 / size_kib as f64
        ));
        assert!(
            peak <= base + 12 * size_kib,
            "{kind}: {peak} KiB at peak for a file of {size_kib} KiB"
        );
    }
}

/// A token file others could read or replace is refused, with the reason
/// and the command that mends it; one readable by its owner alone is
/// taken.
#[test]
fn a_loose_token_file_is_refused_as_ssh_refuses_a_loose_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir("tokenmode");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let conf = dir.join("rvs.yaml");
    std::fs::write(
        &conf,
        format!("admin:\n  token_file: {}\nservices: []\n", token.display()),
    )
    .unwrap();
    for (mode, ok) in [
        (0o600, true),
        (0o400, true),
        (0o644, false),
        (0o640, false),
        (0o666, false),
        (0o602, false),
    ] {
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
        let o = rvs().arg("check").arg("-c").arg(&conf).output().unwrap();
        let (_, err) = text(&o);
        assert_eq!(o.status.success(), ok, "{mode:o}: {err}");
        if !ok {
            assert!(
                err.contains(&format!("mode {mode:04o}")) && err.contains("chmod"),
                "{err}"
            );
            assert!(err.contains("rvs.yaml:2:"), "placed at its key: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}

/// keepalived's SMTP_CHECK and ldirectord's negotiate checks become the
/// checks that speak their protocol, with their logins, queries and
/// secrets; what rvs cannot honour is a warning with its line.
#[test]
fn protocol_checks_are_imported_as_protocol_checks() {
    use rvs_proxy::config::{CheckKind, Protocol, TcpStep};
    let dir = temp_dir("import-protocols");
    let ka = dir.join("keepalived.conf");
    std::fs::write(
        &ka,
        "virtual_server 192.0.2.10 25 {\n  lb_algo rr\n  protocol TCP\n  real_server 192.0.2.21 25 {\n    SMTP_CHECK {\n      helo_name mail-check.example.com\n      connect_timeout 4\n    }\n  }\n  real_server 192.0.2.22 25 {\n    SMTP_CHECK {\n      host {\n        connect_ip 192.0.2.31\n        connect_port 2525\n      }\n      host {\n        connect_ip 192.0.2.32\n      }\n    }\n  }\n}\n",
    )
    .unwrap();
    let out = rvs()
        .args(["import", "keepalived"])
        .arg(&ka)
        .output()
        .unwrap();
    let (yaml, warnings) = text(&out);
    assert!(out.status.success(), "{warnings}");
    assert!(!warnings.contains("SMTP"), "{warnings}");
    let c = checks(&yaml, "import-smtp");
    let rs = &c.services[0].real_servers;
    let one = rs[0].checks.as_deref().unwrap();
    let CheckKind::Protocol(p) = &one[0].kind else {
        panic!("{yaml}")
    };
    assert_eq!(
        (p.protocol, p.helo_name.as_str()),
        (Protocol::Smtp, "mail-check.example.com")
    );
    let two = rs[1].checks.as_deref().unwrap();
    assert_eq!(two.len(), 2, "one check per host: {yaml}");
    assert_eq!(two[0].connect_port, Some(2525));
    assert_eq!(two[1].connect_ip.unwrap().to_string(), "192.0.2.32");

    let ld = dir.join("ldirectord.cf");
    std::fs::write(
        &ld,
        "checktimeout=3\nvirtual=192.0.2.10:110\n\treal=192.0.2.21:110 masq\n\tservice=pop\n\tlogin=\"probe\"\n\tpasswd=\"pw1\"\n\
         virtual=192.0.2.10:993\n\treal=192.0.2.21:993 masq\n\tservice=imaps\n\
         virtual=192.0.2.10:21\n\treal=192.0.2.21:21 masq\n\tservice=ftp\n\trequest=\"welcome.msg\"\n\treceive=\"Welcome\"\n\
         virtual=192.0.2.10:389\n\treal=192.0.2.21:389 masq\n\tservice=ldap\n\trequest=\"dc=example,dc=com\"\n\treceive=\"example\"\n\
         virtual=192.0.2.10:5432\n\treal=192.0.2.21:5432 masq\n\tservice=pgsql\n\tlogin=\"readuser\"\n\tpasswd=\"pw2\"\n\tdatabase=\"portal\"\n\trequest=\"SELECT 1\"\n\
         virtual=192.0.2.10:3306\n\treal=192.0.2.21:3306 masq\n\tservice=mysql\n\
         virtual=192.0.2.10:5060\n\treal=192.0.2.21:5060 masq\n\tprotocol=udp\n\tservice=sip\n\tlogin=\"ops@example.com\"\n\
         virtual=192.0.2.10:1812\n\treal=192.0.2.21:1812 masq\n\tprotocol=udp\n\tservice=radius\n\tsecret=\"s3\"\n\tlogin=\"readuser\"\n\tpasswd=\"pw3\"\n\
         virtual=192.0.2.10:6379\n\treal=192.0.2.21:6379 masq\n\tservice=simpletcp\n\trequest=\"PING\\n\"\n\treceive=\"^\\+PONG\"\n\
         virtual=192.0.2.10:8080\n\treal=192.0.2.21:8080 masq\n\tservice=http\n\tlogin=\"nobody\"\n",
    )
    .unwrap();
    let out = rvs()
        .args(["import", "ldirectord"])
        .arg(&ld)
        .output()
        .unwrap();
    let (yaml, warnings) = text(&out);
    assert!(out.status.success(), "{warnings}");
    let c = checks(&yaml, "import-negotiate");
    let by_port = |port: u16| {
        let s = c
            .services
            .iter()
            .find(|s| s.listen[0].port() == port)
            .unwrap_or_else(|| panic!("{port} in {yaml}"));
        s.health.checks[0].kind.clone()
    };
    let proto = |port: u16| match by_port(port) {
        CheckKind::Protocol(p) => p,
        other => panic!("{port}: {other:?}\n{yaml}"),
    };
    let pop = proto(110);
    assert_eq!(
        (pop.protocol, pop.login.as_deref(), pop.password.as_deref()),
        (Protocol::Pop, Some("probe"), Some("pw1"))
    );
    let imaps = proto(993);
    assert!(imaps.protocol == Protocol::Imap && imaps.tls && imaps.login.is_none());
    let ftp = proto(21);
    assert_eq!(ftp.path.as_deref(), Some("/welcome.msg"));
    assert_eq!(
        ftp.expect_body.as_ref().map(|p| p.as_str()),
        Some("Welcome")
    );
    let ldap = proto(389);
    assert_eq!(ldap.base, "dc=example,dc=com");
    assert_eq!(ldap.expect_dn.as_ref().map(|p| p.as_str()), Some("example"));
    let pg = proto(5432);
    assert_eq!(
        (pg.database.as_deref(), pg.query.as_str()),
        (Some("portal"), "SELECT 1")
    );
    // No login nor request: ldirectord never adds these servers.
    assert_eq!(by_port(3306), CheckKind::Tcp);
    assert!(
        warnings.contains("service=mysql without login= and request="),
        "{warnings}"
    );
    let sip = proto(5060);
    assert_eq!(
        (sip.uri.as_deref(), sip.sip_tcp),
        (Some("sip:ops@example.com"), false)
    );
    let radius = proto(1812);
    assert_eq!(
        (radius.secret.as_deref(), radius.password.as_deref()),
        (Some("s3"), Some("pw3"))
    );
    let CheckKind::Steps(steps) = by_port(6379) else {
        panic!("{yaml}")
    };
    assert_eq!(steps[0], TcpStep::Send(b"PING\n".to_vec()));
    assert!(matches!(&steps[1], TcpStep::ExpectRegex(p) if p.as_str() == "^\\+PONG"));
    // The http check has no login: said, with its line.
    assert!(
        warnings.contains(&format!(
            "{}:50: warning: login: used by ldirectord's protocol checks",
            ld.display()
        )),
        "{warnings}"
    );
    assert!(
        !warnings.contains("the protocol exchange is not tried"),
        "{warnings}"
    );
}

/// Firewall marks with the addresses they cover become one service with
/// one persistence for all of them; without, a warning. The sync daemon
/// and the SIP engine come across, from ipvsadm rules and keepalived.
#[test]
fn marks_sync_daemons_and_the_sip_engine_are_imported() {
    let dir = temp_dir("import-marks");
    let rules = dir.join("rules");
    std::fs::write(
        &rules,
        "-A -f 7 -s rr -p 300\n-a -f 7 -r 10.0.0.2:0 -m -w 1\n-a -f 7 -r 10.0.0.3:0 -m -w 1\n\
         -A -f 8 -s wlc\n-a -f 8 -r 10.0.0.4:0 -m\n\
         -A -u 192.0.2.1:5060 -s rr -p 60 --pe sip\n-a -u 192.0.2.1:5060 -r 10.0.0.5:5060 -m\n\
         --start-daemon master --mcast-interface eth1 --syncid 9\n--start-daemon backup --mcast-interface eth1\n",
    )
    .unwrap();
    let out = rvs()
        .args(["import", "ipvsadm"])
        .arg(&rules)
        .args(["--fwmark", "7=192.0.2.1:80,192.0.2.1:443"])
        .output()
        .unwrap();
    let (yaml, warnings) = text(&out);
    assert!(out.status.success(), "{warnings}");
    let c = checks(&yaml, "import-marks-rules");
    let fwm = c.services.iter().find(|s| s.name == "fwm-7").unwrap();
    assert_eq!(fwm.listen.len(), 2, "{yaml}");
    let p = fwm.sched.persistence.unwrap();
    assert_eq!(p.scope, rvs_sched::Scope::Service);
    assert_eq!(fwm.persistence.fwmark, Some(7));
    assert_eq!(fwm.real_servers[0].address.port(), 0);
    // Mark 8 has no addresses: a warning, with the way to give them.
    assert!(
        warnings.contains("-f 8: rvs does not see firewall marks")
            && warnings.contains("--fwmark 8="),
        "{warnings}"
    );
    assert!(!c.services.iter().any(|s| s.name == "fwm-8"));
    let sip = c
        .services
        .iter()
        .find(|s| s.proto == rvs_proxy::config::Proto::Udp)
        .unwrap();
    assert_eq!(
        sip.persistence.engine,
        Some(rvs_proxy::config::PersistenceEngine::Sip)
    );
    let d = &c.global.sync.daemons;
    assert_eq!(d.len(), 2, "{yaml}");
    assert_eq!((d[0].mcast_interface.as_str(), d[0].syncid), ("eth1", 9));
    // A bad --fwmark is refused, naming it.
    let bad = rvs()
        .args(["import", "ipvsadm"])
        .arg(&rules)
        .args(["--fwmark", "7=nowhere"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad).1.contains("--fwmark 7=nowhere"),
        "{}",
        text(&bad).1
    );

    let conf = dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        "global_defs {\n  lvs_sync_daemon eth0 VI_1\n}\n\
         vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n  virtual_ipaddress {\n    192.0.2.1\n  }\n}\n\
         virtual_server fwmark 3 {\n  lb_algo rr\n  persistence_timeout 600\n  real_server 10.0.0.2 0 {\n  }\n}\n\
         virtual_server 192.0.2.1 5060 {\n  protocol UDP\n  lb_algo rr\n  persistence_timeout 60\n  persistence_engine sip\n  real_server 10.0.0.5 5060 {\n  }\n}\n",
    )
    .unwrap();
    let out = rvs()
        .args(["import", "keepalived"])
        .arg(&conf)
        .args([
            "--config-id",
            "lb1",
            "--fwmark",
            "3=192.0.2.1:80,192.0.2.1:443",
        ])
        .output()
        .unwrap();
    let (yaml, warnings) = text(&out);
    assert!(out.status.success(), "{warnings}");
    let c = checks(&yaml, "import-marks-keepalived");
    let fwm = c.services.iter().find(|s| s.name == "fwm-3").unwrap();
    assert_eq!(fwm.listen.len(), 2, "{yaml}");
    assert_eq!(
        fwm.sched.persistence.unwrap().scope,
        rvs_sched::Scope::Service
    );
    let sip = c
        .services
        .iter()
        .find(|s| s.proto == rvs_proxy::config::Proto::Udp)
        .unwrap();
    assert_eq!(
        sip.persistence.engine,
        Some(rvs_proxy::config::PersistenceEngine::Sip)
    );
    // Both daemons, of the instance's virtual_router_id.
    let d = &c.global.sync.daemons;
    assert_eq!(d.len(), 2, "{yaml}");
    assert!(
        d.iter()
            .all(|d| d.syncid == 51 && d.mcast_interface == "eth0"),
        "{yaml}"
    );
    assert!(
        warnings.contains("lvs_sync_daemon eth0: a master and a backup sync daemon"),
        "{warnings}"
    );
}
