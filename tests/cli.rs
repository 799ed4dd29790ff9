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

/// A free loopback port (bound, read, released: `serve` binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} failed");
}

fn vip_rule(forward_to: &str) -> String {
    format!("[[rule]]\nname = \"vip\"\nutm_campaign = \"vip\"\nforward_to = \"{forward_to}\"\n")
}

/// Kills the server if the test fails before it stops it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_reloads_rules_on_sighup_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::TempDir::new().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("10-vip.toml"), vip_rule("shop_first")).unwrap();
    let port = free_port();
    let config = dir.path().join("callgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nport = {port}\n[store]\npath = \"{}\"\n[rules]\ndir = \"{}\"\n",
            dir.path().join("callgate.redb").display(),
            rules.display()
        ),
    )
    .unwrap();
    let mut server = Running(
        Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env_remove("CALLGATE_CONFIG")
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("callgate serve starts"),
    );
    let client = reqwest::Client::new();
    let lookup =
        format!("http://127.0.0.1:{port}/ringostat/route?caller=0981234567&utm_campaign=vip");
    let answer = |expected: &'static str| {
        let (client, lookup) = (client.clone(), lookup.clone());
        async move {
            let r = client.get(&lookup).send().await.ok()?;
            let text = r.text().await.ok()?;
            (text == expected).then_some(())
        }
    };
    callgate::testing::eventually(
        std::time::Duration::from_secs(20),
        "serve answers the lookup with the first rule",
        || answer("shop_first"),
    )
    .await;

    std::fs::write(rules.join("10-vip.toml"), vip_rule("shop_second")).unwrap();
    signal(&server.0, "HUP");
    callgate::testing::eventually(
        std::time::Duration::from_secs(10),
        "SIGHUP makes serve apply the edited rule",
        || answer("shop_second"),
    )
    .await;

    signal(&server.0, "TERM");
    let status = callgate::testing::eventually(
        std::time::Duration::from_secs(15),
        "serve exits after SIGTERM",
        || std::future::ready(server.0.try_wait().expect("wait on serve")),
    )
    .await;
    assert!(status.success(), "serve exited with {status}");
}
