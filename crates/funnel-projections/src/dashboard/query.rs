//! The sponsor dashboard's reports. Each takes a connection whose `search_path` is the live
//! generation's schema (from [`crate::ReadModels::read`]) and aggregates in PostgreSQL. The
//! definitions of every figure are in `docs/metrics.md`.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveTime, TimeDelta, Utc};
use funnel_domain::{CampaignId, Country, SiteId, SourceChannel, SponsorId, Stage, StudyId};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use utoipa::ToSchema;
use uuid::Uuid;

use super::store::{parse_country, parse_source};

/// Which journeys (and, for time series, which events) a report covers. Empty lists mean
/// "all".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DashboardFilter {
    /// First day (UTC), inclusive: of the referral for funnel, site, source and cohort
    /// figures; of the counted event for time series.
    pub from: Option<NaiveDate>,
    /// Last day (UTC), inclusive.
    pub to: Option<NaiveDate>,
    pub site_ids: Vec<SiteId>,
    /// The candidate's country.
    pub countries: Vec<Country>,
    /// The referral's source channel.
    pub sources: Vec<SourceChannel>,
}

impl DashboardFilter {
    fn site_uuids(&self) -> Vec<Uuid> {
        self.site_ids.iter().map(|site| *site.as_uuid()).collect()
    }

    fn country_codes(&self) -> Vec<String> {
        self.countries
            .iter()
            .map(|country| country.as_str().to_owned())
            .collect()
    }

    fn source_names(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|source| source.as_str().to_owned())
            .collect()
    }
}

// The SQL fragments below expect the parameters bound by `bind_filter!`: $1 study, $2 from,
// $3 to, $4 site ids, $5 countries, $6 sources. They are macros so that `concat!` can build
// each statement as one static string.

/// Counted journeys of the study, by the candidate's country and the source.
macro_rules! journeys_of_study {
    () => {
        "j.study_id = $1 AND j.counted \
         AND (cardinality($5::text[]) = 0 OR j.country = ANY($5::text[])) \
         AND (cardinality($6::text[]) = 0 OR j.source = ANY($6::text[]))"
    };
}

/// Journeys the site filter keeps: those handled by one of the sites now.
macro_rules! current_site_filter {
    () => {
        " AND (cardinality($4::uuid[]) = 0 OR j.site_id = ANY($4::uuid[]))"
    };
}

/// Journeys referred within the date range (UTC days, inclusive).
macro_rules! referral_dates {
    () => {
        " AND ($2::date IS NULL OR j.referred_at >= ($2::date::timestamp AT TIME ZONE 'UTC')) \
         AND ($3::date IS NULL OR j.referred_at < (($3::date + 1)::timestamp AT TIME ZONE 'UTC'))"
    };
}

/// How many of the rows reached each funnel step (furthest step reached, `j.funnel_step`).
macro_rules! funnel_counts {
    () => {
        "count(*) AS referred, \
         count(*) FILTER (WHERE j.funnel_step >= 1) AS prescreen_passed, \
         count(*) FILTER (WHERE j.funnel_step >= 2) AS contacted, \
         count(*) FILTER (WHERE j.funnel_step >= 3) AS referred_to_site, \
         count(*) FILTER (WHERE j.funnel_step >= 4) AS site_contacted, \
         count(*) FILTER (WHERE j.funnel_step >= 5) AS scheduled, \
         count(*) FILTER (WHERE j.funnel_step >= 6) AS attended, \
         count(*) FILTER (WHERE j.funnel_step >= 7) AS consented, \
         count(*) FILTER (WHERE j.funnel_step >= 8) AS screening, \
         count(*) FILTER (WHERE j.funnel_step >= 9) AS randomized"
    };
}

macro_rules! bind_filter {
    ($query:expr, $study:expr, $filter:expr) => {
        $query
            .bind(*$study.as_uuid())
            .bind($filter.from)
            .bind($filter.to)
            .bind($filter.site_uuids())
            .bind($filter.country_codes())
            .bind($filter.source_names())
    };
}

/// `numerator / denominator`, or `None` when there is nothing to divide by.
#[allow(
    clippy::cast_precision_loss,
    reason = "counts stay far below 2^52, where f64 is exact"
)]
fn ratio(numerator: i64, denominator: i64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

#[allow(
    clippy::cast_precision_loss,
    reason = "counts stay far below 2^52, where f64 is exact"
)]
const fn as_f64(count: i64) -> f64 {
    count as f64
}

/// The steps of the sponsor funnel, in order.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FunnelStage {
    Referred,
    PrescreenPassed,
    Contacted,
    ReferredToSite,
    SiteContacted,
    Scheduled,
    Attended,
    Consented,
    Screening,
    Randomized,
}

impl FunnelStage {
    pub const ALL: [Self; 10] = [
        Self::Referred,
        Self::PrescreenPassed,
        Self::Contacted,
        Self::ReferredToSite,
        Self::SiteContacted,
        Self::Scheduled,
        Self::Attended,
        Self::Consented,
        Self::Screening,
        Self::Randomized,
    ];
}

/// Journeys that reached each funnel step (or a later one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct FunnelCounts {
    pub referred: i64,
    pub prescreen_passed: i64,
    pub contacted: i64,
    pub referred_to_site: i64,
    pub site_contacted: i64,
    pub scheduled: i64,
    pub attended: i64,
    pub consented: i64,
    pub screening: i64,
    pub randomized: i64,
}

impl FunnelCounts {
    #[must_use]
    pub const fn get(&self, stage: FunnelStage) -> i64 {
        match stage {
            FunnelStage::Referred => self.referred,
            FunnelStage::PrescreenPassed => self.prescreen_passed,
            FunnelStage::Contacted => self.contacted,
            FunnelStage::ReferredToSite => self.referred_to_site,
            FunnelStage::SiteContacted => self.site_contacted,
            FunnelStage::Scheduled => self.scheduled,
            FunnelStage::Attended => self.attended,
            FunnelStage::Consented => self.consented,
            FunnelStage::Screening => self.screening,
            FunnelStage::Randomized => self.randomized,
        }
    }

    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            referred: row.try_get("referred")?,
            prescreen_passed: row.try_get("prescreen_passed")?,
            contacted: row.try_get("contacted")?,
            referred_to_site: row.try_get("referred_to_site")?,
            site_contacted: row.try_get("site_contacted")?,
            scheduled: row.try_get("scheduled")?,
            attended: row.try_get("attended")?,
            consented: row.try_get("consented")?,
            screening: row.try_get("screening")?,
            randomized: row.try_get("randomized")?,
        })
    }
}

/// One step of the funnel report.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct FunnelStep {
    pub stage: FunnelStage,
    /// Journeys that reached this step or a later one.
    pub journeys: i64,
    /// `journeys` / the previous step's `journeys`; `None` for the first step or when the
    /// previous step has none.
    pub conversion_from_previous: Option<f64>,
}

/// Journeys in one stage now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct StageCount {
    /// A journey stage (`funnel_domain::Stage`, snake_case).
    pub stage: String,
    pub journeys: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct StudyFunnelReport {
    #[schema(value_type = uuid::Uuid)]
    pub study_id: StudyId,
    pub steps: Vec<FunnelStep>,
    /// Randomized / referred.
    pub overall_conversion: Option<f64>,
    /// Journeys with a pre-screen result.
    pub prescreened: i64,
    /// Journeys whose latest pre-screen result is a pass.
    pub prescreen_passed: i64,
    pub prescreen_pass_rate: Option<f64>,
    /// Journeys that reached screening.
    pub screened: i64,
    pub screen_failed: i64,
    pub screen_fail_rate: Option<f64>,
    /// Journeys with a first appointment scheduled.
    pub scheduled: i64,
    /// Scheduled journeys with at least one no-show.
    pub no_showed: i64,
    pub no_show_rate: Option<f64>,
    /// Journeys in each stage now (stages with none left out), in funnel order.
    pub current_stages: Vec<StageCount>,
}

/// The funnel of the study's journeys.
///
/// # Errors
/// PostgreSQL errors.
pub async fn study_funnel(
    conn: &mut PgConnection,
    study: StudyId,
    filter: &DashboardFilter,
) -> Result<StudyFunnelReport, sqlx::Error> {
    let row = bind_filter!(
        sqlx::query(concat!(
            "WITH f AS MATERIALIZED (SELECT * FROM journeys j WHERE ",
            journeys_of_study!(),
            current_site_filter!(),
            referral_dates!(),
            ") SELECT ",
            funnel_counts!(),
            ", count(*) FILTER (WHERE j.prescreened_at IS NOT NULL) AS prescreened_any, \
             count(*) FILTER (WHERE j.prescreen_passed) AS prescreen_passed_latest, \
             count(*) FILTER (WHERE j.screen_failed_at IS NOT NULL) AS screen_failed, \
             count(*) FILTER (WHERE j.scheduled_at IS NOT NULL) AS scheduled_any, \
             count(*) FILTER (WHERE j.scheduled_at IS NOT NULL AND j.no_shows > 0) AS no_showed, \
             (SELECT coalesce(jsonb_object_agg(stage, n), '{}'::jsonb) \
              FROM (SELECT stage, count(*) AS n FROM f GROUP BY stage) AS s) AS current_stages \
             FROM f AS j"
        )),
        study,
        filter
    )
    .fetch_one(conn)
    .await?;
    let counts = FunnelCounts::from_row(&row)?;
    let steps = FunnelStage::ALL
        .iter()
        .enumerate()
        .map(|(index, &stage)| FunnelStep {
            stage,
            journeys: counts.get(stage),
            conversion_from_previous: index.checked_sub(1).and_then(|previous| {
                ratio(counts.get(stage), counts.get(FunnelStage::ALL[previous]))
            }),
        })
        .collect();
    let prescreened: i64 = row.try_get("prescreened_any")?;
    let prescreen_passed: i64 = row.try_get("prescreen_passed_latest")?;
    let screen_failed: i64 = row.try_get("screen_failed")?;
    let scheduled: i64 = row.try_get("scheduled_any")?;
    let no_showed: i64 = row.try_get("no_showed")?;
    let Json(current): Json<BTreeMap<String, i64>> = row.try_get("current_stages")?;
    let current_stages = Stage::ALL
        .iter()
        .filter_map(|stage| {
            current.get(stage.as_str()).map(|&journeys| StageCount {
                stage: stage.as_str().to_owned(),
                journeys,
            })
        })
        .collect();
    Ok(StudyFunnelReport {
        study_id: study,
        steps,
        overall_conversion: ratio(counts.randomized, counts.referred),
        prescreened,
        prescreen_passed,
        prescreen_pass_rate: ratio(prescreen_passed, prescreened),
        screened: counts.screening,
        screen_failed,
        screen_fail_rate: ratio(screen_failed, counts.screening),
        scheduled,
        no_showed,
        no_show_rate: ratio(no_showed, scheduled),
        current_stages,
    })
}

/// Median and 90th percentile of a duration, in hours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct Percentiles {
    pub median: Option<f64>,
    pub p90: Option<f64>,
    /// How many journeys the figures are over.
    pub journeys: i64,
}

/// One site's line of the leaderboard.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct SiteRow {
    #[schema(value_type = uuid::Uuid)]
    pub site_id: SiteId,
    /// `None` for a site referred to but never added to the study.
    pub name: Option<String>,
    pub country: Option<String>,
    /// `active`, `paused` or `closed`.
    pub status: Option<String>,
    /// Journeys referred (or reallocated) to the site.
    pub referrals: i64,
    /// Of those, contacted by the site.
    pub site_contacted: i64,
    pub scheduled: i64,
    pub attended: i64,
    pub consented: i64,
    pub randomized: i64,
    /// Randomized / referrals.
    pub conversion: Option<f64>,
    /// From the candidate's referral to the first contact attempt.
    pub hours_to_first_contact_attempt: Percentiles,
    /// From the referral to the site to the site's first contact.
    pub hours_to_site_contact: Percentiles,
    /// From the referral to the site to the first appointment booked there.
    pub hours_to_scheduled: Percentiles,
    /// Open journeys at the site that the site has neither contacted nor scheduled.
    pub not_acted_on: i64,
    /// How long the oldest of those has waited since its referral to the site.
    pub oldest_not_acted_on_hours: Option<f64>,
    /// Open journeys at the site now.
    pub open_journeys: i64,
    /// Median days since referral of the open journeys at the site.
    pub median_days_in_process: Option<f64>,
    /// Months (of 30.44 days) the site has been part of the study within the date range.
    pub active_months: Option<f64>,
    pub referrals_per_month: Option<f64>,
    pub randomized_per_month: Option<f64>,
    pub monthly_target_randomized: Option<f64>,
    /// `randomized_per_month` / `monthly_target_randomized`.
    pub target_attainment: Option<f64>,
    pub zero_or_one_randomized: bool,
    pub slower_than_study_median: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct SiteTable {
    #[schema(value_type = uuid::Uuid)]
    pub study_id: StudyId,
    /// The study-wide median of `hours_to_site_contact`, which `slower_than_study_median`
    /// compares with.
    pub study_median_hours_to_site_contact: Option<f64>,
    /// Randomized descending, then conversion descending, then referrals descending.
    pub sites: Vec<SiteRow>,
}

/// Hours between two timestamps as a float8 SQL expression.
macro_rules! hours {
    ($from:literal, $to:literal) => {
        concat!(
            "(extract(epoch FROM (",
            $to,
            " - ",
            $from,
            ")) / 3600.0)::float8"
        )
    };
}

macro_rules! percentiles {
    ($from:literal, $to:literal, $name:literal) => {
        concat!(
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY ",
            hours!($from, $to),
            ") AS ",
            $name,
            "_p50, percentile_cont(0.9) WITHIN GROUP (ORDER BY ",
            hours!($from, $to),
            ") AS ",
            $name,
            "_p90, count(",
            $to,
            ") AS ",
            $name,
            "_n"
        )
    };
}

fn percentiles(row: &PgRow, name: &str) -> Result<Percentiles, sqlx::Error> {
    Ok(Percentiles {
        median: row.try_get(format!("{name}_p50").as_str())?,
        p90: row.try_get(format!("{name}_p90").as_str())?,
        journeys: row
            .try_get::<Option<i64>, _>(format!("{name}_n").as_str())?
            .unwrap_or(0),
    })
}

const SECONDS_PER_MONTH: f64 = 30.436_875 * 86_400.0;

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

/// Months of the site's membership within the filter's date range, up to `now`.
#[allow(
    clippy::cast_precision_loss,
    reason = "seconds of a study's life stay far below 2^52"
)]
fn active_months(
    added_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
    filter: &DashboardFilter,
    now: DateTime<Utc>,
) -> f64 {
    let start = filter
        .from
        .map_or(added_at, |from| added_at.max(day_start(from)));
    let mut end = closed_at.map_or(now, |closed| closed.min(now));
    if let Some(to) = filter.to.and_then(|to| to.checked_add_days(Days::new(1))) {
        end = end.min(day_start(to));
    }
    ((end - start).num_seconds().max(0) as f64) / SECONDS_PER_MONTH
}

/// Per-site figures, as a leaderboard; sites without referrals are listed too.
///
/// # Errors
/// PostgreSQL errors.
pub async fn site_table(
    conn: &mut PgConnection,
    study: StudyId,
    filter: &DashboardFilter,
    now: DateTime<Utc>,
) -> Result<SiteTable, sqlx::Error> {
    let closed: Vec<&str> = Stage::ALL
        .iter()
        .filter(|stage| stage.is_closed())
        .map(|stage| stage.as_str())
        .collect();
    let rows = bind_filter!(
        sqlx::query(concat!(
            // Every site's visits, whatever the site filter: the study median is study-wide.
            "WITH v AS MATERIALIZED (SELECT s.site_id, s.referred_at AS site_referred_at, \
             s.left_at, s.site_contacted_at, s.scheduled_at, s.attended_at, s.consented_at, \
             s.randomized_at, j.referred_at, j.first_contact_attempt_at, \
             (s.left_at IS NULL AND NOT (j.stage = ANY($7::text[]))) AS open_here \
             FROM journey_sites s JOIN journeys j ON j.journey_id = s.journey_id \
             WHERE s.study_id = $1 AND ",
            journeys_of_study!(),
            referral_dates!(),
            "), per_site AS (SELECT site_id, count(*) AS referrals, \
             count(site_contacted_at) AS site_contacted, count(scheduled_at) AS scheduled, \
             count(attended_at) AS attended, count(consented_at) AS consented, \
             count(randomized_at) AS randomized, ",
            percentiles!("referred_at", "first_contact_attempt_at", "attempt"),
            ", ",
            percentiles!("site_referred_at", "site_contacted_at", "site_contact"),
            ", ",
            percentiles!("site_referred_at", "scheduled_at", "scheduled"),
            ", count(*) FILTER (WHERE open_here AND site_contacted_at IS NULL \
             AND scheduled_at IS NULL) AS not_acted_on, \
             max(",
            hours!("site_referred_at", "$8::timestamptz"),
            ") FILTER (WHERE open_here AND site_contacted_at IS NULL AND scheduled_at IS NULL) \
             AS oldest_not_acted_on_hours, \
             count(*) FILTER (WHERE open_here) AS open_journeys, \
             percentile_cont(0.5) WITHIN GROUP (ORDER BY ",
            hours!("referred_at", "$8::timestamptz"),
            " / 24.0) FILTER (WHERE open_here) AS median_days_in_process \
             FROM v GROUP BY site_id), \
             study_median AS (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ",
            hours!("site_referred_at", "site_contacted_at"),
            ") AS hours FROM v), \
             ids AS (SELECT site_id FROM sites WHERE study_id = $1 \
             UNION SELECT site_id FROM per_site) \
             SELECT ids.site_id AS id, st.name, st.country, st.status, \
             st.monthly_target_randomized, st.added_at, st.closed_at, \
             (SELECT hours FROM study_median) AS study_median, p.* \
             FROM ids LEFT JOIN sites st ON st.study_id = $1 AND st.site_id = ids.site_id \
             LEFT JOIN per_site p ON p.site_id = ids.site_id \
             WHERE cardinality($4::uuid[]) = 0 OR ids.site_id = ANY($4::uuid[])"
        )),
        study,
        filter
    )
    .bind(closed)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;

    let mut study_median = None;
    let mut sites = Vec::with_capacity(rows.len());
    for row in &rows {
        study_median = row.try_get("study_median")?;
        // Sites without referrals have no `per_site` row: their counts are NULL.
        let count = |name: &str| -> Result<i64, sqlx::Error> {
            Ok(row.try_get::<Option<i64>, _>(name)?.unwrap_or(0))
        };
        let referrals = count("referrals")?;
        let randomized = count("randomized")?;
        let added_at: Option<DateTime<Utc>> = row.try_get("added_at")?;
        let closed_at: Option<DateTime<Utc>> = row.try_get("closed_at")?;
        let months = added_at.map(|added| active_months(added, closed_at, filter, now));
        let per_month = |n: i64| {
            months
                .filter(|&months| months > 0.0)
                .map(|months| as_f64(n) / months)
        };
        let target: Option<f64> = row.try_get("monthly_target_randomized")?;
        let randomized_per_month = per_month(randomized);
        let site_contact = percentiles(row, "site_contact")?;
        let oldest_not_acted_on_hours: Option<f64> = row.try_get("oldest_not_acted_on_hours")?;
        sites.push(SiteRow {
            site_id: SiteId::from_uuid(row.try_get("id")?),
            name: row.try_get("name")?,
            country: row.try_get("country")?,
            status: row.try_get("status")?,
            referrals,
            site_contacted: count("site_contacted")?,
            scheduled: count("scheduled")?,
            attended: count("attended")?,
            consented: count("consented")?,
            randomized,
            conversion: ratio(randomized, referrals),
            hours_to_first_contact_attempt: percentiles(row, "attempt")?,
            hours_to_site_contact: site_contact,
            hours_to_scheduled: percentiles(row, "scheduled")?,
            not_acted_on: count("not_acted_on")?,
            oldest_not_acted_on_hours,
            open_journeys: count("open_journeys")?,
            median_days_in_process: row.try_get("median_days_in_process")?,
            active_months: months,
            referrals_per_month: per_month(referrals),
            randomized_per_month,
            monthly_target_randomized: target,
            target_attainment: randomized_per_month
                .zip(target)
                .and_then(|(rate, target)| (target > 0.0).then(|| rate / target)),
            zero_or_one_randomized: randomized <= 1,
            slower_than_study_median: slower(
                site_contact.median,
                oldest_not_acted_on_hours,
                study_median,
            ),
        });
    }
    sites.sort_by(|a, b| {
        b.randomized
            .cmp(&a.randomized)
            .then_with(|| {
                let conversion = |row: &SiteRow| row.conversion.unwrap_or(-1.0);
                conversion(b).total_cmp(&conversion(a))
            })
            .then_with(|| b.referrals.cmp(&a.referrals))
            .then_with(|| a.site_id.cmp(&b.site_id))
    });
    Ok(SiteTable {
        study_id: study,
        study_median_hours_to_site_contact: study_median,
        sites,
    })
}

/// A site is slower than the study when its median time to site contact exceeds the study's,
/// or, when it has contacted nobody yet, when a referral has waited longer than that median:
/// a site sitting on every referral must not escape the flag for lack of a median.
fn slower(
    site_median: Option<f64>,
    oldest_waiting: Option<f64>,
    study_median: Option<f64>,
) -> bool {
    let Some(study_median) = study_median else {
        return false;
    };
    match site_median {
        Some(median) => median > study_median,
        None => oldest_waiting.is_some_and(|waited| waited > study_median),
    }
}

/// Time-series bucket width. Weeks are ISO weeks (starting Monday), in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Day,
    Week,
    Month,
}

impl Bucket {
    const fn as_sql(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The first day of the bucket `day` falls in.
    #[must_use]
    pub fn start_of(self, day: NaiveDate) -> NaiveDate {
        match self {
            Self::Day => day,
            Self::Week => day - Days::new(u64::from(day.weekday().num_days_from_monday())),
            Self::Month => day.with_day(1).unwrap_or(day),
        }
    }

    fn next(self, start: NaiveDate) -> Option<NaiveDate> {
        match self {
            Self::Day => start.checked_add_days(Days::new(1)),
            Self::Week => start.checked_add_days(Days::new(7)),
            Self::Month => start.checked_add_months(Months::new(1)),
        }
    }
}

/// What a time series counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SeriesMetric {
    Referrals,
    Contacted,
    Scheduled,
    Attended,
    Screenings,
    Randomized,
}

impl SeriesMetric {
    const fn as_sql(self) -> &'static str {
        match self {
            Self::Referrals => "referrals",
            Self::Contacted => "contacted",
            Self::Scheduled => "scheduled",
            Self::Attended => "attended",
            Self::Screenings => "screenings",
            Self::Randomized => "randomized",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SeriesPoint {
    /// The first day of the bucket.
    pub bucket_start: NaiveDate,
    /// Set when the series is per site.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub site_id: Option<SiteId>,
    pub count: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct TimeSeries {
    #[schema(value_type = uuid::Uuid)]
    pub study_id: StudyId,
    pub metric: SeriesMetric,
    pub bucket: Bucket,
    pub by_site: bool,
    /// Ordered by site, then bucket; buckets without events are included with 0, from the
    /// filter's first day (or the first event) to its last day (or the last event).
    pub points: Vec<SeriesPoint>,
}

/// Events whose own date lies in the range (UTC days, inclusive); `x.at` is the event time.
macro_rules! event_dates {
    () => {
        " AND x.at IS NOT NULL \
         AND ($2::date IS NULL OR x.at >= ($2::date::timestamp AT TIME ZONE 'UTC')) \
         AND ($3::date IS NULL OR x.at < (($3::date + 1)::timestamp AT TIME ZONE 'UTC'))"
    };
}

/// Counts of one milestone per bucket of the event's own date, for the study or per site.
///
/// # Errors
/// PostgreSQL errors.
pub async fn time_series(
    conn: &mut PgConnection,
    study: StudyId,
    filter: &DashboardFilter,
    bucket: Bucket,
    metric: SeriesMetric,
    by_site: bool,
) -> Result<TimeSeries, sqlx::Error> {
    let query = if by_site {
        sqlx::query(concat!(
            "SELECT date_trunc($7, x.at AT TIME ZONE 'UTC')::date AS bucket, x.site_id, \
             count(*) AS n FROM (SELECT s.site_id, CASE $8 \
             WHEN 'referrals' THEN s.referred_at WHEN 'contacted' THEN s.site_contacted_at \
             WHEN 'scheduled' THEN s.scheduled_at WHEN 'attended' THEN s.attended_at \
             WHEN 'screenings' THEN s.screening_started_at \
             WHEN 'randomized' THEN s.randomized_at END AS at \
             FROM journey_sites s JOIN journeys j ON j.journey_id = s.journey_id \
             WHERE s.study_id = $1 AND ",
            journeys_of_study!(),
            " AND (cardinality($4::uuid[]) = 0 OR s.site_id = ANY($4::uuid[]))) AS x WHERE true",
            event_dates!(),
            " GROUP BY 1, 2"
        ))
    } else {
        sqlx::query(concat!(
            "SELECT date_trunc($7, x.at AT TIME ZONE 'UTC')::date AS bucket, \
             NULL::uuid AS site_id, count(*) AS n FROM (SELECT CASE $8 \
             WHEN 'referrals' THEN j.referred_at WHEN 'contacted' THEN j.contacted_at \
             WHEN 'scheduled' THEN j.scheduled_at WHEN 'attended' THEN j.attended_at \
             WHEN 'screenings' THEN j.screening_started_at \
             WHEN 'randomized' THEN j.randomized_at END AS at \
             FROM journeys j WHERE ",
            journeys_of_study!(),
            current_site_filter!(),
            ") AS x WHERE true",
            event_dates!(),
            " GROUP BY 1"
        ))
    };
    let rows = bind_filter!(query, study, filter)
        .bind(bucket.as_sql())
        .bind(metric.as_sql())
        .fetch_all(conn)
        .await?;
    let mut series: BTreeMap<Option<SiteId>, BTreeMap<NaiveDate, i64>> = BTreeMap::new();
    if by_site {
        for site in &filter.site_ids {
            series.entry(Some(*site)).or_default();
        }
    } else {
        series.entry(None).or_default();
    }
    for row in rows {
        let site: Option<Uuid> = row.try_get("site_id")?;
        series
            .entry(site.map(SiteId::from_uuid))
            .or_default()
            .insert(row.try_get("bucket")?, row.try_get("n")?);
    }
    let first = filter
        .from
        .or_else(|| {
            series
                .values()
                .filter_map(|points| points.keys().next())
                .min()
                .copied()
        })
        .map(|day| bucket.start_of(day));
    let last = filter
        .to
        .or_else(|| {
            series
                .values()
                .filter_map(|points| points.keys().next_back())
                .max()
                .copied()
        })
        .map(|day| bucket.start_of(day));
    let mut points = Vec::new();
    if let (Some(first), Some(last)) = (first, last) {
        for (site, counts) in &series {
            let mut start = Some(first);
            while let Some(day) = start.filter(|day| *day <= last) {
                points.push(SeriesPoint {
                    bucket_start: day,
                    site_id: *site,
                    count: counts.get(&day).copied().unwrap_or(0),
                });
                start = bucket.next(day);
            }
        }
    }
    Ok(TimeSeries {
        study_id: study,
        metric,
        bucket,
        by_site,
        points,
    })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct CohortRow {
    /// The Monday (UTC) of the ISO week of referral.
    pub week_start: NaiveDate,
    pub reached: FunnelCounts,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct CohortTable {
    #[schema(value_type = uuid::Uuid)]
    pub study_id: StudyId,
    /// Weeks with at least one referral, oldest first.
    pub weeks: Vec<CohortRow>,
}

/// Journeys by ISO week of referral, and how far each week's journeys got.
///
/// # Errors
/// PostgreSQL errors.
pub async fn cohorts(
    conn: &mut PgConnection,
    study: StudyId,
    filter: &DashboardFilter,
) -> Result<CohortTable, sqlx::Error> {
    let rows = bind_filter!(
        sqlx::query(concat!(
            "SELECT date_trunc('week', j.referred_at AT TIME ZONE 'UTC')::date AS week_start, ",
            funnel_counts!(),
            " FROM journeys j WHERE ",
            journeys_of_study!(),
            current_site_filter!(),
            referral_dates!(),
            " GROUP BY 1 ORDER BY 1"
        )),
        study,
        filter
    )
    .fetch_all(conn)
    .await?;
    let weeks = rows
        .iter()
        .map(|row| {
            Ok(CohortRow {
                week_start: row.try_get("week_start")?,
                reached: FunnelCounts::from_row(row)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(CohortTable {
        study_id: study,
        weeks,
    })
}

/// An amount of money in the currency's minor unit (cents).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
pub struct Money {
    pub currency: String,
    pub amount_minor: i64,
}

/// Referrals, randomized and cost of one channel or campaign.
#[derive(Clone, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct AttributionFigures {
    pub referrals: i64,
    pub randomized: i64,
    /// Randomized / referrals.
    pub conversion: Option<f64>,
    /// Recorded spend per currency (prorated to the date range when one is given).
    pub spend: Vec<Money>,
    /// Spend / referrals per currency, rounded to the minor unit; empty without spend or
    /// referrals, or when a site or country filter is set (spend is not split by those).
    pub cost_per_referral: Vec<Money>,
    /// Spend / randomized per currency, likewise.
    pub cost_per_randomized: Vec<Money>,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ChannelAttribution {
    #[schema(value_type = String)]
    pub channel: SourceChannel,
    #[serde(flatten)]
    pub figures: AttributionFigures,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct CampaignAttribution {
    #[schema(value_type = uuid::Uuid)]
    pub campaign_id: CampaignId,
    /// `None` for a campaign that referred candidates without being registered.
    pub name: Option<String>,
    /// The registered channel.
    #[schema(value_type = Option<String>)]
    pub channel: Option<SourceChannel>,
    #[serde(flatten)]
    pub figures: AttributionFigures,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct SourceAttribution {
    #[schema(value_type = uuid::Uuid)]
    pub study_id: StudyId,
    /// By the referral's source channel (spend by the campaign's registered channel).
    pub channels: Vec<ChannelAttribution>,
    /// By campaign, most referrals first.
    pub campaigns: Vec<CampaignAttribution>,
}

/// `amount / count` rounded half away from zero.
fn div_round(amount: i64, count: i64) -> Option<i64> {
    if count <= 0 {
        return None;
    }
    let (amount, count) = (i128::from(amount), i128::from(count));
    let quotient = (2 * amount.abs() + count) / (2 * count);
    i64::try_from(if amount < 0 { -quotient } else { quotient }).ok()
}

impl AttributionFigures {
    fn finish(&mut self, costs: bool) {
        self.conversion = ratio(self.randomized, self.referrals);
        self.spend.sort();
        if costs {
            let per = |count: i64| {
                self.spend
                    .iter()
                    .filter_map(|money| {
                        div_round(money.amount_minor, count).map(|amount_minor| Money {
                            currency: money.currency.clone(),
                            amount_minor,
                        })
                    })
                    .collect()
            };
            self.cost_per_referral = per(self.referrals);
            self.cost_per_randomized = per(self.randomized);
        }
    }

    fn add_spend(&mut self, currency: &str, amount_minor: i64) {
        match self
            .spend
            .iter_mut()
            .find(|money| money.currency == currency)
        {
            Some(money) => money.amount_minor = money.amount_minor.saturating_add(amount_minor),
            None => self.spend.push(Money {
                currency: currency.to_owned(),
                amount_minor,
            }),
        }
    }
}

/// Referrals, randomized, spend and cost per source channel and per campaign.
///
/// # Errors
/// PostgreSQL errors.
pub async fn source_attribution(
    conn: &mut PgConnection,
    study: StudyId,
    filter: &DashboardFilter,
) -> Result<SourceAttribution, sqlx::Error> {
    let counts = bind_filter!(
        sqlx::query(concat!(
            "SELECT j.campaign_id, j.source, count(*) AS referrals, \
             count(j.randomized_at) AS randomized, GROUPING(j.campaign_id) AS by_source \
             FROM journeys j WHERE ",
            journeys_of_study!(),
            current_site_filter!(),
            referral_dates!(),
            " GROUP BY GROUPING SETS ((j.campaign_id), (j.source))"
        )),
        study,
        filter
    )
    .fetch_all(&mut *conn)
    .await?;
    // Spend of the registered campaigns, prorated by the days of its period inside the range.
    let spend = sqlx::query(
        "SELECT c.campaign_id, c.name, c.channel, s.currency, \
         sum(CASE WHEN $2::date IS NULL AND $3::date IS NULL THEN s.amount_minor \
         ELSE div(s.amount_minor::numeric * greatest(0, \
         least(s.period_end, coalesce($3::date, s.period_end)) \
         - greatest(s.period_start, coalesce($2::date, s.period_start)) + 1), \
         greatest(1, s.period_end - s.period_start + 1))::bigint END)::bigint AS amount_minor \
         FROM campaigns c LEFT JOIN campaign_spend s \
         ON s.study_id = c.study_id AND s.campaign_id = c.campaign_id \
         WHERE c.study_id = $1 AND (cardinality($4::text[]) = 0 OR c.channel = ANY($4::text[])) \
         GROUP BY c.campaign_id, c.name, c.channel, s.currency",
    )
    .bind(*study.as_uuid())
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.source_names())
    .fetch_all(&mut *conn)
    .await?;

    let mut channels: BTreeMap<SourceChannel, AttributionFigures> = BTreeMap::new();
    let mut campaigns: BTreeMap<CampaignId, CampaignAttribution> = BTreeMap::new();
    let campaign = |campaigns: &mut BTreeMap<CampaignId, CampaignAttribution>, id: CampaignId| {
        campaigns.entry(id).or_insert_with(|| CampaignAttribution {
            campaign_id: id,
            name: None,
            channel: None,
            figures: AttributionFigures::default(),
        });
    };
    for row in &counts {
        let referrals: i64 = row.try_get("referrals")?;
        let randomized: i64 = row.try_get("randomized")?;
        let by_source: i32 = row.try_get("by_source")?;
        let figures = if by_source == 1 {
            let source: String = row.try_get("source")?;
            channels.entry(parse_source(&source)?).or_default()
        } else {
            let id = CampaignId::from_uuid(row.try_get("campaign_id")?);
            campaign(&mut campaigns, id);
            let Some(entry) = campaigns.get_mut(&id) else {
                continue;
            };
            &mut entry.figures
        };
        figures.referrals = referrals;
        figures.randomized = randomized;
    }
    for row in &spend {
        let id = CampaignId::from_uuid(row.try_get("campaign_id")?);
        let channel: String = row.try_get("channel")?;
        let channel = parse_source(&channel)?;
        campaign(&mut campaigns, id);
        let Some(entry) = campaigns.get_mut(&id) else {
            continue;
        };
        entry.name = Some(row.try_get("name")?);
        entry.channel = Some(channel);
        let channel_figures = channels.entry(channel).or_default();
        let currency: Option<String> = row.try_get("currency")?;
        let amount: Option<i64> = row.try_get("amount_minor")?;
        if let (Some(currency), Some(amount)) = (currency, amount) {
            entry.figures.add_spend(&currency, amount);
            channel_figures.add_spend(&currency, amount);
        }
    }
    // Spend covers whole campaigns: set against referrals narrowed by site or country, a
    // cost per referral would be wrong, so none is given then.
    let costs = filter.site_ids.is_empty() && filter.countries.is_empty();
    let channels = channels
        .into_iter()
        .map(|(channel, mut figures)| {
            figures.finish(costs);
            ChannelAttribution { channel, figures }
        })
        .collect();
    let mut campaigns: Vec<CampaignAttribution> = campaigns
        .into_values()
        .map(|mut campaign| {
            campaign.figures.finish(costs);
            campaign
        })
        .collect();
    campaigns.sort_by(|a, b| {
        b.figures
            .referrals
            .cmp(&a.figures.referrals)
            .then_with(|| a.campaign_id.cmp(&b.campaign_id))
    });
    Ok(SourceAttribution {
        study_id: study,
        channels,
        campaigns,
    })
}

/// Why there is (or is no) forecast date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ForecastStatus {
    /// `forecast_date` is when the target is reached at the current rate.
    Forecast,
    /// The target is reached already.
    TargetReached,
    /// Nobody was randomized in the rate window: at a rate of 0 the target is never reached.
    NoRecentRandomizations,
    /// No referral yet: there is no rate window.
    NoReferrals,
    /// The rate is so low that the date lies more than 100 years ahead.
    BeyondHorizon,
}

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct TargetForecast {
    #[schema(value_type = uuid::Uuid)]
    pub study_id: StudyId,
    pub target_randomized: i64,
    /// Counted journeys ever randomized.
    pub randomized: i64,
    /// `target_randomized - randomized`, at least 0.
    pub remaining: i64,
    /// The start of the rate window: 90 days before `now`, or the first referral if later.
    pub rate_window_start: Option<DateTime<Utc>>,
    pub rate_window_days: Option<f64>,
    pub randomized_in_window: i64,
    /// Randomized per day over the rate window.
    pub rate_per_day: Option<f64>,
    pub forecast_date: Option<NaiveDate>,
    pub status: ForecastStatus,
}

/// The rate window's length.
pub const FORECAST_WINDOW_DAYS: i64 = 90;

/// Target vs randomized, and when the target is reached at the recent rate. `None` when the
/// study does not exist.
///
/// # Errors
/// PostgreSQL errors.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "counts and seconds stay far below 2^52; the forecast is bounded to 100 years"
)]
pub async fn target_forecast(
    conn: &mut PgConnection,
    study: StudyId,
    now: DateTime<Utc>,
) -> Result<Option<TargetForecast>, sqlx::Error> {
    let window = now - TimeDelta::days(FORECAST_WINDOW_DAYS);
    let Some(row) = sqlx::query(
        "WITH c AS (SELECT count(j.randomized_at) AS randomized, min(j.referred_at) AS first \
         FROM journeys j WHERE j.study_id = $1 AND j.counted) \
         SELECT s.target_randomized, c.randomized, \
         CASE WHEN c.first IS NOT NULL THEN greatest(c.first, $3) END AS window_start, \
         (SELECT count(*) FROM journeys j WHERE j.study_id = $1 AND j.counted \
          AND j.randomized_at > greatest(c.first, $3) AND j.randomized_at <= $2) AS recent \
         FROM studies s CROSS JOIN c WHERE s.study_id = $1",
    )
    .bind(*study.as_uuid())
    .bind(now)
    .bind(window)
    .fetch_optional(conn)
    .await?
    else {
        return Ok(None);
    };
    let target: i64 = row.try_get("target_randomized")?;
    let randomized: i64 = row.try_get("randomized")?;
    let recent: i64 = row.try_get("recent")?;
    let window_start: Option<DateTime<Utc>> = row.try_get("window_start")?;
    let remaining = (target - randomized).max(0);
    let days = window_start.map(|start| (now - start).num_seconds().max(0) as f64 / 86_400.0);
    let rate = days
        .filter(|&days| days > 0.0)
        .map(|days| recent as f64 / days);
    let (status, forecast_date) = if remaining == 0 {
        (ForecastStatus::TargetReached, None)
    } else if window_start.is_none() {
        (ForecastStatus::NoReferrals, None)
    } else {
        match rate.filter(|&rate| rate > 0.0) {
            None => (ForecastStatus::NoRecentRandomizations, None),
            Some(rate) => {
                let days_left = remaining as f64 / rate;
                if days_left > 36_525.0 {
                    (ForecastStatus::BeyondHorizon, None)
                } else {
                    let date = now + TimeDelta::seconds((days_left * 86_400.0).ceil() as i64);
                    (ForecastStatus::Forecast, Some(date.date_naive()))
                }
            }
        }
    };
    Ok(Some(TargetForecast {
        study_id: study,
        target_randomized: target,
        randomized,
        remaining,
        rate_window_start: window_start,
        rate_window_days: days,
        randomized_in_window: recent,
        rate_per_day: rate,
        forecast_date,
        status,
    }))
}

/// Who owns a study and which sites it has: what the HTTP layer authorises with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct StudySummary {
    #[schema(value_type = uuid::Uuid)]
    pub study_id: StudyId,
    #[schema(value_type = uuid::Uuid)]
    pub sponsor_id: SponsorId,
    pub title: String,
    pub protocol_code: String,
    pub target_randomized: i64,
    #[schema(value_type = Vec<String>)]
    pub countries: Vec<Country>,
    #[schema(value_type = Vec<uuid::Uuid>)]
    pub site_ids: Vec<SiteId>,
    pub created_at: DateTime<Utc>,
}

fn study_summary_from_row(row: &PgRow) -> Result<StudySummary, sqlx::Error> {
    let countries: Vec<String> = row.try_get("countries")?;
    let site_ids: Vec<Uuid> = row.try_get("site_ids")?;
    Ok(StudySummary {
        study_id: StudyId::from_uuid(row.try_get("study_id")?),
        sponsor_id: SponsorId::from_uuid(row.try_get("sponsor_id")?),
        title: row.try_get("title")?,
        protocol_code: row.try_get("protocol_code")?,
        target_randomized: row.try_get("target_randomized")?,
        countries: countries
            .iter()
            .map(|country| parse_country(country))
            .collect::<Result<_, _>>()?,
        site_ids: site_ids.into_iter().map(SiteId::from_uuid).collect(),
        created_at: row.try_get("created_at")?,
    })
}

macro_rules! study_summary_select {
    () => {
        "SELECT s.study_id, s.sponsor_id, s.title, s.protocol_code, s.target_randomized, \
         s.countries, s.created_at, coalesce((SELECT array_agg(x.site_id ORDER BY x.site_id) \
         FROM sites x WHERE x.study_id = s.study_id), '{}'::uuid[]) AS site_ids FROM studies s "
    };
}

/// The study's owner and sites; `None` when no such study was created.
///
/// # Errors
/// PostgreSQL errors.
pub async fn study_summary(
    conn: &mut PgConnection,
    study: StudyId,
) -> Result<Option<StudySummary>, sqlx::Error> {
    sqlx::query(concat!(study_summary_select!(), "WHERE s.study_id = $1"))
        .bind(*study.as_uuid())
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(study_summary_from_row)
        .transpose()
}

/// Every study, or a sponsor's studies, oldest first.
///
/// # Errors
/// PostgreSQL errors.
pub async fn studies(
    conn: &mut PgConnection,
    sponsor: Option<SponsorId>,
) -> Result<Vec<StudySummary>, sqlx::Error> {
    sqlx::query(concat!(
        study_summary_select!(),
        "WHERE $1::uuid IS NULL OR s.sponsor_id = $1 ORDER BY s.created_at, s.study_id"
    ))
    .bind(sponsor.map(|sponsor| *sponsor.as_uuid()))
    .fetch_all(conn)
    .await?
    .iter()
    .map(study_summary_from_row)
    .collect()
}
