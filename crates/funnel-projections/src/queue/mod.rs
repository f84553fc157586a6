//! Read model `work_queue`: the Enrollment Support Team's open work items, derived from the
//! journey and study streams, and the queries the API reads them with.
//!
//! Tables (see `sql/work_queue.sql`): `work_items` (one row per open item; its shape is a
//! contract with the API's claims and leases), `queue_journeys` (the per-journey state the
//! derivation needs, [`JourneyQueueState`]) and `queue_studies` (each study's
//! [`funnel_domain::SlaSettings`], from `StudyCreated.sla`: no later study event changes them).
//!
//! The read model is defined by pure functions: [`evolve`] keeps a journey's state,
//! [`items`] derives its open items from the state and the study's levels. The projection
//! runs them on the rows it loads and writes the difference; [`fold`] runs them in memory,
//! and [`load`] reads the tables back into the fold's shape, so tests compare the two.
//!
//! # Rules
//!
//! An item is a row; it is deleted when the journey moves on. Its id is a UUIDv5 over
//! (journey, kind, `opened_seq`), the stream sequence of the event that opened it: an item
//! that goes and comes back (a second no-show, a new call-back) gets a new id, so a lease on
//! the old one can never complete the new one. Items of different kinds can coexist (at most
//! one per kind): at most one *call* (the first five kinds) plus a site escalation.
//!
//! * **first_contact**: a referral with consent to contact, not yet attempted. Due
//!   `referred_at + first_contact_hours` (24 h while the study is unknown); overdue after
//!   `due_at` (the due time *is* the SLA). Attempt 1. Without consent to contact no call item
//!   is ever derived.
//! * **next_attempt**: after an unanswered attempt (any outcome but `reached`) while the
//!   cadence has attempts left (`unanswered < contact_attempts`); opened by that attempt.
//!   Attempt *n* is due at the first instant on or after `last_attempt_at +
//!   attempt_spacing_hours` whose time of day is the cadence's first attempt's plus
//!   3 h × ((n − 1) mod 3): consecutive attempts land 3 h apart in the day, rotating through
//!   three slots within 6 hours of the time the cadence started (so calls stay in the band of
//!   the day agents started calling in, instead of drifting into the night). Overdue one
//!   spacing after `due_at`. After the last attempt no item: the agent's outcome marks the
//!   journey unreachable. The cadence (the unanswered count) restarts, as in the domain, when
//!   the candidate is reached, asks for a call-back, is sent to a site or misses an
//!   appointment.
//! * **callback**: `CallbackRequested` replaces any other call item until the next contact
//!   attempt (answered or not), which works it. Due exactly `callback_at`, whatever the time
//!   zone; the request's `time_zone` becomes the journey's. Overdue one hour after
//!   `callback_at` (a promise to the patient). Attempt 1 (a call-back restarts the cadence).
//! * **schedule**: the candidate was reached at some point, has passed the pre-screen or is at
//!   a site, and no appointment is booked (stages `prescreen_passed`, `contacted`,
//!   `referred_to_site`, `site_contacted`; or `no_show` once reached again), with no
//!   call-back or unanswered cadence in front of it. Due when it became so (as soon as
//!   possible); re-opened when the site changes. `site_id` is the current site, if any.
//!   A candidate sent to a site without ever being reached by the team is the site's to call:
//!   only the escalation applies. A reached candidate whose pre-screen is still pending gets
//!   no item (the agent runs the pre-screen on that call).
//! * **re_engage**: a no-show nobody has called about yet. Due at the no-show; attempt 1 of
//!   the re-engagement cadence. An unanswered call turns it into `next_attempt`, a reached
//!   one into `schedule` (re-booking).
//! * **site_escalation**: the journey sits in `referred_to_site` (the site has neither
//!   contacted the candidate nor booked an appointment). Due `referred_to_site_at +
//!   site_escalation_days`, opened by the referral or reallocation to that site; overdue one
//!   day later. It leaves when the site acts, and a reallocation opens a new one for the new
//!   site. It does not need consent to contact: the team calls the site, not the patient.
//! * A journey in a closed stage (pre-screen failed, screen failed, randomized, withdrawn,
//!   disqualified, not interested, opted out, duplicate) or erased has no item; so does an
//!   `unreachable` journey (parked until a call-back or a reached call re-opens it), and one
//!   whose appointment is booked or that is past it (attended, consented, screening).
//! * Events before the referral, and a second referral, change nothing. A study created after
//!   some of its referrals re-derives them under its own levels.
//!
//! "Reached", "unanswered" and the stages follow `funnel_domain`'s `evolve`; times are the
//! events' own `at` (business time), truncated to microseconds as PostgreSQL stores them.

pub mod model;
mod query;
mod store;

pub use model::{
    ItemKind, JourneyQueueState, Mark, QueueModel, WorkItem, evolve, fold, item_id, items,
    next_attempt_due,
};
pub use query::{QueueDepth, depth, item, items_for_journey};
pub use store::load;

use std::collections::HashMap;

use funnel_domain::{DomainEvent, JourneyEvent, SlaSettings, StudyEvent};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::dashboard::model::STUDY_KIND;
use crate::projection::{ProjectedEvent, Projection, ProjectionError, distinct_aggregates};

/// The `work_queue` projection.
#[derive(Clone, Copy, Debug, Default)]
pub struct WorkQueue;

impl WorkQueue {
    pub const NAME: &'static str = "work_queue";
    pub const VERSION: u32 = 1;
}

impl Projection for WorkQueue {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn version(&self) -> u32 {
        Self::VERSION
    }

    fn schema(&self) -> &'static str {
        include_str!("../../sql/work_queue.sql")
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &ProjectedEvent,
    ) -> Result<(), ProjectionError> {
        let conn: &mut PgConnection = tx;
        match &event.event {
            DomainEvent::Study(StudyEvent::StudyCreated(created)) => {
                if event.key.kind() != STUDY_KIND {
                    return Ok(());
                }
                let study = event.key.id();
                if !store::insert_study(conn, study, &created.sla).await? {
                    return Ok(());
                }
                // Normally no journey precedes its study; those that do were derived with the
                // default levels.
                for state in store::journeys_of_study(conn, study).await? {
                    store::delete_journey_items(conn, *state.journey_id.as_uuid()).await?;
                    for item in items(&state, &created.sla) {
                        store::upsert_item(conn, &item).await?;
                    }
                }
            }
            DomainEvent::Study(_) => {}
            DomainEvent::Journey(JourneyEvent::ReferralReceived(referral)) => {
                let mut state = JourneyQueueState::new(referral, event.seq);
                state.journey_id = funnel_domain::JourneyId::from_uuid(event.key.id());
                // A second referral on the same journey changes nothing (as in `evolve`).
                if !store::save_journey(conn, &state, true).await? {
                    return Ok(());
                }
                let sla = store::study_sla(conn, *state.study_id.as_uuid())
                    .await?
                    .unwrap_or_default();
                for item in items(&state, &sla) {
                    store::upsert_item(conn, &item).await?;
                }
            }
            DomainEvent::Journey(journey_event) => {
                // Events before the referral have no journey to apply to (as in `evolve`).
                let Some((before, sla)) = store::load_journey(conn, event.key.id()).await? else {
                    return Ok(());
                };
                let sla = sla.unwrap_or_default();
                let mut after = before.clone();
                evolve(&mut after, journey_event, event.seq);
                if after == before {
                    return Ok(());
                }
                if !store::save_journey(conn, &after, false).await? {
                    return Err(ProjectionError::Invalid(format!(
                        "work_queue: journey {} changed identity",
                        after.journey_id
                    )));
                }
                // The rows are exactly `items(before)`: write only the difference, deletions
                // first so that a re-opened kind never meets its old row's `(journey, kind)`.
                let old = items(&before, &sla);
                let new = items(&after, &sla);
                for item in &old {
                    if !new.iter().any(|kept| kept.item_id == item.item_id) {
                        store::delete_item(conn, item.item_id).await?;
                    }
                }
                for item in &new {
                    if !old.contains(item) {
                        store::upsert_item(conn, item).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn apply_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        events: &[ProjectedEvent],
    ) -> Result<(), ProjectionError> {
        // Journey events are gathered into runs; a study creation (rare, and it may re-derive
        // journeys referred before it) is applied on its own between them, in stream order.
        let mut run_start = 0;
        for (index, event) in events.iter().enumerate() {
            if matches!(event.event, DomainEvent::Study(StudyEvent::StudyCreated(_)))
                && event.key.kind() == STUDY_KIND
            {
                apply_journeys(tx, &events[run_start..index]).await?;
                run_start = index + 1;
                self.apply(tx, event).await?;
            }
        }
        apply_journeys(tx, &events[run_start..]).await
    }
}

/// Applies a run of journey events (no study creation among them) with a few statements: the
/// journeys they touch are loaded at once, evolved in memory by the same code as
/// [`WorkQueue::apply`] (and [`fold`]), and the journeys and items that changed are written
/// back in three multi-row statements. Each journey's rows end as `items(final state)`, which
/// is what applying its events one by one leaves.
async fn apply_journeys(
    conn: &mut PgConnection,
    events: &[ProjectedEvent],
) -> Result<(), ProjectionError> {
    if events.is_empty() {
        return Ok(());
    }
    let ids = distinct_aggregates(events);
    let before = store::load_journeys(conn, &ids).await?;
    // The levels of the studies of journeys referred in this run.
    let mut studies: Vec<Uuid> = events
        .iter()
        .filter_map(|event| match &event.event {
            DomainEvent::Journey(JourneyEvent::ReferralReceived(referral))
                if !before.contains_key(&event.key.id()) =>
            {
                Some(*referral.study_id.as_uuid())
            }
            _ => None,
        })
        .collect();
    studies.sort_unstable();
    studies.dedup();
    let slas = store::study_slas(conn, &studies).await?;
    let mut after: HashMap<Uuid, (JourneyQueueState, SlaSettings)> = before
        .iter()
        .map(|(id, (state, sla))| (*id, (state.clone(), sla.unwrap_or_default())))
        .collect();
    for event in events {
        let journey = event.key.id();
        match &event.event {
            DomainEvent::Journey(JourneyEvent::ReferralReceived(referral)) => {
                // A second referral on the same journey changes nothing (as in `evolve`).
                after.entry(journey).or_insert_with(|| {
                    let mut state = JourneyQueueState::new(referral, event.seq);
                    state.journey_id = funnel_domain::JourneyId::from_uuid(journey);
                    let sla = slas
                        .get(referral.study_id.as_uuid())
                        .copied()
                        .unwrap_or_default();
                    (state, sla)
                });
            }
            DomainEvent::Journey(journey_event) => {
                if let Some((state, _)) = after.get_mut(&journey) {
                    evolve(state, journey_event, event.seq);
                }
            }
            DomainEvent::Study(StudyEvent::StudyCreated(_)) if event.key.kind() == STUDY_KIND => {
                return Err(ProjectionError::Invalid(
                    "work_queue: a study creation in a run of journey events".into(),
                ));
            }
            DomainEvent::Study(_) => {}
        }
    }
    let mut states = Vec::new();
    let mut removed = Vec::new();
    let mut added = Vec::new();
    for id in &ids {
        let Some((state, sla)) = after.get(id) else {
            continue;
        };
        let old = before.get(id).map(|(old, _)| old);
        if old == Some(state) {
            continue;
        }
        if let Some(old) = old
            && (old.study_id != state.study_id
                || old.country != state.country
                || old.language != state.language
                || old.referral != state.referral)
        {
            return Err(ProjectionError::Invalid(format!(
                "work_queue: journey {} changed identity",
                state.journey_id
            )));
        }
        states.push(state);
        let old_items = old.map(|old| items(old, sla)).unwrap_or_default();
        let new_items = items(state, sla);
        removed.extend(
            old_items
                .iter()
                .filter(|item| !new_items.iter().any(|kept| kept.item_id == item.item_id))
                .map(|item| item.item_id),
        );
        added.extend(
            new_items
                .into_iter()
                .filter(|item| !old_items.contains(item)),
        );
    }
    store::upsert_journeys(conn, &states).await?;
    // Deletions first, so that a re-opened kind never meets its old row's `(journey, kind)`.
    store::delete_items(conn, &removed).await?;
    store::upsert_items(conn, &added.iter().collect::<Vec<_>>()).await?;
    Ok(())
}
