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

// === callgate register ===

mod register {
    use callgate::testing::fake_retailcrm::{FakeCrmConfig, FakeRetailCrm, FakeUser};
    use serde_json::{Value, json};

    const CLIENT_ID: &str = "cid-very-secret-4711";
    const EDIT: &str = "POST /api/v5/integration-modules/callgate/edit";

    async fn fake_crm() -> FakeRetailCrm {
        let crm = FakeRetailCrm::start(FakeCrmConfig::default()).await;
        crm.add_user(FakeUser::manager(27, "Alina", None));
        crm.add_user(FakeUser::manager(28, "Tatiana", None));
        crm
    }

    fn config(crm: &FakeRetailCrm, dir: &tempfile::TempDir, extra: &str) -> String {
        let path = dir.path().join("callgate.toml");
        std::fs::write(
            &path,
            format!(
                r#"
[server]
public_url = "https://callgate.shop.example"
[crm]
kind = "retailcrm"
base_url = "{}"
api_key = "{}"
client_id = "{CLIENT_ID}"
[[managers]]
crm_user_id = 27
code = "127"
[[managers]]
crm_user_id = 28
code = "128"
[[sites]]
code = "shop1"
tracking_numbers = ["044 111 22 33"]
{extra}"#,
                crm.base_url(),
                crm.api_key()
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// Runs the binary off the runtime's threads, so the fake keeps answering.
    async fn run(args: Vec<String>) -> std::process::Output {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            super::callgate(&args)
        })
        .await
        .unwrap()
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn register_twice_creates_the_module_then_changes_nothing() {
        let crm = fake_crm().await;
        let dir = tempfile::TempDir::new().unwrap();
        let cfg = config(&crm, &dir, "");
        let out = run(vec!["--config".into(), cfg.clone(), "register".into()]).await;
        assert!(out.status.success(), "{out:?}");
        assert!(text(&out.stdout).contains("created"), "{out:?}");
        let module = crm.integration_module("callgate").expect("registered");
        let t = &module["integrations"]["telephony"];
        assert_eq!(module["clientId"], CLIENT_ID);
        assert_eq!(
            t["makeCallUrl"],
            "https://callgate.shop.example/retailcrm/make-call"
        );
        assert_eq!(
            t["changeUserStatusUrl"],
            "https://callgate.shop.example/retailcrm/user-status"
        );
        assert_eq!(
            t["additionalCodes"],
            json!([{"userId": 27, "code": "127"}, {"userId": 28, "code": "128"}])
        );
        assert_eq!(
            t["externalPhones"],
            json!([{"siteCode": "shop1", "externalPhone": "+380441112233"}])
        );
        assert_eq!(crm.request_count(EDIT), 1);

        let out = run(vec!["--config".into(), cfg.clone(), "register".into()]).await;
        assert!(out.status.success(), "{out:?}");
        assert!(text(&out.stdout).contains("up to date"), "{out:?}");
        assert_eq!(crm.request_count(EDIT), 1, "the second run sends no edit");
        assert_eq!(crm.integration_module("callgate"), Some(module.clone()));

        // A changed configuration is written again.
        let cfg = config(
            &crm,
            &dir,
            "[[sites]]\ncode = \"shop1\"\ntracking_numbers = [\"044 111 22 34\"]\n",
        );
        let out = run(vec!["--config".into(), cfg, "register".into()]).await;
        assert!(text(&out.stdout).contains("updated"), "{out:?}");
        assert_eq!(crm.request_count(EDIT), 2);
        let phones = crm.integration_module("callgate").unwrap()["integrations"]["telephony"]
            ["externalPhones"]
            .clone();
        assert_eq!(phones.as_array().map(Vec::len), Some(2), "{phones}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn register_dry_run_prints_the_payload_masked_and_touches_nothing() {
        let crm = fake_crm().await;
        let dir = tempfile::TempDir::new().unwrap();
        let cfg = config(&crm, &dir, "");
        let out = run(vec![
            "--config".into(),
            cfg.clone(),
            "register".into(),
            "--dry-run".into(),
        ])
        .await;
        assert!(out.status.success(), "{out:?}");
        let stdout = text(&out.stdout);
        assert!(
            stdout.starts_with(&format!(
                "POST {}/api/v5/integration-modules/callgate/edit\n",
                crm.base_url()
            )),
            "{stdout}"
        );
        let json: Value = serde_json::from_str(
            stdout
                .split_once("integrationModule=\n")
                .expect("the payload follows")
                .1,
        )
        .expect("the payload is JSON");
        assert_eq!(json["clientId"], "[REDACTED: crm.client_id]");
        assert_eq!(
            json["integrations"]["telephony"]["hangupEventSupported"],
            true
        );
        assert!(!stdout.contains(CLIENT_ID));
        assert!(crm.requests().is_empty(), "a dry run sends nothing");

        let out = run(vec![
            "--config".into(),
            cfg,
            "register".into(),
            "--dry-run".into(),
            "--show-secrets".into(),
        ])
        .await;
        assert!(text(&out.stdout).contains(CLIENT_ID), "{out:?}");
        assert!(crm.requests().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn users_and_stores_retailcrm_does_not_know_are_named_and_fail() {
        let crm = fake_crm().await;
        let dir = tempfile::TempDir::new().unwrap();
        let cfg = config(
            &crm,
            &dir,
            "[[managers]]\ncrm_user_id = 99\ncode = \"199\"\n[[sites]]\ncode = \"shop9\"\ntracking_numbers = [\"044 111 22 99\"]\n",
        );
        let out = run(vec!["--config".into(), cfg, "register".into()]).await;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = text(&out.stderr);
        assert!(err.contains("managers[2]: crm_user_id 99"), "{err}");
        assert!(err.contains("sites[1]: code \"shop9\""), "{err}");
    }

    #[test]
    fn register_without_public_url_or_client_id_is_a_configuration_error() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[crm]\nclient_id = \"x\"\n").unwrap();
        let out = super::callgate(&["--config", path.to_str().unwrap(), "register"]);
        assert_eq!(out.status.code(), Some(64), "{out:?}");
        assert!(text(&out.stderr).contains("server.public_url"), "{out:?}");
    }
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
            &["register"],
            "Create or update the telephony integration module in retailCRM",
            "--dry-run",
        ),
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
