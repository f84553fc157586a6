//! Keyed fingerprints of contact data, to recognise the same person referred twice without
//! keeping a phone number or an e-mail address in plaintext.
//!
//! A fingerprint is HMAC-SHA256 over a normalised phone number (digits only, a leading `+` kept,
//! a leading international `00` read as `+`) or a normalised e-mail address (trimmed,
//! lowercased), each with a purpose prefix so a phone can never match an e-mail. The key is a
//! service secret of 32 random bytes kept in PostgreSQL (`service_secrets`): without it the
//! fingerprints cannot be tested against a list of guessed numbers, which a plain hash of a
//! phone number (a few billion possibilities) could.

use std::fmt;
use std::sync::Arc;

use funnel_domain::ContactDetails;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;
use sqlx::PgPool;

use crate::PrivacyError;

/// The `service_secrets` row holding the fingerprint key.
pub const FINGERPRINT_KEY_NAME: &str = "contact_fingerprint_key";

const KEY_LEN: usize = 32;
/// Fewer digits than this cannot tell people apart (extensions, typos): no phone fingerprint.
const MIN_PHONE_DIGITS: usize = 5;

type HmacSha256 = Hmac<Sha256>;

/// The secret key of the contact fingerprints. Cheap to clone; never printed.
#[derive(Clone)]
pub struct FingerprintKey(Arc<[u8; KEY_LEN]>);

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(<redacted>)")
    }
}

/// A keyed hash of one normalised contact value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Fingerprint({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

impl FingerprintKey {
    #[must_use]
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Arc::new(bytes))
    }

    /// The service's key: created (32 random bytes) on first use, read back by every later call
    /// and every other instance. Concurrent first uses agree: the insert that loses the race
    /// changes nothing, and the read that follows sees the winner's key.
    pub async fn load_or_create(pool: &PgPool) -> Result<Self, PrivacyError> {
        let mut fresh = [0_u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        sqlx::query(
            "INSERT INTO service_secrets (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(FINGERPRINT_KEY_NAME)
        .bind(fresh.as_slice())
        .execute(pool)
        .await?;
        let (stored,): (Vec<u8>,) =
            sqlx::query_as("SELECT value FROM service_secrets WHERE name = $1")
                .bind(FINGERPRINT_KEY_NAME)
                .fetch_one(pool)
                .await?;
        let key: [u8; KEY_LEN] = stored
            .try_into()
            .map_err(|_| PrivacyError::Malformed("the contact fingerprint key is not 32 bytes"))?;
        Ok(Self::from_bytes(key))
    }

    /// A keyed hash of `data` for `purpose` (e.g. a request digest that must not be testable
    /// against guessed contact data).
    #[must_use]
    pub fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        let mut mac =
            HmacSha256::new_from_slice(self.0.as_slice()).expect("HMAC accepts keys of any length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// The fingerprint of a phone number, if it has enough digits to mean anything.
    #[must_use]
    pub fn phone(&self, phone: &str) -> Option<Fingerprint> {
        normalise_phone(phone).map(|phone| Fingerprint(self.mac("phone", phone.as_bytes())))
    }

    /// The fingerprint of an e-mail address, if it looks like one.
    #[must_use]
    pub fn email(&self, email: &str) -> Option<Fingerprint> {
        normalise_email(email).map(|email| Fingerprint(self.mac("email", email.as_bytes())))
    }

    /// The fingerprints of a contact's phone and e-mail, sorted and without repeats (the order
    /// in which concurrent writers claim them, so they cannot deadlock or split a person).
    #[must_use]
    pub fn of_contact(&self, contact: &ContactDetails) -> Vec<Fingerprint> {
        let mut prints: Vec<Fingerprint> = contact
            .phone
            .as_deref()
            .and_then(|phone| self.phone(phone))
            .into_iter()
            .chain(contact.email.as_deref().and_then(|email| self.email(email)))
            .collect();
        prints.sort_unstable();
        prints.dedup();
        prints
    }
}

/// Digits only, a leading `+` kept (a leading `00` counts as `+`); spaces, dashes, dots, slashes
/// and parentheses dropped. `None` with fewer than five digits.
#[must_use]
pub fn normalise_phone(phone: &str) -> Option<String> {
    let trimmed = phone.trim();
    let international =
        trimmed.starts_with('+') || trimmed.trim_start_matches('(').starts_with('+');
    let mut digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    let international = if !international && digits.starts_with("00") {
        digits.drain(..2);
        true
    } else {
        international
    };
    if digits.len() < MIN_PHONE_DIGITS {
        return None;
    }
    Some(if international {
        format!("+{digits}")
    } else {
        digits
    })
}

/// Trimmed and lowercased; `None` unless it has a local part and a domain around one `@`.
#[must_use]
pub fn normalise_email(email: &str) -> Option<String> {
    let normalised = email.trim().to_lowercase();
    let (local, domain) = normalised.split_once('@')?;
    (!local.is_empty() && !domain.is_empty() && !domain.contains('@')).then_some(normalised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FingerprintKey {
        FingerprintKey::from_bytes([9; KEY_LEN])
    }

    #[test]
    fn phones_normalise_to_digits_with_a_leading_plus() {
        assert_eq!(
            normalise_phone("+34 612-345 678").as_deref(),
            Some("+34612345678")
        );
        assert_eq!(
            normalise_phone("(+34) 612.345.678").as_deref(),
            Some("+34612345678")
        );
        assert_eq!(
            normalise_phone("0034 612 345 678").as_deref(),
            Some("+34612345678")
        );
        assert_eq!(
            normalise_phone(" 612 34 56 78 ").as_deref(),
            Some("612345678")
        );
        assert_eq!(
            normalise_phone("(030) 1234-567").as_deref(),
            Some("0301234567")
        );
        assert_eq!(normalise_phone("+1 2"), None);
        assert_eq!(normalise_phone(""), None);
    }

    #[test]
    fn emails_normalise_trimmed_and_lowercased() {
        assert_eq!(
            normalise_email("  Ana.Perez@Example.ES ").as_deref(),
            Some("ana.perez@example.es")
        );
        assert_eq!(normalise_email("no-at-sign"), None);
        assert_eq!(normalise_email("@example.org"), None);
        assert_eq!(normalise_email("a@b@c"), None);
    }

    #[test]
    fn the_same_person_in_other_spellings_has_the_same_fingerprints() {
        let key = key();
        assert_eq!(key.phone("+34 612 345 678"), key.phone("+34-612-345-678"));
        assert_eq!(key.phone("(+34) 612345678"), key.phone("0034612345678"));
        assert_eq!(key.email("Ana@Example.es"), key.email(" ana@example.ES "));
        assert_ne!(key.phone("+34 612 345 678"), key.phone("+34 612 345 679"));
        assert!(key.phone("12").is_none());
    }

    #[test]
    fn fingerprints_depend_on_the_key_and_the_kind_of_value() {
        let other = FingerprintKey::from_bytes([10; KEY_LEN]);
        assert_ne!(key().phone("+34612345678"), other.phone("+34612345678"));
        // A value that is both a plausible phone and e-mail text never collides across kinds.
        assert_ne!(
            key().mac("phone", b"12345@x"),
            key().mac("email", b"12345@x")
        );
    }

    #[test]
    fn a_contact_yields_sorted_unique_fingerprints_and_no_plaintext() {
        let contact = ContactDetails {
            name: "Ana".to_owned(),
            phone: Some("+34 612 345 678".to_owned()),
            email: Some("ana@example.es".to_owned()),
            notes: None,
        };
        let prints = key().of_contact(&contact);
        assert_eq!(prints.len(), 2);
        assert!(prints[0] < prints[1]);
        for print in &prints {
            let bytes = print.as_bytes();
            assert!(!bytes.windows(9).any(|w| w == b"612345678"));
            assert!(!format!("{print:?}").contains("612"));
        }
        let no_contact = ContactDetails {
            name: "Ana".to_owned(),
            ..ContactDetails::default()
        };
        assert!(key().of_contact(&no_contact).is_empty());
        assert!(!format!("{:?}", key()).contains("09"));
    }

    #[tokio::test]
    async fn the_key_is_created_once_and_read_back_by_everyone() {
        let db = funnel_testkit::test_database().await;
        let (a, b) = tokio::join!(
            FingerprintKey::load_or_create(&db.pool),
            FingerprintKey::load_or_create(&db.pool)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let c = FingerprintKey::load_or_create(&db.pool).await.unwrap();
        assert_eq!(a.0, b.0);
        assert_eq!(a.0, c.0);
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM service_secrets")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(rows, 1);
    }
}
