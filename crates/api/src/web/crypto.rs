//! The dashboard's secrets: random ids, sealing, CSRF tokens, PKCE.
//!
//! One configured secret; each use gets its own key derived from it
//! (HMAC-SHA256 of the secret over a label), so a key leaked from one use
//! opens nothing else.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{self, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

pub(crate) const MIN_SECRET_LEN: usize = 32;

pub(crate) struct Keys {
    seal: LessSafeKey,
    csrf: hmac::Key,
    rng: SystemRandom,
}

fn derive(secret: &[u8], label: &str) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), label.as_bytes())
}

impl Keys {
    pub(crate) fn derive(secret: &[u8]) -> Keys {
        let seal = derive(secret, "gatehouse/dashboard/seal/v1");
        let csrf = derive(secret, "gatehouse/dashboard/csrf/v1");
        let seal = match UnboundKey::new(&CHACHA20_POLY1305, seal.as_ref()) {
            Ok(key) => LessSafeKey::new(key),
            // A 32-byte HMAC-SHA256 tag is exactly a ChaCha20 key.
            Err(_) => unreachable!("an HMAC-SHA256 tag is 32 bytes"),
        };
        Keys {
            seal,
            csrf: hmac::Key::new(hmac::HMAC_SHA256, csrf.as_ref()),
            rng: SystemRandom::new(),
        }
    }

    /// 256 random bits, base64url: a session id, a `state`, a PKCE verifier.
    pub(crate) fn random_token(&self) -> Result<String, CryptoError> {
        let mut bytes = [0u8; 32];
        self.rng.fill(&mut bytes).map_err(|_| CryptoError)?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Encrypts and authenticates `plain`, bound to `context` (so a sealed
    /// value cannot be moved to another row or cookie). Nonce first.
    pub(crate) fn seal(&self, context: &[u8], plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CryptoError)?;
        let mut data = plain.to_vec();
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(context),
                &mut data,
            )
            .map_err(|_| CryptoError)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// The plaintext of [`Keys::seal`]'s output, or `None` when it was not
    /// sealed by this secret for this context.
    pub(crate) fn open(&self, context: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, aead::Aad::from(context), &mut data)
            .ok()?;
        Some(plain.to_vec())
    }

    /// The session's CSRF token: derived from its id, so nothing more is
    /// stored, and it changes with every login.
    pub(crate) fn csrf_token(&self, session_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.csrf, session_id.as_bytes()))
    }

    /// Whether `presented` is the session's CSRF token (constant time).
    pub(crate) fn csrf_ok(&self, session_id: &str, presented: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(presented.trim()) {
            Ok(tag) => hmac::verify(&self.csrf, session_id.as_bytes(), &tag).is_ok(),
            Err(_) => false,
        }
    }
}

/// What the database stores for a session id.
pub(crate) fn session_hash(session_id: &str) -> [u8; 32] {
    Sha256::digest(session_id.as_bytes()).into()
}

/// PKCE S256: `BASE64URL(SHA256(verifier))`.
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Constant-time equality of two short strings (the OAuth2 `state`).
pub(crate) fn same(a: &str, b: &str) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"gatehouse/compare");
    hmac::verify(&key, a.as_bytes(), hmac::sign(&key, b.as_bytes()).as_ref()).is_ok()
}

#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator or cipher failed")]
pub(crate) struct CryptoError;

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::derive(&[7u8; 32])
    }

    #[test]
    fn sealed_values_open_only_in_their_context_and_with_their_secret() {
        let k = keys();
        let sealed = k.seal(b"row-a", b"token").unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"token"));
        assert_eq!(k.open(b"row-a", &sealed).as_deref(), Some(&b"token"[..]));
        assert_eq!(k.open(b"row-b", &sealed), None);
        assert_eq!(Keys::derive(&[8u8; 32]).open(b"row-a", &sealed), None);
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(k.open(b"row-a", &tampered), None);
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let k = keys();
        let t = k.csrf_token("session-1");
        assert!(k.csrf_ok("session-1", &t));
        assert!(!k.csrf_ok("session-2", &t));
        assert!(!k.csrf_ok("session-1", ""));
        assert!(!k.csrf_ok("session-1", "not base64!"));
    }

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn state_comparison() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
