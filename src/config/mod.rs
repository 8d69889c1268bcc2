//! Configuration: read `bext.config.toml`, validate it with errors that name the
//! file, the key and the reason, and compile it into a [`Plan`] of internal types.
//! Nothing outside this module sees TOML or user-facing serde types.

pub mod cluster;
pub mod compression;
pub mod diff;
mod limits;
mod plan;
pub mod sites;
mod summary;
pub mod telemetry;
mod tls;
pub mod units;
pub mod upstream;
mod user;

use std::fmt;
use std::path::{Path, PathBuf};

pub use plan::{resolve_secret, CachePlan, Plan, ServerPlan, UpstreamPlan};
pub use telemetry::TelemetryPlan;

/// One problem in a config file, rendered as `FILE: KEY: REASON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
    }
}

/// Every problem found in one config file (validation keeps going after the first).
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Reads, validates and compiles the config file at `path`.
/// What `bext check` should point out about a valid plan: files bext will
/// write at run time whose directory is missing or not writable by the user
/// running the check (the pid file `bext reload` reads, the upgrade socket).
/// Warnings, not errors: under systemd `RuntimeDirectory=bext` creates
/// `/run/bext` when the service starts.
pub fn runtime_warnings(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let file = plan.source.display();
    for (key, path) in [
        ("server.pid_file", &plan.server.pid_file),
        ("server.upgrade_sock", &plan.server.upgrade_sock),
    ] {
        let dir = match Path::new(path).parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let why = if !dir.is_dir() {
            Some("does not exist")
        } else if !writable(&dir) {
            Some("is not writable by this user")
        } else {
            None
        };
        if let Some(why) = why {
            out.push(format!(
                "{file}: {key}: directory {} {why}, so `{path}` cannot be created (the systemd unit's RuntimeDirectory=bext creates /run/bext; running by hand, create the directory or point {key} elsewhere)",
                dir.display()
            ));
        }
    }
    out
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

pub fn load(path: &Path) -> Result<Plan, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            key: "(file)".into(),
            reason: format!("cannot read config file: {e}"),
        }])
    })?;
    load_str(path, &text)
}

/// Validates and compiles config `text`; `path` names the file in errors and anchors
/// relative paths (such as `server.error_page`) to the config's directory.
pub fn load_str(path: &Path, text: &str) -> Result<Plan, ConfigErrors> {
    let user = parse(path, text).map_err(|e| ConfigErrors(vec![e]))?;
    let mut plan = plan::compile(path, user)?;
    // It deserialized above, so it parses as a table.
    plan.doc = text.parse::<toml::Table>().unwrap_or_default();
    plan.tls_digest = diff::tls_digest(&plan.doc, path);
    Ok(plan)
}

fn parse(path: &Path, text: &str) -> Result<user::UserConfig, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let location = inner
            .span()
            .map(|s| line_col(text, s.start))
            .map(|(l, c)| format!(" (line {l}, column {c})"))
            .unwrap_or_default();
        let message = inner.message().trim().replace('\n', " ");
        ConfigError {
            file: path.to_path_buf(),
            key: if key.is_empty() || key == "." {
                "(syntax)".into()
            } else {
                key
            },
            reason: format!("{message}{location}"),
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        match load_str(Path::new("/etc/bext/t.toml"), text) {
            Ok(_) => panic!("config unexpectedly valid"),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    const UP: &str = "[upstreams.phoenix]\nnodes = [\"127.0.0.1:4000\"]\n";
    const ROUTE: &str = "[[route_rules]]\npattern = \"/*\"\nproxy = \"phoenix\"\n";

    #[test]
    fn minimal_config_compiles_with_defaults() {
        let plan = load_str(Path::new("t.toml"), &format!("{UP}{ROUTE}")).unwrap();
        assert_eq!(plan.server.listen.len(), 1);
        assert_eq!(plan.routes.len(), 1);
        assert_eq!(plan.upstreams[0].nodes[0].to_string(), "127.0.0.1:4000");
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = errs(&format!("[server]\nlisten_on = 1\n{UP}{ROUTE}"));
        assert!(
            e[0].starts_with("/etc/bext/t.toml: server.listen_on: unknown field"),
            "{e:?}"
        );
        let e = errs(&format!("{UP}{ROUTE}cahce = false\n"));
        assert!(e[0].contains("route_rules[0].cahce"), "{e:?}");
    }

    #[test]
    fn otlp_tls_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("bext.toml");
        let load = |t: &str| load_str(&base, &format!("{UP}{ROUTE}[telemetry]\n{t}"));
        let ck = rcgen::generate_simple_self_signed(vec!["collector".to_owned()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ck.cert.pem()).unwrap();
        // A relative CA path is read next to the config file.
        let plan = load("otlp_endpoint = \"https://collector\"\notlp_ca = \"ca.pem\"\n").unwrap();
        let trace = plan.telemetry.trace.expect("trace plan");
        assert!(trace.tls.is_some());
        let errs = |t: &str| match load(t) {
            Ok(_) => panic!("config unexpectedly valid: {t}"),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        };
        let e = errs("otlp_endpoint = \"https://collector\"\notlp_ca = \"nope.pem\"\n");
        assert!(
            e[0].contains("telemetry.otlp_ca:") && e[0].contains("nope.pem"),
            "{e:?}"
        );
        let e = errs("otlp_endpoint = \"http://collector\"\notlp_ca = \"ca.pem\"\n");
        assert!(
            e[0].contains("telemetry.otlp_ca:") && e[0].contains("only used for https"),
            "{e:?}"
        );
        let e = errs("otlp_ca = \"ca.pem\"\n");
        assert!(e[0].contains("telemetry.otlp_endpoint:"), "{e:?}");
        let e = errs("otlp_endpoint = \"grpc://collector:4317\"\n");
        assert!(e[0].contains("telemetry.otlp_endpoint:"), "{e:?}");
    }

    #[test]
    fn header_policy_settings_are_checked() {
        let route = |extra: &str| {
            format!("{UP}[[route_rules]]\npattern = \"/*\"\nproxy = \"phoenix\"\n{extra}\n")
        };
        let e = errs(&route("permissions_policy = \"camera=()\""));
        assert!(e[0].contains("route_rules[0].permissions_policy:"), "{e:?}");
        let e = errs(&route("request_headers = { host = \"evil\" }"));
        assert!(
            e[0].contains("route_rules[0].request_headers.host:"),
            "{e:?}"
        );
        let e = errs(&route("response_headers_remove = [\"bad name\"]"));
        assert!(
            e[0].contains("route_rules[0].response_headers_remove[0]:"),
            "{e:?}"
        );
        let plan = load_str(
            Path::new("t.toml"),
            &route("security_headers = true\nrequest_headers_remove = [\"x-debug\"]"),
        )
        .unwrap();
        let r = plan.routes.iter().next().unwrap();
        assert!(r.header_policy.security);
        assert_eq!(r.header_policy.request_remove, ["x-debug"]);
    }

    #[test]
    fn redirect_settings_are_checked() {
        let rule = |body: &str| format!("{UP}{ROUTE}[[route_rules]]\npattern = \"/r/*\"\n{body}\n");
        let e = errs(&rule(
            "redirect = \"https://a.test{path}\"\nproxy = \"phoenix\"",
        ));
        assert!(e[0].contains("route_rules[1].redirect:"), "{e:?}");
        let e = errs(&rule("redirect = \"https://{host}{path}\""));
        assert!(
            e[0].contains("route_rules[1].redirect:") && e[0].contains("host"),
            "{e:?}"
        );
        let e = errs(&rule("redirect = \"https://a.test\"\nstatus = 200"));
        assert!(e[0].contains("route_rules[1].status:"), "{e:?}");
        let e = errs(&rule("proxy = \"phoenix\"\nstatus = 301"));
        assert!(e[0].contains("route_rules[1].status:"), "{e:?}");
        let e = errs(&rule(
            "proxy = \"phoenix\"\ncanonical_host = \"https://a.test\"",
        ));
        assert!(e[0].contains("route_rules[1].canonical_host:"), "{e:?}");
        let e = errs(&rule("proxy = \"phoenix\"\ntrailing_slash = \"always\""));
        assert!(e[0].contains("route_rules[1].trailing_slash:"), "{e:?}");
    }

    #[test]
    fn static_site_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "x").unwrap();
        let base = dir.path().join("bext.toml");
        let load = |extra: &str| {
            load_str(
                &base,
                &format!("{UP}{ROUTE}[[route_rules]]\npattern = \"/site/*\"\nrender = \"static\"\nstatic_root = \".\"\n{extra}\n"),
            )
        };
        assert!(load("index = \"index.html\"\nfallback = \"index.html\"").is_ok());
        let first =
            |r: Result<Plan, ConfigErrors>| r.err().map(|e| e.0[0].to_string()).unwrap_or_default();
        let e = first(load("fallback = \"missing.html\""));
        assert!(e.contains("route_rules[1].fallback:"), "{e}");
        let e = first(load("index = \"a/index.html\""));
        assert!(e.contains("route_rules[1].index:"), "{e}");
        let e = errs(&format!(
            "{UP}[[route_rules]]\npattern = \"/*\"\nproxy = \"phoenix\"\nindex = \"index.html\"\n"
        ));
        assert!(e[0].contains("route_rules[0].index:"), "{e:?}");
    }

    #[test]
    fn default_site_must_be_a_configured_host() {
        let e = errs(&format!(
            "[server]\ndefault_site = \"nowhere.test\"\n{UP}{ROUTE}"
        ));
        assert!(e[0].contains("server.default_site:"), "{e:?}");
    }

    #[test]
    fn unknown_upstream_is_an_error() {
        let e = errs(&format!(
            "{UP}[[route_rules]]\npattern = \"/*\"\nproxy = \"phenix\"\n"
        ));
        assert!(
            e[0].contains("route_rules[0].proxy: unknown upstream \"phenix\""),
            "{e:?}"
        );
    }

    #[test]
    fn bad_duration_address_and_cidr_are_named() {
        let e = errs(&format!(
            "[upstreams.phoenix]\nnodes = [\"127.0.0.1:4000\"]\nconnect_timeout = \"abc\"\n{ROUTE}"
        ));
        assert!(
            e[0].contains("upstreams.phoenix.connect_timeout: invalid duration"),
            "{e:?}"
        );
        let e = errs(&format!(
            "[upstreams.phoenix]\nnodes = [\"localhost:abc\"]\n{ROUTE}"
        ));
        assert!(e[0].contains("upstreams.phoenix.nodes[0]:"), "{e:?}");
        let e = errs(&format!(
            "[server]\ntrusted_proxies = [\"10.0.0.0/99\"]\n{UP}{ROUTE}"
        ));
        assert!(e[0].contains("server.trusted_proxies[0]:"), "{e:?}");
    }

    #[test]
    fn cache_section_is_validated() {
        let plan = load_str(Path::new("t.toml"), &format!("{UP}{ROUTE}")).unwrap();
        assert!(plan.cache.enabled);
        assert_eq!(plan.cache.max_size, 256 << 20);
        let e = errs(&format!(
            "{UP}{ROUTE}[cache]\nmax_size = \"1MiB\"\nmax_object_size = \"2MiB\"\n"
        ));
        assert!(
            e[0].contains("cache.max_object_size: must be between"),
            "{e:?}"
        );
        let e = errs(&format!("{UP}{ROUTE}[cache]\nmax_size = 5\n"));
        assert!(e[0].contains("cache.max_size"), "{e:?}");
        let e = errs(&format!(
            "{UP}[[route_rules]]\npattern = \"/live/*\"\nproxy = \"phoenix\"\nwebsocket = true\ncache_ttl = \"1m\"\n"
        ));
        assert!(e[0].contains("route_rules[0].cache_ttl"), "{e:?}");
        let ok = load_str(
            Path::new("t.toml"),
            &format!("{UP}{ROUTE}cache_ttl = \"5m\"\n"),
        )
        .unwrap();
        let route = ok.routes.iter().next().unwrap();
        assert_eq!(route.cache_ttl, Some(std::time::Duration::from_secs(300)));
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let e = errs("[server\nlisten = 1");
        assert!(e[0].contains("line 1"), "{e:?}");
    }
}
