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
    Ok(PhoenixProject {
        web_dir,
        app,
        umbrella,
        port,
        port_source,
        live_view,
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
    Ok((
        DEFAULT_PORT,
        "nowhere: no `http: [port: …]` in config/*.exs, 4000 assumed; check it".into(),
    ))
}

/// The port of the endpoint's `http:` listener: `http: [port: 4001]`, the
/// env fallback in `port: String.to_integer(System.get_env("PORT") || "4050")`,
/// or a variable, as `mix phx.new` writes runtime.exs:
/// `port = String.to_integer(System.get_env("PORT") || "4000")` then
/// `http: [ip: …, port: port]`. The `url:` port (the public one, 443) is not
/// where Phoenix listens and is never taken.
fn port_in(text: &str) -> Option<u16> {
    let mut rest = text;
    while let Some(i) = rest.find("http:") {
        // Only the keyword `http:` itself, not `https:` or `xhttp:`.
        let before_ok = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let after = &rest[i + 5..];
        if before_ok {
            if let Some(list) = bracketed(after) {
                if let Some(value) = keyword_value(list, "port:") {
                    if let Some(p) = port_value(value).or_else(|| variable(text, value)) {
                        return Some(p);
                    }
                }
            }
        }
        rest = after;
    }
    None
}

/// The contents of the `[...]` list that starts `s` (after spaces), nested
/// brackets included; None if `s` does not start with a list.
fn bracketed(s: &str) -> Option<&str> {
    let s = s.trim_start();
    let inner = s.strip_prefix('[')?;
    let mut depth = 1usize;
    for (i, c) in inner.char_indices() {
        match c {
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&inner[..i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The text of `key` in a keyword list (up to the next top-level comma).
fn keyword_value<'a>(list: &'a str, key: &str) -> Option<&'a str> {
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut items = Vec::new();
    for (i, c) in list.char_indices() {
        match c {
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items
        .into_iter()
        .find_map(|item| item.trim().strip_prefix(key).map(str::trim))
}

/// `4001`, or `String.to_integer(System.get_env("PORT") || "4050")` /
/// `System.get_env("PORT", "4050")` → the default.
fn port_value(v: &str) -> Option<u16> {
    let v = v.trim();
    let digits = |s: &str| -> Option<u16> {
        let d: String = s
            .trim_start()
            .trim_start_matches('"')
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        d.parse().ok().filter(|p| *p > 0)
    };
    if v.starts_with(|c: char| c.is_ascii_digit()) {
        return digits(v);
    }
    if !v.contains("System.get_env") {
        return None;
    }
    if let Some(j) = v.find("||") {
        return digits(&v[j + 2..]);
    }
    // System.get_env("PORT", "4050")
    let args = v.split_once("get_env(")?.1;
    digits(args.split_once(',')?.1)
}

/// `port: NAME` where `NAME = <port expression>` is assigned in the file.
fn variable(text: &str, name: &str) -> Option<u16> {
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    for line in text.lines() {
        let line = line.trim();
        if let Some(rhs) = line
            .strip_prefix(name)
            .and_then(|r| r.trim_start().strip_prefix('='))
        {
            if !rhs.starts_with('=') {
                if let Some(p) = port_value(rhs) {
                    return Some(p);
                }
            }
        }
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
    fn the_runtime_exs_mix_phx_new_writes() {
        let runtime = r#"
if config_env() == :prod do
  host = System.get_env("PHX_HOST") || "example.com"
  port = String.to_integer(System.get_env("PORT") || "4123")

  config :hello, HelloWeb.Endpoint,
    url: [host: host, port: 443, scheme: "https"],
    http: [
      # Enable IPv6 and bind on all interfaces.
      ip: {0, 0, 0, 0, 0, 0, 0, 0},
      port: port
    ],
    secret_key_base: secret_key_base
end
"#;
        assert_eq!(port_in(runtime), Some(4123));
        // The url port alone is not a listener port.
        assert_eq!(port_in("url: [host: host, port: 443]"), None);
        assert_eq!(
            port_in("https: [port: 4443], http: [port: 4001]"),
            Some(4001)
        );
        assert_eq!(
            port_in("http: [port: System.get_env(\"PORT\", \"4002\") |> String.to_integer()]"),
            Some(4002)
        );
        assert_eq!(port_in("http: [port: port]"), None);
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
