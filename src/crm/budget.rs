//! The CRM request budget (SPEC §6, §10): one token per HTTP request to the CRM, within the
//! API key's limits (`crm.rate_limit_rps` general, `crm.telephony_rate_limit_rps` telephony),
//! shared by its two consumers so that neither starves the other and no token is left unused:
//!
//! - **The key's limit.** Per class, the key's tokens are evenly spaced slots, one every
//!   `1/rps` (no burst), so the limit holds in every one-second window.
//! - **Lookups first, within their share.** A lookup takes a token from its own share
//!   (`crm.lookup_share` of the class, also evenly spaced), then reserves the key's next free
//!   slot, which may lie in the future: lookups queue only behind lookups.
//! - **The worker borrows what lookups leave.** The worker never reserves ahead: it takes a
//!   slot only when the key's next slot is due now, so at most one worker slot is ever
//!   booked before a lookup arrives, and a lookup waits behind the worker for at most one
//!   token interval. With no lookups the worker uses the whole rate (a backlog drains at
//!   exactly the configured rate); under a lookup storm, lookups are held to their share, so
//!   the worker keeps at least the rest (the owner mirror's `[sync]` reads count as the
//!   worker's).
//!
//! After a rate-limited answer (429/503 with `Retry-After`) every consumer of that class
//! pauses, so the process slows down instead of hammering a rate-limited CRM.
//!
//! The retailCRM adapter takes its token in its request function ([`Gate::admit`] before each
//! HTTP request, paged reads included); the sandbox CRM, which makes no HTTP requests, is
//! accounted per call by [`super::limited::LimitedCrm`]. Times are tokio's clock, so the
//! budget runs under a paused test clock.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

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

/// Evenly spaced slots, one every `interval`, no burst.
struct Spacing {
    interval: Duration,
    /// The next free slot (a past instant: free now).
    next: Mutex<Option<Instant>>,
}

impl Spacing {
    /// `None` for a rate of 0 (unlimited).
    fn new(rps: f64) -> Option<Spacing> {
        (rps > 0.0 && rps.is_finite()).then(|| Spacing {
            interval: Duration::from_secs_f64(1.0 / rps),
            next: Mutex::new(None),
        })
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.next.lock().expect("budget slot lock poisoned")
    }

    /// Books the next free slot, now or later, and returns it.
    fn reserve(&self) -> Instant {
        let now = Instant::now();
        let mut next = self.slot();
        let at = next.map_or(now, |n| n.max(now));
        *next = Some(at + self.interval);
        at
    }

    /// Waits for the next free slot and takes it.
    async fn take(&self) {
        tokio::time::sleep_until(self.reserve()).await;
    }

    /// Takes a slot only once one is free now, without booking ahead (the worker's way).
    async fn take_when_free(&self) {
        loop {
            let wait = {
                let now = Instant::now();
                let mut next = self.slot();
                match *next {
                    Some(n) if n > now => n,
                    _ => {
                        *next = Some(now + self.interval);
                        return;
                    }
                }
            };
            tokio::time::sleep_until(wait).await;
        }
    }
}

/// The whole budget of one API key (module docs).
pub struct CrmBudget {
    /// The key's limit per class.
    whole: [Option<Spacing>; 2],
    /// The lookups' share per class.
    lookup_share: [Option<Spacing>; 2],
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
        Arc::new(CrmBudget {
            whole: rps.map(Spacing::new),
            lookup_share: rps.map(|r| Spacing::new(r * lookup_share)),
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
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
        let whole = budget.whole[class.index()].as_ref();
        match self.consumer {
            Consumer::Lookup => {
                if let Some(share) = &budget.lookup_share[class.index()] {
                    share.take().await;
                }
                if let Some(whole) = whole {
                    whole.take().await;
                }
            }
            Consumer::Worker => {
                if let Some(whole) = whole {
                    whole.take_when_free().await;
                }
            }
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

    #[tokio::test(start_paused = true)]
    async fn slots_are_evenly_spaced_without_burst() {
        let spacing = Spacing::new(10.0).expect("limited");
        let started = Instant::now();
        assert_eq!(spacing.reserve(), started, "the first slot is free now");
        assert_eq!(spacing.reserve(), started + Duration::from_millis(100));
        spacing.take_when_free().await;
        assert_eq!(
            Instant::now(),
            started + Duration::from_millis(200),
            "the worker waits for the first slot nobody booked"
        );
        assert!(Spacing::new(0.0).is_none(), "0 means unlimited");
    }

    /// Runs `tasks` tasks admitting general requests through `gate` as fast as the budget lets
    /// them until `end`; returns how many each got.
    fn hog(gate: Gate, tasks: usize, end: Instant) -> Vec<tokio::task::JoinHandle<u64>> {
        (0..tasks)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move {
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
            .collect()
    }

    /// `secs` seconds from now, just before the slot at that instant (a half-open window).
    fn window(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs) - Duration::from_millis(1)
    }

    async fn total(handles: Vec<tokio::task::JoinHandle<u64>>) -> u64 {
        let mut n = 0;
        for h in handles {
            n += h.await.expect("hog task");
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn a_pop_up_never_waits_behind_general_requests() {
        let budget = CrmBudget::new(10, 40, 0.2, Arc::new(Metrics::default()));
        let end = window(5);
        // The worker's general requests saturate their class...
        let general = hog(budget.gate(Consumer::Worker), 8, end);
        let worker = budget.gate(Consumer::Worker);
        tokio::time::sleep(Duration::from_millis(1_230)).await;
        // ...and a pop-up (telephony) of the same worker still goes at once, on its own class.
        for _ in 0..3 {
            let asked = Instant::now();
            worker.admit(Class::Telephony).await;
            assert!(
                asked.elapsed() <= Duration::from_millis(25),
                "a pop-up waited {:?} behind general requests",
                asked.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(budget.taken(Consumer::Worker, Class::Telephony), 3);
        assert_eq!(
            total(general).await,
            50,
            "the general class kept its own pace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_alone_drains_at_the_whole_rate() {
        let budget = CrmBudget::new(10, 40, 0.2, Arc::new(Metrics::default()));
        let end = window(10);
        let worker = total(hog(budget.gate(Consumer::Worker), 8, end)).await;
        // 10 s at 10/s: 100 slots (the one at the start included, the one at `end` not).
        assert_eq!(worker, 100, "the worker left the idle lookup share unused");
        assert_eq!(budget.taken(Consumer::Worker, Class::General), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn under_a_worker_flood_a_lookup_waits_at_most_one_token_interval() {
        let budget = CrmBudget::new(10, 40, 0.2, Arc::new(Metrics::default()));
        let interval = Duration::from_millis(100);
        let started = Instant::now();
        let end = window(10);
        let workers = hog(budget.gate(Consumer::Worker), 8, end);
        let lookup = budget.gate(Consumer::Lookup);
        let mut lookups = 0u64;
        let mut longest = Duration::ZERO;
        // A lookup every 730 ms (within its share of 2/s), at varying phases of the slots.
        let mut at = started + Duration::from_millis(730);
        while at + interval < end {
            tokio::time::sleep_until(at).await;
            let asked = Instant::now();
            lookup.admit(Class::General).await;
            longest = longest.max(asked.elapsed());
            lookups += 1;
            at += Duration::from_millis(730);
        }
        let workers = total(workers).await;
        assert!(
            longest <= interval,
            "a lookup waited {longest:?} behind the worker"
        );
        assert_eq!(lookups, 13);
        // The key's 10/s holds; the worker took every slot the lookups left.
        assert_eq!(
            workers + lookups,
            100,
            "worker {workers}, lookups {lookups}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_saturating_worker_leaves_lookups_their_share_and_the_total_holds() {
        // 20 general requests/s: lookups 5 (0.25), the worker the rest.
        let budget = CrmBudget::new(20, 40, 0.25, Arc::new(Metrics::default()));
        let end = window(2);
        let workers = hog(budget.gate(Consumer::Worker), 8, end);
        let lookups = hog(budget.gate(Consumer::Lookup), 1, end);
        let (worker, lookups) = (total(workers).await, total(lookups).await);
        // 2 s: lookups 10 (every 200 ms), the worker the other 30 of the key's 40.
        assert!(lookups >= 9, "lookups starved: {lookups} (worker {worker})");
        assert!(worker >= 29, "worker {worker}");
        assert!(worker + lookups <= 40, "over the key: {}", worker + lookups);
        assert_eq!(budget.taken(Consumer::Lookup, Class::General), lookups);
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_in_a_storm_leave_the_worker_the_rest() {
        let budget = CrmBudget::new(20, 40, 0.25, Arc::new(Metrics::default()));
        let end = window(2);
        let lookups = hog(budget.gate(Consumer::Lookup), 8, end);
        let workers = hog(budget.gate(Consumer::Worker), 1, end);
        let (lookups, worker) = (total(lookups).await, total(workers).await);
        assert!(lookups <= 10, "lookups over their share: {lookups}");
        assert!(worker >= 29, "worker starved: {worker} (lookups {lookups})");
        assert!(worker + lookups <= 40, "over the key: {}", worker + lookups);
    }
}
