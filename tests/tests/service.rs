//! `deploy/systemd/remora.service` passes `systemd-analyze verify` without a word (with
//! `ExecStart` pointed at the binary built here, since verify checks that it exists), and the
//! same check speaks up about a unit with a mistake in it.

mod support;

use std::process::Command;

use support::*;

/// `systemd-analyze verify` of the unit text: (exit success, what it printed).
fn verify(unit: &str) -> Option<(bool, String)> {
    let dir = TempDir::new("systemd");
    let path = dir.0.join("remora.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .ok()?;
    Some((out.status.success(), text(&out)))
}

#[test]
fn the_service_unit_verifies_cleanly_and_a_broken_one_does_not() {
    let unit = std::fs::read_to_string(root().join("deploy/systemd/remora.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/remora serve"),
        "{unit}"
    );
    let here = unit.replace(
        "ExecStart=/usr/local/bin/remora",
        &format!("ExecStart={}", remora().display()),
    );
    let Some((ok, said)) = verify(&here) else {
        eprintln!("systemd-analyze is not installed: the unit was not verified");
        return;
    };
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    let broken = here.replace("[Service]", "[Service]\nRestartt=always");
    let (_, said) = verify(&broken).unwrap();
    assert!(
        said.contains("Restartt"),
        "a misspelt key went unnoticed: {said}"
    );
}
