//! Human-readable rendering of the server's responses: tables, key/value listings and
//! one-line confirmations. Every function returns a `String` so tests can assert on it.

use std::fmt::Write as _;

use comfy_table::{ContentArrangement, Table, presets};
use serde_json::Value;

use super::views::{AuditEntryView, AuditPage, EnvironmentState, RampView, Reach, ReleaseList, ReleaseView};

/// Allocation is exchanged in percent with up to three decimals; working in thousandths
/// keeps sums such as `100 - 5.5 - 0.1` free of float noise.
const THOUSANDTHS: f64 = 1000.0;

/// `5` → `5%`, `0.5` → `0.5%`, `2.125` → `2.125%`.
pub fn format_percent(percent: f64) -> String {
    let text = format!("{percent:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn to_thousandths(percent: f64) -> i64 {
    // `as` saturates (and maps NaN to 0), so even a nonsensical value from the server
    // cannot panic here; callers sum with `saturating_add` for the same reason.
    (percent * THOUSANDTHS).round() as i64
}

/// `v2 5%, v3 0.5%`, or `none` when every unit gets the baseline.
pub fn allocation_summary(release: &ReleaseView) -> String {
    let parts: Vec<String> = release
        .allocation_in_order()
        .into_iter()
        .map(|(version, percent)| format!("{version} {}", format_percent(percent)))
        .collect();
    if parts.is_empty() { "none".to_owned() } else { parts.join(", ") }
}

/// `live`, `KILLED` or `KILLED (reason)`; `KILLED (kill-all: reason)` while the
/// environment's kill switch is on, since then every release serves its baseline.
pub fn state_label(release: &ReleaseView, kill_all: Option<Option<&str>>) -> String {
    if release.killed {
        return with_reason("KILLED", release.kill_reason.as_deref());
    }
    match kill_all {
        Some(reason) => {
            let why = reason.map(str::trim).filter(|r| !r.is_empty());
            format!("KILLED (kill-all{})", why.map(|r| format!(": {r}")).unwrap_or_default())
        }
        None => "live".to_owned(),
    }
}

fn with_reason(label: &str, reason: Option<&str>) -> String {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(reason) => format!("{label} ({reason})"),
        None => label.to_owned(),
    }
}

/// The `release list` table followed by the environment's revision and, when on, the
/// kill switch.
pub fn render_release_list(list: &ReleaseList) -> String {
    let mut out = String::new();
    if list.releases.is_empty() {
        let _ = writeln!(out, "no releases in {}", list.environment);
    } else {
        let mut table = Table::new();
        table
            // Borderless and unwrapped: the output is read by people and by `grep`/`awk`
            // alike, and a wrapped cell would break the one-release-per-line shape.
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .force_no_tty()
            .set_header(["KEY", "VERSIONS", "ALLOCATION", "STATE", "REVISION"]);
        for release in &list.releases {
            table.add_row([
                release.key.clone(),
                release.versions.join(", "),
                allocation_summary(release),
                state_label(release, list.kill_all.then_some(list.kill_reason.as_deref())),
                release.revision.to_string(),
            ]);
        }
        // Flush left with two spaces between columns, like `kubectl get`, rather than
        // the preset's one-space indent.
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
        }
        for line in table.lines() {
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    let _ = writeln!(out, "environment {} at revision {}", list.environment, list.revision);
    if list.kill_all {
        let _ = writeln!(
            out,
            "{}",
            with_reason("KILL-ALL ON: every release serves its baseline", list.kill_reason.as_deref())
        );
    }
    out
}

/// The `release get` key/value listing: targeting in full (audience, rules, overrides,
/// values) and the ramp, one item per line.
pub fn render_release(release: &ReleaseView) -> String {
    render_release_at(release, now_ms())
}

fn render_release_at(release: &ReleaseView, now_ms: u64) -> String {
    let baseline = release.baseline().unwrap_or("?");
    let versions = release
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| if i == 0 { format!("{v} (baseline)") } else { v.clone() })
        .collect::<Vec<_>>()
        .join(", ");

    let allocated: i64 = release.allocation.values().map(|p| to_thousandths(*p)).fold(0, i64::saturating_add);
    let baseline_share = 100_000_i64.saturating_sub(allocated) as f64 / THOUSANDTHS;
    let allocation = if release.allocation.values().all(|p| to_thousandths(*p) == 0) {
        format!("everyone gets {baseline}")
    } else {
        format!("{} ({baseline} gets {})", allocation_summary(release), format_percent(baseline_share))
    };

    let killed = if release.killed {
        format!("{}: everyone gets {baseline}", with_reason("yes", release.kill_reason.as_deref()))
    } else {
        "no".to_owned()
    };

    let audience = if release.audience.is_empty() {
        vec!["everyone (no audience conditions)".to_owned()]
    } else {
        vec![release.audience.iter().map(condition_text).collect::<Vec<_>>().join(" and ")]
    };
    let rules: Vec<String> = if release.rules.is_empty() {
        vec!["none".to_owned()]
    } else {
        release.rules.iter().enumerate().map(|(i, rule)| format!("{}. {}", i + 1, rule_text(rule))).collect()
    };
    let overrides: Vec<String> = if release.overrides.is_empty() {
        vec!["none".to_owned()]
    } else {
        release.overrides.iter().map(|(unit, version)| format!("{unit} → {}", plain(version))).collect()
    };
    let values: Vec<String> = release.values.iter().map(|(version, value)| format!("{version} = {value}")).collect();
    let ramp = match &release.ramp {
        None => vec!["none".to_owned()],
        Some(ramp) => ramp_lines(release, ramp, now_ms),
    };

    let mut rows: Vec<(&str, Vec<String>)> = vec![
        ("key", vec![release.key.clone()]),
        ("description", vec![non_empty(&release.description)]),
        ("versions", vec![versions]),
        ("unit", vec![non_empty(&release.unit)]),
        ("salt", vec![non_empty(&release.salt)]),
        ("bucketing", vec![non_empty(&release.bucketing)]),
        ("allocation", vec![allocation]),
        ("killed", vec![killed]),
        ("audience", audience),
        ("rules", rules),
        ("overrides", overrides),
    ];
    if !values.is_empty() {
        rows.push(("values", values));
    }
    if let Some(fleet) = &release.fleet {
        rows.push(("fleet", vec![fleet.clone()]));
    }
    rows.push(("ramp", ramp));
    rows.push(("revision", vec![release.revision.to_string()]));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, lines) in rows {
        for (i, line) in lines.iter().enumerate() {
            let label = if i == 0 { key } else { "" };
            let _ = writeln!(out, "{label:<width$}  {line}");
        }
    }
    out
}

/// A JSON value as a person writes it: strings without quotes, the rest as JSON.
fn plain(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// `country in [de, fr]`, `plan eq pro`, `app_version semver_gte 2.1.0`.
fn condition_text(condition: &Value) -> String {
    let attr = condition["attr"].as_str().unwrap_or("?");
    let op = condition["op"].as_str().unwrap_or("?");
    let values: Vec<String> = condition["values"].as_array().map(|v| v.iter().map(plain).collect()).unwrap_or_default();
    let values = match values.as_slice() {
        [one] if !matches!(op, "in" | "not_in") => one.clone(),
        _ => format!("[{}]", values.join(", ")),
    };
    format!("{attr} {op} {values}")
}

/// `when country in [de] and plan eq pro → v2`; a rule without conditions serves everyone.
fn rule_text(rule: &Value) -> String {
    let serve = plain(&rule["serve"]);
    let when: Vec<String> = rule["when"].as_array().map(|c| c.iter().map(condition_text).collect()).unwrap_or_default();
    if when.is_empty() { format!("everyone → {serve}") } else { format!("when {} → {serve}", when.join(" and ")) }
}

/// Bucket units (1000 = 1 %) as the CLI prints percents.
pub fn format_buckets(buckets: u32) -> String {
    format_percent(f64::from(buckets) / THOUSANDTHS)
}

/// Steps are numbered from 0 everywhere (the API's `step`, the audit log, the
/// `cohort_ramp_step` metric): `step 1 of 0–3` is the second of four.
pub fn step_text(ramp: &RampView) -> String {
    format!("step {} of 0–{}", ramp.step, ramp.steps.len().saturating_sub(1))
}

/// `5% 10m → 25% 1h → 100%`
fn plan_text(ramp: &RampView) -> String {
    ramp.steps
        .iter()
        .map(|s| {
            let share = s.nodes.map_or_else(|| format_buckets(s.buckets), |n| format!("{n} nodes"));
            match s.hold_ms {
                Some(ms) => format!("{share} {}", humantime::format_duration(std::time::Duration::from_millis(ms))),
                None => share,
            }
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// `in 4m 10s`, `now`, or `-` when nothing is scheduled.
fn next_text(ramp: &RampView, now_ms: u64) -> String {
    match ramp.next_transition_ms() {
        None if ramp.state == "paused" => with_reason("paused", ramp.reason.as_deref()),
        None => "-".to_owned(),
        Some(at) if at <= now_ms => "due now".to_owned(),
        Some(at) => {
            let secs = (at - now_ms).div_ceil(1000);
            format!("in {}", humantime::format_duration(std::time::Duration::from_secs(secs)))
        }
    }
}

fn ramp_lines(release: &ReleaseView, ramp: &RampView, now_ms: u64) -> Vec<String> {
    let mut lines = vec![
        format!(
            "{} {}{}, {} at {}",
            ramp.candidate,
            ramp.state,
            ramp.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
            step_text(ramp),
            format_percent(release.percent_of(&ramp.candidate)),
        ),
        format!("plan: {}", plan_text(ramp)),
    ];
    if ramp.is_active() {
        lines.push(format!("next step check: {}", next_text(ramp, now_ms)));
    }
    lines
}

/// `cohort ramp list`: the environment's running and paused ramps.
pub fn render_ramp_list(list: &ReleaseList, now_ms: u64) -> String {
    let active: Vec<(&ReleaseView, &RampView)> = list
        .releases
        .iter()
        .filter_map(|r| r.ramp.as_ref().filter(|ramp| ramp.is_active()).map(|ramp| (r, ramp)))
        .collect();
    let mut out = String::new();
    if active.is_empty() {
        let _ = writeln!(out, "no active ramps in {}", list.environment);
        return out;
    }
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .force_no_tty()
        .set_header(["RELEASE", "CANDIDATE", "STATE", "STEP", "PERCENT", "NEXT"]);
    for (release, ramp) in active {
        table.add_row([
            release.key.clone(),
            ramp.candidate.clone(),
            ramp.state.clone(),
            format!("{} of 0–{}", ramp.step, ramp.steps.len().saturating_sub(1)),
            format_percent(release.percent_of(&ramp.candidate)),
            next_text(ramp, now_ms),
        ]);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    for line in table.lines() {
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if list.kill_all {
        let _ = writeln!(
            out,
            "{}",
            with_reason("KILL-ALL ON: every release serves its baseline", list.kill_reason.as_deref())
        );
    }
    out
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn non_empty(text: &str) -> String {
    if text.trim().is_empty() { "-".to_owned() } else { text.to_owned() }
}

/// One line per candidate whose percent changed, e.g.
/// `checkout: v2 5% → 10% (revision 42)`.
pub fn render_percent_changes(before: &ReleaseView, after: &ReleaseView, requested: &[String]) -> String {
    let mut out = String::new();
    for version in requested {
        let old = before.percent_of(version);
        let new = after.percent_of(version);
        if to_thousandths(old) != to_thousandths(new) {
            let _ = writeln!(
                out,
                "{}: {version} {} → {} (revision {})",
                after.key,
                format_percent(old),
                format_percent(new),
                after.revision
            );
        }
    }
    if out.is_empty() {
        let _ = writeln!(out, "{}: allocation unchanged (revision {})", after.key, after.revision);
    }
    out
}

/// `killed checkout at revision 43: everyone gets v1`
pub fn render_killed(release: &ReleaseView) -> String {
    if !release.persisted {
        return format!(
            "killed {} on this instance: everyone it serves gets {}. NOT yet persisted: the store cannot take \
             it now (down or regressed); this instance keeps serving it and writes it when the store is usable\n",
            release.key,
            release.baseline().unwrap_or("the baseline")
        );
    }
    format!(
        "killed {} at revision {}: everyone gets {}\n",
        release.key,
        release.revision,
        release.baseline().unwrap_or("the baseline")
    )
}

/// `unkilled checkout at revision 44: serving v2 5%, v3 0.5%`
pub fn render_unkilled(release: &ReleaseView) -> String {
    let serving = if release.allocation.is_empty() {
        format!("everyone gets {}", release.baseline().unwrap_or("the baseline"))
    } else {
        format!("serving {}", allocation_summary(release))
    };
    if !release.persisted {
        return format!(
            "cancelled the kill of {} this instance had not written yet: it serves {serving} again. The store cannot \
             take writes now; if it took that kill before it went away, the kill is served again when it is back\n",
            release.key
        );
    }
    format!("unkilled {} at revision {}: {serving}\n", release.key, release.revision)
}

/// `KILL-ALL ON in production at revision 44` / `KILL-ALL OFF in production at revision 45`
pub fn render_environment_state(state: &EnvironmentState) -> String {
    let line = format!(
        "KILL-ALL {} in {} at revision {}",
        if state.kill_all { "ON" } else { "OFF" },
        state.environment,
        state.revision
    );
    let line = if state.kill_all { with_reason(&line, state.kill_reason.as_deref()) } else { line };
    if !state.persisted && !state.kill_all {
        return format!(
            "cancelled the kill-all of {} this instance had not written yet. The store cannot take writes now; if it \
             took that kill-all before it went away, it is served again when it is back\n",
            state.environment
        );
    }
    if !state.persisted {
        return format!(
            "{line} on this instance only. NOT yet persisted: the store cannot take it now; this instance keeps \
             serving it and writes it when the store is usable\n"
        );
    }
    format!("{line}\n")
}

/// The server's body for `--json`, pretty-printed; empty for bodiless responses (204).
pub fn render_json(body: &Value) -> String {
    if body.is_null() {
        return String::new();
    }
    // Serializing a `Value` cannot fail: its map keys are always strings.
    let pretty = serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string());
    format!("{pretty}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release(value: Value) -> ReleaseView {
        serde_json::from_value(value).expect("valid release view")
    }

    fn checkout() -> ReleaseView {
        release(json!({
            "key": "checkout", "versions": ["v1", "v2", "v3"], "unit": "targetingKey",
            "salt": "checkout", "bucketing": "xxh3-slots-v1",
            "allocation": {"v3": 0.5, "v2": 5.0}, "overrides": {"user-1": "v2"},
            "rules": [], "audience": [], "killed": false, "kill_reason": null,
            "description": "new checkout flow", "revision": 7
        }))
    }

    fn list(kill_all: bool, releases: Vec<ReleaseView>) -> ReleaseList {
        ReleaseList {
            environment: "production".to_owned(),
            revision: 12,
            kill_all,
            kill_reason: kill_all.then(|| "incident 42".to_owned()),
            releases,
        }
    }

    #[test]
    fn percents_drop_trailing_zeros() {
        assert_eq!(format_percent(5.0), "5%");
        assert_eq!(format_percent(0.5), "0.5%");
        assert_eq!(format_percent(2.125), "2.125%");
        assert_eq!(format_percent(100.0), "100%");
        assert_eq!(format_percent(0.0), "0%");
        assert_eq!(format_percent(10.100_000_000_1), "10.1%");
    }

    #[test]
    fn allocation_follows_version_order_not_alphabetical_order() {
        let mut r = checkout();
        r.versions = vec!["v1".into(), "v10".into(), "v9".into()];
        r.allocation = [("v9".to_owned(), 1.0), ("v10".to_owned(), 2.0)].into();
        assert_eq!(allocation_summary(&r), "v10 2%, v9 1%");
    }

    #[test]
    fn release_list_renders_one_row_per_release_with_state() {
        let mut killed = checkout();
        killed.key = "search".into();
        killed.versions = vec!["s1".into(), "s2".into()];
        killed.allocation = [("s2".to_owned(), 50.0)].into();
        killed.killed = true;
        killed.kill_reason = Some("p99 regression".into());
        killed.revision = 11;

        let text = render_release_list(&list(false, vec![checkout(), killed]));
        let lines: Vec<&str> = text.lines().collect();

        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("KEY  "), "{text}");
        for header in ["KEY", "VERSIONS", "ALLOCATION", "STATE", "REVISION"] {
            assert!(lines[0].contains(header), "{text}");
        }
        assert!(lines[1].contains("checkout"), "{text}");
        assert!(lines[1].contains("v1, v2, v3"), "{text}");
        assert!(lines[1].contains("v2 5%, v3 0.5%"), "{text}");
        assert!(lines[1].contains("live"), "{text}");
        assert!(lines[1].trim_end().ends_with('7'), "{text}");
        assert!(lines[2].contains("search"), "{text}");
        assert!(lines[2].contains("KILLED (p99 regression)"), "{text}");
        assert_eq!(lines[3], "environment production at revision 12");
        assert!(!text.contains("KILL-ALL"), "{text}");
    }

    #[test]
    fn release_list_columns_line_up() {
        let mut other = checkout();
        other.key = "a-much-longer-release-key".into();
        let text = render_release_list(&list(false, vec![checkout(), other]));
        let lines: Vec<&str> = text.lines().collect();
        let column = |line: &str, needle: &str| line.find(needle).expect(needle);
        assert_eq!(column(lines[0], "VERSIONS"), column(lines[1], "v1, v2"));
        assert_eq!(column(lines[1], "v1, v2"), column(lines[2], "v1, v2"));
    }

    #[test]
    fn release_list_shows_kill_all_prominently() {
        let text = render_release_list(&list(true, vec![checkout()]));
        assert!(
            text.ends_with(
                "environment production at revision 12\n\
                 KILL-ALL ON: every release serves its baseline (incident 42)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn empty_release_list_says_so() {
        let text = render_release_list(&list(false, vec![]));
        assert_eq!(text, "no releases in production\nenvironment production at revision 12\n");
    }

    #[test]
    fn release_detail_marks_the_baseline_and_lists_targeting() {
        let text = render_release(&checkout());
        assert!(text.contains("versions     v1 (baseline), v2, v3"), "{text}");
        assert!(text.contains("allocation   v2 5%, v3 0.5% (v1 gets 94.5%)"), "{text}");
        assert!(text.contains("killed       no"), "{text}");
        assert!(text.contains("overrides    user-1 → v2"), "{text}");
        assert!(text.contains("rules        none"), "{text}");
        assert!(text.contains("audience     everyone (no audience conditions)"), "{text}");
        assert!(text.contains("ramp         none"), "{text}");
        assert!(text.contains("revision     7"), "{text}");
    }

    #[test]
    fn percent_changes_list_only_what_moved() {
        let before = checkout();
        let mut after = checkout();
        after.allocation.insert("v2".into(), 10.0);
        after.revision = 8;
        let text = render_percent_changes(&before, &after, &["v2".into(), "v3".into()]);
        assert_eq!(text, "checkout: v2 5% → 10% (revision 8)\n");
    }

    #[test]
    fn kill_and_kill_all_confirmations_name_what_is_served() {
        let mut r = checkout();
        r.killed = true;
        r.revision = 43;
        assert_eq!(render_killed(&r), "killed checkout at revision 43: everyone gets v1\n");
        let state = EnvironmentState {
            environment: "production".into(),
            revision: 44,
            kill_all: true,
            kill_reason: None,
            persisted: true,
        };
        assert_eq!(render_environment_state(&state), "KILL-ALL ON in production at revision 44\n");
    }
}

/// The `audit` table, newest first, with a hint for the next page.
pub fn render_audit(page: &AuditPage) -> String {
    let mut out = String::new();
    if page.entries.is_empty() {
        out.push_str("no audit entries\n");
        return out;
    }
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(vec!["REVISION", "TIME", "ACTOR", "ACTION", "RELEASE", "CHANGE", "REASON"]);
    for entry in &page.entries {
        table.add_row(vec![
            entry.revision.to_string(),
            format_time(entry.time_ms),
            entry.actor.clone(),
            entry.action.clone(),
            entry.release.clone().unwrap_or_else(|| "(environment)".to_owned()),
            change_summary(entry),
            entry.reason.clone().unwrap_or_default(),
        ]);
    }
    let _ = writeln!(out, "{table}");
    if let Some(next) = page.next_before {
        let _ = writeln!(out, "more: --before {next}");
    }
    out
}

fn format_time(time_ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(time_ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// What changed, field by field: `allocation v2 5% → 10%`, `killed false → true`.
pub fn change_summary(entry: &AuditEntryView) -> String {
    let (before, after) = match (&entry.before, &entry.after) {
        (None, Some(_)) => return "created".to_owned(),
        (Some(_), None) => return "deleted".to_owned(),
        (Some(Value::Object(b)), Some(Value::Object(a))) => (b, a),
        _ => return String::new(),
    };
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut parts = Vec::new();
    for key in keys {
        let (b, a) = (before.get(key), after.get(key));
        if b == a {
            continue;
        }
        if key == "allocation" {
            // Stored in bucket units (1000 = 1 %).
            let shares = |v: Option<&Value>| -> std::collections::BTreeMap<String, u64> {
                v.and_then(Value::as_object)
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
                    .unwrap_or_default()
            };
            let (b, a) = (shares(b), shares(a));
            let mut versions: Vec<&String> = b.keys().chain(a.keys()).collect();
            versions.sort();
            versions.dedup();
            for v in versions {
                let (x, y) = (b.get(v).copied().unwrap_or(0), a.get(v).copied().unwrap_or(0));
                if x != y {
                    parts.push(format!(
                        "{v} {} → {}",
                        format_percent(x as f64 / THOUSANDTHS),
                        format_percent(y as f64 / THOUSANDTHS)
                    ));
                }
            }
        } else if key == "ramp" {
            parts.extend(ramp_change(b.filter(|v| !v.is_null()), a.filter(|v| !v.is_null())));
        } else {
            let show = |v: Option<&Value>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            parts.push(format!("{key} {} → {}", show(b), show(a)));
        }
    }
    parts.join("; ")
}

/// A ramp's change in an audit entry, in percents and the one step numbering:
/// `ramp of v2 started: 5% 10m → 100%`, `ramp step 0 → 1 (5% → 25%)`,
/// `ramp running → paused`.
fn ramp_change(before: Option<&Value>, after: Option<&Value>) -> Vec<String> {
    let parse = |v: Option<&Value>| v.and_then(|v| serde_json::from_value::<RampView>(v.clone()).ok());
    match (parse(before), parse(after)) {
        (None, Some(a)) => vec![format!("ramp of {} started: {}", a.candidate, plan_text(&a))],
        (Some(b), None) => vec![format!("ramp of {} removed ({})", b.candidate, b.state)],
        (Some(b), Some(a)) => {
            let mut parts = Vec::new();
            if b.candidate != a.candidate || b.steps != a.steps {
                parts.push(format!("ramp of {} replaced: {}", a.candidate, plan_text(&a)));
            }
            if b.state != a.state {
                parts.push(format!("ramp {} → {}", b.state, a.state));
            }
            if b.step != a.step {
                let share =
                    |r: &RampView| r.steps.get(r.step).map_or_else(|| "?".to_owned(), |s| format_buckets(s.buckets));
                parts.push(format!("ramp step {} → {} ({} → {})", b.step, a.step, share(&b), share(&a)));
            }
            if b.extensions != a.extensions && a.extensions > 0 {
                parts.push(format!("ramp hold extended ({}×)", a.extensions));
            }
            parts
        }
        (None, None) => Vec::new(),
    }
}

#[cfg(test)]
mod audit_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_allocation_change_reads_as_percents() {
        let entry = AuditEntryView {
            revision: 7,
            time_ms: 0,
            actor: "alice".into(),
            action: "allocation".into(),
            release: Some("checkout".into()),
            before: Some(json!({"key": "checkout", "allocation": {"v2": 5000}})),
            after: Some(json!({"key": "checkout", "allocation": {"v2": 10000}})),
            reason: None,
        };
        assert_eq!(change_summary(&entry), "v2 5% → 10%");
        let page = AuditPage { entries: vec![entry], next_before: Some(7) };
        let table = render_audit(&page);
        assert!(table.contains("alice") && table.contains("checkout") && table.contains("--before 7"), "{table}");
    }
}

/// The confirmation part of `kill --wait`: `applied by 998/1000 connected SDKs in 38 ms`
/// (or what is missing, with the SDKs that have not applied it and when each was last
/// heard from), then the subscribers that cannot acknowledge.
pub fn render_reach(reach: &Reach, elapsed: std::time::Duration, now_ms: u64) -> String {
    let mut out = String::new();
    let ms = elapsed.as_millis();
    if reach.acknowledging_total == 0 {
        let _ = writeln!(out, "no acknowledging SDK is connected to confirm revision {}", reach.revision);
    } else if reach.confirmed() {
        let _ =
            writeln!(out, "applied by {}/{} connected SDKs in {ms} ms", reach.acknowledged, reach.acknowledging_total);
    } else {
        let _ = writeln!(
            out,
            "applied by {}/{} connected SDKs after {ms} ms; {} did not apply revision {} yet",
            reach.acknowledged,
            reach.acknowledging_total,
            reach.pending.len(),
            reach.revision
        );
        let mut table = Table::new();
        table.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).set_header(vec![
            "NOT YET",
            "ADDRESS",
            "HAS REVISION",
            "LAST SEEN",
        ]);
        for sdk in &reach.pending {
            let ago = std::time::Duration::from_secs(now_ms.saturating_sub(sdk.seen_ms) / 1000);
            table.add_row(vec![
                sdk.sdk_id.clone(),
                sdk.address.clone(),
                sdk.revision.to_string(),
                format!("{} ago", humantime::format_duration(ago)),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    if reach.delivered_only_total > 0 {
        let _ = writeln!(
            out,
            "delivered to {}/{} stream subscribers that cannot acknowledge (OFREP, raw SSE)",
            reach.delivered_only, reach.delivered_only_total
        );
    }
    out
}

#[cfg(test)]
mod reach_tests {
    use super::*;
    use crate::cli::views::PendingSdk;
    use std::time::Duration;

    fn reach(pending: Vec<PendingSdk>, delivered_only: usize, delivered_only_total: usize) -> Reach {
        Reach {
            revision: 7,
            acknowledged: 2,
            acknowledging_total: 2 + pending.len(),
            pending,
            delivered_only,
            delivered_only_total,
        }
    }

    #[test]
    fn a_confirmed_kill_says_how_fast_and_counts_subscribers_that_cannot_acknowledge() {
        let text = render_reach(&reach(vec![], 1, 2), Duration::from_millis(38), 0);
        assert_eq!(
            text,
            "applied by 2/2 connected SDKs in 38 ms\n\
             delivered to 1/2 stream subscribers that cannot acknowledge (OFREP, raw SSE)\n"
        );
        let none = Reach { acknowledged: 0, acknowledging_total: 0, ..reach(vec![], 0, 0) };
        assert_eq!(render_reach(&none, Duration::ZERO, 0), "no acknowledging SDK is connected to confirm revision 7\n");
    }

    #[test]
    fn an_unconfirmed_kill_names_the_sdks_that_did_not_apply_it_and_when_they_were_seen() {
        let stuck = PendingSdk { sdk_id: "web-9".into(), revision: 6, address: "10.0.0.9:5000".into(), seen_ms: 1_000 };
        let text = render_reach(&reach(vec![stuck], 0, 0), Duration::from_secs(1), 13_000);
        assert!(
            text.starts_with("applied by 2/3 connected SDKs after 1000 ms; 1 did not apply revision 7 yet\n"),
            "{text}"
        );
        assert!(text.contains("web-9") && text.contains("10.0.0.9:5000") && text.contains("12s ago"), "{text}");
    }
}

/// `cohort ramp status`: the steps with a progress bar, and the guard's current rates.
pub fn render_ramp_status(status: &Value) -> String {
    let mut out = String::new();
    let state = status["state"].as_str().unwrap_or("?");
    let step = status["step"].as_u64().unwrap_or(0) as usize;
    let last = status["steps"].as_array().map_or(0, |s| s.len().saturating_sub(1));
    let _ = writeln!(
        out,
        "{}: ramp of {} is {state}{} — step {step} of 0–{last} at {} (revision {})",
        status["release"].as_str().unwrap_or("?"),
        status["candidate"].as_str().unwrap_or("?"),
        status["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default(),
        format_percent(status["percent"].as_f64().unwrap_or(0.0)),
        status["revision"],
    );
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(vec!["", "STEP", "PERCENT", "HOLD", ""]);
    let steps = status["steps"].as_array().cloned().unwrap_or_default();
    for (i, s) in steps.iter().enumerate() {
        let percent = s["buckets"].as_u64().unwrap_or(0) as f64 / THOUSANDTHS;
        let bar_len = ((percent / 100.0) * 20.0).round() as usize;
        let bar = format!("{}{}", "█".repeat(bar_len), "·".repeat(20 - bar_len.min(20)));
        let marker = match i.cmp(&step) {
            std::cmp::Ordering::Less => "✓",
            std::cmp::Ordering::Equal => "▶",
            std::cmp::Ordering::Greater => " ",
        };
        let hold = s["hold_ms"].as_u64().map_or_else(
            || "-".to_owned(),
            |ms| humantime::format_duration(std::time::Duration::from_millis(ms)).to_string(),
        );
        // Numbered from 0, like the API's `step` and the `cohort_ramp_step` metric.
        table.add_row(vec![marker.to_owned(), i.to_string(), format_percent(percent), hold, bar]);
    }
    let _ = writeln!(out, "{table}");
    let live = &status["live"];
    let rate = |errors: &Value, total: &Value| match (errors.as_u64(), total.as_u64()) {
        (Some(e), Some(t)) if t > 0 => format!("{:.3}% of {t}", e as f64 * 100.0 / t as f64),
        _ => "no data".to_owned(),
    };
    let _ = writeln!(
        out,
        "guard: {} — candidate {}, baseline {}, z {} (critical {:.3})",
        live["verdict"].as_str().unwrap_or("?"),
        rate(&live["candidate_errors"], &live["candidate_samples"]),
        rate(&live["baseline_errors"], &live["baseline_samples"]),
        live["z"].as_f64().map_or_else(|| "n/a".to_owned(), |z| format!("{z:.3}")),
        live["z_critical"].as_f64().unwrap_or(0.0),
    );
    if let Some(next) = status["next_transition_ms"].as_u64() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(next);
        let _ = writeln!(out, "next step check: {}", humantime::format_rfc3339_seconds(time));
    }
    out
}

/// `cohort env list`: one line per environment.
pub fn render_environments(list: &serde_json::Value) -> String {
    let mut out = String::new();
    for env in list["environments"].as_array().into_iter().flatten() {
        let name = env["environment"].as_str().unwrap_or("?");
        let mut line = format!(
            "{name:<20} revision {:<8} releases {:<5}{}",
            env["revision"],
            env["releases"],
            if env["kill_all"] == true { " KILL-ALL ON" } else { "" }
        );
        if let Some(regressed) = env.get("regressed").filter(|r| !r.is_null()) {
            line.push_str(&format!(
                " STORE REGRESSED (store at {}, seen {}): writes refused until `cohort store reseed`",
                regressed["stored"], regressed["seen"]
            ));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("no environments\n");
    }
    out
}

/// Field-level differences between two release documents (as `release edit` shows
/// them, allocation in percent), one `field: before → after` line each; nested objects
/// are walked (`allocation.v2: 5% → 10%`, `overrides.user-1: (none) → v2`), lists are
/// compared whole. `Null` stands for "no release" (create, delete).
pub fn render_diff(before: &Value, after: &Value) -> Vec<String> {
    let mut flat_before = std::collections::BTreeMap::new();
    let mut flat_after = std::collections::BTreeMap::new();
    flatten("", before, &mut flat_before);
    flatten("", after, &mut flat_after);
    let mut paths: Vec<&String> = flat_before.keys().chain(flat_after.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut lines = Vec::new();
    for path in paths {
        let (b, a) = (flat_before.get(path), flat_after.get(path));
        if b == a {
            continue;
        }
        let show = |v: Option<&&Value>| match v {
            // A candidate missing from the allocation gets 0 %.
            None if path.starts_with("allocation.") => "0%".to_owned(),
            None => "(none)".to_owned(),
            Some(v) if path.starts_with("allocation.") && v.is_number() => format_percent(v.as_f64().unwrap_or(0.0)),
            // A list of names (versions) reads as `[v1, v2]`; anything else as JSON.
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                format!("[{}]", items.iter().map(plain).collect::<Vec<_>>().join(", "))
            }
            Some(v) => plain(v),
        };
        lines.push(format!("{path}: {} → {}", show(b), show(a)));
    }
    lines
}

fn flatten<'a>(prefix: &str, value: &'a Value, out: &mut std::collections::BTreeMap<String, &'a Value>) {
    match value {
        // No release at all, or an empty map, list or text: nothing to list field by field.
        Value::Null if prefix.is_empty() => {}
        Value::Array(items) if items.is_empty() => {}
        Value::String(text) if text.is_empty() => {}
        Value::Object(map) => {
            for (key, value) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&path, value, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other);
        }
    }
}

fn revocation_target(r: &serde_json::Value) -> String {
    match (r["jti"].as_str(), r["sub"].as_str()) {
        (Some(jti), _) => format!("jti {jti}"),
        (None, Some(sub)) => format!("sub {sub}"),
        _ => "?".to_owned(),
    }
}

fn seconds(value: &serde_json::Value) -> String {
    value.as_u64().map_or_else(
        || "?".to_owned(),
        |s| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)).to_string(),
    )
}

/// `cohort token revoke`: what was revoked, where.
pub fn render_revoked(env: &str, body: &serde_json::Value) -> String {
    let (revocation, envs) = match body.get("revocation") {
        Some(revocation) => {
            let envs: Vec<&str> =
                body["environments"].as_array().into_iter().flatten().filter_map(|e| e.as_str()).collect();
            (revocation, envs.join(", "))
        }
        None => (body, env.to_owned()),
    };
    let mut out = format!(
        "revoked {} in {}",
        revocation_target(revocation),
        if envs.is_empty() { "no environment" } else { &envs }
    );
    if revocation["sub"].is_string() {
        out.push_str(&format!(" (tokens issued until {})", seconds(&revocation["revoked_at"])));
    }
    out.push_str(&format!("; kept until {}\n", seconds(&revocation["expires_at"])));
    out
}

/// `cohort token revocations`: a table.
pub fn render_revocations(env: &str, body: &serde_json::Value) -> String {
    let rows: Vec<&serde_json::Value> = body["revocations"].as_array().into_iter().flatten().collect();
    if rows.is_empty() {
        return format!("no revocations in force in {env}\n");
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["ENVIRONMENT", "REVOKED", "AT", "BY", "EXPIRES", "REASON"]);
    for r in rows {
        let scope = r["environment"].as_str().or(body["environment"].as_str()).unwrap_or(env).to_owned();
        let scope = if r["all_environments"] == true { format!("{scope} (*)") } else { scope };
        table.add_row([
            scope,
            revocation_target(r),
            seconds(&r["revoked_at"]),
            r["actor"].as_str().unwrap_or("").to_owned(),
            seconds(&r["expires_at"]),
            r["reason"].as_str().unwrap_or("").to_owned(),
        ]);
    }
    let mut out = table.to_string().lines().map(str::trim_end).collect::<Vec<_>>().join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod detail_tests {
    use super::*;
    use serde_json::json;

    fn ramped() -> ReleaseView {
        serde_json::from_value(json!({
            "key": "checkout", "versions": ["v1", "v2"], "unit": "targetingKey", "salt": "checkout",
            "bucketing": "xxh3-slots-v1", "allocation": {"v2": 25.0},
            "overrides": {"user-1": "v2", "qa-7": "v1"},
            "rules": [{"when": [{"attr": "country", "op": "in", "values": ["de", "fr"]},
                                {"attr": "plan", "op": "eq", "values": ["pro"]}], "serve": "v2"},
                      {"when": [], "serve": "v1"}],
            "audience": [{"attr": "app_version", "op": "semver_gte", "values": ["2.1.0"]}],
            "killed": false, "kill_reason": null, "description": "", "revision": 9,
            "ramp": {"candidate": "v2", "state": "running", "step": 1, "step_started_ms": 1_000_000,
                     "extensions": 0, "guard": {},
                     "steps": [{"buckets": 5000, "hold_ms": 600_000}, {"buckets": 25000, "hold_ms": 3_600_000},
                               {"buckets": 100_000}]}
        }))
        .expect("valid release view")
    }

    #[test]
    fn release_detail_shows_targeting_and_the_ramp_not_counts() {
        let text = render_release_at(&ramped(), 1_000_000 + 60_000);
        assert!(text.contains("audience     app_version semver_gte 2.1.0\n"), "{text}");
        assert!(text.contains("rules        1. when country in [de, fr] and plan eq pro → v2\n"), "{text}");
        assert!(text.contains("             2. everyone → v1\n"), "{text}");
        assert!(text.contains("overrides    qa-7 → v1\n             user-1 → v2\n"), "{text}");
        assert!(text.contains("ramp         v2 running, step 1 of 0–2 at 25%\n"), "{text}");
        assert!(text.contains("plan: 5% 10m → 25% 1h → 100%"), "{text}");
        assert!(text.contains("next step check: in 59m"), "{text}");
    }

    #[test]
    fn ramp_list_shows_only_active_ramps_with_step_percent_and_next() {
        let mut done = ramped();
        done.key = "search".into();
        if let Some(r) = done.ramp.as_mut() {
            r.state = "completed".into();
        }
        let list = ReleaseList {
            environment: "production".into(),
            revision: 12,
            kill_all: false,
            kill_reason: None,
            releases: vec![ramped(), done],
        };
        let text = render_ramp_list(&list, 1_000_000 + 60_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for header in ["RELEASE", "CANDIDATE", "STATE", "STEP", "PERCENT", "NEXT"] {
            assert!(lines[0].contains(header), "{text}");
        }
        for cell in ["checkout", "v2", "running", "1 of 0–2", "25%", "in 59m"] {
            assert!(lines[1].contains(cell), "{cell}: {text}");
        }
    }

    #[test]
    fn kill_all_marks_every_release_killed() {
        let list = ReleaseList {
            environment: "production".into(),
            revision: 12,
            kill_all: true,
            kill_reason: Some("incident 42".into()),
            releases: vec![ramped()],
        };
        let text = render_release_list(&list);
        assert!(text.lines().nth(1).is_some_and(|l| l.contains("KILLED (kill-all: incident 42)")), "{text}");
    }

    #[test]
    fn diffs_are_field_level_with_percents() {
        let before = json!({"key": "checkout", "allocation": {"v2": 5.0}, "overrides": {}, "description": "a"});
        let after = json!({"key": "checkout", "allocation": {"v2": 10.0, "v3": 1.5}, "overrides": {"u": "v2"}, "description": "a"});
        assert_eq!(
            render_diff(&before, &after),
            vec!["allocation.v2: 5% → 10%", "allocation.v3: 0% → 1.5%", "overrides.u: (none) → v2"]
        );
    }

    #[test]
    fn an_audited_ramp_step_reads_in_percents_and_the_one_numbering() {
        let ramp = ramped().ramp.expect("ramp");
        let before = json!({"ramp": {"candidate": "v2", "state": "running", "step": 0, "steps": [{"buckets": 5000, "hold_ms": 1}, {"buckets": 25000}]}});
        let after = json!({"ramp": {"candidate": "v2", "state": "running", "step": 1, "steps": [{"buckets": 5000, "hold_ms": 1}, {"buckets": 25000}]}});
        let entry = AuditEntryView {
            revision: 3,
            time_ms: 0,
            actor: "ramp-driver".into(),
            action: "ramp_advance".into(),
            release: Some("checkout".into()),
            before: Some(before),
            after: Some(after),
            reason: None,
        };
        assert_eq!(change_summary(&entry), "ramp step 0 → 1 (5% → 25%)");
        assert_eq!(step_text(&ramp), "step 1 of 0–2");
    }
}
