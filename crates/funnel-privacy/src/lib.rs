//! Personal data protection by crypto-shredding.
//!
//! Each candidate gets a random 256-bit data key, kept only in PostgreSQL. Contact data is sealed
//! with XChaCha20-Poly1305 under that key (the candidate id is bound in as associated data, so a
//! sealed box cannot be replayed onto another candidate) before it goes onto the stream. Erasing
//! the key makes every copy on the immutable stream unreadable, while the events themselves, and
//! so the funnel counts, stay.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{AeadCore, XChaCha20Poly1305, XNonce};
use funnel_domain::{CandidateId, ContactDetails, SealedContact};
use rand::RngCore as _;
use sqlx::PgPool;

pub mod fingerprint;
pub use fingerprint::{Fingerprint, FingerprintKey};

const ALG: &str = "xchacha20poly1305";
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("the key store is unavailable")]
    Store(#[from] sqlx::Error),
    #[error("the candidate's personal data has been erased")]
    Erased,
    #[error("no key exists for this candidate")]
    NoKey,
    #[error("sealed contact data is malformed: {0}")]
    Malformed(&'static str),
    #[error("sealed contact data failed authentication")]
    Tampered,
}

/// What opening a candidate's contact data gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    Contact(ContactDetails),
    /// The key was erased: the data is gone for good.
    Erased,
}

/// Per-candidate data keys in PostgreSQL.
#[derive(Debug, Clone)]
pub struct KeyStore {
    pool: PgPool,
}

impl KeyStore {
    #[must_use]
    pub const fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Seals contact data under the candidate's key, creating the key on first use.
    /// Refuses once the candidate has been erased: new personal data must not be stored for them.
    #[tracing::instrument(skip(self, contact), fields(candidate_id = %candidate))]
    pub async fn seal(
        &self,
        candidate: CandidateId,
        contact: &ContactDetails,
    ) -> Result<SealedContact, PrivacyError> {
        let key = self.key_for_sealing(candidate).await?;
        Ok(seal_with(&key, candidate, contact))
    }

    /// Opens sealed contact data, or reports that it was erased.
    #[tracing::instrument(skip(self, sealed), fields(candidate_id = %candidate))]
    pub async fn open(
        &self,
        candidate: CandidateId,
        sealed: &SealedContact,
    ) -> Result<Opened, PrivacyError> {
        let row: Option<(Option<Vec<u8>>,)> =
            sqlx::query_as("SELECT data_key FROM candidate_keys WHERE candidate_id = $1")
                .bind(candidate.as_uuid())
                .fetch_optional(&self.pool)
                .await?;
        match row {
            None => Err(PrivacyError::NoKey),
            Some((None,)) => Ok(Opened::Erased),
            Some((Some(key),)) => open_with(&key, candidate, sealed).map(Opened::Contact),
        }
    }

    /// Destroys the candidate's key. Returns `false` when it was already erased. A candidate with
    /// no key yet gets a tombstone, so nothing can be sealed for them afterwards.
    #[tracing::instrument(skip(self), fields(candidate_id = %candidate))]
    pub async fn erase(&self, candidate: CandidateId) -> Result<bool, PrivacyError> {
        let erased: Option<(bool,)> = sqlx::query_as(
            "INSERT INTO candidate_keys (candidate_id, data_key, erased_at) VALUES ($1, NULL, now())
             ON CONFLICT (candidate_id) DO UPDATE SET data_key = NULL, erased_at = now()
                 WHERE candidate_keys.data_key IS NOT NULL
             RETURNING true",
        )
        .bind(candidate.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        Ok(erased.is_some())
    }

    /// Whether the candidate's data has been erased.
    pub async fn is_erased(&self, candidate: CandidateId) -> Result<bool, PrivacyError> {
        let erased: Option<(bool,)> =
            sqlx::query_as("SELECT data_key IS NULL FROM candidate_keys WHERE candidate_id = $1")
                .bind(candidate.as_uuid())
                .fetch_optional(&self.pool)
                .await?;
        Ok(erased.is_some_and(|(erased,)| erased))
    }

    async fn key_for_sealing(&self, candidate: CandidateId) -> Result<Vec<u8>, PrivacyError> {
        let fresh = new_data_key();
        // A statement that lost the insert race cannot see the winner's row in its own snapshot,
        // so the read is a separate statement.
        let inserted: Option<(Vec<u8>,)> = sqlx::query_as(
            "INSERT INTO candidate_keys (candidate_id, data_key) VALUES ($1, $2)
             ON CONFLICT (candidate_id) DO NOTHING
             RETURNING data_key",
        )
        .bind(candidate.as_uuid())
        .bind(&fresh)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((key,)) = inserted {
            return Ok(key);
        }
        let (key,): (Option<Vec<u8>>,) =
            sqlx::query_as("SELECT data_key FROM candidate_keys WHERE candidate_id = $1")
                .bind(candidate.as_uuid())
                .fetch_one(&self.pool)
                .await?;
        key.ok_or(PrivacyError::Erased)
    }
}

/// A new random data key, for a candidate whose key is stored by the caller (in a transaction
/// of its own, with other rows).
#[must_use]
pub fn new_data_key() -> Vec<u8> {
    let mut key = vec![0_u8; KEY_LEN];
    OsRng.fill_bytes(&mut key);
    key
}

/// Seals contact data under a data key the caller read from `candidate_keys`.
///
/// # Errors
/// [`PrivacyError::Malformed`] when the key is not a 256-bit key.
pub fn seal_with_key(
    key: &[u8],
    candidate: CandidateId,
    contact: &ContactDetails,
) -> Result<SealedContact, PrivacyError> {
    if key.len() != KEY_LEN {
        return Err(PrivacyError::Malformed("the data key has the wrong length"));
    }
    Ok(seal_with(key, candidate, contact))
}

fn cipher(key: &[u8]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

fn seal_with(key: &[u8], candidate: CandidateId, contact: &ContactDetails) -> SealedContact {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let plaintext = serde_json::to_vec(contact).expect("contact details serialise to JSON");
    let ciphertext = cipher(key)
        .encrypt(
            &nonce,
            Payload {
                msg: &plaintext,
                aad: candidate.as_uuid().as_bytes(),
            },
        )
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory data");
    SealedContact {
        alg: ALG.to_owned(),
        nonce: BASE64.encode(nonce),
        ciphertext: BASE64.encode(ciphertext),
    }
}

fn open_with(
    key: &[u8],
    candidate: CandidateId,
    sealed: &SealedContact,
) -> Result<ContactDetails, PrivacyError> {
    if sealed.alg != ALG {
        return Err(PrivacyError::Malformed("unknown cipher"));
    }
    let nonce = BASE64
        .decode(&sealed.nonce)
        .map_err(|_| PrivacyError::Malformed("nonce is not base64"))?;
    if nonce.len() != 24 {
        return Err(PrivacyError::Malformed("nonce has the wrong length"));
    }
    let ciphertext = BASE64
        .decode(&sealed.ciphertext)
        .map_err(|_| PrivacyError::Malformed("ciphertext is not base64"))?;
    let plaintext = cipher(key)
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad: candidate.as_uuid().as_bytes(),
            },
        )
        .map_err(|_| PrivacyError::Tampered)?;
    serde_json::from_slice(&plaintext).map_err(|_| PrivacyError::Malformed("not contact details"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact() -> ContactDetails {
        ContactDetails {
            name: "Ana Pérez".to_owned(),
            phone: Some("+34 600 123 456".to_owned()),
            email: Some("ana@example.org".to_owned()),
            notes: None,
        }
    }

    #[test]
    fn sealed_contact_opens_only_for_its_candidate_and_key() {
        let key = [7_u8; KEY_LEN];
        let candidate = CandidateId::new();
        let sealed = seal_with(&key, candidate, &contact());
        assert_eq!(open_with(&key, candidate, &sealed).unwrap(), contact());
        assert!(matches!(
            open_with(&key, CandidateId::new(), &sealed),
            Err(PrivacyError::Tampered)
        ));
        assert!(matches!(
            open_with(&[8_u8; KEY_LEN], candidate, &sealed),
            Err(PrivacyError::Tampered)
        ));
    }

    #[test]
    fn sealed_contact_holds_no_plaintext() {
        let sealed = seal_with(&[1_u8; KEY_LEN], CandidateId::new(), &contact());
        let json = serde_json::to_string(&sealed).unwrap();
        for needle in ["Ana", "600 123", "ana@example.org"] {
            assert!(!json.contains(needle), "{needle} leaked into {json}");
        }
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let candidate = CandidateId::new();
        let a = seal_with(&[1_u8; KEY_LEN], candidate, &contact());
        let b = seal_with(&[1_u8; KEY_LEN], candidate, &contact());
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }
}
