//! Maintenance mode: which sites answer with their maintenance page (503 +
//! `Retry-After`) instead of proxying. A site is what `bext check` lists: a
//! route `host` (`example.com`, `*.example.com`) or `*` for the routes without
//! one. It starts as the config says (`[sites."NAME"] maintenance = true`) and
//! is switched at run time through `POST /__bext/maintenance`; the phase lets
//! `admin.allow` clients through so the team can check a deploy.
//!
//! Run-time switches are written to a state file (`server.state_file`) and
//! read back by the next process, so they survive a graceful upgrade (and a
//! restart). A switch recorded for a site whose `maintenance` setting in the
//! config has changed since is dropped: an edited config always wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One site of the plan.
#[derive(Debug, Clone)]
pub struct SitePlan {
    pub name: String,
    /// `maintenance = true` in the config.
    pub maintenance: bool,
    /// `maintenance_page`: the page for this site (else `server.error_page`,
    /// else the built-in one).
    pub page: Option<Bytes>,
}

#[derive(Debug)]
struct Site {
    plan: SitePlan,
    on: AtomicBool,
    /// Switched at run time (else as configured).
    switched: AtomicBool,
}

/// Run-time maintenance state of every site.
#[derive(Debug)]
pub struct Maintenance {
    sites: Vec<Site>,
    state_file: Option<PathBuf>,
    /// The config this process runs (switches from another config are not applied).
    config: PathBuf,
    /// Serializes state-file writes (two admin calls at once).
    write: tokio::sync::Mutex<()>,
    /// The state file's modification time when this process last wrote or
    /// read it: another time means another process (the other side of an
    /// upgrade) switched a site.
    seen: std::sync::Mutex<Option<std::time::SystemTime>>,
}

/// The state file: one entry per site switched at run time.
#[derive(Debug, Serialize, Deserialize, Default)]
struct StateFile {
    config: PathBuf,
    sites: BTreeMap<String, Switch>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Switch {
    on: bool,
    /// The site's config setting when the switch was made.
    configured: bool,
}

/// A run-time switch that cannot be made.
#[derive(Debug, PartialEq, Eq)]
pub enum SwitchError {
    UnknownSite(Vec<String>),
}

impl Maintenance {
    pub fn new(sites: Vec<SitePlan>, state_file: Option<PathBuf>, config: &Path) -> Maintenance {
        Maintenance {
            sites: sites
                .into_iter()
                .map(|plan| Site {
                    on: AtomicBool::new(plan.maintenance),
                    switched: AtomicBool::new(false),
                    plan,
                })
                .collect(),
            state_file,
            config: std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf()),
            write: tokio::sync::Mutex::new(()),
            seen: std::sync::Mutex::new(None),
        }
    }

    fn state_mtime(&self) -> Option<std::time::SystemTime> {
        let path = self.state_file.as_ref()?;
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }

    fn mark_seen(&self) {
        let now = self.state_mtime();
        if let Ok(mut seen) = self.seen.lock() {
            *seen = now;
        }
    }

    /// Applies switches another process wrote since this one last looked
    /// (during an upgrade both processes answer for a few seconds, so an
    /// admin call may reach either). Called about once a second by
    /// [`MaintenanceWatch`]; a `stat` when nothing changed.
    pub fn refresh(&self) {
        let now = self.state_mtime();
        let changed = self.seen.lock().map(|s| *s != now).unwrap_or(false);
        if changed && now.is_some() {
            for note in self.restore() {
                log::info!("maintenance: {note}");
            }
        }
    }

    /// Applies the switches a previous process recorded; returns what it
    /// applied and what it dropped, for the log. Runs at start-up, before
    /// the server accepts (plain file I/O is fine there).
    pub fn restore(&self) -> Vec<String> {
        let Some(path) = &self.state_file else {
            return vec![];
        };
        self.mark_seen();
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return vec![],
            Err(e) => return vec![format!("cannot read {}: {e}", path.display())],
        };
        let state: StateFile = match serde_json::from_slice(&text) {
            Ok(s) => s,
            Err(e) => {
                return vec![format!(
                    "ignored {}: not a bext state file ({e})",
                    path.display()
                )]
            }
        };
        if state.config != self.config {
            return vec![format!(
                "ignored {}: it records switches for {}, not {}",
                path.display(),
                state.config.display(),
                self.config.display()
            )];
        }
        let mut notes = vec![];
        for (name, switch) in state.sites {
            match self.sites.iter().find(|s| s.plan.name == name) {
                None => notes.push(format!("dropped the maintenance switch of \"{name}\": no such site any more")),
                Some(site) if site.plan.maintenance != switch.configured => notes.push(format!(
                    "dropped the maintenance switch of \"{name}\": its `maintenance` setting changed in the config"
                )),
                Some(site) => {
                    site.on.store(switch.on, Ordering::Relaxed);
                    site.switched.store(true, Ordering::Relaxed);
                    notes.push(format!(
                        "site \"{name}\": maintenance {} (switched at run time before the restart)",
                        if switch.on { "on" } else { "off" }
                    ));
                }
            }
        }
        notes
    }

    /// A reload in place: keeps the run-time switches of `old` for the sites
    /// that still exist with the same `maintenance` setting (as [`restore`]
    /// does across processes).
    pub fn adopt(&self, old: &Maintenance) {
        for site in &self.sites {
            let Some(prev) = old.sites.iter().find(|s| s.plan.name == site.plan.name) else {
                continue;
            };
            if prev.switched.load(Ordering::Relaxed)
                && prev.plan.maintenance == site.plan.maintenance
            {
                site.on
                    .store(prev.on.load(Ordering::Relaxed), Ordering::Relaxed);
                site.switched.store(true, Ordering::Relaxed);
            }
        }
        if let (Ok(mut seen), Ok(prev)) = (self.seen.lock(), old.seen.lock()) {
            *seen = *prev;
        }
    }

    /// `Some(page)` when site `index` is in maintenance (`page` may be `None`:
    /// use the server's). One atomic load per request.
    pub fn active(&self, index: usize) -> Option<Option<&Bytes>> {
        let site = self.sites.get(index)?;
        site.on
            .load(Ordering::Relaxed)
            .then_some(site.plan.page.as_ref())
    }

    /// Whether site `name` is in maintenance; `None` for an unknown site.
    pub fn is_on(&self, name: &str) -> Option<bool> {
        self.sites
            .iter()
            .find(|s| s.plan.name == name)
            .map(|s| s.on.load(Ordering::Relaxed))
    }

    /// Switches `name` on or off and records it in the state file. The
    /// switch applies at once; a failed write is returned as a warning (the
    /// switch then does not survive an upgrade).
    pub async fn switch(&self, name: &str, on: bool) -> Result<Option<String>, SwitchError> {
        let Some(site) = self.sites.iter().find(|s| s.plan.name == name) else {
            return Err(SwitchError::UnknownSite(
                self.sites.iter().map(|s| s.plan.name.clone()).collect(),
            ));
        };
        let _guard = self.write.lock().await;
        site.on.store(on, Ordering::Relaxed);
        site.switched.store(true, Ordering::Relaxed);
        Ok(self.persist().await.err())
    }

    async fn persist(&self) -> Result<(), String> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let state = StateFile {
            config: self.config.clone(),
            sites: self
                .sites
                .iter()
                .filter(|s| s.switched.load(Ordering::Relaxed))
                .map(|s| {
                    let switch = Switch {
                        on: s.on.load(Ordering::Relaxed),
                        configured: s.plan.maintenance,
                    };
                    (s.plan.name.clone(), switch)
                })
                .collect(),
        };
        let text = serde_json::to_vec_pretty(&state).map_err(|e| e.to_string())?;
        // Write then rename: a reader never sees half a file.
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, text)
            .await
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        tokio::fs::rename(&tmp, path)
            .await
            .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))?;
        self.mark_seen();
        Ok(())
    }

    /// `GET /__bext/maintenance`.
    pub fn to_json(&self) -> serde_json::Value {
        let sites: Vec<serde_json::Value> = self
            .sites
            .iter()
            .map(|s| {
                serde_json::json!({
                    "site": s.plan.name,
                    "maintenance": s.on.load(Ordering::Relaxed),
                    "source": if s.switched.load(Ordering::Relaxed) { "runtime" } else { "config" },
                })
            })
            .collect();
        serde_json::json!({ "sites": sites })
    }
}

/// `GET /__bext/maintenance` (the sites and their state) and `POST` with
/// `{"site": "example.com", "on": true}`.
/// With `[cluster]` an accepted switch is also handed to `shared`, and the
/// answer says whether it reached the other nodes (`"cluster"`).
pub async fn admin(
    session: &mut pingora::proxy::Session,
    m: &Maintenance,
    shared: &dyn crate::cluster::SharedState,
    id: Option<&http::HeaderValue>,
) -> pingora::Result<()> {
    use crate::admin::{error_body, read_body};
    use crate::respond::json;
    if session.req_header().method != http::Method::POST {
        return json(session, 200, &m.to_json(), id).await;
    }
    let body = match read_body(session).await {
        Ok(b) => b,
        Err(status) => return json(session, status, &error_body("cannot read the body"), id).await,
    };
    let req: SwitchRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("expected {{\"site\": \"NAME\", \"on\": true|false}}: {e}");
            return json(session, 400, &error_body(&msg), id).await;
        }
    };
    match m.switch(&req.site, req.on).await {
        Ok(warning) => {
            log::warn!(
                "maintenance {} for site \"{}\" (admin API)",
                if req.on { "on" } else { "off" },
                req.site
            );
            if let Some(w) = &warning {
                log::error!("maintenance: {w}; the switch will not survive an upgrade");
            }
            let change = crate::cluster::StateChange::Maintenance {
                site: req.site.clone(),
                on: req.on,
            };
            let published = shared.publish(change).await;
            let mut v = m.to_json();
            v["persisted"] = serde_json::Value::Bool(warning.is_none());
            if let Some(p) = published {
                v["cluster"] = p.as_str().into();
            }
            json(session, 200, &v, id).await
        }
        Err(SwitchError::UnknownSite(known)) => {
            let v = serde_json::json!({ "error": "no such site", "sites": known });
            json(session, 404, &v, id).await
        }
    }
}

/// Runs [`Maintenance::refresh`] once a second (a background service) on
/// the current switches (a reload in place replaces them).
pub struct MaintenanceWatch(pub Box<dyn Fn() -> std::sync::Arc<Maintenance> + Send + Sync>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for MaintenanceWatch {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            // A stat (and, rarely, a small read): off the event loop.
            let m = (self.0)();
            let _ = tokio::task::spawn_blocking(move || m.refresh()).await;
        }
    }
}

/// The body of `POST /__bext/maintenance`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchRequest {
    pub site: String,
    pub on: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> Vec<SitePlan> {
        vec![
            SitePlan {
                name: "example.com".into(),
                maintenance: false,
                page: None,
            },
            SitePlan {
                name: "*".into(),
                maintenance: true,
                page: Some(Bytes::from_static(b"back soon")),
            },
        ]
    }

    #[tokio::test]
    async fn switches_apply_at_once_and_survive_a_new_process_with_the_same_config() {
        let dir = std::env::temp_dir().join(format!("bext-maint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (state, config) = (dir.join("state.json"), dir.join("bext.toml"));
        std::fs::write(&config, "").unwrap();
        let m = Maintenance::new(sites(), Some(state.clone()), &config);
        assert_eq!(m.active(0), None);
        assert_eq!(m.active(1), Some(Some(&Bytes::from_static(b"back soon"))));
        assert_eq!(m.switch("example.com", true).await, Ok(None));
        assert_eq!(m.active(0), Some(None));
        assert!(matches!(
            m.switch("nope", true).await,
            Err(SwitchError::UnknownSite(_))
        ));

        let next = Maintenance::new(sites(), Some(state.clone()), &config);
        let notes = next.restore();
        assert_eq!(next.active(0), Some(None), "{notes:?}");

        // The config now says maintenance for example.com: the recorded switch is dropped.
        let mut changed = sites();
        changed[0].maintenance = true;
        m.switch("example.com", false).await.unwrap();
        let edited = Maintenance::new(changed, Some(state.clone()), &config);
        let notes = edited.restore();
        assert_eq!(edited.active(0), Some(None), "{notes:?}");
        assert!(notes[0].contains("changed in the config"), "{notes:?}");

        // Another config's state file is not applied.
        let other = dir.join("other.toml");
        std::fs::write(&other, "").unwrap();
        let foreign = Maintenance::new(sites(), Some(state), &other);
        assert!(foreign.restore()[0].contains("ignored"));
        assert_eq!(foreign.active(0), None);
        std::fs::remove_dir_all(&dir).ok();
    }
}
