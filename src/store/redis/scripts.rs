//! The Redis store's Lua scripts, one file each under `scripts/` (each says what it does and
//! why it must run atomically), loaded with `include_str!`.
//!
//! Key names and limits are written `{{NAME}}` in the Lua sources and spliced in from the
//! consts of the parent module when the scripts are loaded, so every key is named once.

use redis::Script;

use super::{
    CALL_LOG, CALL_LOG_ENTRIES, CALL_LOG_SEQ, LAST_TALKED, PROMOTE_BATCH, Q_ACTIVE,
    Q_CONSUMER_GROUP, Q_DEAD, Q_DEAD_ENTRY, Q_DELAYED, Q_GROUP, Q_LEASE_SEQ, Q_LEASES, Q_READY,
    Q_SEQ, Q_TASK, Q_TASKS, QUARANTINE, QUARANTINE_ENTRIES, QUARANTINE_SEQ, SKIP_LIMIT,
    STALE_LEASE_LIMIT,
};

const PRELUDE: &str = include_str!("scripts/prelude.lua");

/// Replaces every `{{NAME}}` placeholder of a script source.
fn render(source: &str) -> String {
    let vars: [(&str, String); 21] = [
        ("Q_SEQ", Q_SEQ.to_owned()),
        ("Q_LEASE_SEQ", Q_LEASE_SEQ.to_owned()),
        ("Q_TASKS", Q_TASKS.to_owned()),
        ("Q_ACTIVE", Q_ACTIVE.to_owned()),
        ("Q_READY", Q_READY.to_owned()),
        ("Q_LEASES", Q_LEASES.to_owned()),
        ("Q_DELAYED", Q_DELAYED.to_owned()),
        ("Q_DEAD", Q_DEAD.to_owned()),
        ("Q_DEAD_ENTRY", Q_DEAD_ENTRY.to_owned()),
        ("Q_TASK", Q_TASK.to_owned()),
        ("Q_GROUP", Q_GROUP.to_owned()),
        ("Q_CONSUMER_GROUP", Q_CONSUMER_GROUP.to_owned()),
        ("CALL_LOG", CALL_LOG.to_owned()),
        ("CALL_LOG_ENTRIES", CALL_LOG_ENTRIES.to_owned()),
        ("CALL_LOG_SEQ", CALL_LOG_SEQ.to_owned()),
        ("LAST_TALKED", LAST_TALKED.to_owned()),
        ("QUARANTINE", QUARANTINE.to_owned()),
        ("QUARANTINE_ENTRIES", QUARANTINE_ENTRIES.to_owned()),
        ("QUARANTINE_SEQ", QUARANTINE_SEQ.to_owned()),
        ("PROMOTE_BATCH", PROMOTE_BATCH.to_string()),
        ("STALE_LEASE_LIMIT", STALE_LEASE_LIMIT.to_string()),
    ];
    let mut out = source.to_owned();
    for (name, value) in &vars {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    out.replace("{{SKIP_LIMIT}}", &SKIP_LIMIT.to_string())
}

/// A queue script: the shared prelude, then its body.
fn queue(body: &str) -> Script {
    Script::new(&render(&format!("{PRELUDE}\n{body}")))
}

/// A script that needs no queue helpers.
fn plain(body: &str) -> Script {
    Script::new(&render(body))
}

pub(super) struct Scripts {
    pub(super) prepare_group: Script,
    pub(super) enqueue: Script,
    pub(super) claim: Script,
    pub(super) renew_lease: Script,
    pub(super) complete: Script,
    pub(super) reschedule: Script,
    pub(super) dead_letter: Script,
    pub(super) replay: Script,
    pub(super) retry_all_now: Script,
    pub(super) list_queue: Script,
    pub(super) list_dead: Script,
    pub(super) append_call_log: Script,
    pub(super) quarantine: Script,
    pub(super) delete_if_equals: Script,
    pub(super) expire_if_equals: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            prepare_group: queue(include_str!("scripts/prepare_group.lua")),
            enqueue: queue(include_str!("scripts/enqueue.lua")),
            claim: queue(include_str!("scripts/claim.lua")),
            renew_lease: queue(include_str!("scripts/renew_lease.lua")),
            complete: queue(include_str!("scripts/complete.lua")),
            reschedule: queue(include_str!("scripts/reschedule.lua")),
            dead_letter: queue(include_str!("scripts/dead_letter.lua")),
            replay: queue(include_str!("scripts/replay.lua")),
            retry_all_now: queue(include_str!("scripts/retry_all_now.lua")),
            list_queue: queue(include_str!("scripts/list_queue.lua")),
            list_dead: queue(include_str!("scripts/list_dead.lua")),
            append_call_log: plain(include_str!("scripts/append_call_log.lua")),
            quarantine: plain(include_str!("scripts/quarantine.lua")),
            delete_if_equals: plain(include_str!("scripts/delete_if_equals.lua")),
            expire_if_equals: plain(include_str!("scripts/expire_if_equals.lua")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        let sources = [
            PRELUDE,
            include_str!("scripts/prepare_group.lua"),
            include_str!("scripts/enqueue.lua"),
            include_str!("scripts/claim.lua"),
            include_str!("scripts/complete.lua"),
            include_str!("scripts/reschedule.lua"),
            include_str!("scripts/dead_letter.lua"),
            include_str!("scripts/replay.lua"),
            include_str!("scripts/retry_all_now.lua"),
            include_str!("scripts/list_queue.lua"),
            include_str!("scripts/list_dead.lua"),
            include_str!("scripts/append_call_log.lua"),
            include_str!("scripts/quarantine.lua"),
            include_str!("scripts/renew_lease.lua"),
            include_str!("scripts/delete_if_equals.lua"),
            include_str!("scripts/expire_if_equals.lua"),
        ];
        for source in sources {
            let rendered = render(source);
            assert!(
                !rendered.contains("{{"),
                "unfilled placeholder in:\n{rendered}"
            );
            assert!(source.starts_with("-- "), "every script says what it does");
        }
    }
}
