//! The `work_queue` read model: the projection equals a plain fold of the same events, the
//! derivation follows the documented rules (docs/work-queues.md), and the depth query counts
//! what the fold says.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use funnel_domain::{
    CampaignId, CandidateId, ContactChannel, ContactOutcome, Country, DomainEvent, JourneyCommand,
    JourneyEvent, JourneyId, JourneyState, Language, SealedContact, SiteId, SlaSettings,
    SourceChannel, SponsorId, Stage, StudyCommand, StudyId, StudyState, decide, decide_study,
    evolve, evolve_study,
};
use funnel_eventlog::StreamKey;
use funnel_projections::queue::{
    self, ItemKind, QueueDepth, QueueModel, WorkItem, item_id, next_attempt_due,
};
use funnel_projections::{ProjectedEvent, Projector, ReadModels, WorkQueue};
use funnel_testkit::{test_database, test_nats};
use prometheus::Registry;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::support::{
    append_projected, apply_batched, apply_directly, fast_settings, in_schema, provisioned_log,
    read_back, studies_after_a_third, wait_live_caught_up,
};

fn t(text: &str) -> DateTime<Utc> {
    text.parse().expect("time")
}

fn sealed() -> SealedContact {
    SealedContact {
        alg: "xchacha20poly1305".into(),
        nonce: "bm9uY2U=".into(),
        ciphertext: "c2VhbGVk".into(),
    }
}

fn hours(n: i64) -> TimeDelta {
    TimeDelta::hours(n)
}

/// Events as the projection sees them, numbered as the stream would number them.
#[derive(Default)]
struct Events {
    list: Vec<ProjectedEvent>,
}

impl Events {
    fn push(&mut self, key: &StreamKey, event: DomainEvent) -> u64 {
        let seq = self.list.len() as u64 + 1;
        self.list.push(ProjectedEvent {
            seq,
            key: key.clone(),
            id: Uuid::now_v7(),
            time: event.at(),
            event,
        });
        seq
    }

    /// Creates a study through `decide_study`.
    fn study(&mut self, id: StudyId, at: DateTime<Utc>, sla: SlaSettings) {
        let key = StreamKey::new("study", *id.as_uuid()).expect("key");
        let command = StudyCommand::CreateStudy {
            at,
            study_id: id,
            sponsor_id: SponsorId::new(),
            title: "A phase III study".into(),
            protocol_code: "ABC-123-301".into(),
            target_randomized: 20,
            countries: vec![Country::parse("ES").expect("country")],
            languages: vec![Language::parse("es").expect("language")],
            sla,
        };
        for event in decide_study(&StudyState::NotCreated, &command).expect("legal study") {
            let _ = evolve_study(StudyState::NotCreated, &event);
            self.push(&key, event.into());
        }
    }
}

/// One journey built through `decide`: only histories the domain accepts.
struct Candidate {
    id: JourneyId,
    key: StreamKey,
    state: JourneyState,
}

impl Candidate {
    fn referral(
        events: &mut Events,
        study: StudyId,
        at: DateTime<Utc>,
        consent: bool,
        time_zone: Option<&str>,
    ) -> (Self, u64) {
        let id = JourneyId::new();
        let mut candidate = Self {
            id,
            key: StreamKey::new("journey", *id.as_uuid()).expect("key"),
            state: JourneyState::NotStarted,
        };
        let seq = candidate.run(
            events,
            &JourneyCommand::ReceiveReferral {
                at,
                journey_id: id,
                candidate_id: CandidateId::new(),
                study_id: study,
                campaign_id: CampaignId::new(),
                source: SourceChannel::Ads,
                language: Language::parse("es").expect("language"),
                country: Country::parse("ES").expect("country"),
                preferred_site: None,
                consent_to_contact: consent,
                contact: sealed(),
                external_ref: None,
                time_zone: time_zone.map(str::to_owned),
            },
        );
        (candidate, seq)
    }

    /// Decides and records `command`; returns the event's sequence. Panics when refused.
    fn run(&mut self, events: &mut Events, command: &JourneyCommand) -> u64 {
        self.try_run(events, command)
            .unwrap_or_else(|| panic!("{} refused", command.name()))
    }

    fn try_run(&mut self, events: &mut Events, command: &JourneyCommand) -> Option<u64> {
        let new = decide(&self.state, command).ok()?;
        let mut seq = 0;
        for event in new {
            self.state = evolve(std::mem::take(&mut self.state), &event);
            seq = events.push(&self.key, event.into());
        }
        Some(seq)
    }

    fn attempt(&mut self, events: &mut Events, at: DateTime<Utc>, outcome: ContactOutcome) -> u64 {
        self.run(
            events,
            &JourneyCommand::RecordContactAttempt {
                at,
                channel: ContactChannel::Phone,
                outcome,
                agent: None,
            },
        )
    }
}

/// The items of one journey in the fold, by kind.
fn items_of(model: &QueueModel, journey: JourneyId) -> BTreeMap<ItemKind, WorkItem> {
    model
        .items
        .iter()
        .filter(|((id, _), _)| *id == journey)
        .map(|((_, kind), item)| (*kind, item.clone()))
        .collect()
}

fn kinds_of(model: &QueueModel, journey: JourneyId) -> Vec<ItemKind> {
    items_of(model, journey).into_keys().collect()
}

fn only(model: &QueueModel, journey: JourneyId, kind: ItemKind) -> WorkItem {
    let items = items_of(model, journey);
    assert_eq!(
        items.keys().copied().collect::<Vec<_>>(),
        vec![kind],
        "items of the journey"
    );
    items[&kind].clone()
}

fn sla(first: u32, attempts: u32, spacing: u32, escalation: u32) -> SlaSettings {
    SlaSettings {
        first_contact_hours: first,
        contact_attempts: attempts,
        attempt_spacing_hours: spacing,
        site_escalation_days: escalation,
    }
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).expect("small")
}

// ---------------------------------------------------------------------------------------
// The derivation, rule by rule (pure: no database, no clock).

#[test]
fn first_contact_is_due_by_the_study_sla_and_by_default_when_unknown() {
    let mut events = Events::default();
    let study = StudyId::new();
    events.study(study, t("2025-03-01T08:00:00Z"), sla(4, 3, 6, 2));
    let referred = t("2025-03-03T10:15:00Z");
    let (known, seq) =
        Candidate::referral(&mut events, study, referred, true, Some("Europe/Madrid"));
    let (unknown, unknown_seq) =
        Candidate::referral(&mut events, StudyId::new(), referred, true, None);
    let model = queue::fold(&events.list);

    let item = only(&model, known.id, ItemKind::FirstContact);
    assert_eq!(item.due_at, referred + hours(4));
    assert_eq!(
        item.overdue_at,
        Some(item.due_at),
        "the SLA is the due time"
    );
    assert_eq!((item.attempt, item.max_attempts), (1, 3));
    assert_eq!((item.opened_at, item.opened_seq), (referred, seq_i64(seq)));
    assert_eq!(item.item_id, item_id(known.id, ItemKind::FirstContact, seq));
    assert_eq!(item.time_zone.as_deref(), Some("Europe/Madrid"));
    assert_eq!(
        (item.country.as_str(), item.language.as_str()),
        ("ES", "es")
    );
    assert_eq!(item.site_id, None);

    let item = only(&model, unknown.id, ItemKind::FirstContact);
    assert_eq!(item.due_at, referred + hours(24));
    assert_eq!(item.max_attempts, 5);
    assert_eq!(item.opened_seq, seq_i64(unknown_seq));
    assert_eq!(item.time_zone, None);
}

#[test]
fn a_referral_without_consent_to_contact_gets_no_call() {
    let mut events = Events::default();
    let study = StudyId::new();
    let at = t("2025-03-03T10:00:00Z");
    let (mut candidate, _) = Candidate::referral(&mut events, study, at, false, None);
    assert!(kinds_of(&queue::fold(&events.list), candidate.id).is_empty());
    // Passed online and sent to a site: the site can still be chased, the patient not called.
    candidate.run(
        &mut events,
        &JourneyCommand::CompletePrescreen {
            at: at + hours(1),
            passed: true,
            reasons: Vec::new(),
        },
    );
    candidate.run(
        &mut events,
        &JourneyCommand::ReferToSite {
            at: at + hours(2),
            site_id: SiteId::new(),
        },
    );
    assert_eq!(
        kinds_of(&queue::fold(&events.list), candidate.id),
        vec![ItemKind::SiteEscalation]
    );
}

#[test]
fn the_cadence_spaces_attempts_at_rotating_times_of_day_and_stops_when_exhausted() {
    let mut events = Events::default();
    let study = StudyId::new();
    events.study(study, t("2025-03-01T08:00:00Z"), sla(24, 4, 24, 5));
    let (mut candidate, _) = Candidate::referral(
        &mut events,
        study,
        t("2025-03-03T09:00:00Z"),
        true,
        Some("Europe/Madrid"),
    );
    // Attempt 1 at 10:00 unanswered: attempt 2 one day later, 3 h later in the day.
    let first = candidate.attempt(
        &mut events,
        t("2025-03-03T10:00:00Z"),
        ContactOutcome::NoAnswer,
    );
    let model = queue::fold(&events.list);
    let second = only(&model, candidate.id, ItemKind::NextAttempt);
    assert_eq!(second.due_at, t("2025-03-04T13:00:00Z"));
    assert_eq!(second.overdue_at, Some(t("2025-03-05T13:00:00Z")));
    assert_eq!((second.attempt, second.max_attempts), (2, 4));
    assert_eq!(second.opened_seq, seq_i64(first));
    assert_eq!(second.opened_at, t("2025-03-03T10:00:00Z"));

    // The agent calls late (13:20): attempt 3 keeps the slot (the first's time + 6 h).
    let next = candidate.attempt(
        &mut events,
        t("2025-03-04T13:20:00Z"),
        ContactOutcome::Voicemail,
    );
    let third = only(
        &queue::fold(&events.list),
        candidate.id,
        ItemKind::NextAttempt,
    );
    assert_eq!(third.due_at, t("2025-03-05T16:00:00Z"));
    assert_eq!(third.attempt, 3);
    assert_eq!(
        third.item_id,
        item_id(candidate.id, ItemKind::NextAttempt, next)
    );
    assert_ne!(
        third.item_id, second.item_id,
        "each attempt is an item of its own"
    );

    // Attempt 4 goes back to the first slot: the next 10:00 at least 24 h after 16:05.
    candidate.attempt(&mut events, t("2025-03-05T16:05:00Z"), ContactOutcome::Busy);
    let fourth = only(
        &queue::fold(&events.list),
        candidate.id,
        ItemKind::NextAttempt,
    );
    assert_eq!(fourth.due_at, t("2025-03-07T10:00:00Z"));
    assert_eq!(fourth.attempt, 4);
    // Consecutive attempts never share a time of day.
    for (a, b) in [(&second, &third), (&third, &fourth)] {
        assert_ne!(a.due_at.hour(), b.due_at.hour());
    }

    // The fourth unanswered attempt ends the cadence: no item (the agent marks it unreachable).
    candidate.attempt(
        &mut events,
        t("2025-03-07T10:10:00Z"),
        ContactOutcome::WrongNumber,
    );
    assert!(kinds_of(&queue::fold(&events.list), candidate.id).is_empty());
    candidate.run(
        &mut events,
        &JourneyCommand::MarkUnreachable {
            at: t("2025-03-07T10:11:00Z"),
        },
    );
    assert!(kinds_of(&queue::fold(&events.list), candidate.id).is_empty());
}

#[test]
fn next_attempt_due_honours_the_spacing_and_the_slots() {
    let anchor = t("2025-03-03T10:00:00Z");
    // Short spacing: never earlier than the spacing, then the next 13:00.
    assert_eq!(
        next_attempt_due(anchor, anchor, 2, 4),
        t("2025-03-04T13:00:00Z")
    );
    // A spacing that lands on the slot exactly keeps it.
    assert_eq!(
        next_attempt_due(anchor, anchor, 2, 27),
        t("2025-03-04T13:00:00Z")
    );
    // Slots wrap around midnight (UTC).
    let late = t("2025-03-03T22:30:00Z");
    assert_eq!(
        next_attempt_due(late, late, 3, 24),
        t("2025-03-05T04:30:00Z")
    );
    for attempt in 2..12 {
        let due = next_attempt_due(anchor, anchor + hours(30), attempt, 24);
        assert!(due >= anchor + hours(54), "attempt {attempt}: {due}");
        assert!(due < anchor + hours(78), "attempt {attempt}: {due}");
    }
}

#[test]
fn a_callback_is_due_exactly_when_asked_whatever_the_time_zone() {
    for (zone, callback_at) in [
        ("Asia/Tokyo", "2025-03-05T00:30:00Z"),
        ("America/Los_Angeles", "2025-03-05T17:45:00Z"),
        ("Europe/Madrid", "2025-03-04T08:00:00Z"),
        ("Australia/Sydney", "2025-03-04T22:15:00Z"),
    ] {
        let mut events = Events::default();
        let study = StudyId::new();
        events.study(study, t("2025-03-01T08:00:00Z"), sla(24, 3, 24, 5));
        let (mut candidate, _) = Candidate::referral(
            &mut events,
            study,
            t("2025-03-03T09:00:00Z"),
            true,
            Some("Europe/Madrid"),
        );
        candidate.attempt(
            &mut events,
            t("2025-03-03T10:00:00Z"),
            ContactOutcome::NoAnswer,
        );
        candidate.attempt(
            &mut events,
            t("2025-03-03T16:00:00Z"),
            ContactOutcome::NoAnswer,
        );
        let requested = candidate.run(
            &mut events,
            &JourneyCommand::RequestCallback {
                at: t("2025-03-03T18:00:00Z"),
                callback_at: t(callback_at),
                time_zone: zone.into(),
            },
        );
        let model = queue::fold(&events.list);
        // The call-back replaces the cadence's next attempt.
        let item = only(&model, candidate.id, ItemKind::Callback);
        assert_eq!(item.due_at, t(callback_at), "{zone}");
        assert_eq!(item.overdue_at, Some(t(callback_at) + hours(1)));
        assert_eq!(item.time_zone.as_deref(), Some(zone));
        assert_eq!(item.opened_seq, seq_i64(requested));
        assert_eq!(item.attempt, 1, "a call-back restarts the cadence");

        // Unanswered at the time: the cadence restarts from the call-back's attempt.
        candidate.attempt(&mut events, t(callback_at), ContactOutcome::NoAnswer);
        let next = only(
            &queue::fold(&events.list),
            candidate.id,
            ItemKind::NextAttempt,
        );
        assert_eq!(next.attempt, 2);
        assert_eq!(next.due_at, t(callback_at) + hours(27));
        assert_eq!(
            next.time_zone.as_deref(),
            Some(zone),
            "the call-back's zone stays"
        );
    }
}

#[test]
fn a_callback_reopens_an_unreachable_journey() {
    let mut events = Events::default();
    let study = StudyId::new();
    events.study(study, t("2025-03-01T08:00:00Z"), sla(24, 1, 24, 5));
    let (mut candidate, _) =
        Candidate::referral(&mut events, study, t("2025-03-03T09:00:00Z"), true, None);
    candidate.attempt(
        &mut events,
        t("2025-03-03T10:00:00Z"),
        ContactOutcome::NoAnswer,
    );
    candidate.run(
        &mut events,
        &JourneyCommand::MarkUnreachable {
            at: t("2025-03-03T10:01:00Z"),
        },
    );
    assert!(kinds_of(&queue::fold(&events.list), candidate.id).is_empty());
    candidate.run(
        &mut events,
        &JourneyCommand::RequestCallback {
            at: t("2025-03-10T09:00:00Z"),
            callback_at: t("2025-03-10T15:00:00Z"),
            time_zone: "America/New_York".into(),
        },
    );
    let item = only(&queue::fold(&events.list), candidate.id, ItemKind::Callback);
    assert_eq!(item.due_at, t("2025-03-10T15:00:00Z"));
}

#[test]
fn schedule_and_site_escalation_follow_the_site() {
    let mut events = Events::default();
    let study = StudyId::new();
    events.study(study, t("2025-03-01T08:00:00Z"), sla(24, 3, 24, 3));
    let (mut candidate, _) =
        Candidate::referral(&mut events, study, t("2025-03-03T09:00:00Z"), true, None);
    candidate.attempt(
        &mut events,
        t("2025-03-03T10:00:00Z"),
        ContactOutcome::Reached,
    );
    // Reached, pre-screen pending: the agent runs it on the call, nothing queued.
    assert!(kinds_of(&queue::fold(&events.list), candidate.id).is_empty());
    let passed = candidate.run(
        &mut events,
        &JourneyCommand::CompletePrescreen {
            at: t("2025-03-03T10:20:00Z"),
            passed: true,
            reasons: Vec::new(),
        },
    );
    let schedule = only(&queue::fold(&events.list), candidate.id, ItemKind::Schedule);
    assert_eq!(
        schedule.due_at,
        t("2025-03-03T10:20:00Z"),
        "due as soon as it is so"
    );
    assert_eq!(schedule.opened_seq, seq_i64(passed));
    assert_eq!(
        (schedule.site_id, schedule.overdue_at, schedule.attempt),
        (None, None, 0)
    );

    let first_site = SiteId::new();
    let referred = candidate.run(
        &mut events,
        &JourneyCommand::ReferToSite {
            at: t("2025-03-03T11:00:00Z"),
            site_id: first_site,
        },
    );
    let model = queue::fold(&events.list);
    let items = items_of(&model, candidate.id);
    assert_eq!(
        items.keys().copied().collect::<Vec<_>>(),
        vec![ItemKind::Schedule, ItemKind::SiteEscalation]
    );
    let escalation = &items[&ItemKind::SiteEscalation];
    assert_eq!(escalation.due_at, t("2025-03-06T11:00:00Z"));
    assert_eq!(escalation.overdue_at, Some(t("2025-03-07T11:00:00Z")));
    assert_eq!(escalation.site_id, Some(first_site));
    assert_eq!(escalation.opened_seq, seq_i64(referred));
    // A new site is a new booking to make.
    assert_eq!(items[&ItemKind::Schedule].site_id, Some(first_site));
    assert_eq!(items[&ItemKind::Schedule].opened_seq, seq_i64(referred));

    // The site is slow: reallocated, a new escalation for the new site.
    let second_site = SiteId::new();
    let moved = candidate.run(
        &mut events,
        &JourneyCommand::Reallocate {
            at: t("2025-03-07T09:00:00Z"),
            to_site: second_site,
            reason: "no reply".into(),
        },
    );
    let items = items_of(&queue::fold(&events.list), candidate.id);
    let escalation = &items[&ItemKind::SiteEscalation];
    assert_eq!(escalation.site_id, Some(second_site));
    assert_eq!(escalation.due_at, t("2025-03-10T09:00:00Z"));
    assert_eq!(
        escalation.item_id,
        item_id(candidate.id, ItemKind::SiteEscalation, moved)
    );
    assert_eq!(items[&ItemKind::Schedule].site_id, Some(second_site));

    // The site acts: the escalation leaves, the booking (same item) stays.
    let schedule_id = items[&ItemKind::Schedule].item_id;
    candidate.run(
        &mut events,
        &JourneyCommand::RecordSiteContact {
            at: t("2025-03-08T09:00:00Z"),
        },
    );
    let schedule = only(&queue::fold(&events.list), candidate.id, ItemKind::Schedule);
    assert_eq!(schedule.item_id, schedule_id);
    candidate.run(
        &mut events,
        &JourneyCommand::ScheduleAppointment {
            at: t("2025-03-08T10:00:00Z"),
            appointment_at: t("2025-03-12T10:00:00Z"),
        },
    );
    assert!(kinds_of(&queue::fold(&events.list), candidate.id).is_empty());
}

#[test]
fn a_no_show_is_re_engaged_then_rebooked() {
    let mut events = Events::default();
    let study = StudyId::new();
    events.study(study, t("2025-03-01T08:00:00Z"), sla(24, 3, 24, 3));
    let (mut candidate, _) =
        Candidate::referral(&mut events, study, t("2025-03-03T09:00:00Z"), true, None);
    candidate.run(
        &mut events,
        &JourneyCommand::CompletePrescreen {
            at: t("2025-03-03T09:30:00Z"),
            passed: true,
            reasons: Vec::new(),
        },
    );
    candidate.attempt(
        &mut events,
        t("2025-03-03T10:00:00Z"),
        ContactOutcome::Reached,
    );
    let site = SiteId::new();
    candidate.run(
        &mut events,
        &JourneyCommand::ReferToSite {
            at: t("2025-03-03T10:10:00Z"),
            site_id: site,
        },
    );
    candidate.run(
        &mut events,
        &JourneyCommand::ScheduleAppointment {
            at: t("2025-03-03T10:20:00Z"),
            appointment_at: t("2025-03-05T10:00:00Z"),
        },
    );
    let missed = candidate.run(
        &mut events,
        &JourneyCommand::RecordNoShow {
            at: t("2025-03-05T11:00:00Z"),
        },
    );
    let re_engage = only(&queue::fold(&events.list), candidate.id, ItemKind::ReEngage);
    assert_eq!(re_engage.due_at, t("2025-03-05T11:00:00Z"));
    assert_eq!((re_engage.attempt, re_engage.overdue_at), (1, None));
    assert_eq!(re_engage.opened_seq, seq_i64(missed));
    // Unanswered: the re-engagement cadence goes on.
    candidate.attempt(
        &mut events,
        t("2025-03-05T12:00:00Z"),
        ContactOutcome::NoAnswer,
    );
    let next = only(
        &queue::fold(&events.list),
        candidate.id,
        ItemKind::NextAttempt,
    );
    assert_eq!(next.attempt, 2);
    // Reached: the appointment needs re-booking at the same site.
    let reached = candidate.attempt(
        &mut events,
        t("2025-03-06T15:00:00Z"),
        ContactOutcome::Reached,
    );
    let schedule = only(&queue::fold(&events.list), candidate.id, ItemKind::Schedule);
    assert_eq!(schedule.site_id, Some(site));
    assert_eq!(schedule.opened_seq, seq_i64(reached));
    assert_eq!(schedule.due_at, t("2025-03-06T15:00:00Z"));
    candidate.run(
        &mut events,
        &JourneyCommand::RescheduleAppointment {
            at: t("2025-03-06T15:05:00Z"),
            appointment_at: t("2025-03-09T10:00:00Z"),
        },
    );
    assert!(kinds_of(&queue::fold(&events.list), candidate.id).is_empty());
    // A second no-show is a new item.
    let again = candidate.run(
        &mut events,
        &JourneyCommand::RecordNoShow {
            at: t("2025-03-09T11:00:00Z"),
        },
    );
    let second = only(&queue::fold(&events.list), candidate.id, ItemKind::ReEngage);
    assert_eq!(
        second.item_id,
        item_id(candidate.id, ItemKind::ReEngage, again)
    );
    assert_ne!(second.item_id, re_engage.item_id);
}

/// A journey with a call and an escalation open (a reached candidate at a site that has not
/// acted), then `last`.
fn busy_journey_then(last: &JourneyCommand) -> (QueueModel, QueueModel, JourneyId) {
    let mut events = Events::default();
    let study = StudyId::new();
    events.study(study, t("2025-03-01T08:00:00Z"), SlaSettings::default());
    let (mut candidate, _) =
        Candidate::referral(&mut events, study, t("2025-03-03T09:00:00Z"), true, None);
    candidate.attempt(
        &mut events,
        t("2025-03-03T10:00:00Z"),
        ContactOutcome::Reached,
    );
    candidate.run(
        &mut events,
        &JourneyCommand::ReferToSite {
            at: t("2025-03-03T10:10:00Z"),
            site_id: SiteId::new(),
        },
    );
    let before = queue::fold(&events.list);
    candidate.run(&mut events, last);
    (before, queue::fold(&events.list), candidate.id)
}

#[test]
fn closing_opting_out_erasing_and_duplicates_remove_every_item() {
    let at = t("2025-03-04T10:00:00Z");
    for last in [
        JourneyCommand::OptOut { at },
        JourneyCommand::ErasePersonalData { at },
        JourneyCommand::LinkDuplicate {
            at,
            primary: JourneyId::new(),
        },
        JourneyCommand::RecordNotInterested { at, reason: None },
        JourneyCommand::Disqualify {
            at,
            reason: "criteria".into(),
        },
        JourneyCommand::Withdraw {
            at,
            reason: "moved away".into(),
        },
    ] {
        let name = last.name();
        let (before, after, journey) = busy_journey_then(&last);
        assert_eq!(
            kinds_of(&before, journey),
            vec![ItemKind::Schedule, ItemKind::SiteEscalation],
            "{name}"
        );
        assert!(kinds_of(&after, journey).is_empty(), "{name}");
        assert!(after.items.is_empty(), "{name}");
    }
}

#[test]
fn an_erased_journey_never_gets_an_item_again() {
    let mut events = Events::default();
    let study = StudyId::new();
    let (mut candidate, _) =
        Candidate::referral(&mut events, study, t("2025-03-03T09:00:00Z"), true, None);
    candidate.run(
        &mut events,
        &JourneyCommand::ErasePersonalData {
            at: t("2025-03-03T09:30:00Z"),
        },
    );
    // The domain still lets the funnel move on (the site was told before the erasure).
    candidate.run(
        &mut events,
        &JourneyCommand::CompletePrescreen {
            at: t("2025-03-03T10:00:00Z"),
            passed: true,
            reasons: Vec::new(),
        },
    );
    candidate.run(
        &mut events,
        &JourneyCommand::ReferToSite {
            at: t("2025-03-03T11:00:00Z"),
            site_id: SiteId::new(),
        },
    );
    assert!(queue::fold(&events.list).items.is_empty());
}

#[test]
fn events_before_the_referral_and_a_second_referral_change_nothing() {
    let mut events = Events::default();
    let study = StudyId::new();
    let journey = JourneyId::new();
    let key = StreamKey::new("journey", *journey.as_uuid()).expect("key");
    events.push(
        &key,
        JourneyEvent::NoShow(funnel_domain::events::NoShow {
            at: t("2025-03-03T08:00:00Z"),
        })
        .into(),
    );
    assert_eq!(queue::fold(&events.list), QueueModel::default());
    let (candidate, _) =
        Candidate::referral(&mut events, study, t("2025-03-03T09:00:00Z"), true, None);
    let once = queue::fold(&events.list);
    let DomainEvent::Journey(JourneyEvent::ReferralReceived(mut again)) =
        events.list.last().expect("referral").event.clone()
    else {
        unreachable!("the last event is the referral");
    };
    again.at = t("2025-03-05T09:00:00Z");
    again.consent_to_contact = false;
    events.push(&candidate.key, JourneyEvent::ReferralReceived(again).into());
    assert_eq!(queue::fold(&events.list), once);
}

#[test]
fn a_study_created_after_its_referrals_re_derives_them() {
    let mut events = Events::default();
    let study = StudyId::new();
    let referred = t("2025-03-03T09:00:00Z");
    let (candidate, seq) = Candidate::referral(&mut events, study, referred, true, None);
    let before = only(
        &queue::fold(&events.list),
        candidate.id,
        ItemKind::FirstContact,
    );
    assert_eq!(before.due_at, referred + hours(24));
    events.study(study, t("2025-03-03T09:05:00Z"), sla(2, 7, 24, 5));
    let after = only(
        &queue::fold(&events.list),
        candidate.id,
        ItemKind::FirstContact,
    );
    assert_eq!(after.due_at, referred + hours(2));
    assert_eq!(after.max_attempts, 7);
    assert_eq!(
        after.item_id,
        item_id(candidate.id, ItemKind::FirstContact, seq)
    );
    // A second creation changes nothing.
    events.study(study, t("2025-03-04T09:00:00Z"), sla(48, 2, 24, 5));
    let again = only(
        &queue::fold(&events.list),
        candidate.id,
        ItemKind::FirstContact,
    );
    assert_eq!(again, after);
}

// ---------------------------------------------------------------------------------------
// Generated histories.

const ZONES: [&str; 4] = [
    "Europe/Madrid",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Sydney",
];
const PEOPLE: [(&str, &str); 4] = [("es", "ES"), ("de", "DE"), ("fr", "FR"), ("en", "US")];

struct DataSet {
    events: Vec<ProjectedEvent>,
    studies: Vec<StudyId>,
}

/// The next step of a typical journey, so that many get through the cadence and to a site.
fn forward(
    rng: &mut StdRng,
    stage: Stage,
    at: DateTime<Utc>,
    site: SiteId,
    never_answers: bool,
) -> JourneyCommand {
    let later = at + TimeDelta::days(rng.gen_range(1..10));
    match stage {
        Stage::Referred if rng.gen_bool(0.5) => JourneyCommand::CompletePrescreen {
            at,
            passed: rng.gen_bool(0.8),
            reasons: Vec::new(),
        },
        Stage::Referred
        | Stage::PrescreenPassed
        | Stage::Contacting
        | Stage::Unreachable
        | Stage::NoShow => JourneyCommand::RecordContactAttempt {
            at,
            channel: ContactChannel::Phone,
            outcome: if !never_answers && rng.gen_bool(0.35) {
                ContactOutcome::Reached
            } else {
                *ContactOutcome::ALL[1..].choose(rng).expect("outcomes")
            },
            agent: None,
        },
        Stage::Contacted if rng.gen_bool(0.3) => JourneyCommand::CompletePrescreen {
            at,
            passed: true,
            reasons: Vec::new(),
        },
        Stage::Contacted => JourneyCommand::ReferToSite { at, site_id: site },
        Stage::ReferredToSite => JourneyCommand::RecordSiteContact { at },
        Stage::SiteContacted => JourneyCommand::ScheduleAppointment {
            at,
            appointment_at: later,
        },
        Stage::AppointmentScheduled if rng.gen_bool(0.6) => JourneyCommand::RecordAttendance { at },
        Stage::AppointmentScheduled => JourneyCommand::RecordNoShow { at },
        Stage::Attended => JourneyCommand::RecordConsent { at },
        Stage::Consented => JourneyCommand::StartScreening { at },
        _ => JourneyCommand::Randomize { at, arm: None },
    }
}

/// Detours: most are refused in a given stage, the others exercise every rule.
fn detour(
    rng: &mut StdRng,
    at: DateTime<Utc>,
    site: SiteId,
    journeys: &[JourneyId],
) -> JourneyCommand {
    match rng.gen_range(0..14) {
        0 | 1 => JourneyCommand::RequestCallback {
            at,
            callback_at: at + TimeDelta::minutes(rng.gen_range(30..4000)),
            time_zone: (*ZONES.choose(rng).expect("zones")).into(),
        },
        2 => JourneyCommand::Reallocate {
            at,
            to_site: site,
            reason: "site is slow".into(),
        },
        3 => JourneyCommand::MarkUnreachable { at },
        4 => JourneyCommand::OptOut { at },
        5 => JourneyCommand::ErasePersonalData { at },
        6 => match journeys.choose(rng) {
            Some(primary) => JourneyCommand::LinkDuplicate {
                at,
                primary: *primary,
            },
            None => JourneyCommand::OptOut { at },
        },
        7 => JourneyCommand::RecordNotInterested { at, reason: None },
        8 => JourneyCommand::ReferToSite { at, site_id: site },
        9 => JourneyCommand::RecordNoShow { at },
        10 => JourneyCommand::RescheduleAppointment {
            at,
            appointment_at: at + TimeDelta::days(3),
        },
        11 => JourneyCommand::CompletePrescreen {
            at,
            passed: rng.gen_bool(0.7),
            reasons: Vec::new(),
        },
        12 => JourneyCommand::RecordContactAttempt {
            at,
            channel: ContactChannel::Sms,
            outcome: ContactOutcome::NoAnswer,
            agent: None,
        },
        _ => JourneyCommand::Disqualify {
            at,
            reason: "criteria".into(),
        },
    }
}

/// Four studies with different service levels: one created up front, one with the
/// defaults, one created only after its referrals, one never created.
fn generate(seed: u64, journeys: usize) -> DataSet {
    let mut rng = StdRng::seed_from_u64(seed);
    let start = t("2025-01-06T09:00:00Z");
    let studies: Vec<StudyId> = (0..4).map(|_| StudyId::new()).collect();
    let levels = [sla(4, 3, 6, 2), SlaSettings::default(), sla(48, 6, 30, 10)];
    let mut events = Events::default();
    events.study(studies[0], start - TimeDelta::days(10), levels[0]);
    events.study(studies[1], start - TimeDelta::days(10), levels[1]);
    let sites: Vec<SiteId> = (0..4).map(|_| SiteId::new()).collect();
    let mut ids: Vec<JourneyId> = Vec::new();
    for n in 0..journeys {
        let study = *studies.choose(&mut rng).expect("studies");
        let id = JourneyId::new();
        let mut candidate = Candidate {
            id,
            key: StreamKey::new("journey", *id.as_uuid()).expect("key"),
            state: JourneyState::NotStarted,
        };
        let mut at = start
            + hours(i64::try_from(n).expect("small") * 5)
            + TimeDelta::minutes(rng.gen_range(0..600));
        let (language, country) = *PEOPLE.choose(&mut rng).expect("people");
        // Some candidates never pick up: their cadence runs out.
        let never_answers = rng.gen_bool(0.15);
        candidate.run(
            &mut events,
            &JourneyCommand::ReceiveReferral {
                at,
                journey_id: id,
                candidate_id: CandidateId::new(),
                study_id: study,
                campaign_id: CampaignId::new(),
                source: *SourceChannel::ALL.choose(&mut rng).expect("sources"),
                language: Language::parse(language).expect("language"),
                country: Country::parse(country).expect("country"),
                preferred_site: None,
                consent_to_contact: rng.gen_bool(0.9),
                contact: sealed(),
                external_ref: None,
                time_zone: rng
                    .gen_bool(0.7)
                    .then(|| (*ZONES.choose(&mut rng).expect("zones")).to_owned()),
            },
        );
        for _ in 0..rng.gen_range(0..16) {
            at += hours(rng.gen_range(1..60)) + TimeDelta::seconds(rng.gen_range(0..3600));
            let site = *sites.choose(&mut rng).expect("sites");
            let mut applied = false;
            for attempt in 0..20 {
                let stage = candidate.state.stage().expect("started");
                let command = if attempt == 0 && rng.gen_bool(0.8) {
                    forward(&mut rng, stage, at, site, never_answers)
                } else {
                    detour(&mut rng, at, site, &ids)
                };
                if candidate.try_run(&mut events, &command).is_some() {
                    applied = true;
                    break;
                }
            }
            // Many no-shows are where the data set ends: re-engagements stay open.
            if !applied || (candidate.state.stage() == Some(Stage::NoShow) && rng.gen_bool(0.4)) {
                break;
            }
        }
        ids.push(id);
    }
    events.study(studies[2], start + TimeDelta::days(400), levels[2]);
    DataSet {
        events: events.list,
        studies,
    }
}

/// Every rule has something to show in the generated data.
fn assert_covers_the_rules(model: &QueueModel) {
    for kind in ItemKind::ALL {
        assert!(
            model.items.keys().any(|(_, k)| *k == kind),
            "some {} items",
            kind.as_str()
        );
    }
    let journeys = || model.journeys.values();
    let open_without_items = |stage: Stage| {
        journeys()
            .any(|j| j.stage == stage && !model.items.keys().any(|(id, _)| *id == j.journey_id))
    };
    assert!(
        journeys().any(|j| j.stage == Stage::Contacting
            && j.unanswered >= model.sla(j.study_id).contact_attempts),
        "some exhausted cadences"
    );
    assert!(
        open_without_items(Stage::Contacting),
        "an exhausted cadence has no item"
    );
    assert!(journeys().any(|j| j.erased), "some erased");
    assert!(
        journeys().any(|j| j.stage == Stage::Duplicate),
        "some duplicates"
    );
    assert!(
        journeys().any(|j| j.stage == Stage::OptedOut),
        "some opt-outs"
    );
    assert!(
        journeys().any(|j| !j.consent_to_contact),
        "some without consent"
    );
    let zones: std::collections::BTreeSet<&str> = model
        .items
        .values()
        .filter(|item| item.kind == ItemKind::Callback)
        .filter_map(|item| item.time_zone.as_deref())
        .collect();
    assert!(zones.len() >= 2, "call-backs in several zones: {zones:?}");
    assert!(
        model
            .items
            .values()
            .any(|item| item.kind == ItemKind::NextAttempt && item.attempt >= 3),
        "cadences beyond the second attempt"
    );
    // Closed and erased journeys are never in a queue.
    for item in model.items.values() {
        let journey = &model.journeys[&item.journey_id];
        assert!(journey.stage.is_open() && !journey.erased, "{item:?}");
    }
}

// Applying directly, in a schema of the test's own (no runtime involved).

const SCHEMA: &str = "work_queue_direct";

#[tokio::test]
async fn work_queue_applied_directly_equals_the_fold() {
    let db = test_database().await;
    let mut all = Vec::new();
    for seed in [1_u64, 2, 3] {
        all.extend(generate(seed, 150).events);
    }
    // One stream: number the events as it would.
    for (n, event) in all.iter_mut().enumerate() {
        event.seq = n as u64 + 1;
    }
    apply_directly(&db.pool, &WorkQueue, SCHEMA, &all).await;
    let expected = queue::fold(&all);
    assert_covers_the_rules(&expected);
    let mut tx = in_schema(&db.pool, SCHEMA).await;
    assert_eq!(queue::load(&mut tx).await.expect("load"), expected);
}

/// Batch apply (one read and a few writes per run of journey events) leaves exactly the rows
/// that applying event by event leaves, whatever the batch boundaries, including studies
/// created after some of their referrals.
#[tokio::test]
async fn work_queue_applied_in_batches_equals_applied_event_by_event() {
    let db = test_database().await;
    let mut all = Vec::new();
    for seed in [4_u64, 5, 6] {
        all.extend(generate(seed, 150).events);
    }
    let mut mixed = studies_after_a_third(all);
    for (n, event) in mixed.iter_mut().enumerate() {
        event.seq = n as u64 + 1;
    }
    let expected = queue::fold(&mixed);
    apply_directly(&db.pool, &WorkQueue, "queue_one_by_one", &mixed).await;
    let mut tx = in_schema(&db.pool, "queue_one_by_one").await;
    let one_by_one = queue::load(&mut tx).await.expect("load");
    drop(tx);
    assert_eq!(one_by_one, expected);
    for batch in [7_usize, 100, 5000] {
        let schema = format!("queue_batched_{batch}");
        apply_batched(&db.pool, &WorkQueue, &schema, &mixed, batch).await;
        let mut tx = in_schema(&db.pool, &schema).await;
        assert_eq!(
            queue::load(&mut tx).await.expect("load"),
            one_by_one,
            "batches of {batch}"
        );
    }
}

/// The depth report in plain Rust, from the fold's items.
fn expected_depth(
    model: &QueueModel,
    studies: Option<&[StudyId]>,
    now: DateTime<Utc>,
) -> Vec<QueueDepth> {
    let mut groups: BTreeMap<(Uuid, &str, String, String), Vec<&WorkItem>> = BTreeMap::new();
    for item in model.items.values() {
        if studies.is_some_and(|studies| !studies.contains(&item.study_id)) {
            continue;
        }
        groups
            .entry((
                *item.study_id.as_uuid(),
                item.kind.as_str(),
                item.language.as_str().to_owned(),
                item.country.as_str().to_owned(),
            ))
            .or_default()
            .push(item);
    }
    groups
        .into_values()
        .map(|items| {
            let first = items[0];
            let count = |keep: &dyn Fn(&WorkItem) -> bool| {
                i64::try_from(items.iter().filter(|item| keep(item)).count()).expect("small")
            };
            QueueDepth {
                study_id: first.study_id,
                kind: first.kind,
                language: first.language.clone(),
                country: first.country.clone(),
                due: count(&|item| item.ready_at <= now),
                overdue: count(&|item| item.overdue_at.is_some_and(|at| at < now)),
                upcoming: count(&|item| item.ready_at > now),
                oldest_age_seconds: items
                    .iter()
                    .map(|item| item.ready_at)
                    .filter(|due| *due <= now)
                    .min()
                    .map(|due| (now - due).num_seconds()),
            }
        })
        .collect()
}

#[tokio::test]
async fn depth_counts_due_overdue_and_upcoming_items_at_a_given_time() {
    let db = test_database().await;
    // Hand-made: one study with known levels, items with known due and overdue times.
    let mut events = Events::default();
    let study = StudyId::new();
    events.study(study, t("2025-03-01T08:00:00Z"), sla(4, 3, 24, 2));
    let referred = t("2025-03-03T09:00:00Z");
    // Two first contacts (referred 09:00 and 10:00, SLA 4 h) and a call-back at 15:00
    // (overdue after 16:00).
    Candidate::referral(&mut events, study, referred, true, None);
    Candidate::referral(&mut events, study, referred + hours(1), true, None);
    let (mut caller, _) = Candidate::referral(&mut events, study, referred, true, None);
    caller.run(
        &mut events,
        &JourneyCommand::RequestCallback {
            at: referred + hours(1),
            callback_at: t("2025-03-03T15:00:00Z"),
            time_zone: "Asia/Tokyo".into(),
        },
    );
    apply_directly(&db.pool, &WorkQueue, SCHEMA, &events.list).await;
    let mut tx = in_schema(&db.pool, SCHEMA).await;
    let depth_at = |now: &str| {
        let now = t(now);
        move |rows: &[QueueDepth], kind: ItemKind| {
            let row = rows
                .iter()
                .find(|row| row.kind == kind)
                .unwrap_or_else(|| panic!("a {} row at {now}", kind.as_str()));
            (row.due, row.overdue, row.upcoming, row.oldest_age_seconds)
        }
    };
    // First contacts may be taken from their referral on (09:00 and 10:00) and breach their
    // SLA at 13:00 and 14:00; the call-back is taken from 15:00 and breaches after 16:00.
    let cases = [
        (
            "2025-03-03T12:00:00Z",
            (2, 0, 0, Some(10_800)),
            (0, 0, 1, None),
        ),
        (
            "2025-03-03T13:00:00Z",
            (2, 0, 0, Some(14_400)),
            (0, 0, 1, None),
        ),
        (
            "2025-03-03T13:30:00Z",
            (2, 1, 0, Some(16_200)),
            (0, 0, 1, None),
        ),
        (
            "2025-03-03T15:30:00Z",
            (2, 2, 0, Some(23_400)),
            (1, 0, 0, Some(1800)),
        ),
        (
            "2025-03-03T16:00:01Z",
            (2, 2, 0, Some(25_201)),
            (1, 1, 0, Some(3601)),
        ),
    ];
    for (now, first_contact, callback) in cases {
        let rows = queue::depth(&mut tx, Some(&[study]), t(now))
            .await
            .expect("depth");
        assert_eq!(rows.len(), 2, "{now}: {rows:?}");
        let get = depth_at(now);
        assert_eq!(get(&rows, ItemKind::FirstContact), first_contact, "{now}");
        assert_eq!(get(&rows, ItemKind::Callback), callback, "{now}");
    }
    assert!(
        queue::depth(&mut tx, Some(&[]), referred)
            .await
            .expect("depth")
            .is_empty(),
        "no study, no queue"
    );
    assert!(
        queue::depth(&mut tx, Some(&[StudyId::new()]), referred)
            .await
            .expect("depth")
            .is_empty()
    );
    // The item queries read the same rows.
    let callback = queue::items_for_journey(&mut tx, caller.id)
        .await
        .expect("items");
    assert_eq!(callback.len(), 1);
    assert_eq!(callback[0].kind, ItemKind::Callback);
    assert_eq!(callback[0].time_zone.as_deref(), Some("Asia/Tokyo"));
    assert_eq!(
        queue::item(&mut tx, callback[0].item_id)
            .await
            .expect("item"),
        Some(callback[0].clone())
    );
    assert_eq!(
        queue::item(&mut tx, Uuid::now_v7()).await.expect("item"),
        None
    );
}

#[tokio::test]
async fn depth_equals_figures_from_the_fold() {
    let db = test_database().await;
    let data = generate(21, 200);
    let mut events = data.events;
    for (n, event) in events.iter_mut().enumerate() {
        event.seq = n as u64 + 1;
    }
    apply_directly(&db.pool, &WorkQueue, SCHEMA, &events).await;
    let model = queue::fold(&events);
    let mut tx = in_schema(&db.pool, SCHEMA).await;
    let first = data.studies[0];
    for now in [
        "2025-01-10T00:00:00Z",
        "2025-02-01T12:00:00Z",
        "2025-03-15T00:00:00Z",
        "2026-01-01T00:00:00Z",
    ] {
        let now = t(now);
        let all = queue::depth(&mut tx, None, now).await.expect("depth");
        assert_eq!(all, expected_depth(&model, None, now), "{now}");
        let one = queue::depth(&mut tx, Some(&[first]), now)
            .await
            .expect("depth");
        assert_eq!(one, expected_depth(&model, Some(&[first]), now), "{now}");
    }
    // Somewhere in between some items are due, some overdue and some upcoming.
    let middle = expected_depth(&model, None, t("2025-02-01T12:00:00Z"));
    assert!(middle.iter().any(|row| row.overdue > 0));
    assert!(middle.iter().any(|row| row.due > row.overdue));
    let end = expected_depth(&model, None, t("2026-01-01T00:00:00Z"));
    assert!(end.iter().all(|row| row.upcoming == 0));
}

// ---------------------------------------------------------------------------------------
// Through the runtime: NATS stream → projector → live generation.

async fn projector_equals_fold(seed: u64) {
    let nats = test_nats().await;
    let log = provisioned_log(&nats.url).await;
    let db = test_database().await;
    let data = generate(seed, 200);
    // The late study's creation is the data set's last event: appended last, it comes after
    // its referrals on the stream too.
    let (late, journeys) = data.events.split_last().expect("events");
    let (first, second) = journeys.split_at(journeys.len() / 2);
    append_projected(&log, first).await;
    let projector = Projector::new(
        log.clone(),
        db.pool.clone(),
        &Registry::new(),
        fast_settings(),
    )
    .expect("metrics")
    .with_read_models();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    // Half before the projector starts (catch-up), half while it runs.
    append_projected(&log, second).await;
    append_projected(&log, std::slice::from_ref(late)).await;
    let head = wait_live_caught_up(&log, &db.pool, WorkQueue::NAME).await;
    let stream = read_back(&log, head).await;
    assert_eq!(stream.len(), data.events.len());
    let expected = queue::fold(&stream);
    assert_covers_the_rules(&expected);
    let mut tx = ReadModels::new(db.pool.clone())
        .read(WorkQueue::NAME)
        .await
        .expect("live generation");
    assert_eq!(queue::load(&mut tx).await.expect("load"), expected);
    // The queries run on the live generation too.
    let now = t("2025-02-01T00:00:00Z");
    assert_eq!(
        queue::depth(&mut tx, None, now).await.expect("depth"),
        expected_depth(&expected, None, now)
    );
    let (&(journey, _), item) = expected.items.iter().next().expect("an item");
    assert_eq!(
        queue::items_for_journey(&mut tx, journey)
            .await
            .expect("items")
            .iter()
            .map(|item| item.item_id)
            .collect::<std::collections::BTreeSet<_>>(),
        expected
            .items
            .range((journey, ItemKind::FirstContact)..=(journey, ItemKind::SiteEscalation))
            .map(|(_, item)| item.item_id)
            .collect()
    );
    assert_eq!(
        queue::item(&mut tx, item.item_id)
            .await
            .expect("item")
            .as_ref(),
        Some(item)
    );
    drop(tx);
    let _ = stop.send(());
    task.await.expect("projector");
}

#[tokio::test]
async fn work_queue_projector_equals_the_fold_seed_31() {
    projector_equals_fold(31).await;
}

#[tokio::test]
async fn work_queue_projector_equals_the_fold_seed_32() {
    projector_equals_fold(32).await;
}
