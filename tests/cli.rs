//! The `callgate` binary's verbs, run as a user would.

use std::process::Command;

fn callgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(args)
        .env_remove("CALLGATE_CONFIG")
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("callgate runs")
}

#[test]
fn normalize_prints_the_e164_form() {
    let out = callgate(&["normalize", "098 123 45 67", "--region", "UA"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "+380981234567");
}

#[test]
fn normalize_explains_what_is_not_a_number_and_fails() {
    let out = callgate(&["normalize", "sip:alice"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a phone number"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn an_invalid_configuration_exits_64_with_a_message() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[lookup]\ndeadline_ms = \"soon\"\n").unwrap();
    let out = callgate(&["--config", path.to_str().unwrap(), "serve"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("deadline_ms"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("serve")
        .env("CALLGATE__CRM__KIND", "retailcrm")
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("crm.base_url"));
}
