//! A hung FUSE mount for the fault tests (issue 14, cases 6 and 8): the command line that runs
//! a program (the agent) under `hung_fuse` (tests/src/bin/hung_fuse.rs), in a private mount and
//! PID namespace where `dir` is a FUSE filesystem whose named operations never answer until
//! [`release`]. Nothing leaks to the host: the mount lives and dies with the namespace.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::{bin_path, read_pid, wait_for};

/// `hung_fuse --mount DIR --hang OPS --pid-file FILE --`: prepend to the program's command line.
pub fn wrapper(dir: &Path, hang: &str, pid_file: &Path) -> Vec<OsString> {
    vec![
        bin_path("hung_fuse").into(),
        "--mount".into(),
        dir.into(),
        "--hang".into(),
        hang.into(),
        "--pid-file".into(),
        pid_file.into(),
        "--".into(),
    ]
}

/// The wrapped program's pid (in the test's PID namespace), once `hung_fuse` has written it.
pub fn program_pid(pid_file: &Path) -> u32 {
    wait_for("hung_fuse's pid file", Duration::from_secs(20), || {
        read_pid(pid_file)
    })
}

/// SIGUSR1 to `hung_fuse` (pid `server`): the held requests are answered, nothing hangs any more.
pub fn release(server: u32) {
    // SAFETY: plain kill(2) of the test's own child.
    unsafe { libc::kill(server as i32, libc::SIGUSR1) };
}

/// How many threads a process has (its /proc/<pid>/task entries).
pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// The names of a process's threads (their /proc/<pid>/task/*/comm), sorted.
pub fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

/// The ids of a process's threads named `name`, sorted.
pub fn thread_ids(pid: u32, name: &str) -> Vec<u32> {
    let mut ids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim() == name).then_some(())?;
            e.file_name().to_str()?.parse().ok()
        })
        .collect();
    ids.sort();
    ids
}
