//! One integration-test crate for the telemetry work (and the home new
//! black-box tests should move into: one binary links the whole stack once).
//! Every test spawns the real `bext` binary against real sockets.

#[path = "../cache_support/mod.rs"]
mod cache_support;
#[path = "../common/mod.rs"]
mod common;
#[path = "../tls_support/mod.rs"]
mod tls_support;
#[path = "../upstream_support/mod.rs"]
mod upstream_support;

mod access_log;
mod auth;
mod cluster;
mod compression;
mod dashboard;
mod header_policy;
mod liveview;
mod maintenance;
mod metrics;
mod otlp_receiver;
mod placement;
mod redirects;
mod reload_in_place;
mod reload_output;
mod reuse;
mod scrape;
mod sites;
mod static_site;
mod stops;
mod support;
mod trace;
mod tunnel_close;
