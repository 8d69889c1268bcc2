//! The shipped systemd units pass `systemd-analyze verify` (with the binary
//! paths pointed at this build, since verify checks that executables exist).

mod common;

use std::process::Command;

use common::repo_path;

/// systemd-analyze, installing Debian's systemd package when it is missing
/// and we may (root with apt-get). `None` when it cannot run here.
fn systemd_analyze() -> Option<&'static str> {
    let have = || {
        Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have() {
        return Some("systemd-analyze");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "systemd"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    }
    have().then_some("systemd-analyze")
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        eprintln!("SKIPPED: systemd-analyze is not available and could not be installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fake_release = dir.path().join("app");
    std::fs::write(&fake_release, "#!/bin/sh\nexit 0\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake_release, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bext = env!("CARGO_BIN_EXE_bext");
    for unit in ["bext.service", "phoenix@.service"] {
        let text = std::fs::read_to_string(repo_path(&format!("systemd/{unit}"))).unwrap();
        let text = text.replace("/usr/local/bin/bext", bext).replace(
            "/srv/app/_build/prod/rel/app/bin/app",
            fake_release.to_str().unwrap(),
        );
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    // The template is verified through an instance, as systemd would load it.
    std::fs::copy(
        dir.path().join("phoenix@.service"),
        dir.path().join("phoenix@4000.service"),
    )
    .unwrap();
    let out = Command::new(analyze)
        .current_dir(dir.path())
        .args(["verify", "--man=no", "bext.service", "phoenix@4000.service"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed:\n{stderr}");
    // Anything it reports about our units is a defect (it also prints
    // unrelated notes about the host's own units, which are filtered out).
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("bext.service") || l.contains("phoenix@"))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze complaints:\n{}",
        ours.join("\n")
    );
}

#[test]
fn bext_unit_reloads_without_restarting_and_is_hardened() {
    let unit = std::fs::read_to_string(repo_path("systemd/bext.service")).unwrap();
    for needle in [
        "Type=forking",
        "PIDFile=/run/bext/bext.pid",
        "ExecReload=/usr/local/bin/bext reload -d",
        "User=bext",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "LimitNOFILE=",
        "After=phoenix@4000.service",
    ] {
        assert!(unit.contains(needle), "bext.service lacks {needle}");
    }
    let phoenix = std::fs::read_to_string(repo_path("systemd/phoenix@.service")).unwrap();
    for needle in ["Environment=PORT=%i", "Restart=on-failure", "bin/app start"] {
        assert!(phoenix.contains(needle), "phoenix@.service lacks {needle}");
    }
}
