//! Rows of the read model to and from [`super::model`]'s plain data.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use funnel_domain::{Country, JourneyId, Language, SiteId, SlaSettings, Stage, StudyId};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::model::{ItemKind, JourneyQueueState, Mark, QueueModel, WorkItem};

fn corrupt(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("work_queue: unexpected {what} `{value}`").into())
}

fn to_u32(value: i32, what: &str) -> Result<u32, sqlx::Error> {
    u32::try_from(value).map_err(|_| corrupt(what, &value.to_string()))
}

fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn seq_to_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn parse_language(text: &str) -> Result<Language, sqlx::Error> {
    Language::parse(text).map_err(|_| corrupt("language", text))
}

fn parse_country(text: &str) -> Result<Country, sqlx::Error> {
    Country::parse(text).map_err(|_| corrupt("country", text))
}

fn parse_stage(text: &str) -> Result<Stage, sqlx::Error> {
    Stage::ALL
        .into_iter()
        .find(|stage| stage.as_str() == text)
        .ok_or_else(|| corrupt("stage", text))
}

/// A mark from the columns `<seq>` and `<at>`, both NULL or both set.
fn mark(row: &PgRow, seq: &str, at: &str) -> Result<Option<Mark>, sqlx::Error> {
    let seq: Option<i64> = row.try_get(seq)?;
    let at: Option<DateTime<Utc>> = row.try_get(at)?;
    match (seq, at) {
        (Some(seq), Some(at)) => Ok(Some(Mark {
            seq: u64::try_from(seq).map_err(|_| corrupt("sequence", &seq.to_string()))?,
            at,
        })),
        (None, None) => Ok(None),
        _ => Err(corrupt("half-set mark", "")),
    }
}

pub(crate) fn sla_of(row: &PgRow) -> Result<Option<SlaSettings>, sqlx::Error> {
    let Some(first_contact_hours) = row.try_get::<Option<i32>, _>("first_contact_hours")? else {
        return Ok(None);
    };
    Ok(Some(SlaSettings {
        first_contact_hours: to_u32(first_contact_hours, "first_contact_hours")?,
        contact_attempts: to_u32(row.try_get("contact_attempts")?, "contact_attempts")?,
        attempt_spacing_hours: to_u32(
            row.try_get("attempt_spacing_hours")?,
            "attempt_spacing_hours",
        )?,
        site_escalation_days: to_u32(row.try_get("site_escalation_days")?, "site_escalation_days")?,
    }))
}

fn journey_state(row: &PgRow) -> Result<JourneyQueueState, sqlx::Error> {
    let language: String = row.try_get("language")?;
    let referral = mark(row, "referral_seq", "referred_at")?
        .ok_or_else(|| corrupt("journey without referral", ""))?;
    let callback = match (
        mark(row, "callback_seq", "callback_requested_at")?,
        row.try_get::<Option<DateTime<Utc>>, _>("callback_at")?,
    ) {
        (Some(requested), Some(at)) => Some((requested, at)),
        (None, None) => None,
        _ => return Err(corrupt("half-set call-back", "")),
    };
    Ok(JourneyQueueState {
        journey_id: JourneyId::from_uuid(row.try_get("journey_id")?),
        study_id: StudyId::from_uuid(row.try_get("study_id")?),
        country: parse_country(row.try_get("country")?)?,
        language: parse_language(&language)?,
        time_zone: row.try_get("time_zone")?,
        consent_to_contact: row.try_get("consent_to_contact")?,
        erased: row.try_get("erased")?,
        stage: parse_stage(row.try_get("stage")?)?,
        site_id: row
            .try_get::<Option<Uuid>, _>("site_id")?
            .map(SiteId::from_uuid),
        prescreen_passed: row.try_get("prescreen_passed")?,
        referral,
        attempts: to_u32(row.try_get("attempts")?, "attempts")?,
        reached: row.try_get("reached")?,
        unanswered: to_u32(row.try_get("unanswered")?, "unanswered")?,
        cadence_started_at: row.try_get("cadence_started_at")?,
        last_attempt: mark(row, "last_attempt_seq", "last_attempt_at")?,
        callback,
        no_show: mark(row, "no_show_seq", "no_show_at")?,
        at_site: mark(row, "at_site_seq", "at_site_at")?,
        schedule: mark(row, "schedule_seq", "schedule_at")?,
    })
}

/// One journey's state and its study's service levels (`None` while the study is unknown).
pub(crate) async fn load_journey(
    conn: &mut PgConnection,
    journey_id: Uuid,
) -> Result<Option<(JourneyQueueState, Option<SlaSettings>)>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT j.*, s.first_contact_hours, s.contact_attempts, s.attempt_spacing_hours, \
         s.site_escalation_days \
         FROM queue_journeys j LEFT JOIN queue_studies s ON s.study_id = j.study_id \
         WHERE j.journey_id = $1",
    )
    .bind(journey_id)
    .fetch_optional(conn)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some((journey_state(&row)?, sla_of(&row)?)))
}

/// The journeys of a study, for deriving them again once the study's levels are known.
pub(crate) async fn journeys_of_study(
    conn: &mut PgConnection,
    study_id: Uuid,
) -> Result<Vec<JourneyQueueState>, sqlx::Error> {
    sqlx::query("SELECT * FROM queue_journeys WHERE study_id = $1")
        .bind(study_id)
        .fetch_all(conn)
        .await?
        .iter()
        .map(journey_state)
        .collect()
}

pub(crate) async fn study_sla(
    conn: &mut PgConnection,
    study_id: Uuid,
) -> Result<Option<SlaSettings>, sqlx::Error> {
    match sqlx::query("SELECT * FROM queue_studies WHERE study_id = $1")
        .bind(study_id)
        .fetch_optional(conn)
        .await?
    {
        Some(row) => sla_of(&row),
        None => Ok(None),
    }
}

/// Stores a study's levels; returns false when the study was already known (a repeated
/// creation changes nothing).
pub(crate) async fn insert_study(
    conn: &mut PgConnection,
    study_id: Uuid,
    sla: &SlaSettings,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO queue_studies (study_id, first_contact_hours, contact_attempts, \
         attempt_spacing_hours, site_escalation_days) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (study_id) DO NOTHING",
    )
    .bind(study_id)
    .bind(to_i32(sla.first_contact_hours))
    .bind(to_i32(sla.contact_attempts))
    .bind(to_i32(sla.attempt_spacing_hours))
    .bind(to_i32(sla.site_escalation_days))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes a journey's state: inserted when new (returns false if it existed: a second
/// referral changes nothing), else updated.
pub(crate) async fn save_journey(
    conn: &mut PgConnection,
    state: &JourneyQueueState,
    insert: bool,
) -> Result<bool, sqlx::Error> {
    let statement = if insert {
        "INSERT INTO queue_journeys (journey_id, study_id, country, language, time_zone, \
         consent_to_contact, erased, stage, site_id, prescreen_passed, referral_seq, \
         referred_at, attempts, reached, unanswered, cadence_started_at, last_attempt_seq, \
         last_attempt_at, callback_seq, callback_requested_at, callback_at, no_show_seq, \
         no_show_at, at_site_seq, at_site_at, schedule_seq, schedule_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21, $22, $23, $24, $25, $26, $27) \
         ON CONFLICT (journey_id) DO NOTHING"
    } else {
        // Identity columns ($2..$4, $11, $12) never change after the referral.
        "UPDATE queue_journeys SET time_zone = $5, consent_to_contact = $6, erased = $7, \
         stage = $8, site_id = $9, prescreen_passed = $10, attempts = $13, reached = $14, \
         unanswered = $15, cadence_started_at = $16, last_attempt_seq = $17, \
         last_attempt_at = $18, callback_seq = $19, callback_requested_at = $20, \
         callback_at = $21, no_show_seq = $22, no_show_at = $23, at_site_seq = $24, \
         at_site_at = $25, schedule_seq = $26, schedule_at = $27 \
         WHERE journey_id = $1 AND study_id = $2 AND country = $3 AND language = $4 \
         AND referral_seq = $11 AND referred_at = $12"
    };
    let seq = |mark: Option<Mark>| mark.map(|m| seq_to_i64(m.seq));
    let at = |mark: Option<Mark>| mark.map(|m| m.at);
    let callback = state.callback.map(|(requested, _)| requested);
    let done = sqlx::query(statement)
        .bind(*state.journey_id.as_uuid())
        .bind(*state.study_id.as_uuid())
        .bind(state.country.as_str())
        .bind(state.language.as_str())
        .bind(state.time_zone.as_deref())
        .bind(state.consent_to_contact)
        .bind(state.erased)
        .bind(state.stage.as_str())
        .bind(state.site_id.map(|site| *site.as_uuid()))
        .bind(state.prescreen_passed)
        .bind(seq_to_i64(state.referral.seq))
        .bind(state.referral.at)
        .bind(to_i32(state.attempts))
        .bind(state.reached)
        .bind(to_i32(state.unanswered))
        .bind(state.cadence_started_at)
        .bind(seq(state.last_attempt))
        .bind(at(state.last_attempt))
        .bind(seq(callback))
        .bind(at(callback))
        .bind(state.callback.map(|(_, callback_at)| callback_at))
        .bind(seq(state.no_show))
        .bind(at(state.no_show))
        .bind(seq(state.at_site))
        .bind(at(state.at_site))
        .bind(seq(state.schedule))
        .bind(at(state.schedule))
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) fn work_item(row: &PgRow) -> Result<WorkItem, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let language: String = row.try_get("language")?;
    Ok(WorkItem {
        item_id: row.try_get("item_id")?,
        journey_id: JourneyId::from_uuid(row.try_get("journey_id")?),
        study_id: StudyId::from_uuid(row.try_get("study_id")?),
        kind: ItemKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        country: parse_country(row.try_get("country")?)?,
        language: parse_language(&language)?,
        site_id: row
            .try_get::<Option<Uuid>, _>("site_id")?
            .map(SiteId::from_uuid),
        due_at: row.try_get("due_at")?,
        ready_at: row.try_get("ready_at")?,
        overdue_at: row.try_get("overdue_at")?,
        opened_at: row.try_get("opened_at")?,
        opened_seq: row.try_get("opened_seq")?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        time_zone: row.try_get("time_zone")?,
    })
}

pub(crate) async fn delete_item(conn: &mut PgConnection, item_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM work_items WHERE item_id = $1")
        .bind(item_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn delete_journey_items(
    conn: &mut PgConnection,
    journey_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM work_items WHERE journey_id = $1")
        .bind(journey_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts an item, or updates the one with its id (same opening, e.g. a new time zone).
pub(crate) async fn upsert_item(
    conn: &mut PgConnection,
    item: &WorkItem,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO work_items (item_id, journey_id, study_id, kind, country, language, \
         site_id, due_at, overdue_at, opened_at, opened_seq, attempt, max_attempts, time_zone, \
         ready_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (item_id) DO UPDATE SET site_id = EXCLUDED.site_id, \
         due_at = EXCLUDED.due_at, overdue_at = EXCLUDED.overdue_at, \
         ready_at = EXCLUDED.ready_at, \
         attempt = EXCLUDED.attempt, max_attempts = EXCLUDED.max_attempts, \
         time_zone = EXCLUDED.time_zone",
    )
    .bind(item.item_id)
    .bind(*item.journey_id.as_uuid())
    .bind(*item.study_id.as_uuid())
    .bind(item.kind.as_str())
    .bind(item.country.as_str())
    .bind(item.language.as_str())
    .bind(item.site_id.map(|site| *site.as_uuid()))
    .bind(item.due_at)
    .bind(item.overdue_at)
    .bind(item.opened_at)
    .bind(item.opened_seq)
    .bind(item.attempt)
    .bind(item.max_attempts)
    .bind(item.time_zone.as_deref())
    .bind(item.ready_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Reads the whole read model back into the shape [`super::fold`] builds, for comparison.
/// Meant for tests and audits on small data sets: it loads every row.
///
/// # Errors
/// PostgreSQL errors, or a stored value the model cannot hold.
pub async fn load(conn: &mut PgConnection) -> Result<QueueModel, sqlx::Error> {
    let mut model = QueueModel::default();
    for row in sqlx::query("SELECT * FROM queue_studies")
        .fetch_all(&mut *conn)
        .await?
    {
        let sla = sla_of(&row)?.ok_or_else(|| corrupt("study without levels", ""))?;
        model
            .studies
            .insert(StudyId::from_uuid(row.try_get("study_id")?), sla);
    }
    for row in sqlx::query("SELECT * FROM queue_journeys")
        .fetch_all(&mut *conn)
        .await?
    {
        let state = journey_state(&row)?;
        model.journeys.insert(state.journey_id, state);
    }
    for row in sqlx::query("SELECT * FROM work_items")
        .fetch_all(&mut *conn)
        .await?
    {
        let item = work_item(&row)?;
        model.items.insert((item.journey_id, item.kind), item);
    }
    Ok(model)
}

/// The journeys among `ids` with their study's levels (`None` while the study is unknown):
/// one query for a batch.
pub(crate) async fn load_journeys(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, (JourneyQueueState, Option<SlaSettings>)>, sqlx::Error> {
    sqlx::query(
        "SELECT j.*, s.first_contact_hours, s.contact_attempts, s.attempt_spacing_hours, \
         s.site_escalation_days \
         FROM queue_journeys j LEFT JOIN queue_studies s ON s.study_id = j.study_id \
         WHERE j.journey_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|row| {
        Ok((
            row.try_get("journey_id")?,
            (journey_state(row)?, sla_of(row)?),
        ))
    })
    .collect()
}

/// The levels of the known studies among `ids`.
pub(crate) async fn study_slas(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, SlaSettings>, sqlx::Error> {
    let mut slas = HashMap::new();
    for row in sqlx::query("SELECT * FROM queue_studies WHERE study_id = ANY($1)")
        .bind(ids)
        .fetch_all(conn)
        .await?
    {
        if let Some(sla) = sla_of(&row)? {
            slas.insert(row.try_get("study_id")?, sla);
        }
    }
    Ok(slas)
}

/// Writes journey states, new or changed, in one statement. The identity columns of a
/// journey that exists are left as they are (the caller has checked they did not change).
pub(crate) async fn upsert_journeys(
    conn: &mut PgConnection,
    states: &[&JourneyQueueState],
) -> Result<(), sqlx::Error> {
    if states.is_empty() {
        return Ok(());
    }
    let seqs = |f: &dyn Fn(&JourneyQueueState) -> Option<Mark>| -> Vec<Option<i64>> {
        states
            .iter()
            .map(|state| f(state).map(|m| seq_to_i64(m.seq)))
            .collect()
    };
    let times = |f: &dyn Fn(&JourneyQueueState) -> Option<Mark>| -> Vec<Option<DateTime<Utc>>> {
        states.iter().map(|state| f(state).map(|m| m.at)).collect()
    };
    let callback = |state: &JourneyQueueState| state.callback.map(|(requested, _)| requested);
    sqlx::query(
        "INSERT INTO queue_journeys (journey_id, study_id, country, language, time_zone, \
         consent_to_contact, erased, stage, site_id, prescreen_passed, referral_seq, \
         referred_at, attempts, reached, unanswered, cadence_started_at, last_attempt_seq, \
         last_attempt_at, callback_seq, callback_requested_at, callback_at, no_show_seq, \
         no_show_at, at_site_seq, at_site_at, schedule_seq, schedule_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
         $6::bool[], $7::bool[], $8::text[], $9::uuid[], $10::bool[], $11::int8[], \
         $12::timestamptz[], $13::int4[], $14::bool[], $15::int4[], $16::timestamptz[], \
         $17::int8[], $18::timestamptz[], $19::int8[], $20::timestamptz[], \
         $21::timestamptz[], $22::int8[], $23::timestamptz[], $24::int8[], \
         $25::timestamptz[], $26::int8[], $27::timestamptz[]) \
         ON CONFLICT (journey_id) DO UPDATE SET time_zone = EXCLUDED.time_zone, \
         consent_to_contact = EXCLUDED.consent_to_contact, erased = EXCLUDED.erased, \
         stage = EXCLUDED.stage, site_id = EXCLUDED.site_id, \
         prescreen_passed = EXCLUDED.prescreen_passed, attempts = EXCLUDED.attempts, \
         reached = EXCLUDED.reached, unanswered = EXCLUDED.unanswered, \
         cadence_started_at = EXCLUDED.cadence_started_at, \
         last_attempt_seq = EXCLUDED.last_attempt_seq, \
         last_attempt_at = EXCLUDED.last_attempt_at, callback_seq = EXCLUDED.callback_seq, \
         callback_requested_at = EXCLUDED.callback_requested_at, \
         callback_at = EXCLUDED.callback_at, no_show_seq = EXCLUDED.no_show_seq, \
         no_show_at = EXCLUDED.no_show_at, at_site_seq = EXCLUDED.at_site_seq, \
         at_site_at = EXCLUDED.at_site_at, schedule_seq = EXCLUDED.schedule_seq, \
         schedule_at = EXCLUDED.schedule_at",
    )
    .bind(
        states
            .iter()
            .map(|s| *s.journey_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        states
            .iter()
            .map(|s| *s.study_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        states
            .iter()
            .map(|s| s.country.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        states
            .iter()
            .map(|s| s.language.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        states
            .iter()
            .map(|s| s.time_zone.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        states
            .iter()
            .map(|s| s.consent_to_contact)
            .collect::<Vec<_>>(),
    )
    .bind(states.iter().map(|s| s.erased).collect::<Vec<_>>())
    .bind(states.iter().map(|s| s.stage.as_str()).collect::<Vec<_>>())
    .bind(
        states
            .iter()
            .map(|s| s.site_id.map(|site| *site.as_uuid()))
            .collect::<Vec<_>>(),
    )
    .bind(
        states
            .iter()
            .map(|s| s.prescreen_passed)
            .collect::<Vec<_>>(),
    )
    .bind(
        states
            .iter()
            .map(|s| seq_to_i64(s.referral.seq))
            .collect::<Vec<_>>(),
    )
    .bind(states.iter().map(|s| s.referral.at).collect::<Vec<_>>())
    .bind(
        states
            .iter()
            .map(|s| to_i32(s.attempts))
            .collect::<Vec<_>>(),
    )
    .bind(states.iter().map(|s| s.reached).collect::<Vec<_>>())
    .bind(
        states
            .iter()
            .map(|s| to_i32(s.unanswered))
            .collect::<Vec<_>>(),
    )
    .bind(
        states
            .iter()
            .map(|s| s.cadence_started_at)
            .collect::<Vec<_>>(),
    )
    .bind(seqs(&|s| s.last_attempt))
    .bind(times(&|s| s.last_attempt))
    .bind(seqs(&callback))
    .bind(times(&callback))
    .bind(
        states
            .iter()
            .map(|s| s.callback.map(|(_, at)| at))
            .collect::<Vec<_>>(),
    )
    .bind(seqs(&|s| s.no_show))
    .bind(times(&|s| s.no_show))
    .bind(seqs(&|s| s.at_site))
    .bind(times(&|s| s.at_site))
    .bind(seqs(&|s| s.schedule))
    .bind(times(&|s| s.schedule))
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn delete_items(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM work_items WHERE item_id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// [`upsert_item`] for many items in one statement.
pub(crate) async fn upsert_items(
    conn: &mut PgConnection,
    items: &[&WorkItem],
) -> Result<(), sqlx::Error> {
    if items.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO work_items (item_id, journey_id, study_id, kind, country, language, \
         site_id, due_at, overdue_at, opened_at, opened_seq, attempt, max_attempts, time_zone, \
         ready_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
         $6::text[], $7::uuid[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], \
         $11::int8[], $12::int4[], $13::int4[], $14::text[], $15::timestamptz[]) \
         ON CONFLICT (item_id) DO UPDATE SET site_id = EXCLUDED.site_id, \
         due_at = EXCLUDED.due_at, overdue_at = EXCLUDED.overdue_at, \
         ready_at = EXCLUDED.ready_at, \
         attempt = EXCLUDED.attempt, max_attempts = EXCLUDED.max_attempts, \
         time_zone = EXCLUDED.time_zone",
    )
    .bind(items.iter().map(|i| i.item_id).collect::<Vec<_>>())
    .bind(
        items
            .iter()
            .map(|i| *i.journey_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        items
            .iter()
            .map(|i| *i.study_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(items.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.country.as_str()).collect::<Vec<_>>())
    .bind(
        items
            .iter()
            .map(|i| i.language.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        items
            .iter()
            .map(|i| i.site_id.map(|site| *site.as_uuid()))
            .collect::<Vec<_>>(),
    )
    .bind(items.iter().map(|i| i.due_at).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.overdue_at).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.opened_at).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.opened_seq).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.attempt).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.max_attempts).collect::<Vec<_>>())
    .bind(
        items
            .iter()
            .map(|i| i.time_zone.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(items.iter().map(|i| i.ready_at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}
