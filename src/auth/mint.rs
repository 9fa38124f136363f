//! `wsbroker token`: mints an HS256 token for development, signed with an HMAC
//! secret file of the kind `--auth-key` reads, so that a first try can show
//! authentication end to end.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// What the token says.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// The HMAC secret to sign with: a file as `--auth-key` reads it (at least 32
    /// bytes). The token's `kid` is its name without the extension.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The token's `sub`: who holds it (it shows as `user` in the server's logs).
    #[arg(long, value_name = "USER")]
    pub sub: Option<String>,
    /// A room (or a prefix pattern ending in `*`) the holder may join (repeatable).
    #[arg(long = "sub-room", value_name = "ROOM")]
    pub sub_rooms: Vec<String>,
    /// A room (or a prefix pattern ending in `*`) the holder may publish to
    /// (repeatable).
    #[arg(long = "pub-room", value_name = "ROOM")]
    pub pub_rooms: Vec<String>,
    /// How long the token is valid.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// The token's `iss`, for a server run with `--auth-issuer`.
    #[arg(long, value_name = "ISS")]
    pub issuer: Option<String>,
    /// The token's `aud`, for a server run with `--auth-audience`.
    #[arg(long, value_name = "AUD")]
    pub audience: Option<String>,
}

/// Why no token could be made. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("--key {}: cannot read it: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("--key {}: an HMAC secret of at least {} bytes is needed", path.display(), super::keys::MIN_SECRET_LEN)]
    NotASecret { path: PathBuf },
    #[error("cannot sign the token")]
    Sign,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("'{s}': {e}"))?;
    if d.is_zero() || d > Duration::from_secs(366 * 24 * 3600) {
        return Err("must be above zero and at most a year".to_owned());
    }
    Ok(d)
}

/// The token, signed HS256.
pub fn mint(args: &TokenArgs, now: SystemTime) -> Result<String, MintError> {
    let bytes =
        std::fs::read(&args.key).map_err(|source| MintError::Read { path: args.key.clone(), source })?;
    let secret = bytes.trim_ascii_end();
    if secret.len() < super::keys::MIN_SECRET_LEN || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(MintError::NotASecret { path: args.key.clone() });
    }
    let key =
        EncodingKey::from_secret(secret).map_err(|_| MintError::NotASecret { path: args.key.clone() })?;
    let issued = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut claims = json!({
        "iat": issued,
        "exp": issued.saturating_add(args.ttl.as_secs()),
        "rooms": {"sub": args.sub_rooms, "pub": args.pub_rooms},
    });
    for (name, value) in [("sub", &args.sub), ("iss", &args.issuer), ("aud", &args.audience)] {
        if let (Some(value), Some(object)) = (value, claims.as_object_mut()) {
            object.insert(name.to_owned(), json!(value));
        }
    }
    let mut header = Header::new(Algorithm::HS256);
    header.kid = args.key.file_stem().map(|s| s.to_string_lossy().into_owned());
    jsonwebtoken::encode(&header, &claims, &key).map_err(|_| MintError::Sign)
}
