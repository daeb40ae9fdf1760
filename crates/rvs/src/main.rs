//! `rvs`: the daemon and its tools.

#![forbid(unsafe_code)]

mod daemon;
mod demo;
mod systemd;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rvs_proxy::{Mode, Options};

/// rvs — a userspace layer-4 load balancer with Linux IPVS's scheduling.
#[derive(Debug, Parser)]
#[command(name = "rvs", version = rvs::VERSION, about, long_about = None)]
struct Cli {
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: tracing::Level,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Page {
    /// rvs(8).
    Rvs,
    /// rvsadm(8).
    Rvsadm,
    /// rvs.yaml(5).
    #[value(name = "rvs.yaml")]
    RvsYaml,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Which {
    Rvs,
    Rvsadm,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Forwarding {
    /// Copy small messages, splice bulk transfers (Linux; copy elsewhere).
    Auto,
    /// splice(2) through pipes: no copy through user space (Linux).
    Splice,
    /// read/write through a buffer.
    Copy,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the load balancer with a configuration file.
    ///
    /// SIGHUP, or a change of the file, reloads it; SIGTERM or SIGINT stops
    /// accepting and drains open connections for global.shutdown_grace;
    /// SIGUSR2 starts the binary at the same path again, hands it the
    /// listening sockets, and drains once it serves.
    Run {
        /// The configuration file (YAML).
        #[arg(short, long)]
        config: PathBuf,
        /// How TCP bytes are moved.
        #[arg(long, value_enum, default_value_t = Forwarding::Auto)]
        forwarding: Forwarding,
        /// Data-plane threads, each accepting TCP connections on its own
        /// SO_REUSEPORT socket per address; 0 runs connections on the
        /// control runtime, one socket per address. Default: one per CPU
        /// the process may use.
        #[arg(long)]
        workers: Option<usize>,
        /// Even long-lived connections out between the workers: a worker
        /// that holds two connections more than another passes what it
        /// accepts to that one (a wake-up of the other thread each time).
        #[arg(long)]
        balance_workers: bool,
        /// Write the process id here once serving (and the new process's,
        /// after a binary upgrade on SIGUSR2).
        #[arg(long)]
        pid_file: Option<PathBuf>,
    },
    /// Check a configuration file and exit: 0 when it is valid.
    Check {
        /// The configuration file (YAML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Start three small HTTP backends and a virtual service in front of them.
    Demo {
        /// The virtual service's address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The admin listener (status page, metrics, API); another port of
        /// the same address when this one is taken.
        #[arg(long, default_value = "127.0.0.1:9180")]
        admin: SocketAddr,
        /// The scheduler.
        #[arg(long, default_value = "rr")]
        scheduler: String,
    },
    /// Print the configuration a running rvs serves, as YAML.
    ///
    /// Edits made with rvsadm or the admin API are in it: they last until
    /// the configuration file is reloaded, so write this out to keep them
    /// (`rvs show-config > rvs.yaml`). The admin token is never printed;
    /// the configuration's other secrets (misc check arguments written
    /// `{secret: ...}`, HTTP check query values) are printed `<redacted>`
    /// unless the admin token is given.
    ShowConfig {
        /// The admin listener of the running rvs (else RVS_ADMIN, else
        /// 127.0.0.1:9180).
        #[arg(long)]
        admin: Option<String>,
        /// The admin token (else RVS_ADMIN_TOKEN): the secrets are then
        /// printed as they are.
        #[arg(long)]
        token: Option<String>,
    },
    /// Convert an ipvsadm, keepalived or ldirectord setup into rvs's
    /// configuration.
    ///
    /// Prints the YAML; what rvs does differently is a comment in it and a
    /// warning on stderr with the file and line. Exit status 1 when the
    /// input cannot be read.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
    /// Print a shell's completions for rvs or rvsadm.
    ///
    /// `rvs completions bash > /usr/share/bash-completion/completions/rvs`;
    /// `rvs completions bash rvsadm` for rvsadm. The packages install them
    /// where the shells look.
    Completions {
        /// bash, zsh, fish (or elvish, powershell).
        shell: clap_complete::Shell,
        /// Whose: rvs (the default) or rvsadm.
        #[arg(value_enum, default_value_t = Which::Rvs)]
        command: Which,
    },
    /// Print a manual page in roff: rvs(8), rvsadm(8) or rvs.yaml(5).
    ///
    /// `rvs manual rvs > rvs.8`; `man -l rvs.8` shows it. Written from the
    /// commands' definitions and docs/configuration.md, so they never
    /// drift from the binary.
    Manual {
        /// Which page.
        #[arg(value_enum)]
        page: Page,
    },
    /// Exit 0 when a running rvs serves (its /readyz answers 200), 1 when
    /// it does not or cannot be reached: for keepalived's vrrp_script, a
    /// container's health check, scripts.
    Ready {
        /// The admin listener of the running rvs (else RVS_ADMIN, else
        /// 127.0.0.1:9180).
        #[arg(long)]
        admin: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
    },
    /// Replay a scheduler trace (JSON Lines) and print each decision.
    ///
    /// One line per `conn`: the real server chosen, or `-`. A malformed or
    /// refused line is reported on stderr with its number, exit status 2.
    /// The format is described in docs/sched-replay.md.
    SchedReplay {
        /// The trace file; standard input when absent or `-`.
        trace: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ImportFrom {
    /// ipvsadm rules: what `ipvsadm -S` (or `-Sn`) writes, or a script of
    /// ipvsadm commands; `-` is standard input.
    Ipvsadm {
        /// The rules file.
        file: PathBuf,
        /// The addresses a firewall mark covers (`-f MARK`): its service
        /// listens on them, one persistence for all (`scope: service`).
        /// `udp:` before the addresses for a UDP service. Repeatable.
        #[arg(long, value_name = "MARK=ADDR:PORT,ADDR:PORT")]
        fwmark: Vec<String>,
    },
    /// A keepalived.conf (its `include` files are read too).
    Keepalived {
        /// The configuration file.
        file: PathBuf,
        /// The config id for `@id` lines (keepalived's -i); default: the
        /// host name's first part, as keepalived's.
        #[arg(long)]
        config_id: Option<String>,
        /// The addresses a firewall mark covers (`virtual_server fwmark
        /// MARK`): its service listens on them, one persistence for all
        /// (`scope: service`). `udp:` before the addresses for a UDP
        /// service. Repeatable.
        #[arg(long, value_name = "MARK=ADDR:PORT,ADDR:PORT")]
        fwmark: Vec<String>,
        /// Also write a keepalived.conf for VRRP alone here: what rvs does
        /// not do (global_defs, vrrp_script, vrrp_instance,
        /// vrrp_sync_group, static addresses and routes), with a
        /// vrrp_script that runs `rvs ready` tracked by every instance.
        #[arg(long, value_name = "VRRP.conf")]
        vrrp_out: Option<PathBuf>,
        /// The rvs binary keepalived runs for that script.
        #[arg(long, default_value = "/usr/local/bin/rvs", requires = "vrrp_out")]
        rvs_binary: String,
        /// The admin listener `rvs ready` asks in that script.
        #[arg(long, default_value = "127.0.0.1:9180", requires = "vrrp_out")]
        ready_admin: String,
    },
    /// An ldirectord.cf (names from /etc/hosts and /etc/services).
    Ldirectord {
        /// The configuration file.
        file: PathBuf,
    },
}

fn init_logs(level: tracing::Level, format: LogFormat) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rvs")
        .build()
}

/// Whether this process was started as `rvsadm`: the container image has
/// one binary, and rvsadm as a link to it.
fn called_as_rvsadm() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n == "rvsadm"))
        .unwrap_or(false)
}

fn main() -> ExitCode {
    if called_as_rvsadm() {
        return rvs::ipvsadm::main_from_env();
    }
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::SchedReplay { trace } => sched_replay(trace),
        Cmd::Check { config } => daemon::check(&config),
        Cmd::ShowConfig { admin, token } => show_config(admin, token),
        Cmd::Ready { admin, timeout } => ready(admin, timeout),
        Cmd::Manual { page } => {
            let text = match page {
                Page::Rvs => rvs::manual::rvs_page(&<Cli as clap::CommandFactory>::command()),
                Page::Rvsadm => rvs::manual::rvsadm_page(&rvs::completions::rvsadm_command()),
                Page::RvsYaml => rvs::manual::yaml_page(),
            };
            print!("{text}");
            ExitCode::SUCCESS
        }
        Cmd::Completions { shell, command } => {
            let (mut cmd, name) = match command {
                Which::Rvs => (<Cli as clap::CommandFactory>::command(), "rvs"),
                Which::Rvsadm => (rvs::completions::rvsadm_command(), "rvsadm"),
            };
            clap_complete::generate(shell, &mut cmd, name, &mut io::stdout());
            ExitCode::SUCCESS
        }
        Cmd::Import { from } => import(from),
        Cmd::Run {
            config,
            forwarding,
            workers,
            balance_workers,
            pid_file,
        } => {
            init_logs(cli.log_level, cli.log_format);
            rvs_proxy::memory::tune();
            // Before the runtime opens a descriptor: see `systemd`.
            let upgrade_from = rvs_proxy::handover::from_env();
            let inherited = match systemd::passed_sockets() {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("rvs: socket activation: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let options = Options {
                forwarding: match forwarding {
                    Forwarding::Auto => Mode::Auto,
                    Forwarding::Splice => Mode::Splice,
                    Forwarding::Copy => Mode::Copy,
                },
                workers: workers.unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
                }),
                balance_workers,
            };
            match runtime() {
                Ok(rt) => rt.block_on(daemon::run(
                    &config,
                    options,
                    inherited,
                    systemd::Notifier::from_env(),
                    daemon::Process {
                        pid_file,
                        upgrade_from,
                        // The path as started, resolved now: SIGUSR2 runs
                        // what is found there then (a new binary).
                        exe: std::env::args_os()
                            .next()
                            .map(std::path::PathBuf::from)
                            .filter(|p| p.components().count() > 1)
                            .and_then(|p| std::path::absolute(p).ok())
                            .or_else(|| std::env::current_exe().ok()),
                        args: std::env::args_os().skip(1).collect(),
                    },
                )),
                Err(e) => {
                    eprintln!("rvs: cannot start the runtime: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Demo {
            listen,
            admin,
            scheduler,
        } => {
            init_logs(cli.log_level, cli.log_format);
            let result = runtime()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(demo::run(listen, admin, &scheduler)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rvs demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn import(from: ImportFrom) -> ExitCode {
    use rvs::import;
    let marks = |given: &[String]| -> Result<import::Marks, String> {
        let mut m = import::Marks::default();
        for g in given {
            m.add(g)?;
        }
        Ok(m)
    };
    let given = match &from {
        ImportFrom::Ipvsadm { fwmark, .. } | ImportFrom::Keepalived { fwmark, .. } => marks(fwmark),
        ImportFrom::Ldirectord { .. } => Ok(import::Marks::default()),
    };
    let marks = match given {
        Ok(m) => m,
        Err(e) => {
            eprintln!("rvs import: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match &from {
        ImportFrom::Ipvsadm { file, .. } => {
            let name = file.display().to_string();
            let text = if name == "-" {
                let mut t = String::new();
                io::Read::read_to_string(&mut io::stdin(), &mut t).map(|_| t)
            } else {
                std::fs::read_to_string(file)
            };
            text.map_err(|error| import::ImportError::Read {
                file: name.clone(),
                error,
            })
            .and_then(|t| {
                import::ipvsadm::import_marked(
                    &t,
                    &name,
                    &rvs::ipvsadm::names::Names::system(),
                    &marks,
                )
            })
        }
        ImportFrom::Keepalived {
            file,
            config_id,
            vrrp_out,
            ..
        } => {
            let id = config_id
                .clone()
                .unwrap_or_else(import::keepalived::default_config_id);
            let out = vrrp_out.as_ref().map(|p| p.display().to_string());
            import::keepalived::import_marked(file, &id, out.as_deref(), &marks)
        }
        ImportFrom::Ldirectord { file } => {
            import::ldirectord::import(file, &rvs::ipvsadm::names::Names::system())
        }
    };
    let yaml = result.and_then(|imp| {
        for n in imp.all_notes() {
            eprintln!("{}:{}: warning: {}", n.file, n.line, n.text);
        }
        imp.render()
    });
    // The VRRP part, once the YAML checks.
    let yaml = yaml.and_then(|y| {
        if let ImportFrom::Keepalived {
            file,
            config_id,
            vrrp_out: Some(out),
            rvs_binary,
            ready_admin,
            ..
        } = &from
        {
            let id = config_id
                .clone()
                .unwrap_or_else(import::keepalived::default_config_id);
            let probe = import::vrrp::Probe {
                rvs: rvs_binary.clone(),
                admin: ready_admin.clone(),
            };
            let v = import::vrrp::vrrp_config(file, &id, &probe)?;
            std::fs::write(out, &v.text).map_err(|error| import::ImportError::Read {
                file: out.display().to_string(),
                error,
            })?;
            eprintln!(
                "rvs import: wrote {}: keepalived keeps VRRP ({}), tracking `rvs ready`; run it with --vrrp",
                out.display(),
                if v.instances.is_empty() {
                    "no vrrp_instance".to_owned()
                } else {
                    v.instances.join(", ")
                }
            );
        }
        Ok(y)
    });
    match yaml {
        Ok(y) => {
            print!("{y}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rvs import: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ready(admin: Option<String>, timeout: f64) -> ExitCode {
    let timeout = std::time::Duration::try_from_secs_f64(timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .unwrap_or(std::time::Duration::from_secs(2));
    let client = rvs::admin_client::AdminClient::from_env(admin, None).with_timeout(timeout);
    match client.request("GET", "/readyz", None) {
        Ok(r) if r.ok() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("rvs ready: not serving: {}", r.text().trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("rvs ready: {e}");
            ExitCode::FAILURE
        }
    }
}

fn show_config(admin: Option<String>, token: Option<String>) -> ExitCode {
    let client = rvs::admin_client::AdminClient::from_env(admin, token);
    match client.request("GET", "/api/v1/config", None) {
        Ok(r) if r.ok() => {
            let mut out = io::stdout().lock();
            match out.write_all(&r.body).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rvs show-config: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(r) => {
            eprintln!("rvs show-config: {}: {}", client.target, r.error().1);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("rvs show-config: cannot reach rvs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sched_replay(trace: Option<PathBuf>) -> ExitCode {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = match trace.filter(|p| p.as_os_str() != "-") {
        None => rvs::replay::replay(io::stdin().lock(), &mut out),
        Some(path) => match File::open(&path) {
            Ok(f) => rvs::replay::replay(BufReader::new(f), &mut out),
            Err(e) => {
                eprintln!("rvs sched-replay: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let flushed = out.flush();
    match (result, flushed) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(e), _) => {
            eprintln!("rvs sched-replay: {e}");
            ExitCode::from(2)
        }
        (Ok(()), Err(e)) => {
            eprintln!("rvs sched-replay: writing the decisions: {e}");
            ExitCode::from(2)
        }
    }
}
