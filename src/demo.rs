//! `bext demo`: bext in front of the embedded Phoenix-like origin
//! ([`crate::demo_origin`]), configured the way the Phoenix integration guide
//! recommends (`/live/*` uncached websocket route above the `/*` catch-all).

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{self, Plan};

/// The demo's config, with the live origin address and listen address filled in.
pub fn config_text(listen: SocketAddr, origin: SocketAddr, run_dir: &Path) -> String {
    format!(
        r#"# bext demo configuration (generated)
[server]
listen = ["{listen}"]
threads = 2
grace_period = "1s"
shutdown_timeout = "1s"
pid_file = "{run}/bext-demo.pid"
upgrade_sock = "{run}/bext-demo-upgrade.sock"

[upstreams.phoenix]
nodes = ["{origin}"]

[[route_rules]]
pattern = "/live/*"
proxy = "phoenix"
cache = false
websocket = true

[[route_rules]]
pattern = "/*"
proxy = "phoenix"
headers = {{ "X-Content-Type-Options" = "nosniff" }}
"#,
        run = run_dir.display()
    )
}

pub fn plan(listen: SocketAddr, origin: SocketAddr) -> Result<Plan, config::ConfigErrors> {
    let run_dir = std::env::temp_dir();
    config::load_str(
        Path::new("(bext demo)"),
        &config_text(listen, origin, &run_dir),
    )
}

/// What `bext demo` prints once it is up.
pub fn banner(listen: SocketAddr, origin: SocketAddr) -> String {
    let base = format!("http://{listen}");
    format!(
        "bext demo: proxy on {base} in front of a Phoenix-like demo origin on {origin}\n\
         \n  try:\n\
         \x20   {base}/                  HTML page with a LiveView-style websocket\n\
         \x20   {base}/posts/1           Cache-Control: public, max-age=60; Cache-Tag: post:1\n\
         \x20   {base}/health            origin health\n\
         \x20   ws://{listen}/live/websocket?vsn=2.0.0   Phoenix channel socket (phx_join, heartbeat)\n\
         \n  curl -si {base}/posts/1\n\
         \n  stop with Ctrl-C\n"
    )
}
