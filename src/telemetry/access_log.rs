//! The access log: one line per finished request, JSON (default) or nginx's
//! `combined`, to stdout, stderr or a file. A request's thread only copies
//! its [`AccessEntry`] in raw form (`record`) into one bounded shared buffer;
//! a writer thread takes that buffer every 50 ms, formats the lines and
//! writes them. When the buffer is full or the disk fails the line is
//! dropped and counted, so a slow disk never makes a request wait. The file
//! is reopened
//! on SIGUSR1 (logrotate's `postrotate`, as for nginx). Query values of the
//! configured parameter names are redacted; cookies and `Authorization` are
//! never part of an [`AccessEntry`].

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod record;

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
    /// Bytes of entries waiting for the writer at most (it takes them every
    /// 50 ms); past it lines are dropped and counted.
    pub buffer_bytes: usize,
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
    /// The WAF's anomaly score when it matched (block or detect), else 0.
    pub waf_score: u32,
    pub duration: Duration,
    pub route: Option<&'a str>,
    pub upstream_node: Option<&'a str>,
    pub upstream_addr: Option<SocketAddr>,
    pub upstream_time: Option<Duration>,
    pub cache: Option<&'a str>,
    pub waf: Option<&'a str>,
    pub waf_rules: Option<&'a str>,
    pub limit: Option<&'a str>,
    /// The W3C trace id (logged as 32 lowercase hex digits).
    pub trace_id: Option<[u8; 16]>,
    pub user_agent: Option<&'a str>,
    pub referer: Option<&'a str>,
}

/// How often the writer takes the waiting lines.
const TICK: Duration = Duration::from_millis(50);
/// The raw-entry buffers keep up to this much capacity between ticks (a busy
/// edge fills ~1 MiB per tick at 90k req/s; re-growing it every tick would
/// churn the allocator on the request thread), and are freed after a burst
/// larger than this.
const KEEP_CAPACITY: usize = 4 << 20;
/// Formatted text is written in chunks of about this size, so the writer's
/// text buffer stays small and allocated once whatever the request rate.
const WRITE_CHUNK: usize = 64 << 10;
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

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
    /// Set once the writer thread runs; before that lines are dropped.
    started: AtomicBool,
    /// Lines waiting for the writer, appended whole under a short lock.
    pending: Mutex<Pending>,
}

/// What the request threads hand the writer: raw entries, back to back.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    lines: u64,
}

thread_local! {
    /// Each request thread encodes into its own buffer, so the shared lock
    /// is held only for a memcpy and no line allocates.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

pub struct AccessLog {
    cfg: AccessLogConfig,
    shared: Arc<Shared>,
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
                started: AtomicBool::new(false),
                pending: Mutex::new(Pending::default()),
            }),
        }
    }

    /// Starts the writer thread (once). An open failure is returned, but the
    /// sink stays usable: lines are dropped and counted while the writer
    /// retries opening every 5 s.
    pub fn start(&self) -> io::Result<()> {
        if self.shared.started.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut sink = Sink::new(self.cfg.target.clone());
        let opened = sink.open();
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("bext-access-log".into())
            .spawn({
                let (format, redact) = (self.cfg.format, self.cfg.redact.clone());
                move || writer(sink, shared, format, &redact)
            });
        if let Err(e) = spawned {
            self.shared.started.store(false, Ordering::Release);
            return Err(e);
        }
        opened
    }

    /// Appends the entry for the writer to format; never blocks on I/O. An
    /// entry that does not fit in the buffer (writer behind, disk stuck) is
    /// dropped and counted.
    pub fn record(&self, e: &AccessEntry<'_>) {
        if !self.shared.started.load(Ordering::Acquire) {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        SCRATCH.with(|scratch| {
            let Ok(mut line) = scratch.try_borrow_mut() else {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            };
            line.clear();
            record::encode(e, &mut line);
            let mut p = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if p.buf.len() + line.len() > self.cfg.buffer_bytes {
                drop(p);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            p.buf.extend_from_slice(&line);
            p.lines += 1;
        });
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
    #[cfg(test)]
    pub fn format_line(&self, e: &AccessEntry<'_>) -> String {
        let mut out = Vec::with_capacity(512);
        format_line(self.cfg.format, &self.cfg.redact, e, &mut out);
        // Every byte written is ASCII or copied from a `&str` whole.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// Where lines go.
struct Sink {
    target: Target,
    out: Option<Box<dyn Write + Send>>,
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
        self.out = Some(w);
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.out = None;
        self.open()
    }

    /// Writes one batch of whole lines; on failure the sink is closed (and
    /// reopened later) and the batch counts as dropped.
    fn write_batch(&mut self, buf: &[u8]) -> io::Result<()> {
        let Some(w) = self.out.as_mut() else {
            return Err(io::Error::other("not open"));
        };
        let r = w.write_all(buf).and_then(|()| w.flush());
        if r.is_err() {
            self.out = None;
        }
        r
    }
}

fn format_line(format: Format, redact: &[String], e: &AccessEntry<'_>, out: &mut Vec<u8>) {
    match format {
        Format::Json => json_line(out, e, redact),
        Format::Combined => combined_line(out, e, redact),
    }
}

fn writer(mut sink: Sink, shared: Arc<Shared>, format: Format, redact: &[String]) {
    let mut generation = REOPEN_GENERATION.load(Ordering::Relaxed);
    let mut spare: Vec<u8> = Vec::new();
    let mut text: Vec<u8> = Vec::with_capacity(WRITE_CHUNK + 4096);
    let mut last_retry = Instant::now();
    let mut last_warn: Option<Instant> = None;
    let mut warn = |what: &str, e: &io::Error| {
        if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            last_warn = Some(Instant::now());
            log::warn!("access log: {what}: {e} (lines are dropped and counted; logged at most once a minute)");
        }
    };
    loop {
        // The writer wakes on its own clock and takes what queued up: a
        // request never wakes it, so a line costs the request an encode and
        // a memcpy under an uncontended lock, not a thread switch and a write(2).
        std::thread::sleep(TICK);
        let entries = {
            let mut p = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut p.buf, &mut spare);
            std::mem::take(&mut p.lines)
        };
        let now_gen = REOPEN_GENERATION.load(Ordering::Relaxed);
        let asked = shared.reopen.swap(false, Ordering::AcqRel);
        let retry = sink.out.is_none() && last_retry.elapsed() >= Duration::from_secs(5);
        if now_gen != generation || asked || retry {
            // Lines taken before the signal still go to the old file's
            // successor: logrotate has renamed it already.
            generation = now_gen;
            last_retry = Instant::now();
            if let Err(e) = sink.reopen() {
                warn("reopen failed", &e);
            }
        }
        // Formatting happens here, off the request threads, a chunk at a time.
        let mut at = 0;
        let mut decoded = 0u64;
        loop {
            text.clear();
            let mut lines = 0u64;
            while text.len() < WRITE_CHUNK {
                let Some((e, used)) = record::decode(&spare[at..]) else {
                    break;
                };
                format_line(format, redact, &e, &mut text);
                text.push(b'\n');
                at += used;
                lines += 1;
            }
            if lines == 0 {
                break;
            }
            decoded += lines;
            match sink.write_batch(&text) {
                Ok(()) => {
                    shared.written.fetch_add(lines, Ordering::Relaxed);
                }
                Err(e) => {
                    shared.dropped.fetch_add(lines, Ordering::Relaxed);
                    warn("write failed", &e);
                }
            }
        }
        // Only entries bext encoded itself are here, so nothing is left
        // over; should anything be, it is counted rather than lost quietly.
        shared
            .dropped
            .fetch_add(entries.saturating_sub(decoded), Ordering::Relaxed);
        spare.clear();
        // A burst must not keep its peak allocation for the process's life.
        if spare.capacity() > KEEP_CAPACITY {
            spare = Vec::new();
        }
        if text.capacity() > 2 * WRITE_CHUNK {
            text = Vec::with_capacity(WRITE_CHUNK + 4096);
        }
    }
}

// ---------------------------------------------------------------------------
// Formatting (by hand into bytes: `fmt::write` was most of a line's cost)
// ---------------------------------------------------------------------------

/// Calls `emit` with the pieces of the query, the values of the listed
/// parameter names replaced by `[REDACTED]`.
fn redact_query(query: &str, names: &[String], mut emit: impl FnMut(&str)) {
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            emit("&");
        }
        match pair.split_once('=') {
            Some((name, _)) if is_redacted(name, names) => {
                emit(name);
                emit("=[REDACTED]");
            }
            _ => emit(pair),
        }
    }
}

fn is_redacted(name: &str, names: &[String]) -> bool {
    if names.is_empty() {
        return false;
    }
    // Only an encoded name needs decoding (`pass%77ord`, `a+b`).
    if !name.bytes().any(|b| b == b'%' || b == b'+') {
        return names.iter().any(|n| n.eq_ignore_ascii_case(name));
    }
    let plus = name.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&plus).decode_utf8_lossy();
    names.iter().any(|n| n.eq_ignore_ascii_case(&decoded))
}

/// Whether any byte is a control, `"` or `\\`: eight bytes per step (the
/// classic "has a zero byte" bit trick), since almost no value needs escaping.
fn needs_json_escape(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_le_bytes(w);
        // `v - 0x20..` borrows into the high bit exactly where a byte < 0x20
        // (and is not itself >= 0x80) is; the other two are equality tests.
        if v.wrapping_sub(ONES * 0x20) & !v & HIGH != 0
            || has_zero(v ^ (ONES * u64::from(b'"')))
            || has_zero(v ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

fn json_escape(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if !needs_json_escape(b) {
        out.extend_from_slice(b);
        return;
    }
    let mut from = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            c if c < 0x20 => {
                out.extend_from_slice(&b[from..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX_UPPER[usize::from(c >> 4)]);
                out.push(HEX_UPPER[usize::from(c & 0x0f)]);
                from = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&b[from..i]);
        out.extend_from_slice(esc);
        from = i + 1;
    }
    out.extend_from_slice(&b[from..]);
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    json_escape(out, s);
    out.push(b'"');
}

/// `,"key":"value"` when there is a value. `key` is a literal `,"key":`.
fn field_str(out: &mut Vec<u8>, key: &str, v: Option<&str>) {
    if let Some(v) = v {
        out.extend_from_slice(key.as_bytes());
        json_str(out, v);
    }
}

/// `,"key":"value"` for values bext made itself and that need no escaping:
/// request ids (checked on arrival), method tokens, protocol and outcome
/// names, rule ids.
fn field_raw(out: &mut Vec<u8>, key: &str, v: Option<&str>) {
    if let Some(v) = v {
        debug_assert!(!needs_json_escape(v.as_bytes()));
        out.extend_from_slice(key.as_bytes());
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    }
}

fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with three decimals (`1.500`), from whole microseconds.
fn millis(out: &mut Vec<u8>, d: Duration) {
    let us = d.as_micros();
    int(out, us / 1000);
    let frac = (us % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

fn ip(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                int(out, o);
            }
        }
        // Rare on the request path; the standard formatting knows the
        // compression rules.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn socket_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => ip(out, IpAddr::V4(*v4.ip())),
        SocketAddr::V6(v6) => {
            out.push(b'[');
            ip(out, IpAddr::V6(*v6.ip()));
            out.push(b']');
        }
    }
    out.push(b':');
    int(out, a.port());
}

/// The civil date and time of a Unix second (UTC), Howard Hinnant's
/// days-to-civil: (year, month 1..=12, day, hour, minute, second).
fn civil(secs: u64) -> (i64, usize, i64, i64, i64, i64) {
    let secs = secs as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month as usize,
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
}

fn two(out: &mut [u8], n: i64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// `2026-12-06T11:46:08.` for one second; the caller adds `mmmZ`.
fn rfc3339_second(secs: u64) -> [u8; 20] {
    let (y, mo, d, h, mi, s) = civil(secs);
    let mut b = *b"0000-00-00T00:00:00.";
    two(&mut b[0..2], y / 100);
    two(&mut b[2..4], y % 100);
    two(&mut b[5..7], mo as i64);
    two(&mut b[8..10], d);
    two(&mut b[11..13], h);
    two(&mut b[14..16], mi);
    two(&mut b[17..19], s);
    b
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `06/Dec/2026:11:46:08 +0000` (always UTC).
fn time_local_bytes(secs: u64) -> [u8; 26] {
    let (y, mo, d, h, mi, s) = civil(secs);
    let mut b = *b"00/Mon/0000:00:00:00 +0000";
    two(&mut b[0..2], d);
    b[3..6].copy_from_slice(MONTHS[mo - 1]);
    two(&mut b[7..9], y / 100);
    two(&mut b[9..11], y % 100);
    two(&mut b[12..14], h);
    two(&mut b[15..17], mi);
    two(&mut b[18..20], s);
    b
}

thread_local! {
    /// The formatted current second, per thread: lines within one second
    /// share their date and time.
    static SECOND: Cell<(u64, [u8; 20], [u8; 26])> = const { Cell::new((u64::MAX, [0; 20], [0; 26])) };
}

/// (the RFC 3339 prefix, nginx's `$time_local`, milliseconds) of `t`.
fn stamps(t: SystemTime) -> ([u8; 20], [u8; 26], u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    SECOND.with(|c| {
        let (at, rfc, local) = c.get();
        if at == secs {
            return (rfc, local, d.subsec_millis());
        }
        let v = (secs, rfc3339_second(secs), time_local_bytes(secs));
        c.set(v);
        (v.1, v.2, d.subsec_millis())
    })
}

fn json_line(s: &mut Vec<u8>, e: &AccessEntry<'_>, redact: &[String]) {
    let (rfc, _, ms) = stamps(e.time);
    s.extend_from_slice(b"{\"time\":\"");
    s.extend_from_slice(&rfc);
    let ms = ms as u16;
    s.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
        b'"',
    ]);
    field_raw(s, ",\"request_id\":", Some(e.request_id));
    match e.client_ip {
        Some(a) => {
            s.extend_from_slice(b",\"client_ip\":\"");
            ip(s, a);
            s.push(b'"');
        }
        None => s.extend_from_slice(b",\"client_ip\":null"),
    }
    field_raw(s, ",\"method\":", Some(e.method));
    field_str(s, ",\"host\":", Some(e.host));
    field_str(s, ",\"path\":", Some(e.path));
    if let Some(q) = e.query {
        s.extend_from_slice(b",\"query\":\"");
        redact_query(q, redact, |piece| json_escape(s, piece));
        s.push(b'"');
    }
    field_raw(s, ",\"protocol\":", Some(e.protocol));
    s.extend_from_slice(b",\"status\":");
    int(s, e.status);
    s.extend_from_slice(b",\"bytes_sent\":");
    int(s, e.bytes_sent);
    s.extend_from_slice(b",\"bytes_received\":");
    int(s, e.bytes_received);
    s.extend_from_slice(b",\"duration_ms\":");
    millis(s, e.duration);
    field_str(s, ",\"route\":", e.route);
    field_str(s, ",\"upstream_node\":", e.upstream_node);
    if let Some(a) = e.upstream_addr {
        s.extend_from_slice(b",\"upstream_addr\":\"");
        socket_addr(s, a);
        s.push(b'"');
    }
    if let Some(t) = e.upstream_time {
        s.extend_from_slice(b",\"upstream_time_ms\":");
        millis(s, t);
    }
    field_raw(s, ",\"cache\":", e.cache);
    field_raw(s, ",\"waf\":", e.waf);
    field_raw(s, ",\"waf_rules\":", e.waf_rules);
    if e.waf_score > 0 {
        s.extend_from_slice(b",\"waf_score\":");
        int(s, e.waf_score);
    }
    field_raw(s, ",\"limit\":", e.limit);
    if let Some(id) = &e.trace_id {
        s.extend_from_slice(b",\"trace_id\":\"");
        let mut hex = [0u8; 32];
        super::trace::write_hex(id, &mut hex);
        s.extend_from_slice(&hex);
        s.push(b'"');
    }
    field_str(s, ",\"user_agent\":", e.user_agent);
    field_str(s, ",\"referer\":", e.referer);
    s.push(b'}');
}

/// nginx's escaping in the access log: `"`, `\`, controls and non-ASCII as `\xHH`.
fn nginx_escape(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let mut from = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
            out.extend_from_slice(&b[from..i]);
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX_UPPER[usize::from(c >> 4)],
                HEX_UPPER[usize::from(c & 0x0f)],
            ]);
            from = i + 1;
        }
    }
    out.extend_from_slice(&b[from..]);
}

fn combined_line(s: &mut Vec<u8>, e: &AccessEntry<'_>, redact: &[String]) {
    match e.client_ip {
        Some(a) => ip(s, a),
        None => s.push(b'-'),
    }
    let (_, local, _) = stamps(e.time);
    s.extend_from_slice(b" - - [");
    s.extend_from_slice(&local);
    s.extend_from_slice(b"] \"");
    nginx_escape(s, e.method);
    s.push(b' ');
    nginx_escape(s, e.path);
    if let Some(q) = e.query {
        s.push(b'?');
        redact_query(q, redact, |piece| nginx_escape(s, piece));
    }
    s.push(b' ');
    nginx_escape(s, e.protocol);
    s.extend_from_slice(b"\" ");
    int(s, e.status);
    s.push(b' ');
    int(s, e.bytes_sent);
    s.extend_from_slice(b" \"");
    nginx_escape(s, e.referer.unwrap_or("-"));
    s.extend_from_slice(b"\" \"");
    nginx_escape(s, e.user_agent.unwrap_or("-"));
    s.push(b'"');
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
            waf_score: 0,
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
            buffer_bytes: 4096,
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
    fn the_fast_escape_check_agrees_with_the_byte_loop() {
        let slow = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        for c in 0u8..=255 {
            for at in 0..20 {
                let mut v = vec![b'a'; 20];
                v[at] = c;
                assert_eq!(needs_json_escape(&v), slow(&v), "byte {c:#x} at {at}");
                // Next to bytes that borrow or carry in the bit trick.
                v[(at + 1) % 20] = 0x80;
                v[(at + 19) % 20] = c.wrapping_add(1);
                assert_eq!(needs_json_escape(&v), slow(&v), "byte {c:#x} at {at}");
            }
        }
        let mut out = Vec::new();
        json_escape(&mut out, "a\"b\\c\u{1}d\u{e9}\n");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\\"b\\\\c\\u0001d\u{e9}\\n"
        );
    }

    #[test]
    fn combined_line_is_nginx_shaped() {
        let line = log(Format::Combined).format_line(&entry(Some("code=1&x=2")));
        assert_eq!(
            line,
            "203.0.113.7 - - [06/Dec/2026:11:46:08 +0000] \"GET /login?code=[REDACTED]&x=2 HTTP/1.1\" 200 12 \"-\" \"ua \\x22q\\x22\\x01\""
        );
        let local = |secs| String::from_utf8(time_local_bytes(secs).to_vec()).unwrap();
        assert_eq!(local(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(local(951_782_400), "29/Feb/2000:00:00:00 +0000");
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
            buffer_bytes: 1,
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
    fn a_burst_larger_than_a_write_chunk_is_written_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("burst.log");
        let l = AccessLog::new(AccessLogConfig {
            target: Target::File(path.clone()),
            format: Format::Json,
            redact: vec![],
            buffer_bytes: 8 << 20,
        });
        l.start().unwrap();
        // ~250 bytes a line: several write chunks' worth, most in one tick.
        let n = 4 * WRITE_CHUNK / 200;
        let ids: Vec<String> = (0..n).map(|i| format!("req-{i}")).collect();
        for id in &ids {
            let mut e = entry(None);
            e.request_id = id;
            l.record(&e);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while l.written() + l.dropped() < n as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!((l.written(), l.dropped()), (n as u64, 0));
        let text = std::fs::read_to_string(&path).unwrap();
        let got: Vec<String> = text
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                v["request_id"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(got, ids);
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
            buffer_bytes: 1 << 16,
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
