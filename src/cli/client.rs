//! A thin HTTP client for cohort's `/v1/envs/{env}/…` admin API that turns every failure
//! into a typed [`ClientError`] carrying its exit code.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize as _;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use thiserror::Error;

use super::args::strip_etag;
use super::views::{AuditPage, EnvironmentState, Reach, ReleaseList, ReleaseView};
use super::{EXIT_UNAVAILABLE, EXIT_USAGE, exit_code_for_status};

/// Covers connect, send and reading the body: a CLI that hangs is worse than one that
/// fails, and every admin call is a small JSON exchange.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest piece of a non-JSON error body echoed back, so an HTML error page from a
/// proxy does not flood the terminal.
const MAX_ECHOED_BODY_CHARS: usize = 200;

/// Everything that can go wrong talking to the server.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("invalid --url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("the bearer token contains characters that cannot be sent in an HTTP header")]
    InvalidToken,
    #[error("cannot reach cohort at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    /// The server answered with an error status; `code` is its machine-readable code when
    /// the body had the documented `{"error": {…}}` shape.
    #[error("{message} ({}HTTP {})", code_prefix(.code), .status.as_u16())]
    Api { status: StatusCode, code: Option<String>, message: String },
    #[error("cohort at {url} sent a response this client cannot read (HTTP {}): {cause}", .status.as_u16())]
    BadResponse { url: String, status: StatusCode, cause: String },
}

fn code_prefix(code: &Option<String>) -> String {
    code.as_deref().map(|c| format!("{c}, ")).unwrap_or_default()
}

impl ClientError {
    /// The process exit code this failure maps to (see the `EXIT_*` constants).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::InvalidUrl { .. } | Self::InvalidToken => EXIT_USAGE,
            Self::Unreachable { .. } | Self::BadResponse { .. } => EXIT_UNAVAILABLE,
            Self::Api { status, .. } => exit_code_for_status(*status),
        }
    }

    /// The HTTP status when the server answered with an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A decoded successful response, with the raw JSON kept for `--json`.
#[derive(Debug)]
pub struct Reply<T> {
    pub value: T,
    /// The body exactly as the server sent it (`Null` for an empty body such as 204).
    pub body: Value,
    /// The revision from the `ETag` header, when the server sent one.
    pub etag: Option<u64>,
}

/// A successful response before it is decoded into a view type.
struct RawReply {
    status: StatusCode,
    body: Value,
    etag: Option<u64>,
}

/// The client for one server and one environment.
#[derive(Debug, Clone)]
pub struct CohortClient {
    http: reqwest::Client,
    base: Url,
    env: String,
}

impl CohortClient {
    /// Validates the address and builds the HTTP client. `token`, when present, is sent
    /// as `Authorization: Bearer <token>` on every request.
    pub fn new(base_url: &str, env: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let base = parse_base_url(base_url)?;
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ClientError::InvalidToken)?;
            // Keeps the token out of reqwest's Debug output and any tracing of headers.
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .default_headers(headers)
            .user_agent(concat!("cohort-cli/", env!("CARGO_PKG_VERSION")))
            // A followed redirect would turn a POST into a GET and drop the token on a
            // host change; better to surface it so the operator fixes --url.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: base.to_string(),
                cause: format!("cannot set up the HTTP client: {e}"),
            })?;
        Ok(Self { http, base, env: env.to_owned() })
    }

    /// `GET /v1/envs`
    pub async fn list_environments(&self) -> Result<Value, ClientError> {
        Ok(self.send_to(Method::GET, self.root_url()?, None, None).await?.body)
    }

    /// `POST /v1/envs`
    pub async fn create_environment(&self, name: &str) -> Result<Value, ClientError> {
        Ok(self.send_to(Method::POST, self.root_url()?, Some(&json!({"name": name})), None).await?.body)
    }

    /// `DELETE /v1/envs/{env}`
    pub async fn delete_environment(&self) -> Result<Value, ClientError> {
        Ok(self.send(Method::DELETE, &[], None, None).await?.body)
    }

    /// `POST /v1/envs/{env}/store/reseed`
    pub async fn reseed(&self, reason: Option<&str>, force: bool) -> Result<Value, ClientError> {
        let mut body = reason_body(reason);
        if force {
            body["force"] = Value::Bool(true);
        }
        Ok(self.send(Method::POST, &["store", "reseed"], Some(&body), None).await?.body)
    }

    /// `POST /v1/envs/{env}/revocations`, or `POST /v1/revocations` for `--env '*'`.
    pub async fn revoke(
        &self,
        jti: Option<&str>,
        sub: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Value, ClientError> {
        let body = json!({"jti": jti, "sub": sub, "reason": reason});
        Ok(self.send_to(Method::POST, self.revocations_url()?, Some(&body), None).await?.body)
    }

    /// `GET /v1/envs/{env}/revocations`, or `GET /v1/revocations` for `--env '*'`.
    pub async fn revocations(&self) -> Result<Value, ClientError> {
        Ok(self.send_to(Method::GET, self.revocations_url()?, None, None).await?.body)
    }

    fn revocations_url(&self) -> Result<Url, ClientError> {
        if self.env != "*" {
            return self.url(&["revocations"]);
        }
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::InvalidUrl { url: self.base.to_string(), reason: "not a base URL".to_owned() })?
            .pop_if_empty()
            .extend(["v1", "revocations"]);
        Ok(url)
    }

    /// `GET /v1/envs/{env}/releases`
    pub async fn list_releases(&self) -> Result<Reply<ReleaseList>, ClientError> {
        self.call(Method::GET, &["releases"], None, None).await
    }

    /// `GET /v1/envs/{env}/releases/{key}`
    pub async fn get_release(&self, key: &str) -> Result<Reply<ReleaseView>, ClientError> {
        self.call(Method::GET, &["releases", key], None, None).await
    }

    /// `POST /v1/envs/{env}/releases` with a full release body.
    pub async fn create_release(&self, body: &Value) -> Result<Reply<ReleaseView>, ClientError> {
        self.call(Method::POST, &["releases"], Some(body), None).await
    }

    /// `PUT /v1/envs/{env}/releases/{key}`: the whole release, only if it is still at
    /// `if_match`.
    pub async fn replace_release(
        &self,
        key: &str,
        body: &Value,
        if_match: Option<u64>,
    ) -> Result<Reply<ReleaseView>, ClientError> {
        self.call(Method::PUT, &["releases", key], Some(body), if_match).await
    }

    /// The same client for another environment.
    pub fn for_env(&self, env: &str) -> Self {
        Self { http: self.http.clone(), base: self.base.clone(), env: env.to_owned() }
    }

    /// `POST /v1/envs/{env}/releases/{key}/allocation`: only the listed candidates change.
    pub async fn set_allocation(
        &self,
        key: &str,
        percent: &BTreeMap<String, f64>,
        if_match: Option<u64>,
    ) -> Result<Reply<ReleaseView>, ClientError> {
        let body = json!({ "percent": percent });
        self.call(Method::POST, &["releases", key, "allocation"], Some(&body), if_match).await
    }

    /// `POST /v1/envs/{env}/releases/{key}/kill`
    pub async fn kill(&self, key: &str, reason: Option<&str>) -> Result<Reply<ReleaseView>, ClientError> {
        let body = reason_body(reason);
        self.call(Method::POST, &["releases", key, "kill"], Some(&body), None).await
    }

    /// `POST /v1/envs/{env}/releases/{key}/unkill`
    pub async fn unkill(&self, key: &str) -> Result<Reply<ReleaseView>, ClientError> {
        let body = json!({});
        self.call(Method::POST, &["releases", key, "unkill"], Some(&body), None).await
    }

    /// `DELETE /v1/envs/{env}/releases/{key}`
    pub async fn delete_release(&self, key: &str, if_match: Option<u64>) -> Result<Value, ClientError> {
        let raw = self.send(Method::DELETE, &["releases", key], None, if_match).await?;
        Ok(raw.body)
    }

    /// `POST /v1/envs/{env}/kill-all`
    pub async fn kill_all(&self, reason: Option<&str>) -> Result<Reply<EnvironmentState>, ClientError> {
        let body = reason_body(reason);
        self.call(Method::POST, &["kill-all"], Some(&body), None).await
    }

    /// `POST /v1/envs/{env}/unkill-all`
    pub async fn unkill_all(&self) -> Result<Reply<EnvironmentState>, ClientError> {
        let body = json!({});
        self.call(Method::POST, &["unkill-all"], Some(&body), None).await
    }

    /// `POST /v1/envs/{env}/releases/{key}/ramp` (and its sub-actions) or
    /// `…/promote`: answers the release.
    pub async fn ramp_action(&self, key: &str, path: &[&str], body: &Value) -> Result<Reply<ReleaseView>, ClientError> {
        let mut segments = vec!["releases", key];
        segments.extend_from_slice(path);
        self.call(Method::POST, &segments, Some(body), None).await
    }

    /// `GET /v1/envs/{env}/releases/{key}/ramp`
    pub async fn ramp_status(&self, key: &str) -> Result<Reply<Value>, ClientError> {
        self.call(Method::GET, &["releases", key, "ramp"], None, None).await
    }

    /// `GET /v1/envs/{env}/reach?revision=N`
    pub async fn reach(&self, revision: u64) -> Result<Reply<Reach>, ClientError> {
        let mut url = self.url(&["reach"])?;
        url.query_pairs_mut().append_pair("revision", &revision.to_string());
        let raw = self.send_to(Method::GET, url, None, None).await?;
        let value = Reach::deserialize(&raw.body).map_err(|e| ClientError::BadResponse {
            url: self.base.to_string(),
            status: raw.status,
            cause: e.to_string(),
        })?;
        Ok(Reply { value, body: raw.body, etag: raw.etag })
    }

    /// `GET /v1/envs/{env}/audit?release=&limit=&before=`
    pub async fn audit(
        &self,
        release: Option<&str>,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Reply<AuditPage>, ClientError> {
        let mut url = self.url(&["audit"])?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &limit.to_string());
            if let Some(release) = release {
                query.append_pair("release", release);
            }
            if let Some(before) = before {
                query.append_pair("before", &before.to_string());
            }
        }
        let raw = self.send_to(Method::GET, url, None, None).await?;
        let value = AuditPage::deserialize(&raw.body).map_err(|e| ClientError::BadResponse {
            url: self.base.to_string(),
            status: raw.status,
            cause: e.to_string(),
        })?;
        Ok(Reply { value, body: raw.body, etag: raw.etag })
    }

    /// Sends a request and decodes a successful body into `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<Reply<T>, ClientError> {
        let raw = self.send(method, path, body, if_match).await?;
        let value = T::deserialize(&raw.body).map_err(|e| ClientError::BadResponse {
            url: self.base.to_string(),
            status: raw.status,
            cause: e.to_string(),
        })?;
        Ok(Reply { value, body: raw.body, etag: raw.etag })
    }

    /// Sends a request; any non-2xx status becomes [`ClientError::Api`].
    async fn send(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<RawReply, ClientError> {
        self.send_to(method, self.url(path)?, body, if_match).await
    }

    /// Sends a request to a full URL; any non-2xx status becomes [`ClientError::Api`].
    async fn send_to(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        if_match: Option<u64>,
    ) -> Result<RawReply, ClientError> {
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(revision) = if_match {
            request = request.header(header::IF_MATCH, format!("\"{revision}\""));
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let etag =
            response.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).and_then(|v| strip_etag(v).parse().ok());
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;

        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::BadResponse {
                url: self.base.to_string(),
                status,
                cause: e.to_string(),
            })?
        };
        Ok(RawReply { status, body, etag })
    }

    /// `{base}/v1/envs/{env}/{path…}`, each segment percent-encoded so a key or an
    /// environment name can never change which resource is addressed.
    fn url(&self, path: &[&str]) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::InvalidUrl { url: self.base.to_string(), reason: "not a base URL".to_owned() })?
            // Keeps a path prefix such as `https://ops.example/cohort/` intact.
            .pop_if_empty()
            .extend(["v1", "envs", &self.env])
            .extend(path);
        Ok(url)
    }

    /// `{base}/v1/envs`.
    fn root_url(&self) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::InvalidUrl { url: self.base.to_string(), reason: "not a base URL".to_owned() })?
            .pop_if_empty()
            .extend(["v1", "envs"]);
        Ok(url)
    }

    /// The address this client talks to.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    fn unreachable(&self, err: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.as_str().trim_end_matches('/').to_owned(),
            cause: transport_cause(err),
        }
    }
}

fn parse_base_url(raw: &str) -> Result<Url, ClientError> {
    let invalid = |reason: String| ClientError::InvalidUrl { url: raw.to_owned(), reason };
    let url = Url::parse(raw.trim()).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("expected an http:// or https:// address".to_owned()));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(invalid("expected an address such as http://127.0.0.1:8080".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("the address must not have a query or fragment".to_owned()));
    }
    Ok(url)
}

/// The kill endpoints take an optional reason; the server wants `{}` rather than
/// `{"reason": null}` when there is none.
fn reason_body(reason: Option<&str>) -> Value {
    match reason {
        Some(reason) => json!({ "reason": reason }),
        None => json!({}),
    }
}

/// reqwest's own message ("error sending request for url …") repeats the URL; the
/// innermost cause ("Connection refused (os error 111)", "dns error: …") is the part an
/// operator can act on.
fn transport_cause(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return format!("no answer within {} s", REQUEST_TIMEOUT.as_secs());
    }
    let mut innermost: &dyn std::error::Error = err;
    while let Some(next) = innermost.source() {
        innermost = next;
    }
    innermost.to_string()
}

/// Reads the documented `{"error": {"code", "message"}}` shape, falling back to the
/// body's first line (or the status reason) for errors produced by something in front
/// of cohort, such as a proxy.
fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let documented = serde_json::from_slice::<Value>(bytes).ok().and_then(|v| {
        let error = v.get("error")?;
        let message = error.get("message")?.as_str()?.to_owned();
        let code = error.get("code").and_then(Value::as_str).map(str::to_owned);
        Some((code, message))
    });
    let (code, message) = documented.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(bytes);
        let first_line = text.lines().map(str::trim).find(|l| !l.is_empty());
        let message = match first_line {
            Some(line) => line.chars().take(MAX_ECHOED_BODY_CHARS).collect(),
            None => status.canonical_reason().unwrap_or("unexpected status").to_owned(),
        };
        (None, message)
    });
    ClientError::Api { status, code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str, env: &str) -> CohortClient {
        CohortClient::new(base, env, None).expect("valid client")
    }

    #[test]
    fn urls_are_built_under_the_environment_with_encoded_segments() {
        let c = client("http://127.0.0.1:8080", "production");
        let url = c.url(&["releases", "checkout/v2 x"]).expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/v1/envs/production/releases/checkout%2Fv2%20x");
    }

    #[test]
    fn a_path_prefix_in_the_base_url_is_kept() {
        let c = client("https://ops.example/cohort/", "staging");
        let url = c.url(&["kill-all"]).expect("url");
        assert_eq!(url.as_str(), "https://ops.example/cohort/v1/envs/staging/kill-all");
    }

    #[test]
    fn non_http_addresses_are_usage_errors() {
        for bad in ["127.0.0.1:8080", "ftp://x", "not a url", "http://x/?a=b"] {
            let err = CohortClient::new(bad, "production", None).expect_err(bad);
            assert_eq!(err.exit_code(), EXIT_USAGE, "{bad}");
        }
    }

    #[test]
    fn a_token_with_a_newline_is_rejected_before_sending() {
        let err = CohortClient::new("http://x", "production", Some("abc\ndef")).expect_err("newline in token");
        assert!(matches!(err, ClientError::InvalidToken));
    }

    #[test]
    fn documented_error_bodies_are_shown_with_code_and_status() {
        let body = br#"{"error": {"code": "revision_mismatch", "message": "release changed"}}"#;
        let err = api_error(StatusCode::PRECONDITION_FAILED, body);
        assert_eq!(err.to_string(), "release changed (revision_mismatch, HTTP 412)");
    }

    #[test]
    fn foreign_error_bodies_fall_back_to_their_first_line_or_the_reason() {
        let err = api_error(StatusCode::BAD_GATEWAY, b"\n  upstream down\n<html>");
        assert_eq!(err.to_string(), "upstream down (HTTP 502)");
        let err = api_error(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(err.to_string(), "Service Unavailable (HTTP 503)");
    }
}
