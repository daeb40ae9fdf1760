//! The manual pages, written in roff from what they describe, so that they
//! cannot drift from it (`rvs manual rvs|rvsadm|rvs.yaml`):
//!
//! - rvs(8) from rvs's clap definition: every subcommand, every option,
//!   with their help text;
//! - rvsadm(8) from rvsadm's option table, each option described as it
//!   works against rvs, and the ones rvs reads but does not implement said
//!   so;
//! - rvs.yaml(5) from docs/configuration.md, built into the binary.

use std::fmt::Write as _;

use clap::Command;

/// roff's escapes for text: backslashes, hyphens (which would otherwise
/// break or turn into typographic dashes), and a line's leading dot or
/// quote.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

fn header(out: &mut String, name: &str, section: u8, title: &str) {
    let _ = writeln!(
        out,
        ".TH {} {section} \"\" \"rvs {}\" \"{title}\"",
        name.to_uppercase().replace('.', "\\&."),
        env!("CARGO_PKG_VERSION")
    );
}

/// Writes `help` as paragraphs: a blank line starts a new one.
fn paragraphs(out: &mut String, help: &str) {
    for (i, p) in help.split("\n\n").enumerate() {
        if i > 0 {
            out.push_str(".PP\n");
        }
        for line in p.lines() {
            let _ = writeln!(out, "{}", esc(line.trim()));
        }
    }
}

fn arg_tag(a: &clap::Arg) -> String {
    let mut names = Vec::new();
    if let Some(s) = a.get_short() {
        names.push(format!("\\fB\\-{s}\\fR"));
    }
    if let Some(l) = a.get_long() {
        names.push(format!("\\fB\\-\\-{}\\fR", esc(l)));
    }
    let takes = a.get_num_args().is_some_and(|n| n.takes_values())
        && !matches!(
            a.get_action(),
            clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
        );
    let value = a
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.as_str().to_owned())
        .unwrap_or_else(|| a.get_id().as_str().to_uppercase());
    if names.is_empty() {
        return format!("\\fI{}\\fR", esc(&value));
    }
    let mut tag = names.join(", ");
    if takes {
        let _ = write!(tag, " \\fI{}\\fR", esc(&value));
    }
    tag
}

fn options(out: &mut String, cmd: &Command) {
    for a in cmd.get_arguments() {
        if a.is_hide_set() || a.get_id() == "help" || a.get_id() == "version" {
            continue;
        }
        let _ = writeln!(out, ".TP\n{}", arg_tag(a));
        let help = a
            .get_long_help()
            .or_else(|| a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let help = help.trim_end();
        if help.is_empty() || help.ends_with(['.', ':', ')']) {
            paragraphs(out, help);
        } else {
            paragraphs(out, &format!("{help}."));
        }
        let values: Vec<String> = a
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_owned())
            .collect();
        if !values.is_empty() {
            let _ = writeln!(out, "One of: {}.", esc(&values.join(", ")));
        }
        if let Some(d) = a.get_default_values().first() {
            let _ = writeln!(out, "Default: {}.", esc(&d.to_string_lossy()));
        }
    }
}

/// rvs(8).
pub fn rvs_page(cmd: &Command) -> String {
    // Built, so that every argument has its number of values.
    let mut cmd = cmd.clone();
    cmd.build();
    let cmd = &cmd;
    let mut out = String::new();
    header(&mut out, "rvs", 8, "System Administration");
    out.push_str(
        ".SH NAME\nrvs \\- a userspace layer\\-4 load balancer with Linux IPVS's scheduling\n",
    );
    out.push_str(".SH SYNOPSIS\n\\fBrvs\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]\n");
    out.push_str(".SH DESCRIPTION\n");
    paragraphs(
        &mut out,
        "rvs is what LVS/IPVS, ipvsadm and keepalived give an operator, as one unprivileged process: a TCP and UDP load balancer that terminates each client's connection on a virtual address and opens its own to the real server the scheduler chose (IPVS calls this FULLNAT). Its schedulers make the kernel's decisions; its configuration is one YAML file (rvs.yaml(5)), reloaded without dropping a connection; rvsadm(8) speaks ipvsadm's commands and tables to it.",
    );
    out.push_str(".SH OPTIONS\nThese go before or after the command.\n");
    options(&mut out, cmd);
    out.push_str(".SH COMMANDS\n");
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let _ = writeln!(out, ".SS \"rvs {}\"", esc(sub.get_name()));
        let about = sub
            .get_long_about()
            .or_else(|| sub.get_about())
            .map(|h| h.to_string())
            .unwrap_or_default();
        paragraphs(&mut out, &about);
        options(&mut out, sub);
        for inner in sub.get_subcommands() {
            if inner.get_name() == "help" {
                continue;
            }
            let _ = writeln!(
                out,
                ".TP\n\\fBrvs {} {}\\fR",
                esc(sub.get_name()),
                esc(inner.get_name())
            );
            let about = inner
                .get_long_about()
                .or_else(|| inner.get_about())
                .map(|h| h.to_string())
                .unwrap_or_default();
            paragraphs(&mut out, &about);
            options(&mut out, inner);
        }
    }
    out.push_str(".SH SIGNALS\n");
    paragraphs(
        &mut out,
        "rvs run reloads its file on SIGHUP (and when the file changes), stops accepting and drains on SIGTERM or SIGINT, and on SIGUSR2 starts its binary again and hands it the listening sockets, UDP sessions and templates.",
    );
    out.push_str(".SH FILES\n.TP\n/etc/rvs/rvs.yaml\nThe configuration the packaged units run (rvs.yaml(5)).\n");
    out.push_str(".SH SEE ALSO\n\\fBrvs.yaml\\fR(5), \\fBrvsadm\\fR(8), \\fBipvsadm\\fR(8), \\fBkeepalived.conf\\fR(5)\n");
    out
}

/// What rvsadm does with each option, in its own words; `None` for the
/// ones it reads but does not implement (listed apart).
fn rvsadm_option(long: &str) -> Option<&'static str> {
    Some(match long {
        "add-service" => {
            "Add a virtual service, named tcp-ADDR-PORT (udp-…), listening on the address."
        }
        "edit-service" => {
            "Change a virtual service's scheduler, flags, persistence and one-packet scheduling; what is not given is reset, as ipvsadm does."
        }
        "delete-service" => {
            "Remove the address from its service; the service goes with its last address."
        }
        "clear" => "Remove every virtual service.",
        "list" => {
            "List the virtual services and their real servers (\\-l is the same), or with \\-c the connections, with \\-\\-timeout the timeouts, with \\-\\-daemon the sync daemons."
        }
        "zero" => "Zero the counters and rates of one service, or of all.",
        "add-server" => "Add a real server to a virtual service.",
        "edit-server" => {
            "Change a real server's weight and thresholds; what is not given is reset."
        }
        "delete-server" => "Remove a real server; its connections stay.",
        "set" => "Set the TCP, TCP FIN and UDP idle timeouts, in seconds; 0 leaves one as it is.",
        "help" => "Print the usage.",
        "version" => "Print the version and the commit rvsadm was built from.",
        "restore" => "Read commands from standard input, one a line.",
        "save" => "Write the rules, as \\-A and \\-a lines that \\-R reads back.",
        "start-daemon" => {
            "Start the master or backup connection synchronisation daemon (the kernel's sync protocol)."
        }
        "stop-daemon" => "Stop the master or backup sync daemon.",
        "tcp-service" => "A TCP virtual service: host[:port].",
        "udp-service" => "A UDP virtual service: host[:port].",
        "fwmark-service" => {
            "A firewall-mark service: read, and refused with a message (write it in rvs.yaml as a service with several listen addresses and persistence.scope: service)."
        }
        "scheduler" => {
            "The scheduling algorithm: rr, wrr, lc, wlc (the default), lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh or twos."
        }
        "persistent" => {
            "Persistence: a client's connections go to one server while its template lives (300 seconds when no timeout is given)."
        }
        "netmask" => "The persistence granularity: an IPv4 netmask, or an IPv6 prefix length.",
        "real-server" => "The real server: host[:port].",
        "masquerading" => "The real server's own port is used (rvs always proxies: FULLNAT).",
        "ipip" => {
            "Accepted; rvs proxies (FULLNAT) and gives the server the service's port, as ipvsadm sets it."
        }
        "gatewaying" => {
            "Accepted; rvs proxies (FULLNAT) and gives the server the service's port, as ipvsadm sets it."
        }
        "weight" => "The real server's weight, 0 (quiescent) to 65535; 1 by default.",
        "u-threshold" => {
            "The upper connection threshold: above it the server takes no new connections."
        }
        "l-threshold" => {
            "The lower connection threshold: below it an overloaded server takes them again."
        }
        "numeric" => "Addresses and ports as numbers.",
        "connection" => {
            "List the connections and persistence templates (a backup's synced entries too)."
        }
        "mcast-interface" => "The interface of the sync daemon's multicast (eth0 by default).",
        "syncid" => "The sync daemon's ID, 0 to 255.",
        "timeout" => "List the timeouts.",
        "daemon" => "List the sync daemons.",
        "stats" => "List with the counters.",
        "rate" => "List with the rates.",
        "thresholds" => "List with the thresholds.",
        "persistent-conn" => {
            "List with the persistent connections (and, with \\-c, the persistence engine's data)."
        }
        "nosort" => "Do not sort the list.",
        "sort" => "Sort the list (the default).",
        "exact" => "Numbers without K, M or G.",
        "ipv6" => "An IPv6 firewall-mark service (read with \\-f, which is refused).",
        "ops" => "One-packet scheduling (UDP): each datagram scheduled on its own.",
        "pe" => {
            "The persistence engine: sip (UDP, with \\-p): every message of a SIP call to one server, by its Call\\-ID."
        }
        "sched-flags" => {
            "Scheduler flags: sh-fallback, sh-port, mh-fallback, mh-port (flag-1, flag-2)."
        }
        "mcast-group" => "The sync daemon's multicast group (224.0.0.81 by default).",
        "mcast-port" => "The sync daemon's UDP port (8848 by default).",
        "mcast-ttl" => "The sync daemon's multicast TTL (1 by default).",
        "sync-maxlen" => "The sync daemon's largest message.",
        _ => return None,
    })
}

/// rvsadm(8).
pub fn rvsadm_page(cmd: &Command) -> String {
    let mut cmd = cmd.clone();
    cmd.build();
    let cmd = &cmd;
    let mut out = String::new();
    header(&mut out, "rvsadm", 8, "System Administration");
    out.push_str(".SH NAME\nrvsadm \\- ipvsadm's commands and tables for a running rvs\n");
    out.push_str(".SH SYNOPSIS\n");
    for line in crate::ipvsadm::args::usage("rvsadm")
        .lines()
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
    {
        let _ = writeln!(out, ".br\n{}", esc(line.trim()));
    }
    out.push_str(".SH DESCRIPTION\n");
    paragraphs(
        &mut out,
        "rvsadm reads ipvsadm's command lines and writes ipvsadm's tables, byte for byte, against a running rvs(8): through its admin API, found by --admin HOST:PORT, else the environment variable RVS_ADMIN, else 127.0.0.1:9180 (--token, else RVS_ADMIN_TOKEN, carries the admin token). The Forward column says FullNat. Changes last until rvs reloads its configuration file; rvs show-config writes them out. Exit statuses are ipvsadm's: 0 done, 1 a listing of nothing, 2 a bad command line, 255 a refused change.",
    );
    let (mut done, mut not): (Vec<&clap::Arg>, Vec<&clap::Arg>) = (Vec::new(), Vec::new());
    for a in cmd.get_arguments() {
        match a.get_long().and_then(rvsadm_option) {
            Some(_) => done.push(a),
            None => not.push(a),
        }
    }
    out.push_str(".SH OPTIONS\n");
    for a in done {
        let _ = writeln!(out, ".TP\n{}", arg_tag(a));
        let text = a.get_long().and_then(rvsadm_option).unwrap_or_default();
        let _ = writeln!(out, "{text}");
    }
    out.push_str(".SH NOT IMPLEMENTED\nThese ipvsadm options are read, and refused with a message that says what to do instead:\n");
    for a in not {
        let _ = writeln!(out, ".TP\n{}", arg_tag(a));
        let what = match a.get_long() {
            Some("sctp-service") => "SCTP virtual services: rvs serves TCP and UDP.",
            Some(l) if l.starts_with("tun-") => {
                "Tunnel settings of \\-i: rvs proxies every connection (FULLNAT), no tunnel is needed."
            }
            _ => "Not available in rvs.",
        };
        let _ = writeln!(out, "{what}");
    }
    out.push_str(".SH EXAMPLES\n.nf\nrvsadm \\-A \\-t 192.0.2.10:80 \\-s wrr \\-p 300\nrvsadm \\-a \\-t 192.0.2.10:80 \\-r 10.0.0.2:8080 \\-m \\-w 2\nrvsadm \\-Ln \\-\\-stats\nrvsadm \\-\\-start\\-daemon master \\-\\-mcast\\-interface eth0 \\-\\-syncid 7\n.fi\n");
    out.push_str(".SH SEE ALSO\n\\fBrvs\\fR(8), \\fBrvs.yaml\\fR(5), \\fBipvsadm\\fR(8)\n");
    out
}

/// The configuration reference, built in.
pub const CONFIGURATION_MD: &str = include_str!("../../../docs/configuration.md");

/// Inline markdown into roff: `code` bold, links to their text.
fn inline(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(['`', '[']) {
        out.push_str(&esc_mid(&rest[..i]));
        let tail = &rest[i..];
        if let Some(code) = tail.strip_prefix('`')
            && let Some(end) = code.find('`')
        {
            let _ = write!(out, "\\fB{}\\fR", esc_mid(&code[..end]));
            rest = &code[end + 1..];
            continue;
        }
        if let Some(link) = tail.strip_prefix('[')
            && let Some(close) = link.find("](")
            && let Some(paren) = link[close + 2..].find(')')
        {
            out.push_str(&inline(&link[..close]));
            rest = &link[close + 2 + paren + 1..];
            continue;
        }
        out.push_str(&esc_mid(&tail[..1]));
        rest = &tail[1..];
    }
    out.push_str(&esc_mid(rest));
    out.replace("**", "")
}

/// [`esc`] for the middle of a line (no leading-dot guard).
fn esc_mid(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

/// A line of text, guarded against a leading dot or quote.
fn text_line(out: &mut String, s: &str) {
    let s = inline(s.trim());
    if s.starts_with('.') || s.starts_with('\'') {
        out.push_str("\\&");
    }
    out.push_str(&s);
    out.push('\n');
}

/// rvs.yaml(5), from docs/configuration.md.
pub fn yaml_page() -> String {
    let mut out = String::new();
    header(&mut out, "rvs.yaml", 5, "File Formats");
    out.push_str(".SH NAME\nrvs.yaml \\- the configuration of rvs\n");
    let mut in_code = false;
    let mut table_head: Option<Vec<String>> = None;
    for line in CONFIGURATION_MD.lines() {
        if line.starts_with("```") {
            out.push_str(if in_code { ".fi\n.RE\n" } else { ".RS\n.nf\n" });
            in_code = !in_code;
            continue;
        }
        if in_code {
            let l = esc_mid(line);
            if l.starts_with('.') || l.starts_with('\'') {
                out.push_str("\\&");
            }
            out.push_str(&l);
            out.push('\n');
            continue;
        }
        let t = line.trim_end();
        if t.starts_with('|') {
            let cells: Vec<String> = t
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().trim_matches('|').trim().to_owned())
                .collect();
            if cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
            {
                continue;
            }
            match &table_head {
                None => table_head = Some(cells),
                Some(head) => {
                    let _ = writeln!(
                        out,
                        ".TP\n\\fB{}\\fR",
                        inline(&cells[0]).replace("\\fB", "").replace("\\fR", "")
                    );
                    for (h, c) in head.iter().zip(&cells).skip(1) {
                        if !c.is_empty() {
                            text_line(&mut out, &format!("{h}: {c}."));
                            out.push_str(".br\n");
                        }
                    }
                }
            }
            continue;
        }
        table_head = None;
        if let Some(h) = t.strip_prefix("# ") {
            let _ = writeln!(
                out,
                ".SH DESCRIPTION\n.PP\nThis page is docs/configuration.md of rvs {}: {}.",
                env!("CARGO_PKG_VERSION"),
                esc_mid(h)
            );
        } else if let Some(h) = t.strip_prefix("## ") {
            let _ = writeln!(out, ".SH \"{}\"", inline(h).to_uppercase().replace('"', ""));
        } else if let Some(h) = t.strip_prefix("### ") {
            let _ = writeln!(out, ".SS \"{}\"", inline(h).replace('"', ""));
        } else if let Some(item) = t.strip_prefix("- ") {
            out.push_str(".IP \\(bu 2\n");
            text_line(&mut out, item);
        } else if t.is_empty() {
            out.push_str(".PP\n");
        } else {
            text_line(&mut out, t);
        }
    }
    out.push_str(".SH SEE ALSO\n\\fBrvs\\fR(8), \\fBrvsadm\\fR(8)\n");
    out
}
