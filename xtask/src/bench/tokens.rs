//! Tokens for the authentication scenarios, signed with the test keys in
//! `tests/fixtures/keys` (the same the test suite uses; they protect nothing).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::scenarios::TokenKind;
use crate::project::Project;

/// A token of `kind` for the room the handshake scenarios join, valid for an hour.
pub fn mint(project: &Project, kind: TokenKind) -> Result<String, String> {
    let keys = project.join("tests/fixtures/keys");
    let (file, alg) = match kind {
        TokenKind::Hs256 => ("hmac.key", Algorithm::HS256),
        TokenKind::Es256 => ("ec256-private.pem", Algorithm::ES256),
    };
    let bytes =
        std::fs::read(keys.join(file)).map_err(|e| format!("cannot read the test key {file}: {e}"))?;
    let key = match kind {
        TokenKind::Hs256 => EncodingKey::from_secret(bytes.trim_ascii_end()),
        TokenKind::Es256 => EncodingKey::from_ec_pem(&bytes),
    }
    .map_err(|e| format!("test key {file}: {e}"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = json!({"sub": "bench", "exp": now.saturating_add(3600), "rooms": {"sub": ["/handshake"]}});
    jsonwebtoken::encode(&Header::new(alg), &claims, &key).map_err(|e| format!("cannot sign: {e}"))
}
