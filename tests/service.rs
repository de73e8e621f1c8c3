//! `capsule service install`: the unit it writes is one systemd accepts
//! (`systemd-analyze verify`, which reads a unit without a running
//! systemd), and an installed unit is never overwritten unasked.

use std::process::Command;

use crate::common::{capsule, capsule_bin, tools_present};

#[test]
fn the_service_unit_passes_systemd_analyze_verify() {
    if !tools_present(&["systemd-analyze"], "systemd") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The binary where a service can read it (the test's own may sit under
    // a home directory, which the unit protects).
    let binary = tmp.path().join("bin/capsule");
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    std::fs::copy(capsule_bin(), &binary).unwrap();
    let data = tmp.path().join("data");
    let units = tmp.path().join("units");
    let install = |force: bool| {
        let mut args = vec![
            "service",
            "install",
            "--unit-dir",
            units.to_str().unwrap(),
            "--binary",
            binary.to_str().unwrap(),
        ];
        if force {
            args.push("--force");
        }
        capsule(&data, &args)
    };
    let out = install(false);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("systemctl enable --now capsule"), "{said}");
    let unit_path = units.join("capsule.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for line in [
        "User=capsule".to_string(),
        format!(
            "ExecStart={} --data-dir {} up",
            binary.display(),
            data.display()
        ),
        format!("ReadWritePaths={}", data.display()),
        "AmbientCapabilities=CAP_NET_BIND_SERVICE".into(),
        "Restart=on-failure".into(),
        "NoNewPrivileges=yes".into(),
        "ProtectSystem=strict".into(),
        "ProtectHome=yes".into(),
        "PrivateTmp=yes".into(),
        "LimitNOFILE=17408".into(),
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in\n{unit}");
    }
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verified.stderr);
    assert!(
        verified.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );

    // Installed once, kept: a second install says so and changes nothing.
    std::fs::write(&unit_path, "# edited by the owner\n").unwrap();
    let out = install(false);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&unit_path).unwrap(),
        "# edited by the owner\n"
    );
    assert!(install(true).status.success());
    assert_eq!(std::fs::read_to_string(&unit_path).unwrap(), unit);

    // A relative data directory means nothing to systemd.
    let out = Command::new(capsule_bin())
        .args(["--data-dir", "relative", "service", "install", "--unit-dir"])
        .arg(&units)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absolute path"));
}
