use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::eventually;

/// The pinned server version the project installs under `.tools/` (see `deploy/lib.sh`).
const PINNED_VERSION: &str = "2.15.1";

/// A name unique to one test, for its stream and subject prefix.
#[must_use]
pub fn unique_prefix() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

/// Where the pinned `nats-server` is: `FUNNEL_NATS_SERVER_BIN`, else the project-local install.
#[must_use]
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FUNNEL_NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let local = root.join(format!(
        ".tools/nats-server-{PINNED_VERSION}/bin/nats-server"
    ));
    assert!(
        local.exists(),
        "no nats-server at {}: run `bash deploy/install-nats.sh` (or the README's test command)",
        local.display()
    );
    local
}

/// A `nats-server` owned by one test: its own port and store, `sync_interval: always` like every
/// deployment we ship, killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

impl NatsServer {
    pub async fn start() -> Self {
        let store = std::env::temp_dir().join(format!("funnel-nats-{}", unique_prefix()));
        std::fs::create_dir_all(&store).expect("create nats store dir");
        let port = free_port();
        let mut server = Self {
            child: None,
            port,
            store,
        };
        server.spawn().await;
        server
    }

    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on the same port and store.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let config = self.store.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nserver_name: test_{port}\njetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n}}\n",
                port = self.port,
                store = self.store.join("js").display(),
            ),
        )
        .expect("write nats config");
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let url = self.url();
        eventually(
            "nats-server to accept connections",
            Duration::from_secs(10),
            || {
                let url = url.clone();
                async move { async_nats::connect(url).await.ok().map(|_| ()) }
            },
        )
        .await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("find a free port")
}

/// The NATS a test talks to: the suite's shared server when `FUNNEL_TEST_NATS_URL` is set (the
/// test script starts one), else a server of the test's own. Tests isolate themselves by stream
/// name and subject prefix either way.
#[derive(Debug)]
pub struct TestNats {
    pub url: String,
    _own: Option<NatsServer>,
}

impl TestNats {
    /// A server the test manages itself (e.g. a [`NatsServer`] it kills and restarts).
    #[must_use]
    pub const fn from_url(url: String) -> Self {
        Self { url, _own: None }
    }
}

pub async fn test_nats() -> TestNats {
    match std::env::var("FUNNEL_TEST_NATS_URL") {
        Ok(url) if !url.is_empty() => TestNats { url, _own: None },
        _ => {
            let server = NatsServer::start().await;
            TestNats {
                url: server.url(),
                _own: Some(server),
            }
        }
    }
}
