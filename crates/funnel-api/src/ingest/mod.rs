//! Referral ingest: a campaign's referral becomes a journey exactly once, and the same patient
//! referred twice to one study becomes a linked duplicate.
//!
//! 1. **Validate** the request into domain values; nothing is written for a refused request.
//! 2. **Reserve** the campaign's idempotency key (its external id, or an `Idempotency-Key`) in
//!    `referral_requests` with a fresh journey and candidate id and a keyed hash of the
//!    normalised request. The reservation is the idempotency record *for good*: a retry hours
//!    or days later, long after the stream's duplicate window, finds it and replays the answer.
//!    The same key with a different request is refused.
//! 3. **Duplicates**: keyed fingerprints of the normalised phone and e-mail are claimed in
//!    `contact_fingerprints` for the study, in sorted order. The primary key
//!    `(study_id, fingerprint)` decides a race: the first claim wins, the other referral waits for
//!    it and becomes the duplicate. A duplicate records no fingerprint of its own (new ones are
//!    added to the primary) and takes the primary's candidate id, so the person's data is sealed
//!    under one key and one erasure reaches every copy.
//! 4. **Append** the referral (plus a pre-screen result that came with it, plus the duplicate
//!    link) in one atomic append, with event ids derived from campaign, key and role. A retry
//!    after a crash anywhere in between re-runs the same steps with the same ids: the event log
//!    recognises its own events and the outcome is one journey.
//!
//! Steps 2 and 3 (and the candidate's data key) are one PostgreSQL transaction, shared by the
//! referrals that arrive at the same time ([`store`]); the study check reads a study kept in
//! memory and brought up to date from the stream ([`studies`]).
//!
//! Contact data is never logged, never put in an error message, never stored in plaintext here.

mod store;
mod studies;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use funnel_domain::{
    CampaignId, CandidateId, ContactDetails, Country, DomainEvent, JourneyCommand, JourneyEvent,
    JourneyId, Language, SealedContact, SiteId, SiteStatus, SourceChannel, StudyId, StudyState,
};
use funnel_eventlog::RecordedEvent;
use funnel_privacy::{FingerprintKey, PrivacyError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use tokio::sync::OnceCell;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Principal;
use crate::commands::{CommandError, decode_recorded, journey_key};
use crate::problem::ApiError;
pub(crate) use store::ClaimError;
pub(crate) use store::ReferralStore;
use store::{Claim, Claimed};
use studies::MAX_AGE;
pub(crate) use studies::StudyCache;

/// Longest campaign external id or `Idempotency-Key`.
pub(crate) const MAX_KEY_LEN: usize = 200;
const MAX_NAME_LEN: usize = 200;
const MAX_PHONE_LEN: usize = 40;
const MAX_EMAIL_LEN: usize = 254;
const MAX_NOTES_LEN: usize = 2_000;
const MAX_PRESCREEN_REASONS: usize = 20;
const MAX_REASON_LEN: usize = 200;

/// The contact-fingerprint key, read (or created) once and then kept in memory.
#[derive(Clone, Debug)]
pub(crate) struct Fingerprinter {
    pool: PgPool,
    key: Arc<OnceCell<FingerprintKey>>,
}

impl Fingerprinter {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            key: Arc::new(OnceCell::new()),
        }
    }

    /// The key; the first caller loads it (creating it on the service's very first use),
    /// concurrent first callers wait for that one load.
    pub(crate) async fn key(&self) -> Result<FingerprintKey, ApiError> {
        self.key
            .get_or_try_init(|| FingerprintKey::load_or_create(&self.pool))
            .await
            .cloned()
            .map_err(ApiError::internal)
    }
}

/// Where a referral came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Source {
    Newsletter,
    Ads,
    Portal,
    Advocacy,
    Physician,
    Other,
}

impl From<Source> for SourceChannel {
    fn from(source: Source) -> Self {
        match source {
            Source::Newsletter => Self::Newsletter,
            Source::Ads => Self::Ads,
            Source::Portal => Self::Portal,
            Source::Advocacy => Self::Advocacy,
            Source::Physician => Self::Physician,
            Source::Other => Self::Other,
        }
    }
}

/// One referral as a campaign posts it.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReferralRequest {
    #[schema(value_type = uuid::Uuid)]
    pub(crate) study_id: StudyId,
    #[schema(value_type = uuid::Uuid)]
    pub(crate) campaign_id: CampaignId,
    /// The campaign's own id for this referral (at most 200 characters): its idempotency key.
    /// Required unless the request carries an `Idempotency-Key` header.
    #[serde(default)]
    pub(crate) external_id: Option<String>,
    pub(crate) source: Source,
    /// BCP 47 tag of the language the candidate wants to be called in (`es`, `pt-BR`).
    pub(crate) language: String,
    /// ISO 3166-1 alpha-2 country code.
    pub(crate) country: String,
    /// A site of the study the candidate prefers.
    #[serde(default)]
    #[schema(value_type = Option<uuid::Uuid>)]
    pub(crate) preferred_site_id: Option<SiteId>,
    /// Whether the candidate agreed to be contacted.
    pub(crate) consent_to_contact: bool,
    /// IANA time zone (`Europe/Madrid`).
    #[serde(default)]
    pub(crate) time_zone: Option<String>,
    pub(crate) contact: ContactInput,
    /// An online pre-screen result that arrives with the referral.
    #[serde(default)]
    pub(crate) prescreen: Option<PrescreenInput>,
}

/// The candidate's contact data: sealed before it leaves the process, never logged.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContactInput {
    /// At most 200 characters.
    pub(crate) name: String,
    /// At least one of `phone` and `email` is required. At most 40 characters, 5+ digits.
    #[serde(default)]
    pub(crate) phone: Option<String>,
    /// At most 254 characters.
    #[serde(default)]
    pub(crate) email: Option<String>,
    /// Free text, at most 2,000 characters.
    #[serde(default)]
    pub(crate) notes: Option<String>,
}

impl fmt::Debug for ContactInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContactInput(<redacted>)")
    }
}

/// A pre-screen questionnaire result.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrescreenInput {
    pub(crate) passed: bool,
    /// Reason codes or short texts, no personal data (at most 20, each at most 200 characters).
    #[serde(default)]
    pub(crate) reasons: Vec<String>,
}

/// What became of a referral.
#[derive(Clone, Debug)]
pub(crate) struct Ingested {
    pub(crate) journey_id: JourneyId,
    pub(crate) candidate_id: CandidateId,
    pub(crate) duplicate_of: Option<JourneyId>,
    /// The journey's version right after the referral's events.
    pub(crate) version: u64,
    /// Answered from an earlier request with the same key.
    pub(crate) replayed: bool,
}

/// A request checked and normalised into domain values.
struct Validated {
    study_id: StudyId,
    campaign_id: CampaignId,
    source: SourceChannel,
    language: Language,
    country: Country,
    preferred_site: Option<SiteId>,
    consent_to_contact: bool,
    time_zone: Option<String>,
    external_ref: Option<String>,
    contact: ContactDetails,
    prescreen: Option<PrescreenInput>,
    /// `ext:<external id>` or `key:<Idempotency-Key>`.
    key: String,
    /// How `key` is stored: keyed-hashed, since a campaign's own reference may identify a
    /// person and must not outlive an erasure in plaintext.
    stored_key: String,
}

/// What the request hash covers: every field, normalised (so a retry with the phone in another
/// spelling still counts as the same request).
#[derive(Serialize)]
struct Normalised<'a> {
    study_id: StudyId,
    campaign_id: CampaignId,
    source: SourceChannel,
    language: &'a str,
    country: &'a str,
    preferred_site: Option<SiteId>,
    consent_to_contact: bool,
    time_zone: Option<&'a str>,
    external_ref: Option<&'a str>,
    name: &'a str,
    phone: Option<String>,
    email: Option<String>,
    notes: Option<&'a str>,
    prescreen: Option<&'a PrescreenInput>,
}

/// Event ids by role: the same campaign and key always give the same ids.
#[derive(Clone, Copy)]
struct EventIds {
    referral: Uuid,
    prescreen: Uuid,
    duplicate: Uuid,
}

impl EventIds {
    fn new(campaign: CampaignId, key: &str) -> Self {
        let id = |role: &str| {
            let mut hash = Sha256::new();
            hash.update(b"funnel.referral.event\0");
            hash.update(campaign.as_uuid().as_bytes());
            hash.update(key.as_bytes());
            hash.update([0]);
            hash.update(role.as_bytes());
            let digest = hash.finalize();
            let mut bytes = [0_u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            // Name-based (RFC 9562 version 8, SHA-256): deterministic, collision-free in practice.
            uuid::Builder::from_custom_bytes(bytes).into_uuid()
        };
        Self {
            referral: id("referral"),
            prescreen: id("prescreen"),
            duplicate: id("duplicate"),
        }
    }

    fn contains(self, id: Uuid) -> bool {
        id == self.referral || id == self.prescreen || id == self.duplicate
    }
}

/// Ingests referrals for one request (one referral or one batch).
pub(crate) struct Ingest {
    state: AppState,
    /// When the request arrived: its study checks see the study as of then or later.
    arrived: Instant,
}

impl Ingest {
    pub(crate) fn new(state: AppState) -> Self {
        Self {
            state,
            arrived: Instant::now(),
        }
    }

    /// Authorises, validates and ingests one referral. `idempotency_key` is the request's
    /// `Idempotency-Key` (for a batch item: the batch's key and the item's index); the
    /// referral's own `external_id` takes precedence.
    pub(crate) async fn referral(
        &self,
        principal: &Principal,
        request: ReferralRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Ingested, ApiError> {
        principal.require_referral_poster(request.study_id, request.campaign_id)?;
        let mut referral = validate(request, idempotency_key)?;
        self.check_study(&referral).await?;
        let key = self.state.fingerprints.key().await?;
        referral.stored_key = key
            .mac("referral.idempotency_key", referral.key.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let ids = EventIds::new(referral.campaign_id, &referral.key);
        let mut claim = Claim {
            campaign_id: *referral.campaign_id.as_uuid(),
            stored_key: referral.stored_key.clone(),
            request_hash: request_hash(&key, &referral),
            study_id: *referral.study_id.as_uuid(),
            journey_id: *JourneyId::new().as_uuid(),
            candidate_id: *CandidateId::new().as_uuid(),
            prints: key
                .of_contact(&referral.contact)
                .iter()
                .map(|print| print.as_bytes().to_vec())
                .collect(),
            fresh_key: funnel_privacy::new_data_key(),
            resume: false,
        };

        let (journey, candidate, duplicate_of, data_key) = loop {
            match self.state.referrals.claim(claim.clone()).await? {
                Claimed::Ready {
                    journey_id,
                    candidate_id,
                    duplicate_of,
                    data_key,
                } => break (journey_id, candidate_id, duplicate_of, data_key),
                Claimed::Existing {
                    same_request: false,
                    ..
                } => {
                    let which = if referral.key.starts_with("ext:") {
                        "external_id"
                    } else {
                        "Idempotency-Key"
                    };
                    return Err(ApiError::Conflict(format!(
                        "this campaign already sent a different referral with the same {which}; \
                         a retry must repeat the original request, a new referral needs a new \
                         {which}"
                    )));
                }
                Claimed::Existing {
                    journey_id,
                    candidate_id,
                    same_request: true,
                } => {
                    // An earlier request with this key: answer from what it appended, or finish
                    // it (it stopped before appending).
                    let recorded = self.read_journey(journey_id).await?;
                    if !recorded.is_empty() {
                        return replay(journey_id, candidate_id, ids, &recorded);
                    }
                    claim.journey_id = *journey_id.as_uuid();
                    claim.candidate_id = *candidate_id.as_uuid();
                    claim.resume = true;
                }
            }
        };
        let data_key = data_key.ok_or(CommandError::Privacy(PrivacyError::Erased))?;
        let sealed = funnel_privacy::seal_with_key(&data_key, candidate, &referral.contact)
            .map_err(ApiError::internal)?;
        let commands = commands_for(
            &referral,
            journey,
            candidate,
            sealed,
            duplicate_of,
            ids,
            self.state.clock.now(),
        );
        match self
            .state
            .commands
            .start_journey_with_ids(journey, &commands)
            .await
        {
            Ok(executed) => Ok(Ingested {
                journey_id: journey,
                candidate_id: candidate,
                duplicate_of,
                version: executed.version,
                replayed: false,
            }),
            // A concurrent request with the same key appended first.
            Err(CommandError::StaleVersion { .. }) => {
                let recorded = self.read_journey(journey).await?;
                if recorded.is_empty() {
                    Err(ApiError::Conflict(
                        "the referral is being processed concurrently; retry".to_owned(),
                    ))
                } else {
                    replay(journey, candidate, ids, &recorded)
                }
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Checks the referral against a recent state of its study; a refusal only against a state
    /// read after the request arrived.
    async fn check_study(&self, referral: &Validated) -> Result<(), ApiError> {
        let recent = self.arrived.checked_sub(MAX_AGE).unwrap_or(self.arrived);
        let state = self.study(referral.study_id, recent).await?;
        if study_refuses(&state, referral).is_none() {
            return Ok(());
        }
        let state = self.study(referral.study_id, self.arrived).await?;
        study_refuses(&state, referral).map_or(Ok(()), Err)
    }

    async fn study(&self, id: StudyId, as_of: Instant) -> Result<Arc<StudyState>, ApiError> {
        Ok(self
            .state
            .studies
            .get(&self.state.commands, id, as_of)
            .await?)
    }

    async fn read_journey(&self, journey: JourneyId) -> Result<Vec<RecordedEvent>, ApiError> {
        self.state
            .events
            .read(&journey_key(journey))
            .await
            .map_err(|err| ApiError::from(CommandError::from(err)))
    }
}

/// Why the study does not take this referral, if it does not.
fn study_refuses(state: &StudyState, referral: &Validated) -> Option<ApiError> {
    let Some(study) = state.study() else {
        return Some(ApiError::Unprocessable(format!(
            "study_id: study {} does not exist",
            referral.study_id
        )));
    };
    if !study.campaigns.contains_key(&referral.campaign_id) {
        return Some(ApiError::Unprocessable(format!(
            "campaign_id: campaign {} is not registered for study {}",
            referral.campaign_id, referral.study_id
        )));
    }
    let site = referral.preferred_site?;
    match state.site_status(site) {
        None => Some(ApiError::Unprocessable(format!(
            "preferred_site_id: site {site} is not part of study {}",
            referral.study_id
        ))),
        Some(SiteStatus::Closed) => Some(ApiError::Unprocessable(format!(
            "preferred_site_id: site {site} has left the study"
        ))),
        Some(SiteStatus::Active | SiteStatus::Paused) => None,
    }
}

/// The answer to a request whose journey is already on the stream, rebuilt from the events it
/// appended (not from later ones), so that every replay gives the same body.
fn replay(
    journey: JourneyId,
    candidate: CandidateId,
    ids: EventIds,
    recorded: &[RecordedEvent],
) -> Result<Ingested, ApiError> {
    let mut version = None;
    let mut duplicate_of = None;
    let mut candidate_id = candidate;
    for event in recorded.iter().filter(|event| ids.contains(event.id)) {
        version = Some(event.seq);
        match decode_recorded(event).map_err(ApiError::internal)? {
            DomainEvent::Journey(JourneyEvent::DuplicateLinked(link)) => {
                duplicate_of = Some(link.primary);
            }
            DomainEvent::Journey(JourneyEvent::ReferralReceived(referral)) => {
                candidate_id = referral.candidate_id;
            }
            _ => {}
        }
    }
    let version = version.ok_or_else(|| {
        ApiError::Conflict(format!(
            "journey {journey} exists but was not started by this referral"
        ))
    })?;
    Ok(Ingested {
        journey_id: journey,
        candidate_id,
        duplicate_of,
        version,
        replayed: true,
    })
}

fn commands_for(
    referral: &Validated,
    journey: JourneyId,
    candidate: CandidateId,
    contact: SealedContact,
    duplicate_of: Option<JourneyId>,
    ids: EventIds,
    at: chrono::DateTime<chrono::Utc>,
) -> Vec<(Uuid, JourneyCommand)> {
    let mut commands = vec![(
        ids.referral,
        JourneyCommand::ReceiveReferral {
            at,
            journey_id: journey,
            candidate_id: candidate,
            study_id: referral.study_id,
            campaign_id: referral.campaign_id,
            source: referral.source,
            language: referral.language.clone(),
            country: referral.country.clone(),
            preferred_site: referral.preferred_site,
            consent_to_contact: referral.consent_to_contact,
            contact,
            external_ref: referral.external_ref.clone(),
            time_zone: referral.time_zone.clone(),
        },
    )];
    if let Some(prescreen) = &referral.prescreen {
        // A failed pre-screen closes the journey, and a closed journey cannot be linked: for a
        // duplicate the link wins (the person must not be counted twice).
        if prescreen.passed || duplicate_of.is_none() {
            commands.push((
                ids.prescreen,
                JourneyCommand::CompletePrescreen {
                    at,
                    passed: prescreen.passed,
                    reasons: prescreen.reasons.clone(),
                },
            ));
        }
    }
    if let Some(primary) = duplicate_of {
        commands.push((ids.duplicate, JourneyCommand::LinkDuplicate { at, primary }));
    }
    commands
}

fn request_hash(key: &FingerprintKey, referral: &Validated) -> [u8; 32] {
    let contact = &referral.contact;
    let normalised = Normalised {
        study_id: referral.study_id,
        campaign_id: referral.campaign_id,
        source: referral.source,
        language: referral.language.as_str(),
        country: referral.country.as_str(),
        preferred_site: referral.preferred_site,
        consent_to_contact: referral.consent_to_contact,
        time_zone: referral.time_zone.as_deref(),
        external_ref: referral.external_ref.as_deref(),
        name: &contact.name,
        phone: contact
            .phone
            .as_deref()
            .and_then(funnel_privacy::fingerprint::normalise_phone),
        email: contact
            .email
            .as_deref()
            .and_then(funnel_privacy::fingerprint::normalise_email),
        notes: contact.notes.as_deref(),
        prescreen: referral.prescreen.as_ref(),
    };
    let json = serde_json::to_vec(&normalised).expect("the normalised request serialises");
    // Keyed: the digest of a request holding a phone number must not be testable by guessing.
    key.mac("referral-request", &json)
}

/// Checks an `Idempotency-Key` header value.
pub(crate) fn check_idempotency_key(key: &str) -> Result<(), ApiError> {
    if key.trim().is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible characters"
        )));
    }
    Ok(())
}

fn unprocessable(message: String) -> ApiError {
    ApiError::Unprocessable(message)
}

fn validate(
    request: ReferralRequest,
    idempotency_key: Option<&str>,
) -> Result<Validated, ApiError> {
    let external_ref = match request.external_id {
        Some(id) => {
            let id = id.trim().to_owned();
            if id.is_empty() || id.chars().count() > MAX_KEY_LEN || id.chars().any(char::is_control)
            {
                return Err(unprocessable(format!(
                    "external_id must be 1 to {MAX_KEY_LEN} characters on one line"
                )));
            }
            Some(id)
        }
        None => None,
    };
    let key = match (&external_ref, idempotency_key) {
        (Some(id), _) => format!("ext:{id}"),
        (None, Some(key)) => format!("key:{key}"),
        (None, None) => {
            return Err(unprocessable(
                "external_id is required unless the request has an Idempotency-Key header"
                    .to_owned(),
            ));
        }
    };
    let language = Language::parse(request.language.trim())
        .map_err(|err| unprocessable(format!("language: {err}")))?;
    let country = Country::parse(request.country.trim())
        .map_err(|err| unprocessable(format!("country: {err}")))?;
    let time_zone = match request.time_zone {
        Some(zone) if funnel_domain::values::is_plausible_time_zone(zone.trim()) => {
            Some(zone.trim().to_owned())
        }
        Some(_) => {
            return Err(unprocessable(
                "time_zone: not an IANA time zone name (like `Europe/Madrid`)".to_owned(),
            ));
        }
        None => None,
    };
    let contact = validate_contact(request.contact)?;
    if let Some(prescreen) = &request.prescreen {
        if prescreen.reasons.len() > MAX_PRESCREEN_REASONS {
            return Err(unprocessable(format!(
                "prescreen.reasons: at most {MAX_PRESCREEN_REASONS} reasons"
            )));
        }
        if prescreen
            .reasons
            .iter()
            .any(|reason| reason.trim().is_empty() || reason.chars().count() > MAX_REASON_LEN)
        {
            return Err(unprocessable(format!(
                "prescreen.reasons: each reason must be 1 to {MAX_REASON_LEN} characters"
            )));
        }
    }
    Ok(Validated {
        study_id: request.study_id,
        campaign_id: request.campaign_id,
        source: request.source.into(),
        language,
        country,
        preferred_site: request.preferred_site_id,
        consent_to_contact: request.consent_to_contact,
        time_zone,
        external_ref,
        contact,
        prescreen: request.prescreen,
        key,
        stored_key: String::new(),
    })
}

/// Checks contact data without ever echoing it in a message.
fn validate_contact(contact: ContactInput) -> Result<ContactDetails, ApiError> {
    let text =
        |field: &str, value: Option<String>, max: usize| -> Result<Option<String>, ApiError> {
            match value.map(|value| value.trim().to_owned()) {
                Some(value) if value.is_empty() => Ok(None),
                Some(value) if value.chars().count() > max => Err(unprocessable(format!(
                    "contact.{field} must be at most {max} characters"
                ))),
                other => Ok(other),
            }
        };
    let name = text("name", Some(contact.name), MAX_NAME_LEN)?
        .ok_or_else(|| unprocessable("contact.name must not be blank".to_owned()))?;
    let phone = text("phone", contact.phone, MAX_PHONE_LEN)?;
    let email = text("email", contact.email, MAX_EMAIL_LEN)?;
    let notes = text("notes", contact.notes, MAX_NOTES_LEN)?;
    if name.chars().any(char::is_control) {
        return Err(unprocessable("contact.name must be one line".to_owned()));
    }
    if let Some(phone) = &phone {
        let allowed = phone
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')' | '.' | '/'));
        if !allowed || funnel_privacy::fingerprint::normalise_phone(phone).is_none() {
            return Err(unprocessable(
                "contact.phone must be a phone number (digits, at least 5, with an optional \
                 leading +; spaces, dashes, dots and parentheses allowed)"
                    .to_owned(),
            ));
        }
    }
    if let Some(email) = &email {
        let plausible = funnel_privacy::fingerprint::normalise_email(email)
            .is_some_and(|email| !email.chars().any(char::is_whitespace));
        if !plausible {
            return Err(unprocessable(
                "contact.email must be an e-mail address".to_owned(),
            ));
        }
    }
    if phone.is_none() && email.is_none() {
        return Err(unprocessable(
            "contact needs a phone or an email (or both)".to_owned(),
        ));
    }
    Ok(ContactDetails {
        name,
        phone,
        email,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ReferralRequest {
        serde_json::from_value(serde_json::json!({
            "study_id": "0190f5a4-0000-7000-8000-000000000001",
            "campaign_id": "0190f5a4-0000-7000-8000-000000000002",
            "external_id": "cmp-1",
            "source": "ads",
            "language": "ES",
            "country": "es",
            "consent_to_contact": true,
            "contact": {"name": " Ana ", "phone": "+34 612 345 678"}
        }))
        .unwrap()
    }

    #[test]
    fn a_valid_request_is_normalised() {
        let validated = validate(request(), None).unwrap();
        assert_eq!(validated.language.as_str(), "es");
        assert_eq!(validated.country.as_str(), "ES");
        assert_eq!(validated.contact.name, "Ana");
        assert_eq!(validated.key, "ext:cmp-1");
    }

    #[test]
    fn errors_name_the_field_and_never_echo_contact_data() {
        let mut bad = request();
        bad.country = "XX".to_owned();
        let err = validate(bad, None).err().unwrap().to_string();
        assert!(err.starts_with("country:"), "{err}");

        let mut bad = request();
        bad.contact.phone = Some("call me 612".to_owned());
        let err = validate(bad, None).err().unwrap().to_string();
        assert!(
            err.contains("contact.phone") && !err.contains("612"),
            "{err}"
        );

        let mut bad = request();
        bad.contact.phone = None;
        let err = validate(bad, None).err().unwrap().to_string();
        assert!(err.contains("phone or an email"), "{err}");

        let mut bad = request();
        bad.external_id = None;
        assert!(validate(bad.clone(), None).is_err());
        assert_eq!(validate(bad, Some("k-1")).unwrap().key, "key:k-1");
    }

    #[test]
    fn the_request_hash_ignores_phone_spelling_but_not_content() {
        let key = FingerprintKey::from_bytes([3; 32]);
        let a = validate(request(), None).unwrap();
        let mut respelled = request();
        respelled.contact.phone = Some("+34-612-345-678".to_owned());
        let b = validate(respelled, None).unwrap();
        let mut other = request();
        other.consent_to_contact = false;
        let c = validate(other, None).unwrap();
        assert_eq!(request_hash(&key, &a), request_hash(&key, &b));
        assert_ne!(request_hash(&key, &a), request_hash(&key, &c));
    }

    #[test]
    fn event_ids_are_deterministic_per_campaign_key_and_role() {
        let campaign = CampaignId::new();
        let a = EventIds::new(campaign, "ext:1");
        let b = EventIds::new(campaign, "ext:1");
        assert_eq!(a.referral, b.referral);
        assert_ne!(a.referral, a.prescreen);
        assert_ne!(
            a.referral,
            EventIds::new(CampaignId::new(), "ext:1").referral
        );
        assert_ne!(a.referral, EventIds::new(campaign, "ext:2").referral);
        assert_eq!(a.referral.get_version_num(), 8);
    }
}
