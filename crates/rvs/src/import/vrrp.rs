//! `rvs import keepalived FILE --vrrp-out VRRP.conf`: the part of
//! keepalived.conf that rvs does not do, for keepalived to keep.
//!
//! On a bare-metal director keepalived does two jobs: VRRP moves the
//! virtual addresses between the directors, and its checker drives IPVS.
//! rvs takes the second; this writes a keepalived.conf for the first:
//! `global_defs`, `vrrp_script`, `vrrp_instance`, `vrrp_sync_group`,
//! static addresses, routes and rules, and everything else that is not a
//! virtual server, as the user wrote it (notify scripts, authentication,
//! tracking). A `vrrp_script` running `rvs ready` is added to every
//! instance's `track_script`, so a director whose rvs does not serve
//! gives up its addresses to the other.

use std::fmt::Write as _;
use std::path::Path;

use super::keepalived::{Node, statements};
use super::{ImportError, Note};

/// How the added `vrrp_script` asks rvs whether it serves.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The rvs binary, as keepalived will run it.
    pub rvs: String,
    /// The admin listener `rvs ready` asks.
    pub admin: String,
}

impl Default for Probe {
    fn default() -> Probe {
        Probe {
            rvs: "/usr/local/bin/rvs".into(),
            admin: "127.0.0.1:9180".into(),
        }
    }
}

/// The VRRP-only keepalived.conf, and what was moved out of it.
#[derive(Clone, Debug)]
pub struct VrrpConfig {
    /// The file's text.
    pub text: String,
    /// What moved to rvs (one note per statement), for the user.
    pub moved: Vec<Note>,
    /// The instances the probe was added to.
    pub instances: Vec<String>,
}

/// Top-level statements that are rvs's now.
const MOVED: [&str; 2] = ["virtual_server", "virtual_server_group"];

/// `global_defs` keywords about IPVS or keepalived's checker process.
fn lvs_global(kw: &str) -> bool {
    kw.starts_with("lvs_") || kw.starts_with("checker_") || kw == "smtp_alert_checker"
}

/// Writes the VRRP part of keepalived.conf at `path` (read for
/// `config_id`), with the probe tracked by every instance.
pub fn vrrp_config(path: &Path, config_id: &str, probe: &Probe) -> Result<VrrpConfig, ImportError> {
    let (nodes, _) = statements(path, config_id)?;
    let taken: Vec<&str> = nodes
        .iter()
        .filter(|n| n.kw == "vrrp_script")
        .filter_map(|n| n.args.first().map(String::as_str))
        .collect();
    let mut script = "rvs_ready".to_owned();
    let mut i = 2;
    while taken.contains(&script.as_str()) {
        script = format!("rvs_ready_{i}");
        i += 1;
    }

    let mut moved = Vec::new();
    let mut instances = Vec::new();
    let mut body = String::new();
    for n in &nodes {
        if MOVED.contains(&n.kw.as_str()) {
            moved.push(Note {
                file: n.file.to_string(),
                line: n.line,
                text: format!(
                    "{} {}: to rvs's YAML (see its comments)",
                    n.kw,
                    n.args.join(" ")
                ),
            });
            continue;
        }
        body.push('\n');
        match n.kw.as_str() {
            "global_defs" => {
                let mut g = n.clone();
                let mut kept = Vec::new();
                for c in n.children.as_deref().unwrap_or(&[]) {
                    if lvs_global(&c.kw) {
                        moved.push(Note {
                            file: c.file.to_string(),
                            line: c.line,
                            text: if c.kw == "lvs_timeouts" {
                                "global_defs lvs_timeouts: moved to rvs (global.timeouts)"
                                    .to_owned()
                            } else {
                                format!(
                                    "global_defs {}: about IPVS or keepalived's checker: left out",
                                    c.kw
                                )
                            },
                        });
                        let _ = writeln!(
                            body,
                            "! {} {}: left out (IPVS and its checker are rvs's now)",
                            c.kw,
                            c.args.join(" ")
                        );
                    } else {
                        kept.push(c.clone());
                    }
                }
                g.children = Some(kept);
                emit(&g, 0, &mut body);
            }
            "vrrp_instance" => {
                let mut inst = n.clone();
                let children = inst.children.get_or_insert_with(Vec::new);
                match children.iter_mut().find(|c| c.kw == "track_script") {
                    Some(t) => {
                        let probe_node = leaf(&script, t);
                        t.children.get_or_insert_with(Vec::new).push(probe_node);
                    }
                    None => {
                        let t = Node {
                            kw: "track_script".into(),
                            args: Vec::new(),
                            children: Some(Vec::new()),
                            file: n.file.clone(),
                            line: n.line,
                        };
                        let probe_node = leaf(&script, &t);
                        children.push(Node {
                            children: Some(vec![probe_node]),
                            ..t
                        });
                    }
                }
                instances.push(n.args.first().cloned().unwrap_or_default());
                emit(&inst, 0, &mut body);
            }
            _ => emit(n, 0, &mut body),
        }
    }

    let mut text = String::new();
    let _ = writeln!(
        text,
        "! keepalived.conf for VRRP alone: written by `rvs import keepalived --vrrp-out`\n\
         ! from {} (config id {config_id:?}: on the other director, import again with\n\
         ! its --config-id, or keep its own @-lines).\n\
         !\n\
         ! keepalived moves the virtual addresses; rvs serves them (the virtual\n\
         ! servers are in rvs's YAML). Run keepalived with --vrrp (-P): no checker\n\
         ! process, no IPVS. The vrrp_script {script} below asks rvs whether it\n\
         ! serves (as user nobody: it needs no privilege); every vrrp_instance\n\
         ! tracks it, so a director whose rvs stops serving gives its addresses\n\
         ! to the other (fall 2: within about 2 s).",
        path.display()
    );
    if !moved.is_empty() {
        let _ = writeln!(text, "!\n! Moved to rvs:");
        for m in &moved {
            let _ = writeln!(text, "!   {m}");
        }
    }
    let _ = writeln!(
        text,
        "\nvrrp_script {script} {{\n    script \"{} ready --admin {}\"\n    user nobody\n    interval 1\n    timeout 2\n    fall 2\n    rise 2\n}}",
        probe.rvs, probe.admin
    );
    text.push_str(&body);
    Ok(VrrpConfig {
        text,
        moved,
        instances,
    })
}

fn leaf(kw: &str, at: &Node) -> Node {
    Node {
        kw: kw.to_owned(),
        args: Vec::new(),
        children: None,
        file: at.file.clone(),
        line: at.line,
    }
}

/// A word as keepalived reads it back: quoted when it has a space or a
/// character the reader gives a meaning (`{`, `}`, `#`, `!`).
fn word(w: &str) -> String {
    if w.is_empty() || w.contains(|c: char| c.is_whitespace() || matches!(c, '{' | '}' | '#' | '!'))
    {
        format!("\"{w}\"")
    } else {
        w.to_owned()
    }
}

fn emit(n: &Node, depth: usize, out: &mut String) {
    let pad = "    ".repeat(depth);
    let mut line = format!("{pad}{}", word(&n.kw));
    for a in &n.args {
        line.push(' ');
        line.push_str(&word(a));
    }
    match &n.children {
        None => {
            let _ = writeln!(out, "{line}");
        }
        Some(children) => {
            let _ = writeln!(out, "{line} {{");
            for c in children {
                emit(c, depth + 1, out);
            }
            let _ = writeln!(out, "{pad}}}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_probe_joins_each_instance_and_the_virtual_servers_leave() {
        let dir = std::env::temp_dir().join(format!("rvs-vrrp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("keepalived.conf");
        std::fs::write(
            &f,
            "global_defs {\n router_id A\n lvs_sync_daemon eth0 VI_1\n}\n\
             vrrp_script chk_nginx {\n script \"/usr/bin/pgrep nginx\"\n}\n\
             vrrp_instance VI_1 {\n state MASTER\n interface eth0\n virtual_router_id 51\n priority 100\n\
             authentication {\n auth_type PASS\n auth_pass s3cret\n }\n\
             virtual_ipaddress {\n 192.0.2.10/24 dev eth0\n }\n\
             track_script {\n chk_nginx\n }\n notify_master \"/usr/local/bin/notify master\"\n}\n\
             vrrp_instance VI_2 {\n interface eth0\n virtual_router_id 52\n}\n\
             virtual_server 192.0.2.10 80 {\n real_server 10.0.0.1 80 {\n }\n}\n",
        )
        .unwrap();
        let v = vrrp_config(&f, "a", &Probe::default()).unwrap();
        assert_eq!(v.instances, ["VI_1", "VI_2"]);
        assert!(
            !v.text.contains("\nvirtual_server") && !v.text.contains("real_server"),
            "{}",
            v.text
        );
        assert!(
            v.text
                .contains("track_script {\n        chk_nginx\n        rvs_ready\n    }"),
            "{}",
            v.text
        );
        assert!(
            v.text
                .contains("notify_master \"/usr/local/bin/notify master\""),
            "{}",
            v.text
        );
        assert!(v.text.contains("auth_pass s3cret"));
        assert!(v.text.contains("! lvs_sync_daemon eth0 VI_1: left out"));
        assert!(
            v.text
                .contains("script \"/usr/local/bin/rvs ready --admin 127.0.0.1:9180\"")
        );
        assert_eq!(v.moved.len(), 2, "{:?}", v.moved);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
