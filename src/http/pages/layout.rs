//! The page frame: head with the inlined style sheet, the navigation and the sign-out button.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::session::Session;

/// The style sheet, compiled into the binary (no CDN, no build step).
const STYLE: &str = include_str!("style.css");

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Calls,
    DeadLetters,
    Quarantine,
    Mirror,
}

/// A whole page for a signed-in operator.
pub fn page(title: &str, section: Section, session: &Session, body: Markup) -> Markup {
    let link = |href: &str, label: &str, this: Section| {
        html! { a href=(href) class=[(section == this).then_some("active")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    span.brand { "callgate" }
                    nav {
                        (link("/admin/", "Calls", Section::Calls))
                        (link("/admin/ui/dead-letters", "Dead letters", Section::DeadLetters))
                        (link("/admin/ui/quarantine", "Quarantine", Section::Quarantine))
                        (link("/admin/ui/mirror", "Owner mirror", Section::Mirror))
                    }
                    form method="post" action="/admin/signout" {
                        (csrf_field(session))
                        button type="submit" { "Sign out" }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · callgate" }
            style { (PreEscaped(STYLE)) }
        }
    }
}

/// A page without navigation (sign-in, errors before sign-in).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { (body) }
        }
    }
}

/// The hidden CSRF field every POST form of the page carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A POST button (replay, discard): a one-button form with the CSRF token.
pub fn post_button(session: &Session, action: &str, label: &str, class: Option<&str>) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf_field(session))
            button type="submit" class=[class] { (label) }
        }
    }
}

/// Milliseconds since the epoch as `Y-m-d H:M:S` UTC.
pub fn format_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || ms.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}
