//! Stream tickets: what the `eventStreams` URL of an OFREP bulk answer carries instead of
//! the caller's token. OFREP providers open that URL with an `EventSource`, which cannot
//! send headers, so whatever authorizes the stream must be in the URL — and a URL ends up
//! in proxy logs, browser history and crash reports. A ticket is worth far less than a
//! token there: it lets one open the change notifications of one environment (nothing
//! else, not even an evaluation), names its holder (`sub`), and expires after
//! `ofrep.ticket_ttl_secs`.
//!
//! A ticket is a JWT signed with HS256 under a key derived from the server's HS256 secret
//! (HMAC-SHA256 of the secret over [`KEY_LABEL`]). Every instance sharing the secret
//! verifies every instance's tickets (behind a load balancer the reconnect lands anywhere),
//! and because the key differs from the secret itself, a ticket never verifies as a bearer
//! token and a bearer token never verifies as a ticket. The audience claim ([`AUDIENCE`])
//! says the same to anyone who decodes one.
//!
//! A ticket authorizes *opening* the stream; an open stream is not cut when its ticket
//! expires. An `EventSource` that reconnects with an expired ticket gets a 401 JSON answer
//! and stops; the provider then polls the bulk endpoint, whose answer carries a fresh URL.

use crate::config::Secret;
use crate::store::EnvName;
use hmac::{Hmac, Mac};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;

/// The HMAC message that derives the ticket key from the HS256 secret.
pub const KEY_LABEL: &[u8] = b"cohort stream ticket";

/// The `aud` of every ticket.
pub const AUDIENCE: &str = "cohort:ofrep-events";

/// What a verified ticket allows: following `env`'s changes, as `sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The one environment it opens.
    pub env: EnvName,
    /// Who it was issued to (the bearer token's `sub`).
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// A ticket as issued: its text (for the URL) and its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The signed ticket, URL-safe as it is (base64url and dots).
    pub text: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a ticket is refused (401), or cannot be issued (500).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Past its `exp`.
    #[error(
        "the stream ticket has expired: evaluate the flags again (POST /ofrep/v1/evaluate/flags) for a fresh eventStreams URL"
    )]
    Expired,
    /// Not a ticket of this configuration: forged, damaged, a bearer token, or signed with
    /// another secret.
    #[error(
        "the stream ticket is not valid ({0}); open the eventStreams URL of a bulk evaluation (POST /ofrep/v1/evaluate/flags)"
    )]
    Invalid(String),
    /// Signing failed (a bug).
    #[error("cannot sign a stream ticket: {0}")]
    Sign(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    aud: String,
    env: String,
    sub: String,
    exp: u64,
}

/// Issues and verifies tickets.
pub struct Tickets {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
    leeway_secs: u64,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets").field("ttl_secs", &self.ttl_secs).finish_non_exhaustive()
    }
}

/// The ticket key: HMAC-SHA256(secret, [`KEY_LABEL`]).
fn derive_key(secret: &Secret) -> [u8; 32] {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(KEY_LABEL);
    mac.finalize().into_bytes().into()
}

impl Tickets {
    /// Tickets valid for `ttl` (at least a second), under a key derived from `secret`;
    /// `leeway_secs` of clock skew between instances is tolerated on `exp`.
    pub fn new(secret: &Secret, ttl: Duration, leeway_secs: u64) -> Self {
        let key = derive_key(secret);
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the caller's clock (see `verify`), so tests can pass
        // any time.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        validation.set_audience(&[AUDIENCE]);
        Tickets {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            validation,
            ttl_secs: ttl.as_secs().max(1),
            leeway_secs,
        }
    }

    /// The configured lifetime, in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// Issues a ticket for `env` to `sub` at `now` (seconds since the epoch), expiring
    /// within the configured lifetime and never after `not_after` (the bearer token's own
    /// `exp`: a ticket does not outlive the token it was issued for).
    ///
    /// The expiry is rounded down to a fifth of the lifetime, so one holder asking again
    /// within that time gets the same URL and its provider need not reconnect.
    pub fn issue(&self, env: &EnvName, sub: &str, not_after: u64, now: u64) -> Result<Issued, TicketError> {
        let granule = (self.ttl_secs / 5).max(1);
        let exp = ((now + self.ttl_secs) / granule * granule).max(now + 1).min(not_after);
        let claims = Claims { aud: AUDIENCE.to_owned(), env: env.as_str().to_owned(), sub: sub.to_owned(), exp };
        let text = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TicketError::Sign(e.to_string()))?;
        Ok(Issued { text, exp })
    }

    /// Verifies `text` at `now` (seconds since the epoch).
    pub fn verify(&self, text: &str, now: u64) -> Result<Ticket, TicketError> {
        let data = decode::<Claims>(text, &self.decoding, &self.validation).map_err(|e| {
            TicketError::Invalid(match e.kind() {
                ErrorKind::InvalidSignature => "its signature does not verify".to_owned(),
                ErrorKind::InvalidAudience | ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
                    "it is not a stream ticket".to_owned()
                }
                ErrorKind::InvalidAlgorithm => "it is not signed with HS256".to_owned(),
                _ => "it is not a JWT".to_owned(),
            })
        })?;
        let claims = data.claims;
        if claims.exp + self.leeway_secs <= now {
            return Err(TicketError::Expired);
        }
        let env = EnvName::parse(&claims.env)
            .map_err(|_| TicketError::Invalid("its `env` is not an environment name".to_owned()))?;
        Ok(Ticket { env, sub: claims.sub, exp: claims.exp })
    }

    /// Whether a holder of a ticket expiring at `exp` may keep its URL at `now`: it has at
    /// least half the lifetime left. A bulk answer is only "not modified" (304) for such a
    /// holder, so a provider that polls keeps a URL it can reconnect with.
    pub fn still_fresh(&self, exp: u64, now: u64) -> bool {
        exp >= now + self.ttl_secs.div_ceil(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn tickets(secret: &str) -> Tickets {
        Tickets::new(&Secret::new(secret), Duration::from_secs(300), 0)
    }

    fn env(name: &str) -> EnvName {
        EnvName::parse(name).expect("env")
    }

    #[test]
    fn a_ticket_names_its_environment_and_holder_until_it_expires() {
        let tickets = tickets("s3cret-s3cret-s3cret-s3cret-s3cret");
        let issued = tickets.issue(&env("production"), "web-app", u64::MAX, NOW).expect("issued");
        assert!(issued.exp > NOW + 240 && issued.exp <= NOW + 300, "{}", issued.exp - NOW);
        let ticket = tickets.verify(&issued.text, NOW + 10).expect("valid");
        assert_eq!(ticket, Ticket { env: env("production"), sub: "web-app".into(), exp: issued.exp });
        assert_eq!(tickets.verify(&issued.text, issued.exp), Err(TicketError::Expired));
        assert!(issued.text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
    }

    #[test]
    fn a_ticket_never_outlives_its_token() {
        let tickets = tickets("s3cret-s3cret-s3cret-s3cret-s3cret");
        let issued = tickets.issue(&env("production"), "web-app", NOW + 30, NOW).expect("issued");
        assert_eq!(issued.exp, NOW + 30);
    }

    #[test]
    fn one_holder_gets_the_same_ticket_within_a_fifth_of_the_lifetime() {
        let tickets = tickets("s3cret-s3cret-s3cret-s3cret-s3cret");
        let start = NOW / 60 * 60;
        let first = tickets.issue(&env("production"), "web-app", u64::MAX, start).expect("issued");
        let again = tickets.issue(&env("production"), "web-app", u64::MAX, start + 59).expect("issued");
        assert_eq!(first, again);
        let later = tickets.issue(&env("production"), "web-app", u64::MAX, start + 60).expect("issued");
        assert_ne!(first.text, later.text);
    }

    #[test]
    fn another_secret_a_bearer_token_and_garbage_are_not_tickets() {
        let ours = tickets("s3cret-s3cret-s3cret-s3cret-s3cret");
        let theirs = tickets("other-other-other-other-other-other");
        let issued = theirs.issue(&env("production"), "web-app", u64::MAX, NOW).expect("issued");
        assert!(matches!(ours.verify(&issued.text, NOW), Err(TicketError::Invalid(_))));
        // A bearer token signed with the secret itself (not the derived key).
        let secret = Secret::new("s3cret-s3cret-s3cret-s3cret-s3cret");
        let bearer =
            crate::auth::mint::mint(&secret, "web-app", "production", "eval", Duration::from_secs(60)).expect("minted");
        assert!(matches!(ours.verify(&bearer, NOW), Err(TicketError::Invalid(_))));
        assert!(matches!(ours.verify("garbage", NOW), Err(TicketError::Invalid(_))));
    }

    #[test]
    fn a_holder_keeps_its_url_while_half_the_lifetime_is_left() {
        let tickets = tickets("s3cret-s3cret-s3cret-s3cret-s3cret");
        let issued = tickets.issue(&env("production"), "web-app", u64::MAX, NOW).expect("issued");
        assert!(tickets.still_fresh(issued.exp, NOW));
        assert!(tickets.still_fresh(issued.exp, issued.exp - 150));
        assert!(!tickets.still_fresh(issued.exp, issued.exp - 149));
    }
}
