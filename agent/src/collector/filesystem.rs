//! `filesystem`: size, free and available bytes, inodes, read-only state and stat errors of every
//! mounted filesystem, as node_exporter 1.12 reports them.
//!
//! Mounts come from /proc/1/mountinfo (or /proc/self/mountinfo when hidepid hides pid 1), as
//! node_exporter 1.12 reads them: filtered by mount point and filesystem type, read-only when the
//! mount's or the superblock's options say `ro` or the superblock says `emergency_ro` (ext4 after
//! an error), every family labelled with `device_error` (empty, the stat's error, or "mountpoint
//! timeout") and `node_filesystem_mount_info` with the device numbers.
//!
//! `statfs` runs on a worker thread so that a hung mount (a dead NFS server) never blocks a
//! scrape: after `--collector.filesystem.mount-timeout` the mount is
//! reported with `node_filesystem_device_error` 1, remembered as stuck and skipped until its
//! stat finally returns, when the worker clears it.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clap::Arg;

use super::filter::{DeviceFilter, device_filter};
use super::gosyntax::parse_go_duration;
use super::hotplug::{is_procfs, mount_table_changed};
use super::source::{StatFs, statfs};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Paths,
    Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "filesystem",
    default_enabled: true,
    flags,
    build,
};

const MOUNT_POINTS_EXCLUDE: &str = "collector.filesystem.mount-points-exclude";
const OLD_MOUNT_POINTS_EXCLUDE: &str = "collector.filesystem.ignored-mount-points";
const FS_TYPES_EXCLUDE: &str = "collector.filesystem.fs-types-exclude";
const OLD_FS_TYPES_EXCLUDE: &str = "collector.filesystem.ignored-fs-types";
const MOUNT_POINTS_INCLUDE: &str = "collector.filesystem.mount-points-include";
const FS_TYPES_INCLUDE: &str = "collector.filesystem.fs-types-include";
const MOUNT_TIMEOUT: &str = "collector.filesystem.mount-timeout";
const STAT_WORKERS: &str = "collector.filesystem.stat-workers";

pub const DEFAULT_MOUNT_POINTS_EXCLUDED: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
pub const DEFAULT_FS_TYPES_EXCLUDED: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$";

fn flags(command: clap::Command) -> clap::Command {
    command
        .arg(
            Arg::new(MOUNT_POINTS_EXCLUDE)
                .long(MOUNT_POINTS_EXCLUDE)
                .default_value(DEFAULT_MOUNT_POINTS_EXCLUDED)
                .help("Regexp of mount points to exclude for filesystem collector. (mutually exclusive to mount-points-include)"),
        )
        .arg(
            Arg::new(OLD_MOUNT_POINTS_EXCLUDE)
                .long(OLD_MOUNT_POINTS_EXCLUDE)
                .hide(true)
                .help("Regexp of mount points to ignore for filesystem collector."),
        )
        .arg(
            Arg::new(MOUNT_POINTS_INCLUDE)
                .long(MOUNT_POINTS_INCLUDE)
                .help("Regexp of mount points to include for filesystem collector. (mutually exclusive to mount-points-exclude)"),
        )
        .arg(
            Arg::new(FS_TYPES_EXCLUDE)
                .long(FS_TYPES_EXCLUDE)
                .default_value(DEFAULT_FS_TYPES_EXCLUDED)
                .help("Regexp of filesystem types to exclude for filesystem collector. (mutually exclusive to fs-types-include)"),
        )
        .arg(
            Arg::new(OLD_FS_TYPES_EXCLUDE)
                .long(OLD_FS_TYPES_EXCLUDE)
                .hide(true)
                .help("Regexp of filesystem types to ignore for filesystem collector."),
        )
        .arg(
            Arg::new(FS_TYPES_INCLUDE)
                .long(FS_TYPES_INCLUDE)
                .help("Regexp of filesystem types to include for filesystem collector. (mutually exclusive to fs-types-exclude)"),
        )
        .arg(
            Arg::new(MOUNT_TIMEOUT)
                .long(MOUNT_TIMEOUT)
                .default_value("5s")
                .hide(true)
                .help("how long to wait for a mount to respond before marking it as stale"),
        )
        .arg(
            Arg::new(STAT_WORKERS)
                .long(STAT_WORKERS)
                .default_value("4")
                .value_parser(clap::value_parser!(i64))
                .hide(true)
                // Accepted for node_exporter command lines: here local kernel filesystems are
                // stated inline and the rest on one worker with a timeout (see above), so a
                // hung mount is skipped either way.
                .help("how many stat calls to process simultaneously (accepted; the agent uses one stat worker)"),
        )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    if let Some(old) = [OLD_MOUNT_POINTS_EXCLUDE, OLD_FS_TYPES_EXCLUDE]
        .into_iter()
        .find(|old| ctx.flag(old).is_some_and(|v| !v.is_empty()))
    {
        tracing::warn!("--{old} is DEPRECATED and will be removed in 2.0.0");
    }
    let mount_points = device_filter(
        ctx,
        MOUNT_POINTS_EXCLUDE,
        Some(OLD_MOUNT_POINTS_EXCLUDE),
        MOUNT_POINTS_INCLUDE,
        None,
    )?;
    let fs_types = device_filter(
        ctx,
        FS_TYPES_EXCLUDE,
        Some(OLD_FS_TYPES_EXCLUDE),
        FS_TYPES_INCLUDE,
        None,
    )?;
    let timeout_text = ctx.flag(MOUNT_TIMEOUT).unwrap_or("5s");
    let mount_timeout = parse_go_duration(timeout_text).ok_or_else(|| BuildError::Flag {
        flag: MOUNT_TIMEOUT.to_string(),
        reason: format!("invalid duration {timeout_text:?}"),
    })?;
    Ok(Box::new(FilesystemCollector::new(
        Filter {
            mount_points,
            fs_types,
        },
        mount_timeout,
        Arc::new(statfs),
    )))
}

/// How the collector stats a mount point; tests inject one that hangs.
pub type StatFn = Arc<dyn Fn(&Path) -> io::Result<StatFs> + Send + Sync>;

/// node_exporter's mount point and filesystem type filters (exclude or include, unanchored).
pub struct Filter {
    pub mount_points: DeviceFilter,
    pub fs_types: DeviceFilter,
}

/// One mount to report, with node_exporter's labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
    /// The device's numbers, from mountinfo (`node_filesystem_mount_info`).
    pub major: String,
    pub minor: String,
    /// `ro` among the mount's or the superblock's options, or the superblock's `emergency_ro`
    /// (ext4 after an error), as node_exporter 1.12 decides.
    pub read_only: bool,
}

/// Decodes the two escapes node_exporter decodes in mount points (`\040` space, `\011` tab).
fn unescape_mount_point(raw: &str) -> String {
    if raw.contains('\\') {
        raw.replace("\\040", " ").replace("\\011", "\t")
    } else {
        raw.to_string()
    }
}

/// node_exporter's `rootfsStripPrefix`: mount points as seen from the host's root.
fn strip_rootfs(mount_point: String, rootfs: &str) -> String {
    if rootfs == "/" || rootfs.is_empty() {
        return mount_point;
    }
    match mount_point.strip_prefix(rootfs) {
        Some("") => "/".to_string(),
        Some(rest) => rest.to_string(),
        None => mount_point,
    }
}

/// Parses /proc/<pid>/mountinfo text into the mounts to report: filtered, first occurrence of
/// each (device, mount point, type) kept. A line is `id parent major:minor root mount-point
/// mount-options [optional fields…] - fstype source super-options`; lines not of that form are
/// passed to `malformed`.
pub fn parse_mountinfo(
    text: &str,
    rootfs: &str,
    filter: &Filter,
    mut malformed: impl FnMut(&str),
) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let Some(parsed) = parse_mountinfo_line(line) else {
            malformed(line);
            continue;
        };
        let (major, minor, mount_point, options, fs_type, device, super_options) = parsed;
        let mount_point = strip_rootfs(unescape_mount_point(mount_point), rootfs);
        if filter.mount_points.ignored(&mount_point) {
            continue;
        }
        if filter.fs_types.ignored(fs_type) {
            continue;
        }
        if mounts
            .iter()
            .any(|m| m.mount_point == mount_point && m.device == device && m.fs_type == fs_type)
        {
            continue;
        }
        let has = |options: &str, name: &str| options.split(',').any(|o| o == name);
        mounts.push(Mount {
            device: device.to_string(),
            mount_point,
            fs_type: fs_type.to_string(),
            major: major.to_string(),
            minor: minor.to_string(),
            read_only: has(options, "ro")
                || has(super_options, "ro")
                || has(super_options, "emergency_ro"),
        });
    }
    mounts
}

/// `(major, minor, mount point, mount options, fstype, source, super options)` of one line.
#[allow(clippy::type_complexity)]
fn parse_mountinfo_line(line: &str) -> Option<(u32, u32, &str, &str, &str, &str, &str)> {
    let mut fields = line.split_ascii_whitespace();
    let (_id, _parent, numbers, _root, mount_point, options) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let (major, minor) = numbers.split_once(':')?;
    let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
    // Optional fields (`shared:1`, `master:2`, …) up to the separator.
    fields.by_ref().find(|f| *f == "-")?;
    let fs_type = fields.next()?;
    let source = fields.next()?;
    let super_options = fields.next().unwrap_or("");
    Some((
        major,
        minor,
        mount_point,
        options,
        fs_type,
        source,
        super_options,
    ))
}

struct StatRequest {
    seq: u64,
    mount_point: String,
    path: PathBuf,
}

struct StatReply {
    seq: u64,
    result: io::Result<StatFs>,
}

/// A thread that stats paths one after another. When a stat outlives the timeout the collector
/// abandons the worker (and starts another); the abandoned one finishes its stat, clears the
/// mount's stuck mark and exits.
struct StatWorker {
    requests: mpsc::Sender<StatRequest>,
    replies: mpsc::Receiver<StatReply>,
    abandoned: Arc<AtomicBool>,
}

type StuckSet = Arc<Mutex<HashSet<String>>>;

fn lock(stuck: &StuckSet) -> MutexGuard<'_, HashSet<String>> {
    stuck.lock().unwrap_or_else(|p| p.into_inner())
}

impl StatWorker {
    fn spawn(stat: StatFn, stuck: StuckSet) -> io::Result<Self> {
        let (requests, request_rx) = mpsc::channel::<StatRequest>();
        let (reply_tx, replies) = mpsc::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let abandoned_in_worker = abandoned.clone();
        std::thread::Builder::new()
            .name("filesystem-stat".into())
            .spawn(move || {
                for request in request_rx {
                    if abandoned_in_worker.load(Ordering::Acquire) {
                        break;
                    }
                    let result = stat(&request.path);
                    // Under the lock, so the collector either sees this reply or sees the mount
                    // unmarked afterwards: never a mount left stuck after its stat returned.
                    let mut stuck = lock(&stuck);
                    if stuck.remove(&request.mount_point) {
                        tracing::debug!(
                            mountpoint = request.mount_point,
                            "mount point has recovered, monitoring will resume"
                        );
                    }
                    let _ = reply_tx.send(StatReply {
                        seq: request.seq,
                        result,
                    });
                }
            })?;
        Ok(StatWorker {
            requests,
            replies,
            abandoned,
        })
    }

    fn abandon(self) {
        self.abandoned.store(true, Ordering::Release);
    }
}

/// What one mount's stat came to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Stat(StatFs),
    /// The stat failed, timed out, or the mount is still stuck from an earlier timeout.
    DeviceError(DeviceError),
}

/// Why a mount has no figures: node_exporter 1.12's `device_error` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceError {
    /// Timed out now or earlier and not back yet: "mountpoint timeout".
    Timeout,
    /// statfs failed with this errno: Go's text for it.
    Errno(i32),
    /// Any other failure.
    Other,
}

impl DeviceError {
    /// The label text, as Go's `err.Error()` words it (strerror, first letter lower case).
    fn label(self) -> String {
        match self {
            DeviceError::Timeout => "mountpoint timeout".into(),
            DeviceError::Errno(errno) => {
                let text = io::Error::from_raw_os_error(errno).to_string();
                let text = text
                    .rsplit_once(" (os error")
                    .map_or(text.as_str(), |(t, _)| t);
                let mut chars = text.chars();
                match chars.next() {
                    Some(first) => first.to_lowercase().chain(chars).collect(),
                    None => String::new(),
                }
            }
            DeviceError::Other => String::new(),
        }
    }
}

/// Stats mount points with a timeout, remembering stuck ones across scrapes.
pub struct Statter {
    stat: StatFn,
    timeout: Duration,
    worker: Option<StatWorker>,
    stuck: StuckSet,
    seq: u64,
}

impl Statter {
    pub fn new(stat: StatFn, timeout: Duration) -> Self {
        Statter {
            stat,
            timeout,
            worker: None,
            stuck: Arc::default(),
            seq: 0,
        }
    }

    pub fn is_stuck(&self, mount_point: &str) -> bool {
        lock(&self.stuck).contains(mount_point)
    }

    /// Stats `path` (mount point `mount_point`) unless that mount is stuck; waits at most the
    /// timeout.
    pub fn stat(&mut self, mount_point: &str, path: &Path) -> Outcome {
        let mut outcomes = Vec::new();
        self.stat_all(&[(mount_point, path)], &mut outcomes);
        outcomes
            .pop()
            .unwrap_or(Outcome::DeviceError(DeviceError::Other))
    }

    /// Stats every `(mount point, path)` into `outcomes` (cleared first), skipping stuck mounts.
    /// All requests go to the worker at once (one hand-off per scrape, not per mount); each
    /// reply may take up to the timeout after the previous one, as node_exporter's per-mount
    /// timeout. After a timeout the rest go to a fresh worker.
    pub fn stat_all(&mut self, mounts: &[(&str, &Path)], outcomes: &mut Vec<Outcome>) {
        outcomes.clear();
        outcomes.resize(mounts.len(), Outcome::DeviceError(DeviceError::Timeout));
        let mut pending: Vec<usize> = (0..mounts.len())
            .filter(|&i| {
                let stuck = self.is_stuck(mounts[i].0);
                if stuck {
                    tracing::debug!(
                        mountpoint = mounts[i].0,
                        "mount point is in an unresponsive state"
                    );
                }
                !stuck
            })
            .collect();
        while !pending.is_empty() {
            let worker = match self.worker.take() {
                Some(worker) => worker,
                None => match StatWorker::spawn(self.stat.clone(), self.stuck.clone()) {
                    Ok(worker) => worker,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start a filesystem stat thread");
                        return;
                    }
                },
            };
            let first_seq = self.seq + 1;
            for &i in &pending {
                self.seq += 1;
                let (mount_point, path) = mounts[i];
                let request = StatRequest {
                    seq: self.seq,
                    mount_point: mount_point.to_string(),
                    path: path.to_path_buf(),
                };
                if worker.requests.send(request).is_err() {
                    return;
                }
            }
            let mut timed_out_at = None;
            'replies: for (n, &i) in pending.iter().enumerate() {
                let seq = first_seq + n as u64;
                let deadline = Instant::now() + self.timeout;
                loop {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match worker.replies.recv_timeout(remaining) {
                        Ok(reply) if reply.seq == seq => {
                            outcomes[i] = outcome(reply.result, mounts[i].1);
                            continue 'replies;
                        }
                        Ok(_) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let mut stuck = lock(&self.stuck);
                            // The reply may have landed just after the timeout.
                            if let Ok(reply) = worker.replies.try_recv()
                                && reply.seq == seq
                            {
                                drop(stuck);
                                outcomes[i] = outcome(reply.result, mounts[i].1);
                                continue 'replies;
                            }
                            tracing::debug!(
                                mountpoint = mounts[i].0,
                                "mount point timed out, it is being labeled as stuck and will not be monitored"
                            );
                            stuck.insert(mounts[i].0.to_string());
                            timed_out_at = Some(n);
                            break 'replies;
                        }
                    }
                }
            }
            match timed_out_at {
                None => {
                    self.worker = Some(worker);
                    return;
                }
                Some(n) => {
                    // The worker is stuck in the hung stat: it drops the queued requests and
                    // exits once that returns. The rest go to a new worker.
                    worker.abandon();
                    pending.drain(..=n);
                }
            }
        }
    }
}

fn outcome(result: io::Result<StatFs>, path: &Path) -> Outcome {
    match result {
        Ok(s) => Outcome::Stat(s),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "error on statfs() system call");
            Outcome::DeviceError(match e.raw_os_error() {
                Some(errno) => DeviceError::Errno(errno),
                None => DeviceError::Other,
            })
        }
    }
}

struct FilesystemCollector {
    filter: Filter,
    statter: Statter,
    text: String,
    /// The mounts file the cached `mounts` were parsed from: mounts rarely change.
    parsed_text: String,
    mounts: Vec<Mount>,
    outcomes: Vec<Outcome>,
    stat_paths: Vec<PathBuf>,
    /// The outcomes of the mounts stated on the worker, in their order.
    worker_outcomes: Vec<Outcome>,
    source: Option<MountsFile>,
}

/// Filesystem types whose statfs is answered from the in-memory counters of a local kernel
/// filesystem: stated inline, without the hand-off to the stat worker and back (a tenth of the
/// scrape's CPU, docs/perf.md). Every other type (NFS, CIFS, Ceph, FUSE, overlay on top of any
/// of them, ...) can hang on a server or a daemon and is stated on the worker with the timeout,
/// as node_exporter stats every mount.
const INLINE_STAT_FS_TYPES: [&str; 7] =
    ["ext2", "ext3", "ext4", "xfs", "tmpfs", "ramfs", "devtmpfs"];

fn stats_inline(fs_type: &str) -> bool {
    INLINE_STAT_FS_TYPES.contains(&fs_type)
}

impl FilesystemCollector {
    fn new(filter: Filter, timeout: Duration, stat: StatFn) -> Self {
        FilesystemCollector {
            filter,
            statter: Statter::new(stat, timeout),
            text: String::new(),
            parsed_text: String::new(),
            mounts: Vec::new(),
            outcomes: Vec::new(),
            stat_paths: Vec::new(),
            worker_outcomes: Vec::new(),
            source: None,
        }
    }

    /// Opens /proc/1/mountinfo, or /proc/self/mountinfo when hidepid hides pid 1.
    fn open_mounts(ctx: &Context<'_>) -> Result<MountsFile, CollectorError> {
        let mut path = ctx.paths.proc("1/mountinfo");
        let file = match std::fs::File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                path = ctx.paths.proc("self/mountinfo");
                std::fs::File::open(&path)
            }
            other => other,
        }
        .map_err(|e| CollectorError::io(&path, e))?;
        let pollable = is_procfs(&file);
        Ok(MountsFile {
            file,
            path,
            pollable,
        })
    }

    /// Brings `mounts` up to date. The kernel flags a change of the mount table on an open
    /// procfs mounts file (POLLPRI), so an unchanged table is neither re-read nor re-parsed;
    /// other files (fixtures) are re-read every time.
    fn read_mounts(&mut self, ctx: &Context<'_>) -> Result<(), CollectorError> {
        use std::io::{Read, Seek};
        if let Some(source) = &self.source
            && source.pollable
            && !mount_table_changed(&source.file)
        {
            return Ok(());
        }
        let mut source = match self.source.take() {
            Some(source) => source,
            None => Self::open_mounts(ctx)?,
        };
        self.text.clear();
        let read = source
            .file
            .rewind()
            .and_then(|()| source.file.read_to_string(&mut self.text));
        if let Err(e) = read {
            // Reopen next time (pid 1 may be gone in a container).
            return Err(CollectorError::io(&source.path, e));
        }
        if self.text != self.parsed_text || self.parsed_text.is_empty() {
            let rootfs = ctx.paths.rootfs.to_string_lossy();
            let path = &source.path;
            self.mounts = parse_mountinfo(&self.text, &rootfs, &self.filter, |line| {
                ctx.malformed(path, line)
            });
            std::mem::swap(&mut self.text, &mut self.parsed_text);
        }
        self.source = Some(source);
        Ok(())
    }
}

/// The mounts file kept open across scrapes.
struct MountsFile {
    file: std::fs::File,
    path: PathBuf,
    /// A procfs mounts file, which reports mount table changes through poll(2).
    pollable: bool,
}

fn root_path(paths: &Paths, mount_point: &str, out: &mut PathBuf) {
    out.clear();
    out.push(&paths.rootfs);
    out.push(mount_point.trim_start_matches('/'));
}

impl Collector for FilesystemCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.read_mounts(ctx)?;
        self.stat_paths.resize_with(self.mounts.len(), PathBuf::new);
        for (mount, path) in self.mounts.iter().zip(self.stat_paths.iter_mut()) {
            root_path(ctx.paths, &mount.mount_point, path);
        }
        let to_worker: Vec<(&str, &Path)> = self
            .mounts
            .iter()
            .zip(&self.stat_paths)
            .filter(|(m, _)| !stats_inline(&m.fs_type))
            .map(|(m, p)| (m.mount_point.as_str(), p.as_path()))
            .collect();
        self.statter.stat_all(&to_worker, &mut self.worker_outcomes);
        let mut from_worker = self.worker_outcomes.iter();
        self.outcomes.clear();
        for (mount, path) in self.mounts.iter().zip(&self.stat_paths) {
            let outcome = if stats_inline(&mount.fs_type) {
                outcome((self.statter.stat)(path), path)
            } else {
                from_worker
                    .next()
                    .copied()
                    .unwrap_or(Outcome::DeviceError(DeviceError::Other))
            };
            self.outcomes.push(outcome);
        }
        write_families(out, &self.mounts, &self.outcomes)?;
        Ok(())
    }
}

/// node_exporter 1.12's labels: `device_error` is empty, or why the mount has no figures.
fn labels<'a>(m: &'a Mount, error: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("device", m.device.as_str()),
        ("mountpoint", m.mount_point.as_str()),
        ("fstype", m.fs_type.as_str()),
        ("device_error", error),
    ]
}

/// The `device_error` label of an outcome (no allocation without an error).
fn error_label(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Stat(_) => String::new(),
        Outcome::DeviceError(e) => e.label(),
    }
}

/// Writes node_exporter's filesystem families for `mounts` and their stat outcomes.
fn write_families(
    out: &mut MetricWriter<'_, '_>,
    mounts: &[Mount],
    outcomes: &[Outcome],
) -> Result<(), std::fmt::Error> {
    let rows = || mounts.iter().zip(outcomes);
    let mut family = out.family(
        "node_filesystem_device_error",
        "Whether an error occurred while getting statistics for the given device.",
        Kind::Gauge,
    )?;
    for (mount, outcome) in rows() {
        let error = matches!(outcome, Outcome::DeviceError(_));
        let text = error_label(outcome);
        family.sample(&labels(mount, &text), if error { 1.0 } else { 0.0 })?;
    }
    // Read-only status is known without a stat, but node_exporter 1.12.1 reports a stuck
    // mount (skipped, "mountpoint timeout") with read-only 0 whatever its options: so here.
    let mut family = out.family(
        "node_filesystem_readonly",
        "Filesystem read-only status.",
        Kind::Gauge,
    )?;
    for (mount, outcome) in rows() {
        let text = error_label(outcome);
        let stuck = matches!(outcome, Outcome::DeviceError(DeviceError::Timeout));
        family.sample(
            &labels(mount, &text),
            if mount.read_only && !stuck { 1.0 } else { 0.0 },
        )?;
    }
    type Value = fn(&StatFs) -> f64;
    let families: [(&str, &str, Value); 5] = [
        (
            "node_filesystem_size_bytes",
            "Filesystem size in bytes.",
            |s| s.blocks as f64 * s.block_size as f64,
        ),
        (
            "node_filesystem_free_bytes",
            "Filesystem free space in bytes.",
            |s| s.blocks_free as f64 * s.block_size as f64,
        ),
        (
            "node_filesystem_avail_bytes",
            "Filesystem space available to non-root users in bytes.",
            |s| s.blocks_avail as f64 * s.block_size as f64,
        ),
        (
            "node_filesystem_files",
            "Filesystem total file nodes.",
            |s| s.files as f64,
        ),
        (
            "node_filesystem_files_free",
            "Filesystem total free file nodes.",
            |s| s.files_free as f64,
        ),
    ];
    if !outcomes.iter().any(|o| matches!(o, Outcome::Stat(_))) {
        return Ok(());
    }
    for (name, help, value) in families {
        let mut family = out.family(name, help, Kind::Gauge)?;
        for (mount, outcome) in rows() {
            if let Outcome::Stat(s) = outcome {
                family.sample(&labels(mount, ""), value(s))?;
            }
        }
    }
    let mut family = out.family(
        "node_filesystem_mount_info",
        "Filesystem mount information.",
        Kind::Gauge,
    )?;
    // Its labels leave out the type: two stated mounts of one device on one mount point
    // (stacked, of different types) give it once, the first, as node_exporter's registry does.
    let stated = |(_, outcome): &(&Mount, &Outcome)| matches!(outcome, Outcome::Stat(_));
    for (i, (mount, outcome)) in rows().enumerate() {
        let same = |m: &Mount| {
            m.device == mount.device
                && m.major == mount.major
                && m.minor == mount.minor
                && m.mount_point == mount.mount_point
        };
        if rows().take(i).filter(stated).any(|(m, _)| same(m)) {
            continue;
        }
        if let Outcome::Stat(_) = outcome {
            family.sample(
                &[
                    ("device", mount.device.as_str()),
                    ("major", mount.major.as_str()),
                    ("minor", mount.minor.as_str()),
                    ("mountpoint", mount.mount_point.as_str()),
                ],
                1.0,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::testing::{assert_golden, fixture, render};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn default_filter() -> Filter {
        Filter {
            mount_points: DeviceFilter {
                exclude: Some(regex::Regex::new(DEFAULT_MOUNT_POINTS_EXCLUDED).unwrap()),
                include: None,
            },
            fs_types: DeviceFilter {
                exclude: Some(regex::Regex::new(DEFAULT_FS_TYPES_EXCLUDED).unwrap()),
                include: None,
            },
        }
    }

    /// A stat that derives its figures from the path, so goldens do not depend on this host.
    fn fake_stat(path: &Path) -> io::Result<StatFs> {
        let text = path.to_string_lossy();
        if text.contains("broken") {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        // Only the part inside the fixture tree counts, so the checkout's location does not.
        let inside = text
            .rsplit_once("/fixtures/")
            .map_or(&*text, |(_, rest)| rest);
        let n = inside.len() as u64;
        Ok(StatFs {
            blocks: 1000 * n,
            blocks_free: 500 * n,
            blocks_avail: 400 * n,
            block_size: 4096,
            fragment_size: 4096,
            files: 100 * n,
            files_free: 50 * n,
        })
    }

    #[test]
    fn golden() {
        let root = fixture("basic");
        let collector = FilesystemCollector::new(
            default_filter(),
            Duration::from_secs(5),
            Arc::new(fake_stat),
        );
        let text = render("filesystem", Box::new(collector), Paths::fixture(&root));
        assert_golden(&root.join("golden/filesystem.prom"), &text);
    }

    /// A storage node: ext4 with `emergency_ro` in its superblock options after an error
    /// (read-only although mounted rw), a read-only mount, XFS on md, NFS.
    #[test]
    fn emergency_read_only_ext4() {
        let root = fixture("storage");
        let collector = FilesystemCollector::new(
            default_filter(),
            Duration::from_secs(5),
            Arc::new(fake_stat),
        );
        let text = render("filesystem", Box::new(collector), Paths::fixture(&root));
        assert!(
            text.contains(r#"node_filesystem_readonly{device="/dev/md126",mountpoint="/srv/journal",fstype="ext4",device_error=""} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"node_filesystem_mount_info{device="/dev/md127",major="9",minor="127",mountpoint="/srv/data"} 1"#),
            "{text}"
        );
        assert_golden(&root.join("golden/filesystem.prom"), &text);
    }

    #[test]
    fn escaped_mount_points_and_malformed_lines() {
        let root = fixture("odd");
        let collector = FilesystemCollector::new(
            default_filter(),
            Duration::from_secs(5),
            Arc::new(fake_stat),
        );
        let text = render("filesystem", Box::new(collector), Paths::fixture(&root));
        assert!(text.contains(r#"mountpoint="/mnt/my disk""#), "{text}");
        assert!(text.contains("mountpoint=\"/mnt/tab\there\""), "{text}");
        assert_golden(&root.join("golden/filesystem.prom"), &text);
    }

    #[test]
    fn filtering_and_dedup() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw - proc proc rw
24 22 0:20 / /sys rw - sysfs sysfs rw
25 22 0:24 / /run rw master:2 shared:3 - tmpfs tmpfs rw
26 22 0:40 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw
27 22 8:1 / / rw,relatime - ext4 /dev/sda1 rw
28 22 8:17 / /data ro,noatime - xfs /dev/sdb1 ro
29 22 8:33 / /srv/scratch rw,relatime - ext4 /dev/sdc1 rw,emergency_ro,errors=remount-ro
30 22 8:49 / /srv/no-separator rw ext4 /dev/sdd1 rw
short line
";
        let mut bad = Vec::new();
        let mounts = parse_mountinfo(text, "/", &default_filter(), |l| bad.push(l.to_string()));
        let names: Vec<_> = mounts.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(names, ["/", "/run", "/data", "/srv/scratch"]);
        assert!(mounts[2].read_only && !mounts[0].read_only);
        assert!(
            mounts[3].read_only,
            "ext4 emergency_ro in the superblock options"
        );
        assert_eq!(
            (mounts[2].major.as_str(), mounts[2].minor.as_str()),
            ("8", "17")
        );
        assert_eq!(bad.len(), 2, "{bad:?}");
    }

    #[test]
    fn include_flags_replace_the_default_excludes() {
        let text = "\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 8:17 / /data rw - xfs /dev/sdb1 rw
3 1 8:33 / /data2 rw - ext4 /dev/sdc1 rw
4 1 0:24 / /run rw - tmpfs tmpfs rw
";
        let filter = |args: &[&str]| -> Result<Vec<String>, BuildError> {
            let matches = crate::cli::command()
                .try_get_matches_from(std::iter::once("agent").chain(args.iter().copied()))
                .unwrap();
            let paths = Paths::default();
            let ctx = BuildContext {
                matches: &matches,
                paths: &paths,
            };
            let filter = Filter {
                mount_points: device_filter(
                    &ctx,
                    MOUNT_POINTS_EXCLUDE,
                    Some(OLD_MOUNT_POINTS_EXCLUDE),
                    MOUNT_POINTS_INCLUDE,
                    None,
                )?,
                fs_types: device_filter(&ctx, FS_TYPES_EXCLUDE, None, FS_TYPES_INCLUDE, None)?,
            };
            Ok(parse_mountinfo(text, "/", &filter, |_| {})
                .into_iter()
                .map(|m| m.mount_point)
                .collect())
        };
        assert_eq!(filter(&[]).unwrap(), ["/", "/data", "/data2", "/run"]);
        assert_eq!(
            filter(&["--collector.filesystem.mount-points-include=^/data"]).unwrap(),
            ["/data", "/data2"]
        );
        assert_eq!(
            filter(&["--collector.filesystem.fs-types-include=^ext4$"]).unwrap(),
            ["/", "/data2"]
        );
        assert!(
            filter(&[
                "--collector.filesystem.fs-types-include=^ext4$",
                "--collector.filesystem.fs-types-exclude=^tmpfs$",
            ])
            .is_err()
        );
        assert!(
            filter(&[
                "--collector.filesystem.ignored-mount-points=^/run",
                "--collector.filesystem.mount-points-exclude=^/data",
            ])
            .is_err()
        );
    }

    #[test]
    fn rootfs_prefix_is_stripped() {
        let text =
            "1 0 8:1 / /host rw - ext4 /dev/sda1 rw\n2 1 8:17 / /host/data rw - xfs /dev/sdb1 rw\n";
        let mounts = parse_mountinfo(text, "/host", &default_filter(), |_| {});
        let names: Vec<_> = mounts.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(names, ["/", "/data"]);
    }

    #[test]
    fn real_statfs_of_root_works() {
        let s = statfs(Path::new("/")).expect("statfs /");
        assert!(s.blocks > 0 && s.block_size > 0);
        assert!(statfs(Path::new("/definitely/not/here")).is_err());
    }

    /// A stat that hangs on `/hung` until the test releases it, counting its calls.
    struct Hang {
        release: Mutex<Option<mpsc::Receiver<()>>>,
        calls: AtomicUsize,
    }

    #[test]
    fn hung_mount_does_not_block_and_is_skipped_until_it_returns() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let hang = Arc::new(Hang {
            release: Mutex::new(Some(release_rx)),
            calls: AtomicUsize::new(0),
        });
        let hang_in_stat = hang.clone();
        let stat: StatFn = Arc::new(move |path: &Path| {
            if path == Path::new("/hung") {
                hang_in_stat.calls.fetch_add(1, Ordering::SeqCst);
                let rx = hang_in_stat.release.lock().unwrap().take();
                if let Some(rx) = rx {
                    let _ = rx.recv();
                }
            }
            fake_stat(path)
        });
        let timeout = Duration::from_millis(200);
        let mut statter = Statter::new(stat, timeout);

        let started = Instant::now();
        assert_eq!(
            statter.stat("/hung", Path::new("/hung")),
            Outcome::DeviceError(DeviceError::Timeout)
        );
        assert!(started.elapsed() < timeout + Duration::from_secs(2));
        assert!(statter.is_stuck("/hung"));
        // Other mounts still answer, on a fresh worker.
        assert!(matches!(
            statter.stat("/ok", Path::new("/ok")),
            Outcome::Stat(_)
        ));
        // Later scrapes skip the stuck mount without calling stat again.
        let started = Instant::now();
        assert_eq!(
            statter.stat("/hung", Path::new("/hung")),
            Outcome::DeviceError(DeviceError::Timeout)
        );
        assert!(started.elapsed() < timeout);
        assert_eq!(hang.calls.load(Ordering::SeqCst), 1);

        // The hung stat returns: the mount is unmarked and monitored again.
        release_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while statter.is_stuck("/hung") {
            assert!(Instant::now() < deadline, "stuck mark never cleared");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(
            statter.stat("/hung", Path::new("/hung")),
            Outcome::Stat(_)
        ));
        assert_eq!(hang.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn hung_mount_in_a_scrape_reports_device_error_within_the_timeout() {
        let (_release_tx, release_rx) = mpsc::channel::<()>();
        let release = Mutex::new(Some(release_rx));
        let stat: StatFn = Arc::new(move |path: &Path| {
            if path.ends_with("mnt/nfs") {
                let rx = release.lock().unwrap().take();
                if let Some(rx) = rx {
                    let _ = rx.recv();
                }
            }
            fake_stat(path)
        });
        let root = fixture("hung");
        let collector =
            FilesystemCollector::new(default_filter(), Duration::from_millis(200), stat);
        let started = Instant::now();
        let text = render("filesystem", Box::new(collector), Paths::fixture(&root));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(
            text.contains(r#"node_filesystem_device_error{device="server:/export",mountpoint="/mnt/nfs",fstype="nfs4",device_error="mountpoint timeout"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"node_filesystem_device_error{device="/dev/sda1",mountpoint="/",fstype="ext4",device_error=""} 0"#
            ),
            "{text}"
        );
        assert!(!text.contains(r#"node_filesystem_size_bytes{device="server:/export""#));
        // As node_exporter 1.12.1 reports a stuck mount: read-only 0, whatever its options.
        assert!(
            text.contains(r#"node_filesystem_readonly{device="server:/export",mountpoint="/mnt/nfs",fstype="nfs4",device_error="mountpoint timeout"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn mounts_after_a_hung_one_are_still_stated_once() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release = Mutex::new(Some(release_rx));
        let after_calls = Arc::new(AtomicUsize::new(0));
        let after_calls_in_stat = after_calls.clone();
        let stat: StatFn = Arc::new(move |path: &Path| {
            if path == Path::new("/hung") {
                let rx = release.lock().unwrap().take();
                if let Some(rx) = rx {
                    let _ = rx.recv();
                }
            }
            if path == Path::new("/after") {
                after_calls_in_stat.fetch_add(1, Ordering::SeqCst);
            }
            fake_stat(path)
        });
        // Every stat worker thread holds a clone of `stat`: the count drops when one exits.
        let holders = Arc::downgrade(&stat);
        let mut statter = Statter::new(stat, Duration::from_millis(200));
        let mut outcomes = Vec::new();
        let started = Instant::now();
        statter.stat_all(
            &[
                ("/before", Path::new("/before")),
                ("/hung", Path::new("/hung")),
                ("/after", Path::new("/after")),
            ],
            &mut outcomes,
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(matches!(outcomes[0], Outcome::Stat(_)));
        assert_eq!(outcomes[1], Outcome::DeviceError(DeviceError::Timeout));
        assert!(matches!(outcomes[2], Outcome::Stat(_)));
        // Once the hung stat returns, the abandoned worker drops its queued copy of /after and
        // exits; its exit (its clone of `stat` dropped) is the event awaited, not a pause.
        let with_abandoned_worker = holders.strong_count();
        release_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while holders.strong_count() >= with_abandoned_worker {
            assert!(
                Instant::now() < deadline,
                "the abandoned worker never exited"
            );
            std::thread::yield_now();
        }
        assert!(!statter.is_stuck("/hung"));
        assert_eq!(after_calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn procfs_mounts_report_changes_by_poll_and_files_are_reread() {
        let proc_mounts = std::fs::File::open("/proc/self/mountinfo").unwrap();
        assert!(is_procfs(&proc_mounts));
        assert!(
            !mount_table_changed(&proc_mounts),
            "no change right after open"
        );

        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("proc/1")).unwrap();
        let mounts = root.path().join("proc/1/mountinfo");
        std::fs::write(&mounts, "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n").unwrap();
        assert!(!is_procfs(&std::fs::File::open(&mounts).unwrap()));
        let paths = Paths::fixture(root.path());
        let malformed = std::sync::atomic::AtomicU64::new(0);
        let ctx = Context::new(&paths, &malformed);
        let mut collector = FilesystemCollector::new(
            default_filter(),
            Duration::from_secs(5),
            Arc::new(fake_stat),
        );
        collector.read_mounts(&ctx).unwrap();
        assert_eq!(collector.mounts.len(), 1);
        std::fs::write(
            &mounts,
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n23 1 8:17 / /srv rw - xfs /dev/sdb1 rw\n",
        )
        .unwrap();
        collector.read_mounts(&ctx).unwrap();
        assert_eq!(
            collector.mounts.len(),
            2,
            "a regular file is re-read every scrape"
        );
    }
}
