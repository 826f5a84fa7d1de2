//! The ramp plot: the candidate's share over time as the server-drawn SVG, one segment
//! per ramp step taken (from the audit log), kills shaded. Readable without hovering:
//! each step is labelled with its percent, and the figure carries a text description.

use crate::store::{Action, AuditEntry};
use maud::{Markup, html};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 74.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 38.0;

/// One horizontal piece of the line: the share from `from_ms` to `to_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub from_ms: u64,
    pub to_ms: u64,
    pub percent: f64,
    /// The ramp step (0-based) this segment is, or `None` for a share set otherwise
    /// (a rollback, an abort, a promote).
    pub step: Option<usize>,
}

/// A stretch of time the release was killed.
#[derive(Debug, Clone, PartialEq)]
pub struct Killed {
    pub from_ms: u64,
    pub to_ms: u64,
    pub reason: Option<String>,
}

/// A guard verdict at the end of a step's window, with the window's error rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub at_ms: u64,
    /// `pass`, `regression` or `insufficient_data`.
    pub verdict: String,
    pub candidate: (u64, u64),
    pub baseline: (u64, u64),
}

impl Verdict {
    fn text(&self) -> String {
        let rate = |(errors, samples): (u64, u64)| {
            if samples == 0 {
                "no outcomes".to_owned()
            } else {
                format!("{} errors ({errors} of {samples})", pct(100.0 * errors as f64 / samples as f64))
            }
        };
        format!(
            "guard {} at {}: candidate {}, baseline {}",
            self.verdict.replace('_', " "),
            clock(self.at_ms),
            rate(self.candidate),
            rate(self.baseline)
        )
    }
}

/// What the plot shows, computed from the audit log alone.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub candidate: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub segments: Vec<Segment>,
    pub kills: Vec<Killed>,
    pub verdicts: Vec<Verdict>,
}

fn share(entry: &AuditEntry, candidate: &str) -> Option<f64> {
    let after = entry.after.as_ref()?;
    let buckets = after.get("allocation").and_then(|a| a.get(candidate)).and_then(|b| b.as_u64()).unwrap_or(0);
    Some(cohort_sdk::buckets_to_percent(buckets.min(u64::from(u32::MAX)) as u32))
}

fn step_of(entry: &AuditEntry) -> Option<usize> {
    entry.after.as_ref()?.get("ramp")?.get("step")?.as_u64().map(|s| s as usize)
}

/// The history of the latest ramp of `candidate` in `entries` (oldest first), up to
/// `now_ms`; `None` when no ramp was ever started.
pub fn history(entries: &[AuditEntry], candidate: &str, now_ms: u64) -> Option<History> {
    let start = entries.iter().rposition(|e| e.action == Action::RampStart)?;
    let start_ms = entries[start].time_ms;
    let end_ms = now_ms.max(start_ms + 1_000);
    let mut segments: Vec<Segment> = Vec::new();
    for entry in &entries[start..] {
        let is_step = matches!(entry.action, Action::RampStart | Action::RampAdvance);
        let Some(percent) = share(entry, candidate) else { continue };
        let changes = segments.last().is_none_or(|s| s.percent != percent);
        if !is_step && !changes {
            continue;
        }
        if let Some(last) = segments.last_mut() {
            last.to_ms = entry.time_ms;
        }
        let step = if is_step { step_of(entry) } else { None };
        segments.push(Segment { from_ms: entry.time_ms, to_ms: end_ms, percent, step });
    }
    let verdicts = entries[start..]
        .iter()
        .filter(|e| e.action != Action::RampStart && e.actor == crate::ramp::DRIVER_ACTOR)
        .filter_map(|e| {
            let figures = e.after.as_ref()?.get("ramp")?.get("guard_figures")?;
            let n = |k: &str| figures.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            Some(Verdict {
                at_ms: e.time_ms,
                verdict: figures.get("verdict")?.as_str()?.to_owned(),
                candidate: (n("candidate_errors"), n("candidate_samples")),
                baseline: (n("baseline_errors"), n("baseline_samples")),
            })
        })
        .collect();
    let mut kills = Vec::new();
    let mut open: Option<(u64, Option<String>)> = None;
    for entry in entries {
        match entry.action {
            Action::Kill if open.is_none() => open = Some((entry.time_ms, entry.reason.clone())),
            Action::Unkill => {
                if let Some((from_ms, reason)) = open.take() {
                    kills.push(Killed { from_ms, to_ms: entry.time_ms, reason });
                }
            }
            _ => {}
        }
    }
    if let Some((from_ms, reason)) = open {
        kills.push(Killed { from_ms, to_ms: end_ms, reason });
    }
    kills.retain(|k| k.to_ms > start_ms);
    for kill in &mut kills {
        kill.from_ms = kill.from_ms.max(start_ms);
    }
    Some(History { candidate: candidate.to_owned(), start_ms, end_ms, segments, kills, verdicts })
}

/// `HH:MM:SS` (UTC) of a time in ms since the epoch.
fn clock(ms: u64) -> String {
    let secs = (ms / 1_000) % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3_600, (secs / 60) % 60, secs % 60)
}

fn pct(p: f64) -> String {
    let text = format!("{p:.3}");
    format!("{} %", text.trim_end_matches('0').trim_end_matches('.'))
}

/// The plain-language description of the plot, for people who cannot see it.
pub fn describe(history: &History) -> String {
    let mut parts: Vec<String> = history
        .segments
        .iter()
        .map(|s| match s.step {
            Some(step) => format!("step {} at {} from {}", step + 1, pct(s.percent), clock(s.from_ms)),
            None => format!("{} from {}", pct(s.percent), clock(s.from_ms)),
        })
        .collect();
    for kill in &history.kills {
        parts.push(format!("killed from {} to {}", clock(kill.from_ms), clock(kill.to_ms)));
    }
    parts.extend(history.verdicts.iter().map(Verdict::text));
    format!("Share of {} over time (UTC): {}.", history.candidate, parts.join("; "))
}

/// The top of the y axis: the smallest of 10, 25, 50 and 100 % above every share, so
/// that a ramp's first small steps are not drawn flat on the axis.
fn scale(history: &History) -> f64 {
    let highest = history.segments.iter().map(|s| s.percent).fold(0.0, f64::max);
    [10.0, 25.0, 50.0, 100.0].into_iter().find(|&top| highest <= top * 0.9).unwrap_or(100.0)
}

/// The SVG.
pub fn svg(history: &History) -> Markup {
    let span = (history.end_ms - history.start_ms).max(1) as f64;
    let x = |ms: u64| LEFT + (ms.saturating_sub(history.start_ms)) as f64 / span * (WIDTH - LEFT - RIGHT);
    let top = scale(history);
    let y = |p: f64| TOP + (top - p.clamp(0.0, top)) / top * (HEIGHT - TOP - BOTTOM);
    let f = |v: f64| format!("{v:.1}");
    let steps = history.segments.iter().filter(|s| s.step.is_some()).count();
    html! {
        svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-labelledby="plot-title plot-desc"
            data-steps=(steps) xmlns="http://www.w3.org/2000/svg" {
            title id="plot-title" { "Share of " (history.candidate) " over time" }
            desc id="plot-desc" { (describe(history)) }
            @for kill in &history.kills {
                rect.killed x=(f(x(kill.from_ms))) y=(f(TOP)) width=(f((x(kill.to_ms) - x(kill.from_ms)).max(2.0)))
                    height=(f(HEIGHT - TOP - BOTTOM)) {
                    title { "Killed" @if let Some(r) = &kill.reason { ": " (r) } }
                }
                text.killlabel x=(f(x(kill.from_ms) + 4.0)) y=(f(TOP + 12.0)) { "killed" }
            }
            @for p in [0.0, top / 4.0, top / 2.0, top * 0.75, top] {
                line.grid x1=(f(LEFT)) x2=(f(WIDTH - RIGHT)) y1=(f(y(p))) y2=(f(y(p))) {}
                text.tick x=(f(LEFT - 6.0)) y=(f(y(p) + 4.0)) text-anchor="end" { (pct(p)) }
            }
            line.axis x1=(f(LEFT)) x2=(f(LEFT)) y1=(f(TOP)) y2=(f(HEIGHT - BOTTOM)) {}
            line.axis x1=(f(LEFT)) x2=(f(WIDTH - RIGHT)) y1=(f(HEIGHT - BOTTOM)) y2=(f(HEIGHT - BOTTOM)) {}
            text.tick x=(f(LEFT)) y=(f(HEIGHT - 8.0)) { (clock(history.start_ms)) " UTC" }
            text.tick x=(f(WIDTH - RIGHT)) y=(f(HEIGHT - 8.0)) text-anchor="end" { "now " (clock(history.end_ms)) }
            @for pair in history.segments.windows(2) {
                line.riser x1=(f(x(pair[1].from_ms))) x2=(f(x(pair[1].from_ms))) y1=(f(y(pair[0].percent))) y2=(f(y(pair[1].percent))) {}
            }
            @for segment in &history.segments {
                @let (x1, x2) = (x(segment.from_ms), x(segment.to_ms).max(x(segment.from_ms) + 2.0));
                @if let Some(step) = segment.step {
                    line.step data-step=(step) x1=(f(x1)) x2=(f(x2)) y1=(f(y(segment.percent))) y2=(f(y(segment.percent))) {
                        title { "Step " (step + 1) ": " (pct(segment.percent)) " from " (clock(segment.from_ms)) }
                    }
                } @else {
                    line.other x1=(f(x1)) x2=(f(x2)) y1=(f(y(segment.percent))) y2=(f(y(segment.percent))) {}
                }
                @let near_end = x1 > WIDTH - RIGHT - 60.0;
                text.label x=(f(if near_end { x2 } else { x1 + 3.0 })) y=(f((y(segment.percent) - 7.0).max(TOP + 10.0)))
                    text-anchor=(if near_end { "end" } else { "start" }) { (pct(segment.percent)) }
            }
            @for verdict in &history.verdicts {
                @let at = history.segments.iter().rev().find(|s| s.from_ms < verdict.at_ms).map_or(0.0, |s| s.percent);
                circle class=(format!("verdict {}", verdict.verdict)) cx=(f(x(verdict.at_ms))) cy=(f(y(at))) r="6" {
                    title { (verdict.text()) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(time_ms: u64, action: Action, share: u32, step: Option<u64>) -> AuditEntry {
        AuditEntry {
            revision: time_ms,
            time_ms,
            actor: "cohort:ramp".into(),
            action,
            release: Some("checkout".into()),
            before: None,
            after: Some(json!({"allocation": {"v2": share}, "ramp": step.map(|s| json!({"step": s}))})),
            reason: None,
        }
    }

    #[test]
    fn one_segment_per_step_taken_and_kills_shaded() {
        let entries = vec![
            entry(1_000, Action::Create, 0, None),
            entry(2_000, Action::RampStart, 1_000, Some(0)),
            entry(14_000, Action::RampAdvance, 5_000, Some(1)),
            entry(20_000, Action::Kill, 5_000, Some(1)),
            entry(30_000, Action::Unkill, 5_000, Some(1)),
            entry(40_000, Action::RampAdvance, 100_000, Some(2)),
        ];
        let history = history(&entries, "v2", 50_000).expect("a ramp");
        let steps: Vec<(Option<usize>, f64, u64, u64)> =
            history.segments.iter().map(|s| (s.step, s.percent, s.from_ms, s.to_ms)).collect();
        assert_eq!(
            steps,
            vec![(Some(0), 1.0, 2_000, 14_000), (Some(1), 5.0, 14_000, 40_000), (Some(2), 100.0, 40_000, 50_000)]
        );
        assert_eq!(history.kills, vec![Killed { from_ms: 20_000, to_ms: 30_000, reason: None }]);
        let svg = svg(&history).into_string();
        assert_eq!(svg.matches("class=\"step\"").count(), 3);
        assert_eq!(svg.matches("<rect class=\"killed\"").count(), 1);
        assert!(describe(&history).contains("step 2 at 5 % from 00:00:14"), "{}", describe(&history));
    }

    #[test]
    fn the_guards_verdicts_are_marked_with_the_windows_error_rates() {
        let mut advance = entry(14_000, Action::RampAdvance, 5_000, Some(1));
        advance.after = Some(json!({"allocation": {"v2": 5_000}, "ramp": {"step": 1, "guard_figures": {
            "verdict": "pass", "baseline_samples": 1_200, "baseline_errors": 12,
            "candidate_samples": 400, "candidate_errors": 4, "z_critical": 2.3, "at_ms": 14_000}}}));
        let entries = vec![entry(2_000, Action::RampStart, 1_000, Some(0)), advance];
        let history = history(&entries, "v2", 20_000).expect("a ramp");
        assert_eq!(history.verdicts.len(), 1);
        assert!(
            describe(&history)
                .contains("guard pass at 00:00:14: candidate 1 % errors (4 of 400), baseline 1 % errors (12 of 1200)"),
            "{}",
            describe(&history)
        );
        assert_eq!(svg(&history).into_string().matches("<circle class=\"verdict pass\"").count(), 1);
    }

    #[test]
    fn a_rollback_is_drawn_but_is_not_a_step() {
        let entries =
            vec![entry(2_000, Action::RampStart, 1_000, Some(0)), entry(9_000, Action::RampRollback, 0, Some(0))];
        let history = history(&entries, "v2", 10_000).expect("a ramp");
        assert_eq!(history.segments.iter().filter(|s| s.step.is_some()).count(), 1);
        assert_eq!(history.segments.last().map(|s| (s.step, s.percent)), Some((None, 0.0)));
        assert!(super::history(&entries[..0], "v2", 1).is_none());
    }
}
