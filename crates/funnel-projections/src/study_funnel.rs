//! Read model `study_funnel`: how many journeys are in each stage now, per study and site, and
//! how many referrals each source channel brought, per study.
//!
//! Tables (version 1): `journeys` (journey → study, site, stage: the
//! projection's own bookkeeping), `stage_counts` (study × site × stage; the
//! nil UUID [`NO_SITE`] stands for "not at a site yet") and `referrals`
//! (study × source channel).
//!
//! Rules: a journey counts in the stage it is in now, at the site currently handling it. A
//! journey linked as a duplicate leaves both counts (stage and referrals). An erased journey
//! stays counted: erasure removes personal data, not funnel facts.

use funnel_domain::{DomainEvent, JourneyEvent, SiteId, Stage};
use sqlx::{PgConnection, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::projection::{ProjectedEvent, Projection, ProjectionError};

/// The site id under which journeys not yet at a site are counted.
pub const NO_SITE: Uuid = Uuid::nil();

/// The `study_funnel` projection.
#[derive(Clone, Copy, Debug, Default)]
pub struct StudyFunnel;

impl StudyFunnel {
    pub const NAME: &'static str = "study_funnel";
    pub const VERSION: u32 = 1;
}

/// Where a journey is: stage and current site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub stage: Stage,
    pub site: Option<SiteId>,
}

/// The stage and site after `event`, following the journey state machine's `evolve`
/// (`funnel_domain::evolve`), of which only stage and site matter here.
#[must_use]
pub fn next_position(current: Position, event: &JourneyEvent) -> Position {
    use JourneyEvent as E;
    let Position { stage, site } = current;
    let to = |stage| Position { stage, site };
    match event {
        E::ReferralReceived(_) | E::PersonalDataErased(_) => current,
        E::PrescreenCompleted(e) => to(if e.passed {
            Stage::PrescreenPassed
        } else {
            Stage::PrescreenFailed
        }),
        E::ContactAttempted(e) => {
            if e.outcome.is_reached() {
                if matches!(
                    stage,
                    Stage::Referred
                        | Stage::PrescreenPassed
                        | Stage::Contacting
                        | Stage::Unreachable
                ) {
                    to(Stage::Contacted)
                } else {
                    current
                }
            } else if matches!(stage, Stage::Referred | Stage::PrescreenPassed) {
                to(Stage::Contacting)
            } else {
                current
            }
        }
        E::CallbackRequested(_) => {
            if stage == Stage::Unreachable {
                to(Stage::Contacting)
            } else {
                current
            }
        }
        E::ReferredToSite(e) => Position {
            stage: Stage::ReferredToSite,
            site: Some(e.site_id),
        },
        E::Reallocated(e) => Position {
            stage: Stage::ReferredToSite,
            site: Some(e.to_site),
        },
        E::SiteContacted(e) => Position {
            stage: Stage::SiteContacted,
            site: Some(e.site_id),
        },
        E::AppointmentScheduled(e) => Position {
            stage: Stage::AppointmentScheduled,
            site: Some(e.site_id),
        },
        E::AppointmentRescheduled(_) => to(Stage::AppointmentScheduled),
        E::AppointmentAttended(_) => to(Stage::Attended),
        E::NoShow(_) => to(Stage::NoShow),
        E::Consented(_) => to(Stage::Consented),
        E::ScreeningStarted(_) => to(Stage::Screening),
        E::ScreenFailed(_) => to(Stage::ScreenFailed),
        E::Randomized(_) => to(Stage::Randomized),
        E::Withdrawn(_) => to(Stage::Withdrawn),
        E::Disqualified(_) => to(Stage::Disqualified),
        E::NotInterested(_) => to(Stage::NotInterested),
        E::Unreachable(_) => to(Stage::Unreachable),
        E::OptedOut(_) => to(Stage::OptedOut),
        E::DuplicateLinked(_) => to(Stage::Duplicate),
    }
}

fn parse_stage(text: &str) -> Option<Stage> {
    Stage::ALL.into_iter().find(|stage| stage.as_str() == text)
}

async fn add_to_stage(
    conn: &mut PgConnection,
    study: Uuid,
    site: Option<SiteId>,
    stage: Stage,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO stage_counts (study_id, site_id, stage, journeys) \
         VALUES ($1, $2, $3, 1) ON CONFLICT (study_id, site_id, stage) \
         DO UPDATE SET journeys = stage_counts.journeys + 1",
    )
    .bind(study)
    .bind(site.map_or(NO_SITE, |site| *site.as_uuid()))
    .bind(stage.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

async fn remove_from_stage(
    conn: &mut PgConnection,
    study: Uuid,
    site: Option<SiteId>,
    stage: Stage,
) -> Result<(), ProjectionError> {
    let site = site.map_or(NO_SITE, |site| *site.as_uuid());
    let done = sqlx::query(
        "UPDATE stage_counts SET journeys = journeys - 1 \
         WHERE study_id = $1 AND site_id = $2 AND stage = $3 AND journeys > 0",
    )
    .bind(study)
    .bind(site)
    .bind(stage.as_str())
    .execute(conn)
    .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(ProjectionError::Invalid(format!(
            "no journey counted in study {study}, site {site}, stage {stage} to move out"
        )))
    }
}

async fn add_referral(
    conn: &mut PgConnection,
    study: Uuid,
    source: &str,
    delta: i64,
) -> Result<(), ProjectionError> {
    let done = if delta > 0 {
        sqlx::query(
            "INSERT INTO referrals (study_id, source, referrals) \
             VALUES ($1, $2, $3) ON CONFLICT (study_id, source) \
             DO UPDATE SET referrals = referrals.referrals + EXCLUDED.referrals",
        )
        .bind(study)
        .bind(source)
        .bind(delta)
        .execute(conn)
        .await?
    } else {
        sqlx::query(
            "UPDATE referrals SET referrals = referrals + $3 \
             WHERE study_id = $1 AND source = $2 AND referrals + $3 >= 0",
        )
        .bind(study)
        .bind(source)
        .bind(delta)
        .execute(conn)
        .await?
    };
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(ProjectionError::Invalid(format!(
            "no referral of study {study} from {source} to remove"
        )))
    }
}

impl Projection for StudyFunnel {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn version(&self) -> u32 {
        Self::VERSION
    }

    fn schema(&self) -> &'static str {
        include_str!("../sql/study_funnel.sql")
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &ProjectedEvent,
    ) -> Result<(), ProjectionError> {
        let DomainEvent::Journey(journey_event) = &event.event else {
            return Ok(());
        };
        let journey_id = event.key.id();
        let conn: &mut PgConnection = tx;
        if let JourneyEvent::ReferralReceived(referral) = journey_event {
            let study = *referral.study_id.as_uuid();
            let inserted = sqlx::query(
                "INSERT INTO journeys \
                 (journey_id, study_id, site_id, stage, source, counted) \
                 VALUES ($1, $2, NULL, $3, $4, true) ON CONFLICT (journey_id) DO NOTHING",
            )
            .bind(journey_id)
            .bind(study)
            .bind(Stage::Referred.as_str())
            .bind(referral.source.as_str())
            .execute(&mut *conn)
            .await?;
            // A second referral on the same journey cannot change it (as in `evolve`).
            if inserted.rows_affected() == 1 {
                add_to_stage(conn, study, None, Stage::Referred).await?;
                add_referral(conn, study, referral.source.as_str(), 1).await?;
            }
            return Ok(());
        }
        let Some(row) = sqlx::query(
            "SELECT study_id, site_id, stage, source, counted \
             FROM journeys WHERE journey_id = $1",
        )
        .bind(journey_id)
        .fetch_optional(&mut *conn)
        .await?
        else {
            // Events before the referral have no journey to apply to (as in `evolve`).
            return Ok(());
        };
        let study: Uuid = row.try_get("study_id")?;
        let site: Option<Uuid> = row.try_get("site_id")?;
        let stage_text: String = row.try_get("stage")?;
        let source: String = row.try_get("source")?;
        let counted: bool = row.try_get("counted")?;
        let stage = parse_stage(&stage_text).ok_or_else(|| {
            ProjectionError::Invalid(format!(
                "journey {journey_id} has unknown stage {stage_text}"
            ))
        })?;
        let before = Position {
            stage,
            site: site.map(SiteId::from_uuid),
        };
        let after = next_position(before, journey_event);
        let counted_after = counted && !matches!(journey_event, JourneyEvent::DuplicateLinked(_));
        if before == after && counted == counted_after {
            return Ok(());
        }
        if counted {
            remove_from_stage(conn, study, before.site, before.stage).await?;
        }
        if counted_after {
            add_to_stage(conn, study, after.site, after.stage).await?;
        } else if counted {
            add_referral(conn, study, &source, -1).await?;
        }
        sqlx::query(
            "UPDATE journeys SET site_id = $2, stage = $3, counted = $4 \
             WHERE journey_id = $1",
        )
        .bind(journey_id)
        .bind(after.site.map(|site| *site.as_uuid()))
        .bind(after.stage.as_str())
        .bind(counted_after)
        .execute(conn)
        .await?;
        Ok(())
    }
}
