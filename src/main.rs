//! The `bext` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use bext::server::{self, RunOptions};
use bext::{config, demo, demo_origin};

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
    /// Edge cache operations.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Print the version.
    Version,
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

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bext: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Version => {
            println!("bext {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => match config::load(&config) {
            Ok(plan) => {
                print!("{plan}");
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
