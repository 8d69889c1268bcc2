//! The human summary `bext check` prints for a valid plan.

use std::fmt;

use super::Plan;
use crate::routing::RouteTarget;

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.server;
        writeln!(f, "{}: OK", self.source.display())?;
        let listen: Vec<String> = s.listen.iter().map(|a| a.to_string()).collect();
        writeln!(f, "listen: {} (threads {})", listen.join(", "), s.threads)?;
        if let Some(t) = &self.tls {
            let listen: Vec<String> = t.listen.iter().map(|a| a.to_string()).collect();
            let certs = t.certs.load();
            let mut names = certs.hosts();
            if certs.has_default() {
                names.push("(default)".into());
            }
            writeln!(
                f,
                "tls: {} (h2, http/1.1{}); certificates: {}{}{}",
                listen.join(", "),
                if t.http3 { ", h3" } else { "" },
                names.join(", "),
                t.redirect_status
                    .map_or(String::new(), |s| format!("; http redirects with {s}")),
                if t.hsts.is_some() { "; hsts" } else { "" }
            )?;
        }
        writeln!(f, "upstreams:")?;
        for u in &self.upstreams {
            let nodes: Vec<String> = u.nodes.iter().map(|a| a.to_string()).collect();
            writeln!(
                f,
                "  {:<12} {}  (connect {:?}, read {:?})",
                u.name,
                nodes.join(", "),
                u.connect_timeout,
                u.read_timeout
            )?;
        }
        let c = &self.cache;
        if c.enabled {
            writeln!(
                f,
                "cache: max_size {} KiB, max_object_size {} KiB, stale-if-error {:?}",
                c.max_size / 1024,
                c.max_object_size / 1024,
                c.stale_if_error
            )?;
        } else {
            writeln!(f, "cache: off")?;
        }
        match &self.cluster {
            Some(c) => writeln!(
                f,
                "cluster: node {} on {} (keys {}*, rate sync every {:?}); shared: purges, rate limits (approximate), maintenance, drain, health hints",
                c.node_name,
                c.redis_display(),
                c.key_prefix,
                c.sync_interval
            )?,
            None => writeln!(f, "cluster: off (single node)")?,
        }
        writeln!(f, "sites (host: routes):")?;
        let sites = self.routes.sites();
        for (site, n) in &sites {
            let mut note = String::new();
            if site == "*" {
                note.push_str("  (any host)");
            }
            if self.sites.iter().any(|s| s.name == *site && s.maintenance) {
                note.push_str("  [maintenance]");
            }
            writeln!(f, "  {site}: {n}{note}")?;
        }
        match self.routes.default_site() {
            Some(d) => writeln!(f, "  other hosts: routed as {d}")?,
            None if !sites.iter().any(|(s, _)| s == "*") => {
                writeln!(f, "  other hosts: 421 Misdirected Request")?
            }
            None => {}
        }
        writeln!(f, "routes (first match wins):")?;
        for r in self.routes.iter() {
            let host = match &r.host {
                None => "(any host)".to_string(),
                h => crate::routing::site_name(h.as_ref()),
            };
            let upstream = match &r.target {
                RouteTarget::Proxy(id) => self
                    .upstreams
                    .get(*id)
                    .map_or("?".to_string(), |u| u.name.clone()),
                RouteTarget::Static(root) => format!("static {}", root.dir().display()),
                RouteTarget::Redirect(r) => format!("redirect {}", r.status),
            };
            // Static routes are answered before the cache: its flag would mislead.
            let mut flags = match r.target {
                RouteTarget::Static(_) => vec!["files"],
                RouteTarget::Redirect(_) => vec!["redirect"],
                RouteTarget::Proxy(_) => vec![if r.cache { "cache" } else { "no-cache" }],
            };
            if r.websocket {
                flags.push("websocket");
            }
            if let Some(a) = &r.auth {
                flags.push(a.kind());
            }
            writeln!(
                f,
                "  [{}] {:<20} {:<16} -> {}  ({})",
                r.index,
                host,
                r.pattern_text,
                upstream,
                flags.join(", ")
            )?;
        }
        Ok(())
    }
}
