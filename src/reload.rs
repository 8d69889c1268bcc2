//! `bext reload`: a zero-downtime upgrade driven for the operator. It checks
//! the new config first (a broken config never touches the running process),
//! starts a new process with `-u`, tells the running one to hand over its
//! listening sockets (SIGQUIT), and waits until the new process has them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the new config is invalid; the running bext was not touched:\n{0}")]
    Config(config::ConfigErrors),
    #[error("no running bext: {0}")]
    NotRunning(String),
    #[error("cannot start the new bext process: {0}")]
    Spawn(std::io::Error),
    #[error("the new bext process exited ({0}) before taking over; check its log")]
    NewExited(std::process::ExitStatus),
    #[error("the new bext process did not take over within {0:?}")]
    Timeout(Duration),
    #[error("cannot signal the running bext (pid {pid}): {source}")]
    Signal { pid: i32, source: std::io::Error },
}

#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// Always start a new process (a new binary), never apply in place.
    pub upgrade: bool,
    pub config: PathBuf,
    /// Start the new process as a daemon (as under systemd's Type=forking).
    pub daemon: bool,
    /// Where the new process writes its output. `None`: `server.error_log`,
    /// else where the running process writes (never this command's own
    /// stdout/stderr, so a caller capturing them is not held).
    pub log: Option<PathBuf>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum Reloaded {
    /// The running process applied the new config itself.
    InPlace {
        pid: i32,
        changed: Vec<String>,
        took: Duration,
    },
    /// A new process took the listening sockets over.
    Handoff {
        old_pid: i32,
        new_pid: i32,
        took: Duration,
        /// Why it was not applied in place (`None` with `--upgrade`).
        because: Option<String>,
    },
}

/// The running process's answer to `POST /__bext/reload`.
enum InPlace {
    Done(Vec<String>),
    /// Why, and the running process's `bext_reloads_total` (in-place
    /// reloads included) for the new one to continue from.
    Handoff(String, Option<u64>),
}

pub fn reload(opts: &ReloadOptions) -> Result<Reloaded, ReloadError> {
    let started = Instant::now();
    let plan = config::load(&opts.config).map_err(ReloadError::Config)?;
    let pid_file = Path::new(&plan.server.pid_file);
    let old_pid = read_pid(pid_file)
        .ok_or_else(|| ReloadError::NotRunning(format!("no pid in {}", pid_file.display())))?;
    if !alive(old_pid) {
        return Err(ReloadError::NotRunning(format!(
            "pid {old_pid} from {} is not running",
            pid_file.display()
        )));
    }
    let mut because = None;
    let mut reloads = reloads_of(old_pid);
    if !opts.upgrade {
        match ask_in_place(&plan, &opts.config) {
            Ok(InPlace::Done(changed)) => {
                return Ok(Reloaded::InPlace {
                    pid: old_pid,
                    changed,
                    took: started.elapsed(),
                })
            }
            Ok(InPlace::Handoff(why, count)) => {
                because = Some(why);
                reloads = count.unwrap_or(reloads);
            }
            Err(why) => {
                because = Some(format!(
                    "the running bext did not take an in-place reload ({why})"
                ))
            }
        }
    }
    let log = opts
        .log
        .clone()
        .or_else(|| plan.server.error_log.clone().map(PathBuf::from));
    let reloads = reloads + 1;
    let output = match log {
        Some(path) => Output::File(path),
        None => Output::Inherit(old_pid),
    };
    let mut child = spawn_new(&opts.config, opts.daemon, output, reloads)?;
    // The running process connects to the upgrade socket the new one listens
    // on, retrying until it is there, so the signal may go out right away.
    signal(old_pid, libc::SIGQUIT)?;
    let new_pid = wait_takeover(pid_file, old_pid, &mut child, opts)?;
    Ok(Reloaded::Handoff {
        old_pid,
        new_pid,
        took: started.elapsed(),
        because,
    })
}

/// Asks the running process (its admin API on the first plain listener,
/// over loopback when that listens on every address) to apply `config` in
/// place. `Err` when it cannot be asked (an older bext, a refused address).
fn ask_in_place(plan: &config::Plan, config: &Path) -> Result<InPlace, String> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let listen = plan.server.listen.first().ok_or("no listen address")?;
    let ip = match listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, listen.port());
    let path = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    let body = serde_json::json!({ "config": path }).to_string();
    let (status, reply) = crate::admin::post(
        addr,
        "localhost",
        "/__bext/reload",
        plan.admin.token.as_deref(),
        &body,
        Duration::from_secs(30),
    )
    .map_err(|e| match e {
        crate::admin::CallError::Connect(e) | crate::admin::CallError::Io(e) => {
            format!("{addr}: {e}")
        }
        crate::admin::CallError::Reply => "no HTTP answer".to_owned(),
    })?;
    let json: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
    match status {
        200 => Ok(InPlace::Done(
            json["changed"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        )),
        409 => Ok(InPlace::Handoff(
            json["handoff"]
                .as_str()
                .unwrap_or("a new process is needed")
                .to_owned(),
            json["reloads"].as_u64(),
        )),
        422 => Err(format!("it found the config invalid: {}", json["errors"])),
        s => Err(format!("HTTP {s} from {addr}/__bext/reload")),
    }
}

/// How many reloads the running process's chain has seen: the variable it
/// was started with (0 for a process not started by `bext reload`, or when
/// its environment cannot be read).
fn reloads_of(pid: i32) -> u64 {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return 0;
    };
    let prefix = format!("{}=", crate::telemetry::RELOADS_ENV);
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Where the new process writes its output. Never this command's own
/// stdout/stderr: a caller that captures them (`out=$(bext reload …)`,
/// Ansible, `subprocess.run(capture_output=True)`) would wait until that
/// server exits.
enum Output {
    /// `--log` or `server.error_log`.
    File(PathBuf),
    /// Whatever the running process writes to (its terminal, file, pipe or
    /// journal socket), which the new process replaces.
    Inherit(i32),
}

/// A duplicate of the running process's `fd`: `pidfd_getfd` (Linux 5.6;
/// works for any kind of file, sockets included, when we may trace the
/// process), else reopening `/proc/PID/fd/FD` (terminals, pipes, files).
fn output_of(pid: i32, fd: i32) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscalls; every descriptor they return is owned below.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        if pidfd >= 0 {
            let dup = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32;
            libc::close(pidfd);
            if dup >= 0 {
                return Ok(std::fs::File::from_raw_fd(dup));
            }
        }
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(format!("/proc/{pid}/fd/{fd}"))
}

fn spawn_new(
    config: &Path,
    daemon: bool,
    output: Output,
    reloads: u64,
) -> Result<Child, ReloadError> {
    let exe = std::env::current_exe().map_err(ReloadError::Spawn)?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve").arg("-c").arg(config).arg("-u");
    // `bext_reloads_total` continues across the processes of one chain.
    cmd.env(crate::telemetry::RELOADS_ENV, reloads.to_string());
    if daemon {
        cmd.arg("-d");
    }
    cmd.stdin(Stdio::null());
    match output {
        Output::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(ReloadError::Spawn)?;
            let err = file.try_clone().map_err(ReloadError::Spawn)?;
            cmd.stdout(file).stderr(err);
        }
        Output::Inherit(pid) => match (output_of(pid, 1), output_of(pid, 2)) {
            (Ok(out), Ok(err)) => {
                cmd.stdout(out).stderr(err);
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!(
                    "warning: cannot reach the output of the running bext (pid {pid}: {e}); the new process writes to /dev/null: set server.error_log or pass --log FILE"
                );
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        },
    }
    // Its own process group: the new server must outlive this command and
    // not receive the terminal's Ctrl-C meant for it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn().map_err(ReloadError::Spawn)
}

fn wait_takeover(
    pid_file: &Path,
    old_pid: i32,
    child: &mut Child,
    opts: &ReloadOptions,
) -> Result<i32, ReloadError> {
    let deadline = Instant::now() + opts.timeout;
    let mut launcher_done = false;
    while Instant::now() < deadline {
        if let Some(pid) = read_pid(pid_file).filter(|p| *p != old_pid && alive(*p)) {
            return Ok(pid);
        }
        if !launcher_done {
            match child.try_wait() {
                // A daemon's launcher exits 0 once it has forked.
                Ok(Some(status)) if opts.daemon && status.success() => launcher_done = true,
                Ok(Some(status)) => return Err(ReloadError::NewExited(status)),
                Ok(None) | Err(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(ReloadError::Timeout(opts.timeout))
}

pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

fn signal(pid: i32, sig: libc::c_int) -> Result<(), ReloadError> {
    // SAFETY: plain kill(2) on a pid read from our own pid file.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(ReloadError::Signal {
            pid,
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Records this process in `server.pid_file` (foreground mode; Pingora writes it
/// itself when daemonized). Called once the listening sockets are ours.
pub fn write_pid_file(path: &str) {
    let pid = std::process::id();
    if let Err(e) = std::fs::write(path, format!("{pid}\n")) {
        log::warn!("cannot write pid file {path}: {e}");
    }
}
