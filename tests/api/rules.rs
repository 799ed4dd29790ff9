//! Routing rules end to end (SPEC §5): the shipped example rules applied by the worker and
//! the lookup, reloading through the admin API, and the `rules check` / `rules explain` verbs.

use std::{path::Path, process::Command};

use callgate::config::Settings;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::{
    ADMIN_TOKEN, TestApp, manual_worker, site, spawn_app, spawn_app_with_crm, start_fake_crm,
};

/// The shipped examples directory.
fn examples() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/routing-rules/examples"
    ))
}

/// A rules directory holding copies of the named shipped examples.
fn rules_dir(files: &[&str]) -> TempDir {
    let dir = TempDir::new().expect("temp dir");
    for f in files {
        std::fs::copy(examples().join(f), dir.path().join(f)).expect("copy example");
    }
    dir
}

/// `rules.dir` plus the shop's tracking numbers (the feedback and complaints lines are the
/// shop's own lines; an unknown tracking number would add an S8 task).
fn with_rules(settings: &mut Settings, dir: &TempDir) {
    settings.rules.dir = dir.path().to_owned();
    settings.sites.push(site(
        "shop1",
        &["+380441112299", "+380441112298", "+380441112233"],
    ));
}

fn answered_call(id: &str, dst: &str) -> Value {
    json!({
        "uniqueid": id,
        "calldate": "2024-07-31 14:59:35",
        "caller": "0981234567",
        "dst": dst,
        "call_type": "in",
        "disposition": "ANSWERED",
        "billsec": 61,
        "waittime": 5,
        "employee_number": 1028,
    })
}

async fn reload(app: &TestApp) -> reqwest::Response {
    app.client
        .post(app.url("/admin/rules/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("reload request")
}

#[tokio::test]
async fn a_call_to_the_feedback_line_creates_the_customer_and_task_but_no_order() {
    // Arrange
    let dir = rules_dir(&["10-feedback-lines.toml"]);
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |s| {
        manual_worker(s);
        with_rules(s, &dir);
    })
    .await;

    // Act
    let r = app
        .post_webhook(&answered_call("fb-1", "380441112299"))
        .await;
    assert_eq!(r.status(), 200);
    app.run_worker_until_idle().await;

    // Assert
    assert_eq!(crm.customers().len(), 1);
    assert!(crm.orders().is_empty(), "{:#?}", crm.orders());
    let tasks = crm.tasks();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["text"], "Feedback call from +380981234567");
    assert_eq!(crm.calls().len(), 1);
}

#[tokio::test]
async fn a_call_to_the_complaints_line_creates_the_order_cancelled_and_other_lines_are_untouched() {
    let dir = rules_dir(&["10-feedback-lines.toml"]);
    let crm = start_fake_crm().await;
    let app = spawn_app_with_crm(&crm, |s| {
        manual_worker(s);
        with_rules(s, &dir);
    })
    .await;

    app.post_webhook(&answered_call("cx-1", "0441112298")).await;
    app.run_worker_until_idle().await;
    let orders = crm.orders();
    assert_eq!(orders.len(), 1, "{orders:#?}");
    assert_eq!(orders[0]["status"], "cancel-other");

    // Another number, another line: the default status.
    let mut other = answered_call("cx-2", "380441112233");
    other["caller"] = json!("0671234567");
    app.post_webhook(&other).await;
    app.run_worker_until_idle().await;
    let orders = crm.orders();
    assert_eq!(orders.len(), 2, "{orders:#?}");
    assert_eq!(orders[1]["status"], "new");
}

#[tokio::test]
async fn a_vip_lookup_answers_the_rules_destination_with_reason_rule() {
    let dir = rules_dir(&["20-vip-campaign.toml"]);
    let app = spawn_app(|s| with_rules(s, &dir)).await;

    let r = app
        .get_route("caller=380981234567&utm_campaign=vip&format=json")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"destination": "shop_alina", "manager_id": 27, "reason": "rule"})
    );

    // Not the campaign: the ordinary policy (a new caller has no owner).
    let r = app
        .get_route("caller=380981234567&utm_campaign=summer&format=json")
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "none", "{body}");
}

#[tokio::test]
async fn a_lookup_without_a_site_gets_it_from_dst_through_sites() {
    let dir = TempDir::new().expect("temp dir");
    std::fs::write(
        dir.path().join("10-shop1.toml"),
        "[[rule]]\nname = \"shop1 calls to the senior\"\nsite = \"shop1\"\nforward_to = \"shop_senior\"\n",
    )
    .unwrap();
    let app = spawn_app(|s| with_rules(s, &dir)).await;
    let route = |query: &'static str| {
        let app = &app;
        async move {
            let r = app.get_route(query).await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };

    // shop1's tracking number, written as Ringostat may send it: the site is shop1.
    let body = route("caller=0981234567&dst=0441112233&format=json").await;
    assert_eq!(
        body,
        json!({"destination": "shop_senior", "manager_id": 1, "reason": "rule"})
    );
    // An explicit site wins over dst.
    let body = route("caller=0981234567&dst=0441112233&site=other&format=json").await;
    assert_eq!(body["reason"], "none", "{body}");
    // Another line, or no dst: no site, the rule does not match.
    let body = route("caller=0981234567&dst=0445556677&format=json").await;
    assert_eq!(body["reason"], "none", "{body}");
    let body = route("caller=0981234567&format=json").await;
    assert_eq!(body["reason"], "none", "{body}");
}

#[tokio::test]
async fn a_bad_reload_keeps_the_old_rules_and_says_where_the_error_is() {
    // Arrange: the VIP rule runs.
    let dir = rules_dir(&["20-vip-campaign.toml"]);
    let app = spawn_app(|s| with_rules(s, &dir)).await;
    let vip = "caller=380981234567&utm_campaign=vip&format=json";
    assert_eq!(
        app.get_route(vip).await.json::<Value>().await.unwrap()["reason"],
        "rule"
    );

    // Act: a second file with a bad time window on its line 4.
    let bad = dir.path().join("30-bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"night\"\ndisposition = \"missed\"\nhours = \"22:00-26:00\"\nassign_to = 1\n",
    )
    .unwrap();
    let r = reload(&app).await;

    // Assert: 400 with file:line; the VIP rule still answers.
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "invalid_rules");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{}:4:", bad.display())) && detail.contains("bad time window"),
        "{detail}"
    );
    assert_eq!(
        app.get_route(vip).await.json::<Value>().await.unwrap()["reason"],
        "rule"
    );

    // A fixed directory reloads: the VIP rule gone, the lookup is back to the policy.
    std::fs::remove_file(&bad).unwrap();
    std::fs::remove_file(dir.path().join("20-vip-campaign.toml")).unwrap();
    let r = reload(&app).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["rules"], 0);
    assert_eq!(
        app.get_route(vip).await.json::<Value>().await.unwrap()["reason"],
        "none"
    );
}

#[tokio::test]
async fn reloading_needs_the_admin_token_and_readyz_counts_the_rules() {
    let dir = rules_dir(&["10-feedback-lines.toml", "20-vip-campaign.toml"]);
    let app = spawn_app(|s| with_rules(s, &dir)).await;
    let r = app
        .client
        .post(app.url("/admin/rules/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("3 routing rules loaded"));
}

// === The binary ===

fn callgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(args)
        .env_remove("CALLGATE_CONFIG")
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("callgate runs")
}

#[test]
fn rules_check_accepts_the_examples_and_refuses_a_bad_dir_with_exit_64_and_file_line() {
    let out = callgate(&["rules", "check", examples().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("7 rules OK"));

    let dir = TempDir::new().unwrap();
    let bad = dir.path().join("10-bad.toml");
    std::fs::write(
        &bad,
        "timezone = \"Mars/Olympus\"\n\n[[rule]]\nname = \"x\"\ncolour = \"red\"\nignore = true\n",
    )
    .unwrap();
    let out = callgate(&["rules", "check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:5:", bad.display())), "{err}");
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn serve_refuses_to_start_on_a_bad_rule() {
    let dir = TempDir::new().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "[[rule]]\nname = \"x\"\ndst = \"not a number\"\ncreate_order = false\n",
    )
    .unwrap();
    let config = dir.path().join("callgate.toml");
    std::fs::write(
        &config,
        format!(
            "[rules]\ndir = {:?}\n[store]\npath = {:?}\n[server]\nport = 0\n",
            dir.path().display().to_string(),
            dir.path().join("s.redb").display().to_string()
        ),
    )
    .unwrap();
    let out = callgate(&["--config", config.to_str().unwrap(), "serve"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.toml:3:") && err.contains("not a phone number"),
        "{err}"
    );
}

#[test]
fn rules_explain_names_the_rule_why_the_ones_above_missed_and_the_plan() {
    let dir = TempDir::new().unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        json!({
            "uniqueid": "e1", "calldate": "2024-07-31 14:00:00", "caller": "0981234567",
            "dst": "380441112233", "call_type": "in", "disposition": "ANSWERED", "billsec": 20,
            "utm_campaign": "vip", "customer_exists": false,
        })
        .to_string(),
    )
    .unwrap();
    let args = [
        "rules",
        "explain",
        event.to_str().unwrap(),
        "--rules",
        examples().to_str().unwrap(),
    ];
    let out = callgate(&args);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FIRES  \"vip campaign to Alina\""), "{text}");
    assert!(
        text.contains("dst: +380441112233 is not +380441112299"),
        "{text}"
    );
    assert!(
        text.contains("order: create in status \"new\", responsible manager 27"),
        "{text}"
    );

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = callgate(&json_args);
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rules"]["fired"], 2);
    assert_eq!(report["scenarios"][0], "S11");
}
