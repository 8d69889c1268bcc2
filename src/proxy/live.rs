//! The part of the proxy a config reload replaces in place: the routes (and
//! everything hung on them: headers, redirects, auth, static roots), the
//! sites' maintenance state, the WAF, error pages, admin access and the
//! compression plan, plus the metric labels of that route table. A request
//! takes one `Arc<Live>` when it starts and keeps it to the end, so requests
//! in flight finish on the plan they started with.
//!
//! What a reload keeps lives outside, in `BextProxy`: pools and node health,
//! the cache and its tag index, the limiter's state, tunnels, telemetry sinks.

use std::sync::Arc;
use std::time::Duration;

use crate::admin::AdminAccess;
use crate::compression::EdgeCompression;
use crate::config::diff::Snapshot;
use crate::maintenance::Maintenance;
use crate::respond::ErrorPages;
use crate::routing::RouteTable;
use crate::telemetry::RouteLabels;
use crate::waf::Waf;

pub struct Live {
    pub routes: RouteTable,
    pub client_timeout: Duration,
    pub pages: ErrorPages,
    pub admin: AdminAccess,
    pub waf: Arc<Waf>,
    pub compression: EdgeCompression,
    pub maintenance: Arc<Maintenance>,
    pub labels: RouteLabels,
    /// The pools this plan's routes point into (by index).
    pub upstreams: Arc<crate::upstream::Upstreams>,
    /// The config this was compiled from, for the next reload's diff.
    pub snapshot: Snapshot,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl Live {
    /// The next plan's `Live`, keeping what counts across plans: the WAF's and
    /// compression's counters, the sites' run-time maintenance switches.
    /// Only called for a plan `config::diff` found applicable in place.
    pub fn next(
        &self,
        mut plan: crate::config::Plan,
        telemetry: &crate::telemetry::Telemetry,
        upstreams: Arc<crate::upstream::Upstreams>,
    ) -> Live {
        if let Some(waf) = Arc::get_mut(&mut plan.waf) {
            waf.metrics = self.waf.metrics.clone();
        }
        let maintenance = Maintenance::new(
            plan.sites,
            Some(plan.server.state_file.clone()),
            &plan.source,
        );
        maintenance.adopt(&self.maintenance);
        let patterns = plan.routes.patterns();
        Live {
            snapshot: Snapshot::of_parts(&plan.source, plan.doc, plan.tls_digest),
            labels: telemetry.route_labels(&patterns),
            routes: plan.routes,
            client_timeout: plan.server.client_timeout,
            pages: ErrorPages::new(plan.server.error_page),
            admin: plan.admin,
            waf: plan.waf,
            compression: self.compression.with_plan(plan.compression),
            maintenance: Arc::new(maintenance),
            upstreams,
        }
    }
}
