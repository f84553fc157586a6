use std::net::SocketAddr;

use funnel_api::auth::{NewToken, Role, TokenStore};
use funnel_api::clock::ManualClock;
use funnel_api::commands::CommandService;
use funnel_api::{Application, ServiceSettings};
use funnel_eventlog::{EventLog, EventLogSettings};
use funnel_privacy::KeyStore;
use funnel_testkit::{TestDb, TestNats};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One running service and the handles a test needs to look behind it.
pub(crate) struct TestApp {
    pub(crate) address: String,
    pub(crate) http: reqwest::Client,
    pub(crate) commands: CommandService,
    pub(crate) keys: KeyStore,
    pub(crate) tokens: TokenStore,
    /// The service's clock: tests move it instead of sleeping.
    pub(crate) clock: ManualClock,
    #[allow(
        dead_code,
        reason = "keeps the test database (and its pool) alive for the test"
    )]
    pub(crate) db: TestDb,
    pub(crate) eventlog: EventLogSettings,
    /// A second, independent connection to the same stream, for looking at what was stored.
    pub(crate) log: EventLog,
    pub(crate) nats: TestNats,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), funnel_api::ServeError>>>,
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(funnel_testkit::test_nats().await).await
}

/// Starts the whole service on port 0 against its own stream and database.
pub(crate) async fn spawn_app_with(nats: TestNats) -> TestApp {
    spawn_app_configured(nats, |_| {}).await
}

/// [`spawn_app`] with settings changed by `configure` first (a lower rate limit, a shorter
/// request timeout).
pub(crate) async fn spawn_app_with_settings(
    configure: impl FnOnce(&mut ServiceSettings),
) -> TestApp {
    spawn_app_configured(funnel_testkit::test_nats().await, configure).await
}

pub(crate) async fn spawn_app_configured(
    nats: TestNats,
    configure: impl FnOnce(&mut ServiceSettings),
) -> TestApp {
    let db = funnel_testkit::test_database().await;
    let prefix = funnel_testkit::unique_prefix();
    let eventlog = EventLogSettings::new(nats.url.clone(), prefix.to_uppercase(), prefix);
    let mut settings = ServiceSettings::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        db.settings.clone(),
        eventlog.clone(),
    );
    configure(&mut settings);
    let clock = ManualClock::new(chrono::Utc::now());
    let app = Application::build_with_clock(
        settings,
        prometheus::Registry::new(),
        std::sync::Arc::new(clock.clone()),
    )
    .await
    .expect("the service builds");
    let tokens = app.tokens().clone();
    let address = format!("http://{}", app.local_addr());
    let commands = app.commands().clone();
    let (shutdown, stopped) = oneshot::channel();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let log = EventLog::connect(eventlog.clone())
        .await
        .expect("a second connection to the event log");
    TestApp {
        address,
        http: reqwest::Client::new(),
        commands,
        keys: KeyStore::new(db.pool.clone()),
        tokens,
        clock,
        db,
        eventlog,
        log,
        nats,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Creates an API token with the given role and scope and returns it in full.
    pub(crate) async fn token(&self, new: NewToken) -> String {
        self.tokens.create(&new).await.expect("create a token").1
    }

    pub(crate) async fn admin_token(&self) -> String {
        self.token(NewToken {
            name: "test admin".to_owned(),
            role: Some(Role::Admin),
            ..NewToken::default()
        })
        .await
    }

    pub(crate) async fn post_json(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("the request is answered")
    }

    pub(crate) async fn get_with(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("the request is answered")
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("the request is answered")
    }

    /// Signals the service to stop, as SIGTERM does, without waiting for it.
    pub(crate) fn request_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Stops the service the way SIGTERM does and waits until it has drained.
    pub(crate) async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("the server task does not panic")
                .expect("the server stops cleanly");
        }
    }

    /// Every message on the test's stream as raw bytes: headers and payload, as any NATS client
    /// in any language would see them.
    pub(crate) async fn raw_stream_dump(&self) -> Vec<u8> {
        let client = async_nats::connect(&self.nats.url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(&self.eventlog.stream_name)
            .await
            .expect("the stream exists");
        let last = stream
            .get_info()
            .await
            .expect("stream info")
            .state
            .last_sequence;
        let mut dump = Vec::new();
        for seq in 1..=last {
            let message = stream.get_raw_message(seq).await.expect("raw message");
            dump.extend_from_slice(message.subject.as_bytes());
            for (name, values) in message.headers.iter() {
                dump.extend_from_slice(name.to_string().as_bytes());
                for value in values {
                    dump.extend_from_slice(value.as_str().as_bytes());
                }
            }
            dump.extend_from_slice(&message.payload);
            dump.push(b'\n');
        }
        dump
    }
}

pub(crate) mod fixtures {
    use chrono::{DateTime, Duration, Utc};
    use funnel_domain::{
        CampaignId, CandidateId, ContactDetails, Country, JourneyCommand, JourneyId, Language,
        SealedContact, SourceChannel, SponsorId, StudyCommand, StudyId,
    };

    pub(crate) fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
            .expect("a valid timestamp")
            .with_timezone(&Utc)
            + Duration::minutes(minutes)
    }

    pub(crate) fn contact(name: &str, phone: &str, email: &str) -> ContactDetails {
        ContactDetails {
            name: name.to_owned(),
            phone: Some(phone.to_owned()),
            email: Some(email.to_owned()),
            notes: Some(format!("{name} prefers calls after 18:00")),
        }
    }

    pub(crate) fn create_study(study: StudyId) -> StudyCommand {
        StudyCommand::CreateStudy {
            at: at(0),
            study_id: study,
            sponsor_id: SponsorId::new(),
            title: "Migraine prevention, phase III".to_owned(),
            protocol_code: "MIG-301".to_owned(),
            target_randomized: 120,
            countries: vec![Country::parse("ES").unwrap(), Country::parse("DE").unwrap()],
            languages: vec![
                Language::parse("es").unwrap(),
                Language::parse("de").unwrap(),
            ],
            sla: Default::default(),
        }
    }

    /// A referral whose contact field is a placeholder: the command service seals the real one.
    pub(crate) fn referral(
        journey: JourneyId,
        candidate: CandidateId,
        study: StudyId,
    ) -> JourneyCommand {
        JourneyCommand::ReceiveReferral {
            at: at(1),
            journey_id: journey,
            candidate_id: candidate,
            study_id: study,
            campaign_id: CampaignId::new(),
            source: SourceChannel::Ads,
            language: Language::parse("es").unwrap(),
            country: Country::parse("ES").unwrap(),
            preferred_site: None,
            consent_to_contact: true,
            contact: SealedContact {
                alg: "pending".to_owned(),
                nonce: String::new(),
                ciphertext: "pending".to_owned(),
            },
            external_ref: Some("cmp-4711".to_owned()),
            time_zone: Some("Europe/Madrid".to_owned()),
        }
    }
}
