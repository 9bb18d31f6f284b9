//! Running declared commands: bounded output, exit status and a timeout for commands that finish;
//! detached start with a pid file, liveness and signalling for processes that keep running.
//! Always argv, never a shell.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nodewarden_shared::ops::{CommandExit, CommandReport};
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

/// The PATH every command gets unless its service declares another.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where, as whom and with what environment a command runs.
#[derive(Debug, Clone, Default)]
pub struct RunAs {
    pub workdir: Option<PathBuf>,
    /// uid and gid, resolved from a user name.
    pub ids: Option<(u32, u32)>,
    /// Declared variables, on top of PATH. Nothing is inherited, so a service sees the same
    /// environment whether the agent or an SSH session (with its `SSH_*` variables) started it.
    pub env: BTreeMap<String, String>,
}

impl RunAs {
    fn apply(&self, cmd: &mut Command) {
        cmd.env_clear().env("PATH", DEFAULT_PATH).envs(&self.env);
        if let Some(dir) = &self.workdir {
            cmd.current_dir(dir);
        }
        if let Some((uid, gid)) = self.ids {
            // std drops supplementary groups when a root parent switches uid.
            cmd.uid(uid).gid(gid);
        }
    }
}

/// The uid and primary gid of a user, from the system's user database.
pub fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    let c_name = CString::new(name).map_err(|_| format!("user {name:?} has a NUL byte"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: getpwnam_r writes into `pwd` and `buf` (whose length we pass) and sets `result`
    // to null or to `&pwd`; we read only uid/gid, which do not point into `buf`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 {
            return Err(format!(
                "looking up user {name:?}: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        if result.is_null() {
            return Err(format!("no user {name:?} on this node"));
        }
        Ok((pwd.pw_uid, pwd.pw_gid))
    }
}

/// Keeps the first `limit` bytes, counts the rest.
struct Bounded {
    data: Vec<u8>,
    limit: usize,
    cut: bool,
}

impl Bounded {
    fn new(limit: usize) -> Self {
        Bounded {
            data: Vec::new(),
            limit,
            cut: false,
        }
    }
    fn push(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.data.len());
        if bytes.len() > room {
            self.cut = true;
        }
        self.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn exit_of(status: std::process::ExitStatus) -> CommandExit {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => CommandExit::Exited { code },
        (None, Some(signal)) => CommandExit::Signalled { signal },
        (None, None) => CommandExit::Exited { code: -1 },
    }
}

/// Runs `argv` to completion: stdin empty, stdout and stderr kept up to `limit` bytes each, killed
/// at `timeout`. Never fails: a spawn error or a timeout is part of the report.
pub async fn run_bounded(
    argv: &[String],
    run_as: &RunAs,
    timeout: Duration,
    limit: usize,
) -> CommandReport {
    let started = Instant::now();
    let mut report = CommandReport::not_started(argv);
    let Some((program, args)) = argv.split_first() else {
        return report;
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    run_as.apply(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            report.exit = CommandExit::SpawnFailed {
                error: format!("{program}: {e}"),
            };
            return report;
        }
    };
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        report.exit = CommandExit::SpawnFailed {
            error: "no output pipes".into(),
        };
        return report;
    };
    let (mut out, mut err) = (Bounded::new(limit), Bounded::new(limit));
    let (mut out_buf, mut err_buf) = ([0u8; 8192], [0u8; 8192]);
    let (mut out_open, mut err_open) = (true, true);
    let mut status = None;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut timed_out = false;
    while out_open || err_open || status.is_none() {
        tokio::select! {
            r = stdout.read(&mut out_buf), if out_open => match r {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => out.push(&out_buf[..n]),
            },
            r = stderr.read(&mut err_buf), if err_open => match r {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => err.push(&err_buf[..n]),
            },
            s = child.wait(), if status.is_none() => status = Some(s),
            _ = &mut deadline => { timed_out = true; break; }
        }
    }
    report.exit = match status {
        // Exited, but something it started kept the output open past the deadline.
        Some(Ok(s)) => exit_of(s),
        Some(Err(ref e)) => CommandExit::SpawnFailed {
            error: format!("waiting for {program}: {e}"),
        },
        None => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            CommandExit::TimedOut
        }
    };
    report.stdout = out.text();
    report.stderr = err.text();
    if timed_out && status.is_some() {
        report.stderr.push_str(
            "\n(nodewarden: something it started kept its output open; cut at the timeout)",
        );
    }
    report.truncated = out.cut || err.cut;
    report.duration_ms = millis(started.elapsed());
    report
}

/// Starts `argv` detached (own session, stdin null, output appended to `log_file` or discarded),
/// writes its pid to `pid_file`, and waits `grace` for it to fail early. A process that exits
/// within the grace period is a failed start, reported with the tail of its log.
pub async fn start_detached(
    argv: &[String],
    run_as: &RunAs,
    pid_file: &Path,
    log_file: Option<&Path>,
    grace: Duration,
) -> CommandReport {
    let started = Instant::now();
    let mut report = CommandReport::not_started(argv);
    let Some((program, args)) = argv.split_first() else {
        return report;
    };
    let fail = |mut report: CommandReport, error: String| {
        report.exit = CommandExit::SpawnFailed { error };
        report.duration_ms = millis(started.elapsed());
        report
    };
    let output = match log_file {
        Some(path) => match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => f,
            Err(e) => return fail(report, format!("opening log {}: {e}", path.display())),
        },
        None => match File::options().write(true).open("/dev/null") {
            Ok(f) => f,
            Err(e) => return fail(report, format!("opening /dev/null: {e}")),
        },
    };
    let output_err = match output.try_clone() {
        Ok(f) => f,
        Err(e) => return fail(report, format!("duplicating the log handle: {e}")),
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(output_err);
    run_as.apply(&mut cmd);
    // Its own session and process group: stop can signal everything it started, and neither a
    // terminal hanging up nor the SSH session or agent ending takes it along.
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(report, format!("{program}: {e}")),
    };
    let Some(pid) = child.id() else {
        return fail(report, "the process vanished at once".into());
    };
    if let Err(e) = write_pid_file(pid_file, pid) {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return fail(report, format!("writing {}: {e}", pid_file.display()));
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Err(_) => report.exit = CommandExit::Detached { pid },
        Ok(status) => {
            let _ = std::fs::remove_file(pid_file);
            report.exit = match status {
                Ok(s) => exit_of(s),
                Err(e) => CommandExit::SpawnFailed {
                    error: format!("waiting for {program}: {e}"),
                },
            };
            if let Some(path) = log_file {
                report.stderr = log_tail(path, 4096);
            }
        }
    }
    // Dropping the handle leaves the process running; tokio reaps it if it exits while this
    // agent lives, and init does after the agent has gone.
    drop(child);
    report.duration_ms = millis(started.elapsed());
    report
}

fn log_tail(path: &Path, bytes: u64) -> String {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut buf = Vec::new();
    let _ = f.take(bytes).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Writes the pid atomically (temporary file, then rename), so a reader never sees half a pid.
fn write_pid_file(path: &Path, pid: u32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp)?;
    writeln!(f, "{pid}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// An exclusive advisory lock on `<pid_file>.lock`, held while a start, stop or restart runs, so
/// the agent and an `ssh-dispatch` never act on one service at once. Released when dropped.
#[derive(Debug)]
pub struct ServiceLock {
    _file: File,
}

/// Takes the service's lock, waiting up to `limit` for another holder to finish. flock gives no
/// notification that can be awaited without tying up a thread, so this polls.
pub async fn lock_service(pid_file: &Path, limit: Duration) -> Result<ServiceLock, String> {
    let mut path = pid_file.as_os_str().to_owned();
    path.push(".lock");
    let path = PathBuf::from(path);
    // The pid file's folder may be on a tmpfs (/run) that a reboot emptied.
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let deadline = Instant::now() + limit;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(ServiceLock { _file: file });
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::WouldBlock {
            return Err(format!("locking {}: {err}", path.display()));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "another operation on this service still holds {} after {limit:?}",
                path.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pid in a pid file: `Ok(None)` when there is no file.
pub fn read_pid_file(path: &Path) -> Result<Option<u32>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|p| *p > 1)
            .map(Some)
            .ok_or_else(|| format!("{} does not hold a pid", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// What /proc says about a pid.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    pub argv: Vec<String>,
    /// Process group id.
    pub pgid: i32,
}

/// A live process (not a zombie) with its command line; `None` when it is gone.
pub fn process_info(pid: u32) -> Option<ProcessInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after.split_ascii_whitespace();
    let state = fields.next()?;
    if matches!(state, "Z" | "X" | "x") {
        return None;
    }
    let _ppid = fields.next()?;
    let pgid = fields.next()?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv = cmdline
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    Some(ProcessInfo { argv, pgid })
}

/// Whether a running command line is the declared one, so a stale pid file whose pid was reused
/// never gets another process signalled. An interpreter may precede the declared program (a
/// script run through its `#!` line), and the program may appear as its full path.
pub fn argv_matches(declared: &[String], running: &[String]) -> bool {
    let Some((program, args)) = declared.split_first() else {
        return false;
    };
    if running.len() < declared.len() || !running.ends_with(args) {
        return false;
    }
    let head = &running[..running.len() - args.len()];
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    head.last()
        .is_some_and(|last| last == program || base(last) == base(program))
}

/// The pid file's process, if it is alive and is the declared command. A stale pid file (no such
/// process, or another command under that pid) counts as not running.
pub fn running_pid(
    declared: &[String],
    pid_file: &Path,
) -> Result<Option<(u32, ProcessInfo)>, String> {
    let Some(pid) = read_pid_file(pid_file)? else {
        return Ok(None);
    };
    Ok(process_info(pid)
        .filter(|info| argv_matches(declared, &info.argv))
        .map(|info| (pid, info)))
}

/// Sends `signal` to the process's group when it leads one (as processes we start do), else to
/// the process alone.
pub fn signal(pid: u32, info: &ProcessInfo, signal: i32) -> std::io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    let target = if info.pgid == pid { -pid } else { pid };
    // SAFETY: kill has no memory effects; a wrong target is excluded by the checks above.
    if unsafe { libc::kill(target, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits until `pid` has exited or `limit` passes; true when it is gone. Uses a pidfd (readable
/// when the process exits); falls back to polling /proc on kernels without pidfd_open.
pub async fn wait_exit(pid: u32, limit: Duration) -> bool {
    if process_info(pid).is_none() {
        return true;
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd >= 0 {
        // SAFETY: fd is a fresh descriptor we own.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: `owned` is an open pidfd that the AsyncFd owns until it is dropped.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
        };
        if let Ok(async_fd) = registered {
            let _ = tokio::time::timeout(limit, async_fd.readable()).await;
            return process_info(pid).is_none();
        }
    }
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if process_info(pid).is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    process_info(pid).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn argv_matching_accepts_interpreters_and_full_paths_only() {
        let java = s(&["java", "-jar", "client.jar"]);
        assert!(argv_matches(&java, &s(&["java", "-jar", "client.jar"])));
        assert!(argv_matches(
            &java,
            &s(&["/usr/bin/java", "-jar", "client.jar"])
        ));
        assert!(!argv_matches(&java, &s(&["java", "-jar", "other.jar"])));
        assert!(!argv_matches(&java, &s(&["bash"])));
        assert!(!argv_matches(&java, &s(&["python", "-jar", "client.jar"])));
        let script = s(&["/opt/x/run.sh", "--serve"]);
        assert!(argv_matches(
            &script,
            &s(&["/bin/sh", "/opt/x/run.sh", "--serve"])
        ));
        assert!(!argv_matches(&[], &s(&["x"])));
    }

    #[tokio::test]
    async fn bounded_run_captures_exit_status_and_cuts_output() {
        let r = run_bounded(
            &s(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
            &RunAs::default(),
            Duration::from_secs(10),
            1024,
        )
        .await;
        assert_eq!(r.exit, CommandExit::Exited { code: 3 });
        assert_eq!(r.stdout, "out\n");
        assert_eq!(r.stderr, "err\n");
        assert!(!r.truncated);

        let r = run_bounded(
            &s(&["head", "-c", "100000", "/dev/zero"]),
            &RunAs::default(),
            Duration::from_secs(10),
            1000,
        )
        .await;
        assert_eq!(r.exit, CommandExit::Exited { code: 0 });
        assert_eq!(r.stdout.len(), 1000);
        assert!(r.truncated);
    }

    #[tokio::test]
    async fn bounded_run_times_out_and_reports_spawn_errors() {
        let r = run_bounded(
            &s(&["sleep", "30"]),
            &RunAs::default(),
            Duration::from_millis(200),
            1024,
        )
        .await;
        assert_eq!(r.exit, CommandExit::TimedOut);
        assert!(r.duration_ms < 10_000);

        let r = run_bounded(
            &s(&["/nonexistent/program"]),
            &RunAs::default(),
            Duration::from_secs(1),
            1024,
        )
        .await;
        assert!(
            matches!(r.exit, CommandExit::SpawnFailed { ref error } if error.contains("/nonexistent/program"))
        );
    }

    #[test]
    fn users_resolve() {
        assert_eq!(lookup_user("root"), Ok((0, 0)));
        assert!(lookup_user("no-such-user-nodewarden").is_err());
    }
}
