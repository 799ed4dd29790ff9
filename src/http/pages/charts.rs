//! Charts drawn on the server as inline SVG (no JavaScript, no assets): calls per hour by
//! result.

use chrono::{Duration, NaiveDateTime, Timelike};
use maud::{Markup, html};

use crate::domain::{call::CallOutcome, call_log::CallLogEntry};

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

/// Stacked bars of [`per_hour`], with a legend.
pub fn calls_per_hour(rows: &[[u32; 4]], end: NaiveDateTime) -> Markup {
    let max = rows
        .iter()
        .map(|r| r.iter().sum::<u32>())
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = |n: u32| (n as usize * (HEIGHT - 20)) / max as usize;
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
            line x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) stroke="#d9dee5";
            text x="0" y=(HEIGHT + 14) font-size="11" fill="#5f6b7a" {
                (end.format("%Y-%m-%d %H:00")) " and the " (HOURS - 1) " hours before · busiest hour " (max) " calls"
            }
        }
        div.muted {
            @for outcome in CallOutcome::ALL {
                span style={ "color:" (colour(outcome)) } { "■ " } (outcome.as_str()) " "
            }
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
        let svg = calls_per_hour(&rows, end).into_string();
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(
            svg.contains("1 answered") && svg.contains("1 missed"),
            "{svg}"
        );
    }
}
