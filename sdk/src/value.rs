//! Typed values: what a version stands for in application code (`false`/`true`, a
//! colour, a limit, a JSON object), declared per release in `values` and checked on
//! write. Without `values`, a version's value is its name.

use crate::compile::CompiledRelease;
use crate::decision::Decision;
use crate::error::CompileError;
use crate::model::Release;

/// A JSON value (re-exported from `serde_json`): the type of typed values.
pub use serde_json::Value as JsonValue;

/// Largest serialised size of one version's value. Values travel in every snapshot.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;

/// The one type all of a release's values share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// `true` / `false`.
    Boolean,
    /// Text. Also the type of releases without `values` (the value is the version name).
    String,
    /// A JSON number, integer or not.
    Number,
    /// A JSON object.
    Object,
}

impl ValueType {
    /// The type of `value`, for the four kinds a release may declare.
    pub fn of(value: &JsonValue) -> Option<ValueType> {
        match value {
            JsonValue::Bool(_) => Some(ValueType::Boolean),
            JsonValue::String(_) => Some(ValueType::String),
            JsonValue::Number(_) => Some(ValueType::Number),
            JsonValue::Object(_) => Some(ValueType::Object),
            JsonValue::Null | JsonValue::Array(_) => None,
        }
    }

    /// The name used in messages and documentation (`boolean`, `string`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            ValueType::Boolean => "boolean",
            ValueType::String => "string",
            ValueType::Number => "number",
            ValueType::Object => "object",
        }
    }
}

/// A decision with the value of the version it serves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolved<'a> {
    /// The evaluation core's answer.
    pub decision: Decision<'a>,
    /// The served version's value; `None` when the release was not found.
    pub value: Option<&'a JsonValue>,
}

impl Resolved<'static> {
    /// The answer for a key the snapshot does not hold: no version, `FLAG_NOT_FOUND`.
    pub const NOT_FOUND: Resolved<'static> = Resolved { decision: Decision::NOT_FOUND, value: None };
}

impl CompiledRelease {
    /// Evaluates like [`CompiledRelease::evaluate`] and adds the served version's value.
    /// Allocates nothing: values are built when the release is compiled.
    #[inline]
    pub fn resolve(&self, kill_all: bool, ctx: &crate::Context) -> Resolved<'_> {
        let decision = self.evaluate(kill_all, ctx);
        Resolved { decision, value: decision.version_index.and_then(|i| self.value(i)) }
    }
}

/// Checks `release.values` and lays them out by version index: one value per version,
/// all of one type. Without `values`, each version's value is its name.
pub(crate) fn compile_values(release: &Release) -> Result<(ValueType, Box<[JsonValue]>), CompileError> {
    if release.values.is_empty() {
        let names = release.versions.iter().map(|v| JsonValue::String(v.clone())).collect();
        return Ok((ValueType::String, names));
    }
    for version in release.values.keys() {
        if !release.versions.contains(version) {
            return Err(CompileError::new(
                format!("values.{version}"),
                format!("`{version}` is not one of the release's versions {:?}", release.versions),
            ));
        }
    }
    let mut first: Option<(&str, ValueType)> = None;
    let mut values = Vec::with_capacity(release.versions.len());
    for version in &release.versions {
        let field = format!("values.{version}");
        let value = release.values.get(version).ok_or_else(|| {
            CompileError::new(
                field.clone(),
                format!("version `{version}` has no value; when `values` is given, every version needs one"),
            )
        })?;
        let kind = ValueType::of(value).ok_or_else(|| {
            CompileError::new(field.clone(), "a value must be a boolean, a string, a number or a JSON object")
        })?;
        match first {
            None => first = Some((version, kind)),
            Some((other, expected)) if expected != kind => {
                return Err(CompileError::new(
                    field,
                    format!(
                        "all values of a release have one type: `{other}` is a {}, `{version}` a {}",
                        expected.as_str(),
                        kind.as_str()
                    ),
                ));
            }
            Some(_) => {}
        }
        // Serialising a `serde_json::Value` cannot fail; an error would only mean "too big".
        let size = serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAX_VALUE_BYTES {
            return Err(CompileError::new(field, format!("a value may be at most {MAX_VALUE_BYTES} bytes of JSON")));
        }
        values.push(value.clone());
    }
    let kind = first.map_or(ValueType::String, |(_, kind)| kind);
    Ok((kind, values.into_boxed_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_values(values: JsonValue) -> Release {
        let mut release = Release::new("k", ["v1", "v2"]);
        release.values = serde_json::from_value(values).expect("a map");
        release
    }

    #[test]
    fn without_values_each_version_stands_for_its_name() {
        let compiled = CompiledRelease::compile(Release::new("k", ["v1", "v2"])).expect("compiles");
        assert_eq!(compiled.value_type(), ValueType::String);
        assert_eq!(compiled.value(1), Some(&json!("v2")));
    }

    #[test]
    fn each_kind_of_value_compiles_and_is_found_by_version_index() {
        for (values, kind) in [
            (json!({"v1": false, "v2": true}), ValueType::Boolean),
            (json!({"v1": "blue", "v2": "green"}), ValueType::String),
            (json!({"v1": 10, "v2": 12.5}), ValueType::Number),
            (json!({"v1": {"limit": 1}, "v2": {"limit": 2}}), ValueType::Object),
        ] {
            let compiled = CompiledRelease::compile(with_values(values.clone())).expect("compiles");
            assert_eq!(compiled.value_type(), kind);
            assert_eq!(compiled.value(0), values.get("v1"));
            assert_eq!(compiled.value(1), values.get("v2"));
            assert_eq!(compiled.value(2), None);
        }
    }

    #[test]
    fn mixed_missing_unknown_and_untyped_values_are_refused() {
        let refused = |values: JsonValue| CompiledRelease::compile(with_values(values)).expect_err("refused");
        let mixed = refused(json!({"v1": false, "v2": "on"}));
        assert_eq!(mixed.field, "values.v2");
        assert!(mixed.message.contains("one type"), "{}", mixed.message);
        assert_eq!(refused(json!({"v1": false})).field, "values.v2");
        assert_eq!(refused(json!({"v1": 1, "v2": 2, "v3": 3})).field, "values.v3");
        assert_eq!(refused(json!({"v1": null, "v2": null})).field, "values.v1");
        assert_eq!(refused(json!({"v1": [1], "v2": [2]})).field, "values.v1");
        let big = "x".repeat(MAX_VALUE_BYTES);
        assert_eq!(refused(json!({"v1": "a", "v2": big})).field, "values.v2");
    }

    #[test]
    fn releases_without_values_serialise_as_before() {
        let text = serde_json::to_string(&Release::new("k", ["v1", "v2"])).expect("serialises");
        assert!(!text.contains("\"values\""), "{text}");
    }
}
