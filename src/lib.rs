//! bext: the edge layer in front of Elixir Phoenix applications, built on Pingora.
//!
//! `config` turns `bext.config.toml` into a [`config::Plan`]; `server` runs the
//! Pingora server for a plan; `proxy` is the request pipeline; `routing` and
//! `upstream` decide where each request goes; `static_files` answers
//! `render = "static"` routes from disk; `tls` terminates HTTPS and `h3`
//! bridges HTTP/3 into the same pipeline. `exchange` (the per-request record)
//! and `respond` (every response bext makes itself, the request id) are
//! leaves every module may use; `telemetry` turns finished records into
//! metrics, access log lines and spans. `auth` (staging protection) and
//! `maintenance` (the per-site maintenance switch) decide about a request
//! before it is proxied. `cluster` shares purges between bext nodes
//! (Redis, with `[cluster]`).

pub mod admin;
pub mod auth;
pub mod cache;
pub mod cluster;
pub mod compression;
pub mod config;
pub mod cookies;
pub mod demo;
pub mod demo_origin;
pub mod exchange;
pub mod h3;
pub mod header_policy;
pub mod import;
pub mod limits;
pub mod logging;
pub mod maintenance;
mod memory;
pub mod proxy;
pub mod redirect;
pub mod reload;
pub mod respond;
pub mod routing;
pub mod server;
pub mod static_files;
pub mod stop;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod waf;
