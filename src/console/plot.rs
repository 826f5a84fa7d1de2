//! The release plot: what a ramp did, as a server-drawn SVG readable without hovering.
//! The candidate's share over time (one segment per ramp step taken, from the audit log),
//! the stretches the release or its whole environment was killed (shaded), the
//! candidate's and the baseline's error rates per window (from the stored outcomes), and
//! the guard's verdicts (advanced, held, paused, rolled back) where the ramp driver wrote
//! them. This module gathers the figures; [`draw`] draws them.

mod draw;

use crate::api::AppState;
use crate::releases::ReleaseView;
use crate::store::{Action, AuditEntry, AuditQuery, BUCKET_MS, Bucket, BucketCounts, EnvName};
use maud::{Markup, html};

/// Most windows the error-rate lines are cut into, whatever the ramp's age.
const MAX_WINDOWS: u64 = 40;

/// The widths an error-rate window may have (whole outcome buckets, as people count).
const WINDOWS_SECS: [u64; 10] = [10, 20, 30, 60, 120, 300, 600, 900, 1_800, 3_600];

/// The environment's latest audit entries searched for kill-all periods.
const KILL_ALL_LOOKBACK: usize = 500;

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

/// Whose kill switch was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// The release's own.
    Release,
    /// The environment's kill-all.
    Environment,
}

impl Switch {
    fn label(self) -> &'static str {
        match self {
            Switch::Release => "killed",
            Switch::Environment => "kill-all",
        }
    }
}

/// A stretch of time the release was killed.
#[derive(Debug, Clone, PartialEq)]
pub struct Killed {
    pub from_ms: u64,
    pub to_ms: u64,
    pub reason: Option<String>,
    pub switch: Switch,
}

/// A guard verdict at the end of a step's window, with the window's error rates and
/// what the ramp driver did about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub at_ms: u64,
    /// `pass`, `regression` or `insufficient_data`.
    pub verdict: String,
    /// The transition the driver wrote.
    pub action: Action,
    pub candidate: (u64, u64),
    pub baseline: (u64, u64),
}

impl Verdict {
    /// What happened, in a word or two: the label drawn beside the mark.
    pub fn outcome(&self) -> &'static str {
        match self.action {
            Action::RampAdvance => "advanced",
            Action::RampComplete => "completed",
            Action::RampExtend => "held",
            Action::RampRollback => "rolled back",
            Action::RampPause => "paused",
            _ => "checked",
        }
    }

    fn text(&self) -> String {
        let rate = |(errors, samples): (u64, u64)| {
            if samples == 0 {
                "no outcomes".to_owned()
            } else {
                format!("{} errors ({errors} of {samples})", pct(100.0 * errors as f64 / samples as f64))
            }
        };
        format!(
            "guard {} at {} ({}): candidate {}, baseline {}",
            self.verdict.replace('_', " "),
            clock(self.at_ms),
            self.outcome(),
            rate(self.candidate),
            rate(self.baseline)
        )
    }
}

/// The outcomes of one window: `(errors, samples)` of each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateWindow {
    pub from_ms: u64,
    pub to_ms: u64,
    pub candidate: (u64, u64),
    pub baseline: (u64, u64),
}

/// An error rate in percent, `None` without samples.
pub fn rate((errors, samples): (u64, u64)) -> Option<f64> {
    (samples > 0).then(|| 100.0 * errors as f64 / samples as f64)
}

/// What the plot shows.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub candidate: String,
    pub baseline: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub segments: Vec<Segment>,
    pub kills: Vec<Killed>,
    pub verdicts: Vec<Verdict>,
    /// The width of one error-rate window (a multiple of the outcome bucket).
    pub window_ms: u64,
    pub rates: Vec<RateWindow>,
}

fn share(entry: &AuditEntry, candidate: &str) -> Option<f64> {
    entry.release.as_ref()?;
    let after = entry.after.as_ref()?;
    let buckets = after.get("allocation").and_then(|a| a.get(candidate)).and_then(|b| b.as_u64()).unwrap_or(0);
    Some(cohort_sdk::buckets_to_percent(buckets.min(u64::from(u32::MAX)) as u32))
}

fn step_of(entry: &AuditEntry) -> Option<usize> {
    entry.after.as_ref()?.get("ramp")?.get("step")?.as_u64().map(|s| s as usize)
}

/// The stretches a kill switch was on, from its entries (oldest first). An unkill with
/// no kill before it in `entries` ends a kill older than them: it is drawn from the start.
fn kill_periods(entries: &[AuditEntry], switch: Switch, end_ms: u64) -> Vec<Killed> {
    let (on, off) = match switch {
        Switch::Release => (Action::Kill, Action::Unkill),
        Switch::Environment => (Action::KillAll, Action::UnkillAll),
    };
    let mut kills = Vec::new();
    let mut open: Option<(u64, Option<String>)> = None;
    for entry in entries {
        if entry.action == on && open.is_none() {
            open = Some((entry.time_ms, entry.reason.clone()));
        } else if entry.action == off {
            let (from_ms, reason) = open.take().unwrap_or((0, None));
            kills.push(Killed { from_ms, to_ms: entry.time_ms, reason, switch });
        }
    }
    if let Some((from_ms, reason)) = open {
        kills.push(Killed { from_ms, to_ms: end_ms, reason, switch });
    }
    kills
}

/// The history of the latest ramp of `candidate` in `entries` (the release's audit
/// entries and the environment's kill-all ones, oldest first), up to `now_ms`; `None`
/// when no ramp was ever started. Error rates come separately ([`History::with_rates`]).
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
                action: e.action,
                candidate: (n("candidate_errors"), n("candidate_samples")),
                baseline: (n("baseline_errors"), n("baseline_samples")),
            })
        })
        .collect();
    let mut kills = kill_periods(entries, Switch::Release, end_ms);
    kills.extend(kill_periods(entries, Switch::Environment, end_ms));
    kills.retain(|k| k.to_ms > start_ms);
    for kill in &mut kills {
        kill.from_ms = kill.from_ms.max(start_ms);
    }
    Some(History {
        candidate: candidate.to_owned(),
        baseline: String::new(),
        start_ms,
        end_ms,
        segments,
        kills,
        verdicts,
        window_ms: BUCKET_MS,
        rates: Vec::new(),
    })
}

impl History {
    /// The error rates of `baseline` and the candidate per window, from the stored
    /// outcome buckets of the release (`counts`, any order): at most [`MAX_WINDOWS`]
    /// windows, each a whole number of buckets, aligned to the buckets.
    pub fn with_rates(mut self, baseline: &str, counts: &[BucketCounts]) -> History {
        let first = Bucket::containing(self.start_ms).start_ms();
        let span = self.end_ms.saturating_sub(first).max(1);
        let wanted = span.div_ceil(MAX_WINDOWS);
        let window_ms = WINDOWS_SECS
            .iter()
            .map(|s| s * 1_000)
            .find(|w| *w >= wanted)
            .unwrap_or_else(|| wanted.div_ceil(3_600_000) * 3_600_000);
        let n = span.div_ceil(window_ms);
        let mut rates: Vec<RateWindow> = (0..n)
            .map(|i| RateWindow {
                from_ms: first + i * window_ms,
                to_ms: (first + (i + 1) * window_ms).min(self.end_ms),
                ..RateWindow::default()
            })
            .collect();
        for c in counts {
            let Some(i) = c.bucket_start_ms.checked_sub(first).map(|d| (d / window_ms) as usize) else { continue };
            let Some(window) = rates.get_mut(i) else { continue };
            let side = if c.version == baseline {
                &mut window.baseline
            } else if c.version == self.candidate {
                &mut window.candidate
            } else {
                continue;
            };
            side.0 = side.0.saturating_add(c.error);
            side.1 = side.1.saturating_add(c.ok.saturating_add(c.error));
        }
        self.baseline = baseline.to_owned();
        self.window_ms = window_ms;
        self.rates = rates;
        self
    }

    /// Every window's outcomes of one side added up.
    fn total(&self, side: impl Fn(&RateWindow) -> (u64, u64)) -> (u64, u64) {
        self.rates.iter().map(side).fold((0, 0), |(e, s), (e2, s2)| (e.saturating_add(e2), s.saturating_add(s2)))
    }
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

/// A window's width as people say it: `10 s`, `2 min`, `1 h`.
fn span(ms: u64) -> String {
    let secs = ms / 1_000;
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s % 3_600 == 0 => format!("{} h", s / 3_600),
        s => format!("{} min", s / 60),
    }
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
        parts.push(format!("{} from {} to {}", kill.switch.label(), clock(kill.from_ms), clock(kill.to_ms)));
    }
    parts.extend(history.verdicts.iter().map(Verdict::text));
    let mut text = format!("Share of {} over time (UTC): {}.", history.candidate, parts.join("; "));
    if !history.rates.is_empty() {
        let side = |name: &str, total: (u64, u64)| match rate(total) {
            Some(r) => format!("{name} {} ({} of {})", pct(r), total.0, total.1),
            None => format!("{name} no outcomes"),
        };
        text.push_str(&format!(
            " Error rates since the ramp began, per {} window in the plot: {}, {}.",
            span(history.window_ms),
            side(&history.candidate, history.total(|w| w.candidate)),
            side(&format!("{} (baseline)", history.baseline), history.total(|w| w.baseline)),
        ));
    }
    text
}

/// The release's plot as a page section, or `None` when it never had a ramp (or the
/// session may not read its audit log: `entries` is then empty). `entries` are the
/// release's audit entries, oldest first; the environment's kill-all entries and the
/// outcomes are read here.
pub async fn panel(
    state: &AppState,
    env: &EnvName,
    view: &ReleaseView,
    entries: &[AuditEntry],
    now_ms: u64,
) -> Option<Markup> {
    let ramp = view.ramp.as_ref()?;
    if !entries.iter().any(|e| e.action == Action::RampStart) {
        return None;
    }
    let query = AuditQuery { release: None, before: None, limit: KILL_ALL_LOOKBACK };
    let kill_all = state.releases.audit(env, &query).await.unwrap_or_default();
    let mut all: Vec<AuditEntry> = entries.to_vec();
    all.extend(kill_all.into_iter().filter(|e| matches!(e.action, Action::KillAll | Action::UnkillAll)));
    all.sort_by_key(|e| e.revision);
    let history = history(&all, &ramp.candidate, now_ms)?;
    let (from, to) = (Bucket::containing(history.start_ms), Bucket::containing(history.end_ms));
    let counts = match state.releases.store().outcomes(env, &view.key, from, to).await {
        Ok(counts) => counts,
        Err(error) => {
            tracing::warn!(%env, release = %view.key, %error, "the plot's outcomes cannot be read");
            Vec::new()
        }
    };
    let history = history.with_rates(view.versions.first().map_or("", String::as_str), &counts);
    Some(html! {
        section.panel aria-labelledby="plot-heading" {
            h2 id="plot-heading" { "Ramp of " (history.candidate) }
            figure.plot {
                (draw::svg(&history))
                (draw::legend(&history))
                figcaption { (describe(&history)) }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(super) fn entry(time_ms: u64, action: Action, share: u32, step: Option<u64>) -> AuditEntry {
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

    fn env_entry(time_ms: u64, action: Action) -> AuditEntry {
        AuditEntry {
            release: None,
            after: Some(json!({"kill_all": action == Action::KillAll})),
            ..entry(time_ms, action, 0, None)
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
        assert_eq!(
            history.kills,
            vec![Killed { from_ms: 20_000, to_ms: 30_000, reason: None, switch: Switch::Release }]
        );
        assert!(describe(&history).contains("step 2 at 5 % from 00:00:14"), "{}", describe(&history));
    }

    #[test]
    fn kill_all_periods_are_shaded_and_draw_no_share() {
        let entries = vec![
            env_entry(500, Action::UnkillAll),
            entry(2_000, Action::RampStart, 1_000, Some(0)),
            env_entry(5_000, Action::KillAll),
            env_entry(8_000, Action::UnkillAll),
            env_entry(9_000, Action::KillAll),
        ];
        let history = history(&entries, "v2", 12_000).expect("a ramp");
        assert_eq!(history.segments.len(), 1, "kill-all entries carry no allocation");
        let kills: Vec<(u64, u64, Switch)> = history.kills.iter().map(|k| (k.from_ms, k.to_ms, k.switch)).collect();
        assert_eq!(kills, vec![(5_000, 8_000, Switch::Environment), (9_000, 12_000, Switch::Environment)]);
        assert!(describe(&history).contains("kill-all from 00:00:05 to 00:00:08"));
    }

    #[test]
    fn an_unkill_without_its_kill_in_view_shades_from_the_ramps_start() {
        let entries = vec![entry(2_000, Action::RampStart, 1_000, Some(0)), entry(6_000, Action::Unkill, 1_000, None)];
        let history = history(&entries, "v2", 10_000).expect("a ramp");
        assert_eq!(history.kills.iter().map(|k| (k.from_ms, k.to_ms)).collect::<Vec<_>>(), vec![(2_000, 6_000)]);
    }

    #[test]
    fn the_guards_verdicts_say_what_the_driver_did_with_the_windows_error_rates() {
        let mut advance = entry(14_000, Action::RampAdvance, 5_000, Some(1));
        advance.after = Some(json!({"allocation": {"v2": 5_000}, "ramp": {"step": 1, "guard_figures": {
            "verdict": "pass", "baseline_samples": 1_200, "baseline_errors": 12,
            "candidate_samples": 400, "candidate_errors": 4, "z_critical": 2.3, "at_ms": 14_000}}}));
        let entries = vec![entry(2_000, Action::RampStart, 1_000, Some(0)), advance];
        let history = history(&entries, "v2", 20_000).expect("a ramp");
        assert_eq!(history.verdicts.len(), 1);
        assert_eq!(history.verdicts[0].outcome(), "advanced");
        assert!(
            describe(&history).contains(
                "guard pass at 00:00:14 (advanced): candidate 1 % errors (4 of 400), baseline 1 % errors (12 of 1200)"
            ),
            "{}",
            describe(&history)
        );
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

    #[test]
    fn error_rates_are_summed_per_window_of_whole_buckets_for_the_two_sides_only() {
        let counts = |start: u64, version: &str, ok: u64, error: u64| BucketCounts {
            bucket_start_ms: start,
            version: version.into(),
            ok,
            error,
        };
        // A ramp 30 minutes old: 40 windows at most, so 45 s, rounded up to a minute.
        let start = 1_000_000;
        let entries = vec![entry(start + 3_000, Action::RampStart, 1_000, Some(0))];
        let now = start + 3_000 + 30 * 60_000;
        let history = history(&entries, "v2", now).expect("a ramp").with_rates(
            "v1",
            &[
                counts(start, "v2", 90, 10),
                counts(start + 50_000, "v2", 100, 0),
                counts(start + 60_000, "v1", 99, 1),
                counts(start + 60_000, "v3", 0, 100),
            ],
        );
        assert_eq!(history.window_ms, 60_000);
        assert_eq!(history.rates.len(), 31, "the ramp began 3 s into its first window");
        assert_eq!((history.rates[0].candidate, history.rates[0].baseline), ((10, 200), (0, 0)));
        assert_eq!((history.rates[1].candidate, history.rates[1].baseline), ((0, 0), (1, 100)));
        assert_eq!(history.rates.last().map(|w| w.to_ms), Some(now));
        assert_eq!(rate(history.rates[0].candidate), Some(5.0));
        assert!(
            describe(&history)
                .contains("per 1 min window in the plot: v2 5 % (10 of 200), v1 (baseline) 1 % (1 of 100)"),
            "{}",
            describe(&history)
        );
    }
}
