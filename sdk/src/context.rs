//! The evaluation context: the unit's id and the attributes rules look at.

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A context attribute or condition value. JSON `null`, arrays and objects are kept as
/// [`Value::Other`]: no condition matches them and they are never a unit.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// A positive integer above `i64::MAX`.
    UInt(u64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(String),
    /// `null`, an array or an object.
    Other,
}

impl Value {
    /// The numeric value, for numbers only.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The string, for strings only.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Int(i64::from(i))
    }
}
impl From<u32> for Value {
    fn from(i: u32) -> Self {
        Value::Int(i64::from(i))
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Other => s.serialize_unit(),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(i64::try_from(v).map_or(Value::UInt(v), Value::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Value, E> {
                Ok(Value::Str(v))
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Other)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Other)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
                Value::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Value::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Value::Other)
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}

/// Contexts up to this many attributes are scanned rather than binary-searched.
const SCAN_UP_TO: usize = 8;

/// The attributes of one evaluation: `targetingKey` (the user id) and anything rules
/// look at (`country`, `app_version`, `node_id`, …).
///
/// Kept as a sorted vector: contexts are small, a binary search over a few keys beats
/// hashing, and lookups borrow (`&str`), so evaluation never allocates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    attrs: Vec<(Box<str>, Value)>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context with just the targeting key (the default unit).
    pub fn with_targeting_key(key: impl Into<String>) -> Self {
        Self::new().with(crate::DEFAULT_UNIT, key.into())
    }

    /// Sets `name` to `value` (replacing any earlier value) and returns the context.
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.set(name, value);
        self
    }

    /// Sets `name` to `value`, replacing any earlier value.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.position(name) {
            Ok(i) => self.attrs[i].1 = value,
            Err(i) => self.attrs.insert(i, (name.into(), value)),
        }
    }

    /// The value of attribute `name`, if present.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&Value> {
        // Most contexts hold a handful of attributes: a scan that compares lengths first
        // compares bytes about once, where a binary search compares them at every step.
        if self.attrs.len() <= SCAN_UP_TO {
            return self.attrs.iter().find(|(k, _)| k.len() == name.len() && **k == *name).map(|(_, v)| v);
        }
        self.position(name).ok().map(|i| &self.attrs[i].1)
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    /// True when there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    /// The attributes in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.attrs.iter().map(|(k, v)| (&**k, v))
    }

    #[inline]
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.attrs.binary_search_by(|(k, _)| (**k).cmp(name))
    }
}

impl Serialize for Context {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.attrs.len()))?;
        for (k, v) in &self.attrs {
            map.serialize_entry(&**k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Context {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ContextVisitor;
        impl<'de> Visitor<'de> for ContextVisitor {
            type Value = Context;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of context attributes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Context, A::Error> {
                let mut attrs: Vec<(Box<str>, Value)> = Vec::with_capacity(map.size_hint().unwrap_or(4).min(64));
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    attrs.push((k.into_boxed_str(), v));
                }
                // Clients (this SDK among them) mostly send names in order: check before
                // sorting. The sort is stable and `dedup_by` keeps the first of a run of
                // equal names, so the value is swapped forward: JSON's "last one wins".
                if !attrs.is_sorted_by(|a, b| a.0 < b.0) {
                    attrs.sort_by(|a, b| a.0.cmp(&b.0));
                    attrs.dedup_by(|later, kept| {
                        let same = later.0 == kept.0;
                        if same {
                            std::mem::swap(&mut later.1, &mut kept.1);
                        }
                        same
                    });
                }
                Ok(Context { attrs })
            }
        }
        d.deserialize_map(ContextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Context {
        serde_json::from_str(json).expect("a context")
    }

    #[test]
    fn attributes_are_found_whatever_order_they_came_in() {
        for json in [r#"{"a": 1, "b": "x", "c": true}"#, r#"{"c": true, "a": 1, "b": "x"}"#] {
            let ctx = parse(json);
            assert_eq!(ctx.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a", "b", "c"]);
            assert_eq!(
                (ctx.get("a"), ctx.get("b"), ctx.get("c")),
                (Some(&Value::Int(1)), Some(&"x".into()), Some(&Value::Bool(true)))
            );
        }
    }

    #[test]
    fn small_and_large_contexts_find_the_same_attributes() {
        for n in [0, 1, 3, SCAN_UP_TO, SCAN_UP_TO + 1, 40] {
            let ctx = (0..n).fold(Context::new(), |ctx, i| ctx.with(&format!("attr{i}"), i as i64));
            for i in 0..n {
                assert_eq!(ctx.get(&format!("attr{i}")), Some(&Value::Int(i as i64)), "{n} attributes");
            }
            assert_eq!(ctx.get("attr"), None);
            assert_eq!(ctx.get("attr999"), None);
        }
    }

    #[test]
    fn a_name_given_twice_keeps_its_last_value() {
        let ctx = parse(r#"{"b": 1, "a": 1, "b": 2, "c": 0, "b": 3}"#);
        assert_eq!(ctx.len(), 3);
        assert_eq!(ctx.get("b"), Some(&Value::Int(3)));
        let ctx = parse(r#"{"a": 1, "a": 2}"#);
        assert_eq!((ctx.len(), ctx.get("a")), (1, Some(&Value::Int(2))));
    }
}
