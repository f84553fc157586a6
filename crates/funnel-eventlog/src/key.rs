use std::fmt;

use uuid::Uuid;

/// The longest kind token; kinds are short words like `journey` or `study`.
const MAX_KIND_LEN: usize = 32;

/// A name that cannot be used in a NATS subject or stream name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct InvalidName {
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// One aggregate instance, stored on its own subject `<prefix>.<kind>.<id>` so that the
/// per-subject sequence check guards exactly that aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    kind: String,
    id: Uuid,
}

impl StreamKey {
    /// `kind` is one subject token of ASCII letters, digits, `-` or `_` (at most 32).
    pub fn new(kind: impl Into<String>, id: Uuid) -> Result<Self, InvalidName> {
        let kind = kind.into();
        validate_token("aggregate kind", &kind)?;
        if kind.len() > MAX_KIND_LEN {
            return Err(InvalidName {
                what: "aggregate kind",
                value: kind,
                reason: "longer than 32 characters",
            });
        }
        Ok(Self { kind, id })
    }

    #[must_use]
    pub fn kind(&self) -> &str {
        &self.kind
    }

    #[must_use]
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The NATS subject of this aggregate under `prefix`.
    #[must_use]
    pub fn subject(&self, prefix: &str) -> String {
        format!("{prefix}.{}.{}", self.kind, self.id.as_hyphenated())
    }

    /// The key a subject written by this crate under `prefix` belongs to.
    #[must_use]
    pub fn from_subject(prefix: &str, subject: &str) -> Option<Self> {
        let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
        let (kind, id) = rest.split_once('.')?;
        Self::new(kind, Uuid::parse_str(id).ok()?).ok()
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.id)
    }
}

/// One subject token (also used for stream names): no dots, wildcards, whitespace or other
/// characters that need escaping anywhere.
pub(crate) fn validate_token(what: &'static str, value: &str) -> Result<(), InvalidName> {
    let fail = |reason| {
        Err(InvalidName {
            what,
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        return fail("empty");
    }
    if !value
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || b'_' == byte)
    {
        return fail("only ASCII letters, digits, '-' and '_' are allowed");
    }
    Ok(())
}

/// A subject prefix: one or more valid tokens joined by dots.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), InvalidName> {
    prefix
        .split('.')
        .try_for_each(|token| validate_token("subject prefix token", token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_round_trips_through_the_key() {
        let id = Uuid::new_v4();
        let key = StreamKey::new("journey", id).unwrap();
        let subject = key.subject("funnel.events");
        assert_eq!(subject, format!("funnel.events.journey.{id}"));
        assert_eq!(
            StreamKey::from_subject("funnel.events", &subject),
            Some(key)
        );
        assert_eq!(StreamKey::from_subject("other", &subject), None);
    }

    #[test]
    fn refuses_tokens_that_break_subjects() {
        for bad in ["", "a.b", "*", ">", "jour ney", "x\n", "ä"] {
            assert!(StreamKey::new(bad, Uuid::nil()).is_err(), "{bad:?}");
        }
        assert!(StreamKey::new("k".repeat(33), Uuid::nil()).is_err());
        assert!(validate_prefix("funnel.events").is_ok());
        assert!(validate_prefix("funnel..events").is_err());
        assert!(validate_prefix("funnel.>").is_err());
    }
}
