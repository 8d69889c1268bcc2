//! `[sites."HOST"]` and route `auth`: settings that belong to a whole site
//! (every route with that `host`, or `*` for the routes without one) —
//! staging protection and maintenance mode — compiled onto the routes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::plan::{read_page, resolve_secret, Errors};
use super::units::HumanDuration;
use crate::auth::{AuthPlan, AuthSettings};
use crate::maintenance::SitePlan;
use crate::routing::{site_name, Route};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    /// Staging protection for every route of the site (a route's own `auth` wins).
    pub auth: Option<AuthSection>,
    /// Start with the site in maintenance (503 + `Retry-After`, `admin.allow` passes).
    pub maintenance: Option<bool>,
    /// The page of a 503 for this site (default: `server.error_page`, else built in).
    pub maintenance_page: Option<String>,
}

/// `auth = { basic = ["user:$argon2id$…"] }` or `auth = { token = "env:VAR" }`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `user:HASH` entries (argon2id or bcrypt; `bext hash-password` makes one).
    pub basic: Option<Vec<String>>,
    /// A shared token (`env:VAR` reads it from the environment).
    pub token: Option<String>,
    /// A request header that may carry the token (`Authorization: Bearer` always may).
    pub header: Option<String>,
    /// `?bext_token=…` visits set a signed cookie (default true).
    pub cookie: Option<bool>,
    /// Lifetime of that cookie (default 12h).
    pub cookie_ttl: Option<HumanDuration>,
    /// The realm shown by the browser's login dialog (default "bext").
    pub realm: Option<String>,
    /// Paths that need no login (route patterns: `/health`, `/webhooks/*`).
    #[serde(default)]
    pub exempt: Vec<String>,
}

pub(super) fn compile_auth(errs: &mut Errors, key: &str, a: AuthSection) -> Option<Arc<AuthPlan>> {
    let token = match a.token.as_deref().map(resolve_secret) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            errs.push(format!("{key}.token"), e);
            return None;
        }
    };
    let settings = AuthSettings {
        basic: a.basic,
        token,
        header: a.header,
        cookie: a.cookie,
        cookie_ttl: a.cookie_ttl.map(|d| d.0),
        realm: a.realm,
        exempt: a.exempt,
    };
    match AuthPlan::compile(settings) {
        Ok(plan) => Some(Arc::new(plan)),
        Err((k, e)) => {
            errs.push(format!("{key}.{k}"), e);
            None
        }
    }
}

/// Gives every route its site index and its `auth` (its own, else its
/// site's), and returns the sites in route order.
pub(super) fn compile(
    errs: &mut Errors,
    base: &Path,
    mut sections: BTreeMap<String, SiteSection>,
    routes: &mut [Route],
) -> Vec<SitePlan> {
    let mut names: Vec<String> = Vec::new();
    for r in routes.iter_mut() {
        let name = site_name(r.host.as_ref());
        r.site = match names.iter().position(|n| *n == name) {
            Some(i) => i,
            None => {
                names.push(name);
                names.len() - 1
            }
        };
    }
    for name in sections.keys() {
        if !names.contains(name) {
            errs.push(
                format!("sites.\"{name}\""),
                format!(
                    "no route has this site (sites are route `host` values, or \"*\" for routes without one; configured: {})",
                    names.join(", ")
                ),
            );
        }
    }
    let mut sites = Vec::with_capacity(names.len());
    for (i, name) in names.into_iter().enumerate() {
        let section = sections.remove(&name).unwrap_or_default();
        let key = format!("sites.\"{name}\"");
        let auth = section
            .auth
            .and_then(|a| compile_auth(errs, &format!("{key}.auth"), a));
        for r in routes.iter_mut().filter(|r| r.site == i) {
            if r.auth.is_none() {
                r.auth = auth.clone();
            }
        }
        let page = section
            .maintenance_page
            .and_then(|p| read_page(errs, &format!("{key}.maintenance_page"), base, &p));
        sites.push(SitePlan {
            name,
            maintenance: section.maintenance.unwrap_or(false),
            page,
        });
    }
    for r in routes.iter_mut() {
        // The token travels no further than the edge.
        if let Some(h) = r.auth.as_ref().and_then(|a| a.token_header()) {
            r.header_policy.request_remove.push(h.clone());
        }
    }
    sites
}
