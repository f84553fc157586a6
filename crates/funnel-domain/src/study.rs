//! The study aggregate: a study's setup, its sites and its campaigns.
//!
//! Same shape as the journey: [`decide_study`] judges a [`StudyCommand`], [`evolve_study`]
//! applies a stored [`StudyEvent`] (total, never refuses), [`fold_study`] replays.
//!
//! Journeys do not read this aggregate (aggregates never decide on each other's state); the
//! API consults [`StudyState::site_status`] before referring a candidate to a site.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::events::{
    CampaignRegistered, CampaignSpendRecorded, SiteAdded, SiteClosed, SitePaused, SiteResumed,
    StudyCreated, StudyEvent,
};
use crate::ids::{CampaignId, SiteId, SponsorId, StudyId};
use crate::validate::{require_optional_text, require_text, require_unique_non_empty};
use crate::values::{Country, Currency, Language, SlaSettings, SourceChannel};

/// Whether a site takes referrals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteStatus {
    Active,
    /// Temporarily not taking referrals; can resume.
    Paused,
    /// Left the study for good.
    Closed,
}

impl SiteStatus {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Closed => "closed",
        }
    }
}

impl fmt::Display for SiteStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One investigative site of the study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub site_id: SiteId,
    pub name: String,
    pub country: Country,
    pub languages: Vec<Language>,
    pub monthly_target_randomized: f64,
    pub status: SiteStatus,
    pub added_at: DateTime<Utc>,
}

/// One recruitment campaign of the study.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub campaign_id: CampaignId,
    pub name: String,
    pub channel: SourceChannel,
    pub registered_at: DateTime<Utc>,
    /// Total recorded spend per currency, in minor units. Currencies are never converted
    /// here: exchange rates are reporting policy, not domain facts.
    pub spend_minor: BTreeMap<Currency, i64>,
}

/// A created study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Study {
    pub study_id: StudyId,
    pub sponsor_id: SponsorId,
    pub title: String,
    pub protocol_code: String,
    pub target_randomized: u32,
    pub countries: Vec<Country>,
    pub languages: Vec<Language>,
    pub sla: SlaSettings,
    pub created_at: DateTime<Utc>,
    pub sites: BTreeMap<SiteId, Site>,
    pub campaigns: BTreeMap<CampaignId, Campaign>,
}

impl Study {
    fn from_created(created: &StudyCreated) -> Self {
        Self {
            study_id: created.study_id,
            sponsor_id: created.sponsor_id,
            title: created.title.clone(),
            protocol_code: created.protocol_code.clone(),
            target_randomized: created.target_randomized,
            countries: created.countries.clone(),
            languages: created.languages.clone(),
            sla: created.sla,
            created_at: created.at,
            sites: BTreeMap::new(),
            campaigns: BTreeMap::new(),
        }
    }

    /// Records one event. Total: events about unknown sites or campaigns are ignored, status
    /// events are recorded as they say.
    fn apply(&mut self, event: &StudyEvent) {
        match event {
            // The first creation defines the study.
            StudyEvent::StudyCreated(_) => {}
            StudyEvent::SiteAdded(e) => {
                self.sites.entry(e.site_id).or_insert_with(|| Site {
                    site_id: e.site_id,
                    name: e.name.clone(),
                    country: e.country.clone(),
                    languages: e.languages.clone(),
                    monthly_target_randomized: e.monthly_target_randomized,
                    status: SiteStatus::Active,
                    added_at: e.at,
                });
            }
            StudyEvent::SitePaused(e) => self.set_site_status(e.site_id, SiteStatus::Paused),
            StudyEvent::SiteResumed(e) => self.set_site_status(e.site_id, SiteStatus::Active),
            StudyEvent::SiteClosed(e) => self.set_site_status(e.site_id, SiteStatus::Closed),
            StudyEvent::CampaignRegistered(e) => {
                self.campaigns
                    .entry(e.campaign_id)
                    .or_insert_with(|| Campaign {
                        campaign_id: e.campaign_id,
                        name: e.name.clone(),
                        channel: e.channel,
                        registered_at: e.at,
                        spend_minor: BTreeMap::new(),
                    });
            }
            StudyEvent::CampaignSpendRecorded(e) => {
                if let Some(campaign) = self.campaigns.get_mut(&e.campaign_id) {
                    let total = campaign.spend_minor.entry(e.currency.clone()).or_insert(0);
                    *total = total.saturating_add(e.amount_minor);
                }
            }
        }
    }

    fn set_site_status(&mut self, site_id: SiteId, status: SiteStatus) {
        if let Some(site) = self.sites.get_mut(&site_id) {
            site.status = status;
        }
    }
}

/// The state of one study: not created until its creation event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyState {
    #[default]
    NotCreated,
    Created(Box<Study>),
}

impl StudyState {
    /// The created study, if any.
    #[must_use]
    pub fn study(&self) -> Option<&Study> {
        match self {
            Self::NotCreated => None,
            Self::Created(study) => Some(study),
        }
    }

    /// A site of the study.
    #[must_use]
    pub fn site(&self, site_id: SiteId) -> Option<&Site> {
        self.study().and_then(|study| study.sites.get(&site_id))
    }

    /// The status of a site, or `None` if the site is not part of the study.
    #[must_use]
    pub fn site_status(&self, site_id: SiteId) -> Option<SiteStatus> {
        self.site(site_id).map(|site| site.status)
    }

    /// Whether a site takes referrals (exists and is active).
    #[must_use]
    pub fn site_accepts_referrals(&self, site_id: SiteId) -> bool {
        self.site_status(site_id) == Some(SiteStatus::Active)
    }

    /// A campaign of the study.
    #[must_use]
    pub fn campaign(&self, campaign_id: CampaignId) -> Option<&Campaign> {
        self.study()
            .and_then(|study| study.campaigns.get(&campaign_id))
    }
}

/// An intention to change a study's setup, checked by [`decide_study`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum StudyCommand {
    CreateStudy {
        at: DateTime<Utc>,
        study_id: StudyId,
        sponsor_id: SponsorId,
        title: String,
        protocol_code: String,
        target_randomized: u32,
        countries: Vec<Country>,
        languages: Vec<Language>,
        #[serde(default)]
        sla: SlaSettings,
    },
    AddSite {
        at: DateTime<Utc>,
        site_id: SiteId,
        name: String,
        country: Country,
        languages: Vec<Language>,
        monthly_target_randomized: f64,
    },
    PauseSite {
        at: DateTime<Utc>,
        site_id: SiteId,
        reason: Option<String>,
    },
    ResumeSite {
        at: DateTime<Utc>,
        site_id: SiteId,
    },
    CloseSite {
        at: DateTime<Utc>,
        site_id: SiteId,
        reason: Option<String>,
    },
    RegisterCampaign {
        at: DateTime<Utc>,
        campaign_id: CampaignId,
        name: String,
        channel: SourceChannel,
    },
    RecordCampaignSpend {
        at: DateTime<Utc>,
        campaign_id: CampaignId,
        amount_minor: i64,
        currency: Currency,
        period_start: NaiveDate,
        period_end: NaiveDate,
    },
}

impl StudyCommand {
    /// The command's stable snake_case name, used in error messages and metrics.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::CreateStudy { .. } => "create_study",
            Self::AddSite { .. } => "add_site",
            Self::PauseSite { .. } => "pause_site",
            Self::ResumeSite { .. } => "resume_site",
            Self::CloseSite { .. } => "close_site",
            Self::RegisterCampaign { .. } => "register_campaign",
            Self::RecordCampaignSpend { .. } => "record_campaign_spend",
        }
    }
}

/// Decides what a command means for a study: the events to append, or why not.
///
/// # Errors
/// [`DomainError::StudyNotCreated`], [`DomainError::StudyAlreadyCreated`],
/// [`DomainError::UnknownSite`], [`DomainError::SiteAlreadyAdded`],
/// [`DomainError::IllegalSiteTransition`], [`DomainError::UnknownCampaign`],
/// [`DomainError::CampaignAlreadyRegistered`] or [`DomainError::Invalid`].
pub fn decide_study(
    state: &StudyState,
    command: &StudyCommand,
) -> Result<Vec<StudyEvent>, DomainError> {
    let event = match (state, command) {
        (StudyState::NotCreated, StudyCommand::CreateStudy { .. }) => create_study(command)?,
        (StudyState::NotCreated, _) => return Err(DomainError::StudyNotCreated),
        (StudyState::Created(_), StudyCommand::CreateStudy { .. }) => {
            return Err(DomainError::StudyAlreadyCreated);
        }
        (StudyState::Created(study), _) => decide_created(study, command)?,
    };
    Ok(vec![event])
}

/// Applies one event to a study state. Total, like the journey's `evolve`.
#[must_use]
pub fn evolve_study(state: StudyState, event: &StudyEvent) -> StudyState {
    match (state, event) {
        (StudyState::NotCreated, StudyEvent::StudyCreated(created)) => {
            StudyState::Created(Box::new(Study::from_created(created)))
        }
        (StudyState::NotCreated, _) => StudyState::NotCreated,
        (StudyState::Created(mut study), event) => {
            study.apply(event);
            StudyState::Created(study)
        }
    }
}

/// Replays a study's events from the beginning.
#[must_use]
pub fn fold_study<'a>(events: impl IntoIterator<Item = &'a StudyEvent>) -> StudyState {
    events
        .into_iter()
        .fold(StudyState::NotCreated, evolve_study)
}

fn create_study(command: &StudyCommand) -> Result<StudyEvent, DomainError> {
    let StudyCommand::CreateStudy {
        at,
        study_id,
        sponsor_id,
        title,
        protocol_code,
        target_randomized,
        countries,
        languages,
        sla,
    } = command
    else {
        return Err(DomainError::invalid("not a study creation"));
    };
    require_text("title", title)?;
    require_text("protocol_code", protocol_code)?;
    if *target_randomized == 0 {
        return Err(DomainError::invalid("target_randomized must be positive"));
    }
    require_unique_non_empty("countries", countries)?;
    require_unique_non_empty("languages", languages)?;
    if sla.first_contact_hours == 0
        || sla.contact_attempts == 0
        || sla.attempt_spacing_hours == 0
        || sla.site_escalation_days == 0
    {
        return Err(DomainError::invalid("every SLA setting must be positive"));
    }
    Ok(StudyCreated {
        at: *at,
        study_id: *study_id,
        sponsor_id: *sponsor_id,
        title: title.clone(),
        protocol_code: protocol_code.clone(),
        target_randomized: *target_randomized,
        countries: countries.clone(),
        languages: languages.clone(),
        sla: *sla,
    }
    .into())
}

fn decide_created(study: &Study, command: &StudyCommand) -> Result<StudyEvent, DomainError> {
    use StudyCommand as C;

    let site_status = |site_id: &SiteId| {
        study
            .sites
            .get(site_id)
            .map(|site| site.status)
            .ok_or(DomainError::UnknownSite(*site_id))
    };
    let require_status = |site_id: &SiteId, allowed: &[SiteStatus]| {
        let status = site_status(site_id)?;
        if allowed.contains(&status) {
            Ok(())
        } else {
            Err(DomainError::IllegalSiteTransition {
                site_id: *site_id,
                status,
                command: command.name(),
            })
        }
    };

    let event: StudyEvent = match command {
        C::CreateStudy { .. } => return Err(DomainError::StudyAlreadyCreated),
        C::AddSite {
            at,
            site_id,
            name,
            country,
            languages,
            monthly_target_randomized,
        } => {
            // Even a closed site keeps its id: a site that rejoins is set up anew.
            if study.sites.contains_key(site_id) {
                return Err(DomainError::SiteAlreadyAdded(*site_id));
            }
            require_text("name", name)?;
            if !study.countries.contains(country) {
                return Err(DomainError::invalid(format!(
                    "the study does not recruit in {country}"
                )));
            }
            require_unique_non_empty("languages", languages)?;
            if !monthly_target_randomized.is_finite() || *monthly_target_randomized < 0.0 {
                return Err(DomainError::invalid(
                    "monthly_target_randomized must be a finite, non-negative number",
                ));
            }
            SiteAdded {
                at: *at,
                site_id: *site_id,
                name: name.clone(),
                country: country.clone(),
                languages: languages.clone(),
                monthly_target_randomized: *monthly_target_randomized,
            }
            .into()
        }
        C::PauseSite {
            at,
            site_id,
            reason,
        } => {
            require_status(site_id, &[SiteStatus::Active])?;
            require_optional_text("reason", reason.as_deref())?;
            SitePaused {
                at: *at,
                site_id: *site_id,
                reason: reason.clone(),
            }
            .into()
        }
        C::ResumeSite { at, site_id } => {
            require_status(site_id, &[SiteStatus::Paused])?;
            SiteResumed {
                at: *at,
                site_id: *site_id,
            }
            .into()
        }
        C::CloseSite {
            at,
            site_id,
            reason,
        } => {
            require_status(site_id, &[SiteStatus::Active, SiteStatus::Paused])?;
            require_optional_text("reason", reason.as_deref())?;
            SiteClosed {
                at: *at,
                site_id: *site_id,
                reason: reason.clone(),
            }
            .into()
        }
        C::RegisterCampaign {
            at,
            campaign_id,
            name,
            channel,
        } => {
            if study.campaigns.contains_key(campaign_id) {
                return Err(DomainError::CampaignAlreadyRegistered(*campaign_id));
            }
            require_text("name", name)?;
            CampaignRegistered {
                at: *at,
                campaign_id: *campaign_id,
                name: name.clone(),
                channel: *channel,
            }
            .into()
        }
        C::RecordCampaignSpend {
            at,
            campaign_id,
            amount_minor,
            currency,
            period_start,
            period_end,
        } => {
            if !study.campaigns.contains_key(campaign_id) {
                return Err(DomainError::UnknownCampaign(*campaign_id));
            }
            if *amount_minor <= 0 {
                return Err(DomainError::invalid("the spend amount must be positive"));
            }
            if period_end < period_start {
                return Err(DomainError::invalid(
                    "the spend period cannot end before it starts",
                ));
            }
            CampaignSpendRecorded {
                at: *at,
                campaign_id: *campaign_id,
                amount_minor: *amount_minor,
                currency: currency.clone(),
                period_start: *period_start,
                period_end: *period_end,
            }
            .into()
        }
    };
    Ok(event)
}
