//! The embedded queue's scheduling state, in memory: which task of each group may run, which
//! are due, delayed or leased. Rebuilt from the task table at open; leases are not durable.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

// --- queue index -------------------------------------------------------------------------

pub(super) struct TaskMeta {
    pub(super) group: Arc<str>,
    pub(super) not_before_ms: u64,
}

#[derive(Default)]
pub(super) struct GroupState {
    /// Unfinished tasks of the group; the first is its head, the only claimable one.
    pub(super) ids: BTreeSet<u64>,
    /// The task of this group currently leased, if any (at most one).
    pub(super) leased: Option<u64>,
}

/// In-memory scheduling state of the durable queue. Invariant: the head of every group
/// without a lease is in exactly one of `ready` (due) and `delayed`; every lease is in
/// `leases`; no other task is in any of them.
#[derive(Default)]
pub(super) struct QueueIndex {
    pub(super) tasks: HashMap<u64, TaskMeta>,
    pub(super) groups: HashMap<Arc<str>, GroupState>,
    pub(super) ready: BTreeSet<u64>,
    pub(super) delayed: BTreeSet<(u64, u64)>,
    pub(super) leases: BTreeSet<(Instant, u64)>,
    /// Deadline and token of every lease.
    pub(super) lease_of: HashMap<u64, (Instant, u64)>,
    /// The last lease token handed out.
    pub(super) last_token: u64,
}

impl QueueIndex {
    pub(super) fn head(&self, group: &str) -> Option<u64> {
        let g = self.groups.get(group)?;
        if g.leased.is_some() {
            return None;
        }
        g.ids.first().copied()
    }

    pub(super) fn unschedule(&mut self, group: &str) {
        if let Some(head) = self.head(group) {
            self.ready.remove(&head);
            if let Some(meta) = self.tasks.get(&head) {
                self.delayed.remove(&(meta.not_before_ms, head));
            }
        }
    }

    pub(super) fn schedule(&mut self, group: &str, now: u64) {
        if let Some(head) = self.head(group)
            && let Some(meta) = self.tasks.get(&head)
        {
            if meta.not_before_ms <= now {
                self.ready.insert(head);
            } else {
                self.delayed.insert((meta.not_before_ms, head));
            }
        }
    }

    pub(super) fn insert(&mut self, id: u64, group: &str, not_before_ms: u64, now: u64) {
        let group: Arc<str> = match self.groups.get_key_value(group) {
            Some((k, _)) => k.clone(),
            None => Arc::from(group),
        };
        self.unschedule(&group);
        self.tasks.insert(
            id,
            TaskMeta {
                group: group.clone(),
                not_before_ms,
            },
        );
        self.groups.entry(group.clone()).or_default().ids.insert(id);
        self.schedule(&group, now);
    }

    pub(super) fn release_lease(&mut self, id: u64, group: &str) {
        if let Some((at, _)) = self.lease_of.remove(&id) {
            self.leases.remove(&(at, id));
        }
        if let Some(g) = self.groups.get_mut(group)
            && g.leased == Some(id)
        {
            g.leased = None;
        }
    }

    pub(super) fn remove(&mut self, id: u64, now: u64) {
        let Some(group) = self.tasks.get(&id).map(|m| m.group.clone()) else {
            return;
        };
        self.unschedule(&group);
        self.release_lease(id, &group);
        self.tasks.remove(&id);
        let empty = match self.groups.get_mut(&group) {
            Some(g) => {
                g.ids.remove(&id);
                g.ids.is_empty()
            }
            None => false,
        };
        if empty {
            self.groups.remove(&group);
        } else {
            self.schedule(&group, now);
        }
    }

    pub(super) fn set_not_before(&mut self, id: u64, not_before_ms: u64, now: u64) {
        let Some(group) = self.tasks.get(&id).map(|m| m.group.clone()) else {
            return;
        };
        self.unschedule(&group);
        self.release_lease(id, &group);
        if let Some(meta) = self.tasks.get_mut(&id) {
            meta.not_before_ms = not_before_ms;
        }
        self.schedule(&group, now);
    }

    /// Whether the lease `token` on task `id` is still held at `now`.
    pub(super) fn holds(&self, id: u64, token: u64, now: Instant) -> bool {
        self.lease_of
            .get(&id)
            .is_some_and(|&(until, t)| t == token && until > now)
    }

    /// Extends a held lease to `now + lease`; `false` if it is not held.
    pub(super) fn renew(&mut self, id: u64, token: u64, now: Instant, lease: Duration) -> bool {
        if !self.holds(id, token, now) {
            return false;
        }
        if let Some((until, _)) = self.lease_of.get_mut(&id) {
            self.leases.remove(&(*until, id));
            *until = now + lease;
            self.leases.insert((*until, id));
        }
        true
    }

    /// Leases the oldest due head, after promoting due delays and expiring old leases.
    /// Returns the task id and the lease's token.
    pub(super) fn claim(
        &mut self,
        now_ms: u64,
        now: Instant,
        lease: Duration,
    ) -> Option<(u64, u64)> {
        while let Some(&(nb, id)) = self.delayed.first() {
            if nb > now_ms {
                break;
            }
            self.delayed.remove(&(nb, id));
            self.ready.insert(id);
        }
        while let Some(&(at, id)) = self.leases.first() {
            if at > now {
                break;
            }
            if let Some(group) = self.tasks.get(&id).map(|m| m.group.clone()) {
                self.release_lease(id, &group);
                self.schedule(&group, now_ms);
            } else {
                self.leases.remove(&(at, id));
                self.lease_of.remove(&id);
            }
        }
        let id = self.ready.pop_first()?;
        let group = self.tasks.get(&id)?.group.clone();
        let until = now + lease;
        if let Some(g) = self.groups.get_mut(&group) {
            g.leased = Some(id);
        }
        self.last_token += 1;
        self.leases.insert((until, id));
        self.lease_of.insert(id, (until, self.last_token));
        Some((id, self.last_token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_index_hands_out_one_task_per_group_in_order() {
        let mut q = QueueIndex::default();
        let t = Instant::now();
        q.insert(1, "a", 0, 10);
        q.insert(2, "a", 0, 10);
        q.insert(3, "b", 0, 10);
        let lease = Duration::from_secs(30);
        let id = |c: Option<(u64, u64)>| c.map(|(id, _)| id);
        assert_eq!(id(q.claim(10, t, lease)), Some(1));
        assert_eq!(id(q.claim(10, t, lease)), Some(3));
        assert_eq!(id(q.claim(10, t, lease)), None);
        q.remove(1, 10);
        let (two, first_token) = q.claim(10, t, lease).expect("task 2");
        assert_eq!(two, 2);
        // Lease expiry re-delivers, under a new token; the old one no longer holds.
        let (again, token) = q.claim(10, t + lease, lease).expect("task 2 again");
        assert_eq!(again, 2);
        assert_ne!(token, first_token);
        assert!(!q.holds(2, first_token, t + lease));
        assert!(q.holds(2, token, t + lease));
        assert!(q.renew(2, token, t + lease * 2 - Duration::from_millis(1), lease));
        assert!(q.holds(2, token, t + lease * 2));
    }
}
