//! Events of a study's setup: the study itself, its sites and its recruitment campaigns.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::event_catalogue;
use crate::ids::{CampaignId, SiteId, SponsorId, StudyId};
use crate::values::{Country, Currency, Language, SlaSettings, SourceChannel};

event_catalogue! {
    /// Any event of a study's setup.
    pub enum StudyEvent {
        StudyCreated(StudyCreated) = ("funnel.study.created", 1),
        SiteAdded(SiteAdded) = ("funnel.study.site_added", 1),
        SitePaused(SitePaused) = ("funnel.study.site_paused", 1),
        SiteResumed(SiteResumed) = ("funnel.study.site_resumed", 1),
        SiteClosed(SiteClosed) = ("funnel.study.site_closed", 1),
        CampaignRegistered(CampaignRegistered) = ("funnel.study.campaign_registered", 1),
        CampaignSpendRecorded(CampaignSpendRecorded) =
            ("funnel.study.campaign_spend_recorded", 1),
    }
}

/// A study was set up for recruitment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyCreated {
    pub at: DateTime<Utc>,
    pub study_id: StudyId,
    pub sponsor_id: SponsorId,
    pub title: String,
    /// The sponsor's protocol code (e.g. `ABC-123-301`).
    pub protocol_code: String,
    /// Randomized patients the study needs in total.
    pub target_randomized: u32,
    /// Countries the study recruits in; sites must be in one of them.
    pub countries: Vec<Country>,
    /// Languages the study's material and agents cover.
    pub languages: Vec<Language>,
    #[serde(default)]
    pub sla: SlaSettings,
}

/// An investigative site joined the study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiteAdded {
    pub at: DateTime<Utc>,
    pub site_id: SiteId,
    pub name: String,
    pub country: Country,
    /// Languages the site's staff speak with patients.
    pub languages: Vec<Language>,
    /// Randomized patients per month the site committed to. Fractional, because real
    /// commitments are often below one patient a month (0.5 is common).
    pub monthly_target_randomized: f64,
}

/// The site stopped taking referrals for now (e.g. staff shortage, drug supply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SitePaused {
    pub at: DateTime<Utc>,
    pub site_id: SiteId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A paused site takes referrals again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteResumed {
    pub at: DateTime<Utc>,
    pub site_id: SiteId,
}

/// The site left the study for good; its open referrals need reallocating.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteClosed {
    pub at: DateTime<Utc>,
    pub site_id: SiteId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A recruitment campaign was registered as a source of referrals for the study.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignRegistered {
    pub at: DateTime<Utc>,
    pub campaign_id: CampaignId,
    pub name: String,
    pub channel: SourceChannel,
}

/// Money a campaign spent over a period, for cost per referral and per randomized patient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignSpendRecorded {
    pub at: DateTime<Utc>,
    pub campaign_id: CampaignId,
    /// The amount in the currency's minor unit (cents), to keep sums exact.
    pub amount_minor: i64,
    pub currency: Currency,
    /// First day of the period, inclusive.
    pub period_start: NaiveDate,
    /// Last day of the period, inclusive.
    pub period_end: NaiveDate,
}
