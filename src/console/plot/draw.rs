//! The plot as SVG: two panels over one time axis — the candidate's share above, the
//! error rates per window below — with kills shaded across both and the guard's verdicts
//! marked and labelled between them. Everything a reader needs is written on it (axis
//! labels, panel titles, direct labels at the lines' ends, the verdicts' outcomes); the
//! `title` tooltips only repeat it.

use super::{History, RateWindow, clock, pct, rate, span};
use maud::{Markup, html};

const WIDTH: f64 = 640.0;
const LEFT: f64 = 74.0;
const RIGHT: f64 = 14.0;
const SHARE_TOP: f64 = 28.0;
const SHARE_BOTTOM: f64 = 168.0;
/// The baseline of the verdict labels, between the panels (a second row is a line lower).
const BAND: f64 = 184.0;
const RATE_TOP: f64 = 238.0;
const RATE_BOTTOM: f64 = 330.0;
const HEIGHT: f64 = 358.0;

/// A coordinate with one decimal, written straight into the page: no `String` for each
/// of the plot's numbers (the console's size budget).
#[derive(Clone, Copy)]
struct Coordinate(f64);

impl maud::Render for Coordinate {
    #[inline(never)]
    fn render_to(&self, buffer: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(buffer, "{:.1}", self.0);
    }
}

impl std::fmt::Display for Coordinate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1}", self.0)
    }
}

fn f(v: f64) -> Coordinate {
    Coordinate(v)
}

/// A plain `line` element: one copy of its markup for all the plot's plain lines.
#[inline(never)]
fn line(class: &str, x1: f64, x2: f64, y1: f64, y2: f64) -> Markup {
    html! { line class=(class) x1=(f(x1)) x2=(f(x2)) y1=(f(y1)) y2=(f(y2)) {} }
}

/// Where things go: time to x, percents to y in each panel.
struct Frame {
    start_ms: u64,
    span_ms: f64,
    share_top: f64,
    rate_top: f64,
}

impl Frame {
    fn x(&self, ms: u64) -> f64 {
        LEFT + ms.saturating_sub(self.start_ms) as f64 / self.span_ms * (WIDTH - LEFT - RIGHT)
    }

    fn share_y(&self, p: f64) -> f64 {
        SHARE_TOP + (self.share_top - p.clamp(0.0, self.share_top)) / self.share_top * (SHARE_BOTTOM - SHARE_TOP)
    }

    fn rate_y(&self, p: f64) -> f64 {
        RATE_TOP + (self.rate_top - p.clamp(0.0, self.rate_top)) / self.rate_top * (RATE_BOTTOM - RATE_TOP)
    }
}

/// The top of an axis: the smallest of `tops` with `highest` under 90 % of it, so small
/// values are not drawn flat on the axis.
fn scale(highest: f64, tops: &[f64]) -> f64 {
    tops.iter().copied().find(|&top| highest <= top * 0.9).unwrap_or(100.0)
}

/// Each side's points: (window, error rate), windows without outcomes left out.
fn points(history: &History, side: fn(&RateWindow) -> (u64, u64)) -> Vec<(&RateWindow, f64)> {
    history.rates.iter().filter_map(|w| rate(side(w)).map(|r| (w, r))).collect()
}

/// The SVG.
pub fn svg(history: &History) -> Markup {
    let highest_share = history.segments.iter().map(|s| s.percent).fold(0.0, f64::max);
    let highest_rate =
        history.rates.iter().flat_map(|w| [rate(w.candidate), rate(w.baseline)]).flatten().fold(0.0, f64::max);
    let frame = Frame {
        start_ms: history.start_ms,
        span_ms: (history.end_ms - history.start_ms).max(1) as f64,
        share_top: scale(highest_share, &[10.0, 25.0, 50.0, 100.0]),
        rate_top: scale(highest_rate, &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]),
    };
    let steps = history.segments.iter().filter(|s| s.step.is_some()).count();
    let measured = history.rates.iter().filter(|w| w.candidate.1 > 0 || w.baseline.1 > 0).count();
    html! {
        svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-labelledby="plot-title plot-desc"
            data-steps=(steps) data-rate-windows=(measured) xmlns="http://www.w3.org/2000/svg" {
            title id="plot-title" { "Ramp of " (history.candidate) ": share and error rates over time" }
            desc id="plot-desc" { (super::describe(history)) }
            (kills(history, &frame))
            (share_panel(history, &frame))
            (rates_panel(history, &frame))
            (verdicts(history, &frame))
            (time_axis(history, &frame))
        }
    }
}

/// Kill switches in force, shaded across both panels and named at the top (a label
/// close to the previous one goes a line lower).
fn kills(history: &History, frame: &Frame) -> Markup {
    let (mut previous, mut line) = (f64::MIN, 0.0);
    let lines: Vec<f64> = history
        .kills
        .iter()
        .map(|kill| {
            let x = frame.x(kill.from_ms);
            line = if x - previous < 56.0 { line + 1.1 } else { 0.0 };
            previous = x;
            line
        })
        .collect();
    html! {
        @for (kill, line) in history.kills.iter().zip(lines) {
            @let (x1, x2) = (frame.x(kill.from_ms), frame.x(kill.to_ms));
            rect.killed data-switch=(kill.switch.label()) x=(f(x1)) y=(f(SHARE_TOP)) width=(f((x2 - x1).max(2.0)))
                height=(f(RATE_BOTTOM - SHARE_TOP)) {
                title { (kill.switch.label()) @if let Some(r) = &kill.reason { ": " (r) } }
            }
            text.killlabel x=(f(x1 + 4.0)) y=(f(SHARE_TOP + 12.0)) dy={ (f(line)) "em" } { (kill.switch.label()) }
        }
    }
}

/// Horizontal grid lines with their percent, and the panel's axes.
fn grid(ticks: &[f64], y: impl Fn(f64) -> f64, top: f64, bottom: f64) -> Markup {
    html! {
        @for &p in ticks {
            (line("grid", LEFT, WIDTH - RIGHT, y(p), y(p)))
            text.tick x=(f(LEFT - 6.0)) y=(f(y(p) + 4.0)) text-anchor="end" { (pct(p)) }
        }
        (line("axis", LEFT, LEFT, top, bottom))
        (line("axis", LEFT, WIDTH - RIGHT, bottom, bottom))
    }
}

fn share_panel(history: &History, frame: &Frame) -> Markup {
    let top = frame.share_top;
    let y = |p: f64| frame.share_y(p);
    html! {
        text.ptitle x=(f(LEFT)) y="2" dominant-baseline="hanging" { "Share of " (history.candidate) }
        (grid(&[0.0, top / 4.0, top / 2.0, top * 0.75, top], y, SHARE_TOP, SHARE_BOTTOM))
        @for pair in history.segments.windows(2) {
            @let x = f(frame.x(pair[1].from_ms));
            line.riser x1=(x) x2=(x) y1=(f(y(pair[0].percent))) y2=(f(y(pair[1].percent))) {}
        }
        @for segment in &history.segments {
            @let (x1, x2) = (frame.x(segment.from_ms), frame.x(segment.to_ms).max(frame.x(segment.from_ms) + 2.0));
            @let at = f(y(segment.percent));
            @if let Some(step) = segment.step {
                line.step data-step=(step) x1=(f(x1)) x2=(f(x2)) y1=(at) y2=(at) {
                    title { "Step " (step + 1) ": " (pct(segment.percent)) " from " (clock(segment.from_ms)) }
                }
            } @else {
                (line("other", x1, x2, y(segment.percent), y(segment.percent)))
            }
            @let near_end = x1 > WIDTH - RIGHT - 60.0;
            text.label x=(f(if near_end { x2 } else { x1 + 3.0 })) y=(f((y(segment.percent) - 7.0).max(SHARE_TOP + 10.0)))
                text-anchor=(if near_end { "end" } else { "start" }) { (pct(segment.percent)) }
        }
    }
}

/// One side's error rate: a line through the windows that had outcomes (broken where
/// one had none), a dot per window, and the latest rate written at the line's end.
fn rate_line(history: &History, frame: &Frame, side: fn(&RateWindow) -> (u64, u64), class: &str, name: &str) -> Markup {
    let points = points(history, side);
    let mid = |w: &RateWindow| frame.x(w.from_ms.max(history.start_ms) / 2 + w.to_ms / 2);
    // Runs of consecutive windows with outcomes.
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut previous_end = None;
    for (window, r) in &points {
        let point = (mid(window), frame.rate_y(*r));
        match runs.last_mut() {
            Some(run) if previous_end == Some(window.from_ms) => run.push(point),
            _ => runs.push(vec![point]),
        }
        previous_end = Some(window.to_ms);
    }
    let last = points.last().map(|(w, r)| (mid(w), frame.rate_y(*r), *r));
    let above = class == "candidate";
    html! {
        @for run in runs.iter().filter(|r| r.len() > 1) {
            polyline class={ "rate " (class) } points=(run.iter().map(|(x, y)| format!("{}, {}", f(*x), f(*y))).collect::<Vec<_>>().join(" ")) {}
        }
        @for (window, r) in &points {
            circle class={ "pt " (class) } cx=(f(mid(window))) cy=(f(frame.rate_y(*r))) r="2.5" {
                title { (name) ": " (pct(*r)) " errors from " (clock(window.from_ms)) }
            }
        }
        @if let Some((x, y, r)) = last {
            @let near_end = x > WIDTH - RIGHT - 90.0;
            text class={ "ratelabel " (class) } x=(f(if near_end { x - 5.0 } else { x + 5.0 }))
                y=(f(if above { (y - 6.0).max(RATE_TOP + 9.0) } else { (y + 13.0).min(RATE_BOTTOM - 3.0) }))
                text-anchor=(if near_end { "end" } else { "start" }) { (name) " " (pct(r)) }
        }
    }
}

fn rates_panel(history: &History, frame: &Frame) -> Markup {
    let top = frame.rate_top;
    let empty = history.rates.iter().all(|w| w.candidate.1 == 0 && w.baseline.1 == 0);
    html! {
        text.ptitle x=(f(LEFT)) y=(f(RATE_TOP - 8.0)) { "Error rate per " (span(history.window_ms)) " window" }
        (grid(&[0.0, top / 2.0, top], |p| frame.rate_y(p), RATE_TOP, RATE_BOTTOM))
        @if empty {
            text.tick x=(f((LEFT + WIDTH - RIGHT) / 2.0)) y=(f((RATE_TOP + RATE_BOTTOM) / 2.0)) text-anchor="middle" {
                "No outcomes reported since the ramp began"
            }
        } @else {
            (rate_line(history, frame, |w| w.baseline, "baseline", &history.baseline))
            (rate_line(history, frame, |w| w.candidate, "candidate", &history.candidate))
        }
    }
}

/// Each verdict: a line across both panels, a dot on the share, and what the driver did,
/// written between the panels (on a second row when the first is taken there).
fn verdicts(history: &History, frame: &Frame) -> Markup {
    let mut first_row_end = f64::MIN;
    let placed: Vec<(f64, usize)> = history
        .verdicts
        .iter()
        .map(|v| {
            let x = frame.x(v.at_ms).clamp(LEFT + 34.0, WIDTH - RIGHT - 34.0);
            if x - first_row_end >= 110.0 {
                first_row_end = x;
                (x, 0)
            } else {
                (x, 1)
            }
        })
        .collect();
    html! {
        @for (verdict, (label_x, row)) in history.verdicts.iter().zip(placed) {
            @let x = frame.x(verdict.at_ms);
            @let share = history.segments.iter().rev().find(|s| s.from_ms < verdict.at_ms).map_or(0.0, |s| s.percent);
            (line("verdictline", x, x, SHARE_TOP, RATE_BOTTOM))
            circle class={ "verdict " (verdict.verdict) } cx=(f(x)) cy=(f(frame.share_y(share))) r="6" {
                title { (verdict.text()) }
            }
            text class={ "vlabel " (verdict.verdict) } x=(f(label_x)) y=(f(BAND)) dy=(if row == 0 { "0" } else { "1.15em" })
                text-anchor="middle" {
                (match verdict.verdict.as_str() { "pass" => "✓ ", "regression" => "✗ ", _ => "? " }) (verdict.outcome())
            }
        }
    }
}

fn time_axis(history: &History, frame: &Frame) -> Markup {
    let middle = history.start_ms / 2 + history.end_ms / 2;
    let y = f(HEIGHT - 10.0);
    html! {
        text.tick x=(f(LEFT)) y=(y) { (clock(history.start_ms)) " UTC" }
        @if history.end_ms - history.start_ms >= 60_000 {
            text.tick x=(f(frame.x(middle))) y=(y) text-anchor="middle" { (clock(middle)) }
        }
        text.tick x=(f(WIDTH - RIGHT)) y=(y) text-anchor="end" { "now " (clock(history.end_ms)) }
    }
}

/// The key to the lines and marks, as HTML beside the figure (it wraps on a phone).
pub fn legend(history: &History) -> Markup {
    let item = |class: &str, text: String| html! { li { span class={ "sw " (class) } {} (text) } };
    html! {
        ul.legend {
            (item("share", format!("share of {}", history.candidate)))
            (item("candidate", format!("{} error rate", history.candidate)))
            (item("baseline", format!("{} error rate (baseline)", history.baseline)))
            (item("kill", "killed or kill-all".to_owned()))
            (item("mark", "guard verdict".to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::entry;
    use super::super::{Verdict, history};
    use super::*;
    use crate::store::{Action, BucketCounts};

    fn counts(start: u64, version: &str, ok: u64, error: u64) -> BucketCounts {
        BucketCounts { bucket_start_ms: start, version: version.into(), ok, error }
    }

    #[test]
    fn steps_kills_error_rates_and_verdicts_are_all_drawn_and_labelled() {
        let entries = vec![
            entry(0, Action::RampStart, 1_000, Some(0)),
            entry(60_000, Action::RampAdvance, 5_000, Some(1)),
            entry(90_000, Action::Kill, 5_000, Some(1)),
            entry(100_000, Action::Unkill, 5_000, Some(1)),
        ];
        let mut history = history(&entries, "v2", 120_000).expect("a ramp").with_rates(
            "v1",
            &[
                counts(0, "v2", 99, 1),
                counts(10_000, "v2", 98, 2),
                counts(30_000, "v2", 95, 5),
                counts(40_000, "v2", 90, 10),
                counts(0, "v1", 100, 0),
            ],
        );
        history.verdicts.push(Verdict {
            at_ms: 60_000,
            verdict: "pass".into(),
            action: Action::RampAdvance,
            candidate: (3, 200),
            baseline: (0, 100),
        });
        let svg = svg(&history).into_string();
        assert_eq!(svg.matches("class=\"step\"").count(), 2);
        assert_eq!(svg.matches("<rect class=\"killed\"").count(), 1);
        assert!(svg.contains("data-rate-windows=\"4\""), "four windows had outcomes");
        assert_eq!(svg.matches("<polyline class=\"rate candidate\"").count(), 2, "broken where a window had none");
        assert_eq!(svg.matches("<circle class=\"pt baseline\"").count(), 1);
        assert!(svg.contains(">v2 10 %</text>"), "the latest rate at the line's end: {svg}");
        assert!(svg.contains(">✓ advanced</text>"));
        assert!(svg.contains("Error rate per 10 s window"));
        let legend = legend(&history).into_string();
        assert!(legend.contains("v1 error rate (baseline)"));
    }

    #[test]
    fn without_outcomes_the_rates_panel_says_so() {
        let entries = vec![entry(0, Action::RampStart, 1_000, Some(0))];
        let history = history(&entries, "v2", 30_000).expect("a ramp").with_rates("v1", &[]);
        let svg = svg(&history).into_string();
        assert!(svg.contains("No outcomes reported since the ramp began"));
        assert!(svg.contains("data-rate-windows=\"0\""));
    }
}
