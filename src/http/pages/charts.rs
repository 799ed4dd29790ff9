//! Charts drawn on the server as inline SVG (no JavaScript, no assets): calls per hour by
//! result, and the lookup's p50/p99 per minute over the last hour.
//!
//! Every caption says what the drawing shows: the window, the scale's top, and where the
//! data is partial (a count cut at [`CHART_CALLS`], the page's filters not applied).

use chrono::{Duration, NaiveDateTime, Timelike};
use maud::{Markup, html};

use crate::{
    domain::{call::CallOutcome, call_log::CallLogEntry},
    latency_ring::MinuteLatency,
};

/// Most calls the calls-per-hour chart counts (newest first).
pub const CHART_CALLS: usize = 20_000;

/// Hours on the chart.
pub const HOURS: usize = 24;
const WIDTH: usize = 720;
const HEIGHT: usize = 160;
const BAR: usize = WIDTH / HOURS;

fn colour(outcome: CallOutcome) -> &'static str {
    match outcome {
        CallOutcome::Answered => "#1f8a4c",
        CallOutcome::Missed => "#d69e2e",
        CallOutcome::Failed => "#c53030",
        CallOutcome::Unknown => "#a0aec0",
    }
}

/// Calls per hour and result over the [`HOURS`] hours ending with `end`'s hour: one row per
/// hour, oldest first, one count per [`CallOutcome::ALL`].
pub fn per_hour(calls: &[CallLogEntry], end: NaiveDateTime) -> Vec<[u32; 4]> {
    let last_hour = end
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(end);
    let first_hour = last_hour - Duration::hours(HOURS as i64 - 1);
    let mut rows = vec![[0u32; 4]; HOURS];
    for call in calls {
        let Ok(slot) = usize::try_from((call.date - first_hour).num_hours()) else {
            continue;
        };
        if call.date < first_hour {
            continue;
        }
        let Some(row) = rows.get_mut(slot) else {
            continue;
        };
        let kind = CallOutcome::ALL
            .iter()
            .position(|o| o.as_str() == call.result)
            .unwrap_or(3);
        row[kind] += 1;
    }
    rows
}

/// `1 call`, `2 calls` (`noun` in the singular).
fn count_label(n: impl Into<u64>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// Stacked bars of [`per_hour`], with a legend. `counted` is how many calls the rows were
/// made from: at [`CHART_CALLS`] the oldest hours may be missing calls, and the caption says
/// so. A segment with calls is at least 1 px high, however small beside the busiest hour.
pub fn calls_per_hour(rows: &[[u32; 4]], end: NaiveDateTime, counted: usize) -> Markup {
    let max = rows
        .iter()
        .map(|r| r.iter().sum::<u32>())
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = |n: u32| match n {
        0 => 0,
        n => ((n as usize * (HEIGHT - 20)) / max as usize).max(1),
    };
    let busiest = rows
        .iter()
        .map(|r| r.iter().sum::<u32>())
        .max()
        .unwrap_or(0);
    // (x, y, height, colour, tooltip) of every non-empty segment, stacked from the axis.
    let mut bars = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let mut top = HEIGHT;
        for (k, outcome) in CallOutcome::ALL.iter().enumerate() {
            let h = scale(row[k]);
            if h > 0 {
                top -= h;
                let label = format!("{} {}", row[k], outcome.as_str());
                bars.push((i * BAR + 1, top, h, colour(*outcome), label));
            }
        }
    }
    html! {
        svg width=(WIDTH) height=(HEIGHT + 20) viewBox={ "0 0 " (WIDTH) " " (HEIGHT + 20) }
            role="img" aria-label="Calls per hour by result" {
            @for (x, y, h, fill, label) in &bars {
                rect x=(x) y=(y) width=(BAR - 2) height=(h) fill=(fill) { title { (label) } }
            }
            line x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) stroke="#d9dee5" {}
            text x="0" y=(HEIGHT + 14) font-size="11" fill="#5f6b7a" {
                "hours from " (first_hour_label(end)) " to " (end.format("%Y-%m-%d %H:00"))
                " (the newest call's hour) · busiest hour " (count_label(busiest, "call"))
            }
        }
        div.muted {
            @for outcome in CallOutcome::ALL {
                span style={ "color:" (colour(outcome)) } { "■ " } (outcome.as_str()) " "
            }
            " · every call, whatever the filters below"
            @if counted >= CHART_CALLS { " · only the newest " (CHART_CALLS) " calls counted: earlier hours may show fewer" }
        }
    }
}

/// The first hour on the chart ending with `end`'s hour.
fn first_hour_label(end: NaiveDateTime) -> String {
    (end - Duration::hours(HOURS as i64 - 1))
        .format("%Y-%m-%d %H:00")
        .to_string()
}

/// A latency as the chart writes it (`0.42 ms`, `12.5 ms`, `1 204 ms`).
fn ms_label(d: std::time::Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// `HH:MM` UTC of a minute since the epoch.
fn minute_label(minute: u64) -> String {
    i64::try_from(minute.saturating_mul(60))
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(|| minute.to_string(), |t| t.format("%H:%M").to_string())
}

const P50_COLOUR: &str = "#2b6cb0";
const P99_COLOUR: &str = "#dd6b20";

/// The lookup's p50 and p99 per minute over the hour in `minutes` (oldest first), as two
/// lines on one linear scale from 0 to the slowest p99; a minute without lookups breaks the
/// lines.
pub fn lookup_latency(minutes: &[MinuteLatency]) -> Markup {
    let (Some(first), Some(last)) = (minutes.first(), minutes.last()) else {
        return html! {};
    };
    let lookups: u64 = minutes.iter().map(|m| m.count).sum();
    let top = minutes
        .iter()
        .filter_map(|m| m.p99)
        .max()
        .unwrap_or_default();
    let step = WIDTH / minutes.len().max(1);
    let plot = HEIGHT - 20;
    let y = |d: std::time::Duration| {
        let share = d.as_secs_f64() / top.as_secs_f64().max(f64::MIN_POSITIVE);
        HEIGHT - (share * plot as f64).round() as usize
    };
    let x = |i: usize| i * step + step / 2;
    // One path per quantile: `M` after a gap, `L` while minutes follow each other.
    let path = |pick: fn(&MinuteLatency) -> Option<std::time::Duration>| {
        let mut d = String::new();
        let mut drawing = false;
        for (i, m) in minutes.iter().enumerate() {
            match pick(m) {
                Some(v) => {
                    d.push_str(&format!(
                        "{}{} {} ",
                        if drawing { "L" } else { "M" },
                        x(i),
                        y(v)
                    ));
                    drawing = true;
                }
                None => drawing = false,
            }
        }
        d
    };
    html! {
        svg width=(WIDTH) height=(HEIGHT + 20) viewBox={ "0 0 " (WIDTH) " " (HEIGHT + 20) }
            role="img" aria-label="Lookup latency p50 and p99 per minute, last hour" {
            @if lookups > 0 {
                path d=(path(|m| m.p99)) fill="none" stroke=(P99_COLOUR) stroke-width="2" {}
                path d=(path(|m| m.p50)) fill="none" stroke=(P50_COLOUR) stroke-width="2" {}
                @for (i, m) in minutes.iter().enumerate() {
                    @if let (Some(p50), Some(p99)) = (m.p50, m.p99) {
                        circle cx=(x(i)) cy=(y(p99)) r="2" fill=(P99_COLOUR) {
                            title { (minute_label(m.minute)) " UTC · p99 ≤ " (ms_label(p99)) " · " (count_label(m.count, "lookup")) }
                        }
                        circle cx=(x(i)) cy=(y(p50)) r="2" fill=(P50_COLOUR) {
                            title { (minute_label(m.minute)) " UTC · p50 ≤ " (ms_label(p50)) " · " (count_label(m.count, "lookup")) }
                        }
                    }
                }
                text x="0" y="11" font-size="11" fill="#5f6b7a" { "top: " (ms_label(top)) }
            } @else {
                text x="0" y=(HEIGHT / 2) font-size="12" fill="#5f6b7a" { "No lookups in this hour." }
            }
            line x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) stroke="#d9dee5" {}
            text x="0" y=(HEIGHT + 14) font-size="11" fill="#5f6b7a" {
                "minutes from " (minute_label(first.minute)) " to " (minute_label(last.minute)) " UTC · "
                (count_label(lookups, "lookup")) " · slowest p99 " (ms_label(top))
            }
        }
        div.muted {
            span style={ "color:" (P50_COLOUR) } { "■ " } "p50 "
            span style={ "color:" (P99_COLOUR) } { "■ " } "p99"
            " · upper bounds of √2-wide latency buckets, measured inside callgate (the network not included)"
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn call(hour: u32, minute: u32, result: &str) -> CallLogEntry {
        CallLogEntry {
            call_id: format!("{hour}:{minute}"),
            date: NaiveDate::from_ymd_opt(2024, 7, 31)
                .and_then(|d| d.and_hms_opt(hour, minute, 0))
                .expect("date"),
            client_phone: None,
            client_raw: None,
            incoming: true,
            site: None,
            external_number: None,
            manager_id: None,
            result: result.to_owned(),
            disposition_raw: None,
            ambiguous_customer: false,
            order_date: None,
            note: None,
        }
    }

    #[test]
    fn calls_land_in_their_hour_and_result() {
        let end = call(14, 30, "answered").date;
        let calls = [
            call(14, 5, "answered"),
            call(14, 59, "missed"),
            call(13, 0, "failed"),
            call(0, 0, "answered"),  // 14 hours before: slot 23 - 14 = 9
            call(15, 0, "answered"), // after the window
        ];
        let rows = per_hour(&calls, end);
        assert_eq!(rows.len(), HOURS);
        assert_eq!(rows[23], [1, 1, 0, 0]);
        assert_eq!(rows[22], [0, 0, 1, 0]);
        assert_eq!(rows[9], [1, 0, 0, 0]);
        assert_eq!(rows.iter().flatten().sum::<u32>(), 4);
    }

    #[test]
    fn the_chart_draws_one_bar_per_result_and_hour_with_calls() {
        let end = call(14, 30, "answered").date;
        let rows = per_hour(&[call(14, 5, "answered"), call(14, 6, "missed")], end);
        let svg = calls_per_hour(&rows, end, 2).into_string();
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        // In HTML an SVG element without `/>` or an end tag swallows what follows (the
        // caption would be the axis line's child, never drawn).
        assert!(svg.contains("></line><text"), "{svg}");
        assert!(
            svg.contains("1 answered") && svg.contains("1 missed"),
            "{svg}"
        );
    }

    #[test]
    fn the_calls_caption_says_what_is_drawn() {
        let end = call(14, 30, "answered").date;
        let mut calls = vec![call(14, 5, "answered")];
        let svg = calls_per_hour(&per_hour(&calls, end), end, 1).into_string();
        assert!(svg.contains("busiest hour 1 call<"), "{svg}");
        assert!(
            svg.contains("hours from 2024-07-30 15:00 to 2024-07-31 14:00"),
            "{svg}"
        );
        assert!(svg.contains("whatever the filters"), "{svg}");
        assert!(!svg.contains("only the newest"), "{svg}");
        // One failed call beside a busy hour still gets a bar.
        calls.extend((0..500).map(|_| call(13, 0, "answered")));
        calls.push(call(12, 0, "failed"));
        let svg = calls_per_hour(&per_hour(&calls, end), end, CHART_CALLS).into_string();
        assert!(svg.contains("busiest hour 500 calls"), "{svg}");
        assert!(svg.contains("<title>1 failed</title>"), "{svg}");
        assert!(svg.contains("only the newest 20000 calls counted"), "{svg}");
    }

    fn minute(minute: u64, count: u64, p50_ms: u64, p99_ms: u64) -> MinuteLatency {
        MinuteLatency {
            minute,
            count,
            p50: (count > 0).then(|| std::time::Duration::from_millis(p50_ms)),
            p99: (count > 0).then(|| std::time::Duration::from_millis(p99_ms)),
        }
    }

    #[test]
    fn the_latency_chart_draws_both_lines_broken_where_no_lookup_came() {
        // 29 000 000 minutes since the epoch is 2025-02-20 21:20 UTC.
        let hour: Vec<MinuteLatency> = (0..60)
            .map(|i| match i {
                0..=9 => minute(28_999_941 + i, 10, 1, 4),
                10..=49 => minute(28_999_941 + i, 0, 0, 0),
                _ => minute(28_999_941 + i, 5, 2, 40),
            })
            .collect();
        let svg = lookup_latency(&hour).into_string();
        assert_eq!(
            svg.matches("<circle").count(),
            40,
            "two points a minute with lookups"
        );
        // Each line starts twice: the gap breaks it.
        assert_eq!(svg.matches("d=\"M").count(), 2, "{svg}");
        assert_eq!(svg.matches(" M").count(), 2, "{svg}");
        assert!(svg.contains("minutes from 20:21 to 21:20 UTC"), "{svg}");
        assert!(svg.contains("150 lookups · slowest p99 40.0 ms"), "{svg}");
        let empty: Vec<MinuteLatency> = (0..60).map(|i| minute(i + 1, 0, 0, 0)).collect();
        assert!(
            lookup_latency(&empty)
                .into_string()
                .contains("No lookups in this hour.")
        );
    }
}
