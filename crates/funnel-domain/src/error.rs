//! Why a command was refused. A refused command appends nothing.

use crate::ids::{CampaignId, SiteId};
use crate::journey::Stage;
use crate::study::SiteStatus;

/// A command refused by `decide` or `decide_study`. The messages are meant for the person who
/// sent the command (an agent, a site coordinator, an integrator), so they name the stage or
/// site status that made the command illegal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The command does not apply to a journey in this (open) stage, e.g. randomizing a
    /// journey that has not consented.
    #[error("`{command}` is not allowed in stage `{stage}`")]
    IllegalTransition { stage: Stage, command: &'static str },
    /// The journey has no referral yet; only `receive_referral` can start it.
    #[error("the journey has not started: it needs a referral first")]
    NotStarted,
    /// A referral for a journey that already exists.
    #[error("the journey has already started")]
    AlreadyStarted,
    /// The journey reached an end stage; only erasure (and withdrawal after randomization)
    /// is still accepted.
    #[error("the journey is closed in stage `{stage}`")]
    Closed { stage: Stage },
    /// A field of the command is unacceptable (blank reason, reallocation to the same site,
    /// contact without consent, ...).
    #[error("invalid command: {0}")]
    Invalid(String),
    /// The candidate's personal data was already erased.
    #[error("the candidate's personal data has already been erased")]
    AlreadyErased,
    /// A study command for a study that has not been created.
    #[error("the study has not been created")]
    StudyNotCreated,
    /// A second `create_study` for the same study.
    #[error("the study has already been created")]
    StudyAlreadyCreated,
    #[error("site {0} is not part of this study")]
    UnknownSite(SiteId),
    #[error("site {0} has already been added to this study")]
    SiteAlreadyAdded(SiteId),
    /// The site's status does not allow the command, e.g. resuming an active site.
    #[error("`{command}` is not allowed for site {site_id} in status `{status}`")]
    IllegalSiteTransition {
        site_id: SiteId,
        status: SiteStatus,
        command: &'static str,
    },
    #[error("campaign {0} is not registered for this study")]
    UnknownCampaign(CampaignId),
    #[error("campaign {0} is already registered for this study")]
    CampaignAlreadyRegistered(CampaignId),
}

impl DomainError {
    /// Shorthand for [`DomainError::Invalid`].
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}
