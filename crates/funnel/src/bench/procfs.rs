//! What the benchmarks read from Linux's `/proc` about the processes beside them: which one
//! listens on a port, and how much CPU time this process, PostgreSQL and nats-server spent
//! during a run, so a figure can say what each unit of work cost and where.

use std::time::Duration;

use anyhow::Context as _;

/// The port of a `nats://host:port` URL (the first, if several).
pub(crate) fn port_of(url: &str) -> anyhow::Result<u16> {
    let first = url.split(',').next().unwrap_or(url);
    let authority = first.rsplit("//").next().unwrap_or(first);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let port = host_port
        .rsplit_once(':')
        .map_or("4222", |(_, port)| port.trim_end_matches('/'));
    port.parse()
        .with_context(|| format!("no port in the NATS URL ({port})"))
}

/// The process listening on a TCP port of this machine: the socket's inode from
/// `/proc/net/tcp{,6}`, then the process holding it among `/proc/*/fd`.
pub(crate) fn listening_pid(port: u16) -> anyhow::Result<u32> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, port)| u16::from_str_radix(port, 16).ok());
            if local_port == Some(port) && *state == LISTEN {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    anyhow::ensure!(
        !inodes.is_empty(),
        "nothing on this machine listens on port {port}: the NATS server must run here"
    );
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes
                    .iter()
                    .any(|inode| target.as_os_str() == inode.as_str())
            {
                return Ok(pid);
            }
        }
    }
    anyhow::bail!("no process of this user holds the socket listening on port {port}")
}

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// CPU time (user + system) spent so far by this process, by every `postgres` process of the
/// machine (with the backends that exited, which their postmaster has collected) and by the
/// nats-server the benchmark writes to.
#[derive(Clone, Copy, Debug)]
struct CpuTimes {
    this_process: Duration,
    postgres: Duration,
    nats: Duration,
}

impl CpuTimes {
    /// `None` where `/proc` cannot be read (not Linux, another user's processes) or the
    /// nats-server (`nats_pid`) does not run on this machine.
    fn read(nats_pid: Option<u32>) -> Option<Self> {
        let this_process = process_ticks(std::process::id(), false)?;
        let mut postgres = 0;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == "postgres" {
                postgres += process_ticks(pid, true).unwrap_or(0);
            }
        }
        let nats = nats_pid.and_then(|pid| process_ticks(pid, false))?;
        Some(Self {
            this_process: ticks(this_process),
            postgres: ticks(postgres),
            nats: ticks(nats),
        })
    }
}

/// CPU time counted from [`CpuSpan::start`] to [`CpuSpan::end`] around a measured run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuSpan {
    nats_pid: Option<u32>,
    start: Option<CpuTimes>,
}

impl CpuSpan {
    /// Starts counting, for the nats-server listening on the port of `nats_url`.
    pub(crate) fn start(nats_url: &str) -> Self {
        let nats_pid = port_of(nats_url).and_then(listening_pid).ok();
        Self {
            nats_pid,
            start: CpuTimes::read(nats_pid),
        }
    }

    /// What was spent since the start.
    pub(crate) fn end(self) -> CpuSpent {
        let end = CpuTimes::read(self.nats_pid);
        CpuSpent(self.start.zip(end).map(|(start, end)| CpuTimes {
            this_process: end.this_process.saturating_sub(start.this_process),
            postgres: end.postgres.saturating_sub(start.postgres),
            nats: end.nats.saturating_sub(start.nats),
        }))
    }
}

/// The CPU a run spent, if `/proc` could be read at both ends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuSpent(Option<CpuTimes>);

impl CpuSpent {
    /// Per `units` of `unit` (e.g. "referral"), as one conditions phrase: `CPU per referral:
    /// this process (service and clients) 0.327 ms, PostgreSQL 0.394 ms, nats-server 0.180 ms,
    /// together 0.901 ms`.
    pub(crate) fn per(self, units: u64, unit: &str) -> String {
        let Some(spent) = self.0 else {
            return "CPU per unit not measured (no /proc for the processes)".to_owned();
        };
        let per = |time: Duration| time.as_secs_f64() * 1000.0 / units.max(1) as f64;
        let (this_process, postgres, nats) = (
            per(spent.this_process),
            per(spent.postgres),
            per(spent.nats),
        );
        format!(
            "CPU per {unit}: this process (service and clients) {this_process:.3} ms, \
             PostgreSQL {postgres:.3} ms, nats-server {nats:.3} ms, together {:.3} ms",
            this_process + postgres + nats
        )
    }
}

const fn ticks(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// utime + stime of a process (all its threads), and with `children` those of the children it
/// has waited for.
fn process_ticks(pid: u32, children: bool) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14-17 of stat(5): utime, stime, cutime, cstime; the state (field 3) is index 0.
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|value| value.parse::<u64>().ok())
    };
    let own = field(14)? + field(15)?;
    Some(if children {
        own + field(16)? + field(17)?
    } else {
        own
    })
}
