//! Tokens for the authentication tests, signed with the test keys in
//! `tests/fixtures/keys`.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A file of `tests/fixtures/keys`.
pub fn key(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys").join(name)
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// Claims for `sub`, valid `ttl` seconds, joining `sub_rooms` and publishing to
/// `pub_rooms`.
pub fn claims(sub: &str, ttl: i64, sub_rooms: &[&str], pub_rooms: &[&str]) -> Value {
    json!({"sub": sub, "exp": now() + ttl, "rooms": {"sub": sub_rooms, "pub": pub_rooms}})
}

/// `claims` signed with `alg` by the private half of the test key `key_file` (or the
/// secret in it), with `kid` when given.
pub fn sign(alg: Algorithm, key_file: &str, claims: &Value, kid: Option<&str>) -> String {
    let bytes = std::fs::read(key(key_file)).unwrap();
    let encoding = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(bytes.trim_ascii_end()).unwrap()
        }
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&bytes).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&bytes).unwrap(),
        _ => EncodingKey::from_rsa_pem(&bytes).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

/// An HS256 token from the test secret `hmac.key`.
pub fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, "hmac.key", claims, None)
}

/// base64url without padding, for hand-made hostile tokens (a test's own, so that a
/// token can be malformed in ways a JOSE library will not produce).
pub fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}
