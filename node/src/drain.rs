//! `iris drain`: asks the node running on a data directory to drain and
//! stop, and waits until it has. A running node keeps its process id in
//! `<data dir>/iris.pid` ([`PidFile`]); the drain is the node's own graceful
//! stop (`SIGTERM`, docs/operations.md#stopping): `/readyz` answers 503 for
//! `listen.drain_ms`, an edge closes its sessions spread over
//! `listen.drain_spread_ms` and a core's shards finish their writes and
//! leave the consumer group, whose other members take them at once.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file, in a node's data directory, that names its process.
pub const PID_FILE: &str = "iris.pid";

/// The running node's pid file: written once the node serves, removed when
/// it stops (a process killed with -9 leaves it behind; `iris drain` then
/// finds no such node and says so).
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's id into `data_dir`.
    pub fn write(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(PID_FILE);
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: a second node started on the same directory since
        // may have written its id over ours.
        if read_pid(&self.path).ok() == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read_pid(path: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim().parse().with_context(|| format!("{} does not hold a process id: {:?}", path.display(), text.trim()))
}

/// Which process a pid file names, if it is a running Iris node: `comm` is
/// the process's name (`/proc/PID/comm`), `None` when no such process runs.
pub fn judge(pid: u32, comm: Option<&str>) -> Result<u32, String> {
    match comm.map(str::trim) {
        None => Err(format!("process {pid} is not running: the node has stopped (a stale pid file)")),
        Some("iris") => Ok(pid),
        Some(other) => Err(format!("process {pid} is {other:?}, not an iris node: a stale pid file")),
    }
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()
}

/// Whether `pid` still runs: a process that has exited but that its parent
/// has not reaped yet (a zombie, state `Z`) has stopped.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !exited(&stat))
}

/// Whether a `/proc/PID/stat` line is a process that has exited. The state
/// follows the name, which is in parentheses and may hold anything.
fn exited(stat: &str) -> bool {
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    matches!(state, Some("Z" | "X" | "x"))
}

/// Drains the node running on `data_dir` and waits up to `timeout` for it
/// to exit; `progress` hears what happens.
pub fn drain(data_dir: &Path, timeout: Duration, mut progress: impl FnMut(&str)) -> anyhow::Result<()> {
    let path = data_dir.join(PID_FILE);
    if !path.exists() {
        bail!("no node runs on {}: {} is absent", data_dir.display(), PID_FILE);
    }
    let named = read_pid(&path)?;
    let pid = judge(named, comm(named).as_deref()).map_err(anyhow::Error::msg)?;
    // SAFETY: a signal to a process we checked is an iris node.
    if unsafe { libc::kill(pid as i32, libc::SIGTERM) } != 0 {
        bail!("could not signal process {pid}: {}", std::io::Error::last_os_error());
    }
    progress(&format!("draining node process {pid}"));
    let start = Instant::now();
    while running(pid) {
        if start.elapsed() >= timeout {
            bail!("node process {pid} still running after {} s; it goes on draining", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    progress(&format!("node process {pid} stopped after {:.1} s", start.elapsed().as_secs_f64()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_iris_process_is_drained() {
        assert_eq!(judge(42, Some("iris\n")), Ok(42));
        assert!(judge(42, None).unwrap_err().contains("not running"));
        assert!(judge(42, Some("bash\n")).unwrap_err().contains("not an iris node"));
    }

    #[test]
    fn a_zombie_has_exited() {
        assert!(exited("1151 (iris) Z 1150 1151 0 0 -1"));
        assert!(exited("7 (a) b) c) X 1 7"));
        assert!(!exited("1151 (iris) S 1150 1151 0 0 -1"));
        assert!(!exited("7 (Z) R 1 7"));
        assert!(running(std::process::id()));
    }

    #[test]
    fn a_pid_file_is_removed_by_its_own_process_only() {
        let dir = tempfile::tempdir().unwrap();
        let pid = PidFile::write(dir.path()).unwrap();
        assert_eq!(read_pid(&dir.path().join(PID_FILE)).unwrap(), std::process::id());
        drop(pid);
        assert!(!dir.path().join(PID_FILE).exists());

        let pid = PidFile::write(dir.path()).unwrap();
        std::fs::write(dir.path().join(PID_FILE), "1\n").unwrap();
        drop(pid);
        assert!(dir.path().join(PID_FILE).exists(), "another node's file stays");
    }

    #[test]
    fn a_missing_or_garbled_pid_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = drain(dir.path(), Duration::from_secs(1), |_| {}).unwrap_err().to_string();
        assert!(e.contains("no node runs on"), "{e}");
        std::fs::write(dir.path().join(PID_FILE), "abc").unwrap();
        let e = drain(dir.path(), Duration::from_secs(1), |_| {}).unwrap_err().to_string();
        assert!(e.contains("does not hold a process id"), "{e}");
    }
}
