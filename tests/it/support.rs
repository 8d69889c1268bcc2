//! Shared fixtures of the `it` crate: configs and admin calls.

use std::net::SocketAddr;

/// bext on a free port in front of one node `n0` of pool `phoenix`:
/// `routes` (TOML `[[route_rules]]` blocks) before an uncached `/*`, then `extra`.
pub fn one_node(origin: SocketAddr, routes: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:{port}"]
threads = 2

[upstreams.phoenix]
nodes = [{{ addr = "{origin}", id = "n0" }}]

{routes}

[[route_rules]]
pattern = "/*"
proxy = "phoenix"
cache = false

{extra}
"#,
        port = crate::common::free_port()
    )
}

/// `GET url` as JSON.
pub async fn get_json(c: &reqwest::Client, url: &str) -> serde_json::Value {
    let text = c.get(url).send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

/// Kills the process a pid file names when dropped: processes a handoff
/// (`bext reload`) starts are not children of the test.
pub struct KillPid(pub std::path::PathBuf);

impl Drop for KillPid {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            // SAFETY: plain kill(2) of a test-owned process.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}
