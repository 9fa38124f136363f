//! Unit tests of token verification, with the test keys in `tests/fixtures/keys`.

#![expect(clippy::arithmetic_side_effects, reason = "test code: times and a test's own base64")]

use std::path::PathBuf;

use jsonwebtoken::{EncodingKey, Header, encode};

use serde_json::{Value, json};

use super::*;

// The integration tests' token helpers, shared rather than written twice.
#[path = "../../tests/common/tokens.rs"]
#[allow(dead_code, reason = "the integration tests use the rest")]
mod tokens;

use tokens::{base64_url, key as fixture, sign as mint};

fn verifier(files: &[&str]) -> Verifier {
    let paths: Vec<PathBuf> = files.iter().map(|f| fixture(f)).collect();
    let (_tx, rx) = watch::channel(Arc::new(keys::load(&paths).unwrap()));
    Verifier::new(rx, None, None, Duration::from_secs(30))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims() -> Value {
    json!({"sub": "alice", "exp": now() + 600, "rooms": {"sub": ["/lobby", "/game/*"], "pub": ["/lobby"]}})
}

#[test]
fn every_kind_of_key_verifies_its_own_algorithms() {
    let v = verifier(&["hmac.key", "rsa.pem", "ec256.pem", "ec384.pem", "ed25519.pem"]);
    for (alg, key) in [
        (Algorithm::HS256, "hmac.key"),
        (Algorithm::HS384, "hmac.key"),
        (Algorithm::HS512, "hmac.key"),
        (Algorithm::RS256, "rsa-private.pem"),
        (Algorithm::RS512, "rsa-private.pem"),
        (Algorithm::PS256, "rsa-private.pem"),
        (Algorithm::ES256, "ec256-private.pem"),
        (Algorithm::ES384, "ec384-private.pem"),
        (Algorithm::EdDSA, "ed25519-private.pem"),
    ] {
        let grant = v.verify(&mint(alg, key, &claims(), None), SystemTime::now());
        let grant = grant.unwrap_or_else(|e| panic!("{alg:?} with {key}: {e}"));
        assert_eq!(grant.user.as_deref(), Some("alice"));
        assert!(grant.may_join("/lobby") && grant.may_publish("/lobby"));
    }
}

#[test]
fn the_algorithm_comes_from_the_key_never_from_the_header() {
    let rsa_only = verifier(&["rsa.pem"]);
    // The classic confusion: an HS256 token whose "secret" is the RSA public key.
    let public_pem = std::fs::read(fixture("rsa.pem")).unwrap();
    let forged =
        encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(&public_pem).unwrap())
            .unwrap();
    assert_eq!(rsa_only.verify(&forged, SystemTime::now()), Err(Denied::BadSignature));
    // `alg: none`, with or without a signature part.
    let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
    let body = base64_url(claims().to_string().as_bytes());
    for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
        assert!(rsa_only.verify(&token, SystemTime::now()).is_err(), "alg none must not verify: {token}");
    }
    // An EC key does not verify an RSA-signed token, nor an ES256 key an ES384 one.
    let ec = verifier(&["ec256.pem"]);
    assert!(
        ec.verify(&mint(Algorithm::RS256, "rsa-private.pem", &claims(), None), SystemTime::now()).is_err()
    );
    assert!(
        ec.verify(&mint(Algorithm::ES384, "ec384-private.pem", &claims(), None), SystemTime::now()).is_err()
    );
}

#[test]
fn a_kid_selects_its_key_and_without_one_any_key_may_verify() {
    let v = verifier(&["hmac.key", "ec256.pem"]);
    let ok = |t: &str| v.verify(t, SystemTime::now()).is_ok();
    assert!(ok(&mint(Algorithm::ES256, "ec256-private.pem", &claims(), Some("ec256"))));
    assert!(ok(&mint(Algorithm::HS256, "hmac.key", &claims(), Some("hmac"))));
    assert!(ok(&mint(Algorithm::HS256, "hmac.key", &claims(), None)));
    let wrong_kid = mint(Algorithm::HS256, "hmac.key", &claims(), Some("ec256"));
    assert_eq!(v.verify(&wrong_kid, SystemTime::now()), Err(Denied::BadSignature));
    let unknown = mint(Algorithm::HS256, "hmac.key", &claims(), Some("2019"));
    assert_eq!(v.verify(&unknown, SystemTime::now()), Err(Denied::UnknownKey));
}

#[test]
fn time_claims_are_checked_with_the_leeway() {
    let v = verifier(&["hmac.key"]);
    let at = |claims: Value| v.verify(&mint(Algorithm::HS256, "hmac.key", &claims, None), SystemTime::now());
    let n = now();
    assert_eq!(at(json!({"sub": "x"})), Err(Denied::NoExpiry));
    assert_eq!(at(json!({"exp": n - 60})), Err(Denied::Expired));
    assert!(at(json!({"exp": n - 10})).is_ok(), "within the 30 s leeway");
    assert_eq!(at(json!({"exp": -5})), Err(Denied::Expired));
    assert!(at(json!({"exp": 1e300})).is_ok(), "far future");
    assert_eq!(at(json!({"exp": "tomorrow"})), Err(Denied::Malformed));
    assert_eq!(at(json!({"exp": n + 600, "nbf": n + 120})), Err(Denied::NotYetValid));
    assert!(at(json!({"exp": n + 600, "nbf": n + 10})).is_ok());
    assert_eq!(at(json!({"exp": n + 600, "iat": n + 120})), Err(Denied::IssuedInFuture));
    let grant = at(json!({"exp": n + 600})).unwrap();
    let left = grant.remaining(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(620) && left <= Duration::from_secs(630), "exp + leeway: {left:?}");
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let (_tx, rx) = watch::channel(Arc::new(keys::load(&[fixture("hmac.key")]).unwrap()));
    let v = Verifier::new(rx, Some("https://auth.example".into()), Some("wsbroker".into()), Duration::ZERO);
    let n = now();
    let at = |claims: Value| v.verify(&mint(Algorithm::HS256, "hmac.key", &claims, None), SystemTime::now());
    assert!(at(json!({"exp": n + 60, "iss": "https://auth.example", "aud": "wsbroker"})).is_ok());
    assert_eq!(
        at(json!({"exp": n + 60, "iss": "https://evil.example", "aud": "wsbroker"})),
        Err(Denied::Issuer)
    );
    assert_eq!(at(json!({"exp": n + 60, "aud": "wsbroker"})), Err(Denied::Issuer));
    assert_eq!(
        at(json!({"exp": n + 60, "iss": "https://auth.example", "aud": "other"})),
        Err(Denied::Audience)
    );
}

#[test]
fn hostile_tokens_are_refused_without_panicking() {
    let v = verifier(&["hmac.key"]);
    let check = |t: &str| v.verify(t, SystemTime::now());
    assert_eq!(check(""), Err(Denied::Missing));
    assert_eq!(check(&"a".repeat(1 << 20)), Err(Denied::TooLarge));
    assert_eq!(check("not a token"), Err(Denied::Malformed));
    assert_eq!(check("!!!.@@@.###"), Err(Denied::Malformed));
    assert_eq!(check("a.b"), Err(Denied::Malformed));
    // Claims nested far deeper than any JSON parser should follow.
    let mut nested = String::new();
    for _ in 0..10_000 {
        nested.push_str("{\"a\":");
    }
    nested.push('1');
    for _ in 0..10_000 {
        nested.push('}');
    }
    let deep = format!("{}.{}.sig", base64_url(br#"{"alg":"HS256"}"#), base64_url(nested.as_bytes()));
    assert!(check(&deep).is_err());
    let deep_signed = mint(
        Algorithm::HS256,
        "hmac.key",
        &serde_json::from_str::<Value>(&format!(
            "{{\"exp\":{},\"x\":{}}}",
            now() + 60,
            "[".repeat(100) + &"]".repeat(100)
        ))
        .unwrap(),
        None,
    );
    assert!(check(&deep_signed).is_ok(), "100 levels is within serde_json's limit and ignored");
}

#[test]
fn room_patterns_cover_exact_names_and_prefixes_only() {
    let v = verifier(&["hmac.key"]);
    let rooms = json!({"exp": now() + 60, "rooms": {"sub": ["/lobby", "/game/*", "/a*b"], "pub": ["*"]}});
    let grant = v.verify(&mint(Algorithm::HS256, "hmac.key", &rooms, None), SystemTime::now()).unwrap();
    for (room, covered) in [
        ("/lobby", true),
        ("/lobby/x", false),
        ("/lobb", false),
        ("/game/42", true),
        ("/game/a/b", true),
        ("/game/", true),
        ("/game", false),
        ("/game/../lobby", true),
        ("/a%2Fb", false),
        ("/a*b", true),
        ("/axb", false),
    ] {
        assert_eq!(grant.may_join(room), covered, "{room}");
    }
    assert!(grant.may_publish("/anything"), "`*` covers every room");
    let none =
        v.verify(&mint(Algorithm::HS256, "hmac.key", &json!({"exp": now() + 60}), None), SystemTime::now());
    assert!(!none.unwrap().may_join("/lobby"), "no rooms claim, no rooms");
}

#[test]
fn the_token_is_taken_from_the_header_first_then_the_query() {
    assert_eq!(token_of(Some(b"Bearer abc.def.ghi"), Some("token=zzz")), Some("abc.def.ghi"));
    assert_eq!(token_of(Some(b"bearer  abc "), None), Some("abc"));
    assert_eq!(token_of(Some(b"Basic dXNlcg=="), Some("a=1&token=q.r.s&b=2")), Some("q.r.s"));
    assert_eq!(token_of(None, Some("tokens=x")), None);
    assert_eq!(token_of(None, None), None);
}

#[test]
fn key_files_that_are_not_public_keys_or_strong_secrets_are_refused() {
    for (file, wanted) in [("rsa-private.pem", "public key"), ("ec256-private.pem", "public key")] {
        let err = keys::load(&[fixture(file)]).unwrap_err().to_string();
        assert!(err.contains(wanted) && err.contains(file), "{file}: {err}");
    }
    let dir = std::env::temp_dir().join(format!("wsbroker-keys-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("other")).unwrap();
    std::fs::write(dir.join("short.key"), "secret\n").unwrap();
    assert!(keys::load(&[dir.join("short.key")]).unwrap_err().to_string().contains("at least 32 bytes"));
    std::fs::copy(fixture("hmac.key"), dir.join("other/hmac.key")).unwrap();
    let twice = keys::load(&[fixture("hmac.key"), dir.join("other/hmac.key")]).unwrap_err().to_string();
    assert!(twice.contains("same id 'hmac'"), "{twice}");
    assert!(keys::load(&[dir.join("missing.pem")]).unwrap_err().to_string().contains("cannot read"));
    let secret = std::fs::read_to_string(fixture("hmac.key")).unwrap();
    let shown = format!("{:?}", keys::load(&[fixture("hmac.key")]).unwrap());
    assert!(!shown.contains(secret.trim()), "a key's Debug shows no key material");
    std::fs::remove_dir_all(dir).unwrap();
}
