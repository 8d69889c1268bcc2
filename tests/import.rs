//! `bext import`: Phoenix project trees in, configs that pass `bext check` out.

mod common;

use std::path::Path;

use common::run_bext;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn mix(app: &str, deps: &str) -> String {
    format!(
        "defmodule X.MixProject do\n  use Mix.Project\n  def project do\n    [app: :{app}, version: \"0.1.0\", deps: deps()]\n  end\n  defp deps do\n    [\n{deps}    ]\n  end\nend\n"
    )
}

fn import(dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["import", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_bext(&args)
}

fn check_ok(config: &Path) -> String {
    let out = run_bext(&["check", "-c", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "generated config fails check:\n{}\n{}",
        std::fs::read_to_string(config).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn plain_phoenix_with_cowboy() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "mix.exs",
        &mix(
            "hello",
            "      {:phoenix, \"~> 1.7\"},\n      {:plug_cowboy, \"~> 2.6\"},\n",
        ),
    );
    write(
        dir.path(),
        "config/dev.exs",
        "config :hello, HelloWeb.Endpoint,\n  http: [ip: {127, 0, 0, 1}, port: 4000]\n",
    );
    write(
        dir.path(),
        "config/prod.exs",
        "config :hello, HelloWeb.Endpoint, force_ssl: [hsts: true]\n",
    );
    let out = import(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("`hello`"), "{stderr}");
    assert!(stderr.contains("Cowboy"), "{stderr}");
    // The checklist, including the warning about force_ssl in prod.exs.
    assert!(stderr.contains("Plug.RewriteOn"), "{stderr}");
    assert!(stderr.contains("check_origin"), "{stderr}");
    assert!(stderr.contains("force_ssl"), "{stderr}");
    let config = dir.path().join("bext.config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("nodes = [\"127.0.0.1:4000\"]"), "{text}");
    let live = text.find("pattern = \"/live/*\"").expect("live rule");
    let all = text.find("pattern = \"/*\"").expect("catch-all");
    assert!(live < all, "/live/* must come before /*:\n{text}");
    assert!(
        !text.contains("render = \"static\""),
        "no priv/static, no static rule"
    );
    assert!(
        !text.contains("allowed_methods"),
        "no API router, the WAF's default methods"
    );
    let summary = check_ok(&config);
    assert!(
        summary.contains("/live/*") && summary.contains("websocket"),
        "{summary}"
    );

    // A second import refuses to overwrite; --force does; --stdout prints.
    let again = import(dir.path(), &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(import(dir.path(), &["--force"]).status.success());
    let printed = import(dir.path(), &["--stdout"]);
    assert!(printed.status.success());
    assert_eq!(String::from_utf8_lossy(&printed.stdout), text);
}

/// A JSON API (`phx.gen.json` style) receives real DELETE requests; the WAF's
/// default method list takes them, so the import adds no `[waf]` override.
#[test]
fn json_api_router_needs_no_method_override() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "mix.exs",
        &mix(
            "api",
            "      {:phoenix, \"~> 1.7\"},\n      {:bandit, \"~> 1.5\"},\n",
        ),
    );
    write(
        dir.path(),
        "lib/api_web/router.ex",
        "defmodule ApiWeb.Router do\n  use ApiWeb, :router\n\n  pipeline :api do\n    plug :accepts, [\"json\"]\n  end\n\n  scope \"/api\", ApiWeb do\n    pipe_through :api\n    resources \"/posts\", PostController, except: [:new, :edit]\n  end\nend\n",
    );
    let out = import(dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("bext.config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains("[waf]"), "{text}");
    assert!(!text.contains("allowed_methods"), "{text}");
    check_ok(&config);
}

#[test]
fn liveview_with_bandit_runtime_port_and_static_assets() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "mix.exs",
        &mix(
            "shop",
            "      {:phoenix, \"~> 1.7.14\"},\n      {:phoenix_live_view, \"~> 1.0\"},\n      {:bandit, \"~> 1.5\"},\n",
        ),
    );
    write(
        dir.path(),
        "config/runtime.exs",
        // As `mix phx.new` writes it: the port in a variable, and the url's
        // public port (443) before the listener's.
        "if config_env() == :prod do\n  host = System.get_env(\"PHX_HOST\") || \"example.com\"\n  port = String.to_integer(System.get_env(\"PORT\") || \"4050\")\n  config :shop, ShopWeb.Endpoint,\n    url: [host: host, port: 443, scheme: \"https\"],\n    http: [\n      ip: {0, 0, 0, 0, 0, 0, 0, 0},\n      port: port\n    ],\n    secret_key_base: secret_key_base\nend\n",
    );
    write(dir.path(), "priv/static/assets/app.js", "console.log(1)");
    // `bext site autoconfigure` is the same command.
    let out = run_bext(&["site", "autoconfigure", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Bandit") && stderr.contains("LiveView"),
        "{stderr}"
    );
    let config = dir.path().join("bext.config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("127.0.0.1:4050"), "{text}");
    assert!(
        text.contains("config/runtime.exs"),
        "the port's source is named: {text}"
    );
    assert!(text.contains("render = \"static\""), "{text}");
    assert!(text.contains("static_root = \"priv/static\""), "{text}");
    let summary = check_ok(&config);
    assert!(summary.contains("/assets/*"), "{summary}");
}

#[test]
fn umbrella_finds_the_web_app() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "mix.exs",
        "defmodule Umbrella.MixProject do\n  use Mix.Project\n  def project do\n    [apps_path: \"apps\", version: \"0.1.0\", deps: []]\n  end\nend\n",
    );
    write(
        dir.path(),
        "apps/core/mix.exs",
        &mix("core", "      {:ecto_sql, \"~> 3.10\"},\n"),
    );
    write(
        dir.path(),
        "apps/core_web/mix.exs",
        &mix(
            "core_web",
            "      {:phoenix, \"~> 1.7\"},\n      {:phoenix_live_view, \"~> 1.0\"},\n",
        ),
    );
    write(
        dir.path(),
        "config/prod.exs",
        "config :core_web, CoreWeb.Endpoint, http: [port: 4100]\n",
    );
    write(
        dir.path(),
        "apps/core_web/priv/static/robots.txt",
        "User-agent: *\n",
    );
    let out = import(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("`core_web`") && stderr.contains("umbrella"),
        "{stderr}"
    );
    let config = dir.path().join("bext.config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("127.0.0.1:4100"), "{text}");
    assert!(
        text.contains("static_root = \"apps/core_web/priv/static\""),
        "{text}"
    );
    check_ok(&config);
}

#[test]
fn non_phoenix_projects_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "mix.exs",
        &mix("lib_only", "      {:jason, \"~> 1.4\"},\n"),
    );
    let out = import(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not depend on Phoenix"), "{stderr}");
    assert!(!dir.path().join("bext.config.toml").exists());

    let empty = tempfile::tempdir().unwrap();
    let out = import(empty.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no mix.exs"));
}
