//! API keys: configured as SHA-256 digests (the keys themselves never sit in a config file or
//! in memory), presented as `Authorization: Bearer <key>` (or the raw key, as Piston's
//! clients send it). Keys are long random tokens, so a
//! plain digest is enough: there is no password to guess.

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::config::ApiKeyConfig;

/// The configured keys; none configured means no key is needed.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<Key>,
}

#[derive(Debug, Clone)]
struct Key {
    name: String,
    digest: [u8; 32],
}

/// What a request's credentials are worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// No keys are configured.
    NotRequired,
    /// A valid key: its name.
    Valid(String),
    /// Keys are configured and the request has none, or a wrong one.
    Invalid,
}

impl ApiKeys {
    /// `keys` are validated by the config (hex SHA-256 digests, unique names).
    pub fn new(keys: &[ApiKeyConfig]) -> ApiKeys {
        ApiKeys {
            keys: keys
                .iter()
                .map(|k| Key {
                    name: k.name.clone(),
                    digest: parse_digest(&k.sha256).expect("validated in config"),
                })
                .collect(),
        }
    }

    pub fn required(&self) -> bool {
        !self.keys.is_empty()
    }

    pub fn check(&self, headers: &HeaderMap) -> KeyCheck {
        if !self.required() {
            return KeyCheck::NotRequired;
        }
        let Some(token) = bearer_token(headers) else {
            return KeyCheck::Invalid;
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every configured digest is compared in full, so the time taken says nothing about
        // how close a guess came.
        let mut found = None;
        for key in &self.keys {
            if constant_time_eq(&key.digest, &digest) {
                found = Some(key.name.clone());
            }
        }
        found.map_or(KeyCheck::Invalid, KeyCheck::Valid)
    }
}

/// `Bearer <key>`, or the raw key alone (Piston's clients send `Authorization: <key>`), or
/// Judge0's `X-Auth-Token: <key>`.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        let token = headers.get("x-auth-token")?.to_str().ok()?.trim();
        return (!token.is_empty()).then_some(token);
    };
    let value = value.to_str().ok()?.trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) => scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())?,
        None => value,
    };
    (!token.is_empty()).then_some(token)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A SHA-256 digest written as 64 hex digits.
pub fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        // sha256("secret-one")
        let digest = format!("{:x}", Sha256::digest(b"secret-one"));
        ApiKeys::new(&[ApiKeyConfig {
            name: "ci".into(),
            sha256: digest,
            limits: Default::default(),
        }])
    }

    fn with_auth(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_valid_key_names_itself_and_anything_else_is_invalid() {
        let keys = keys();
        assert_eq!(
            keys.check(&with_auth("Bearer secret-one")),
            KeyCheck::Valid("ci".into())
        );
        assert_eq!(
            keys.check(&with_auth("bearer secret-one")),
            KeyCheck::Valid("ci".into())
        );
        assert_eq!(
            keys.check(&with_auth("Bearer secret-two")),
            KeyCheck::Invalid
        );
        assert_eq!(
            keys.check(&with_auth("Basic secret-one")),
            KeyCheck::Invalid
        );
        assert_eq!(keys.check(&with_auth("Bearer ")), KeyCheck::Invalid);
        assert_eq!(keys.check(&HeaderMap::new()), KeyCheck::Invalid);
        // The raw key, as Piston's clients send it.
        assert_eq!(
            keys.check(&with_auth("secret-one")),
            KeyCheck::Valid("ci".into())
        );
        assert_eq!(keys.check(&with_auth("secret-two")), KeyCheck::Invalid);
        // Judge0's header.
        let mut judge0 = HeaderMap::new();
        judge0.insert("x-auth-token", "secret-one".parse().unwrap());
        assert_eq!(keys.check(&judge0), KeyCheck::Valid("ci".into()));
    }

    #[test]
    fn without_keys_nothing_is_required() {
        assert_eq!(
            ApiKeys::default().check(&HeaderMap::new()),
            KeyCheck::NotRequired
        );
    }

    #[test]
    fn digests_are_64_hex_digits() {
        assert!(parse_digest(&"ab".repeat(32)).is_some());
        assert!(parse_digest(&"ab".repeat(31)).is_none());
        assert!(parse_digest(&"zz".repeat(32)).is_none());
    }
}
