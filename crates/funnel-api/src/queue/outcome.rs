//! What an agent reports when completing a work item, and the journey commands it stands for.
//!
//! Building the commands is pure: it looks at the journey as loaded and the item's cadence,
//! and leaves every stage rule to the domain's `decide`, which refuses (409 naming the stage)
//! an outcome that does not fit where the journey is.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use funnel_domain::{AgentId, ContactChannel, ContactOutcome, Journey, JourneyCommand, SiteId};
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::problem::ApiError;

/// How the agent tried to reach the candidate; `phone` when left out.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Channel {
    #[default]
    Phone,
    Sms,
    Email,
    Whatsapp,
}

impl From<Channel> for ContactChannel {
    fn from(channel: Channel) -> Self {
        match channel {
            Channel::Phone => Self::Phone,
            Channel::Sms => Self::Sms,
            Channel::Email => Self::Email,
            Channel::Whatsapp => Self::Whatsapp,
        }
    }
}

/// The pre-screen questionnaire, run on the call.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrescreenResult {
    pub(crate) passed: bool,
    /// Reason codes or short texts; no personal data.
    #[serde(default)]
    pub(crate) reasons: Vec<String>,
}

/// A site to refer the candidate to.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SiteRef {
    pub(crate) site_id: Uuid,
}

/// An appointment booked on the call on the site's behalf.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppointmentBooking {
    /// The site; the one of `refer_to_site`, or the journey's current site, when left out.
    pub(crate) site_id: Option<Uuid>,
    pub(crate) appointment_at: DateTime<Utc>,
}

/// What came of working the item, tagged by `outcome`. Each appends the matching journey
/// events in one atomic append.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Outcome {
    /// Nobody answered: a contact attempt not reached. When it was the last attempt of the
    /// study's cadence, the journey is also marked unreachable.
    NoAnswer {
        #[serde(default)]
        channel: Channel,
    },
    /// The candidate was reached; optionally the pre-screen was run on the call, the candidate
    /// referred to a site and an appointment booked, all recorded together.
    Reached {
        #[serde(default)]
        channel: Channel,
        prescreen: Option<PrescreenResult>,
        refer_to_site: Option<SiteRef>,
        appointment: Option<AppointmentBooking>,
    },
    /// An appointment booked on the site's behalf without a contact attempt: for a `schedule`
    /// item of a candidate already at a site (past the team's contact stages) or booked
    /// through another channel. Referred to the site first when not there yet.
    Scheduled {
        /// The site; the journey's current site when left out.
        site_id: Option<Uuid>,
        appointment_at: DateTime<Utc>,
    },
    /// The candidate asked to be called back at a wall-clock time of their own time zone.
    Callback {
        /// Local date and time in `time_zone`, without offset: `2026-03-05T18:00`.
        #[serde(deserialize_with = "local_time")]
        #[schema(value_type = String, example = "2026-03-05T18:00")]
        local_time: NaiveDateTime,
        /// IANA time zone (`America/Sao_Paulo`); the referral's when left out.
        time_zone: Option<String>,
    },
    /// The candidate does not want to take part.
    NotInterested { reason: Option<String> },
    /// The candidate asked never to be contacted about this study again.
    // Empty braces, not a unit variant: serde refuses unknown fields only in struct variants.
    OptedOut {},
    /// The number is wrong: a contact attempt, and the cadence ends (unreachable).
    WrongNumber {
        #[serde(default)]
        channel: Channel,
    },
    /// The agent ends the cadence early (needs an unanswered attempt since the last contact).
    Unreachable {},
    /// Move the candidate to another active site (a site that sits on the referral).
    Reallocate { site_id: Uuid, reason: String },
}

impl Outcome {
    /// The stable name recorded with the completion.
    pub(crate) const fn name(&self) -> &'static str {
        match self {
            Self::NoAnswer { .. } => "no_answer",
            Self::Reached { .. } => "reached",
            Self::Scheduled { .. } => "scheduled",
            Self::Callback { .. } => "callback",
            Self::NotInterested { .. } => "not_interested",
            Self::OptedOut {} => "opted_out",
            Self::WrongNumber { .. } => "wrong_number",
            Self::Unreachable {} => "unreachable",
            Self::Reallocate { .. } => "reallocate",
        }
    }

    /// The sites the outcome sends the candidate to, which must be active sites of the study.
    pub(crate) fn target_sites(&self) -> Vec<SiteId> {
        match self {
            Self::Reached {
                refer_to_site,
                appointment,
                ..
            } => refer_to_site
                .map(|site| site.site_id)
                .into_iter()
                .chain(appointment.and_then(|booking| booking.site_id))
                .map(SiteId::from)
                .collect(),
            Self::Scheduled { site_id, .. } => site_id.map(SiteId::from).into_iter().collect(),
            Self::Reallocate { site_id, .. } => vec![SiteId::from(*site_id)],
            _ => Vec::new(),
        }
    }

    /// The journey commands, in order, that record this outcome at `now`.
    ///
    /// `max_attempts` is the study's cadence length as the work item carries it: the no-answer
    /// that uses up the cadence also marks the journey unreachable, so no further attempt is
    /// queued.
    pub(crate) fn commands(
        &self,
        journey: &Journey,
        max_attempts: u32,
        agent: AgentId,
        now: DateTime<Utc>,
    ) -> Result<Vec<JourneyCommand>, ApiError> {
        use JourneyCommand as C;
        let attempt = |channel: Channel, outcome: ContactOutcome| C::RecordContactAttempt {
            at: now,
            channel: channel.into(),
            outcome,
            agent: Some(agent),
        };
        Ok(match self {
            Self::NoAnswer { channel } => {
                let mut commands = vec![attempt(*channel, ContactOutcome::NoAnswer)];
                if journey.unanswered_attempts.saturating_add(1) >= max_attempts {
                    commands.push(C::MarkUnreachable { at: now });
                }
                commands
            }
            Self::WrongNumber { channel } => vec![
                attempt(*channel, ContactOutcome::WrongNumber),
                C::MarkUnreachable { at: now },
            ],
            Self::Unreachable {} => vec![C::MarkUnreachable { at: now }],
            Self::Reached {
                channel,
                prescreen,
                refer_to_site,
                appointment,
            } => {
                let mut commands = vec![attempt(*channel, ContactOutcome::Reached)];
                if let Some(prescreen) = prescreen {
                    commands.push(C::CompletePrescreen {
                        at: now,
                        passed: prescreen.passed,
                        reasons: prescreen.reasons.clone(),
                    });
                }
                commands.extend(site_commands(
                    journey,
                    refer_to_site.map(|site| SiteId::from(site.site_id)),
                    *appointment,
                    now,
                )?);
                commands
            }
            Self::Scheduled {
                site_id,
                appointment_at,
            } => site_commands(
                journey,
                None,
                Some(AppointmentBooking {
                    site_id: *site_id,
                    appointment_at: *appointment_at,
                }),
                now,
            )?,
            Self::Callback {
                local_time,
                time_zone,
            } => {
                let time_zone = time_zone
                    .clone()
                    .or_else(|| journey.time_zone.clone())
                    .ok_or_else(|| {
                        ApiError::Unprocessable(
                            "time_zone is required: the referral did not give one".to_owned(),
                        )
                    })?;
                vec![C::RequestCallback {
                    at: now,
                    callback_at: local_to_utc(*local_time, &time_zone)?,
                    time_zone,
                }]
            }
            Self::NotInterested { reason } => vec![C::RecordNotInterested {
                at: now,
                reason: reason.clone(),
            }],
            Self::OptedOut {} => vec![C::OptOut { at: now }],
            Self::Reallocate { site_id, reason } => vec![C::Reallocate {
                at: now,
                to_site: SiteId::from(*site_id),
                reason: reason.clone(),
            }],
        })
    }
}

/// Referral and booking on a reached call: refer first when the journey is not at the booking's
/// site yet, then book.
fn site_commands(
    journey: &Journey,
    refer_to: Option<SiteId>,
    appointment: Option<AppointmentBooking>,
    now: DateTime<Utc>,
) -> Result<Vec<JourneyCommand>, ApiError> {
    let mut commands = Vec::new();
    let booking_site = appointment.and_then(|booking| booking.site_id.map(SiteId::from));
    if let (Some(refer_to), Some(booking_site)) = (refer_to, booking_site)
        && refer_to != booking_site
    {
        return Err(ApiError::Unprocessable(format!(
            "the appointment's site {booking_site} is not the site referred to ({refer_to})"
        )));
    }
    let refer_to = match (refer_to, booking_site, journey.site_id) {
        (Some(site), _, _) => Some(site),
        // Booking at a site the journey is not at yet: the referral comes with it.
        (None, Some(site), None) => Some(site),
        (None, Some(site), Some(current)) if site != current => {
            return Err(ApiError::Conflict(format!(
                "the journey is at site {current}; reallocate it before booking at site {site}"
            )));
        }
        _ => None,
    };
    if let Some(site_id) = refer_to {
        commands.push(JourneyCommand::ReferToSite { at: now, site_id });
    }
    if let Some(booking) = appointment {
        if refer_to.is_none() && journey.site_id.is_none() {
            return Err(ApiError::Unprocessable(
                "the appointment needs a site: give `appointment.site_id` or `refer_to_site`"
                    .to_owned(),
            ));
        }
        commands.push(JourneyCommand::ScheduleAppointment {
            at: now,
            appointment_at: booking.appointment_at,
        });
    }
    Ok(commands)
}

/// A wall-clock time in an IANA zone as a UTC instant. A time that occurs twice (the hour
/// the clocks go back) is taken at its first occurrence, the earlier call; a time that does not
/// occur (the hour the clocks go forward) is refused rather than silently moved.
pub(crate) fn local_to_utc(
    local: NaiveDateTime,
    time_zone: &str,
) -> Result<DateTime<Utc>, ApiError> {
    let zone: Tz = time_zone.parse().map_err(|_| {
        ApiError::Unprocessable(format!("`{time_zone}` is not an IANA time zone name"))
    })?;
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => Ok(at.with_timezone(&Utc)),
        LocalResult::None => Err(ApiError::Unprocessable(format!(
            "{local} does not exist in {time_zone} (the clocks skip it); pick another time"
        ))),
    }
}

/// `local_time`: a date and time without offset, seconds optional. An offset is refused, not
/// ignored: the time is read in the patient's zone, and a `Z` suggests the caller meant UTC.
fn local_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveDateTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(&text, format).ok())
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`local_time` must be a local date and time without offset such as \
                 2026-03-05T18:00, not `{text}`"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Outcome {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn local_times_convert_with_the_zones_rules() {
        let at = |text: &str| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").unwrap();
        let utc = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().to_utc();
        assert_eq!(
            local_to_utc(at("2026-03-05T18:00"), "America/Sao_Paulo").unwrap(),
            utc("2026-03-05T21:00:00Z")
        );
        assert_eq!(
            local_to_utc(at("2026-03-05T18:00"), "Asia/Tokyo").unwrap(),
            utc("2026-03-05T09:00:00Z")
        );
        // Madrid moves to summer time on 2026-03-29 at 02:00: 02:30 does not exist.
        assert!(local_to_utc(at("2026-03-29T02:30"), "Europe/Madrid").is_err());
        // ... and back on 2026-10-25 at 03:00: 02:30 happens twice; the first is taken.
        assert_eq!(
            local_to_utc(at("2026-10-25T02:30"), "Europe/Madrid").unwrap(),
            utc("2026-10-25T00:30:00Z")
        );
        assert!(local_to_utc(at("2026-03-05T18:00"), "Mars/Olympus").is_err());
    }

    #[test]
    fn outcomes_parse_from_tagged_json() {
        assert_eq!(parse(r#"{"outcome": "no_answer"}"#).name(), "no_answer");
        let reached = parse(
            r#"{"outcome": "reached", "appointment": {"site_id": "0195f3a2-7c1e-7d1a-9b7e-3f2a1c0d4e5f",
                "appointment_at": "2026-03-10T09:00:00Z"}}"#,
        );
        assert_eq!(reached.target_sites().len(), 1);
        let callback = parse(r#"{"outcome": "callback", "local_time": "2026-03-05T18:00"}"#);
        assert_eq!(callback.name(), "callback");
        for bad in [
            r#"{"outcome": "callback", "local_time": "2026-03-05T18:00:00Z"}"#,
            r#"{"outcome": "teleported"}"#,
            r#"{"outcome": "opted_out", "colour": "blue"}"#,
        ] {
            assert!(serde_json::from_str::<Outcome>(bad).is_err(), "{bad}");
        }
    }
}
