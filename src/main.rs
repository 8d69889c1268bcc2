//! The `bext` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use bext::reload::{self, ReloadOptions};
use bext::server::{self, RunOptions};
use bext::{config, demo, demo_origin, import};

// Pingora allocates per request (headers, buffers, tasks); mimalloc's
// thread-local free lists cost markedly less CPU than glibc malloc here.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "bext",
    version,
    about = "bext: the edge proxy in front of Phoenix (TLS, WAF, tag cache, LiveView-aware balancing)",
    after_help = "Start with `bext demo`, then write a bext.config.toml (see conf/bext.example.toml) and run `bext check -c bext.config.toml`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Config file.
        #[arg(short = 'c', long = "config", default_value = "bext.config.toml")]
        config: PathBuf,
        /// Run in the background (writes server.pid_file).
        #[arg(short = 'd', long)]
        daemon: bool,
        /// Take over the listening sockets of a running bext (graceful upgrade).
        #[arg(short = 'u', long)]
        upgrade: bool,
        /// Check the configuration and exit.
        #[arg(short = 't', long)]
        test: bool,
    },
    /// Validate a config file and print its routes and upstreams.
    Check {
        #[arg(short = 'c', long = "config", default_value = "bext.config.toml")]
        config: PathBuf,
    },
    /// Run bext in front of an embedded Phoenix-like demo app (no Phoenix needed).
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Detect the Phoenix project in DIR and write its bext.config.toml.
    Import(ImportArgs),
    /// Site commands (`bext site autoconfigure` = `bext import`).
    Site {
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// Zero-downtime reload: check the config, start a new bext that takes over
    /// the listening sockets, and let the running one drain.
    Reload {
        #[arg(short = 'c', long = "config", default_value = "bext.config.toml")]
        config: PathBuf,
        /// Start the new process as a daemon (systemd Type=forking).
        #[arg(short = 'd', long)]
        daemon: bool,
        /// Append the new process's output to this file (default: server.error_log,
        /// else where the running bext writes; never this command's own output).
        #[arg(long)]
        log: Option<PathBuf>,
        /// How long to wait for the new process to take over.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
        /// Always start a new process (a new bext binary), even when the
        /// config change could be applied in place.
        #[arg(long)]
        upgrade: bool,
    },
    /// Edge cache operations.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Hash a password for `auth = { basic = ["user:HASH"] }` (argon2id).
    /// Reads the password from the terminal (twice, not echoed) or, when
    /// stdin is not a terminal, from its first line.
    HashPassword,
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Same as `bext import`.
    Autoconfigure(ImportArgs),
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The Phoenix project directory (the one with mix.exs).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Overwrite an existing bext.config.toml.
    #[arg(long)]
    force: bool,
    /// Print the config instead of writing it.
    #[arg(long)]
    stdout: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::units::parse_duration(s)
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Purge cached entries through the admin API (POST /__bext/cache/purge).
    Purge {
        /// Purge every entry carrying this Cache-Tag (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Purge one URL (every variant, http and https).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Purge every path starting with this prefix ("/blog/" or "https://host/blog/").
        #[arg(long, value_name = "PREFIX")]
        prefix: Option<String>,
        /// Limit --prefix to one host.
        #[arg(long, value_name = "HOST", requires = "prefix")]
        host: Option<String>,
        /// Purge everything.
        #[arg(long)]
        all: bool,
        /// The bext listener serving /__bext/.
        #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
        admin: String,
        /// Admin bearer token (admin.token); defaults to $BEXT_ADMIN_TOKEN.
        #[arg(long)]
        token: Option<String>,
    },
}

/// mimalloc's `arena_eager_commit` (option 4 in v2 and v3). Committing arenas
/// lazily keeps bext's resident memory close to what it uses: eagerly
/// committed arenas made a freshly started proxy ~16 MiB bigger and a filled
/// cache look twice its budget. mimalloc reads its options when the process
/// loads, so the default is set at build time (`.cargo/config.toml`); this
/// call covers a build made with a CFLAGS of its own (arenas reserved from
/// here on).
#[cfg(feature = "mimalloc")]
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

fn main() -> ExitCode {
    // SAFETY: mi_option_set has no preconditions; it runs before any thread
    // is started.
    #[cfg(feature = "mimalloc")]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
    };
    bext::logging::init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bext: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_import(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    match import::import(&args.dir, args.force, args.stdout) {
        Ok(done) => {
            let p = &done.project;
            match &done.written {
                Some(path) => {
                    eprintln!(
                        "Phoenix app `{}` found ({}{}, {}, port {} from {}); wrote {}",
                        p.app,
                        if p.umbrella { "umbrella, " } else { "" },
                        if p.live_view {
                            "LiveView"
                        } else {
                            "no LiveView"
                        },
                        p.server.name(),
                        p.port,
                        p.port_source,
                        path.display()
                    );
                    eprintln!("Check it with: bext check -c {}\n", path.display());
                }
                None => print!("{}", done.config),
            }
            eprint!("{}", import::checklist(p));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("bext import: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Version => {
            println!("bext {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::HashPassword => {
            let password = read_new_password()?;
            let hash = bext::auth::hash_password(&password)
                .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
            println!("{hash}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => match config::load(&config) {
            Ok(plan) => {
                print!("{plan}");
                for w in config::runtime_warnings(&plan) {
                    eprintln!("warning: {w}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprintln!("{errors}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Serve {
            config,
            daemon,
            upgrade,
            test,
        } => {
            let plan = match config::load(&config) {
                Ok(plan) => plan,
                Err(errors) => {
                    eprintln!("{errors}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            server::run(
                plan,
                RunOptions {
                    daemon,
                    upgrade,
                    test,
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import(args)
        | Command::Site {
            command: SiteCommand::Autoconfigure(args),
        } => run_import(&args),
        Command::Reload {
            config,
            daemon,
            log,
            timeout,
            upgrade,
        } => {
            let opts = ReloadOptions {
                upgrade,
                config,
                daemon,
                log,
                timeout,
            };
            match reload::reload(&opts) {
                Ok(reload::Reloaded::InPlace { pid, changed, took }) => {
                    let what = if changed.is_empty() {
                        "no setting changed, files re-read".to_string()
                    } else {
                        changed.join(", ")
                    };
                    println!("bext reloaded in place: pid {pid} in {took:?} ({what})");
                    Ok(ExitCode::SUCCESS)
                }
                Ok(reload::Reloaded::Handoff {
                    old_pid,
                    new_pid,
                    took,
                    because,
                }) => {
                    let why = because
                        .map(|b| format!(" (new process: {b})"))
                        .unwrap_or_default();
                    println!(
                        "bext reloaded: pid {new_pid} took over from pid {old_pid} in {took:?}{why}"
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("bext reload failed: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Cache {
            command:
                CacheCommand::Purge {
                    tags,
                    url,
                    prefix,
                    host,
                    all,
                    admin,
                    token,
                },
        } => {
            let args = bext::cache::cli::PurgeArgs {
                tags,
                url,
                prefix,
                host,
                all,
            };
            let token = token.or_else(|| std::env::var("BEXT_ADMIN_TOKEN").ok());
            let reply = bext::cache::cli::purge(&admin, token.as_deref(), &args)?;
            println!("{reply}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { listen } => {
            let origin = demo_origin::DemoOrigin::spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
                .context("starting the demo origin")?;
            let plan = demo::plan(listen, origin.addr).context("building the demo config")?;
            print!("{}", demo::banner(listen, origin.addr));
            server::run(plan, RunOptions::default())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The password for `bext hash-password`: asked twice on a terminal, else
/// the first line of stdin (without its line ending).
fn read_new_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    anyhow::ensure!(!password.is_empty(), "empty password");
    Ok(password)
}
