//! Best-effort facts from the project's Phoenix router(s), read as text:
//! whether API clients send real HTTP `DELETE` requests. Browsers never do in
//! Phoenix (forms and `method="delete"` links tunnel it through
//! `POST _method=delete`), but a JSON API built with `resources` or `delete`
//! routes behind an `:api` pipeline receives it as is, and the WAF's default
//! method list (OWASP CRS's) leaves `DELETE` out.

use std::fs;
use std::path::{Path, PathBuf};

/// Directory levels searched under `lib/` (routers live at `lib/APP_web/router.ex`).
const MAX_DEPTH: usize = 4;
/// Directories visited at most: a huge `lib/` must not stall the import.
const MAX_DIRS: usize = 2_000;

/// True when a router under `web_dir/lib` routes `DELETE` for API clients.
pub fn api_deletes(web_dir: &Path) -> bool {
    routers(&web_dir.join("lib"))
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .any(|text| routes_api_delete(&text))
}

/// The `router.ex` files under `lib`, breadth first and bounded.
fn routers(lib: &Path) -> Vec<PathBuf> {
    let mut found = vec![];
    let mut level = vec![lib.to_path_buf()];
    let mut visited = 0;
    for _ in 0..MAX_DEPTH {
        let mut next = vec![];
        for dir in level {
            visited += 1;
            if visited > MAX_DIRS {
                return found;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                if path.is_dir() {
                    next.push(path);
                } else if path.file_name().is_some_and(|n| n == "router.ex") {
                    found.push(path);
                }
            }
        }
        level = next;
    }
    found
}

/// An `:api` pipeline is piped through, and some route takes `DELETE`: an
/// explicit `delete "/path", ...`, or `resources` without `:delete` excluded.
fn routes_api_delete(router: &str) -> bool {
    let code: Vec<&str> = router
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let api = code
        .iter()
        .any(|l| l.starts_with("pipe_through") && l.contains(":api"));
    let deletes = code.iter().any(|l| {
        l.starts_with("delete \"")
            || l.starts_with("delete(\"")
            || (l.starts_with("resources ") || l.starts_with("resources(")) && resource_deletes(l)
    });
    api && deletes
}

/// `resources "/x", C` routes `:delete` unless `only:` leaves it out or
/// `except:` names it (on the same line, as `mix format` writes short ones).
fn resource_deletes(line: &str) -> bool {
    if let Some(only) = line.split("only:").nth(1) {
        return only.contains(":delete");
    }
    if let Some(except) = line.split("except:").nth(1) {
        return !except.contains(":delete");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = "  pipeline :api do\n    plug :accepts, [\"json\"]\n  end\n  scope \"/api\", AppWeb do\n    pipe_through :api\n";

    #[test]
    fn api_resources_and_delete_routes_count() {
        assert!(routes_api_delete(&format!(
            "{API}    resources \"/posts\", PostController, except: [:new, :edit]\n  end\n"
        )));
        assert!(routes_api_delete(&format!(
            "{API}    delete \"/sessions\", SessionController, :delete\n  end\n"
        )));
        assert!(routes_api_delete(&format!(
            "{API}    resources \"/tags\", TagController, only: [:index, :delete]\n"
        )));
    }

    #[test]
    fn browser_only_or_delete_excluded_does_not() {
        // Browser scopes tunnel DELETE through POST; no :api pipeline in use.
        let browser = "  scope \"/\", AppWeb do\n    pipe_through :browser\n    resources \"/posts\", PostController\n  end\n";
        assert!(!routes_api_delete(browser));
        assert!(!routes_api_delete(&format!(
            "{API}    resources \"/posts\", PostController, only: [:index, :show]\n"
        )));
        assert!(!routes_api_delete(&format!(
            "{API}    resources \"/posts\", PostController, except: [:delete]\n"
        )));
        assert!(!routes_api_delete(&format!(
            "{API}    # delete \"/old\", OldController, :delete\n"
        )));
    }
}
