//! The operator page in a real browser: Debian's `chromium` in headless mode, driven over the
//! DevTools protocol, against a callgate seeded with calls, a dead letter and a quarantined
//! payload, with the owner mirror on and a few lookups made. It signs in, sees both charts,
//! filters by tracking number, opens a call's decision trail (the lookup's decision first),
//! replays a dead letter, opens the owner mirror's state, and saves a screenshot of each page
//! under `target/screenshots/` for review.
//!
//! Without `chromium` on PATH this test fails (it never skips): `.ci/run` installs it
//! (`apt-get install -y chromium`).

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "support/operator_seed.rs"]
mod operator_seed;

use std::{
    io::{BufRead, BufReader},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use base64::Engine;
use callgate::{call_trail, domain::call_log::TrailKind};
use helpers::{ADMIN_TOKEN, eventually, manual_worker, mirror_on, spawn_app};
use operator_seed::{seed_calls, seed_dead_letter};
use serde_json::{Value, json};
use tempfile::TempDir;
use tungstenite::{Message, WebSocket, stream::MaybeTlsStream};

/// How long the browser may take to start, load a page or answer a command.
const PATIENCE: Duration = Duration::from_secs(30);

/// A headless chromium and one page of it, over the DevTools protocol (flat sessions).
struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Only the browser this test started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch() -> Browser {
        let profile = TempDir::new().expect("profile dir");
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--hide-scrollbars",
                "--window-size=1366,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `chromium` ({e}); the browser test needs Debian's chromium: \
                     apt-get install -y chromium"
                )
            });
        // Chromium names its DevTools endpoint on stderr; a reader thread hands it over so
        // the wait is bounded.
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_owned());
                }
            }
        });
        let endpoint = rx
            .recv_timeout(PATIENCE)
            .expect("chromium printed its DevTools endpoint");
        let (socket, _) = tungstenite::connect(endpoint.as_str()).expect("DevTools connects");
        if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
            tcp.set_read_timeout(Some(PATIENCE)).expect("read timeout");
        }
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        browser.page("Page.enable", json!({}));
        browser
    }

    /// Sends one command and reads until its answer (events in between are dropped).
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .expect("DevTools send");
        loop {
            let reply = self.socket.read().expect("DevTools answers");
            let Ok(text) = reply.to_text() else { continue };
            let Ok(reply) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if reply["id"] == json!(id) {
                assert!(reply["error"].is_null(), "{method}: {}", reply["error"]);
                return reply["result"].clone();
            }
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// Evaluates `expression` in the page; its value as JSON.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.page(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Marks the current document, so [`Browser::wait_for_new_page`] sees it replaced.
    fn mark(&mut self) {
        self.eval("window.__callgate_old_page = true");
    }

    /// Waits until a new document has loaded; returns its URL.
    async fn wait_for_new_page(&mut self) -> String {
        eventually(PATIENCE, "the next page loads", || {
            let loaded = self.eval(
                "(window.__callgate_old_page === undefined && document.readyState === 'complete') \
                 ? location.href : null",
            );
            async move { loaded.as_str().map(str::to_owned) }
        })
        .await
    }

    async fn goto(&mut self, url: &str) -> String {
        self.mark();
        self.page("Page.navigate", json!({"url": url}));
        self.wait_for_new_page().await
    }

    /// Clicks the centre of the element `selector` names, as a mouse would.
    fn click(&mut self, selector: &str) {
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
             e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            sel = json!(selector)
        ));
        let (x, y) = (
            at[0]
                .as_f64()
                .unwrap_or_else(|| panic!("no {selector} on the page")),
            at[1].as_f64().expect("y"),
        );
        for kind in ["mousePressed", "mouseReleased"] {
            self.page(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Clicks into the field `selector` names and types `text`.
    fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector);
        self.page("Input.insertText", json!({"text": text}));
    }

    /// Clicks `selector` and waits for the page it leads to; returns its URL.
    async fn click_and_wait(&mut self, selector: &str) -> String {
        self.mark();
        self.click(selector);
        self.wait_for_new_page().await
    }

    fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Saves a PNG of the page as `target/screenshots/<name>.png`.
    fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self.page(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        // CARGO_TARGET_TMPDIR is <target>/tmp, whatever the target directory is.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir")
            .join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_filters_opens_a_call_and_replays_a_dead_letter() {
    let app = spawn_app(|s| {
        manual_worker(s);
        mirror_on(s);
    })
    .await;
    let store = app.state.store.clone();
    seed_calls(&*store).await;
    // Lookups for the latency chart; the one naming c5 starts c5's trail.
    for query in [
        "caller=0981234567",
        "caller=0671234567",
        "call_id=c5&caller=0501112233",
    ] {
        assert_eq!(app.get_route(query).await.status(), 200);
    }
    eventually(PATIENCE, "c5's lookup decision is stored", || {
        let store = store.clone();
        async move { (!call_trail::read(&*store, "c5").await.ok()?.is_empty()).then_some(()) }
    })
    .await;
    let dead = seed_dead_letter(&*store, "call-c5", "400 Errors in the entity format").await;
    store
        .quarantine(
            "not a call event: no uniqueid",
            Some("application/json"),
            r#"{"caller":"380981234567","disposition":"ANSWERED"}"#,
        )
        .await
        .expect("quarantine");
    // c5's trail: planned, then refused for good.
    for kind in [
        TrailKind::Plan {
            event: "end".to_owned(),
            scenarios: vec!["S1".to_owned()],
            actions: vec!["customer".to_owned(), "order".to_owned()],
            rule: None,
        },
        TrailKind::DeadLetter {
            reason: "400 Errors in the entity format".to_owned(),
        },
    ] {
        call_trail::record(&*store, "c5", kind).await;
    }
    let mut b = Browser::launch();

    // Without a session the page sends the browser to the sign-in form.
    let url = b.goto(&app.url("/admin/")).await;
    assert_eq!(url, app.url("/admin/signin"));
    b.screenshot("01-sign-in");
    b.type_into("input[name=token]", ADMIN_TOKEN);
    let url = b.click_and_wait("form.signin button[type=submit]").await;
    assert_eq!(url, app.url("/admin/"));
    let calls = b.eval("document.querySelectorAll('tbody tr').length");
    assert_eq!(calls, json!(6), "the seeded calls");
    assert!(
        !b.text().contains("+380981234567"),
        "numbers masked in the list"
    );
    // Both charts, each with its caption drawn (an SVG element left open would swallow it).
    assert_eq!(
        b.eval(
            "Array.from(document.querySelectorAll('.chart svg'))\
             .map(svg => svg.querySelectorAll(':scope > text').length)"
        ),
        json!([1, 2]),
        "calls per hour: its caption; lookup latency: its scale's top and its caption"
    );
    assert!(b.text().contains("3 lookups · slowest p99"), "{}", b.text());
    b.screenshot("02-calls");

    // Filter by tracking number, typed the way a human would.
    b.type_into("input[name=external_number]", "+48 22 123 45 67");
    let url = b.click_and_wait("form.filters button[type=submit]").await;
    assert!(url.contains("external_number=%2B48+22+123+45+67"), "{url}");
    let links = b.eval(
        "Array.from(document.querySelectorAll('tbody tr td:first-child a')).map(a => a.pathname)",
    );
    assert_eq!(
        links,
        json!(["/admin/ui/calls/c5", "/admin/ui/calls/c3"]),
        "only the calls to that tracking number"
    );
    b.screenshot("03-calls-by-tracking-number");

    // A call's own page: the number whole.
    let url = b.click_and_wait("a[href='/admin/ui/calls/c5']").await;
    assert_eq!(url, app.url("/admin/ui/calls/c5"));
    let text = b.text();
    assert!(text.contains("+380501112233"), "{text}");
    assert!(text.contains("Decision trail"), "{text}");
    assert_eq!(
        b.eval("document.querySelectorAll('ol.trail > li').length"),
        json!(3),
        "{text}"
    );
    assert!(
        b.eval("document.querySelector('ol.trail > li').textContent")
            .as_str()
            .is_some_and(|first| first.contains("Lookup answered")),
        "{text}"
    );
    assert!(text.contains("A lookup for this caller now"), "{text}");
    b.screenshot("04-call");

    // Dead letters: replay the one there is.
    let url = b
        .click_and_wait("nav a[href='/admin/ui/dead-letters']")
        .await;
    assert_eq!(url, app.url("/admin/ui/dead-letters"));
    assert!(b.text().contains("400 Errors in the entity format"));
    b.screenshot("05-dead-letters");
    let url = b
        .click_and_wait(&format!(
            "form[action='/admin/ui/dead-letters/{dead}/replay'] button"
        ))
        .await;
    assert!(url.contains("done=replayed"), "{url}");
    assert!(b.text().contains("is back in the queue"), "{}", b.text());
    b.screenshot("06-dead-letter-replayed");
    assert_eq!(store.dead_letter_count().await.expect("count"), 0);
    let queued: Vec<u64> = store
        .list_queue(10)
        .await
        .expect("queue")
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(queued, [dead], "the replayed task is queued again");

    // Quarantine, numbers masked.
    b.click_and_wait("nav a[href='/admin/ui/quarantine']").await;
    let text = b.text();
    assert!(text.contains("not a call event: no uniqueid"), "{text}");
    assert!(!text.contains("380981234567"), "{text}");
    b.screenshot("07-quarantine");

    // The owner mirror's state.
    let url = b.click_and_wait("nav a[href='/admin/ui/mirror']").await;
    assert_eq!(url, app.url("/admin/ui/mirror"));
    let text = b.text();
    assert!(
        text.contains("Phase") && text.contains("Last error"),
        "{text}"
    );
    b.screenshot("08-owner-mirror");

    // Sign out: the page wants a session again.
    let url = b.click_and_wait("header form button").await;
    assert_eq!(url, app.url("/admin/signin"));
    let url = b.goto(&app.url("/admin/ui/dead-letters")).await;
    assert_eq!(url, app.url("/admin/signin"));
}
