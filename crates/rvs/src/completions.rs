//! Shell completions (`rvs completions SHELL [rvs|rvsadm]`), made with
//! clap_complete from the commands' own definitions: rvs's clap
//! definition, and for rvsadm a clap model of its option table
//! ([`crate::ipvsadm::args::options`]), so that neither can drift from
//! what the binaries read.

use clap::{Arg, ArgAction, Command};

/// rvsadm's options as a clap command, for completions and the manual:
/// every option of ipvsadm's table, with its argument where it takes one.
pub fn rvsadm_command() -> Command {
    let mut cmd = Command::new("rvsadm")
        .version(crate::VERSION)
        .about("ipvsadm's commands and tables for a running rvs")
        .disable_help_flag(true)
        .disable_version_flag(true);
    let mut seen: Vec<&str> = Vec::new();
    for &(short, long, arg) in crate::ipvsadm::args::options() {
        if seen.contains(&long) {
            // -l is -L's other letter: one option, two shorts.
            if let Some(c) = short {
                cmd = cmd.mut_arg(long, |a| a.short_alias(c));
            }
            continue;
        }
        seen.push(long);
        let mut a = Arg::new(long).long(long);
        if let Some(c) = short {
            a = a.short(c);
        }
        a = match arg {
            None => a.action(ArgAction::SetTrue),
            Some(true) => a.num_args(1).value_name(value_name(long)),
            Some(false) => a.num_args(0..=1).value_name(value_name(long)),
        };
        if let Some(values) = values(long) {
            a = a.value_parser(values.to_vec());
        }
        cmd = cmd.arg(a);
    }
    cmd
}

/// The word ipvsadm's manual gives an option's argument.
fn value_name(long: &str) -> &'static str {
    match long {
        "tcp-service" | "udp-service" | "sctp-service" => "service-address",
        "fwmark-service" => "fwmark",
        "scheduler" => "scheduler",
        "persistent" => "timeout",
        "netmask" => "netmask",
        "real-server" => "server-address",
        "weight" => "weight",
        "u-threshold" | "l-threshold" => "connections",
        "start-daemon" | "stop-daemon" => "state",
        "mcast-interface" => "interface",
        "syncid" => "syncid",
        "pe" => "engine",
        "sched-flags" => "flags",
        "mcast-group" => "address",
        "mcast-port" => "port",
        "mcast-ttl" => "ttl",
        "sync-maxlen" => "length",
        _ => "value",
    }
}

/// The values an option takes, where they are few.
fn values(long: &str) -> Option<&'static [&'static str]> {
    match long {
        "scheduler" => Some(&[
            "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh",
            "twos",
        ]),
        "start-daemon" | "stop-daemon" => Some(&["master", "backup"]),
        "pe" => Some(&["sip"]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rvsadm_model_is_a_valid_command() {
        let cmd = super::rvsadm_command();
        cmd.clone().debug_assert();
        // -l is -L.
        let list = cmd.get_arguments().find(|a| a.get_id() == "list").unwrap();
        assert_eq!(list.get_short(), Some('L'));
        assert!(
            list.get_all_short_aliases()
                .is_some_and(|s| s.contains(&'l'))
        );
    }
}
