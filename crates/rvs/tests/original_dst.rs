//! Traffic redirected to rvs by iptables is scheduled on its original
//! destination (SO_ORIGINAL_DST), as the kernel's dh would see it.
//!
//! In a network namespace of its own: `rvs demo --scheduler dh` listens on
//! 127.0.0.1:8080, and iptables REDIRECTs 10.99.0.0/24 port 80 to it. curl
//! asks a dozen of those destinations; each must reach the backend that
//! `rvs sched-replay` computes for dh on that destination. (Without the
//! original destination, every request would hash 127.0.0.1 and reach one
//! backend.) Needs root, ip(8) and iptables(8); .ci/run installs iptables.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Kill, Netns};

/// The test's namespace: 10.99.0.0/24 routed to its loopback, port 80
/// there redirected to 8080.
fn netns() -> Netns {
    let ns = Netns::new("odst");
    ns.must(
        &[
            "ip",
            "route",
            "add",
            "10.99.0.0/24",
            "dev",
            "lo",
            "src",
            "127.0.0.1",
        ],
        true,
    );
    ns.must(
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "10.99.0.0/24",
            "--dport",
            "80",
            "-j",
            "REDIRECT",
            "--to-ports",
            "8080",
        ],
        true,
    );
    ns
}

fn curl(ns: &Netns, url: &str) -> Option<String> {
    let out = ns
        .cmd(&["curl", "-s", "--max-time", "3", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn redirected_traffic_is_scheduled_on_its_original_destination() {
    let ns = netns();
    let rvs = env!("CARGO_BIN_EXE_rvs");
    let _demo = Kill(
        ns.cmd(&[
            rvs,
            "demo",
            "--listen",
            "127.0.0.1:8080",
            "--scheduler",
            "dh",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let start = Instant::now();
    while curl(&ns, "http://10.99.0.1/").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the demo did not come up"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // The kernel's dh over the demo's servers (added 1, 2, 3) for each
    // original destination, from the replay.
    let mut trace = String::from("{\"op\":\"service\",\"scheduler\":\"dh\"}\n");
    for port in [18081, 18082, 18083] {
        trace.push_str(&format!("{{\"op\":\"add\",\"rs\":\"127.0.0.1:{port}\"}}\n"));
    }
    for n in 1..=12 {
        trace.push_str(&format!(
            "{{\"op\":\"conn\",\"id\":{n},\"src\":\"127.0.0.1:5000\",\"dst\":\"10.99.0.{n}:80\"}}\n"
        ));
    }
    let mut replay = Command::new(rvs)
        .arg("sched-replay")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut replay.stdin.take().unwrap(), trace.as_bytes()).unwrap();
    let expected = String::from_utf8(replay.wait_with_output().unwrap().stdout).unwrap();
    let expected: Vec<String> = expected
        .lines()
        .map(|l| match l {
            "127.0.0.1:18081" => "Hello from backend-1".to_owned(),
            "127.0.0.1:18082" => "Hello from backend-2".to_owned(),
            "127.0.0.1:18083" => "Hello from backend-3".to_owned(),
            other => panic!("unexpected decision {other}"),
        })
        .collect();
    assert_eq!(expected.len(), 12);
    let distinct: std::collections::HashSet<_> = expected.iter().collect();
    assert!(
        distinct.len() >= 2,
        "the chosen destinations should spread: {expected:?}"
    );
    for n in 1..=12 {
        for _ in 0..2 {
            let got = curl(&ns, &format!("http://10.99.0.{n}/")).unwrap();
            assert_eq!(got, expected[n - 1], "destination 10.99.0.{n}");
        }
    }
}
