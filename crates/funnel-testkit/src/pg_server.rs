//! A PostgreSQL server of one test's own, for tests that crash and restart it (the machine's
//! shared server must stay up for every other test).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use funnel_db::DbSettings;
use tokio::process::{Child, Command};

use crate::nats::{free_port, unique_prefix};

/// The directory holding `initdb` and `postgres`: `FUNNEL_TEST_PG_BIN`, else the newest
/// Debian-packaged server under `/usr/lib/postgresql/<major>/bin`.
fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("FUNNEL_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (or set FUNNEL_TEST_PG_BIN)")
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("postgres").exists())
        .collect();
    majors.sort();
    majors
        .pop()
        .map(|(_, bin)| bin)
        .expect("a PostgreSQL server under /usr/lib/postgresql")
}

/// PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user (the
/// child is the server itself, so that killing it is a crash of the server).
fn as_server_user(program: &Path) -> Command {
    let mut command = Command::new(program);
    if let Some((uid, gid)) = postgres_user() {
        command.uid(uid).gid(gid);
    }
    command
}

/// The `postgres` user's ids, when running as root.
fn postgres_user() -> Option<(u32, u32)> {
    let me = std::process::Command::new("id").arg("-u").output().ok()?;
    if me.stdout.trim_ascii() != b"0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != "postgres" {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// A throw-away cluster on a free port with trust authentication, crashed (SIGKILL) when
/// dropped. Durable settings as in production (fsync on): a crash loses nothing committed.
#[derive(Debug)]
pub struct PostgresServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl PostgresServer {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("funnel-pg-{}", unique_prefix()));
        std::fs::create_dir_all(&dir).expect("create the cluster directory");
        if postgres_user().is_some() {
            let _ = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status();
        }
        let status = as_server_user(&pg_bin().join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("run initdb");
        assert!(status.success(), "initdb failed: {status}");
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
        };
        server.spawn().await;
        server
    }

    /// The URL of database `name` on this server.
    #[must_use]
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A database of its own on this server, migrated, with its settings.
    pub async fn database(&self) -> DbSettings {
        let settings = DbSettings::new(self.url("funnel"));
        funnel_db::ensure_database(&settings)
            .await
            .expect("create the database");
        let pool = funnel_db::connect(&settings).await.expect("connect");
        funnel_db::migrate(&pool).await.expect("migrate");
        pool.close().await;
        settings
    }

    /// Kills the server at once (SIGKILL), as a crash of the machine's database would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        // The postmaster's children die with it shortly; the next start waits for the port.
    }

    /// Starts the server again on the same port and data: crash recovery replays the WAL.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let url = self.url("postgres");
        // After a crash the old server's backends take a moment to notice and leave; until
        // then a new server refuses the data directory and exits. Start again until one stays.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut child = as_server_user(&pg_bin().join("postgres"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-p", &self.port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "unix_socket_directories="])
                .args(["-c", "max_connections=50"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn postgres");
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if accepts(&url).await {
                    self.child = Some(child);
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "PostgreSQL did not start within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "PostgreSQL did not start within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn accepts(url: &str) -> bool {
    use sqlx::Connection as _;
    match sqlx::PgConnection::connect(url).await {
        Ok(mut conn) => sqlx::query("SELECT 1").execute(&mut conn).await.is_ok(),
        Err(_) => false,
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
