//! The `[cors]` section: which browser origins may call cohort, per environment for the
//! SDK routes and apart for the admin routes. Origins are checked when the settings load,
//! so a misspelt one stops start-up instead of silently refusing a browser app.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Cross-origin (browser) access. Nothing is allowed unless listed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins allowed on an environment's SDK routes (evaluate, snapshot, stream,
    /// events, ack), by environment name; the key `*` lists origins allowed in every
    /// environment. The OFREP routes carry no environment: an origin allowed in any
    /// environment may call them, and the token then decides the environment.
    #[serde(default)]
    pub origins: BTreeMap<EnvKey, Vec<AllowedOrigin>>,
    /// Origins allowed on every other route (releases, kills, ramps, audit, health,
    /// metrics, …). `*` is refused here: list the admin console's origin.
    #[serde(default)]
    pub admin_origins: Vec<AllowedOrigin>,
    /// How long a browser may cache a preflight's answer (`Access-Control-Max-Age`).
    pub max_age_secs: u64,
}

/// A key of `cors.origins`: one environment, or `*` for all.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub enum EnvKey {
    /// Every environment.
    Every,
    /// The environment of this name.
    Named(String),
}

impl TryFrom<String> for EnvKey {
    type Error = String;

    fn try_from(key: String) -> Result<Self, String> {
        if key == "*" {
            return Ok(EnvKey::Every);
        }
        crate::store::EnvName::parse(&key)
            .map(|env| EnvKey::Named(env.as_str().to_owned()))
            .map_err(|_| format!("cors.origins: `{key}` is neither an environment name nor `*`"))
    }
}

/// An origin as a browser sends it (`scheme://host[:port]`), or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum AllowedOrigin {
    /// Any origin: answered `Access-Control-Allow-Origin: *` (never with credentials).
    Any,
    /// This origin, lowercased as browsers serialize it.
    Exact(String),
}

impl TryFrom<String> for AllowedOrigin {
    type Error = String;

    fn try_from(origin: String) -> Result<Self, String> {
        parse_origin(&origin)
    }
}

/// Checks `origin` against the form browsers send in the `Origin` header, so that a
/// configured origin can be compared byte for byte: lowercase scheme and host, a port
/// only when it is not the scheme's default, no path, no trailing slash, no wildcard.
pub(super) fn parse_origin(origin: &str) -> Result<AllowedOrigin, String> {
    let origin = origin.trim();
    if origin == "*" {
        return Ok(AllowedOrigin::Any);
    }
    let bad = |why: &str| Err(format!("CORS origin `{origin}`: {why}"));
    if origin.eq_ignore_ascii_case("null") {
        return bad("`null` is what sandboxed frames and local files send; any page can claim it");
    }
    let lower = origin.to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else {
        return bad("an origin is scheme://host[:port], e.g. `https://shop.example`");
    };
    let scheme_ok = scheme.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return bad("the scheme is not valid");
    }
    if let Some(at) = rest.find(['/', '?', '#']) {
        return Err(format!(
            "CORS origin `{origin}`: an origin has no path (not even a trailing `/`): write `{scheme}://{}`",
            &rest[..at]
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        // `[::1]` without a port has a colon inside the brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':'));
    if !host_ok {
        return bad("the host is not valid (wildcards such as `*.example.com` are not supported)");
    }
    if let Some(port) = port {
        let Ok(number) = port.parse::<u16>() else {
            return bad("the port is not a number from 1 to 65535");
        };
        if number == 0 || port.starts_with('0') {
            return bad("the port is not a number from 1 to 65535");
        }
        if (scheme, number) == ("https", 443) || (scheme, number) == ("http", 80) {
            return Err(format!(
                "CORS origin `{origin}`: browsers leave the default port out of `Origin`: write `{scheme}://{host}`"
            ));
        }
    }
    Ok(AllowedOrigin::Exact(lower))
}

impl CorsSettings {
    /// Refuses what cannot be meant: `*` for the admin routes.
    pub fn check(&self) -> Result<(), String> {
        if self.admin_origins.contains(&AllowedOrigin::Any) {
            return Err("cors.admin_origins cannot be `*`: list the origins of the admin consoles".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(s: &str) -> AllowedOrigin {
        AllowedOrigin::Exact(s.into())
    }

    #[test]
    fn origins_are_taken_in_the_form_browsers_send() {
        assert_eq!(parse_origin("*"), Ok(AllowedOrigin::Any));
        assert_eq!(parse_origin("https://shop.example"), Ok(exact("https://shop.example")));
        assert_eq!(parse_origin("HTTPS://Shop.Example"), Ok(exact("https://shop.example")));
        assert_eq!(parse_origin("http://localhost:3000"), Ok(exact("http://localhost:3000")));
        assert_eq!(parse_origin("http://[::1]:8080"), Ok(exact("http://[::1]:8080")));
        assert_eq!(parse_origin("capacitor://localhost"), Ok(exact("capacitor://localhost")));
    }

    #[test]
    fn a_path_a_default_port_null_or_a_wildcard_host_is_refused_with_the_fix() {
        let err = parse_origin("https://shop.example/").unwrap_err();
        assert!(err.contains("write `https://shop.example`"), "{err}");
        let err = parse_origin("https://shop.example:443").unwrap_err();
        assert!(err.contains("write `https://shop.example`"), "{err}");
        for bad in
            ["null", "shop.example", "https://*.example.com", "https://", "https://a:0", "https://a:99999", "1x://a"]
        {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_keys_are_names_or_a_star() {
        assert_eq!(EnvKey::try_from("*".to_owned()), Ok(EnvKey::Every));
        assert_eq!(EnvKey::try_from("production".to_owned()), Ok(EnvKey::Named("production".into())));
        assert!(EnvKey::try_from("Prod Env".to_owned()).is_err());
    }

    #[test]
    fn a_star_for_the_admin_routes_is_refused() {
        let settings = CorsSettings { admin_origins: vec![AllowedOrigin::Any], ..CorsSettings::default() };
        assert!(settings.check().is_err());
    }
}
