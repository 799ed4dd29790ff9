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

/// `callgate [VERB…] --help`: exits 0 and prints its help on stdout.
fn help(verbs: &[&str]) -> String {
    let mut args = verbs.to_vec();
    args.push("--help");
    let out = callgate(&args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_verb_shows_its_own_help() {
    // (verb path, the description its own help opens with, an argument only it has)
    let verbs: &[(&[&str], &str, &str)] = &[
        (
            &["serve"],
            "Run the gateway (HTTP endpoints and the worker)",
            "Usage: callgate serve",
        ),
        (
            &["normalize"],
            "Print the E.164 form of a phone number, or why it is not one",
            "--region",
        ),
        (
            &["dead-letters"],
            "Dead letters of a running callgate (through its admin API)",
            "replay",
        ),
        (
            &["dead-letters", "list"],
            "Print the dead letters (newest first) as JSON",
            "--limit",
        ),
        (
            &["dead-letters", "replay"],
            "Put a dead letter (or all of them) back in the queue",
            "--all",
        ),
        (
            &["quarantine"],
            "Quarantined webhook payloads of a running callgate (through its admin API)",
            "Usage: callgate quarantine",
        ),
        (
            &["quarantine", "list"],
            "Print the quarantined payloads (newest first) as JSON",
            "--limit",
        ),
        (
            &["rules"],
            "Check routing rules, or explain which rule fires for an event",
            "explain",
        ),
        (&["rules", "check"], "Validate a rules directory", "[DIR]"),
        (
            &["rules", "explain"],
            "Show which rule fires for a webhook payload",
            "--json",
        ),
    ];
    let top = help(&[]);
    assert!(top.starts_with(env!("CARGO_PKG_DESCRIPTION")), "{top}");
    for (path, description, own_arg) in verbs {
        let text = help(path);
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(description),
            "`callgate {} --help` opens with {first:?}, not its own description {description:?}",
            path.join(" ")
        );
        assert!(
            text.contains(own_arg),
            "{path:?} --help lacks {own_arg}: {text}"
        );
        // Each verb is listed, with its own one-line description, in its parent's help.
        let parent = help(&path[..path.len() - 1]);
        let name = path[path.len() - 1];
        let listed = parent
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} is not listed in its parent's help: {parent}"));
        let summary: String = description.chars().take(30).collect();
        assert!(
            listed.contains(&summary),
            "{name} is listed as {listed:?}, not with its own description"
        );
    }
}
