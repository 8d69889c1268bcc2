//! The access log: one line per finished request, JSON (default) or nginx's
//! `combined`, to stdout, stderr or a file. Lines are formatted on the
//! request's thread and handed to a writer thread through a bounded channel;
//! when the channel is full or the disk fails the line is dropped and
//! counted, so a slow disk never makes a request wait. The file is reopened
//! on SIGUSR1 (logrotate's `postrotate`, as for nginx). Query values of the
//! configured parameter names are redacted; cookies and `Authorization` are
//! never part of an [`AccessEntry`].

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Combined,
}

#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    pub target: Target,
    pub format: Format,
    /// Query parameter names whose values are replaced by `[REDACTED]`
    /// (ASCII case-insensitive, on the percent-decoded name).
    pub redact: Vec<String>,
    /// Bounded channel capacity in lines.
    pub queue: usize,
}

/// A borrowed view of one finished request, built by the logging phase.
#[derive(Debug, Clone, Copy)]
pub struct AccessEntry<'a> {
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub protocol: &'a str,
    pub status: u16,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration: Duration,
    pub route: Option<&'a str>,
    pub upstream_node: Option<&'a str>,
    pub upstream_addr: Option<SocketAddr>,
    pub upstream_time: Option<Duration>,
    pub cache: Option<&'a str>,
    pub waf: Option<&'a str>,
    pub waf_rules: Option<&'a str>,
    pub limit: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub referer: Option<&'a str>,
}

/// How often the writer drains the queue.
const TICK: Duration = Duration::from_millis(50);
/// Lines written between two flushes at most.
const MAX_BATCH: usize = 16 * 1024;

/// Set by the SIGUSR1 handler; every writer reopens when it sees a new value.
static REOPEN_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    // Async-signal-safe: one atomic add.
    REOPEN_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Installs the SIGUSR1 handler that makes every started writer reopen its file.
pub fn install_reopen_signal() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: the handler only performs an atomic add, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGUSR1,
            on_sigusr1 as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

struct Shared {
    written: AtomicU64,
    dropped: AtomicU64,
    reopen: AtomicBool,
}

pub struct AccessLog {
    cfg: AccessLogConfig,
    shared: Arc<Shared>,
    sender: Mutex<Option<SyncSender<String>>>,
    /// A clone of the sender for the request path, set once by `start`.
    tx: std::sync::OnceLock<SyncSender<String>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("target", &self.cfg.target)
            .finish()
    }
}

impl AccessLog {
    /// Builds the sink; starts no thread (bext may still fork for daemon mode).
    pub fn new(cfg: AccessLogConfig) -> AccessLog {
        AccessLog {
            cfg,
            shared: Arc::new(Shared {
                written: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                reopen: AtomicBool::new(false),
            }),
            sender: Mutex::new(None),
            tx: std::sync::OnceLock::new(),
        }
    }

    /// Starts the writer thread (once). An open failure is returned, but the
    /// sink stays usable: lines are dropped and counted while the writer
    /// retries opening every 5 s.
    pub fn start(&self) -> io::Result<()> {
        if self.tx.get().is_some() {
            return Ok(());
        }
        let (tx, rx) = mpsc::sync_channel::<String>(self.cfg.queue.max(1));
        let mut sink = Sink::new(self.cfg.target.clone());
        let opened = sink.open();
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("bext-access-log".into())
            .spawn(move || writer(rx, sink, shared))?;
        let _ = self.tx.set(tx.clone());
        if let Ok(mut s) = self.sender.lock() {
            *s = Some(tx);
        }
        opened
    }

    /// Formats the line and hands it to the writer; never blocks.
    pub fn record(&self, e: &AccessEntry<'_>) {
        let Some(tx) = self.tx.get() else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut line = self.format_line(e);
        line.push('\n');
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Asks the writer to reopen the file (after logrotate renamed it).
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
    }

    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The formatted line, without the trailing newline.
    pub fn format_line(&self, e: &AccessEntry<'_>) -> String {
        match self.cfg.format {
            Format::Json => json_line(e, &self.cfg.redact),
            Format::Combined => combined_line(e, &self.cfg.redact),
        }
    }
}

/// Where lines go.
struct Sink {
    target: Target,
    out: Option<BufWriter<Box<dyn Write + Send>>>,
}

impl Sink {
    fn new(target: Target) -> Sink {
        Sink { target, out: None }
    }

    fn open(&mut self) -> io::Result<()> {
        let w: Box<dyn Write + Send> = match &self.target {
            Target::Stdout => Box::new(io::stdout()),
            Target::Stderr => Box::new(io::stderr()),
            Target::File(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                let f: File = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(path)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
                    })?;
                Box::new(f)
            }
        };
        self.out = Some(BufWriter::with_capacity(64 << 10, w));
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Some(mut w) = self.out.take() {
            let _ = w.flush();
        }
        self.open()
    }
}

fn writer(rx: Receiver<String>, mut sink: Sink, shared: Arc<Shared>) {
    let mut generation = REOPEN_GENERATION.load(Ordering::Relaxed);
    let mut pending = 0u64;
    let mut last_retry = Instant::now();
    let mut last_warn: Option<Instant> = None;
    let mut warn = |what: &str, e: &io::Error| {
        if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            last_warn = Some(Instant::now());
            log::warn!("access log: {what}: {e} (lines are dropped and counted; logged at most once a minute)");
        }
    };
    loop {
        // The writer wakes on its own clock and drains what queued up: a
        // sender never has to wake it, so a request costs one formatted line
        // and a lock-free push, not a thread switch and a write(2).
        std::thread::sleep(TICK);
        let got = rx.try_recv();
        let now_gen = REOPEN_GENERATION.load(Ordering::Relaxed);
        let asked = shared.reopen.swap(false, Ordering::AcqRel);
        let retry = sink.out.is_none() && last_retry.elapsed() >= Duration::from_secs(5);
        if now_gen != generation || asked || retry {
            generation = now_gen;
            last_retry = Instant::now();
            shared
                .written
                .fetch_add(flush(&mut sink, &mut pending), Ordering::Relaxed);
            if let Err(e) = sink.reopen() {
                warn("reopen failed", &e);
            }
        }
        let mut disconnected = false;
        if let Ok(first) = got {
            // Batch: take what is waiting (bounded), then flush once.
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(line) = next.take() {
                write_line(&mut sink, &line, &mut pending, &shared, &mut warn);
                taken += 1;
                if taken < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(l) => next = Some(l),
                        Err(mpsc::TryRecvError::Empty) => {}
                        Err(mpsc::TryRecvError::Disconnected) => disconnected = true,
                    }
                }
            }
        } else if got == Err(mpsc::TryRecvError::Disconnected) {
            disconnected = true;
        }
        if pending > 0 {
            let before = pending;
            let n = flush(&mut sink, &mut pending);
            if n < before {
                shared.dropped.fetch_add(before - n, Ordering::Relaxed);
                warn("flush failed", &io::Error::other("write error"));
            }
            shared.written.fetch_add(n, Ordering::Relaxed);
        }
        if disconnected {
            return;
        }
    }
}

fn write_line(
    sink: &mut Sink,
    line: &str,
    pending: &mut u64,
    shared: &Shared,
    warn: &mut impl FnMut(&str, &io::Error),
) {
    match sink.out.as_mut() {
        Some(w) => match w.write_all(line.as_bytes()) {
            Ok(()) => *pending += 1,
            Err(e) => {
                shared.dropped.fetch_add(*pending + 1, Ordering::Relaxed);
                *pending = 0;
                warn("write failed", &e);
                sink.out = None;
            }
        },
        None => {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Flushes the buffered lines; returns how many reached the target.
fn flush(sink: &mut Sink, pending: &mut u64) -> u64 {
    let n = std::mem::take(pending);
    match sink.out.as_mut().map(|w| w.flush()) {
        Some(Ok(())) => n,
        Some(Err(_)) => {
            sink.out = None;
            0
        }
        None => 0,
    }
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

fn redacted_query(query: &str, names: &[String]) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, has_value) = match pair.split_once('=') {
            Some((n, _)) => (n, true),
            None => (pair, false),
        };
        let decoded = decode_name(name);
        if has_value && names.iter().any(|n| n.eq_ignore_ascii_case(&decoded)) {
            out.push_str(name);
            out.push_str("=[REDACTED]");
        } else {
            out.push_str(pair);
        }
    }
    out
}

fn decode_name(name: &str) -> String {
    let plus = name.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    // Most values need no escaping: copy them whole.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn field_str(out: &mut String, key: &str, v: Option<&str>) {
    if let Some(v) = v {
        out.push_str(",\"");
        out.push_str(key);
        out.push_str("\":");
        json_str(out, v);
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

fn json_line(e: &AccessEntry<'_>, redact: &[String]) -> String {
    let mut s = String::with_capacity(512);
    s.push_str("{\"time\":\"");
    let _ = write!(s, "{}", humantime::format_rfc3339_millis(e.time));
    s.push('"');
    field_str(&mut s, "request_id", Some(e.request_id));
    match e.client_ip {
        Some(ip) => {
            let _ = write!(s, ",\"client_ip\":\"{ip}\"");
        }
        None => s.push_str(",\"client_ip\":null"),
    }
    field_str(&mut s, "method", Some(e.method));
    field_str(&mut s, "host", Some(e.host));
    field_str(&mut s, "path", Some(e.path));
    if let Some(q) = e.query {
        field_str(&mut s, "query", Some(&redacted_query(q, redact)));
    }
    field_str(&mut s, "protocol", Some(e.protocol));
    let _ = write!(
        s,
        ",\"status\":{},\"bytes_sent\":{},\"bytes_received\":{},\"duration_ms\":{:.3}",
        e.status,
        e.bytes_sent,
        e.bytes_received,
        ms(e.duration)
    );
    field_str(&mut s, "route", e.route);
    field_str(&mut s, "upstream_node", e.upstream_node);
    if let Some(a) = e.upstream_addr {
        let _ = write!(s, ",\"upstream_addr\":\"{a}\"");
    }
    if let Some(t) = e.upstream_time {
        let _ = write!(s, ",\"upstream_time_ms\":{:.3}", ms(t));
    }
    field_str(&mut s, "cache", e.cache);
    field_str(&mut s, "waf", e.waf);
    field_str(&mut s, "waf_rules", e.waf_rules);
    field_str(&mut s, "limit", e.limit);
    field_str(&mut s, "trace_id", e.trace_id);
    field_str(&mut s, "user_agent", e.user_agent);
    field_str(&mut s, "referer", e.referer);
    s.push('}');
    s
}

/// nginx's escaping in the access log: `"`, `\`, controls and non-ASCII as `\xHH`.
fn nginx_escape(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `06/Dec/2026:11:46:08 +0000` (always UTC).
fn time_local(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn combined_line(e: &AccessEntry<'_>, redact: &[String]) -> String {
    let mut s = String::with_capacity(256);
    match e.client_ip {
        Some(ip) => {
            let _ = write!(s, "{ip}");
        }
        None => s.push('-'),
    }
    let _ = write!(s, " - - [{}] \"", time_local(e.time));
    nginx_escape(&mut s, e.method);
    s.push(' ');
    nginx_escape(&mut s, e.path);
    if let Some(q) = e.query {
        s.push('?');
        nginx_escape(&mut s, &redacted_query(q, redact));
    }
    s.push(' ');
    nginx_escape(&mut s, e.protocol);
    let _ = write!(s, "\" {} {} \"", e.status, e.bytes_sent);
    nginx_escape(&mut s, e.referer.unwrap_or("-"));
    s.push_str("\" \"");
    nginx_escape(&mut s, e.user_agent.unwrap_or("-"));
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["password", "token", "_csrf_token", "code", "secret"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn entry(query: Option<&'static str>) -> AccessEntry<'static> {
        AccessEntry {
            time: UNIX_EPOCH + Duration::from_millis(1_796_557_568_123),
            request_id: "abc",
            client_ip: Some("203.0.113.7".parse().unwrap()),
            method: "GET",
            host: "app.test",
            path: "/login",
            query,
            protocol: "HTTP/1.1",
            status: 200,
            bytes_sent: 12,
            bytes_received: 0,
            duration: Duration::from_micros(1500),
            route: Some("/*"),
            upstream_node: Some("n0"),
            upstream_addr: Some("127.0.0.1:4000".parse().unwrap()),
            upstream_time: Some(Duration::from_millis(1)),
            cache: None,
            waf: None,
            waf_rules: None,
            limit: None,
            trace_id: None,
            user_agent: Some("ua \"q\"\u{1}"),
            referer: None,
        }
    }

    fn log(format: Format) -> AccessLog {
        AccessLog::new(AccessLogConfig {
            target: Target::Stderr,
            format,
            redact: names(),
            queue: 4,
        })
    }

    #[test]
    fn json_line_has_the_fields_and_redacts() {
        let e = entry(Some(
            "password=p&pass%77ord=q&TOKEN=t&_csrf_token=c&next=%2Fa&flag",
        ));
        let line = log(Format::Json).format_line(&e);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2026-12-06T11:46:08.123Z");
        assert_eq!(
            v["query"],
            "password=[REDACTED]&pass%77ord=[REDACTED]&TOKEN=[REDACTED]&_csrf_token=[REDACTED]&next=%2Fa&flag"
        );
        assert_eq!(v["client_ip"], "203.0.113.7");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream_addr"], "127.0.0.1:4000");
        assert_eq!(v["user_agent"], "ua \"q\"\u{1}");
        assert!(v.get("cache").is_none() && v.get("referer").is_none());
    }

    #[test]
    fn combined_line_is_nginx_shaped() {
        let line = log(Format::Combined).format_line(&entry(Some("code=1&x=2")));
        assert_eq!(
            line,
            "203.0.113.7 - - [06/Dec/2026:11:46:08 +0000] \"GET /login?code=[REDACTED]&x=2 HTTP/1.1\" 200 12 \"-\" \"ua \\x22q\\x22\\x01\""
        );
        assert_eq!(time_local(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(
            time_local(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "29/Feb/2000:00:00:00 +0000"
        );
    }

    #[test]
    fn unstarted_or_unopenable_sinks_drop_and_count() {
        let l = log(Format::Json);
        l.record(&entry(None));
        assert_eq!(l.dropped(), 1);
        let bad = AccessLog::new(AccessLogConfig {
            target: Target::File("/nonexistent-dir-bext/x.log".into()),
            format: Format::Json,
            redact: vec![],
            queue: 1,
        });
        assert!(bad.start().is_err());
        for _ in 0..100 {
            bad.record(&entry(None));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while bad.dropped() < 100 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(bad.dropped(), 100);
        assert_eq!(bad.written(), 0);
    }

    #[test]
    fn file_is_written_and_reopened_after_a_rename() {
        let dir = std::env::temp_dir().join(format!("bext-al-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        let l = AccessLog::new(AccessLogConfig {
            target: Target::File(path.clone()),
            format: Format::Json,
            redact: vec![],
            queue: 64,
        });
        l.start().unwrap();
        let wait = |n: u64| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while l.written() < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(l.written(), n);
        };
        for _ in 0..3 {
            l.record(&entry(None));
        }
        wait(3);
        std::fs::rename(&path, dir.join("a.log.1")).unwrap();
        l.reopen();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        l.record(&entry(None));
        wait(4);
        let old = std::fs::read_to_string(dir.join("a.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old.lines().count(), 3);
        assert_eq!(new.lines().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
