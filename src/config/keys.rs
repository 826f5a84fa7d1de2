//! The unknown-key check: every key a configuration file sets and every `COHORT_…`
//! variable must be one that a setting reads. Without it a typo is silently ignored —
//! `[server] prot = 9000` starts on 8080, `[auth] isuer = …` turns the issuer check off,
//! `[[webhook]]` sends nothing — so a mistake stops start-up instead, naming the key and
//! the nearest known one.
//!
//! The known keys are read from the settings types themselves (serde's field lists), so
//! a field added to a settings struct is known at once; only a new *section* needs a line
//! in [`known_keys`] (a test compares it with `config/default.toml`).

use super::{
    AuditSettings, AuthSettings, ConsoleSettings, CorsSettings, EventsSettings, FleetSettings, HttpSettings,
    LogSettings, MaxTtlSettings, MetricsSettings, OfrepSettings, RampSettings, RateLimitSettings,
    RedisSentinelSettings, ServerSettings, Settings, StoreSettings, WebhookSettings,
};
use serde::Deserialize;
use serde::de::{self, Visitor};
use std::collections::HashMap;
use std::path::PathBuf;

/// The prefix of the variables that set configuration keys.
pub const ENV_PREFIX: &str = "COHORT_";

/// `COHORT_…` variables the command line reads (clap's `env =` in `src/main.rs` and
/// `src/cli/mod.rs`, and the client token): they are not configuration keys, so they are
/// neither merged into the settings nor refused as unknown — `cohort serve` must start in
/// a shell that has them set for the client commands.
pub const CLI_VARIABLES: [&str; 5] =
    ["COHORT_TOKEN", "COHORT_TOKEN_FILE", "COHORT_URL", "COHORT_ENV", "COHORT_SERVERS"];

/// Where an unknown key was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// In the configuration file at this path.
    File(PathBuf),
    /// As a `COHORT_…` environment variable.
    Environment,
}

/// A key no setting reads, with the known key it most resembles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// Where it was set.
    pub origin: KeyOrigin,
    /// The key as written: a dotted path in a file (`server.prot`, `webhooks[0].urll`),
    /// the variable's name in the environment (`COHORT_SERVER__PROT`).
    pub key: String,
    /// The nearest known key, spelled the same way (`server.port`, `COHORT_SERVER__PORT`).
    pub nearest: Option<String>,
}

impl std::fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.origin {
            KeyOrigin::File(path) => write!(f, "unknown key `{}` in {}", self.key, path.display())?,
            KeyOrigin::Environment => write!(f, "unknown environment variable {}", self.key)?,
        }
        match &self.nearest {
            Some(nearest) if matches!(self.origin, KeyOrigin::File(_)) => write!(f, " (did you mean `{nearest}`?)"),
            Some(nearest) => write!(f, " (did you mean {nearest}?)"),
            None => Ok(()),
        }
    }
}

/// What a key holds.
#[derive(Debug)]
pub(super) enum Keys {
    /// A value (or something whose inside is not checked here; serde still refuses
    /// unknown fields in it).
    Value,
    /// A table with these keys.
    Table(Vec<(&'static str, Keys)>),
    /// An array of tables shaped like this (`[[webhooks]]`).
    List(Box<Keys>),
}

impl Keys {
    fn get(&self, name: &str) -> Option<&Keys> {
        match self {
            Keys::Table(keys) => keys.iter().find(|(known, _)| *known == name).map(|(_, keys)| keys),
            _ => None,
        }
    }

    fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        let keys = match self {
            Keys::Table(keys) => keys.as_slice(),
            _ => &[],
        };
        keys.iter().map(|(name, _)| *name)
    }
}

/// Every key a configuration may set.
pub(super) fn known_keys() -> Keys {
    let section = |name: &str| match name {
        "server" => table::<ServerSettings>(),
        "store" => {
            match table::<StoreSettings>() {
                Keys::Table(keys) => Keys::Table(
                    keys.into_iter()
                        .map(|(name, keys)| {
                            if name == "redis_sentinel" {
                                (name, table::<RedisSentinelSettings>())
                            } else {
                                (name, keys)
                            }
                        })
                        .collect(),
                ),
                keys => keys,
            }
        }
        "auth" => match table::<AuthSettings>() {
            Keys::Table(keys) => Keys::Table(
                keys.into_iter()
                    .map(
                        |(name, keys)| if name == "max_ttl" { (name, table::<MaxTtlSettings>()) } else { (name, keys) },
                    )
                    .collect(),
            ),
            keys => keys,
        },
        "audit" => table::<AuditSettings>(),
        "ramp" => table::<RampSettings>(),
        "fleet" => table::<FleetSettings>(),
        "ofrep" => table::<OfrepSettings>(),
        "log" => table::<LogSettings>(),
        "cors" => table::<CorsSettings>(),
        "http" => table::<HttpSettings>(),
        "metrics" => table::<MetricsSettings>(),
        "events" => table::<EventsSettings>(),
        "rate_limit" => table::<RateLimitSettings>(),
        "console" => table::<ConsoleSettings>(),
        "webhooks" => Keys::List(Box::new(table::<WebhookSettings>())),
        _ => Keys::Value,
    };
    Keys::Table(fields_of::<Settings>().iter().map(|&name| (name, section(name))).collect())
}

fn table<'de, T: Deserialize<'de>>() -> Keys {
    Keys::Table(fields_of::<T>().iter().map(|&name| (name, Keys::Value)).collect())
}

/// The field names serde's derive hands to `deserialize_struct` for `T`.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut names = FieldNames(&[]);
    // The recorder always answers with an error once it has the names: nothing is built.
    let _ = T::deserialize(&mut names);
    names.0
}

/// A deserializer that only records the field list of the struct asked of it.
struct FieldNames(&'static [&'static str]);

impl<'de> de::Deserializer<'de> for &mut FieldNames {
    type Error = de::value::Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields;
        Err(de::Error::custom("field names recorded"))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// The keys in a configuration file's `tree` that no setting reads.
pub(super) fn unknown_in_file(
    known: &Keys,
    tree: &config::Map<String, config::Value>,
    path: &std::path::Path,
) -> Vec<UnknownKey> {
    let mut unknown = Vec::new();
    walk(known, tree, "", &mut |key, nearest| {
        unknown.push(UnknownKey { origin: KeyOrigin::File(path.to_owned()), key, nearest })
    });
    unknown
}

fn walk(
    known: &Keys,
    tree: &config::Map<String, config::Value>,
    prefix: &str,
    report: &mut dyn FnMut(String, Option<String>),
) {
    let path = |name: &str| if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") };
    let mut names: Vec<&String> = tree.keys().collect();
    names.sort(); // the map's order is not the file's; a stable report is easier to read
    for name in names {
        let value = &tree[name];
        match known.get(name) {
            None => report(path(name), nearest(name, known.names()).map(path)),
            Some(inner @ Keys::Table(_)) => {
                if let config::ValueKind::Table(table) = &value.kind {
                    walk(inner, table, &path(name), report);
                }
            }
            Some(Keys::List(item)) => {
                if let config::ValueKind::Array(items) = &value.kind {
                    for (i, value) in items.iter().enumerate() {
                        if let config::ValueKind::Table(table) = &value.kind {
                            walk(item, table, &format!("{}[{i}]", path(name)), report);
                        }
                    }
                }
            }
            // A value where a table is expected (or the reverse) is serde's to refuse,
            // with its own message about the type.
            Some(Keys::Value) => {}
        }
    }
}

/// Splits the `COHORT_…` variables in `vars` into those that set known keys (returned,
/// for the configuration's environment layer) and unknown ones (reported); the command
/// line's own variables ([`CLI_VARIABLES`]) and everything without the prefix are left
/// out of both.
pub(super) fn split_environment(
    known: &Keys,
    vars: HashMap<String, String>,
) -> (HashMap<String, String>, Vec<UnknownKey>) {
    // The names of every leaf a variable can set; arrays of tables cannot be set this way.
    let mut leaves = Vec::new();
    for section in known.names() {
        match known.get(section) {
            Some(Keys::Value) => leaves.push(env_name(&[section])),
            Some(inner @ Keys::Table(_)) => leaves.extend(inner.names().map(|key| env_name(&[section, key]))),
            _ => {}
        }
    }
    let mut settings = HashMap::new();
    let mut unknown = Vec::new();
    for (name, value) in vars {
        // `config` matches the prefix case-insensitively; so does this check.
        let rest = match name.get(..ENV_PREFIX.len()) {
            Some(prefix) if prefix.eq_ignore_ascii_case(ENV_PREFIX) => &name[ENV_PREFIX.len()..],
            _ => continue,
        };
        if CLI_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let mut parts = lower.split("__");
        let mut at = known;
        let is_known = parts.all(|part| match at.get(part) {
            Some(inner) => {
                at = inner;
                true
            }
            None => false,
        });
        if is_known {
            settings.insert(name, value);
        } else {
            let nearest = nearest(&name.to_ascii_uppercase(), leaves.iter().map(String::as_str)).map(str::to_owned);
            unknown.push(UnknownKey { origin: KeyOrigin::Environment, key: name, nearest });
        }
    }
    unknown.sort_by(|a, b| a.key.cmp(&b.key));
    (settings, unknown)
}

/// `COHORT_SERVER__PORT` for `["server", "port"]`.
fn env_name(parts: &[&str]) -> String {
    format!("{ENV_PREFIX}{}", parts.join("__").to_ascii_uppercase())
}

/// The candidate most like `name` by edit distance (a transposition counts as one edit:
/// `prot` is one away from `port`); the first of equals.
fn nearest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates.min_by_key(|candidate| strsim::damerau_levenshtein(name, candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_of_the_defaults_is_checked_key_by_key() {
        use config::Source as _;
        let tree = config::File::from_str(super::super::DEFAULTS, config::FileFormat::Toml)
            .collect()
            .expect("default.toml parses");
        let known = known_keys();
        for (name, value) in &tree {
            let shape = known.get(name).unwrap_or_else(|| panic!("default.toml's `{name}` is a setting"));
            match (&value.kind, shape) {
                (config::ValueKind::Table(table), Keys::Table(_)) => {
                    for key in table.keys() {
                        assert!(shape.get(key).is_some(), "default.toml's `{name}.{key}` is a setting");
                    }
                }
                (config::ValueKind::Array(_), Keys::List(_)) => {}
                (config::ValueKind::Table(_), _) => panic!("section `{name}` needs a line in known_keys()"),
                _ => {}
            }
        }
        assert_eq!(unknown_in_file(&known, &tree, std::path::Path::new("default.toml")), Vec::new());
    }

    #[test]
    fn the_field_names_come_from_the_settings_types() {
        assert!(fields_of::<ServerSettings>().contains(&"port"));
        assert!(fields_of::<WebhookSettings>().contains(&"secret"));
        assert!(fields_of::<Settings>().contains(&"webhooks"));
    }

    #[test]
    fn the_command_lines_variables_are_the_ones_clap_reads() {
        use clap::Args as _;
        let command = crate::cli::ClientArgs::augment_args(clap::Command::new("cohort"));
        for arg in command.get_arguments() {
            if let Some(var) = arg.get_env().and_then(|v| v.to_str()) {
                assert!(CLI_VARIABLES.contains(&var), "{var} is read by clap but not listed in CLI_VARIABLES");
            }
        }
    }

    #[test]
    fn a_transposition_is_one_edit() {
        assert_eq!(nearest("prot", ["host", "port", "workers"].into_iter()), Some("port"));
        assert_eq!(
            nearest("COHORT_SERVER_PORT", ["COHORT_SERVER__HOST", "COHORT_SERVER__PORT"].into_iter()),
            Some("COHORT_SERVER__PORT")
        );
    }
}
