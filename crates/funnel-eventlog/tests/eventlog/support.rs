use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{SubsecRound, Utc};
use funnel_eventlog::{EventLog, EventLogSettings, NewEvent, StreamKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=funnel_eventlog=debug`).
fn init_tracing() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// An event log on a stream and prefix of its own, provisioned.
pub(crate) async fn provisioned_log(
    url: &str,
    adjust: impl FnOnce(&mut EventLogSettings),
) -> EventLog {
    init_tracing();
    let name = funnel_testkit::unique_prefix();
    let mut settings = EventLogSettings::new(url, name.clone(), name);
    adjust(&mut settings);
    let log = EventLog::connect(settings).await.expect("connect");
    log.provision().await.expect("provision");
    log
}

pub(crate) fn journey() -> StreamKey {
    StreamKey::new("journey", Uuid::new_v4()).expect("valid key")
}

pub(crate) fn event(label: &str) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        event_type: format!("test.{label}.v1"),
        // CloudEvents time round-trips at the precision we write; microseconds keep it exact.
        time: Utc::now().trunc_subsecs(6),
        subject: label.to_owned(),
        data: Bytes::from(format!(r#"{{"label":"{label}"}}"#)),
    }
}

/// A raw client for looking at the stream the way another consumer would.
pub(crate) async fn raw_jetstream(url: &str) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(url).await.expect("raw connect"))
}

/// A TCP proxy between the event log and nats-server that, when armed, lets a request through
/// to the server but swallows the server's next reply containing `pattern` (the publish ack)
/// and drops the connection, so the client never learns the outcome: a lost ack, for real.
pub(crate) struct AckSwallowingProxy {
    pub(crate) url: String,
    armed: Arc<AtomicBool>,
    pattern: Arc<std::sync::Mutex<Vec<u8>>>,
    swallowed: Arc<AtomicUsize>,
}

impl AckSwallowingProxy {
    pub(crate) async fn start(upstream_url: &str) -> Self {
        let upstream = upstream_url.trim_start_matches("nats://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("nats://{}", listener.local_addr().expect("proxy addr"));
        let proxy = Self {
            url,
            armed: Arc::new(AtomicBool::new(false)),
            pattern: Arc::new(std::sync::Mutex::new(Vec::new())),
            swallowed: Arc::new(AtomicUsize::new(0)),
        };
        let (armed, pattern, swallowed) = (
            Arc::clone(&proxy.armed),
            Arc::clone(&proxy.pattern),
            Arc::clone(&proxy.swallowed),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(pump(
                    client,
                    server,
                    Arc::clone(&armed),
                    Arc::clone(&pattern),
                    Arc::clone(&swallowed),
                ));
            }
        });
        proxy
    }

    /// Swallows the next server reply containing `pattern`, then cuts the connection.
    pub(crate) fn arm(&self, pattern: &str) {
        *self.pattern.lock().expect("pattern lock") = pattern.as_bytes().to_vec();
        self.armed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn swallowed(&self) -> usize {
        self.swallowed.load(Ordering::SeqCst)
    }
}

async fn pump(
    mut client: TcpStream,
    mut server: TcpStream,
    armed: Arc<AtomicBool>,
    pattern: Arc<std::sync::Mutex<Vec<u8>>>,
    swallowed: Arc<AtomicUsize>,
) {
    let (mut from_client, mut to_client) = client.split();
    let (mut from_server, mut to_server) = server.split();
    let mut client_buf = vec![0_u8; 64 * 1024];
    let mut server_buf = vec![0_u8; 64 * 1024];
    loop {
        tokio::select! {
            read = from_client.read(&mut client_buf) => {
                let Ok(n @ 1..) = read else { return };
                if to_server.write_all(&client_buf[..n]).await.is_err() { return; }
            }
            read = from_server.read(&mut server_buf) => {
                let Ok(n @ 1..) = read else { return };
                let chunk = &server_buf[..n];
                if armed.load(Ordering::SeqCst) {
                    let pattern = pattern.lock().expect("pattern lock").clone();
                    if chunk.windows(pattern.len()).any(|window| window == pattern.as_slice()) {
                        armed.store(false, Ordering::SeqCst);
                        swallowed.fetch_add(1, Ordering::SeqCst);
                        // Dropping both sockets: the ack is gone and the client must reconnect.
                        return;
                    }
                }
                if to_client.write_all(chunk).await.is_err() { return; }
            }
        }
    }
}

pub(crate) const PATIENCE: Duration = Duration::from_secs(20);
