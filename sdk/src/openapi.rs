//! OpenAPI schemas of the model (feature `openapi`, off by default): a server's API
//! document then describes releases, rules, conditions, contexts and ramps field by field,
//! with the limits [`crate::CompiledRelease::compile`] enforces, rather than as bare
//! objects. Applications that only evaluate never compile `utoipa`.
//!
//! The plain structs derive `utoipa::ToSchema`; the types with hand-written serde
//! ([`Context`], [`Value`]) and the fields whose text is checked on compile (an op's
//! name, a typed value) get their schemas here.

use crate::model::Op;
use crate::{Context, Value};
use serde_json::json;
use std::borrow::Cow;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::{PartialSchema, ToSchema};

/// Release keys and version names: letters, digits, `-`, `_`, `.`, starting with a letter
/// or digit.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]*$";

impl PartialSchema for Value {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![Type::String, Type::Number, Type::Boolean]))
            .description(Some(
                "A string, number or boolean. In a context, other JSON (null, arrays, objects) is accepted but never matches a condition",
            ))
            .examples([json!("NZ"), json!(42), json!(true)])
            .into()
    }
}

impl ToSchema for Value {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AttributeValue")
    }
}

impl PartialSchema for Context {
    fn schema() -> RefOr<Schema> {
        let targeting_key = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("The user id: the unit of releases that name no other `unit`"))
            .examples([json!("user-42")]);
        ObjectBuilder::new()
            .description(Some(
                "The attributes of one evaluation: `targetingKey` and anything rules look at (`country`, `app_version`, `node_id`, …)",
            ))
            .property("targetingKey", targeting_key)
            .additional_properties(Some(Value::schema()))
            .examples([json!({"targetingKey": "user-42", "country": "NZ", "app_version": "2.4.1"})])
            .into()
    }
}

impl ToSchema for Context {}

/// A condition's `op`: one of [`Op::ALL`]'s names.
pub fn op() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(Op::ALL.iter().map(|op| op.as_str())))
        .description(Some("The operator; `semver_*` compare versions, `lt`…`gte` numbers"))
}

/// A condition's operands: scalars, one for the single-valued ops.
pub fn operands() -> ArrayBuilder {
    ArrayBuilder::new().items(Value::schema()).min_items(Some(1)).max_items(Some(1_000)).description(Some(
        "Operands: one for `eq`, `neq`, `lt`…`gte` and `semver_*`; strings for `starts_with`, `ends_with`, `contains`",
    ))
}

/// A version's typed value: a boolean, string, number or JSON object.
pub fn typed_value() -> Schema {
    let of = |kind: Type| ObjectBuilder::new().schema_type(kind);
    // Any object: its fields are the application's.
    let object = of(Type::Object).additional_properties(Some(AdditionalProperties::FreeForm(true)));
    Schema::OneOf(
        OneOfBuilder::new()
            .item(of(Type::Boolean))
            .item(of(Type::String))
            .item(of(Type::Number))
            .item(object)
            .description(Some("The value a version stands for (one type per release)"))
            .build(),
    )
}

/// Version → typed value.
pub fn values() -> ObjectBuilder {
    ObjectBuilder::new().additional_properties(Some(typed_value())).description(Some(
        "Version → the value it stands for in application code; empty: each version's value is its name",
    ))
}

/// A version name (in `serve`, overrides and allocations).
pub fn version_name() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(NAME_PATTERN)).min_length(Some(1)).max_length(Some(64))
}

/// A release's versions: 2 to 32 distinct names, the baseline first.
pub fn versions() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(version_name())
        .min_items(Some(2))
        .max_items(Some(32))
        .unique_items(true)
        .examples([json!(["v1", "v2"])])
}
