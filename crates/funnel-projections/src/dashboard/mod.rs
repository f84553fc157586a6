//! Read model `sponsor_dashboard`: the facts behind the sponsor dashboard (funnel, sites,
//! sources, cohorts, time series, target forecast), and the queries that aggregate them.
//!
//! Tables (see `sql/sponsor_dashboard.sql`): `studies`, `sites`, `campaigns`,
//! `campaign_spend` from the study streams; `journeys` (one fact row per journey: identity,
//! current stage and site, the first time of each milestone) and `journey_sites` (one row
//! per journey and site it was referred to) from the journey streams. Reports aggregate
//! these rows in PostgreSQL at query time, so that any filter (dates, sites, countries,
//! sources) combines with any report without pre-computed cubes.
//!
//! The read model is defined by a pure fold ([`fold`]); the projection applies the very same
//! transitions ([`model::evolve_journey`]) to the rows it loads, and [`load`] reads the tables
//! back into the fold's shape so tests can compare the two. The metrics are defined in
//! `docs/metrics.md`.

pub mod model;
mod query;
mod store;

pub use model::{
    CampaignRecord, DashboardModel, JourneyFact, JourneyRecord, SiteRecord, SiteVisit, SpendRecord,
    StudyRecord, evolve_journey, fold,
};
pub use query::*;
pub use store::load;

use funnel_domain::{DomainEvent, JourneyEvent, StudyEvent};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::projection::{ProjectedEvent, Projection, ProjectionError, distinct_aggregates};
use model::{STUDY_KIND, micros, new_journey};

/// The `sponsor_dashboard` projection.
#[derive(Clone, Copy, Debug, Default)]
pub struct SponsorDashboard;

impl SponsorDashboard {
    pub const NAME: &'static str = "sponsor_dashboard";
    pub const VERSION: u32 = 1;
}

impl Projection for SponsorDashboard {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn version(&self) -> u32 {
        Self::VERSION
    }

    fn schema(&self) -> &'static str {
        include_str!("../../sql/sponsor_dashboard.sql")
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &ProjectedEvent,
    ) -> Result<(), ProjectionError> {
        let conn: &mut PgConnection = tx;
        match &event.event {
            DomainEvent::Study(study_event) => {
                if event.key.kind() == STUDY_KIND {
                    apply_study(conn, event.key.id(), event.id, study_event).await?;
                }
            }
            DomainEvent::Journey(JourneyEvent::ReferralReceived(referral)) => {
                let record = new_journey(referral);
                store::insert_journey(conn, event.key.id(), &record.fact).await?;
            }
            DomainEvent::Journey(journey_event) => {
                let journey_id = event.key.id();
                // Load, evolve in Rust, write back what changed: the transition is then the
                // very code `fold` runs, so the read model cannot drift from its definition.
                // It costs a read per event; the rows are small and found by primary key.
                // Events before the referral have no journey to apply to (as in `evolve`).
                let Some(mut record) = store::load_journey(conn, journey_id).await? else {
                    return Ok(());
                };
                let before = record.clone();
                evolve_journey(&mut record, journey_event);
                if record.fact != before.fact {
                    store::update_journey(conn, journey_id, &record.fact).await?;
                }
                for (site, visit) in &record.visits {
                    if before.visits.get(site) != Some(visit) {
                        store::upsert_visit(conn, journey_id, record.fact.study_id, *site, visit)
                            .await?;
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
        let conn: &mut PgConnection = tx;
        // Journey events are gathered into runs; study events (rare) are applied one by one
        // between them, in stream order.
        let mut run_start = 0;
        for (index, event) in events.iter().enumerate() {
            if let DomainEvent::Study(study_event) = &event.event {
                apply_journeys(conn, &events[run_start..index]).await?;
                run_start = index + 1;
                if event.key.kind() == STUDY_KIND {
                    apply_study(conn, event.key.id(), event.id, study_event).await?;
                }
            }
        }
        apply_journeys(conn, &events[run_start..]).await
    }
}

/// Applies a run of journey events (no study event among them) with one read and a few
/// writes: the journeys they touch are loaded at once, evolved in memory by the same code as
/// [`SponsorDashboard::apply`] (and [`fold`]), and what changed is written back in two
/// multi-row statements.
async fn apply_journeys(
    conn: &mut PgConnection,
    events: &[ProjectedEvent],
) -> Result<(), ProjectionError> {
    if events.is_empty() {
        return Ok(());
    }
    let ids = distinct_aggregates(events);
    let before = store::load_journeys(conn, &ids).await?;
    let mut after = before.clone();
    for event in events {
        match &event.event {
            DomainEvent::Journey(JourneyEvent::ReferralReceived(referral)) => {
                after
                    .entry(event.key.id())
                    .or_insert_with(|| new_journey(referral));
            }
            DomainEvent::Journey(journey_event) => {
                if let Some(record) = after.get_mut(&event.key.id()) {
                    evolve_journey(record, journey_event);
                }
            }
            DomainEvent::Study(_) => {
                return Err(ProjectionError::Invalid(
                    "sponsor_dashboard: a study event in a run of journey events".into(),
                ));
            }
        }
    }
    let mut facts = Vec::new();
    let mut visits = Vec::new();
    for id in &ids {
        let Some(record) = after.get(id) else {
            continue;
        };
        let old = before.get(id);
        if old.map(|old| &old.fact) != Some(&record.fact) {
            facts.push((*id, &record.fact));
        }
        for (site, visit) in &record.visits {
            if old.and_then(|old| old.visits.get(site)) != Some(visit) {
                visits.push(store::VisitRow {
                    journey_id: *id,
                    study_id: record.fact.study_id,
                    site_id: *site,
                    visit,
                });
            }
        }
    }
    store::upsert_journeys(conn, &facts).await?;
    store::upsert_visits(conn, &visits).await?;
    Ok(())
}

/// The study-stream events, mirroring [`DashboardModel::apply`]: nothing happens to a study
/// before its creation, a second creation or a second registration changes nothing.
async fn apply_study(
    conn: &mut PgConnection,
    study: Uuid,
    event_id: Uuid,
    event: &StudyEvent,
) -> Result<(), sqlx::Error> {
    match event {
        StudyEvent::StudyCreated(e) => {
            let countries: Vec<&str> = e.countries.iter().map(|c| c.as_str()).collect();
            sqlx::query(
                "INSERT INTO studies (study_id, sponsor_id, title, protocol_code, \
                 target_randomized, countries, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (study_id) DO NOTHING",
            )
            .bind(study)
            .bind(*e.sponsor_id.as_uuid())
            .bind(&e.title)
            .bind(&e.protocol_code)
            .bind(i64::from(e.target_randomized))
            .bind(countries)
            .bind(micros(e.at))
            .execute(conn)
            .await?;
        }
        StudyEvent::SiteAdded(e) => {
            sqlx::query(
                "INSERT INTO sites (study_id, site_id, name, country, \
                 monthly_target_randomized, status, added_at) \
                 SELECT $1, $2, $3, $4, $5, 'active', $6 \
                 WHERE EXISTS (SELECT 1 FROM studies WHERE study_id = $1) \
                 ON CONFLICT (study_id, site_id) DO NOTHING",
            )
            .bind(study)
            .bind(*e.site_id.as_uuid())
            .bind(&e.name)
            .bind(e.country.as_str())
            .bind(e.monthly_target_randomized)
            .bind(micros(e.at))
            .execute(conn)
            .await?;
        }
        StudyEvent::SitePaused(e) => {
            sqlx::query("UPDATE sites SET status = 'paused' WHERE study_id = $1 AND site_id = $2")
                .bind(study)
                .bind(*e.site_id.as_uuid())
                .execute(conn)
                .await?;
        }
        StudyEvent::SiteResumed(e) => {
            sqlx::query(
                "UPDATE sites SET status = 'active', closed_at = NULL \
                 WHERE study_id = $1 AND site_id = $2",
            )
            .bind(study)
            .bind(*e.site_id.as_uuid())
            .execute(conn)
            .await?;
        }
        StudyEvent::SiteClosed(e) => {
            sqlx::query(
                "UPDATE sites SET status = 'closed', closed_at = $3 \
                 WHERE study_id = $1 AND site_id = $2",
            )
            .bind(study)
            .bind(*e.site_id.as_uuid())
            .bind(micros(e.at))
            .execute(conn)
            .await?;
        }
        StudyEvent::CampaignRegistered(e) => {
            sqlx::query(
                "INSERT INTO campaigns (study_id, campaign_id, name, channel, registered_at) \
                 SELECT $1, $2, $3, $4, $5 \
                 WHERE EXISTS (SELECT 1 FROM studies WHERE study_id = $1) \
                 ON CONFLICT (study_id, campaign_id) DO NOTHING",
            )
            .bind(study)
            .bind(*e.campaign_id.as_uuid())
            .bind(&e.name)
            .bind(e.channel.as_str())
            .bind(micros(e.at))
            .execute(conn)
            .await?;
        }
        StudyEvent::CampaignSpendRecorded(e) => {
            sqlx::query(
                "INSERT INTO campaign_spend (event_id, study_id, campaign_id, amount_minor, \
                 currency, period_start, period_end, recorded_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
                 WHERE EXISTS (SELECT 1 FROM campaigns WHERE study_id = $2 AND campaign_id = $3) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(event_id)
            .bind(study)
            .bind(*e.campaign_id.as_uuid())
            .bind(e.amount_minor)
            .bind(e.currency.as_str())
            .bind(e.period_start)
            .bind(e.period_end)
            .bind(micros(e.at))
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}
