//! Personal data as the domain sees it: plaintext only in memory, sealed everywhere else.

use serde::{Deserialize, Serialize};

/// A candidate's contact data in plaintext. Never logged, never put on the stream: it is sealed
/// with the candidate's own key before it leaves the process.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContactDetails {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

impl std::fmt::Debug for ContactDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContactDetails(<redacted>)")
    }
}

/// Contact data sealed with an AEAD cipher under the candidate's key. Opaque to the domain;
/// it becomes unreadable for good once that key is erased.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedContact {
    /// The cipher, e.g. `xchacha20poly1305`.
    pub alg: String,
    /// Base64 (standard, padded) nonce.
    pub nonce: String,
    /// Base64 (standard, padded) ciphertext with its authentication tag.
    pub ciphertext: String,
}
