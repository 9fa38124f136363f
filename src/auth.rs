//! Token authentication (`--auth-key`): who may join a room, and who may publish to it.
//!
//! Off by default. When on, every WebSocket handshake (and every call of the publish
//! API) must carry a JWT, in `Authorization: Bearer <token>` or in the `token` query
//! parameter (browsers cannot set headers on a WebSocket). It is checked at the door,
//! before the upgrade, and never in the broker: its signature against the configured
//! keys ([`keys`]), `exp` (required), `nbf` and `iat` with `--auth-leeway`, `iss` and
//! `aud` when configured. Its `rooms` claim says what its holder may do:
//!
//! ```json
//! {"sub": "alice", "exp": 1764460800, "rooms": {"sub": ["/lobby", "/game/*"], "pub": ["/lobby"]}}
//! ```
//!
//! Each entry is a room name exactly as the server forms it (the request path, not
//! decoded and not normalised) or a prefix pattern ending in `*`: `/lobby` covers
//! `/lobby` only; `/game/*` covers every room whose name starts with `/game/`
//! (`/game/42`, `/game/a/b`, and `/game/` itself, but not `/game`); `*` covers every
//! room. A `*` anywhere else is an ordinary character. Since names are not
//! normalised, `/game/*` covers `/game/../lobby`, which is a room of that odd name,
//! not `/lobby`; and `/a%2Fb` is its own room, not `/a/b`.
//!
//! The token itself never reaches a log line, a metric label, a Close reason or an
//! error message: refusals are logged by [`Denied`]'s name alone.

pub mod keys;
pub mod mint;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use tokio::sync::watch;

use self::keys::{Key, KeySet};

/// The longest token accepted. A token with a long list of rooms is a few KiB; a
/// longer one is refused before its signature is checked.
pub const MAX_TOKEN_LEN: usize = 8 << 10;

/// What checks a token: the keys in force (replaced on reload) and the rules.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: watch::Receiver<Arc<KeySet>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
}

/// What a verified token allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// Its `sub` claim: the user, for logs.
    pub user: Option<String>,
    /// When it stops being valid: `exp` plus the leeway, in seconds since the Unix
    /// epoch.
    pub valid_until: f64,
    subscribe: Vec<Pattern>,
    publish: Vec<Pattern>,
}

/// Why a token was refused. The name is all that is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("no token")]
    Missing,
    #[error("token too large")]
    TooLarge,
    #[error("malformed token")]
    Malformed,
    #[error("no key with the token's key id")]
    UnknownKey,
    #[error("bad signature, or an algorithm the key does not allow")]
    BadSignature,
    #[error("no exp claim")]
    NoExpiry,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
}

/// A room, or a prefix of rooms, that a token covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(entry: String) -> Self {
        match entry.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.to_owned()),
            None => Self::Exact(entry),
        }
    }

    fn covers(&self, room: &str) -> bool {
        match self {
            Self::Exact(name) => room == name,
            Self::Prefix(prefix) => room.starts_with(prefix.as_str()),
        }
    }
}

/// The claims read from a token (any others are ignored).
#[derive(Debug, Deserialize)]
struct Claims {
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    sub: Option<String>,
    #[serde(default)]
    rooms: RoomsClaim,
}

#[derive(Debug, Default, Deserialize)]
struct RoomsClaim {
    #[serde(default)]
    sub: Vec<String>,
    #[serde(default, rename = "pub")]
    publish: Vec<String>,
}

impl Grant {
    /// The token lets its holder join `room` and receive its messages.
    pub fn may_join(&self, room: &str) -> bool {
        self.subscribe.iter().any(|p| p.covers(room))
    }

    /// The token lets its holder publish to `room`.
    pub fn may_publish(&self, room: &str) -> bool {
        self.publish.iter().any(|p| p.covers(room))
    }

    /// How long from `now` until the token stops being valid (zero if it already
    /// has); `None` if that is beyond what a `Duration` holds (never, in practice).
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        Duration::try_from_secs_f64((self.valid_until - unix_seconds(now)).max(0.0)).ok()
    }
}

impl Verifier {
    pub fn new(
        keys: watch::Receiver<Arc<KeySet>>,
        issuer: Option<String>,
        audience: Option<String>,
        leeway: Duration,
    ) -> Self {
        Self { keys, issuer, audience, leeway }
    }

    /// Checks `token` at time `now`: what it allows, or why it is refused.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Grant, Denied> {
        if token.is_empty() {
            return Err(Denied::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Denied::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Denied::Malformed)?;
        let keys = Arc::clone(&self.keys.borrow());
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) => keys.keys.iter().filter(|k| &k.id == kid).collect(),
            None => keys.keys.iter().filter(|k| k.algorithms.contains(&header.alg)).collect(),
        };
        if candidates.is_empty() {
            return Err(if header.kid.is_some() { Denied::UnknownKey } else { Denied::BadSignature });
        }
        let mut refused = Denied::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation(key.algorithms)) {
                Ok(data) => return self.grant(data.claims, now),
                Err(e) => refused = denied(e.kind()),
            }
        }
        Err(refused)
    }

    /// jsonwebtoken's checks: the signature with the key's own algorithms, and `iss`
    /// and `aud` when configured. The times are checked in [`Self::grant`] instead,
    /// with arithmetic that cannot overflow and a clock that cannot panic.
    fn validation(&self, algorithms: &[Algorithm]) -> Validation {
        let mut validation = Validation::new(algorithms.first().copied().unwrap_or(Algorithm::HS256));
        validation.algorithms = algorithms.to_vec();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.validate_aud = self.audience.is_some();
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        validation
    }

    /// The time claims against `now` with the leeway, then the grant.
    fn grant(&self, claims: Claims, now: SystemTime) -> Result<Grant, Denied> {
        let (now, leeway) = (unix_seconds(now), self.leeway.as_secs_f64());
        let exp = claims.exp.ok_or(Denied::NoExpiry)?;
        if exp + leeway < now {
            return Err(Denied::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf - leeway > now) {
            return Err(Denied::NotYetValid);
        }
        if claims.iat.is_some_and(|iat| iat - leeway > now) {
            return Err(Denied::IssuedInFuture);
        }
        Ok(Grant {
            user: claims.sub,
            valid_until: exp + leeway,
            subscribe: claims.rooms.sub.into_iter().map(Pattern::parse).collect(),
            publish: claims.rooms.publish.into_iter().map(Pattern::parse).collect(),
        })
    }
}

/// Seconds since the Unix epoch, 0 for a clock set before it (never a panic).
fn unix_seconds(now: SystemTime) -> f64 {
    now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// What jsonwebtoken's refusal means for the client.
fn denied(kind: &jsonwebtoken::errors::ErrorKind) -> Denied {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::InvalidIssuer => Denied::Issuer,
        ErrorKind::InvalidAudience => Denied::Audience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Denied::Issuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Denied::Audience,
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
            Denied::BadSignature
        }
        _ => Denied::Malformed,
    }
}

/// The token a handshake or API request carries: `Authorization: Bearer <token>`
/// first, else the `token` query parameter (taken as it is: a JWT needs no
/// percent-encoding).
pub fn token_of<'a>(authorization: Option<&'a [u8]>, query: Option<&'a str>) -> Option<&'a str> {
    if let Some(value) = authorization.and_then(|v| std::str::from_utf8(v).ok()) {
        let value = value.trim();
        if let Some((scheme, token)) = value.split_once(' ')
            && scheme.eq_ignore_ascii_case("bearer")
        {
            return Some(token.trim());
        }
    }
    query?.split('&').find_map(|pair| pair.strip_prefix("token="))
}

#[cfg(test)]
mod tests;
