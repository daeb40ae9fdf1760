//! `rvs import keepalived FILE`: keepalived.conf's LVS part as rvs's YAML.
//!
//! The file is read as keepalived reads it: `#` and `!` comments, quoted
//! strings, `{ }` blocks, `include` (globs, relative to the including
//! file), conditional lines (`@id`, `@^id`, against the config id: the
//! host name's first part unless given) and `$PARAMETER` substitution.
//!
//! `virtual_server` (an address and port, or a `virtual_server_group`)
//! becomes a service; `real_server` a real server; the checkers
//! (TCP_CHECK, HTTP_GET, MISC_CHECK, DNS_CHECK, UDP_CHECK) rvs's health
//! checks, with keepalived's values written out (its defaults differ from
//! rvs's: delay_loop 60 s, connect_timeout 5 s). Everything else is noted:
//! forwarding methods (rvs is FULLNAT), VRRP (not rvs's job), notification
//! mail and scripts, firewall marks, checkers rvs does not have.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_yaml::{Mapping, Value};

use super::{
    ImportError, Imported, Note, Service, insert_flags, insert_servers, key, n, s, sched_flag,
    unique_name,
};

/// One line after includes, conditions and substitution.
#[derive(Clone, Debug)]
struct Line {
    file: Arc<str>,
    line: usize,
    text: String,
}

/// A statement: a keyword, its arguments, and its block if it has one.
#[derive(Clone, Debug)]
pub(super) struct Node {
    pub(super) kw: String,
    pub(super) args: Vec<String>,
    pub(super) children: Option<Vec<Node>>,
    /// Shared by every statement of the file.
    pub(super) file: Arc<str>,
    pub(super) line: usize,
}

impl Node {
    fn note(&self, text: impl Into<String>) -> Note {
        Note {
            file: self.file.to_string(),
            line: self.line,
            text: text.into(),
        }
    }

    fn children(&self) -> &[Node] {
        self.children.as_deref().unwrap_or(&[])
    }

    fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(String::as_str)
    }

    fn syntax(&self, reason: impl Into<String>) -> ImportError {
        ImportError::Syntax {
            file: self.file.to_string(),
            line: self.line,
            reason: reason.into(),
        }
    }
}

/// The config id keepalived would use here: the host name's first part.
pub fn default_config_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default()
        .trim()
        .split('.')
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Reads keepalived.conf at `path` for this host's config id.
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    import_with(path, &default_config_id())
}

/// Reads keepalived.conf at `path` for `config_id`.
pub fn import_with(path: &Path, config_id: &str) -> Result<Imported, ImportError> {
    import_keeping_vrrp(path, config_id, None)
}

/// As `import_with`; with `vrrp_out`, the notes say that the VRRP part is
/// kept for keepalived in that file (`super::vrrp` writes it).
pub fn import_keeping_vrrp(
    path: &Path,
    config_id: &str,
    vrrp_out: Option<&str>,
) -> Result<Imported, ImportError> {
    import_marked(path, config_id, vrrp_out, &super::Marks::default())
}

/// As [`import_keeping_vrrp`], with the addresses each firewall mark
/// covers: a `virtual_server fwmark N` of a mark given becomes a service
/// listening on them whose persistence covers them all.
pub fn import_marked(
    path: &Path,
    config_id: &str,
    vrrp_out: Option<&str>,
    marks: &super::Marks,
) -> Result<Imported, ImportError> {
    let mut read = lines_of(path, config_id)?;
    let lines = std::mem::take(&mut read.lines);
    let mut imp = Imported {
        source: format!("{} (keepalived)", path.display()),
        notes: read.notes,
        ..Imported::default()
    };
    Converter {
        vrrp_out: vrrp_out.map(str::to_owned),
        marks: marks.clone(),
        ..Converter::default()
    }
    .convert(&lines, &mut imp)?;
    Ok(imp)
}

/// Reads `text` as the content of `file` (for tests and standard input).
pub fn import_text(text: &str, file: &str, config_id: &str) -> Result<Imported, ImportError> {
    let mut params = HashMap::new();
    let mut read = Read::default();
    read_text(
        text,
        file,
        Path::new("."),
        config_id,
        &mut params,
        &mut read,
        0,
    )?;
    let lines = std::mem::take(&mut read.lines);
    let mut imp = Imported {
        source: format!("{file} (keepalived)"),
        notes: read.notes,
        ..Imported::default()
    };
    Converter::default().convert(&lines, &mut imp)?;
    Ok(imp)
}

/// The file's statements, includes expanded, conditions applied,
/// parameters substituted; with what the reading itself noticed.
pub(super) fn statements(path: &Path, config_id: &str) -> Result<(Vec<Node>, Read), ImportError> {
    let mut read = lines_of(path, config_id)?;
    let lines = std::mem::take(&mut read.lines);
    let nodes = parse(&lines)?;
    Ok((nodes, read))
}

/// The file's lines, includes expanded, conditions applied, parameters
/// substituted; with what the reading itself noticed.
fn lines_of(path: &Path, config_id: &str) -> Result<Read, ImportError> {
    let mut params: HashMap<String, String> = HashMap::new();
    let mut read = Read::default();
    read_file(path, config_id, &mut params, &mut read, 0)?;
    Ok(read)
}

const MAX_INCLUDE_DEPTH: usize = 16;

/// What reading the files gives: their lines, with includes expanded, and
/// what the reader should know of the reading itself.
#[derive(Default)]
pub(super) struct Read {
    lines: Vec<Line>,
    pub(super) notes: Vec<Note>,
}

fn read_file(
    path: &Path,
    config_id: &str,
    params: &mut HashMap<String, String>,
    out: &mut Read,
    depth: usize,
) -> Result<(), ImportError> {
    let text = std::fs::read_to_string(path).map_err(|error| ImportError::Read {
        file: path.display().to_string(),
        error,
    })?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    read_text(
        &text,
        &path.display().to_string(),
        &dir,
        config_id,
        params,
        out,
        depth,
    )
}

/// Strips a comment (`#` or `!` outside quotes).
fn strip_comment(l: &str) -> &str {
    let mut quoted = false;
    for (i, c) in l.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' | '!' if !quoted => return &l[..i],
            _ => {}
        }
    }
    l
}

/// keepalived's `$NAME` (followed by whitespace or the end) and `${NAME}`,
/// recursively; undefined names stay as they are.
fn substitute(text: &str, params: &HashMap<String, String>) -> String {
    let mut s = text.to_owned();
    for _ in 0..32 {
        let mut changed = false;
        let mut out = String::with_capacity(s.len());
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'$' {
                let (name, end, braced) = if b.get(i + 1) == Some(&b'{') {
                    match s[i + 2..].find('}') {
                        Some(j) => (&s[i + 2..i + 2 + j], i + 3 + j, true),
                        None => ("", i + 1, true),
                    }
                } else {
                    let j = s[i + 1..]
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .map_or(s.len(), |j| i + 1 + j);
                    (&s[i + 1..j], j, false)
                };
                let follows_ok = braced || s[end..].chars().next().is_none_or(char::is_whitespace);
                if !name.is_empty()
                    && follows_ok
                    && let Some(v) = params.get(name)
                {
                    out.push_str(v);
                    i = end;
                    changed = true;
                    continue;
                }
            }
            // Copy one character (UTF-8 safe).
            let ch = s[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
        s = out;
        if !changed {
            break;
        }
    }
    s
}

fn read_text(
    text: &str,
    file: &str,
    dir: &Path,
    config_id: &str,
    params: &mut HashMap<String, String>,
    out: &mut Read,
    depth: usize,
) -> Result<(), ImportError> {
    let raw: Vec<&str> = text.lines().collect();
    let name: Arc<str> = Arc::from(file);
    let mut i = 0;
    while i < raw.len() {
        let line = i + 1;
        let mut l = raw[i].to_owned();
        i += 1;
        // Conditional lines.
        let trimmed = l.trim_start();
        if let Some(rest) = trimmed.strip_prefix('@') {
            let (neg, rest) = match rest.strip_prefix('^') {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let id_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let (id, body) = rest.split_at(id_end);
            if (id == config_id) == neg {
                continue;
            }
            l = body.to_owned();
        }
        // Parameter definitions (a trailing backslash continues them).
        let t = l.trim_start();
        if let Some(def) = t.strip_prefix('$')
            && let Some((name, value)) = def.split_once('=')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            let mut value = value.trim().to_owned();
            while value.ends_with('\\') {
                value.pop();
                let Some(next) = raw.get(i) else {
                    break;
                };
                i += 1;
                value.push('\n');
                value.push_str(next.trim());
            }
            params.insert(name.to_owned(), value.trim().to_owned());
            continue;
        }
        let expanded = substitute(strip_comment(&l), params);
        for piece in expanded.split('\n') {
            let piece = piece.trim_end_matches('\\');
            let words: Vec<&str> = piece.split_whitespace().collect();
            if words.first() == Some(&"include") {
                let Some(pattern) = words.get(1) else {
                    continue;
                };
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(ImportError::Syntax {
                        file: file.to_owned(),
                        line,
                        reason: format!("include nested deeper than {MAX_INCLUDE_DEPTH}"),
                    });
                }
                let pattern = pattern.trim_matches('"');
                let full = if Path::new(pattern).is_absolute() {
                    PathBuf::from(pattern)
                } else {
                    dir.join(pattern)
                };
                let files = glob(&full);
                if files.is_empty() {
                    // keepalived logs it too, and goes on.
                    out.notes.push(Note {
                        file: file.to_owned(),
                        line,
                        text: format!("include {pattern}: no file matches: nothing included"),
                    });
                }
                for f in files {
                    read_file(&f, config_id, params, out, depth + 1)?;
                }
                continue;
            }
            out.lines.push(Line {
                file: Arc::clone(&name),
                line,
                text: piece.to_owned(),
            });
        }
    }
    Ok(())
}

/// Files matching `pattern` (`*`, `?` in any component), sorted, as glob(3).
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for comp in pattern.components() {
        let part = comp.as_os_str().to_string_lossy().into_owned();
        let mut next = Vec::new();
        for base in &found {
            if part.contains(['*', '?']) {
                let dir = if base.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    base.clone()
                };
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    let mut names: Vec<String> = rd
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| {
                            (part.starts_with('.') || !n.starts_with('.')) && wildcard(&part, n)
                        })
                        .collect();
                    names.sort();
                    next.extend(names.into_iter().map(|n| base.join(n)));
                }
            } else {
                next.push(base.join(&part));
            }
        }
        found = next;
    }
    found.into_iter().filter(|p| p.is_file()).collect()
}

fn wildcard(p: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (p.chars().collect(), s.chars().collect());
    fn m(p: &[char], s: &[char]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some('*'), _) => m(&p[1..], s) || (!s.is_empty() && m(p, &s[1..])),
            (Some('?'), Some(_)) => m(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &s[1..]),
            _ => false,
        }
    }
    m(&p, &s)
}

#[derive(Clone, Debug)]
struct Tok {
    text: String,
    quoted: bool,
    file: Arc<str>,
    line: usize,
}

/// The words of one line, `{` and `}` words of their own.
fn words_of(l: &Line, out: &mut std::collections::VecDeque<Tok>) {
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let push =
        |cur: &mut String, was_quoted: &mut bool, out: &mut std::collections::VecDeque<Tok>| {
            if !cur.is_empty() || *was_quoted {
                out.push_back(Tok {
                    text: std::mem::take(cur),
                    quoted: *was_quoted,
                    file: Arc::clone(&l.file),
                    line: l.line,
                });
            }
            *was_quoted = false;
        };
    for c in l.text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            '{' | '}' if !quoted => {
                push(&mut cur, &mut was_quoted, out);
                cur.push(c);
                push(&mut cur, &mut was_quoted, out);
            }
            c if c.is_whitespace() && !quoted => push(&mut cur, &mut was_quoted, out),
            c => cur.push(c),
        }
    }
    push(&mut cur, &mut was_quoted, out);
}

/// The words of the lines, made a line at a time as the parser asks for
/// them: the words of a whole file are never held at once.
struct Words<'a> {
    lines: std::slice::Iter<'a, Line>,
    ahead: std::collections::VecDeque<Tok>,
}

impl<'a> Words<'a> {
    fn new(lines: &'a [Line]) -> Words<'a> {
        Words {
            lines: lines.iter(),
            ahead: std::collections::VecDeque::new(),
        }
    }

    /// The next word, without taking it.
    fn peek(&mut self) -> Option<&Tok> {
        while self.ahead.is_empty() {
            words_of(self.lines.next()?, &mut self.ahead);
        }
        self.ahead.front()
    }

    fn next(&mut self) -> Option<Tok> {
        self.peek()?;
        self.ahead.pop_front()
    }
}

fn is_brace(t: &Tok) -> bool {
    !t.quoted && matches!(t.text.as_str(), "{" | "}")
}

/// Statements and blocks: a statement is a keyword and the words after it
/// on its line; a `{` (on that line or the next) opens its block.
fn parse(lines: &[Line]) -> Result<Vec<Node>, ImportError> {
    block(&mut Words::new(lines), None)
}

/// What [`step`] read.
enum Step {
    /// The words ended.
    End,
    /// A `}`: the enclosing block ended.
    Close,
    /// A statement.
    Node(Node),
    /// A block without a keyword: its statements, kept flat.
    Flat(Vec<Node>),
}

/// Reads one statement (with its block) from `words`.
fn step(words: &mut Words<'_>) -> Result<Step, ImportError> {
    let Some(t) = words.next() else {
        return Ok(Step::End);
    };
    if t.text == "}" && !t.quoted {
        return Ok(Step::Close);
    }
    if t.text == "{" && !t.quoted {
        return block(words, Some(&t)).map(Step::Flat);
    }
    let mut node = Node {
        kw: t.text,
        args: Vec::new(),
        children: None,
        file: t.file,
        line: t.line,
    };
    while let Some(w) = words.peek()
        && Arc::ptr_eq(&w.file, &node.file)
        && w.line == node.line
        && !is_brace(w)
    {
        if let Some(w) = words.next() {
            node.args.push(w.text);
        }
    }
    if words.peek().is_some_and(|w| w.text == "{" && !w.quoted)
        && let Some(open) = words.next()
    {
        node.children = Some(block(words, Some(&open))?);
    }
    node.args.shrink_to_fit();
    Ok(Step::Node(node))
}

fn block(words: &mut Words<'_>, opened: Option<&Tok>) -> Result<Vec<Node>, ImportError> {
    let mut nodes = Vec::new();
    loop {
        match step(words)? {
            Step::Node(n) => nodes.push(n),
            Step::Flat(inner) => nodes.extend(inner),
            Step::Close => return Ok(nodes),
            Step::End => break,
        }
    }
    match opened {
        Some(t) => Err(ImportError::Syntax {
            file: t.file.to_string(),
            line: t.line,
            reason: "this { is never closed".into(),
        }),
        None => Ok(nodes),
    }
}

/// The top-level statements of `lines`, one at a time, each given to `f`
/// and dropped: a whole file's statements are never held at once.
fn each_statement(
    lines: &[Line],
    mut f: impl FnMut(&Node) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let mut words = Words::new(lines);
    loop {
        match step(&mut words)? {
            Step::Node(n) => f(&n)?,
            Step::Flat(inner) => inner.iter().try_for_each(&mut f)?,
            Step::Close | Step::End => return Ok(()),
        }
    }
}

/// keepalived's TIMER (seconds, decimals allowed) as a duration string.
fn timer(node: &Node) -> Result<String, ImportError> {
    let v = node
        .arg(0)
        .ok_or_else(|| node.syntax(format!("{} needs a value", node.kw)))?;
    let secs: f64 = v
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| {
            node.syntax(format!(
                "{}: {v} is not a number of seconds",
                node.kw,
                v = super::q(v)
            ))
        })?;
    Ok(if secs.fract() == 0.0 {
        format!("{}s", secs as u64)
    } else {
        format!("{secs}s")
    })
}

fn int(node: &Node) -> Result<u64, ImportError> {
    let v = node
        .arg(0)
        .ok_or_else(|| node.syntax(format!("{} needs a value", node.kw)))?;
    v.parse().map_err(|_| {
        node.syntax(format!(
            "{}: {v} is not a whole number",
            node.kw,
            v = super::q(v)
        ))
    })
}

/// An optional boolean argument (`alpha`, `alpha yes`, `alpha false`).
fn flag(node: &Node) -> bool {
    !matches!(
        node.arg(0).map(str::to_ascii_lowercase).as_deref(),
        Some("false" | "no" | "off" | "0")
    )
}

fn ip(node: &Node, v: &str) -> Result<IpAddr, ImportError> {
    v.parse()
        .map_err(|_| node.syntax(format!("{v} is not an IP address", v = super::q(v))))
}

fn port(node: &Node, v: &str) -> Result<u16, ImportError> {
    v.parse()
        .map_err(|_| node.syntax(format!("{v} is not a port", v = super::q(v))))
}

/// Check settings inherited down: virtual server, real server, checker.
#[derive(Clone, Debug, Default)]
struct Inherited {
    delay_loop: Option<String>,
    connect_timeout: Option<String>,
    retry: Option<u64>,
    delay_before_retry: Option<String>,
    warmup: Option<String>,
    virtualhost: Option<String>,
}

impl Inherited {
    /// Takes the keyword if it is one of these; true when it was.
    fn take(&mut self, c: &Node) -> Result<bool, ImportError> {
        match c.kw.as_str() {
            "delay_loop" => self.delay_loop = Some(timer(c)?),
            "connect_timeout" => self.connect_timeout = Some(timer(c)?),
            "retry" | "nb_get_retry" => self.retry = Some(int(c)?),
            "delay_before_retry" => self.delay_before_retry = Some(timer(c)?),
            "warmup" => self.warmup = Some(timer(c)?),
            "virtualhost" => self.virtualhost = c.arg(0).map(str::to_owned),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[derive(Debug, Default)]
struct Converter {
    groups: HashMap<String, Node>,
    taken: Vec<String>,
    /// Where the VRRP part is written (`--vrrp-out`), if it is.
    vrrp_out: Option<String>,
    /// The addresses each firewall mark covers (`--fwmark`).
    marks: super::Marks,
    /// The mark of the virtual server being read, when it is one's.
    mark: Option<(u32, bool)>,
    /// The VRRP instances' virtual_router_id, by name (the sync daemon's
    /// default sync ID).
    vrids: HashMap<String, u32>,
}

const SCHEDULERS: [&str; 14] = [
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

impl Converter {
    /// Converts the statements of `lines`, read twice (the groups first,
    /// which virtual servers may name before they come), each statement
    /// dropped once converted and each service sealed: memory stays a
    /// small multiple of the file's size.
    fn convert(&mut self, lines: &[Line], imp: &mut Imported) -> Result<(), ImportError> {
        each_statement(lines, |node| {
            if node.kw == "virtual_server_group"
                && let Some(name) = node.arg(0)
            {
                self.groups.insert(name.to_owned(), node.clone());
            }
            if node.kw == "vrrp_instance"
                && let Some(name) = node.arg(0)
                && let Some(id) = node
                    .children()
                    .iter()
                    .find(|c| c.kw == "virtual_router_id")
                    .and_then(|c| c.arg(0))
                    .and_then(|v| v.parse().ok())
            {
                self.vrids.insert(name.to_owned(), id);
            }
            Ok(())
        })?;
        each_statement(lines, |node| self.statement(node, imp))
    }

    /// One top-level statement.
    fn statement(&mut self, node: &Node, imp: &mut Imported) -> Result<(), ImportError> {
        {
            match node.kw.as_str() {
                "virtual_server" => {
                    if let Some(mut svc) = self.virtual_server(node, imp)? {
                        svc.seal();
                        imp.services.push(svc);
                    }
                }
                "virtual_server_group" => {}
                "global_defs" => self.global_defs(node, imp)?,
                "vrrp_instance" | "vrrp_sync_group" => {
                    let vips: Vec<String> = node
                        .children()
                        .iter()
                        .filter(|c| c.kw == "virtual_ipaddress")
                        .flat_map(|c| c.children().iter().map(|v| v.kw.clone()))
                        .collect();
                    let what = format!(
                        "{} {}{}",
                        node.kw,
                        node.args.join(" "),
                        if vips.is_empty() {
                            String::new()
                        } else {
                            format!(" (virtual addresses {})", vips.join(", "))
                        }
                    );
                    imp.notes.push(node.note(match &self.vrrp_out {
                        Some(f) => format!(
                            "{what}: kept for keepalived in {f}: it moves the addresses, rvs serves them (listen on them even before they arrive)"
                        ),
                        None => format!(
                            "{what}: VRRP is not rvs's job: run rvs replicas behind a Kubernetes Service, ECMP or anycast, or keep keepalived for VRRP alone (--vrrp-out); sh, dh and mh give every replica the same answer, so a client keeps its server when it moves between replicas. Left out"
                        ),
                    }));
                }
                "vrrp_script" | "vrrp_track_process" | "track_file" | "static_ipaddress"
                | "static_routes" | "static_rules" | "linkbeat_interfaces" | "net_namespace"
                | "bfd_instance" | "garp_group" | "instance" => {
                    imp.notes.push(node.note(match &self.vrrp_out {
                        Some(f) => format!("{}: kept for keepalived in {f}", node.kw),
                        None => format!(
                            "{}: not part of load balancing in rvs (VRRP, addresses and routes are the platform's: Kubernetes, the network, or keepalived with --vrrp-out): left out",
                            node.kw
                        ),
                    }));
                }
                "SSL" => imp.notes.push(node.note(
                    "SSL: rvs's HTTPS checks do not verify the server's certificate and present none: the SSL settings are left out",
                )),
                other => imp.notes.push(node.note(format!(
                    "{other}: a keyword rvs does not know: left out", other = super::kw(other)))),
            }
        }
        Ok(())
    }

    fn global_defs(&mut self, node: &Node, imp: &mut Imported) -> Result<(), ImportError> {
        let mut ignored: Vec<String> = Vec::new();
        for c in node.children() {
            match c.kw.as_str() {
                "lvs_timeouts" => {
                    let mut t = Mapping::new();
                    let mut it = c.args.iter();
                    while let Some(k) = it.next() {
                        let Some(v) = it.next() else {
                            break;
                        };
                        let secs: u64 = v.parse().map_err(|_| {
                            c.syntax(format!(
                                "lvs_timeouts {k}: {v} is not a number",
                                k = super::w(k),
                                v = super::q(v)
                            ))
                        })?;
                        if matches!(k.as_str(), "tcp" | "tcpfin" | "udp") && secs > 0 {
                            t.insert(key(k), s(format!("{secs}s")));
                        }
                    }
                    if !t.is_empty() {
                        imp.global.insert(key("timeouts"), Value::Mapping(t));
                    }
                }
                "notification_email"
                | "notification_email_from"
                | "smtp_server"
                | "smtp_connect_timeout"
                | "smtp_alert"
                | "smtp_alert_checker"
                | "smtp_helo_name" => {
                    if !ignored.iter().any(|k| k == "notification_email") {
                        imp.notes.push(c.note(
                            "notification_email / smtp: rvs sends no mail: alert on its metrics (rvs_real_server_up, rvs_service_quorum_up) and logs. Left out",
                        ));
                        ignored.push("notification_email".into());
                    }
                }
                "lvs_sync_daemon" => self.sync_daemon(c, imp)?,
                other => ignored.push(other.to_owned()),
            }
        }
        ignored.retain(|k| k != "notification_email");
        if !ignored.is_empty() {
            imp.notes.push(node.note(format!(
                "global_defs: {}: no meaning in rvs: left out",
                ignored.join(", ")
            )));
        }
        Ok(())
    }

    /// `lvs_sync_daemon IF [INSTANCE] [id N] [maxlen N] [port N] [ttl N]
    /// [group ADDR]`: keepalived runs the kernel's master daemon while the
    /// instance is MASTER and the backup daemon otherwise. rvs, which does
    /// not see VRRP's state, runs both: a director sends what it serves and
    /// applies what its peer sends. The sync ID defaults to the instance's
    /// virtual_router_id, as keepalived's.
    fn sync_daemon(&self, c: &Node, imp: &mut Imported) -> Result<(), ImportError> {
        let Some(iface) = c.arg(0) else {
            return Err(c.syntax("lvs_sync_daemon needs an interface"));
        };
        let mut m = Mapping::new();
        m.insert(key("mcast_interface"), s(iface));
        let mut syncid: Option<u32> = None;
        let mut instance: Option<&str> = None;
        let mut it = c.args.iter().skip(1);
        while let Some(a) = it.next() {
            let mut value = |what: &str| -> Result<String, ImportError> {
                it.next()
                    .cloned()
                    .ok_or_else(|| c.syntax(format!("lvs_sync_daemon {what} needs a value")))
            };
            match a.as_str() {
                "id" => {
                    syncid = Some(
                        value("id")?
                            .parse()
                            .map_err(|_| c.syntax("lvs_sync_daemon id: a number, 0 to 255"))?,
                    )
                }
                "maxlen" | "port" | "ttl" => {
                    let k = match a.as_str() {
                        "maxlen" => "sync_maxlen",
                        "port" => "mcast_port",
                        _ => "mcast_ttl",
                    };
                    let v: u32 = value(a)?
                        .parse()
                        .map_err(|_| c.syntax(format!("lvs_sync_daemon {a}: a number")))?;
                    m.insert(key(k), n(v));
                }
                "group" => {
                    m.insert(key("mcast_group"), s(value("group")?));
                }
                other if instance.is_none() => instance = Some(other),
                other => {
                    return Err(c.syntax(format!(
                        "lvs_sync_daemon: {} is not one of its words",
                        super::w(other)
                    )));
                }
            }
        }
        let syncid = syncid
            .or_else(|| instance.and_then(|i| self.vrids.get(i).copied()))
            .unwrap_or(0);
        if syncid > 0 {
            m.insert(key("syncid"), n(syncid));
        }
        let mut daemons = Vec::new();
        for state in ["master", "backup"] {
            let mut d = Mapping::new();
            d.insert(key("state"), s(state));
            for (k, v) in &m {
                d.insert(k.clone(), v.clone());
            }
            daemons.push(Value::Mapping(d));
        }
        imp.global
            .insert(key("sync_daemon"), Value::Sequence(daemons));
        imp.notes.push(c.note(format!(
            "lvs_sync_daemon {iface}: a master and a backup sync daemon (IPVS's protocol, syncid {syncid}): keepalived switches between them with the VRRP state; rvs runs both, sending what it serves and applying what its peer sends"
        )));
        Ok(())
    }

    /// The addresses of a virtual server: its own, or its group's.
    fn listen(&mut self, node: &Node, svc: &mut Service) -> Result<Vec<SocketAddr>, ImportError> {
        match (node.arg(0), node.arg(1)) {
            (Some("fwmark"), m) => {
                let covered = m
                    .and_then(|m| m.parse::<u32>().ok())
                    .and_then(|id| self.marks.0.get(&id).map(|c| (id, c)));
                match covered {
                    Some((id, c)) => {
                        self.mark = Some((id, c.udp));
                        Ok(c.listen.clone())
                    }
                    None => {
                        let m = m.map_or_else(|| "?".into(), super::w);
                        svc.notes.push(node.note(format!(
                            "virtual_server fwmark {m}: rvs does not see firewall marks: it listens on addresses. Name the addresses the mark covers (rvs import keepalived --fwmark {m}=ADDR:PORT,ADDR:PORT) and the service listens on them with one persistence for all, as the mark's. Left out"
                        )));
                        Ok(Vec::new())
                    }
                }
            }
            (Some("group"), Some(g)) => {
                let Some(group) = self.groups.get(g) else {
                    return Err(node.syntax(format!("virtual_server_group {g:?} is not defined")));
                };
                let mut out = Vec::new();
                for e in group.children() {
                    if e.kw == "fwmark" {
                        let covered = e
                            .arg(0)
                            .and_then(|m| m.parse::<u32>().ok())
                            .and_then(|id| self.marks.0.get(&id));
                        match covered {
                            Some(c) => out.extend(c.listen.iter().copied()),
                            None => svc.notes.push(e.note(format!(
                                "fwmark {} in group {g}: rvs does not see firewall marks: name the addresses it covers with --fwmark; left out",
                                e.arg(0).map_or_else(|| "?".into(), super::w)
                            ))),
                        }
                        continue;
                    }
                    let p = match e.arg(0) {
                        Some(p) => port(e, p)?,
                        None => {
                            svc.notes.push(e.note(format!(
                                "{} without a port: rvs listens on a port: left out",
                                e.kw
                            )));
                            continue;
                        }
                    };
                    let addrs = expand_range(e, &e.kw)?;
                    if addrs.len() > 1024 {
                        return Err(e.syntax(format!("{}: over 1024 addresses", e.kw)));
                    }
                    out.extend(addrs.into_iter().map(|a| SocketAddr::new(a, p)));
                }
                Ok(out)
            }
            (Some(a), Some(p)) => Ok(vec![SocketAddr::new(ip(node, a)?, port(node, p)?)]),
            (Some(a), None) => {
                svc.notes.push(node.note(format!(
                    "virtual_server {a} without a port (persistent, every port): rvs listens on a port. Left out", a = super::w(a))));
                Ok(Vec::new())
            }
            _ => {
                Err(node
                    .syntax("virtual_server needs an address and a port, fwmark N or group NAME"))
            }
        }
    }

    fn virtual_server(
        &mut self,
        node: &Node,
        imp: &mut Imported,
    ) -> Result<Option<Service>, ImportError> {
        let mut svc = Service::default();
        self.mark = None;
        let listen = self.listen(node, &mut svc)?;
        let mark = self.mark.take();
        let mut proto = if mark.is_some_and(|(_, udp)| udp) {
            "udp"
        } else {
            "tcp"
        };
        let mut engine: Option<String> = None;
        let mut scheduler: Option<String> = None;
        let mut flags: Vec<&str> = Vec::new();
        let mut persistence: Option<Mapping> = None;
        let mut granularity: Option<String> = None;
        let mut ops = false;
        let mut inherited = Inherited::default();
        let mut body = Mapping::new();
        let mut sorry: Option<String> = None;
        let mut real: Vec<&Node> = Vec::new();
        for c in node.children() {
            if inherited.take(c)? {
                continue;
            }
            match c.kw.as_str() {
                "lvs_sched" | "lb_algo" => {
                    let v = c.arg(0).unwrap_or("").to_owned();
                    if SCHEDULERS.contains(&v.as_str()) {
                        scheduler = Some(v);
                    } else {
                        svc.notes.push(c.note(format!(
                            "{} {v}: not a scheduler rvs has: wlc (the default) instead",
                            c.kw, v = super::w(&v))));
                    }
                }
                "lvs_method" | "lb_kind" => {
                    let m = c.arg(0).unwrap_or("NAT").to_ascii_uppercase();
                    let what = match m.as_str() {
                        "DR" => "direct routing",
                        "TUN" => "tunnelling",
                        _ => "NAT",
                    };
                    let what = if m == "NAT" {
                        String::new()
                    } else {
                        format!(" ({what})")
                    };
                    svc.notes.push(c.note(format!(
                        "{} {m}{what}: rvs proxies every connection (FULLNAT): the real servers see rvs's address, not the client's, and answer through rvs{}. If they need the client's address, set proxy_protocol: v2 (they must read it)",
                        c.kw,
                        if m == "NAT" {
                            " (no route back through the director is needed)"
                        } else {
                            " (they need no VIP on loopback and no ARP settings)"
                        }
                    )));
                }
                "persistence_timeout" => {
                    let t = match c.arg(0) {
                        Some(_) => int(c)?,
                        None => 360,
                    };
                    let mut p = Mapping::new();
                    p.insert(key("timeout"), s(format!("{}s", t.max(1))));
                    persistence = Some(p);
                }
                "persistence_granularity" => granularity = c.arg(0).map(str::to_owned),
                "persistence_engine" => engine = c.arg(0).map(str::to_owned),
                "protocol" => match c.arg(0).map(str::to_ascii_uppercase).as_deref() {
                    Some("UDP") => proto = "udp",
                    Some("TCP") | None => proto = "tcp",
                    Some(other) => {
                        imp.notes.push(c.note(format!(
                            "protocol {other}: rvs balances TCP and UDP: this virtual server is left out", other = super::w(other))));
                        return Ok(None);
                    }
                },
                "ops" => ops = true,
                "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback" | "mh-port"
                | "mh-fallback" => flags.push(match c.kw.as_str() {
                    "flag-1" => "flag-1",
                    "flag-2" => "flag-2",
                    "flag-3" => "flag-3",
                    "sh-port" => "sh-port",
                    "sh-fallback" => "sh-fallback",
                    "mh-port" => "mh-port",
                    _ => "mh-fallback",
                }),
                "alpha" => {
                    if flag(c) {
                        body.insert(key("alpha"), Value::Bool(true));
                    }
                }
                "inhibit_on_failure" => {
                    if flag(c) {
                        body.insert(key("inhibit_on_failure"), Value::Bool(true));
                    }
                }
                "quorum" => {
                    body.insert(key("quorum"), n(int(c)?));
                }
                "hysteresis" => {
                    body.insert(key("hysteresis"), n(int(c)?));
                }
                "sorry_server" => {
                    let a = c.arg(0).ok_or_else(|| c.syntax("sorry_server needs an address"))?;
                    let a = ip(c, a)?;
                    let p = match c.arg(1) {
                        Some(p) => port(c, p)?,
                        None => listen.first().map_or(0, SocketAddr::port),
                    };
                    sorry = Some(SocketAddr::new(a, p).to_string());
                }
                "sorry_server_inhibit" | "sorry_server_lvs_method" => svc.notes.push(c.note(format!(
                    "{}: the sorry server is always proxied to in rvs: left out",
                    c.kw
                ))),
                "quorum_up" | "quorum_down" => svc.notes.push(c.note(format!(
                    "{}: rvs runs no notify scripts: watch rvs_service_quorum_up (metrics) or the \"quorum\" log lines. Left out",
                    c.kw
                ))),
                "ha_suspend" => svc.notes.push(c.note(
                    "ha_suspend: rvs checks whether or not it holds the address (no VRRP): left out",
                )),
                "omega" | "smtp_alert" | "snmp_name" | "ip_family" | "retry_on_failure" => {
                    svc.notes.push(c.note(format!("{}: no meaning in rvs: left out", c.kw)));
                }
                "real_server" => real.push(c),
                other => svc.notes.push(c.note(format!(
                    "{other}: a virtual_server keyword rvs does not know: left out", other = super::kw(other)))),
            }
        }
        if listen.is_empty() {
            imp.notes.append(&mut svc.notes);
            return Ok(None);
        }
        let first = listen[0];
        let base = match (node.arg(0), node.arg(1)) {
            (Some("group"), Some(g)) => format!("group-{g}"),
            (Some("fwmark"), Some(m)) => format!("fwm-{m}"),
            _ => format!(
                "{proto}-{}-{}",
                first.ip().to_string().replace(':', "_"),
                first.port()
            ),
        };
        let name = unique_name(&base, &self.taken);
        self.taken.push(name.clone());
        let scheduler = scheduler.unwrap_or_else(|| "wlc".into());
        let flags: Vec<String> = flags
            .into_iter()
            .filter_map(|f| {
                let rvs = sched_flag(&scheduler, f);
                if rvs.is_none() {
                    svc.notes.push(node.note(format!(
                        "{f}: not a flag of the {scheduler} scheduler in rvs: left out"
                    )));
                }
                rvs
            })
            .collect();
        let mut b = Mapping::new();
        b.insert(key("name"), s(name));
        b.insert(
            key("listen"),
            if listen.len() == 1 {
                s(first.to_string())
            } else {
                Value::Sequence(listen.iter().map(|a| s(a.to_string())).collect())
            },
        );
        b.insert(key("proto"), s(proto));
        b.insert(key("scheduler"), s(scheduler));
        insert_flags(&mut b, flags);
        if let Some(mut p) = persistence {
            if let Some(g) = granularity {
                if first.is_ipv6() {
                    let prefix = g.trim_start_matches('/');
                    match prefix.parse::<u8>() {
                        Ok(v) if (1..=128).contains(&v) => {
                            p.insert(key("ipv6_prefix"), n(v));
                        }
                        _ => svc.notes.push(node.note(format!(
                            "persistence_granularity {g}: not an IPv6 prefix length: left out"
                        ))),
                    }
                } else {
                    match g.parse::<std::net::Ipv4Addr>() {
                        Ok(m) if !m.is_broadcast() => {
                            p.insert(key("netmask"), s(m.to_string()));
                        }
                        Ok(_) => {}
                        Err(_) => svc.notes.push(node.note(format!(
                            "persistence_granularity {g}: not an IPv4 netmask: left out"
                        ))),
                    }
                }
            }
            if let Some((m, _)) = mark {
                p.insert(key("scope"), s("service"));
                p.insert(key("fwmark"), n(m));
            }
            match engine.as_deref() {
                Some("sip") if proto == "udp" => {
                    p.insert(key("engine"), s("sip"));
                }
                Some(e) => svc.notes.push(node.note(format!(
                    "persistence_engine {}: the one engine there is, sip, reads UDP datagrams (IPVS's would drop every TCP packet): left out",
                    super::w(e)
                ))),
                None => {}
            }
            b.insert(key("persistence"), Value::Mapping(p));
        } else if let Some(e) = &engine {
            svc.notes.push(node.note(format!(
                "persistence_engine {}: without persistence_timeout it does nothing, in IPVS too: left out",
                super::w(e)
            )));
        }
        if proto == "udp" && ops {
            let mut u = Mapping::new();
            u.insert(key("ops"), Value::Bool(true));
            b.insert(key("udp"), Value::Mapping(u));
        } else if ops {
            svc.notes
                .push(node.note("ops: one-packet scheduling is for UDP: left out"));
        }
        for (k, v) in body {
            b.insert(k, v);
        }
        if let Some(sorry) = sorry {
            b.insert(key("sorry_server"), s(sorry));
        }
        let mut servers: Vec<Mapping> = Vec::new();
        let mut checks: Vec<Option<Vec<Value>>> = Vec::new();
        for r in real {
            let (m, c) = self.real_server(r, first.port(), &inherited, &mut svc)?;
            servers.push(m);
            checks.push(c);
        }
        insert_servers(&mut b, servers, checks);
        svc.body = b;
        Ok(Some(svc))
    }

    fn real_server(
        &mut self,
        node: &Node,
        vport: u16,
        vs: &Inherited,
        svc: &mut Service,
    ) -> Result<(Mapping, Option<Vec<Value>>), ImportError> {
        let a = node
            .arg(0)
            .ok_or_else(|| node.syntax("real_server needs an address"))?;
        let a = ip(node, a)?;
        let p = match node.arg(1) {
            Some(p) => port(node, p)?,
            None => vport,
        };
        let mut m = Mapping::new();
        m.insert(key("address"), s(SocketAddr::new(a, p).to_string()));
        let mut inherited = vs.clone();
        let mut checks = Vec::new();
        let mut weight = 1u64;
        let (mut u, mut l) = (0u64, 0u64);
        for c in node.children() {
            if inherited.take(c)? {
                continue;
            }
            match c.kw.as_str() {
                "weight" => weight = int(c)?,
                "uthreshold" => u = int(c)?,
                "lthreshold" => l = int(c)?,
                "inhibit_on_failure" => {
                    m.insert(key("inhibit_on_failure"), Value::Bool(flag(c)));
                }
                "alpha" => {
                    m.insert(key("alpha"), Value::Bool(flag(c)));
                }
                "notify_up" | "notify_down" => svc.notes.push(c.note(format!(
                    "{}: rvs runs no notify scripts: watch rvs_real_server_up (metrics) or the \"real server down\" log lines. Left out",
                    c.kw
                ))),
                "lvs_method" | "lb_kind" => svc.notes.push(c.note(format!(
                    "{} {}: rvs proxies to every real server (FULLNAT): left out",
                    c.kw,
                    c.arg(0).unwrap_or("")
                ))),
                "smtp_alert" | "snmp_name" => {
                    svc.notes.push(c.note(format!("{}: no meaning in rvs: left out", c.kw)));
                }
                "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "DNS_CHECK" | "UDP_CHECK"
                | "SMTP_CHECK" | "PING_CHECK" | "BFD_CHECK" | "FILE_CHECK" => {
                    checks.extend(self.checker(c, &inherited, &mut m, svc)?);
                }
                other => svc.notes.push(c.note(format!(
                    "{other}: a real_server keyword rvs does not know: left out", other = super::kw(other)))),
            }
        }
        if weight > 65_535 {
            svc.notes.push(node.note(format!(
                "weight {weight}: rvs's weights go up to 65535 (as ipvsadm's): 65535"
            )));
            weight = 65_535;
        }
        m.insert(key("weight"), n(weight));
        if u > 0 {
            m.insert(key("u_threshold"), n(u));
        }
        if l > 0 {
            if u > 0 && l <= u {
                m.insert(key("l_threshold"), n(l));
            } else {
                svc.notes.push(node.note(format!(
                    "lthreshold {l} without a higher uthreshold: rvs needs the lower threshold under the upper one: left out"
                )));
            }
        }
        Ok((m, Some(checks)))
    }

    fn checker(
        &mut self,
        node: &Node,
        rs: &Inherited,
        server: &mut Mapping,
        svc: &mut Service,
    ) -> Result<Vec<Value>, ImportError> {
        let mut inh = rs.clone();
        let mut common = Mapping::new();
        let mut urls: Vec<Mapping> = Vec::new();
        // SMTP_CHECK's `host` blocks (keepalived 1.x's form): one check each.
        let mut hosts: Vec<Mapping> = Vec::new();
        let mut specific = Mapping::new();
        let kind = match node.kw.as_str() {
            "TCP_CHECK" => "tcp",
            "HTTP_GET" => "http",
            "SSL_GET" => "https",
            "MISC_CHECK" => "misc",
            "DNS_CHECK" => "dns",
            "UDP_CHECK" => "udp",
            "SMTP_CHECK" => "smtp",
            "PING_CHECK" => {
                svc.notes.push(node.note(
                    "PING_CHECK: rvs sends no ICMP (it runs unprivileged): a TCP connect to the real server's port instead",
                ));
                "tcp"
            }
            other => {
                svc.notes.push(node.note(format!(
                    "{other}: rvs has no such checker: left out",
                    other = super::kw(other)
                )));
                return Ok(Vec::new());
            }
        };
        for c in node.children() {
            if inh.take(c)? {
                continue;
            }
            match c.kw.as_str() {
                "helo_name" if kind == "smtp" => {
                    specific.insert(
                        key("helo_name"),
                        s(c.arg(0).unwrap_or("").trim_matches('"')),
                    );
                }
                "host" if kind == "smtp" => {
                    let mut h = Mapping::new();
                    for k in c.children() {
                        match k.kw.as_str() {
                            "connect_ip" => {
                                let a = k.arg(0).unwrap_or("");
                                h.insert(key("connect_ip"), s(ip(k, a)?.to_string()));
                            }
                            "connect_port" => {
                                let p = k.arg(0).unwrap_or("");
                                h.insert(key("connect_port"), n(port(k, p)?));
                            }
                            other => svc.notes.push(k.note(format!(
                                "{other} in host: not available in rvs's checks: left out",
                                other = super::kw(other)
                            ))),
                        }
                    }
                    hosts.push(h);
                }
                "connect_ip" => {
                    let a = c.arg(0).unwrap_or("");
                    common.insert(key("connect_ip"), s(ip(c, a)?.to_string()));
                }
                "connect_port" => {
                    let p = c.arg(0).unwrap_or("");
                    common.insert(key("connect_port"), n(port(c, p)?));
                }
                "alpha" => {
                    server.insert(key("alpha"), Value::Bool(flag(c)));
                }
                "bindto" | "bind_port" | "bind_if" | "fwmark" | "log_all_failures"
                | "http_protocol" | "fast_recovery" | "enable_sni" | "user" | "helo_name"
                | "regex" | "regex_no_match" | "regex_options" | "regex_stack"
                | "regex_min_offset" | "regex_max_offset" => svc.notes.push(c.note(format!(
                    "{} in {}: not available in rvs's checks: left out",
                    c.kw, node.kw
                ))),
                "url" if kind == "http" || kind == "https" => {
                    let mut u = Mapping::new();
                    for k in c.children() {
                        match k.kw.as_str() {
                            "path" => {
                                u.insert(key("path"), s(k.arg(0).unwrap_or("/")));
                            }
                            "digest" => {
                                u.insert(key("digest"), s(k.arg(0).unwrap_or("")));
                            }
                            "status_code" => {
                                u.insert(
                                    key("status"),
                                    Value::Sequence(k.args.iter().map(|a| s(a.clone())).collect()),
                                );
                            }
                            "virtualhost" => {
                                u.insert(key("virtualhost"), s(k.arg(0).unwrap_or("")));
                            }
                            other => svc.notes.push(k.note(format!(
                                "{other} in url: not available in rvs's HTTP check: left out",
                                other = super::kw(other)
                            ))),
                        }
                    }
                    urls.push(u);
                }
                "url" => {}
                "misc_path" if kind == "misc" => {
                    let words = shell_words(c.arg(0).unwrap_or(""));
                    specific.insert(
                        key("command"),
                        Value::Sequence(words.into_iter().map(s).collect()),
                    );
                }
                "misc_timeout" if kind == "misc" => {
                    specific.insert(key("timeout"), s(timer(c)?));
                }
                "misc_dynamic" if kind == "misc" => {
                    specific.insert(key("dynamic"), Value::Bool(true));
                }
                "type" if kind == "dns" => {
                    specific.insert(
                        key("query_type"),
                        s(c.arg(0).unwrap_or("SOA").to_ascii_uppercase()),
                    );
                }
                "name" if kind == "dns" => {
                    specific.insert(key("name"), s(c.arg(0).unwrap_or(".")));
                }
                "payload" if kind == "udp" => {
                    specific.insert(key("payload"), s(c.args.join(" ")));
                }
                "require_reply" if kind == "udp" => {
                    specific.insert(
                        key("require_reply"),
                        if c.args.is_empty() {
                            Value::Bool(true)
                        } else {
                            s(c.args.join(" "))
                        },
                    );
                }
                "min_reply_length" | "max_reply_length" if kind == "udp" => {
                    specific.insert(key(&c.kw), n(int(c)?));
                }
                other => svc.notes.push(c.note(format!(
                    "{other} in {}: rvs does not know it: left out",
                    node.kw,
                    other = super::kw(other)
                ))),
            }
        }
        // keepalived's values, written out: its defaults are not rvs's.
        common.insert(
            key("delay_loop"),
            s(inh.delay_loop.clone().unwrap_or_else(|| "60s".into())),
        );
        common.insert(
            key("connect_timeout"),
            s(inh.connect_timeout.clone().unwrap_or_else(|| "5s".into())),
        );
        if let Some(r) = inh.retry {
            common.insert(key("retry"), n(r));
        }
        if let Some(d) = &inh.delay_before_retry {
            common.insert(key("delay_before_retry"), s(d.clone()));
        }
        if let Some(w) = &inh.warmup {
            common.insert(key("warmup"), s(w.clone()));
        }
        let make = |extra: &Mapping| {
            let mut m = Mapping::new();
            m.insert(key("type"), s(kind));
            for (k, v) in &common {
                if kind == "misc"
                    && matches!(
                        k.as_str(),
                        Some("connect_timeout" | "connect_ip" | "connect_port")
                    )
                {
                    continue;
                }
                m.insert(k.clone(), v.clone());
            }
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
            Value::Mapping(m)
        };
        if kind == "misc" && !specific.contains_key(key("command")) {
            svc.notes
                .push(node.note("MISC_CHECK without misc_path: left out"));
            return Ok(Vec::new());
        }
        if kind == "http" || kind == "https" {
            if urls.is_empty() {
                urls.push(Mapping::new());
            }
            return Ok(urls
                .into_iter()
                .map(|mut u| {
                    if !u.contains_key(key("virtualhost"))
                        && let Some(v) = &inh.virtualhost
                    {
                        u.insert(key("virtualhost"), s(v.clone()));
                    }
                    make(&u)
                })
                .collect());
        }
        if !hosts.is_empty() {
            return Ok(hosts
                .into_iter()
                .map(|h| {
                    let mut m = specific.clone();
                    for (k, v) in h {
                        m.insert(k, v);
                    }
                    make(&m)
                })
                .collect());
        }
        Ok(vec![make(&specific)])
    }
}

/// `misc_path "prog arg 'two words'"`: the words of a command line
/// (whitespace-separated, single or double quotes kept together).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() || any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        out.push(cur);
    }
    out
}

/// `10.0.0.1`, `192.168.200.3-10`, `10.0.0.250-10.0.1.5`, `10.0.0.8/29`.
fn expand_range(node: &Node, v: &str) -> Result<Vec<IpAddr>, ImportError> {
    if let Some((a, len)) = v.split_once('/') {
        let net: ipnet::IpNet = format!("{a}/{len}")
            .parse()
            .map_err(|_| node.syntax(format!("{v} is not an address range", v = super::q(v))))?;
        return Ok(net.hosts().take(1025).collect());
    }
    let Some((a, b)) = v.split_once('-') else {
        return Ok(vec![ip(node, v)?]);
    };
    let start = ip(node, a)?;
    let end: IpAddr = if b.contains(['.', ':']) {
        ip(node, b)?
    } else {
        // The last part of the first address replaced.
        match start {
            IpAddr::V4(s4) => {
                let mut o = s4.octets();
                o[3] = b.parse().map_err(|_| {
                    node.syntax(format!("{v} is not an address range", v = super::q(v)))
                })?;
                IpAddr::from(o)
            }
            IpAddr::V6(s6) => {
                let mut seg = s6.segments();
                seg[7] = u16::from_str_radix(b, 16).map_err(|_| {
                    node.syntax(format!("{v} is not an address range", v = super::q(v)))
                })?;
                IpAddr::from(seg)
            }
        }
    };
    let mut out = Vec::new();
    match (start, end) {
        (IpAddr::V4(s4), IpAddr::V4(e4)) => {
            for x in u32::from(s4)..=u32::from(e4) {
                out.push(IpAddr::from(std::net::Ipv4Addr::from(x)));
                if out.len() > 1024 {
                    break;
                }
            }
        }
        (IpAddr::V6(s6), IpAddr::V6(e6)) => {
            for x in u128::from(s6)..=u128::from(e6) {
                out.push(IpAddr::from(std::net::Ipv6Addr::from(x)));
                if out.len() > 1024 {
                    break;
                }
            }
        }
        _ => return Err(node.syntax(format!("{v} mixes address families", v = super::q(v)))),
    }
    if out.is_empty() {
        return Err(node.syntax(format!("{v} is an empty range", v = super::q(v))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn words_comments_braces_and_quotes() {
        let lines: Vec<Line> = [
            "virtual_server 10.0.0.1 80 { # a comment",
            "  real_server 10.0.0.2 80 {weight 2}",
            "  MISC_CHECK { misc_path \"/bin/check a 'b c'\" } ! another",
            "}",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| Line {
            file: Arc::from("k"),
            line: i + 1,
            text: strip_comment(t).to_owned(),
        })
        .collect();
        let nodes = parse(&lines).unwrap();
        assert_eq!(nodes.len(), 1);
        let vs = &nodes[0];
        assert_eq!(
            (vs.kw.as_str(), vs.args.clone()),
            (
                "virtual_server",
                vec!["10.0.0.1".to_owned(), "80".to_owned()]
            )
        );
        let kids = vs.children();
        assert_eq!(kids[0].kw, "real_server");
        assert_eq!(kids[0].children()[0].args, ["2"]);
        let misc = &kids[1].children()[0];
        assert_eq!(misc.kw, "misc_path");
        assert_eq!(shell_words(&misc.args[0]), ["/bin/check", "a", "b c"]);
        let unclosed = parse(&lines[..2]).unwrap_err().to_string();
        assert_eq!(unclosed, "k:1: this { is never closed");
    }

    #[test]
    fn an_include_that_matches_nothing_is_said_with_its_place() {
        let dir = std::env::temp_dir().join(format!("rvs-ka-include-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        let main = dir.join("keepalived.conf");
        std::fs::write(
            &main,
            "global_defs {\n}\ninclude conf.d/*.conf\ninclude /nonexistent-rvs/*.conf\n",
        )
        .unwrap();
        let imp = import_with(&main, "main").unwrap();
        let notes: Vec<String> = imp.all_notes().iter().map(|n| n.to_string()).collect();
        let file = main.display().to_string();
        assert_eq!(
            notes,
            [
                format!("{file}:3: include conf.d/*.conf: no file matches: nothing included"),
                format!(
                    "{file}:4: include /nonexistent-rvs/*.conf: no file matches: nothing included"
                ),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parameters_and_conditions() {
        let mut p = HashMap::new();
        p.insert("BASE".into(), "10.2.${SUB}".into());
        p.insert("SUB".into(), "0".into());
        p.insert("PORT".into(), "80".into());
        assert_eq!(substitute("${BASE}.100 $PORT", &p), "10.2.0.100 80");
        assert_eq!(substitute("$PORTx ${NOPE}", &p), "$PORTx ${NOPE}");
        let text =
            "$VIP=10.0.0.9\n@main virtual_server $VIP 80 {\n@^main virtual_server $VIP 81 {\n}\n";
        let mut read = Read::default();
        read_text(
            text,
            "k",
            Path::new("."),
            "main",
            &mut HashMap::new(),
            &mut read,
            0,
        )
        .unwrap();
        let t: Vec<&str> = read.lines.iter().map(|l| l.text.trim()).collect();
        assert_eq!(t, ["virtual_server 10.0.0.9 80 {", "}"]);
    }

    #[test]
    fn ranges_expand() {
        let node = Node {
            kw: "x".into(),
            args: Vec::new(),
            children: None,
            file: Arc::from("k"),
            line: 1,
        };
        let r = |v: &str| {
            expand_range(&node, v)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            r("192.168.200.3-5"),
            ["192.168.200.3", "192.168.200.4", "192.168.200.5"]
        );
        assert_eq!(
            r("10.0.0.255-10.0.1.1"),
            ["10.0.0.255", "10.0.1.0", "10.0.1.1"]
        );
        assert_eq!(r("10.0.0.8/30"), ["10.0.0.9", "10.0.0.10"]);
        assert_eq!(
            r("2001:db8::a-c"),
            ["2001:db8::a", "2001:db8::b", "2001:db8::c"]
        );
        assert!(expand_range(&node, "10.0.0.5-2").is_err());
    }
}
