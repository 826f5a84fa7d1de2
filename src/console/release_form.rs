//! The release form shared by "New release" and the edit form: its fields as typed (kept
//! as text, so a refused save shows them as they were), how they become the
//! [`ReleaseInput`] the API takes, and where a domain error goes beside them.
//!
//! The console only turns text into the API's shapes (a list, a number, JSON); every rule
//! about what makes a valid release is `Releases::create`/`replace`'s, as for the API.

use super::session::{FieldError, Fields};
use crate::releases::{ReleaseError, ReleaseInput, ReleaseView};
use maud::{Markup, html};
use std::collections::BTreeMap;

/// What went wrong with a submit, beside which field.
#[derive(Default)]
pub(super) struct Problems {
    /// Form field name (`versions`, `allocation`, `step1.percent`, …) → message.
    pub fields: BTreeMap<String, String>,
    /// Not about one field of the form.
    pub general: Option<String>,
    /// "Changed by alice 20 s ago" (the form's `If-Match` was stale).
    pub conflict: Option<String>,
}

impl Problems {
    pub fn any(&self) -> bool {
        !self.fields.is_empty() || self.general.is_some() || self.conflict.is_some()
    }

    /// Puts a domain error's `field: message` beside `name`, or above the form when the
    /// form has no such field.
    pub fn place(&mut self, name: Option<String>, field: &str, message: &str) {
        let text = if field.is_empty() { message.to_owned() } else { format!("{field}: {message}") };
        match name {
            Some(name) => {
                self.fields.insert(name, text);
            }
            None => self.general = Some(text),
        }
    }

    /// Places any refusal of a release write; `None` when it is no refusal of the input
    /// (an outage, a missing release: the page of the error instead).
    pub fn release_error(&mut self, error: ReleaseError, shown: &[&str]) -> Option<ReleaseError> {
        match error {
            ReleaseError::Invalid { field, message } => {
                self.place(form_field(&field, shown), &field, &message);
            }
            ReleaseError::Conflict(message) | ReleaseError::RampActive(message) => self.general = Some(message),
            other => return Some(other),
        }
        None
    }
}

/// The form field a domain error's `field` (`versions[1]`, `allocation.v2`, `rules[0]…`)
/// belongs beside, if the form shows it.
pub(super) fn form_field(field: &str, shown: &[&str]) -> Option<String> {
    let head = field.split(['.', '[']).next().unwrap_or_default();
    shown.contains(&head).then(|| head.to_owned())
}

/// One labelled input (or textarea), its hint, and its error.
pub(super) fn field(name: &str, label: &str, value: &str, problems: &Problems, hint: Option<&str>) -> Markup {
    let id = format!("f-{}", name.replace('.', "-"));
    let error = problems.fields.get(name);
    let described = [hint.map(|_| format!("{id}-hint")), error.map(|_| format!("{id}-error"))]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let described = (!described.is_empty()).then_some(described.as_str());
    let invalid = error.map(|_| "true");
    let code = matches!(name, "overrides" | "rules" | "audience" | "values");
    html! {
        div.field {
            label for=(id) { (label) }
            @if let Some(hint) = hint { p.hint id={ (id) "-hint" } { (hint) } }
            @if code {
                textarea.code id=(id) name=(name) rows="3" spellcheck="false" aria-invalid=[invalid] aria-describedby=[described] { (value) }
            } @else {
                input type="text" id=(id) name=(name) value=(value) aria-invalid=[invalid] aria-describedby=[described];
            }
            @if let Some(error) = error { p.error id={ (id) "-error" } { (error) } }
        }
    }
}

/// A release's fields as typed.
#[derive(Default, Clone)]
pub(super) struct ReleaseForm {
    /// The revision the edit form was shown at (its `If-Match`); absent on create.
    pub revision: String,
    pub key: String,
    /// `v1, v2`: baseline first.
    pub versions: String,
    pub unit: String,
    /// `v2 = 10, v3 = 2.5`: candidate → percent.
    pub allocation: String,
    /// JSON object: version → typed value.
    pub values: String,
    pub overrides: String,
    pub rules: String,
    pub audience: String,
    pub description: String,
}

/// `value` as indented JSON (empty when `empty`). It goes through the compact encoding
/// the API answers with and back as a `Value`, so the console adds no serializer of its
/// own for each type (the console's size budget).
fn json_text<T: serde::Serialize>(value: &T, empty: bool) -> String {
    if empty {
        return String::new();
    }
    let compact = serde_json::to_vec(value).unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(&compact)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_default()
}

impl ReleaseForm {
    /// A new release's form: two versions and the default unit to start from.
    pub fn blank() -> Self {
        ReleaseForm { versions: "v1, v2".into(), unit: "targetingKey".into(), ..ReleaseForm::default() }
    }

    /// The form as submitted (an absent field is empty).
    pub fn of_fields(fields: &Fields) -> Result<Self, FieldError> {
        Ok(ReleaseForm {
            revision: fields.text("revision")?,
            key: fields.text("key")?,
            versions: fields.text("versions")?,
            unit: fields.text("unit")?,
            allocation: fields.text("allocation")?,
            values: fields.text("values")?,
            overrides: fields.text("overrides")?,
            rules: fields.text("rules")?,
            audience: fields.text("audience")?,
            description: fields.text("description")?,
        })
    }

    /// The form showing `view` as it is.
    pub fn of(view: &ReleaseView) -> Self {
        let allocation = view
            .versions
            .iter()
            .skip(1)
            .map(|v| format!("{v} = {}", super::number(view.allocation.get(v).copied().unwrap_or(0.0))))
            .collect::<Vec<_>>()
            .join(", ");
        ReleaseForm {
            revision: view.revision.to_string(),
            key: view.key.clone(),
            versions: view.versions.join(", "),
            unit: view.unit.clone(),
            allocation,
            values: json_text(&view.values, view.values.is_empty()),
            overrides: json_text(&view.overrides, view.overrides.is_empty()),
            rules: json_text(&view.rules, view.rules.is_empty()),
            audience: json_text(&view.audience, view.audience.is_empty()),
            description: view.description.clone(),
        }
    }

    /// The fields, labelled; `create` adds the key and unit a release is born with.
    pub fn fields(&self, problems: &Problems, create: bool, fleet: bool) -> Markup {
        html! {
            @if create {
                div.pair {
                    (field("key", "Key", &self.key, problems, Some("letters, digits, -, _, .")))
                    (field("unit", "Unit attribute", &self.unit, problems, Some("the context attribute users are hashed by")))
                }
            }
            div.pair {
                (field("versions", "Versions", &self.versions, problems, Some("comma-separated, the baseline first: v1, v2")))
                @if !fleet {
                    (field("allocation", "Allocation (percent per candidate)", &self.allocation, problems, Some("e.g. v2 = 10; the baseline gets the rest")))
                }
            }
            (field("values", "Typed values (JSON, optional)", &self.values, problems, Some("one per version, of one type: {\"v1\": false, \"v2\": true}")))
            (field("overrides", "Overrides (JSON: unit value → version)", &self.overrides, problems, Some("e.g. {\"user-7\": \"v2\"}")))
            (field("rules", "Rules (JSON)", &self.rules, problems, Some("e.g. [{\"when\": [{\"attr\": \"country\", \"op\": \"in\", \"values\": [\"NZ\"]}], \"serve\": \"v2\"}]")))
            (field("audience", "Audience (JSON conditions)", &self.audience, problems, Some("who is in the split at all, e.g. [{\"attr\": \"plan\", \"op\": \"in\", \"values\": [\"pro\"]}]")))
            (field("description", "Description", &self.description, problems, None))
        }
    }

    /// The [`ReleaseInput`] these fields say, or text that is no list, number or JSON
    /// beside its field. `current` is the release an edit starts from (what the form
    /// does not show is kept).
    pub fn input(&self, current: Option<&ReleaseView>, problems: &mut Problems) -> ReleaseInput {
        let versions: Vec<String> =
            self.versions.split([',', ' ', '\n', '\r', '\t']).filter(|v| !v.is_empty()).map(str::to_owned).collect();
        let fleet = current.and_then(|c| c.fleet.clone());
        let allocation = if fleet.is_some() { None } else { Some(self.percents(problems)) };
        let key = current.map_or_else(|| Some(self.key.trim().to_owned()).filter(|k| !k.is_empty()), |_| None);
        ReleaseInput {
            key,
            versions,
            unit: current.map_or_else(|| Some(self.unit.trim().to_owned()), |c| Some(c.unit.clone())),
            salt: current.and_then(|c| (c.salt != c.key).then(|| c.salt.clone())),
            bucketing: current.map(|c| c.bucketing.clone()),
            allocation,
            overrides: json("overrides", &self.overrides, problems),
            rules: json("rules", &self.rules, problems),
            audience: json("audience", &self.audience, problems),
            values: json("values", &self.values, problems),
            description: Some(self.description.clone()),
            fleet,
            fleet_nodes: current.and_then(|c| c.fleet_nodes),
        }
    }

    /// `v2 = 10, v3: 2.5 %` → candidate → percent.
    fn percents(&self, problems: &mut Problems) -> BTreeMap<String, f64> {
        let mut percents = BTreeMap::new();
        for pair in self.allocation.split([',', '\n', ';']).map(str::trim).filter(|p| !p.is_empty()) {
            let parsed = pair.split_once(['=', ':']).and_then(|(version, p)| {
                let p = p.trim().trim_end_matches('%').trim().parse::<f64>().ok()?;
                Some((version.trim().to_owned(), p))
            });
            match parsed {
                Some((version, p)) => {
                    percents.insert(version, p);
                }
                None => {
                    problems
                        .fields
                        .insert("allocation".into(), format!("`{pair}` is not `version = percent` (e.g. v2 = 10)"));
                }
            }
        }
        percents
    }
}

/// JSON text as `T` (empty text is `T`'s default), or the parser's complaint beside
/// `name`.
fn json<T: serde::de::DeserializeOwned + Default>(name: &str, text: &str, problems: &mut Problems) -> T {
    if text.trim().is_empty() {
        return T::default();
    }
    // From bytes, as the API's JSON bodies are read: the same parser, not a second copy.
    serde_json::from_slice(text.as_bytes()).unwrap_or_else(|e| {
        problems.fields.insert(name.to_owned(), format!("not valid here: {e}"));
        T::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_text_becomes_the_apis_input_and_bad_text_stays_beside_its_field() {
        let form = ReleaseForm {
            key: "dark-mode".into(),
            versions: "off, on,beta".into(),
            allocation: "on = 10 %, beta: 2.5".into(),
            values: "{\"off\": false, \"on\": true, \"beta\": true}".into(),
            ..ReleaseForm::blank()
        };
        let mut problems = Problems::default();
        let input = form.input(None, &mut problems);
        assert!(!problems.any());
        assert_eq!(input.versions, ["off", "on", "beta"]);
        assert_eq!(input.allocation, Some(BTreeMap::from([("on".into(), 10.0), ("beta".into(), 2.5)])));
        assert_eq!(input.values["on"], serde_json::json!(true));

        let bad = ReleaseForm { allocation: "on ten".into(), rules: "[{".into(), ..form };
        bad.input(None, &mut problems);
        assert!(problems.fields["allocation"].contains("`on ten`"));
        assert!(problems.fields.contains_key("rules"));
        assert_eq!(form_field("versions[1]", &["versions"]), Some("versions".into()));
        assert_eq!(form_field("allocation.on", &["allocation"]), Some("allocation".into()));
        assert_eq!(form_field("unit", &["versions"]), None);
    }
}
