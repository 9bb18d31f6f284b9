//! When may the set of devices, modules and mounts have changed? Collectors use the answer to
//! skip probing sources they found absent, and to reuse directory listings, until it changes:
//! a failed open or a listing of a sysfs class costs a path walk each, a dozen per scrape.
//!
//! The kernel numbers every uevent (a device or module added, removed, renamed; a CPU brought
//! online) in /sys/kernel/uevent_seqnum, and flags a mount table change on an open procfs
//! mounts file (POLLPRI). Both unchanged since the last scrape: same epoch. Some additions raise
//! neither (selinuxfs mounted late, a mount in another namespace showing under /sys/fs), so the
//! epoch also moves at least every [`REPROBE_INTERVAL`]; such a source shows up that much later
//! than with node_exporter, which probes every scrape.

use std::time::{Duration, Instant};

use super::Paths;
use super::source::SourceFile;

/// The longest a cached absence or listing is trusted without a uevent or mount change.
pub const REPROBE_INTERVAL: Duration = Duration::from_secs(60);

/// The epoch logic, apart from the files it watches.
#[derive(Debug, Default)]
pub struct Epochs {
    epoch: u64,
    last_seqnum: Option<u64>,
    started: Option<Instant>,
}

impl Epochs {
    /// The epoch for a scrape at `now` that read `seqnum` (`None`: unreadable) and saw the
    /// mount table change or not. `None` when there is nothing to go by: probe everything.
    pub fn advance(
        &mut self,
        seqnum: Option<u64>,
        mounts_changed: bool,
        now: Instant,
    ) -> Option<u64> {
        let Some(seqnum) = seqnum else {
            self.last_seqnum = None;
            self.started = None;
            return None;
        };
        let expired = self
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= REPROBE_INTERVAL);
        if expired || mounts_changed || self.last_seqnum != Some(seqnum) {
            self.epoch = self.epoch.wrapping_add(1);
            self.started = Some(now);
            self.last_seqnum = Some(seqnum);
        }
        Some(self.epoch)
    }
}

/// Watches /sys/kernel/uevent_seqnum and the procfs mounts file, kept open between scrapes.
pub struct HotplugWatch {
    seqnum: SourceFile,
    buf: String,
    mounts: Option<std::fs::File>,
    mounts_tried: bool,
    epochs: Epochs,
}

impl Default for HotplugWatch {
    fn default() -> Self {
        HotplugWatch {
            seqnum: SourceFile::sys("kernel/uevent_seqnum"),
            buf: String::new(),
            mounts: None,
            mounts_tried: false,
            epochs: Epochs::default(),
        }
    }
}

impl HotplugWatch {
    /// This scrape's epoch (see [`Epochs::advance`]).
    pub fn epoch(&mut self, paths: &Paths) -> Option<u64> {
        let seqnum = match self.seqnum.read_into(paths, &mut self.buf) {
            Ok(()) => self.buf.trim().parse::<u64>().ok(),
            Err(_) => None,
        };
        if !self.mounts_tried {
            self.mounts_tried = true;
            // The mounts file that the filesystem collector reads; without a pollable one, a
            // mount is noticed at the next uevent or interval.
            self.mounts = ["1/mountinfo", "self/mountinfo"]
                .into_iter()
                .find_map(|rel| std::fs::File::open(paths.proc(rel)).ok())
                .filter(is_procfs);
        }
        let mounts_changed = self.mounts.as_ref().is_some_and(mount_table_changed);
        self.epochs.advance(seqnum, mounts_changed, Instant::now())
    }
}

/// Whether `file` is on procfs (whose mounts files report changes through poll(2)).
pub fn is_procfs(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: the fd is open for the call's duration and buf is a properly sized out-parameter.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), buf.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: fstatfs returned 0, so it filled buf.
    let s = unsafe { buf.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let magic = s.f_type as i64;
    magic == PROC_SUPER_MAGIC
}

/// Whether the kernel reports a mount table change (or an error) on an open procfs mounts
/// file since the last call on it.
pub fn mount_table_changed(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: pfd is a valid pollfd array of length 1; timeout 0 never blocks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    // The file is always readable (POLLIN); only POLLPRI/POLLERR say the table changed.
    n < 0 || pfd.revents & (libc::POLLPRI | libc::POLLERR | libc::POLLNVAL) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_moves_on_uevents_mounts_and_time_only() {
        let mut epochs = Epochs::default();
        let t0 = Instant::now();
        let first = epochs.advance(Some(10), false, t0).unwrap();
        assert_eq!(
            epochs.advance(Some(10), false, t0 + Duration::from_secs(1)),
            Some(first)
        );
        let after_uevent = epochs.advance(Some(11), false, t0 + Duration::from_secs(2));
        assert_ne!(after_uevent, Some(first));
        let after_mount = epochs.advance(Some(11), true, t0 + Duration::from_secs(3));
        assert_ne!(after_mount, after_uevent);
        assert_eq!(
            epochs.advance(Some(11), false, t0 + Duration::from_secs(4)),
            after_mount
        );
        // Nothing happened for a whole interval since the epoch began: a new one anyway.
        let late = t0 + Duration::from_secs(3) + REPROBE_INTERVAL;
        assert_ne!(epochs.advance(Some(11), false, late), after_mount);
    }

    #[test]
    fn no_seqnum_no_epoch() {
        let mut epochs = Epochs::default();
        let t0 = Instant::now();
        let first = epochs.advance(Some(1), false, t0);
        assert!(first.is_some());
        assert_eq!(epochs.advance(None, false, t0), None);
        // Readable again: a fresh epoch, not the one before the gap.
        let again = epochs.advance(Some(1), false, t0);
        assert!(again.is_some());
        assert_ne!(again, first);
    }

    #[test]
    fn a_fixture_tree_without_the_counter_has_no_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut watch = HotplugWatch::default();
        assert_eq!(watch.epoch(&Paths::fixture(dir.path())), None);
    }

    /// A real uevent (a "change" event for the loopback interface, which nothing acts on) moves
    /// the epoch. Needs root to write the uevent file; CI runs as root.
    #[test]
    fn a_uevent_on_this_kernel_moves_the_epoch() {
        let mut watch = HotplugWatch::default();
        let paths = Paths::default();
        let before = watch
            .epoch(&paths)
            .expect("/sys/kernel/uevent_seqnum is readable");
        if let Err(e) = std::fs::write("/sys/class/net/lo/uevent", "change") {
            // SAFETY: geteuid has no preconditions.
            assert_ne!(
                unsafe { libc::geteuid() },
                0,
                "root could not raise a uevent: {e}"
            );
            eprintln!("skipped: raising a uevent needs root ({e})");
            return;
        }
        assert_ne!(watch.epoch(&paths), Some(before));
    }
}
