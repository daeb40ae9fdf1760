//! Health checks that speak the protocol, against the real daemons of
//! Debian's packages (installed by tests/run): OpenSMTPD, Dovecot (POP3,
//! IMAP), vsftpd, OpenLDAP's slapd, MariaDB, PostgreSQL, Kamailio (SIP over
//! UDP and TCP) and FreeRADIUS. Each test runs `rvs run` with one service
//! whose real servers are the daemon, a mute server (it accepts, or reads
//! datagrams, and says nothing) and a wrong one (another daemon, speaking
//! another protocol): the daemon alone passes and takes the traffic sent
//! through the VIP; the other two are down, each for its own reason.
//!
//! The daemons are started once for the test binary, in parallel, each on
//! its own ports and in its own directory; a watchdog kills them and
//! removes the directory when the test process is gone, however it ends.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Running, free_port, http_get, temp_dir, wait_for};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

const USER: &str = "monitor";
const PASSWORD: &str = "s3cret";
/// FreeRADIUS's Debian configuration shares this with localhost.
const RADIUS_SECRET: &str = "testing123";

/// The daemons of this test binary.
struct Daemons {
    smtp: SocketAddr,
    pop: SocketAddr,
    imap: SocketAddr,
    ftp: SocketAddr,
    ldap: SocketAddr,
    mysql: SocketAddr,
    pgsql: SocketAddr,
    /// UDP and TCP, the same port.
    sip: SocketAddr,
    /// UDP.
    radius: SocketAddr,
}

/// The daemons, started by the first test that asks; a failure to start
/// them fails every test that needs them, with the same reason (and
/// starts nothing twice).
fn daemons() -> &'static Daemons {
    static D: OnceLock<Result<Daemons, String>> = OnceLock::new();
    let started = D.get_or_init(|| {
        std::panic::catch_unwind(start_daemons).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        })
    });
    match started {
        Ok(d) => d,
        Err(e) => panic!("the daemons did not start: {e}"),
    }
}

/// Starts `cmd` in its own process group, killed by the watchdog with the
/// others; its output goes to `dir/name.log`.
fn spawn(dir: &Path, name: &str, cmd: &mut Command) {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e:?} (tests/run installs it)"));
    let pid = child.id();
    // Reaped when it ends (the watchdog ends it).
    thread::spawn(move || child.wait());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("groups"))
        .unwrap();
    writeln!(f, "{pid}").unwrap();
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

fn listening(at: SocketAddr) -> bool {
    TcpStream::connect_timeout(&at, Duration::from_millis(200)).is_ok()
}

fn must(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        common::output_text(&out)
    );
}

fn write(path: PathBuf, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn start_daemons() -> Daemons {
    let dir = temp_dir("protocol-daemons");
    std::fs::write(dir.join("groups"), "").unwrap();
    // The watchdog: when this process is gone, every group goes, and the
    // directory.
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; for g in $(cat '{d}/groups'); do kill -9 -$g 2>/dev/null; done; sleep 1; rm -rf '{d}'",
            pid = std::process::id(),
            d = dir.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    thread::spawn(move || watchdog.wait());
    let ports: Vec<SocketAddr> = (0..9).map(|_| free_port()).collect();
    let d = Daemons {
        smtp: ports[0],
        pop: ports[1],
        imap: ports[2],
        ftp: ports[3],
        ldap: ports[4],
        mysql: ports[5],
        pgsql: ports[6],
        sip: ports[7],
        radius: ports[8],
    };
    thread::scope(|s| {
        s.spawn(|| opensmtpd(&dir, d.smtp));
        s.spawn(|| dovecot(&dir, d.pop, d.imap));
        s.spawn(|| vsftpd(&dir, d.ftp));
        s.spawn(|| slapd(&dir, d.ldap));
        s.spawn(|| mariadb(&dir, d.mysql));
        s.spawn(|| postgresql(&dir, d.pgsql));
        s.spawn(|| kamailio(&dir, d.sip));
        s.spawn(|| freeradius(&dir, d.radius));
    });
    d
}

fn opensmtpd(dir: &Path, at: SocketAddr) {
    let conf = dir.join("smtpd.conf");
    write(
        conf.clone(),
        &format!(
            "listen on {} port {}\naction \"deliver\" mbox\nmatch from any for local action \"deliver\"\n",
            at.ip(),
            at.port()
        ),
    );
    // OpenSMTPD's control socket is at a fixed place in /run, where the
    // machine's own smtpd may be: this one gets a /run of its own.
    spawn(
        dir,
        "smtpd",
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs tmpfs /run && exec smtpd -d -f \"$0\"")
            .arg(&conf),
    );
    assert!(
        wait_for(Duration::from_secs(30), || listening(at)),
        "OpenSMTPD: {}",
        log_of(dir, "smtpd")
    );
}

fn dovecot(dir: &Path, pop: SocketAddr, imap: SocketAddr) {
    let d = dir.join("dovecot");
    for sub in ["run", "mail", "home"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    // The mail user (nobody) writes its mail and home.
    must(
        Command::new("chmod")
            .arg("0777")
            .arg(d.join("mail"))
            .arg(d.join("home")),
    );
    write(d.join("users"), &format!("{USER}:{{PLAIN}}{PASSWORD}\n"));
    let conf = d.join("dovecot.conf");
    write(
        conf.clone(),
        &format!(
            r#"base_dir = {d}/run
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {d}/dovecot.log
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%u
}}
mail_location = maildir:{d}/mail/%u
# No brute-force penalty for the refused logins the tests make on
# purpose: it grows per address, from 2 s to 15 s, past the checks'
# timeout.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"#,
            d = d.display(),
            imap = imap.port(),
            pop = pop.port()
        ),
    );
    spawn(
        dir,
        "dovecot",
        Command::new("dovecot").arg("-F").arg("-c").arg(&conf),
    );
    assert!(
        wait_for(Duration::from_secs(30), || listening(pop)
            && listening(imap)),
        "Dovecot: {} {}",
        log_of(dir, "dovecot"),
        std::fs::read_to_string(d.join("dovecot.log")).unwrap_or_default()
    );
}

fn vsftpd(dir: &Path, at: SocketAddr) {
    let d = dir.join("ftp");
    let root = d.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(d.join("empty")).unwrap();
    write(root.join("health.txt"), "rvs-alive\n");
    let conf = d.join("vsftpd.conf");
    write(
        conf.clone(),
        &format!(
            "listen=YES\nlisten_ipv6=NO\nlisten_address={}\nlisten_port={}\nanonymous_enable=YES\nanon_root={}\nlocal_enable=NO\nwrite_enable=NO\nbackground=NO\nseccomp_sandbox=NO\nsecure_chroot_dir={}\nxferlog_enable=NO\n",
            at.ip(),
            at.port(),
            root.display(),
            d.join("empty").display()
        ),
    );
    spawn(dir, "vsftpd", Command::new("vsftpd").arg(&conf));
    assert!(
        wait_for(Duration::from_secs(30), || listening(at)),
        "vsftpd: {}",
        log_of(dir, "vsftpd")
    );
}

fn slapd(dir: &Path, at: SocketAddr) {
    let d = dir.join("ldap");
    std::fs::create_dir_all(d.join("db")).unwrap();
    let conf = d.join("slapd.conf");
    write(
        conf.clone(),
        &format!(
            "include /etc/ldap/schema/core.schema\npidfile {d}/slapd.pid\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\ndatabase mdb\nsuffix \"dc=rvs,dc=test\"\nrootdn \"cn=admin,dc=rvs,dc=test\"\nrootpw {PASSWORD}\ndirectory {d}/db\n",
            d = d.display()
        ),
    );
    write(
        d.join("base.ldif"),
        "dn: dc=rvs,dc=test\nobjectClass: dcObject\nobjectClass: organization\ndc: rvs\no: rvs\n",
    );
    must(
        Command::new("slapadd")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(d.join("base.ldif")),
    );
    spawn(
        dir,
        "slapd",
        Command::new("slapd")
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(format!("ldap://{at}/"))
            .args(["-d", "0"]),
    );
    assert!(
        wait_for(Duration::from_secs(30), || listening(at)),
        "slapd: {}",
        log_of(dir, "slapd")
    );
}

fn mariadb(dir: &Path, at: SocketAddr) {
    let d = dir.join("mysql");
    let data = d.join("data");
    std::fs::create_dir_all(&d).unwrap();
    must(
        Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ]),
    );
    let sock = d.join("mysql.sock");
    spawn(
        dir,
        "mariadb",
        Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--port={}", at.port()))
            .arg(format!("--bind-address={}", at.ip()))
            .args([
                "--user=root",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
            ]),
    );
    assert!(
        wait_for(Duration::from_secs(60), || listening(at)),
        "MariaDB: {}",
        log_of(dir, "mariadb")
    );
    must(
        Command::new("mariadb")
            .arg("-S")
            .arg(&sock)
            .args(["-u", "root", "-e"])
            .arg(format!(
                "CREATE USER {USER}@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; CREATE DATABASE health; CREATE TABLE health.up (ok int); INSERT INTO health.up VALUES (1); CREATE TABLE health.empty (ok int); GRANT SELECT ON health.* TO {USER}@'127.0.0.1';"
            )),
    );
}

fn postgresql(dir: &Path, at: SocketAddr) {
    let d = dir.join("pg");
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL (tests/run installs it)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .max()
        .unwrap();
    std::fs::create_dir_all(d.join("sock")).unwrap();
    must(Command::new("chown").args(["-R", "postgres"]).arg(&d));
    must(
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(d.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
            ]),
    );
    spawn(
        dir,
        "postgres",
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(d.join("data"))
            .arg("-p")
            .arg(at.port().to_string())
            .arg("-k")
            .arg(d.join("sock"))
            .arg("-c")
            .arg(format!("listen_addresses={}", at.ip())),
    );
    assert!(
        wait_for(Duration::from_secs(60), || listening(at)),
        "PostgreSQL: {}",
        log_of(dir, "postgres")
    );
    let psql = |sql: &str| {
        // The server may listen before it takes connections.
        wait_for(Duration::from_secs(30), || {
            Command::new("psql")
                .arg("-h")
                .arg(d.join("sock"))
                .args(["-p", &at.port().to_string(), "-U", "postgres", "-c", sql])
                .output()
                .is_ok_and(|o| o.status.success())
        })
    };
    assert!(
        psql(&format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")),
        "PostgreSQL: creating the role: {}",
        log_of(dir, "postgres")
    );
}

fn kamailio(dir: &Path, at: SocketAddr) {
    let d = dir.join("sip");
    std::fs::create_dir_all(&d).unwrap();
    // Under the multiarch directory (/usr/lib/x86_64-linux-gnu/…), or not.
    let modules = std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("kamailio/modules"))
        .chain([PathBuf::from("/usr/lib/kamailio/modules")])
        .find(|m| m.join("sl.so").exists())
        .expect("Kamailio's modules (tests/run installs kamailio)");
    let modules = modules.display();
    let conf = d.join("kamailio.cfg");
    write(
        conf.clone(),
        &format!(
            r#"#!KAMAILIO
debug=1
log_stderror=yes
children=1
tcp_children=1
disable_sctp=yes
auto_aliases=no
listen=udp:{at}
listen=tcp:{at}
mpath="{modules}/"
loadmodule "sl.so"
loadmodule "textops.so"
request_route {{
    if (is_method("OPTIONS")) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    sl_send_reply("501", "Not Implemented");
}}
"#
        ),
    );
    spawn(
        dir,
        "kamailio",
        Command::new("kamailio")
            .arg("-f")
            .arg(&conf)
            .args(["-DD", "-E", "-P"])
            .arg(d.join("kamailio.pid"))
            .arg("-Y")
            .arg(&d),
    );
    assert!(
        wait_for(Duration::from_secs(30), || listening(at)),
        "Kamailio: {}",
        log_of(dir, "kamailio")
    );
}

fn freeradius(dir: &Path, at: SocketAddr) {
    spawn(
        dir,
        "freeradius",
        Command::new("freeradius")
            .args(["-f", "-l", "stdout", "-i"])
            .arg(at.ip().to_string())
            .arg("-p")
            .arg(at.port().to_string()),
    );
    assert!(
        wait_for(Duration::from_secs(60), || log_of(dir, "freeradius")
            .contains("Ready to process requests")),
        "FreeRADIUS: {}",
        log_of(dir, "freeradius")
    );
}

/// A UDP port that reads datagrams and never answers.
fn mute_udp() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = s.local_addr().unwrap();
    thread::spawn(move || {
        let mut b = [0u8; 2048];
        while s.recv(&mut b).is_ok() {}
    });
    at
}

/// What a case runs: the check, the servers, and what each must show.
struct Case<'a> {
    tag: &'a str,
    udp: bool,
    /// The check's keys (a YAML flow mapping's inside, after `type`).
    check: &'a str,
    real: SocketAddr,
    wrong: SocketAddr,
    /// In the wrong server's reason.
    wrong_says: &'a str,
    /// One exchange with the real daemon through the VIP.
    traffic: &'a dyn Fn(SocketAddr),
}

fn real_servers(svc: &serde_json::Value) -> Vec<serde_json::Value> {
    svc["real_servers"].as_array().cloned().unwrap_or_default()
}

fn server(list: &[serde_json::Value], at: SocketAddr) -> Option<&serde_json::Value> {
    list.iter().find(|r| r["address"] == at.to_string())
}

fn run(case: &Case) {
    let mute = if case.udp {
        mute_udp()
    } else {
        common::holding_backend()
    };
    let vip = free_port();
    let admin = free_port();
    let yaml = format!(
        "admin:\n  listen: {admin}\nservices:\n  - name: {tag}\n    listen: {vip}\n    proto: {proto}\n    scheduler: rr\n    alpha: true\n    health_check: {{{check}, delay_loop: 1s, connect_timeout: 3s, retry: 0}}\n    real_servers:\n      - address: {real}\n      - address: {mute}\n      - address: {wrong}\n",
        tag = case.tag,
        proto = if case.udp { "udp" } else { "tcp" },
        check = case.check,
        real = case.real,
        wrong = case.wrong,
    );
    let rvs = Running::start(case.tag, &yaml, admin);
    let path = format!("/api/v1/services/{}", case.tag);
    let state = || -> Vec<serde_json::Value> {
        http_get(admin, &path)
            .and_then(|(_, b)| serde_json::from_str(&b).ok())
            .map(|v: serde_json::Value| real_servers(&v))
            .unwrap_or_default()
    };
    // Every server checked at least once: the daemon up, the others down.
    let settled = |list: &[serde_json::Value]| {
        [case.real, mute, case.wrong].iter().all(|a| {
            server(list, *a).is_some_and(|r| r["health"]["checks_run"].as_u64() >= Some(1))
        }) && server(list, case.real).is_some_and(|r| r["health"]["up"] == true)
    };
    assert!(
        wait_for(Duration::from_secs(30), || settled(&state())),
        "{}: the checks did not settle: {:#?}\n{}",
        case.tag,
        state(),
        rvs.log()
    );
    let list = state();
    let reason = |a: SocketAddr| {
        let r = server(&list, a).unwrap();
        assert_eq!(r["health"]["up"], false, "{}: {a} is up: {r:#}", case.tag);
        r["health"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let mute_reason = reason(mute);
    assert!(
        mute_reason.contains("no answer in"),
        "{}: the mute server: {mute_reason}",
        case.tag
    );
    let wrong_reason = reason(case.wrong);
    assert!(
        wrong_reason.contains(case.wrong_says),
        "{}: the wrong server: {wrong_reason} (wanted {:?})",
        case.tag,
        case.wrong_says
    );
    // The traffic: all of it to the daemon.
    for _ in 0..4 {
        (case.traffic)(vip);
    }
    let list = state();
    let conns =
        |a: SocketAddr| server(&list, a).map_or(0, |r| r["stats"]["conns"].as_u64().unwrap_or(0));
    assert!(conns(case.real) >= 4, "{}: {list:#?}", case.tag);
    assert_eq!(
        conns(mute) + conns(case.wrong),
        0,
        "{}: {list:#?}",
        case.tag
    );
    common::report(&format!(
        "{}: mute: {mute_reason}; wrong: {wrong_reason}",
        case.tag
    ));
}

/// The first line a server-first daemon says through `vip`.
fn greeting(vip: SocketAddr) -> String {
    let mut s = TcpStream::connect(vip).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 512];
    let n = s.read(&mut b).unwrap();
    String::from_utf8_lossy(&b[..n]).into_owned()
}

fn greets(want: &'static str) -> impl Fn(SocketAddr) {
    move |vip| {
        let g = greeting(vip);
        assert!(g.contains(want), "through the VIP: {g:?}, not {want:?}");
    }
}

#[test]
fn smtp_greeting_and_helo() {
    let d = daemons();
    run(&Case {
        tag: "smtp",
        udp: false,
        check: "type: smtp, helo_name: checker.rvs.test",
        real: d.smtp,
        wrong: d.pop,
        wrong_says: "not a reply line",
        traffic: &greets("OpenSMTPD"),
    });
}

#[test]
fn pop_login() {
    let d = daemons();
    run(&Case {
        tag: "pop",
        udp: false,
        check: &format!("type: pop, login: {USER}, password: {PASSWORD}"),
        real: d.pop,
        wrong: d.imap,
        wrong_says: "not a POP3 greeting",
        traffic: &greets("+OK Dovecot"),
    });
}

#[test]
fn imap_login() {
    let d = daemons();
    run(&Case {
        tag: "imap",
        udp: false,
        check: &format!("type: imap, login: {USER}, password: {PASSWORD}"),
        real: d.imap,
        wrong: d.pop,
        wrong_says: "not an IMAP greeting",
        traffic: &greets("* OK"),
    });
}

/// A service whose one real server is the daemon, checked in a way it
/// must fail: down, for `says`.
fn down_for(tag: &str, check: &str, server: SocketAddr, says: &str) {
    let admin = free_port();
    let vip = free_port();
    let yaml = format!(
        "admin:\n  listen: {admin}\nservices:\n  - name: {tag}\n    listen: {vip}\n    alpha: true\n    health_check: {{{check}, delay_loop: 1s, connect_timeout: 5s, retry: 0}}\n    real_servers:\n      - address: {server}\n"
    );
    let rvs = Running::start(tag, &yaml, admin);
    let path = format!("/api/v1/services/{tag}");
    let reason = || {
        http_get(admin, &path)
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                real_servers(&v)
                    .first()
                    .and_then(|r| r["health"]["reason"].as_str().map(str::to_owned))
            })
    };
    assert!(
        wait_for(Duration::from_secs(30), || reason()
            .is_some_and(|r| r.contains(says))),
        "{tag}: {:?}, not {says:?}\n{}",
        reason(),
        rvs.log()
    );
    common::report(&format!("{tag}: {}", reason().unwrap_or_default()));
}

#[test]
fn a_refused_login_or_an_empty_answer_fails() {
    let d = daemons();
    let wrong = format!("login: {USER}, password: not-{PASSWORD}");
    thread::scope(|s| {
        s.spawn(|| {
            down_for(
                "imap-refused",
                &format!("type: imap, {wrong}"),
                d.imap,
                "the login is refused",
            )
        });
        s.spawn(|| {
            down_for(
                "pop-refused",
                &format!("type: pop, {wrong}"),
                d.pop,
                "the login is refused",
            )
        });
        s.spawn(|| {
            down_for(
                "ldap-refused",
                "type: ldap, login: \"cn=admin,dc=rvs,dc=test\", password: wrong",
                d.ldap,
                "the bind is refused: result 49",
            )
        });
        s.spawn(|| {
            down_for(
                "pgsql-refused",
                &format!("type: pgsql, {wrong}"),
                d.pgsql,
                "password authentication failed",
            )
        });
        s.spawn(|| {
            down_for(
                "mysql-refused",
                &format!("type: mysql, {wrong}"),
                d.mysql,
                "Access denied",
            )
        });
        s.spawn(|| down_for(
            "mysql-no-rows",
            &format!("type: mysql, login: {USER}, password: {PASSWORD}, database: health, query: \"SELECT ok FROM empty\""),
            d.mysql,
            "returned no rows",
        ));
        s.spawn(|| down_for(
            "pgsql-bad-query",
            &format!("type: pgsql, login: {USER}, password: {PASSWORD}, database: postgres, query: \"SELECT * FROM no_such_table\""),
            d.pgsql,
            "the query failed",
        ));
        s.spawn(|| {
            down_for(
                "ftp-missing-file",
                "type: ftp, path: /nothing-here.txt",
                d.ftp,
                "is refused",
            )
        });
        s.spawn(|| {
            down_for(
                "ftp-wrong-content",
                "type: ftp, path: /health.txt, expect_body: \"^dead\"",
                d.ftp,
                "does not match expect_body",
            )
        });
        s.spawn(|| {
            down_for(
                "ldap-missing-base",
                "type: ldap, base: \"dc=nowhere,dc=test\"",
                d.ldap,
                "failed: result 32",
            )
        });
        s.spawn(|| {
            down_for(
                "radius-wrong-secret",
                &format!("type: radius, secret: not-{RADIUS_SECRET}, login: {USER}, password: x"),
                d.radius,
                "no answer in",
            )
        });
    });
}

#[test]
fn ftp_anonymous_file() {
    let d = daemons();
    let want = "220 (vsFTPd";
    run(&Case {
        tag: "ftp",
        udp: false,
        check: "type: ftp, path: /health.txt, expect_body: \"^rvs-alive\"",
        real: d.ftp,
        wrong: d.smtp,
        wrong_says: "the login is refused",
        traffic: &greets(want),
    });
}

#[test]
fn ldap_bind_and_base_search() {
    let d = daemons();
    run(&Case {
        tag: "ldap",
        udp: false,
        check: &format!(
            "type: ldap, login: \"cn=admin,dc=rvs,dc=test\", password: {PASSWORD}, base: \"dc=rvs,dc=test\", expect_dn: \"^dc=rvs\""
        ),
        real: d.ldap,
        wrong: d.imap,
        wrong_says: "not an LDAP message",
        traffic: &|vip| {
            // An anonymous bind through the VIP, answered by slapd.
            let mut s = TcpStream::connect(vip).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&[
                0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00,
            ])
            .unwrap();
            let mut b = [0u8; 64];
            let n = s.read(&mut b).unwrap();
            assert!(n > 7 && b[0] == 0x30 && b[5] == 0x61, "{:?}", &b[..n]);
        },
    });
}

#[test]
fn mysql_login_and_query() {
    let d = daemons();
    run(&Case {
        tag: "mysql",
        udp: false,
        check: &format!(
            "type: mysql, login: {USER}, password: {PASSWORD}, database: health, query: \"SELECT ok FROM up\""
        ),
        real: d.mysql,
        wrong: d.smtp,
        wrong_says: "not a MySQL handshake",
        traffic: &greets("MariaDB"),
    });
}

#[test]
fn pgsql_scram_login_and_query() {
    let d = daemons();
    run(&Case {
        tag: "pgsql",
        udp: false,
        check: &format!(
            "type: pgsql, login: {USER}, password: {PASSWORD}, database: postgres, query: \"SELECT 1\""
        ),
        real: d.pgsql,
        wrong: d.mysql,
        wrong_says: "not a PostgreSQL",
        traffic: &|vip| {
            // An SSLRequest through the VIP: PostgreSQL answers N or S.
            let mut s = TcpStream::connect(vip).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]).unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            assert!(b[0] == b'N' || b[0] == b'S', "{b:?}");
        },
    });
}

/// OPTIONS through the VIP over UDP, answered 200 by Kamailio.
fn sip_options_udp(vip: SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let me = s.local_addr().unwrap();
    let req = format!(
        "OPTIONS sip:{vip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{p}x;rport\r\nMax-Forwards: 70\r\nTo: <sip:{vip}>\r\nFrom: <sip:t@{me}>;tag={p}\r\nCall-ID: {p}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        p = me.port()
    );
    s.send_to(req.as_bytes(), vip).unwrap();
    let mut b = [0u8; 4096];
    let n = s.recv(&mut b).unwrap();
    assert!(
        b[..n].starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&b[..n])
    );
}

#[test]
fn sip_options_over_udp() {
    let d = daemons();
    run(&Case {
        tag: "sip-udp",
        udp: true,
        check: "type: sip",
        real: d.sip,
        wrong: d.radius,
        wrong_says: "no answer in",
        traffic: &sip_options_udp,
    });
}

#[test]
fn sip_options_over_tcp() {
    let d = daemons();
    run(&Case {
        tag: "sip-tcp",
        udp: false,
        check: "type: sip, transport: tcp",
        real: d.sip,
        wrong: d.smtp,
        wrong_says: "not a SIP answer",
        traffic: &|vip| {
            let mut s = TcpStream::connect(vip).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let me = s.local_addr().unwrap();
            let req = format!(
                "OPTIONS sip:{vip} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK{p}t\r\nMax-Forwards: 70\r\nTo: <sip:{vip}>\r\nFrom: <sip:t@{me}>;tag={p}\r\nCall-ID: {p}@tcp\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                p = me.port()
            );
            s.write_all(req.as_bytes()).unwrap();
            let mut b = [0u8; 12];
            s.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"SIP/2.0 200 ");
        },
    });
}

#[test]
fn radius_access_request() {
    let d = daemons();
    run(&Case {
        tag: "radius",
        udp: true,
        check: &format!(
            "type: radius, secret: {RADIUS_SECRET}, login: {USER}, password: {PASSWORD}"
        ),
        real: d.radius,
        wrong: d.sip,
        wrong_says: "no answer in",
        traffic: &|vip| {
            // Status-Server (RFC 5997) through the VIP: FreeRADIUS
            // answers any packet signed with its secret; an unsigned one
            // is dropped, so the answer proves the way.
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let ra = [7u8; 16];
            let mut p = vec![1u8, 42, 0, 0];
            p.extend_from_slice(&ra);
            p.extend_from_slice(&[1, 9]);
            p.extend_from_slice(USER.as_bytes());
            p.extend_from_slice(&[2, 18]);
            // User-Password hidden as RFC 2865 says, one block.
            let key = md5_of(&[RADIUS_SECRET.as_bytes(), &ra].concat());
            let mut pw = [0u8; 16];
            pw[..PASSWORD.len()].copy_from_slice(PASSWORD.as_bytes());
            p.extend(pw.iter().zip(key).map(|(a, b)| a ^ b));
            p.extend_from_slice(&[32, 6, b't', b'e', b's', b't']);
            let len = p.len() as u16;
            p[2..4].copy_from_slice(&len.to_be_bytes());
            s.send_to(&p, vip).unwrap();
            let mut b = [0u8; 4096];
            let n = s.recv(&mut b).unwrap();
            assert!(
                n >= 20 && b[1] == 42 && (b[0] == 2 || b[0] == 3),
                "{:?}",
                &b[..n]
            );
        },
    });
}

fn md5_of(data: &[u8]) -> [u8; 16] {
    let out = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    let hex = String::from_utf8_lossy(&out.stdout);
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    b
}
