//! Builds and runs the Pingora server from a [`Plan`]: listeners, the proxy
//! service, process options (daemon, graceful upgrade, pid file, grace period).
//! Everything here runs before Pingora forks for `-d`, so it starts no threads
//! and no runtimes.

use std::time::Duration;

use pingora::apps::http_app::HttpServer;
use pingora::proxy::http_proxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::config::Plan;
use crate::limits::LimitedApp;
use crate::proxy::BextProxy;
use crate::telemetry::{MetricsApp, TelemetryService};
use crate::upstream::farewell::ShutdownTunnels;
use crate::upstream::health::HealthService;
use crate::upstream::Upstreams;

/// Process-level switches from the command line (Pingora's `-d`, `-u`, `-t`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub daemon: bool,
    pub upgrade: bool,
    pub test: bool,
}

fn server_conf(plan: &Plan, opts: RunOptions) -> ServerConf {
    let s = &plan.server;
    ServerConf {
        daemon: opts.daemon,
        threads: s.threads,
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_timeout.as_secs()),
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        error_log: s.error_log.clone(),
        user: s.user.clone(),
        group: s.group.clone(),
        upstream_keepalive_pool_size: s.keepalive_pool_size,
        // Retries across nodes are decided by the upstream module (each pool's
        // `retries`); Pingora's bound only has to let them happen.
        max_retries: Upstreams::max_attempts(&plan.upstreams),
        // One single-threaded runtime per thread: each connection stays on the
        // thread that accepted it, which saves the work-stealing scheduler's
        // cross-thread wakeups on every request (nginx's worker model).
        work_stealing: false,
        ..ServerConf::default()
    }
}

/// Runs bext until it is told to stop. Only returns on a start-up failure.
pub fn run(plan: Plan, opts: RunOptions) -> anyhow::Result<()> {
    raise_nofile_limit();
    ignore_sighup();
    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        nocapture: false,
        test: opts.test,
        conf: None,
    };
    let conf = server_conf(&plan, opts);
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    // With -u this receives the listening sockets from the running process;
    // with -t it exits here once the configuration is known to load.
    server.bootstrap();
    if !opts.daemon {
        // Pingora writes the pid file only when it daemonizes; `bext reload`
        // and operators need it in the foreground too.
        crate::reload::write_pid_file(&plan.server.pid_file);
    }

    let listen = plan.server.listen.clone();
    let tls = plan.tls.clone();
    let h2c = plan.server.h2c;
    let grace = plan.server.grace_period;
    let shutdown_timeout = plan.server.shutdown_timeout;
    let metrics_listen = plan.telemetry.metrics_listen;
    let cluster = plan.cluster.clone();
    let config_digest = crate::cluster::config_digest(&plan.doc);
    let bext = BextProxy::new(plan);
    // Without [cluster] the cache keeps its single-node bus, the admin API
    // its single-node state, and no Redis code runs.
    let cluster_services = match &cluster {
        Some(c) => {
            let cache = bext.cache();
            let registry = cache.metrics_registry().unwrap_or_default();
            let wiring = crate::cluster::Wiring {
                limits: bext.limits(),
                maintenance: Box::new(bext.maintenance()),
                upstreams: bext.upstreams(),
                config_digest,
            };
            let redis = crate::cluster::redis(c, cache.store(), &registry, wiring)?;
            cache.set_purge_bus(redis.purges.clone());
            bext.set_shared_state(redis.state.clone());
            log::info!(
                "cluster: node {} shares purges, rate limits, maintenance and drain through {} (rate sync every {:?})",
                c.node_name,
                c.redis_display(),
                c.sync_interval
            );
            Some((
                background_service(
                    "cluster purges",
                    crate::cluster::PurgeBusService(redis.purges.clone()),
                ),
                background_service("cluster link", redis.link_service()),
            ))
        }
        None => None,
    };
    let limits = bext.limits();
    let telemetry = bext.telemetry();
    let maintenance = background_service(
        "maintenance state",
        crate::maintenance::MaintenanceWatch(Box::new(bext.maintenance())),
    );
    // Health probes run in their own service (started after the fork for -d).
    let health = background_service(
        "upstream health",
        HealthService::new(bext.upstreams(), bext.pools_generation()),
    );
    let farewell = background_service(
        "tunnel farewell",
        ShutdownTunnels::new(bext.upstreams(), grace),
    );
    // The HTTP/3 sidecar runs its own HttpProxy over a clone of the same state.
    let h3 = match tls.as_ref().filter(|t| t.http3) {
        Some(t) => Some(crate::h3::service(&server.configuration, bext.clone(), t)?),
        None => None,
    };
    let mut http = http_proxy(&server.configuration, bext);
    crate::tls::configure_http(&mut http, h2c);
    // The limits' listener layer (connection caps, request-head deadline) wraps the proxy app.
    let app =
        LimitedApp::new(http, limits).with_idle_drain(grace.saturating_sub(Duration::from_secs(1)));
    let mut proxy = Service::new("bext proxy".to_string(), app);
    for addr in &listen {
        proxy.add_tcp(&addr.to_string());
    }
    crate::tls::add_listeners(&mut proxy, tls.as_ref())?;
    server.add_service(proxy);
    server.add_service(health);
    server.add_service(farewell);
    server.add_service(maintenance);
    if let Some((purges, link)) = cluster_services {
        server.add_service(purges);
        server.add_service(link);
    }
    // The access log's writer thread and the span exporter start after the fork.
    server.add_service(background_service(
        "telemetry",
        TelemetryService::new(telemetry.clone()),
    ));
    if let Some(addr) = metrics_listen {
        let mut scrape = Service::new(
            "bext metrics".to_string(),
            HttpServer::new_app(MetricsApp::new(telemetry)),
        );
        scrape.add_tcp(&addr.to_string());
        server.add_service(scrape);
        log::info!("metrics on http://{addr}/metrics");
    }
    if let Some(h3) = h3 {
        server.add_service(h3);
    }
    let phases = server.watch_execution_phase();
    server.add_service(background_service(
        "stop watchdog",
        crate::stop::Watchdog::new(phases, shutdown_timeout),
    ));
    log::info!(
        "bext {} listening on {}",
        env!("CARGO_PKG_VERSION"),
        listen
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(t) = &tls {
        crate::tls::log_listeners(t);
    }
    server.run_forever()
}

/// An edge proxy holds two sockets per proxied connection (and long-lived
/// websocket tunnels); the default soft limit of 1024 is far too low.
/// SIGHUP's default action would kill the server when its terminal goes away;
/// reloads are done with `bext reload` (systemd's ExecReload), so it is ignored.
fn ignore_sighup() {
    // SAFETY: installing SIG_IGN for SIGHUP has no preconditions.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                log::warn!("could not raise the open-files limit to {}", lim.rlim_max);
            }
        }
    }
}
