//! The command side: load an aggregate from the stream, let the domain decide, append the
//! outcome with an optimistic-concurrency check. Nothing is appended when anything fails.

use bytes::Bytes;
use funnel_domain::{
    CandidateId, ContactDetails, DecodeError, DomainError, DomainEvent, JourneyCommand,
    JourneyEvent, JourneyId, JourneyState, StudyCommand, StudyEvent, StudyId, StudyState,
};
use funnel_eventlog::{
    AppendError, EventLog, ExpectedVersion, NewEvent, ReadError, RecordedEvent, StreamKey,
};
use funnel_privacy::{KeyStore, PrivacyError};

/// Subject kinds: one subject per journey, one per study (its sites and campaigns included).
pub const JOURNEY: &str = "journey";
pub const STUDY: &str = "study";

/// How many times a command without a caller-pinned version is re-decided after losing a race.
const CONFLICT_RETRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The caller's expected version (`If-Match`) is not the aggregate's current one.
    #[error("the aggregate is at version {actual:?}, not the expected {expected}")]
    StaleVersion { expected: u64, actual: Option<u64> },
    /// Another writer kept winning the race for the same aggregate.
    #[error("the aggregate kept changing concurrently; try again")]
    Contended,
    #[error("reading the aggregate failed")]
    Read(#[from] ReadError),
    #[error("a stored event cannot be decoded")]
    Decode(#[from] DecodeError),
    #[error("a stored event belongs to another aggregate type: {0}")]
    WrongAggregate(String),
    #[error("appending failed")]
    Append(#[from] AppendError),
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
}

/// An aggregate's state as of its last event.
#[derive(Debug, Clone)]
pub struct Loaded<S> {
    pub state: S,
    /// The stream sequence of its last event; `None` when it has none.
    pub version: Option<u64>,
}

/// What a command appended.
#[derive(Debug, Clone)]
pub struct Executed<E> {
    pub events: Vec<E>,
    /// The aggregate's new version.
    pub version: u64,
}

/// Runs commands against the stream. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CommandService {
    events: EventLog,
}

impl CommandService {
    #[must_use]
    pub const fn new(events: EventLog) -> Self {
        Self { events }
    }

    #[tracing::instrument(skip(self), fields(journey_id = %id))]
    pub async fn load_journey(&self, id: JourneyId) -> Result<Loaded<JourneyState>, CommandError> {
        let recorded = self.events.read(&journey_key(id)).await?;
        let version = recorded.last().map(|event| event.seq);
        let mut state = JourneyState::NotStarted;
        for event in &recorded {
            state = funnel_domain::evolve(state, &as_journey_event(event)?);
        }
        Ok(Loaded { state, version })
    }

    #[tracing::instrument(skip(self), fields(study_id = %id))]
    pub async fn load_study(&self, id: StudyId) -> Result<Loaded<StudyState>, CommandError> {
        self.load_study_onto(id, StudyState::default(), 0).await
    }

    /// The study brought up to date from a state kept in memory: `state` holds its events up to
    /// stream sequence `version`, and only the later ones are read. `version` of the answer
    /// stays `None` when there were none.
    #[tracing::instrument(skip(self, state), fields(study_id = %id))]
    pub async fn load_study_onto(
        &self,
        id: StudyId,
        mut state: StudyState,
        version: u64,
    ) -> Result<Loaded<StudyState>, CommandError> {
        let recorded = self.events.read_from(&study_key(id), version).await?;
        for event in &recorded {
            state = funnel_domain::evolve_study(state, &as_study_event(event)?);
        }
        Ok(Loaded {
            state,
            version: recorded.last().map(|event| event.seq),
        })
    }

    /// Decides `command` against the journey's current state and appends the outcome.
    /// With `expected`, the journey must be at exactly that version (else `StaleVersion`);
    /// without, a lost race is re-decided against the newer state a few times.
    #[tracing::instrument(skip(self, command), fields(journey_id = %id))]
    pub async fn execute_journey(
        &self,
        id: JourneyId,
        expected: Option<u64>,
        command: &JourneyCommand,
    ) -> Result<Executed<JourneyEvent>, CommandError> {
        self.execute_journey_with_id(id, expected, command, None)
            .await
    }

    /// [`CommandService::execute_journey`] with the event's id chosen by the caller: derived
    /// from an inbound message's own id, a retry appends the same event id, which the event log
    /// recognises as already stored instead of recording the fact twice.
    #[tracing::instrument(skip(self, command), fields(journey_id = %id))]
    pub async fn execute_journey_with_id(
        &self,
        id: JourneyId,
        expected: Option<u64>,
        command: &JourneyCommand,
        event_id: Option<uuid::Uuid>,
    ) -> Result<Executed<JourneyEvent>, CommandError> {
        let subject = id.to_string();
        self.decide_and_append(
            &journey_key(id),
            expected,
            || self.load_journey(id),
            |state| funnel_domain::decide(state, command),
            |index, event| {
                let event = DomainEvent::Journey(event.clone());
                match event_id {
                    Some(event_id) if index == 0 => {
                        to_new_event_with_id(event_id, subject.clone(), &event)
                    }
                    _ => to_new_event(subject.clone(), &event),
                }
            },
        )
        .await
    }

    /// Decides `commands` in order, each against the state the ones before it left, and appends
    /// all their events in one atomic append with the same version check as a single command:
    /// an outcome made of several facts (reached, referred to a site, appointment booked) is
    /// recorded whole or not at all.
    #[tracing::instrument(skip(self, commands), fields(journey_id = %id, commands = commands.len()))]
    pub async fn execute_journey_commands(
        &self,
        id: JourneyId,
        expected: Option<u64>,
        commands: &[JourneyCommand],
    ) -> Result<Executed<JourneyEvent>, CommandError> {
        let subject = id.to_string();
        self.decide_and_append(
            &journey_key(id),
            expected,
            || self.load_journey(id),
            |state| decide_in_sequence(state, commands),
            |_, event| to_new_event(subject.clone(), &DomainEvent::Journey(event.clone())),
        )
        .await
    }

    /// Decides a study command (study, site and campaign setup) and appends the outcome.
    #[tracing::instrument(skip(self, command), fields(study_id = %id))]
    pub async fn execute_study(
        &self,
        id: StudyId,
        expected: Option<u64>,
        command: &StudyCommand,
    ) -> Result<Executed<StudyEvent>, CommandError> {
        self.decide_and_append(
            &study_key(id),
            expected,
            || self.load_study(id),
            |state| funnel_domain::decide_study(state, command),
            |_, event| to_new_event(id.to_string(), &DomainEvent::Study(event.clone())),
        )
        .await
    }

    /// The optimistic command loop shared by every aggregate: load, check the caller's expected
    /// version, decide, append with the loaded version as the concurrency check. A lost race is
    /// decided again against the newer state, unless the caller pinned a version (then it is
    /// `StaleVersion`).
    async fn decide_and_append<S, E, Load>(
        &self,
        key: &StreamKey,
        expected: Option<u64>,
        load: impl Fn() -> Load,
        decide: impl Fn(&S) -> Result<Vec<E>, DomainError>,
        to_new_event: impl Fn(usize, &E) -> NewEvent,
    ) -> Result<Executed<E>, CommandError>
    where
        Load: Future<Output = Result<Loaded<S>, CommandError>>,
    {
        for _ in 0..=CONFLICT_RETRIES {
            let loaded = load().await?;
            check_expected(expected, loaded.version)?;
            let decided = decide(&loaded.state)?;
            let new_events = decided
                .iter()
                .enumerate()
                .map(|(index, event)| to_new_event(index, event))
                .collect();
            match self.append(key, loaded.version, new_events).await {
                Ok(version) => {
                    return Ok(Executed {
                        events: decided,
                        version,
                    });
                }
                Err(AppendError::Conflict { actual, .. }) if expected.is_some() => {
                    return Err(CommandError::StaleVersion {
                        expected: expected.unwrap_or_default(),
                        actual,
                    });
                }
                Err(AppendError::Conflict { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Err(CommandError::Contended)
    }

    /// Seals the contact data under the candidate's key, then starts the journey. The command's
    /// own `contact` field is replaced by the sealed form: plaintext never reaches the stream.
    pub async fn receive_referral(
        &self,
        keys: &KeyStore,
        candidate: CandidateId,
        contact: &ContactDetails,
        mut command: JourneyCommand,
    ) -> Result<Executed<JourneyEvent>, CommandError> {
        let JourneyCommand::ReceiveReferral {
            journey_id,
            contact: sealed,
            candidate_id,
            ..
        } = &mut command
        else {
            return Err(DomainError::Invalid("not a referral".to_owned()).into());
        };
        if *candidate_id != candidate {
            return Err(
                DomainError::Invalid("the referral names another candidate".to_owned()).into(),
            );
        }
        *sealed = keys.seal(candidate, contact).await?;
        let journey = *journey_id;
        self.execute_journey(journey, None, &command).await
    }

    /// Starts a journey with events whose ids the caller chose, deciding `commands` in order
    /// (e.g. the referral, then a pre-screen result that came with it, then a duplicate link)
    /// and appending all their events atomically to a journey that must not exist yet.
    ///
    /// Deterministic ids make a retry safe for good: a retry after a lost ack or a crash
    /// re-appends the same ids, and the event log recognises its own events after the conflict
    /// and reports the original append. A journey started by other events is a conflict:
    /// `StaleVersion { expected: 0, .. }`.
    #[tracing::instrument(skip(self, commands), fields(journey_id = %id, events = commands.len()))]
    pub async fn start_journey_with_ids(
        &self,
        id: JourneyId,
        commands: &[(uuid::Uuid, JourneyCommand)],
    ) -> Result<Executed<JourneyEvent>, CommandError> {
        let mut state = JourneyState::NotStarted;
        let mut decided = Vec::with_capacity(commands.len());
        let mut new_events = Vec::with_capacity(commands.len());
        for (event_id, command) in commands {
            let events = funnel_domain::decide(&state, command)?;
            let [event] = <[JourneyEvent; 1]>::try_from(events).map_err(|events| {
                DomainError::Invalid(format!(
                    "`{}` decided {} events; one id was given",
                    command.name(),
                    events.len()
                ))
            })?;
            state = funnel_domain::evolve(state, &event);
            new_events.push(to_new_event_with_id(
                *event_id,
                id.to_string(),
                &DomainEvent::Journey(event.clone()),
            ));
            decided.push(event);
        }
        if decided.is_empty() {
            return Err(
                DomainError::Invalid("no command to start the journey with".to_owned()).into(),
            );
        }
        match self.append(&journey_key(id), None, new_events).await {
            Ok(version) => Ok(Executed {
                events: decided,
                version,
            }),
            Err(AppendError::Conflict { actual, .. }) => Err(CommandError::StaleVersion {
                expected: 0,
                actual,
            }),
            Err(err) => Err(err.into()),
        }
    }

    async fn append(
        &self,
        key: &StreamKey,
        version: Option<u64>,
        events: Vec<NewEvent>,
    ) -> Result<u64, AppendError> {
        let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::At);
        self.events
            .append(key, expected, events)
            .await
            .map(|appended| appended.last_seq)
    }
}

/// [`funnel_domain::decide`] over several commands, evolving a copy of the state between them.
fn decide_in_sequence(
    state: &JourneyState,
    commands: &[JourneyCommand],
) -> Result<Vec<JourneyEvent>, DomainError> {
    let mut state = state.clone();
    let mut decided = Vec::with_capacity(commands.len());
    for command in commands {
        let events = funnel_domain::decide(&state, command)?;
        state = events.iter().fold(state, funnel_domain::evolve);
        decided.extend(events);
    }
    if decided.is_empty() {
        return Err(DomainError::Invalid("no command to decide".to_owned()));
    }
    Ok(decided)
}

fn check_expected(expected: Option<u64>, actual: Option<u64>) -> Result<(), CommandError> {
    match expected {
        Some(expected) if Some(expected) != actual && !(expected == 0 && actual.is_none()) => {
            Err(CommandError::StaleVersion { expected, actual })
        }
        _ => Ok(()),
    }
}

#[must_use]
pub fn journey_key(id: JourneyId) -> StreamKey {
    StreamKey::new(JOURNEY, *id.as_uuid()).expect("`journey` is a valid subject token")
}

#[must_use]
pub fn study_key(id: StudyId) -> StreamKey {
    StreamKey::new(STUDY, *id.as_uuid()).expect("`study` is a valid subject token")
}

/// An event in its stream form: CloudEvents type `<type>.v<version>`, JSON data, a fresh id.
fn to_new_event(subject: String, event: &DomainEvent) -> NewEvent {
    let encoded = funnel_domain::encode(event);
    NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: encoded.cloud_event_type(),
        time: event.at(),
        subject,
        data: Bytes::from(serde_json::to_vec(&encoded.data).expect("JSON values serialise")),
    }
}

/// [`to_new_event`] with an id of the caller's, for appends that must be repeatable.
fn to_new_event_with_id(id: uuid::Uuid, subject: String, event: &DomainEvent) -> NewEvent {
    NewEvent {
        id,
        ..to_new_event(subject, event)
    }
}

/// Decodes any stored event (upcasting older versions).
pub fn decode_recorded(event: &RecordedEvent) -> Result<DomainEvent, DecodeError> {
    let data =
        serde_json::from_slice(&event.data).map_err(|source| DecodeError::InvalidPayload {
            event_type: event.event_type.clone(),
            version: 0,
            source,
        })?;
    funnel_domain::decode_cloud_event(&event.event_type, data)
}

fn as_journey_event(event: &RecordedEvent) -> Result<JourneyEvent, CommandError> {
    match decode_recorded(event)? {
        DomainEvent::Journey(event) => Ok(event),
        DomainEvent::Study(_) => Err(CommandError::WrongAggregate(event.event_type.clone())),
    }
}

fn as_study_event(event: &RecordedEvent) -> Result<StudyEvent, CommandError> {
    match decode_recorded(event)? {
        DomainEvent::Study(event) => Ok(event),
        DomainEvent::Journey(_) => Err(CommandError::WrongAggregate(event.event_type.clone())),
    }
}
