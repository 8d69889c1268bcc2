//! Reads a Phoenix project tree without Elixir: a substring scan of `mix.exs`
//! for `{:phoenix,` (the seed's rule), then best-effort facts from `mix.exs`
//! and `config/*.exs` (app name, HTTP port, LiveView, web server, static dir).

use std::fs;
use std::path::{Path, PathBuf};

/// What was found about a Phoenix project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoenixProject {
    /// Directory holding the Phoenix app's `mix.exs` (the `*_web` app in an umbrella).
    pub web_dir: PathBuf,
    /// `app: :name` of the web app.
    pub app: String,
    pub umbrella: bool,
    /// HTTP port Phoenix listens on, and where it was read from.
    pub port: u16,
    pub port_source: String,
    pub live_view: bool,
    /// API routes take HTTP `DELETE` (see [`super::router`]).
    pub api_delete: bool,
    pub server: WebServer,
    /// `priv/static` relative to the project root, when it exists.
    pub static_dir: Option<PathBuf>,
    /// Settings in the project's config that fight a proxy in front.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebServer {
    Bandit,
    Cowboy,
    Unknown,
}

impl WebServer {
    pub fn name(self) -> &'static str {
        match self {
            WebServer::Bandit => "Bandit",
            WebServer::Cowboy => "Cowboy",
            WebServer::Unknown => "unknown (Cowboy or Bandit)",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{0}: no mix.exs here: not an Elixir project")]
    NoMix(PathBuf),
    #[error("{0}: mix.exs does not depend on Phoenix (no `{{:phoenix,` found), nor does any umbrella app")]
    NotPhoenix(PathBuf),
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

const DEFAULT_PORT: u16 = 4000;

pub fn detect(root: &Path) -> Result<PhoenixProject, DetectError> {
    let mix_path = root.join("mix.exs");
    if !mix_path.is_file() {
        return Err(DetectError::NoMix(root.to_path_buf()));
    }
    let root_mix = read(&mix_path)?;
    let (web_dir, mix, umbrella) = if is_phoenix(&root_mix) {
        (root.to_path_buf(), root_mix.clone(), false)
    } else if let Some((dir, mix)) = umbrella_web_app(root, &root_mix)? {
        (dir, mix, true)
    } else {
        return Err(DetectError::NotPhoenix(root.to_path_buf()));
    };
    let app = app_name(&mix).unwrap_or_else(|| {
        web_dir
            .file_name()
            .map_or_else(|| "phoenix".into(), |n| n.to_string_lossy().into_owned())
    });
    let deps = format!("{root_mix}\n{mix}");
    let live_view = deps.contains("{:phoenix_live_view,");
    let server = if deps.contains("{:bandit,") {
        WebServer::Bandit
    } else if deps.contains("{:plug_cowboy,") {
        WebServer::Cowboy
    } else {
        WebServer::Unknown
    };
    // Umbrellas keep config at the root; a standalone app in its own dir.
    let config_dir = if root.join("config").is_dir() {
        root.join("config")
    } else {
        web_dir.join("config")
    };
    let (port, port_source) = find_port(&config_dir)?;
    let static_dir = [web_dir.join("priv/static"), root.join("priv/static")]
        .into_iter()
        .find(|p| p.is_dir())
        .map(|p| p.strip_prefix(root).map(Path::to_path_buf).unwrap_or(p));
    let warnings = config_warnings(&config_dir)?;
    let api_delete = super::router::api_deletes(&web_dir);
    Ok(PhoenixProject {
        web_dir,
        app,
        umbrella,
        port,
        port_source,
        live_view,
        api_delete,
        server,
        static_dir,
        warnings,
    })
}

fn read(path: &Path) -> Result<String, DetectError> {
    fs::read_to_string(path).map_err(|source| DetectError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn is_phoenix(mix: &str) -> bool {
    mix.contains("{:phoenix,")
}

/// An umbrella (`apps_path:` in the root mix.exs): the app under `apps/` that
/// depends on Phoenix, preferring one named `*_web`.
fn umbrella_web_app(root: &Path, root_mix: &str) -> Result<Option<(PathBuf, String)>, DetectError> {
    if !root_mix.contains("apps_path") {
        return Ok(None);
    }
    let apps = root.join("apps");
    let Ok(entries) = fs::read_dir(&apps) else {
        return Ok(None);
    };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    dirs.sort();
    dirs.sort_by_key(|d| !d.to_string_lossy().ends_with("_web"));
    for dir in dirs {
        let mix = dir.join("mix.exs");
        if mix.is_file() {
            let text = read(&mix)?;
            if is_phoenix(&text) {
                return Ok(Some((dir, text)));
            }
        }
    }
    Ok(None)
}

/// `app: :my_app` from a mix.exs project definition.
fn app_name(mix: &str) -> Option<String> {
    let at = mix.find("app:")?;
    let rest = mix[at + 4..].trim_start().strip_prefix(':')?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The HTTP port: the first `port:` setting (or `PORT` env fallback) found in
/// runtime.exs, prod.exs, config.exs, dev.exs — production settings first.
fn find_port(config_dir: &Path) -> Result<(u16, String), DetectError> {
    for file in ["runtime.exs", "prod.exs", "config.exs", "dev.exs"] {
        let path = config_dir.join(file);
        if !path.is_file() {
            continue;
        }
        let text = read(&path)?;
        if let Some(port) = port_in(&text) {
            return Ok((port, format!("config/{file}")));
        }
    }
    Ok((DEFAULT_PORT, "Phoenix default".into()))
}

/// Finds `port: 4000`, or the fallback in `port: String.to_integer(System.get_env("PORT") || "4000")`.
fn port_in(text: &str) -> Option<u16> {
    let mut rest = text;
    while let Some(i) = rest.find("port:") {
        let after = &rest[i + 5..];
        let window: String = after.chars().take(120).collect();
        let digits = |s: &str| -> Option<u16> {
            let d: String = s
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            d.parse().ok().filter(|p| *p > 0)
        };
        if let Some(p) = digits(&window) {
            return Some(p);
        }
        if let Some(j) = window.find("|| \"") {
            if let Some(p) = digits(&window[j + 4..]) {
                return Some(p);
            }
        }
        rest = after;
    }
    None
}

/// Settings that break behind a TLS-terminating proxy.
fn config_warnings(config_dir: &Path) -> Result<Vec<String>, DetectError> {
    let mut warnings = vec![];
    for file in ["prod.exs", "runtime.exs", "config.exs"] {
        let path = config_dir.join(file);
        if !path.is_file() {
            continue;
        }
        let text = read(&path)?;
        if text.contains("force_ssl:") {
            warnings.push(format!(
                "config/{file} sets force_ssl: remove it (bext redirects to HTTPS at the edge; behind bext Phoenix sees HTTP and would redirect-loop)"
            ));
        }
        if text.contains("ip: {0, 0, 0, 0") {
            warnings.push(format!(
                "config/{file} binds Phoenix to 0.0.0.0: bind it to {{127, 0, 0, 1}} so bext is the only public listener"
            ));
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forms() {
        assert_eq!(
            port_in("http: [ip: {127, 0, 0, 1}, port: 4001]"),
            Some(4001)
        );
        assert_eq!(
            port_in("http: [port: String.to_integer(System.get_env(\"PORT\") || \"4050\")]"),
            Some(4050)
        );
        assert_eq!(port_in("url: [host: \"x\"]"), None);
    }

    #[test]
    fn app_names() {
        assert_eq!(
            app_name("def project do\n [app: :hello_web, version: \"0.1.0\"]"),
            Some("hello_web".into())
        );
        assert_eq!(app_name("[apps_path: \"apps\"]"), None);
    }
}
