//! proptest strategies for commands and events.
//!
//! Command strategies draw ids from small pools (three sites, the journey's own id among the
//! duplicates' primaries) and mostly valid fields with occasional invalid ones, so random
//! sequences exercise both sides of every rule. Event strategies draw anything the types allow,
//! for the codec round trips.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use funnel_domain::events::*;
use funnel_domain::{
    AgentId, CampaignId, CandidateId, ContactChannel, ContactOutcome, Country, Currency,
    JourneyCommand, JourneyId, Language, SealedContact, SiteId, SlaSettings, SourceChannel,
    SponsorId, StudyCommand, StudyId,
};
use proptest::prelude::*;
use proptest::sample::select;
use uuid::Uuid;

use crate::support::{CAMPAIGN, JOURNEY, OTHER_JOURNEY, SITES, happy_path, t};

const LANGUAGES: &[&str] = &["es", "en", "de", "pt-BR", "zh-Hant-TW", "es-419", "fr-CA"];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "JPY", "CHF"];
const TIME_ZONES: &[&str] = &["Europe/Madrid", "America/New_York", "UTC", "Asia/Kolkata"];

// ----- values -----

/// A timestamp within about a year, to the nanosecond.
pub(crate) fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..31_536_000, 0u32..1_000_000_000).prop_map(|(seconds, nanos)| {
        DateTime::from_timestamp(1_735_689_600 + seconds, nanos).expect("in range")
    })
}

/// A minute within a few weeks of the fixtures' clock, so that commands interleave.
fn command_time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..60_000).prop_map(t)
}

fn any_date() -> impl Strategy<Value = NaiveDate> {
    (730_000i32..740_000)
        .prop_map(|days| NaiveDate::from_num_days_from_ce_opt(days).expect("valid"))
}

fn any_uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

pub(crate) fn any_country() -> impl Strategy<Value = Country> {
    select(Country::all_codes()).prop_map(|code| Country::parse(code).expect("listed"))
}

pub(crate) fn any_language() -> impl Strategy<Value = Language> {
    select(LANGUAGES).prop_map(|tag| Language::parse(tag).expect("valid"))
}

fn any_currency() -> impl Strategy<Value = Currency> {
    select(CURRENCIES).prop_map(|code| Currency::parse(code).expect("valid"))
}

fn any_source() -> impl Strategy<Value = SourceChannel> {
    select(SourceChannel::ALL.to_vec())
}

fn any_contact_channel() -> impl Strategy<Value = ContactChannel> {
    select(ContactChannel::ALL.to_vec())
}

fn any_outcome() -> impl Strategy<Value = ContactOutcome> {
    select(ContactOutcome::ALL.to_vec())
}

fn any_sealed_contact() -> impl Strategy<Value = SealedContact> {
    (
        "[a-z0-9]{1,20}",
        "[A-Za-z0-9+/=]{0,32}",
        "[A-Za-z0-9+/=]{1,64}",
    )
        .prop_map(|(alg, nonce, ciphertext)| SealedContact {
            alg,
            nonce,
            ciphertext,
        })
}

fn any_sla() -> impl Strategy<Value = SlaSettings> {
    (0u32..100, 0u32..10, 0u32..100, 0u32..20).prop_map(
        |(first_contact_hours, contact_attempts, attempt_spacing_hours, site_escalation_days)| {
            SlaSettings {
                first_contact_hours,
                contact_attempts,
                attempt_spacing_hours,
                site_escalation_days,
            }
        },
    )
}

/// Free text, mostly readable, sometimes blank (which `decide` refuses).
fn command_text() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => "[a-z][a-z0-9 ]{0,15}",
        1 => Just("  ".to_owned()),
    ]
}

fn site() -> impl Strategy<Value = SiteId> {
    select(SITES.to_vec())
}

/// Targets in hundredths: exact in JSON and realistic (0.5 patients a month).
fn monthly_target() -> impl Strategy<Value = f64> {
    (0u32..100_000).prop_map(|hundredths| f64::from(hundredths) / 100.0)
}

// ----- journey commands -----

fn receive_referral() -> impl Strategy<Value = JourneyCommand> {
    (
        command_time(),
        any_source(),
        any_language(),
        any_country(),
        proptest::option::of(site()),
        prop_oneof![4 => Just(true), 1 => Just(false)],
        any_sealed_contact(),
        proptest::option::of(command_text()),
        proptest::option::of(select(TIME_ZONES).prop_map(str::to_owned)),
    )
        .prop_map(
            |(
                at,
                source,
                language,
                country,
                preferred_site,
                consent_to_contact,
                contact,
                external_ref,
                time_zone,
            )| JourneyCommand::ReceiveReferral {
                at,
                journey_id: JOURNEY,
                candidate_id: CandidateId::from_uuid(Uuid::from_u128(7)),
                study_id: StudyId::from_uuid(Uuid::from_u128(8)),
                campaign_id: CAMPAIGN,
                source,
                language,
                country,
                preferred_site,
                consent_to_contact,
                contact,
                external_ref,
                time_zone,
            },
        )
}

/// Any journey command, over the fixtures' journey and sites.
pub(crate) fn journey_command() -> impl Strategy<Value = JourneyCommand> {
    let offset_minutes = -60i64..20_000;
    prop_oneof![
        1 => receive_referral(),
        2 => (command_time(), any::<bool>(), proptest::collection::vec(command_text(), 0..3))
            .prop_map(|(at, passed, reasons)| JourneyCommand::CompletePrescreen { at, passed, reasons }),
        6 => (command_time(), any_contact_channel(), any_outcome(), proptest::option::of(Just(AgentId::from_uuid(Uuid::from_u128(9)))))
            .prop_map(|(at, channel, outcome, agent)| JourneyCommand::RecordContactAttempt { at, channel, outcome, agent }),
        2 => (command_time(), offset_minutes.clone(), prop_oneof![9 => select(TIME_ZONES).prop_map(str::to_owned), 1 => Just("nowhere".to_owned())])
            .prop_map(|(at, offset, time_zone)| JourneyCommand::RequestCallback { at, callback_at: at + Duration::minutes(offset), time_zone }),
        3 => (command_time(), site()).prop_map(|(at, site_id)| JourneyCommand::ReferToSite { at, site_id }),
        2 => (command_time(), site(), command_text()).prop_map(|(at, to_site, reason)| JourneyCommand::Reallocate { at, to_site, reason }),
        2 => command_time().prop_map(|at| JourneyCommand::RecordSiteContact { at }),
        3 => (command_time(), offset_minutes.clone())
            .prop_map(|(at, offset)| JourneyCommand::ScheduleAppointment { at, appointment_at: at + Duration::minutes(offset) }),
        2 => (command_time(), offset_minutes)
            .prop_map(|(at, offset)| JourneyCommand::RescheduleAppointment { at, appointment_at: at + Duration::minutes(offset) }),
        2 => command_time().prop_map(|at| JourneyCommand::RecordAttendance { at }),
        2 => command_time().prop_map(|at| JourneyCommand::RecordNoShow { at }),
        2 => command_time().prop_map(|at| JourneyCommand::RecordConsent { at }),
        2 => command_time().prop_map(|at| JourneyCommand::StartScreening { at }),
        1 => (command_time(), command_text()).prop_map(|(at, reason)| JourneyCommand::RecordScreenFailure { at, reason }),
        2 => (command_time(), proptest::option::of(command_text())).prop_map(|(at, arm)| JourneyCommand::Randomize { at, arm }),
        1 => (command_time(), command_text()).prop_map(|(at, reason)| JourneyCommand::Withdraw { at, reason }),
        1 => (command_time(), command_text()).prop_map(|(at, reason)| JourneyCommand::Disqualify { at, reason }),
        1 => (command_time(), proptest::option::of(command_text())).prop_map(|(at, reason)| JourneyCommand::RecordNotInterested { at, reason }),
        2 => command_time().prop_map(|at| JourneyCommand::MarkUnreachable { at }),
        1 => command_time().prop_map(|at| JourneyCommand::OptOut { at }),
        1 => (command_time(), select(vec![JOURNEY, OTHER_JOURNEY])).prop_map(|(at, primary)| JourneyCommand::LinkDuplicate { at, primary }),
        1 => command_time().prop_map(|at| JourneyCommand::ErasePersonalData { at }),
    ]
}

/// Command sequences that reach every part of the funnel: either entirely random, or a prefix
/// of the happy path (so that deep stages are reached) followed by random commands.
pub(crate) fn journey_commands() -> impl Strategy<Value = Vec<JourneyCommand>> {
    let happy_length = happy_path().len();
    prop_oneof![
        1 => proptest::collection::vec(journey_command(), 0..40),
        3 => (0..=happy_length, proptest::collection::vec(journey_command(), 0..30)).prop_map(
            |(prefix, tail)| {
                let mut commands = happy_path();
                commands.truncate(prefix);
                commands.extend(tail);
                commands
            }
        ),
    ]
}

// ----- study commands -----

const CAMPAIGNS: [CampaignId; 2] = [
    CampaignId::from_uuid(Uuid::from_u128(0x5001)),
    CampaignId::from_uuid(Uuid::from_u128(0x5002)),
];

fn small_country() -> impl Strategy<Value = Country> {
    select(vec!["ES", "DE", "FR", "US"]).prop_map(|code| Country::parse(code).expect("valid"))
}

/// Any study command, over a few sites, campaigns and countries.
pub(crate) fn study_command() -> impl Strategy<Value = StudyCommand> {
    prop_oneof![
        1 => (
            command_time(),
            command_text(),
            0u32..500,
            proptest::collection::vec(small_country(), 0..3),
            proptest::collection::vec(any_language(), 0..3),
            any_sla(),
        )
            .prop_map(|(at, title, target_randomized, countries, languages, sla)| StudyCommand::CreateStudy {
                at,
                study_id: StudyId::from_uuid(Uuid::from_u128(8)),
                sponsor_id: SponsorId::from_uuid(Uuid::from_u128(10)),
                title,
                protocol_code: "P-1".to_owned(),
                target_randomized,
                countries,
                languages,
                sla,
            }),
        3 => (command_time(), site(), command_text(), small_country(), proptest::collection::vec(any_language(), 0..3), monthly_target())
            .prop_map(|(at, site_id, name, country, languages, monthly_target_randomized)| StudyCommand::AddSite {
                at, site_id, name, country, languages, monthly_target_randomized,
            }),
        2 => (command_time(), site(), proptest::option::of(command_text()))
            .prop_map(|(at, site_id, reason)| StudyCommand::PauseSite { at, site_id, reason }),
        2 => (command_time(), site()).prop_map(|(at, site_id)| StudyCommand::ResumeSite { at, site_id }),
        1 => (command_time(), site(), proptest::option::of(command_text()))
            .prop_map(|(at, site_id, reason)| StudyCommand::CloseSite { at, site_id, reason }),
        2 => (command_time(), select(CAMPAIGNS.to_vec()), command_text(), any_source())
            .prop_map(|(at, campaign_id, name, channel)| StudyCommand::RegisterCampaign { at, campaign_id, name, channel }),
        2 => (command_time(), select(CAMPAIGNS.to_vec()), -100i64..100_000, any_currency(), any_date(), 0i64..60)
            .prop_map(|(at, campaign_id, amount_minor, currency, period_start, days)| StudyCommand::RecordCampaignSpend {
                at,
                campaign_id,
                amount_minor,
                currency,
                period_start,
                period_end: period_start + Duration::days(days - 5),
            }),
    ]
}

// ----- events -----

/// Any journey event, with any field values the types allow.
pub(crate) fn any_journey_event() -> BoxedStrategy<JourneyEvent> {
    let text = any::<String>;
    let referral = (
        (any_time(), any_uuid(), any_uuid(), any_uuid(), any_uuid()),
        (
            any_source(),
            any_language(),
            any_country(),
            proptest::option::of(any_uuid()),
        ),
        (
            any::<bool>(),
            any_sealed_contact(),
            proptest::option::of(text()),
            proptest::option::of(text()),
        ),
    )
        .prop_map(
            |(
                (at, journey, candidate, study, campaign),
                (source, language, country, preferred_site),
                (consent_to_contact, contact, external_ref, time_zone),
            )| {
                JourneyEvent::from(ReferralReceived {
                    at,
                    journey_id: JourneyId::from_uuid(journey),
                    candidate_id: CandidateId::from_uuid(candidate),
                    study_id: StudyId::from_uuid(study),
                    campaign_id: CampaignId::from_uuid(campaign),
                    source,
                    language,
                    country,
                    preferred_site: preferred_site.map(SiteId::from_uuid),
                    consent_to_contact,
                    contact,
                    external_ref,
                    time_zone,
                })
            },
        );
    let site_id = || any_uuid().prop_map(SiteId::from_uuid);
    prop_oneof![
        referral,
        (
            any_time(),
            any::<bool>(),
            proptest::collection::vec(text(), 0..4)
        )
            .prop_map(|(at, passed, reasons)| PrescreenCompleted {
                at,
                passed,
                reasons
            }
            .into()),
        (
            any_time(),
            any_contact_channel(),
            any_outcome(),
            proptest::option::of(any_uuid())
        )
            .prop_map(|(at, channel, outcome, agent)| ContactAttempted {
                at,
                channel,
                outcome,
                agent: agent.map(AgentId::from_uuid)
            }
            .into()),
        (any_time(), any_time(), text()).prop_map(|(at, callback_at, time_zone)| {
            CallbackRequested {
                at,
                callback_at,
                time_zone,
            }
            .into()
        }),
        (any_time(), site_id()).prop_map(|(at, site_id)| ReferredToSite { at, site_id }.into()),
        (any_time(), site_id(), site_id(), text()).prop_map(|(at, from_site, to_site, reason)| {
            Reallocated {
                at,
                from_site,
                to_site,
                reason,
            }
            .into()
        }),
        (any_time(), site_id()).prop_map(|(at, site_id)| SiteContacted { at, site_id }.into()),
        (any_time(), site_id(), any_time()).prop_map(|(at, site_id, appointment_at)| {
            AppointmentScheduled {
                at,
                site_id,
                appointment_at,
            }
            .into()
        }),
        (any_time(), any_time()).prop_map(|(at, appointment_at)| AppointmentRescheduled {
            at,
            appointment_at
        }
        .into()),
        any_time().prop_map(|at| AppointmentAttended { at }.into()),
        any_time().prop_map(|at| NoShow { at }.into()),
        any_time().prop_map(|at| Consented { at }.into()),
        any_time().prop_map(|at| ScreeningStarted { at }.into()),
        (any_time(), text()).prop_map(|(at, reason)| ScreenFailed { at, reason }.into()),
        (any_time(), proptest::option::of(text()))
            .prop_map(|(at, arm)| Randomized { at, arm }.into()),
        (any_time(), text()).prop_map(|(at, reason)| Withdrawn { at, reason }.into()),
        (any_time(), text()).prop_map(|(at, reason)| Disqualified { at, reason }.into()),
        (any_time(), proptest::option::of(text())).prop_map(|(at, reason)| NotInterested {
            at,
            reason
        }
        .into()),
        (any_time(), any::<u32>()).prop_map(|(at, attempts)| Unreachable { at, attempts }.into()),
        any_time().prop_map(|at| OptedOut { at }.into()),
        (any_time(), any_uuid()).prop_map(|(at, primary)| DuplicateLinked {
            at,
            primary: JourneyId::from_uuid(primary)
        }
        .into()),
        any_time().prop_map(|at| PersonalDataErased { at }.into()),
    ]
    .boxed()
}

/// Any study event, with any field values the types allow.
pub(crate) fn any_study_event() -> BoxedStrategy<StudyEvent> {
    let text = any::<String>;
    let site_id = || any_uuid().prop_map(SiteId::from_uuid);
    let campaign_id = || any_uuid().prop_map(CampaignId::from_uuid);
    prop_oneof![
        (
            (any_time(), any_uuid(), any_uuid(), text(), text()),
            (
                any::<u32>(),
                proptest::collection::vec(any_country(), 0..5),
                proptest::collection::vec(any_language(), 0..4),
                any_sla()
            ),
        )
            .prop_map(
                |(
                    (at, study, sponsor, title, protocol_code),
                    (target_randomized, countries, languages, sla),
                )| {
                    StudyCreated {
                        at,
                        study_id: StudyId::from_uuid(study),
                        sponsor_id: SponsorId::from_uuid(sponsor),
                        title,
                        protocol_code,
                        target_randomized,
                        countries,
                        languages,
                        sla,
                    }
                    .into()
                }
            ),
        (
            any_time(),
            site_id(),
            text(),
            any_country(),
            proptest::collection::vec(any_language(), 0..4),
            monthly_target()
        )
            .prop_map(
                |(at, site_id, name, country, languages, monthly_target_randomized)| {
                    SiteAdded {
                        at,
                        site_id,
                        name,
                        country,
                        languages,
                        monthly_target_randomized,
                    }
                    .into()
                }
            ),
        (any_time(), site_id(), proptest::option::of(text())).prop_map(|(at, site_id, reason)| {
            SitePaused {
                at,
                site_id,
                reason,
            }
            .into()
        }),
        (any_time(), site_id()).prop_map(|(at, site_id)| SiteResumed { at, site_id }.into()),
        (any_time(), site_id(), proptest::option::of(text())).prop_map(|(at, site_id, reason)| {
            SiteClosed {
                at,
                site_id,
                reason,
            }
            .into()
        }),
        (any_time(), campaign_id(), text(), any_source()).prop_map(
            |(at, campaign_id, name, channel)| CampaignRegistered {
                at,
                campaign_id,
                name,
                channel
            }
            .into()
        ),
        (
            any_time(),
            campaign_id(),
            any::<i64>(),
            any_currency(),
            any_date(),
            any_date()
        )
            .prop_map(
                |(at, campaign_id, amount_minor, currency, period_start, period_end)| {
                    CampaignSpendRecorded {
                        at,
                        campaign_id,
                        amount_minor,
                        currency,
                        period_start,
                        period_end,
                    }
                    .into()
                }
            ),
    ]
    .boxed()
}
