//! Dead letters (`/admin/ui/dead-letters`, with replay and discard) and the quarantine
//! (`/admin/ui/quarantine`).

use axum::{
    Extension,
    extract::{Path, Query, State},
    response::Redirect,
};
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    PageError,
    layout::{self, Section, format_ms, post_button},
    session::{Checked, Session},
    unexpected,
};
use crate::http::{AppState, routes::admin::DEFAULT_LIMIT};

/// What the last button did, shown once above the list (`?done=replayed&id=7`).
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    done: Option<String>,
    id: Option<u64>,
}

impl Done {
    fn notice(&self) -> Option<String> {
        let id = self.id?;
        match self.done.as_deref()? {
            "replayed" => Some(format!("Dead letter {id} is back in the queue.")),
            "discarded" => Some(format!("Dead letter {id} was discarded.")),
            "missing" => Some(format!("There is no dead letter {id} (already handled?).")),
            _ => None,
        }
    }
}

/// `GET /admin/ui/dead-letters`.
pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(done): Query<Done>,
) -> Result<Markup, PageError> {
    let letters = state
        .store
        .list_dead_letters(DEFAULT_LIMIT)
        .await
        .map_err(unexpected)?;
    let total = state.store.dead_letter_count().await.map_err(unexpected)?;
    Ok(layout::page(
        "Dead letters",
        Section::DeadLetters,
        &session,
        html! {
            h1 { "Dead letters " span.muted { "(" (total) ")" } }
            @if let Some(notice) = done.notice() { p.notice { (notice) } }
            p.muted {
                "Tasks the CRM refused for good, or that ran out of retries. Replay puts one back "
                "in the queue with its attempts reset; discard deletes it."
            }
            table {
                thead { tr {
                    th.num { "Id" } th { "Call" } th.num { "Attempts" } th { "Reason" }
                    th { "Last error" } th { "Failed at" } th { "" }
                } }
                tbody {
                    @for d in &letters {
                        @let id = d.task.id;
                        tr {
                            td.num { (id) }
                            td { code { (d.task.group) } }
                            td.num { (d.task.attempt) }
                            td { span.badge.dead { "dead" } " " (d.reason) }
                            td.muted { (d.task.last_error.as_deref().unwrap_or("—")) }
                            td { (format_ms(d.failed_at_ms)) }
                            td {
                                (post_button(&session, &format!("/admin/ui/dead-letters/{id}/replay"), "Replay", None))
                                " "
                                (post_button(&session, &format!("/admin/ui/dead-letters/{id}/discard"), "Discard", Some("danger")))
                            }
                        }
                    }
                    @if letters.is_empty() {
                        tr { td colspan="7" .muted { "No dead letters." } }
                    }
                }
            }
        },
    ))
}

fn back(done: &str, id: u64) -> Redirect {
    Redirect::to(&format!("/admin/ui/dead-letters?done={done}&id={id}"))
}

/// `POST /admin/ui/dead-letters/{id}/replay`.
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<u64>,
    _: Checked,
) -> Result<Redirect, PageError> {
    let replayed = state
        .store
        .replay_dead_letter(id)
        .await
        .map_err(unexpected)?;
    if replayed {
        tracing::info!(id, "Dead letter replayed from the web page.");
        state.worker_wakeup.notify_one();
    }
    Ok(back(if replayed { "replayed" } else { "missing" }, id))
}

/// `POST /admin/ui/dead-letters/{id}/discard`.
pub async fn discard(
    State(state): State<AppState>,
    Path(id): Path<u64>,
    _: Checked,
) -> Result<Redirect, PageError> {
    let discarded = state
        .store
        .discard_dead_letter(id)
        .await
        .map_err(unexpected)?;
    if discarded {
        tracing::info!(id, "Dead letter discarded from the web page.");
    }
    Ok(back(if discarded { "discarded" } else { "missing" }, id))
}

/// Digit runs long enough to be phone numbers, masked for a list: a quarantined payload is
/// shown as received, but its numbers only on request (the JSON API).
fn mask_digits(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 7 {
            let keep = 2;
            out.push_str(&run[..keep]);
            out.extend(std::iter::repeat_n('*', run.len() - 2 * keep));
            out.push_str(&run[run.len() - keep..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in raw.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// `GET /admin/ui/quarantine`: payloads that could not be read, numbers masked.
pub async fn quarantine(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Markup, PageError> {
    let entries = state
        .store
        .list_quarantine(DEFAULT_LIMIT)
        .await
        .map_err(unexpected)?;
    Ok(layout::page(
        "Quarantine",
        Section::Quarantine,
        &session,
        html! {
            h1 { "Quarantine" }
            p.muted { "Webhook payloads callgate could not read, kept as received (digits of long numbers masked here)." }
            table {
                thead { tr {
                    th.num { "Id" } th { "Received" } th { "Reason" } th { "Content type" } th { "Payload" }
                } }
                tbody {
                    @for q in &entries {
                        tr {
                            td.num { (q.id) }
                            td { (format_ms(q.received_at_ms)) }
                            td { (q.reason) }
                            td { code { (q.content_type.as_deref().unwrap_or("—")) } }
                            td { pre { (mask_digits(&q.raw)) } }
                        }
                    }
                    @if entries.is_empty() {
                        tr { td colspan="5" .muted { "Nothing in quarantine." } }
                    }
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::mask_digits;

    #[test]
    fn long_digit_runs_are_masked_short_ones_kept() {
        assert_eq!(
            mask_digits(r#"{"caller":"380981234567","billsec":12}"#),
            r#"{"caller":"38********67","billsec":12}"#
        );
        assert_eq!(mask_digits("Скрытый 0671234567"), "Скрытый 06******67");
        assert_eq!(mask_digits("2024-07-31"), "2024-07-31");
    }
}
