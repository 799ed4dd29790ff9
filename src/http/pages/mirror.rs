//! The owner mirror's sync state (`/admin/ui/mirror`): phase, first import's progress,
//! history lag, size, inactive users and the last failed step, as this instance sees them.

use axum::{Extension, extract::State};
use maud::{Markup, html};

use super::{
    layout::{self, Section, format_ms},
    session::Session,
};
use crate::{http::AppState, sync::mirror::SyncPhase};

/// `GET /admin/ui/mirror`.
pub async fn state(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Markup {
    let body = match &state.sync {
        None => html! {
            p.notice {
                "The owner mirror is off (" code { "sync.enabled = false" } "): every lookup "
                "that misses the owner index asks the CRM."
            }
        },
        Some(sync) => {
            let mirror = sync.mirror();
            let (customers, phones) = mirror.size();
            let inactive = mirror.inactive();
            let config = sync.config();
            let (phase, progress) = match mirror.phase() {
                SyncPhase::Starting => ("starting: loading the stored mirror", None),
                SyncPhase::Importing { done, total } => ("first import", Some((done, total))),
                SyncPhase::Synced { .. } => ("following the CRM's history", None),
            };
            html! {
                dl.facts {
                    dt { "Phase" } dd { (phase) }
                    dt { "First import" } dd {
                        @match progress {
                            Some((done, Some(total))) if total > 0 => {
                                progress max=(total) value=(done.min(total)) {}
                                " " ((done.min(total) * 100) / total) "% · " (done) " of " (total) " customers"
                            }
                            Some((done, _)) => { (done) " customers read (total not known yet)" }
                            None if mirror.imported() => { "done" }
                            None => { "not started" }
                        }
                    }
                    dt { "Lookups answer from" } dd {
                        @if mirror.imported() { "the mirror alone (" code { "lookup.on_miss" } " decides a miss)" }
                        @else { "the owner index and the CRM, until the import is done" }
                    }
                    dt { "History lag" } dd {
                        @match mirror.lag() {
                            Some(lag) => { (lag.as_secs()) " s since a poll reached the newest change" }
                            None => { "—" }
                        }
                        span.muted { " · polled every " (config.history_interval.as_secs()) " s" }
                    }
                    dt { "Size" } dd { (customers) " customers · " (phones) " numbers" }
                    dt { "Inactive users" } dd {
                        @if inactive.is_empty() { "none" }
                        @else { (inactive.iter().map(|m| format!("#{}", m.0)).collect::<Vec<_>>().join(", ")) }
                        span.muted { " · users read every " (config.users_interval.as_secs()) " s" }
                    }
                    dt { "Last error" } dd {
                        @match mirror.last_failure() {
                            Some(f) => {
                                span.badge.dead { (f.kind) } " " (format_ms(f.at_ms)) " · step "
                                code { (f.step) } ": " (f.error)
                            }
                            None => { "none since this instance started" }
                        }
                    }
                }
            }
        }
    };
    layout::page(
        "Owner mirror",
        Section::Mirror,
        &session,
        html! {
            h1 { "Owner mirror" }
            p.muted {
                "The copy of the CRM's customers and their managers that lookups answer from (flow F), "
                "as this instance sees it."
            }
            (body)
        },
    )
}
