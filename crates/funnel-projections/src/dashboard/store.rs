//! Rows of the read model to and from [`super::model`]'s plain data.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use funnel_domain::{
    CampaignId, Country, Currency, JourneyId, Language, SiteId, SiteStatus, SourceChannel,
    SponsorId, Stage, StudyId,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::model::{
    CampaignRecord, DashboardModel, JourneyFact, JourneyRecord, SiteRecord, SiteVisit, SpendRecord,
    StudyRecord,
};

fn corrupt(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("sponsor_dashboard: unknown {what} `{value}`").into())
}

pub(crate) fn parse_stage(text: &str) -> Result<Stage, sqlx::Error> {
    Stage::ALL
        .into_iter()
        .find(|stage| stage.as_str() == text)
        .ok_or_else(|| corrupt("stage", text))
}

pub(crate) fn parse_source(text: &str) -> Result<SourceChannel, sqlx::Error> {
    SourceChannel::ALL
        .into_iter()
        .find(|source| source.as_str() == text)
        .ok_or_else(|| corrupt("source channel", text))
}

fn parse_site_status(text: &str) -> Result<SiteStatus, sqlx::Error> {
    [SiteStatus::Active, SiteStatus::Paused, SiteStatus::Closed]
        .into_iter()
        .find(|status| status.as_str() == text)
        .ok_or_else(|| corrupt("site status", text))
}

pub(crate) fn parse_country(text: &str) -> Result<Country, sqlx::Error> {
    Country::parse(text).map_err(|_| corrupt("country", text))
}

fn journey_fact(row: &PgRow) -> Result<JourneyFact, sqlx::Error> {
    let language: String = row.try_get("language")?;
    Ok(JourneyFact {
        study_id: StudyId::from_uuid(row.try_get("study_id")?),
        campaign_id: CampaignId::from_uuid(row.try_get("campaign_id")?),
        source: parse_source(row.try_get("source")?)?,
        country: parse_country(row.try_get("country")?)?,
        language: Language::parse(&language).map_err(|_| corrupt("language", &language))?,
        site_id: row
            .try_get::<Option<Uuid>, _>("site_id")?
            .map(SiteId::from_uuid),
        stage: parse_stage(row.try_get("stage")?)?,
        stage_entered_at: row.try_get("stage_entered_at")?,
        counted: row.try_get("counted")?,
        referred_at: row.try_get("referred_at")?,
        prescreened_at: row.try_get("prescreened_at")?,
        prescreen_passed: row.try_get("prescreen_passed")?,
        first_contact_attempt_at: row.try_get("first_contact_attempt_at")?,
        contact_attempts: row.try_get("contact_attempts")?,
        contacted_at: row.try_get("contacted_at")?,
        referred_to_site_at: row.try_get("referred_to_site_at")?,
        reallocations: row.try_get("reallocations")?,
        site_contacted_at: row.try_get("site_contacted_at")?,
        scheduled_at: row.try_get("scheduled_at")?,
        first_appointment_at: row.try_get("first_appointment_at")?,
        attended_at: row.try_get("attended_at")?,
        no_shows: row.try_get("no_shows")?,
        first_no_show_at: row.try_get("first_no_show_at")?,
        consented_at: row.try_get("consented_at")?,
        screening_started_at: row.try_get("screening_started_at")?,
        screen_failed_at: row.try_get("screen_failed_at")?,
        randomized_at: row.try_get("randomized_at")?,
        closed_at: row.try_get("closed_at")?,
    })
}

/// A visit from columns named `<prefix><field>`; `None` when the (outer-joined) row has none.
fn site_visit(row: &PgRow, prefix: &str) -> Result<Option<(SiteId, SiteVisit)>, sqlx::Error> {
    let column = |name: &str| format!("{prefix}{name}");
    let Some(site) = row.try_get::<Option<Uuid>, _>(column("site_id").as_str())? else {
        return Ok(None);
    };
    let at = |name: &str| row.try_get::<Option<DateTime<Utc>>, _>(column(name).as_str());
    let visit = SiteVisit {
        referred_at: row.try_get(column("referred_at").as_str())?,
        left_at: at("left_at")?,
        site_contacted_at: at("site_contacted_at")?,
        scheduled_at: at("scheduled_at")?,
        attended_at: at("attended_at")?,
        no_shows: row.try_get(column("no_shows").as_str())?,
        consented_at: at("consented_at")?,
        screening_started_at: at("screening_started_at")?,
        screen_failed_at: at("screen_failed_at")?,
        randomized_at: at("randomized_at")?,
    };
    Ok(Some((SiteId::from_uuid(site), visit)))
}

/// One journey with its visits, if the journey has started.
pub(crate) async fn load_journey(
    conn: &mut PgConnection,
    journey_id: Uuid,
) -> Result<Option<JourneyRecord>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT j.*, v.site_id AS v_site_id, v.referred_at AS v_referred_at, \
         v.left_at AS v_left_at, v.site_contacted_at AS v_site_contacted_at, \
         v.scheduled_at AS v_scheduled_at, v.attended_at AS v_attended_at, \
         v.no_shows AS v_no_shows, v.consented_at AS v_consented_at, \
         v.screening_started_at AS v_screening_started_at, \
         v.screen_failed_at AS v_screen_failed_at, v.randomized_at AS v_randomized_at \
         FROM journeys j LEFT JOIN journey_sites v ON v.journey_id = j.journey_id \
         WHERE j.journey_id = $1",
    )
    .bind(journey_id)
    .fetch_all(conn)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let fact = journey_fact(first)?;
    let mut visits = BTreeMap::new();
    for row in &rows {
        if let Some((site, visit)) = site_visit(row, "v_")? {
            visits.insert(site, visit);
        }
    }
    Ok(Some(JourneyRecord { fact, visits }))
}

/// Stores a new journey; a journey that exists already is left as it is.
pub(crate) async fn insert_journey(
    conn: &mut PgConnection,
    journey_id: Uuid,
    fact: &JourneyFact,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO journeys (journey_id, study_id, campaign_id, source, country, language, \
         site_id, stage, stage_entered_at, counted, funnel_step, referred_at, \
         contact_attempts, reallocations, no_shows) \
         VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8, $9, $10, $8, 0, 0, 0) \
         ON CONFLICT (journey_id) DO NOTHING",
    )
    .bind(journey_id)
    .bind(*fact.study_id.as_uuid())
    .bind(*fact.campaign_id.as_uuid())
    .bind(fact.source.as_str())
    .bind(fact.country.as_str())
    .bind(fact.language.as_str())
    .bind(fact.stage.as_str())
    .bind(fact.referred_at)
    .bind(fact.counted)
    .bind(fact.funnel_step())
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn update_journey(
    conn: &mut PgConnection,
    journey_id: Uuid,
    fact: &JourneyFact,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE journeys SET site_id = $2, stage = $3, stage_entered_at = $4, counted = $5, \
         funnel_step = $6, prescreened_at = $7, prescreen_passed = $8, \
         first_contact_attempt_at = $9, contact_attempts = $10, contacted_at = $11, \
         referred_to_site_at = $12, reallocations = $13, site_contacted_at = $14, \
         scheduled_at = $15, first_appointment_at = $16, attended_at = $17, no_shows = $18, \
         first_no_show_at = $19, consented_at = $20, screening_started_at = $21, \
         screen_failed_at = $22, randomized_at = $23, closed_at = $24 \
         WHERE journey_id = $1",
    )
    .bind(journey_id)
    .bind(fact.site_id.map(|site| *site.as_uuid()))
    .bind(fact.stage.as_str())
    .bind(fact.stage_entered_at)
    .bind(fact.counted)
    .bind(fact.funnel_step())
    .bind(fact.prescreened_at)
    .bind(fact.prescreen_passed)
    .bind(fact.first_contact_attempt_at)
    .bind(fact.contact_attempts)
    .bind(fact.contacted_at)
    .bind(fact.referred_to_site_at)
    .bind(fact.reallocations)
    .bind(fact.site_contacted_at)
    .bind(fact.scheduled_at)
    .bind(fact.first_appointment_at)
    .bind(fact.attended_at)
    .bind(fact.no_shows)
    .bind(fact.first_no_show_at)
    .bind(fact.consented_at)
    .bind(fact.screening_started_at)
    .bind(fact.screen_failed_at)
    .bind(fact.randomized_at)
    .bind(fact.closed_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn upsert_visit(
    conn: &mut PgConnection,
    journey_id: Uuid,
    study_id: StudyId,
    site_id: SiteId,
    visit: &SiteVisit,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO journey_sites (journey_id, site_id, study_id, referred_at, left_at, \
         site_contacted_at, scheduled_at, attended_at, no_shows, consented_at, \
         screening_started_at, screen_failed_at, randomized_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (journey_id, site_id) DO UPDATE SET referred_at = EXCLUDED.referred_at, \
         left_at = EXCLUDED.left_at, site_contacted_at = EXCLUDED.site_contacted_at, \
         scheduled_at = EXCLUDED.scheduled_at, attended_at = EXCLUDED.attended_at, \
         no_shows = EXCLUDED.no_shows, consented_at = EXCLUDED.consented_at, \
         screening_started_at = EXCLUDED.screening_started_at, \
         screen_failed_at = EXCLUDED.screen_failed_at, randomized_at = EXCLUDED.randomized_at",
    )
    .bind(journey_id)
    .bind(*site_id.as_uuid())
    .bind(*study_id.as_uuid())
    .bind(visit.referred_at)
    .bind(visit.left_at)
    .bind(visit.site_contacted_at)
    .bind(visit.scheduled_at)
    .bind(visit.attended_at)
    .bind(visit.no_shows)
    .bind(visit.consented_at)
    .bind(visit.screening_started_at)
    .bind(visit.screen_failed_at)
    .bind(visit.randomized_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Reads the whole read model back into the shape [`super::fold`] builds, for comparison.
/// Meant for tests and audits on small data sets: it loads every row.
///
/// # Errors
/// PostgreSQL errors, or a stored value the model cannot hold.
pub async fn load(conn: &mut PgConnection) -> Result<DashboardModel, sqlx::Error> {
    let mut model = DashboardModel::default();
    for row in sqlx::query("SELECT * FROM studies")
        .fetch_all(&mut *conn)
        .await?
    {
        let countries: Vec<String> = row.try_get("countries")?;
        let target: i64 = row.try_get("target_randomized")?;
        model.studies.insert(
            StudyId::from_uuid(row.try_get("study_id")?),
            StudyRecord {
                sponsor_id: SponsorId::from_uuid(row.try_get("sponsor_id")?),
                title: row.try_get("title")?,
                protocol_code: row.try_get("protocol_code")?,
                target_randomized: u32::try_from(target)
                    .map_err(|_| corrupt("target", &target.to_string()))?,
                countries: countries
                    .iter()
                    .map(|country| parse_country(country))
                    .collect::<Result<_, _>>()?,
                created_at: row.try_get("created_at")?,
            },
        );
    }
    for row in sqlx::query("SELECT * FROM sites")
        .fetch_all(&mut *conn)
        .await?
    {
        model.sites.insert(
            (
                StudyId::from_uuid(row.try_get("study_id")?),
                SiteId::from_uuid(row.try_get("site_id")?),
            ),
            SiteRecord {
                name: row.try_get("name")?,
                country: parse_country(row.try_get("country")?)?,
                monthly_target_randomized: row.try_get("monthly_target_randomized")?,
                status: parse_site_status(row.try_get("status")?)?,
                added_at: row.try_get("added_at")?,
                closed_at: row.try_get("closed_at")?,
            },
        );
    }
    for row in sqlx::query("SELECT * FROM campaigns")
        .fetch_all(&mut *conn)
        .await?
    {
        model.campaigns.insert(
            (
                StudyId::from_uuid(row.try_get("study_id")?),
                CampaignId::from_uuid(row.try_get("campaign_id")?),
            ),
            CampaignRecord {
                name: row.try_get("name")?,
                channel: parse_source(row.try_get("channel")?)?,
                registered_at: row.try_get("registered_at")?,
            },
        );
    }
    for row in sqlx::query("SELECT * FROM campaign_spend")
        .fetch_all(&mut *conn)
        .await?
    {
        let currency: String = row.try_get("currency")?;
        model.spend.insert(
            row.try_get("event_id")?,
            SpendRecord {
                study_id: StudyId::from_uuid(row.try_get("study_id")?),
                campaign_id: CampaignId::from_uuid(row.try_get("campaign_id")?),
                amount_minor: row.try_get("amount_minor")?,
                currency: Currency::parse(&currency).map_err(|_| corrupt("currency", &currency))?,
                period_start: row.try_get("period_start")?,
                period_end: row.try_get("period_end")?,
                recorded_at: row.try_get("recorded_at")?,
            },
        );
    }
    for row in sqlx::query("SELECT * FROM journeys")
        .fetch_all(&mut *conn)
        .await?
    {
        let fact = journey_fact(&row)?;
        // The stored step is what queries use: it must agree with the milestones.
        let step: i16 = row.try_get("funnel_step")?;
        if step != fact.funnel_step() {
            return Err(corrupt("funnel step", &step.to_string()));
        }
        model.journeys.insert(
            JourneyId::from_uuid(row.try_get("journey_id")?),
            JourneyRecord {
                fact,
                visits: BTreeMap::new(),
            },
        );
    }
    for row in sqlx::query("SELECT * FROM journey_sites")
        .fetch_all(&mut *conn)
        .await?
    {
        let journey_id = JourneyId::from_uuid(row.try_get("journey_id")?);
        let Some((site, visit)) = site_visit(&row, "")? else {
            continue;
        };
        let journey = model
            .journeys
            .get_mut(&journey_id)
            .ok_or_else(|| corrupt("journey of a site visit", &journey_id.to_string()))?;
        journey.visits.insert(site, visit);
    }
    Ok(model)
}

/// The journeys among `ids` that have started, with their visits: two queries for a batch,
/// each by primary key (a join lets the planner, which cannot see the array's length, pick a
/// scan of the whole `journey_sites` table per batch).
pub(crate) async fn load_journeys(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, JourneyRecord>, sqlx::Error> {
    let mut records: HashMap<Uuid, JourneyRecord> = HashMap::with_capacity(ids.len());
    for row in sqlx::query("SELECT * FROM journeys WHERE journey_id = ANY($1)")
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?
    {
        let record = JourneyRecord {
            fact: journey_fact(&row)?,
            visits: BTreeMap::new(),
        };
        records.insert(row.try_get("journey_id")?, record);
    }
    for row in sqlx::query("SELECT * FROM journey_sites WHERE journey_id = ANY($1)")
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?
    {
        let journey_id: Uuid = row.try_get("journey_id")?;
        if let (Some(record), Some((site, visit))) =
            (records.get_mut(&journey_id), site_visit(&row, "")?)
        {
            record.visits.insert(site, visit);
        }
    }
    Ok(records)
}

/// Writes whole journey rows, new or changed, in one statement. The identity columns of a
/// journey that exists are left as they are (they never change after the referral).
pub(crate) async fn upsert_journeys(
    conn: &mut PgConnection,
    rows: &[(Uuid, &JourneyFact)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: &dyn Fn(&JourneyFact) -> Option<DateTime<Utc>>| -> Vec<Option<DateTime<Utc>>> {
        rows.iter().map(|(_, fact)| f(fact)).collect()
    };
    sqlx::query(
        "INSERT INTO journeys (journey_id, study_id, campaign_id, source, country, language, \
         site_id, stage, stage_entered_at, counted, funnel_step, referred_at, prescreened_at, \
         prescreen_passed, first_contact_attempt_at, contact_attempts, contacted_at, \
         referred_to_site_at, reallocations, site_contacted_at, scheduled_at, \
         first_appointment_at, attended_at, no_shows, first_no_show_at, consented_at, \
         screening_started_at, screen_failed_at, randomized_at, closed_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
         $6::text[], $7::uuid[], $8::text[], $9::timestamptz[], $10::bool[], $11::int2[], \
         $12::timestamptz[], $13::timestamptz[], $14::bool[], $15::timestamptz[], $16::int4[], \
         $17::timestamptz[], $18::timestamptz[], $19::int4[], $20::timestamptz[], \
         $21::timestamptz[], $22::timestamptz[], $23::timestamptz[], $24::int4[], \
         $25::timestamptz[], $26::timestamptz[], $27::timestamptz[], $28::timestamptz[], \
         $29::timestamptz[], $30::timestamptz[]) \
         ON CONFLICT (journey_id) DO UPDATE SET site_id = EXCLUDED.site_id, \
         stage = EXCLUDED.stage, stage_entered_at = EXCLUDED.stage_entered_at, \
         counted = EXCLUDED.counted, funnel_step = EXCLUDED.funnel_step, \
         prescreened_at = EXCLUDED.prescreened_at, prescreen_passed = EXCLUDED.prescreen_passed, \
         first_contact_attempt_at = EXCLUDED.first_contact_attempt_at, \
         contact_attempts = EXCLUDED.contact_attempts, contacted_at = EXCLUDED.contacted_at, \
         referred_to_site_at = EXCLUDED.referred_to_site_at, \
         reallocations = EXCLUDED.reallocations, site_contacted_at = EXCLUDED.site_contacted_at, \
         scheduled_at = EXCLUDED.scheduled_at, \
         first_appointment_at = EXCLUDED.first_appointment_at, \
         attended_at = EXCLUDED.attended_at, no_shows = EXCLUDED.no_shows, \
         first_no_show_at = EXCLUDED.first_no_show_at, consented_at = EXCLUDED.consented_at, \
         screening_started_at = EXCLUDED.screening_started_at, \
         screen_failed_at = EXCLUDED.screen_failed_at, randomized_at = EXCLUDED.randomized_at, \
         closed_at = EXCLUDED.closed_at",
    )
    .bind(rows.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, f)| *f.study_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, f)| *f.campaign_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, f)| f.source.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, f)| f.country.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, f)| f.language.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, f)| f.site_id.map(|site| *site.as_uuid()))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, f)| f.stage.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, f)| f.stage_entered_at)
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(_, f)| f.counted).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, f)| f.funnel_step())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(_, f)| f.referred_at).collect::<Vec<_>>())
    .bind(column(&|f| f.prescreened_at))
    .bind(
        rows.iter()
            .map(|(_, f)| f.prescreen_passed)
            .collect::<Vec<_>>(),
    )
    .bind(column(&|f| f.first_contact_attempt_at))
    .bind(
        rows.iter()
            .map(|(_, f)| f.contact_attempts)
            .collect::<Vec<_>>(),
    )
    .bind(column(&|f| f.contacted_at))
    .bind(column(&|f| f.referred_to_site_at))
    .bind(
        rows.iter()
            .map(|(_, f)| f.reallocations)
            .collect::<Vec<_>>(),
    )
    .bind(column(&|f| f.site_contacted_at))
    .bind(column(&|f| f.scheduled_at))
    .bind(column(&|f| f.first_appointment_at))
    .bind(column(&|f| f.attended_at))
    .bind(rows.iter().map(|(_, f)| f.no_shows).collect::<Vec<_>>())
    .bind(column(&|f| f.first_no_show_at))
    .bind(column(&|f| f.consented_at))
    .bind(column(&|f| f.screening_started_at))
    .bind(column(&|f| f.screen_failed_at))
    .bind(column(&|f| f.randomized_at))
    .bind(column(&|f| f.closed_at))
    .execute(conn)
    .await?;
    Ok(())
}

/// One journey's visit to one site, as [`upsert_visits`] writes it.
pub(crate) struct VisitRow<'a> {
    pub(crate) journey_id: Uuid,
    pub(crate) study_id: StudyId,
    pub(crate) site_id: SiteId,
    pub(crate) visit: &'a SiteVisit,
}

/// Writes visits, new or changed, in one statement.
pub(crate) async fn upsert_visits(
    conn: &mut PgConnection,
    rows: &[VisitRow<'_>],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: &dyn Fn(&SiteVisit) -> Option<DateTime<Utc>>| -> Vec<Option<DateTime<Utc>>> {
        rows.iter().map(|row| f(row.visit)).collect()
    };
    sqlx::query(
        "INSERT INTO journey_sites (journey_id, site_id, study_id, referred_at, left_at, \
         site_contacted_at, scheduled_at, attended_at, no_shows, consented_at, \
         screening_started_at, screen_failed_at, randomized_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], \
         $5::timestamptz[], $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], \
         $9::int4[], $10::timestamptz[], $11::timestamptz[], $12::timestamptz[], \
         $13::timestamptz[]) \
         ON CONFLICT (journey_id, site_id) DO UPDATE SET referred_at = EXCLUDED.referred_at, \
         left_at = EXCLUDED.left_at, site_contacted_at = EXCLUDED.site_contacted_at, \
         scheduled_at = EXCLUDED.scheduled_at, attended_at = EXCLUDED.attended_at, \
         no_shows = EXCLUDED.no_shows, consented_at = EXCLUDED.consented_at, \
         screening_started_at = EXCLUDED.screening_started_at, \
         screen_failed_at = EXCLUDED.screen_failed_at, randomized_at = EXCLUDED.randomized_at",
    )
    .bind(rows.iter().map(|row| row.journey_id).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|row| *row.site_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|row| *row.study_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.visit.referred_at)
            .collect::<Vec<_>>(),
    )
    .bind(column(&|v| v.left_at))
    .bind(column(&|v| v.site_contacted_at))
    .bind(column(&|v| v.scheduled_at))
    .bind(column(&|v| v.attended_at))
    .bind(
        rows.iter()
            .map(|row| row.visit.no_shows)
            .collect::<Vec<_>>(),
    )
    .bind(column(&|v| v.consented_at))
    .bind(column(&|v| v.screening_started_at))
    .bind(column(&|v| v.screen_failed_at))
    .bind(column(&|v| v.randomized_at))
    .execute(conn)
    .await?;
    Ok(())
}
