//! The keys tokens are verified with, read from the `--auth-key` files.
//!
//! A file holds either a PEM public key (RSA, EC P-256 or P-384, or Ed25519) or an
//! HMAC secret (any other content, trailing white space removed). What a key may
//! verify comes from the key alone: an RSA key verifies RS* and PS* tokens, an EC key
//! ES256 and ES384, an Ed25519 key EdDSA, a secret HS256, HS384 and HS512. A token's
//! `alg` header only picks among those; an HS256 token can never be checked against
//! an RSA public key used as a secret, and `alg: none` verifies against nothing.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey};

/// The shortest HMAC secret accepted: 256 bits, the strength of HS256's hash.
pub const MIN_SECRET_LEN: usize = 32;

/// The largest key file read (a PEM public key is a few KiB at most).
pub const MAX_KEY_FILE: u64 = 64 << 10;

/// One configured key.
pub struct Key {
    /// Its id, matched against a token's `kid` header: the file's name without its
    /// extension (`keys/2026-11.pem` is `2026-11`).
    pub id: String,
    pub decoding: DecodingKey,
    /// What it may verify.
    pub algorithms: &'static [Algorithm],
    /// What kind of key, for logs.
    pub kind: &'static str,
}

impl std::fmt::Debug for Key {
    // The key material stays out of every log line, secrets above all.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("id", &self.id).field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// The keys in force.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

/// Why the key files could not be loaded. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("--auth-key {}: cannot read it: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("--auth-key {}: larger than {} KiB, not a key", path.display(), MAX_KEY_FILE >> 10)]
    TooLarge { path: PathBuf },
    #[error(
        "--auth-key {}: a PEM file, but not an RSA, EC (P-256, P-384) or Ed25519 public key (private keys and certificates are refused)",
        path.display()
    )]
    NotAPublicKey { path: PathBuf },
    #[error("--auth-key {}: an HMAC secret must be at least {MIN_SECRET_LEN} bytes", path.display())]
    ShortSecret { path: PathBuf },
    #[error("--auth-key {}: another key file has the same id '{id}' (the file name without its extension)", path.display())]
    DuplicateId { path: PathBuf, id: String },
}

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
const ED: &[Algorithm] = &[Algorithm::EdDSA];

/// Reads every key file; the first one that cannot be used is the error.
pub fn load(paths: &[PathBuf]) -> Result<KeySet, KeyError> {
    let mut keys: Vec<Key> = Vec::with_capacity(paths.len());
    for path in paths {
        let key = load_one(path)?;
        if keys.iter().any(|k| k.id == key.id) {
            return Err(KeyError::DuplicateId { path: path.clone(), id: key.id });
        }
        keys.push(key);
    }
    Ok(KeySet { keys })
}

fn load_one(path: &Path) -> Result<Key, KeyError> {
    let read = |source| KeyError::Read { path: path.to_path_buf(), source };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > MAX_KEY_FILE {
        return Err(KeyError::TooLarge { path: path.to_path_buf() });
    }
    let bytes = std::fs::read(path).map_err(read)?;
    let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        // Public keys only: jsonwebtoken would also take a private key or a
        // certificate here, which can only be a mistake in a verifier's key file.
        let labelled = |label: &[u8]| bytes.windows(label.len()).any(|w| w == label);
        if !(labelled(b"-----BEGIN PUBLIC KEY-----") || labelled(b"-----BEGIN RSA PUBLIC KEY-----"))
            || labelled(b"PRIVATE KEY-----")
            || labelled(b"-----BEGIN CERTIFICATE-----")
        {
            return Err(KeyError::NotAPublicKey { path: path.to_path_buf() });
        }
        let public = [
            (DecodingKey::from_rsa_pem(&bytes).ok(), RSA, "RSA public key"),
            (DecodingKey::from_ec_pem(&bytes).ok(), EC, "EC public key"),
            (DecodingKey::from_ed_pem(&bytes).ok(), ED, "Ed25519 public key"),
        ];
        let found = public.into_iter().find_map(|(key, algorithms, kind)| Some((key?, algorithms, kind)));
        return match found {
            Some((decoding, algorithms, kind)) => Ok(Key { id, decoding, algorithms, kind }),
            None => Err(KeyError::NotAPublicKey { path: path.to_path_buf() }),
        };
    }
    let secret = bytes.trim_ascii_end();
    if secret.len() < MIN_SECRET_LEN {
        return Err(KeyError::ShortSecret { path: path.to_path_buf() });
    }
    // Refused only when empty, which the length check above already excludes.
    let decoding =
        DecodingKey::from_secret(secret).map_err(|_| KeyError::ShortSecret { path: path.to_path_buf() })?;
    Ok(Key { id, decoding, algorithms: HMAC, kind: "HMAC secret" })
}
