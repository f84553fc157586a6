use std::fmt;

use crate::error::EventLogError;

/// A nats-server release number; pre-release suffixes (`-RC.1`) and a leading `v` are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// What the connected server can do for the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerCapabilities {
    pub version: ServerVersion,
    /// ADR-50 atomic batch publish (2.12+), which group commit and atomic multi-event appends use.
    pub atomic_batch_publish: bool,
}

impl ServerVersion {
    /// 2.11 adds per-subject consistency in clusters and batched direct gets; older servers
    /// (Debian's 2.9.10) also mishandle concurrent optimistic-concurrency publishes.
    pub const MINIMUM: Self = Self::new(2, 11, 0);
    /// The first release with atomic batch publish (ADR-50).
    pub const ATOMIC_BATCH_PUBLISH: Self = Self::new(2, 12, 0);

    #[must_use]
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses `2.15.1`, `v2.11.0-RC.2`, `2.12.0-beta`; `None` for anything else.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let release = text.split(['-', '+']).next()?;
        let mut numbers = release.split('.').map(|part| part.parse::<u32>().ok());
        let major = numbers.next()??;
        let minor = numbers.next()??;
        let patch = numbers.next().unwrap_or(Some(0))?;
        if numbers.next().is_some() {
            return None;
        }
        Some(Self::new(major, minor, patch))
    }

    /// Refuses servers older than [`Self::MINIMUM`] and reports what the server supports.
    pub fn capabilities(text: &str) -> Result<ServerCapabilities, EventLogError> {
        let version = Self::parse(text)
            .ok_or_else(|| EventLogError::UnknownServerVersion(text.to_owned()))?;
        if version < Self::MINIMUM {
            return Err(EventLogError::ServerTooOld {
                found: text.to_owned(),
                minimum: format!("{}.{}", Self::MINIMUM.major, Self::MINIMUM.minor),
            });
        }
        Ok(ServerCapabilities {
            version,
            atomic_batch_publish: version >= Self::ATOMIC_BATCH_PUBLISH,
        })
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_and_prerelease_versions() {
        assert_eq!(
            ServerVersion::parse("2.15.1"),
            Some(ServerVersion::new(2, 15, 1))
        );
        assert_eq!(
            ServerVersion::parse("v2.11.0-RC.2"),
            Some(ServerVersion::new(2, 11, 0))
        );
        assert_eq!(
            ServerVersion::parse("2.12"),
            Some(ServerVersion::new(2, 12, 0))
        );
        assert_eq!(ServerVersion::parse(""), None);
        assert_eq!(ServerVersion::parse("two.ten"), None);
        assert_eq!(ServerVersion::parse("2.10.1.4"), None);
    }

    #[test]
    fn refuses_an_old_server_naming_found_and_minimum() {
        let err = ServerVersion::capabilities("2.9.10").unwrap_err();
        assert_eq!(
            err.to_string(),
            "nats-server 2.9.10 is too old: the event log needs 2.11 or newer (2.12+ for group commit)"
        );
        assert!(ServerVersion::capabilities("2.10.29").is_err());
        assert!(matches!(
            ServerVersion::capabilities("nonsense"),
            Err(EventLogError::UnknownServerVersion(_))
        ));
    }

    #[test]
    fn atomic_batches_from_2_12() {
        assert!(
            !ServerVersion::capabilities("2.11.9")
                .unwrap()
                .atomic_batch_publish
        );
        assert!(
            ServerVersion::capabilities("2.12.0-RC.1")
                .unwrap()
                .atomic_batch_publish
        );
        assert!(
            ServerVersion::capabilities("2.15.1")
                .unwrap()
                .atomic_batch_publish
        );
    }
}
