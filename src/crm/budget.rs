//! The CRM request budget (SPEC §6, §10): one token per HTTP request to the CRM, within the
//! API key's limits (`crm.rate_limit_rps` general, `crm.telephony_rate_limit_rps` telephony),
//! split between the two consumers so that neither starves the other: lookups get
//! `crm.lookup_share` of each class, the worker the rest (the owner mirror's imports and
//! history polls, `[sync]`, read through the worker's share).
//!
//! A request takes a token from its consumer's share, then one from the key's whole budget
//! (the shares add up to the whole, so that second wait is short; it is what guarantees that
//! the key's limit holds in every one-second window whatever the rounding of the shares). No
//! limiter allows a burst: requests are spaced evenly. After a rate-limited answer (429/503
//! with `Retry-After`) every consumer pauses, so the process slows down instead of hammering
//! a rate-limited CRM.
//!
//! The retailCRM adapter takes its token in its request function ([`Gate::admit`] before each
//! HTTP request, paged reads included); the sandbox CRM, which makes no HTTP requests, is
//! accounted per call by [`super::limited::LimitedCrm`].

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::CrmError;
use crate::metrics::{LimiterLabel, Metrics};

/// Pause after a rate-limited answer that carried no `Retry-After`.
pub const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);
/// Longest pause a `Retry-After` may impose.
pub const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);

/// retailCRM's two rate-limit classes (PROTOCOLS §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    General,
    /// Methods under `telephony/`.
    Telephony,
}

impl Class {
    /// The class of a request to `api/v5/<first segment>/…`.
    pub fn of_path(first_segment: &str) -> Class {
        if first_segment == "telephony" {
            Class::Telephony
        } else {
            Class::General
        }
    }

    fn index(self) -> usize {
        match self {
            Class::General => 0,
            Class::Telephony => 1,
        }
    }
}

/// Who spends the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    /// The pre-call lookup (`telephony/manager`, customer reads).
    Lookup,
    /// The worker (everything a call event makes).
    Worker,
}

impl Consumer {
    fn index(self) -> usize {
        match self {
            Consumer::Lookup => 0,
            Consumer::Worker => 1,
        }
    }
}

/// An evenly spaced limiter of `rps` requests per second (fractions allowed); `None` for 0.
fn even(rps: f64) -> Option<DefaultDirectRateLimiter> {
    if !(rps > 0.0 && rps.is_finite()) {
        return None;
    }
    Quota::with_period(Duration::from_secs_f64(1.0 / rps))
        .map(|q| RateLimiter::direct(q.allow_burst(std::num::NonZeroU32::MIN)))
}

/// The whole budget of one API key (module docs).
pub struct CrmBudget {
    /// The key's limit per class.
    whole: [Option<DefaultDirectRateLimiter>; 2],
    /// `[consumer][class]`.
    shares: [[Option<DefaultDirectRateLimiter>; 2]; 2],
    /// Tokens taken, `[consumer][class]`.
    taken: [[AtomicU64; 2]; 2],
    /// Pause after a 503/429, per class: a rate-limited general request never holds up a
    /// pop-up (telephony), and the reverse.
    paused_until: [Mutex<Option<Instant>>; 2],
    metrics: Arc<Metrics>,
}

impl CrmBudget {
    /// `general_rps`/`telephony_rps` = 0: unlimited (the sandbox). `lookup_share` in (0, 1).
    pub fn new(
        general_rps: u32,
        telephony_rps: u32,
        lookup_share: f64,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let rps = [f64::from(general_rps), f64::from(telephony_rps)];
        let share = |fraction: f64| rps.map(|r| even(r * fraction));
        Arc::new(CrmBudget {
            whole: rps.map(even),
            shares: [share(lookup_share), share(1.0 - lookup_share)],
            taken: Default::default(),
            paused_until: [Mutex::new(None), Mutex::new(None)],
            metrics,
        })
    }

    /// The handle `consumer` takes its tokens through.
    pub fn gate(self: &Arc<Self>, consumer: Consumer) -> Gate {
        Gate {
            budget: self.clone(),
            consumer,
        }
    }

    /// Tokens `consumer` has taken for `class` so far.
    pub fn taken(&self, consumer: Consumer, class: Class) -> u64 {
        self.taken[consumer.index()][class.index()].load(Ordering::Relaxed)
    }
}

/// One consumer's access to the [`CrmBudget`].
#[derive(Clone)]
pub struct Gate {
    budget: Arc<CrmBudget>,
    consumer: Consumer,
}

impl Gate {
    /// Waits for a token for one HTTP request of `class` (and out any rate-limit pause).
    pub async fn admit(&self, class: Class) {
        let budget = &self.budget;
        let started = Instant::now();
        loop {
            let until = *budget.paused_until[class.index()]
                .lock()
                .expect("pause lock poisoned");
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => break,
            }
        }
        if let Some(share) = &budget.shares[self.consumer.index()][class.index()] {
            share.until_ready().await;
        }
        if let Some(whole) = &budget.whole[class.index()] {
            whole.until_ready().await;
        }
        budget.taken[self.consumer.index()][class.index()].fetch_add(1, Ordering::Relaxed);
        let limiter = match (self.consumer, class) {
            (Consumer::Lookup, Class::General) => "lookup_general",
            (Consumer::Lookup, Class::Telephony) => "lookup_telephony",
            (Consumer::Worker, Class::General) => "general",
            (Consumer::Worker, Class::Telephony) => "telephony",
        };
        budget
            .metrics
            .limiter_wait
            .get_or_create(&LimiterLabel { limiter })
            .observe(started.elapsed().as_secs_f64());
    }

    /// After a request of `class`: a rate-limited answer pauses every consumer of that class.
    pub fn observe<T>(&self, method: &str, class: Class, result: &Result<T, CrmError>) {
        if let Err(CrmError::RateLimited { retry_after }) = result {
            let pause = retry_after
                .unwrap_or(DEFAULT_RATE_LIMIT_PAUSE)
                .min(MAX_RATE_LIMIT_PAUSE);
            let mut paused = self.budget.paused_until[class.index()]
                .lock()
                .expect("pause lock poisoned");
            let until = Instant::now() + pause;
            if paused.is_none_or(|p| p < until) {
                *paused = Some(until);
            }
            tracing::warn!(method, pause = ?pause, "CRM rate limit hit; pausing CRM requests.");
        }
    }

    /// The budget this gate draws on.
    pub fn budget(&self) -> &Arc<CrmBudget> {
        &self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rate_limited_general_request_does_not_pause_pop_ups() {
        let budget = CrmBudget::new(10, 40, 0.2, Arc::new(Metrics::default()));
        let worker = budget.gate(Consumer::Worker);
        let limited: Result<(), CrmError> = Err(CrmError::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
        });
        worker.observe("customers", Class::General, &limited);
        // A telephony request (a pop-up) goes at once...
        let started = Instant::now();
        worker.admit(Class::Telephony).await;
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "the pop-up waited out the general pause: {:?}",
            started.elapsed()
        );
        // ...while a general one waits out the pause.
        let general =
            tokio::time::timeout(Duration::from_millis(500), worker.admit(Class::General));
        assert!(
            general.await.is_err(),
            "the general request ignored the pause"
        );
    }

    #[test]
    fn even_limiters_allow_no_burst() {
        let limiter = even(10.0).expect("limiter");
        assert!(limiter.check().is_ok());
        assert!(
            limiter.check().is_err(),
            "a second request at once must wait"
        );
        assert!(even(0.0).is_none(), "0 means unlimited");
    }

    /// Runs `saturating` tasks admitting `hog` as fast as the budget lets them, and `probe`
    /// once more for `window`; returns (the hog's tokens, the probe's tokens) in the window.
    async fn contend(budget: &Arc<CrmBudget>, hog: Consumer, probe: Consumer) -> (u64, u64) {
        let window = Duration::from_millis(2_000);
        let run = |gate: Gate, tasks: usize| {
            (0..tasks)
                .map(|_| {
                    let gate = gate.clone();
                    tokio::spawn(async move {
                        let end = tokio::time::Instant::now() + window;
                        let mut n = 0u64;
                        while tokio::time::timeout_at(end, gate.admit(Class::General))
                            .await
                            .is_ok()
                        {
                            n += 1;
                        }
                        n
                    })
                })
                .collect::<Vec<_>>()
        };
        let hogs = run(budget.gate(hog), 8);
        let probes = run(budget.gate(probe), 1);
        let mut counts = (0, 0);
        for h in hogs {
            counts.0 += h.await.unwrap();
        }
        for p in probes {
            counts.1 += p.await.unwrap();
        }
        counts
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_saturating_worker_leaves_lookups_their_share_and_the_total_holds() {
        // 20 general requests/s: lookups 5 (0.25), the worker 15.
        let budget = CrmBudget::new(20, 40, 0.25, Arc::new(Metrics::new()));
        let (worker, lookups) = contend(&budget, Consumer::Worker, Consumer::Lookup).await;
        // 2 s: lookups get about 10 (the first at once), the worker about 30; never above
        // the key's 20/s (40 in 2 s, +1 for the token available at the start).
        assert!(lookups >= 8, "lookups starved: {lookups} (worker {worker})");
        assert!(worker >= 24, "worker {worker}");
        assert!(worker + lookups <= 41, "over the key: {}", worker + lookups);
        assert_eq!(budget.taken(Consumer::Lookup, Class::General), lookups);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookups_in_a_storm_leave_the_worker_its_share() {
        let budget = CrmBudget::new(20, 40, 0.25, Arc::new(Metrics::new()));
        let (lookups, worker) = contend(&budget, Consumer::Lookup, Consumer::Worker).await;
        assert!(worker >= 24, "worker starved: {worker} (lookups {lookups})");
        assert!(lookups <= 11, "lookups over their share: {lookups}");
        assert!(worker + lookups <= 41, "over the key: {}", worker + lookups);
    }
}
