//! Prometheus metrics (SPEC §8), one registry per [`crate::startup::Application`] so that
//! several apps in one test process never share counters.

use std::sync::atomic::AtomicU64;

use crate::{domain::lookup::LookupReason, latency_ring::LatencyRing};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrmLabels {
    pub method: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimiterLabel {
    pub limiter: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// Every metric callgate exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Pre-call lookup latency, seconds.
    pub lookup_latency: Histogram,
    /// Lookup answers by reason (`owner`, `none`, `timeout`, …).
    pub lookup_outcomes: Family<ReasonLabel, Counter>,
    /// CRM requests made by the lookup (misses of the owner index).
    pub lookup_crm_fetches: Counter,
    /// The last hour's lookup latency per minute (the operator page's p50/p99 chart).
    pub lookup_minutes: LatencyRing,
    /// Lookup decisions not recorded in a call's trail: beyond `lookup.trail_max_per_sec`,
    /// or the recording channel was full (`crate::call_trail::LookupTrail`).
    pub lookup_trail_dropped: Counter,
    /// Lookup decisions stored (in a call's trail, or under the caller for its call).
    pub lookup_trail_recorded: Counter,
    /// `lookup_outcomes` counters resolved once per reason: no label lookup per request.
    lookup_outcome_counters: Vec<(LookupReason, Counter)>,
    /// Webhook acknowledgement latency (durable store included), seconds.
    pub webhook_ack_latency: Histogram,
    /// Webhooks by outcome (`accepted`, `duplicate`, `unauthorized`, `malformed`).
    pub webhooks: Family<OutcomeLabel, Counter>,
    /// Queued tasks (waiting or in progress).
    pub queue_depth: Gauge,
    /// Tasks in the dead-letter list.
    pub dead_letters: Gauge,
    /// CRM requests by method and outcome.
    pub crm_requests: Family<CrmLabels, Counter>,
    /// CRM request latency by method, seconds.
    pub crm_latency: Family<MethodLabel, Histogram>,
    /// Time spent waiting for a CRM rate limiter, seconds.
    pub limiter_wait: Family<LimiterLabel, Histogram>,
    /// Customers in the owner mirror.
    pub mirror_customers: Gauge,
    /// Distinct numbers in the owner mirror.
    pub mirror_phones: Gauge,
    /// Open orders in the orders mirror.
    pub mirror_orders: Gauge,
    /// The first import's progress, 0 to 1.
    pub mirror_import_progress: Gauge<f64, AtomicU64>,
    /// Seconds since the last history poll that reached the newest record.
    pub mirror_history_lag: Gauge<f64, AtomicU64>,
    /// Failed sync steps by kind (`crm`, `crm_rate_limited`, `crm_unreachable`, `store`,
    /// `bus`).
    pub sync_errors: Family<KindLabel, Counter>,
    /// Calls found in Ringostat's call log that never arrived by webhook, queued.
    pub reconcile_recovered: Counter,
    /// `calls/list` windows listed (one request each; split halves included).
    pub reconcile_windows: Counter,
    /// Reconciliation runs that stopped on an error (the window is kept for the next run).
    pub reconcile_failures: Counter,
    /// Seconds between now and the last reconciled point.
    pub reconcile_lag_seconds: Gauge,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 50 µs .. ~26 s
    exponential_buckets(0.000_05, 2.0, 20)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("callgate");
        let lookup_latency = Histogram::new(latency_buckets());
        registry.register(
            "lookup_latency_seconds",
            "Pre-call lookup latency",
            lookup_latency.clone(),
        );
        let lookup_outcomes = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "lookup_outcomes",
            "Pre-call lookup answers by reason",
            lookup_outcomes.clone(),
        );
        let lookup_crm_fetches = Counter::default();
        registry.register(
            "lookup_crm_fetches",
            "CRM requests made by lookups that missed the owner index",
            lookup_crm_fetches.clone(),
        );
        let lookup_trail_dropped = Counter::default();
        registry.register(
            "lookup_trail_dropped",
            "Lookup decisions left out of call trails (beyond lookup.trail_max_per_sec, or the recording channel full)",
            lookup_trail_dropped.clone(),
        );
        let lookup_trail_recorded = Counter::default();
        registry.register(
            "lookup_trail_recorded",
            "Lookup decisions stored for the calls' trails",
            lookup_trail_recorded.clone(),
        );
        let webhook_ack_latency = Histogram::new(latency_buckets());
        registry.register(
            "webhook_ack_latency_seconds",
            "Webhook acknowledgement latency, durable store included",
            webhook_ack_latency.clone(),
        );
        let webhooks = Family::<OutcomeLabel, Counter>::default();
        registry.register("webhooks", "Webhooks by outcome", webhooks.clone());
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Queued call events not yet applied",
            queue_depth.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register(
            "dead_letters",
            "Call events parked in the dead-letter list",
            dead_letters.clone(),
        );
        let crm_requests = Family::<CrmLabels, Counter>::default();
        registry.register(
            "crm_requests",
            "CRM requests by method and outcome",
            crm_requests.clone(),
        );
        let crm_latency = Family::<MethodLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "crm_latency_seconds",
            "CRM request latency by method",
            crm_latency.clone(),
        );
        let limiter_wait = Family::<LimiterLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "crm_limiter_wait_seconds",
            "Time spent waiting for a CRM rate limiter",
            limiter_wait.clone(),
        );
        let mirror_customers = Gauge::default();
        registry.register(
            "mirror_customers",
            "Customers in the owner mirror",
            mirror_customers.clone(),
        );
        let mirror_phones = Gauge::default();
        registry.register(
            "mirror_phones",
            "Distinct phone numbers in the owner mirror",
            mirror_phones.clone(),
        );
        let mirror_orders = Gauge::default();
        registry.register(
            "mirror_orders",
            "Open orders in the orders mirror",
            mirror_orders.clone(),
        );
        let mirror_import_progress = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "mirror_import_progress",
            "Progress of the owner mirror's first import, 0 to 1",
            mirror_import_progress.clone(),
        );
        let mirror_history_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "mirror_history_lag_seconds",
            "Seconds since the last customers/history poll that reached the newest record",
            mirror_history_lag.clone(),
        );
        let sync_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "sync_errors",
            "Failed owner mirror sync steps by kind",
            sync_errors.clone(),
        );
        for kind in crate::sync::SyncError::KINDS {
            let _ = sync_errors.get_or_create(&KindLabel { kind });
        }
        let reconcile_recovered = Counter::default();
        registry.register(
            "reconcile_recovered_calls",
            "Calls found in Ringostat's call log that never arrived by webhook, queued",
            reconcile_recovered.clone(),
        );
        let reconcile_windows = Counter::default();
        registry.register(
            "reconcile_windows",
            "Ringostat calls/list windows listed",
            reconcile_windows.clone(),
        );
        let reconcile_failures = Counter::default();
        registry.register(
            "reconcile_failures",
            "Reconciliation runs that stopped on an error",
            reconcile_failures.clone(),
        );
        let reconcile_lag_seconds = Gauge::default();
        registry.register(
            "reconcile_lag_seconds",
            "Seconds between now and the last reconciled point",
            reconcile_lag_seconds.clone(),
        );
        let lookup_outcome_counters = LookupReason::ALL
            .iter()
            .map(|&reason| {
                let counter = lookup_outcomes
                    .get_or_create(&ReasonLabel {
                        reason: reason.as_str(),
                    })
                    .clone();
                (reason, counter)
            })
            .collect();
        Metrics {
            registry,
            lookup_outcome_counters,
            lookup_latency,
            lookup_outcomes,
            lookup_crm_fetches,
            lookup_trail_dropped,
            lookup_trail_recorded,
            lookup_minutes: LatencyRing::default(),
            webhook_ack_latency,
            webhooks,
            queue_depth,
            dead_letters,
            crm_requests,
            crm_latency,
            limiter_wait,
            mirror_customers,
            mirror_phones,
            mirror_orders,
            mirror_import_progress,
            mirror_history_lag,
            sync_errors,
            reconcile_recovered,
            reconcile_windows,
            reconcile_failures,
            reconcile_lag_seconds,
        }
    }

    /// Records one lookup's latency (the Prometheus histogram and the last hour's ring).
    pub fn observe_lookup(&self, elapsed: std::time::Duration) {
        self.lookup_latency.observe(elapsed.as_secs_f64());
        self.lookup_minutes
            .observe(elapsed, crate::latency_ring::minute_now());
    }

    /// Counts a failed sync step.
    pub fn sync_error(&self, kind: &'static str) {
        self.sync_errors.get_or_create(&KindLabel { kind }).inc();
    }

    /// The `lookup_outcomes` counter of `reason`.
    pub fn lookup_outcome(&self, reason: LookupReason) -> &Counter {
        self.lookup_outcome_counters
            .iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, c)| c)
            .expect("every LookupReason has a counter")
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
