//! The Grafana dashboard (`ops/grafana/callgate.json`) asks only for what `/metrics`
//! exports: every metric its queries name, with every label they group or select by.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::helpers::{add_alinas_customer, eventually, spawn_app};

const DASHBOARD: &str = include_str!("../../ops/grafana/callgate.json");

/// Labels Prometheus adds when it scrapes; no exporter sends them.
const SCRAPE_LABELS: [&str; 2] = ["instance", "job"];

/// Sample names of a Prometheus text exposition, each with the label names it carries.
fn exported(exposition: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let end = line.find([' ', '{']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_owned()).or_default();
        if let Some(inner) = line[end..]
            .strip_prefix('{')
            .and_then(|rest| rest.split_once('}'))
            .map(|(inner, _)| inner)
        {
            for pair in inner.split(',').filter(|p| !p.is_empty()) {
                labels.insert(pair.split('=').next().unwrap_or("").trim().to_owned());
            }
        }
    }
    out
}

/// Identifiers of a PromQL expression that name callgate's metrics.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("callgate_"))
        .map(str::to_owned)
        .collect()
}

/// Label names of a PromQL expression: in `by (…)` and in `{label=…}` selectors.
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for grouping in expr.split("by (").skip(1) {
        let inside = grouping.split(')').next().unwrap_or("");
        out.extend(inside.split(',').map(|l| l.trim().to_owned()));
    }
    for selector in expr.split('{').skip(1) {
        let inside = selector.split('}').next().unwrap_or("");
        for matcher in inside.split(',') {
            let name = matcher.split(['=', '!']).next().unwrap_or("").trim();
            if !name.is_empty() {
                out.insert(name.to_owned());
            }
        }
    }
    out.retain(|l| !l.is_empty());
    out
}

/// Every query of the dashboard: panel targets and templating variables.
fn queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"]
            .as_array()
            .expect("every panel has targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        out.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().expect("expr").to_owned()),
        );
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if variable["type"] == "query" {
            out.push(variable["query"].as_str().expect("query").to_owned());
        }
    }
    out
}

#[test]
fn the_promql_readers_find_names_and_labels() {
    let expr = r#"histogram_quantile(0.99, sum by (le, method) (rate(callgate_crm_latency_seconds_bucket{instance=~"$instance", x!="y"}[5m])))"#;
    assert_eq!(
        metric_names(expr),
        BTreeSet::from(["callgate_crm_latency_seconds_bucket".to_owned()])
    );
    assert_eq!(
        label_names(expr),
        ["instance", "le", "method", "x"]
            .map(str::to_owned)
            .into_iter()
            .collect()
    );
    let exposition = "# TYPE a counter\na_total{reason=\"owner\",x=\"1\"} 3\nb 1\n# EOF\n";
    let seen = exported(exposition);
    assert_eq!(
        seen["a_total"],
        BTreeSet::from(["reason".to_owned(), "x".to_owned()])
    );
    assert!(seen["b"].is_empty());
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let ids: BTreeSet<u64> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .map(|p| p["id"].as_u64().expect("a numeric panel id"))
        .collect();
    assert_eq!(
        ids.len(),
        dashboard["panels"].as_array().map_or(0, Vec::len),
        "panel ids are unique"
    );

    // An instance that has done every kind of work: lookups, a webhook, CRM requests.
    let app = spawn_app(|_| {}).await;
    add_alinas_customer(&app).await;
    assert_eq!(app.get_route("caller=380981234567").await.status(), 200);
    let event = json!({"uniqueid": "dash-1", "calldate": "2024-07-31 14:59:35",
        "caller": "0981234567", "call_type": "in", "disposition": "NO ANSWER",
        "billsec": 0, "waittime": 12});
    assert_eq!(app.post_webhook(&event).await.status(), 200);
    let client = app.client.clone();
    let metrics_url = app.url("/metrics");
    let seen = eventually(
        std::time::Duration::from_secs(10),
        "the worker's CRM requests show in /metrics",
        || {
            let client = client.clone();
            let url = metrics_url.clone();
            async move {
                let text = client.get(url).send().await.ok()?.text().await.ok()?;
                let seen = exported(&text);
                seen.contains_key("callgate_crm_requests_total")
                    .then_some(seen)
            }
        },
    )
    .await;

    let mut checked = 0;
    for expr in queries(&dashboard) {
        let names = metric_names(&expr);
        assert!(
            !names.is_empty(),
            "a query about no callgate metric: {expr}"
        );
        for name in &names {
            let labels = seen.get(name).unwrap_or_else(|| {
                panic!(
                    "{name} (in {expr}) is not exported; /metrics has {:?}",
                    seen.keys()
                )
            });
            for label in label_names(&expr) {
                if SCRAPE_LABELS.contains(&label.as_str()) {
                    continue;
                }
                assert!(
                    labels.contains(&label),
                    "{name} has no label {label:?} (in {expr}); it has {labels:?}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "the dashboard has its queries ({checked})");
}
