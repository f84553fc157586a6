//! The studies referrals are checked against, kept in memory and brought up to date from the
//! stream.
//!
//! Every referral needs its study (does the campaign belong to it, is the preferred site still
//! in it). Reading the whole study from the stream per referral cost a round trip plus decoding
//! every study event, and under load that read was a tenth of a referral's time. Here each
//! study's state is kept and only the events after its version are read, at most every
//! [`MAX_AGE`]: a referral may be checked against the study as it was up to that long before
//! it arrived, as if it had arrived that much earlier. Two cases must not be answered from an
//! older state, and are not: a referral the kept state would *refuse* (a campaign registered
//! or a site added a moment ago) is checked again against a fresh read before it is refused,
//! and a study changed through this service is read afresh by the next referral.
use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use funnel_domain::{StudyId, StudyState};
use tokio::sync::Mutex;

use crate::commands::{CommandError, CommandService};

/// How old the kept state of a study may be when a referral is checked against it.
pub(crate) const MAX_AGE: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Cached {
    state: Arc<StudyState>,
    /// The stream sequence of the last event folded in.
    version: u64,
    /// When the last refresh started reading.
    read_at: Option<Instant>,
}

/// Shared by every request; cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct StudyCache {
    studies: Arc<StdMutex<HashMap<StudyId, Arc<Mutex<Cached>>>>>,
}

impl StudyCache {
    /// The study's state as of a read that started no earlier than `as_of`. Concurrent
    /// callers share one read.
    pub(crate) async fn get(
        &self,
        commands: &CommandService,
        id: StudyId,
        as_of: Instant,
    ) -> Result<Arc<StudyState>, CommandError> {
        let entry = self.entry(id);
        let mut cached = entry.lock().await;
        if cached.read_at.is_some_and(|read_at| read_at >= as_of) {
            return Ok(cached.state.clone());
        }
        let read_at = Instant::now();
        let loaded = commands
            .load_study_onto(id, StudyState::clone(&cached.state), cached.version)
            .await?;
        if let Some(version) = loaded.version {
            cached.state = Arc::new(loaded.state);
            cached.version = version;
        }
        cached.read_at = Some(read_at);
        Ok(cached.state.clone())
    }

    /// The next referral of the study reads it afresh (after this service changed it).
    pub(crate) async fn forget(&self, id: StudyId) {
        self.entry(id).lock().await.read_at = None;
    }

    fn entry(&self, id: StudyId) -> Arc<Mutex<Cached>> {
        self.studies
            .lock()
            .expect("the study cache lock is never held across a panic")
            .entry(id)
            .or_default()
            .clone()
    }
}
