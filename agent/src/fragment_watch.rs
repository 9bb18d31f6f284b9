//! Fragment changes between scans (issue 17): one inotify instance watches every device folder
//! of the `[fragments]` task for names created, moved in, written and closed, deleted or moved
//! out. Events are folded into the ids they touch per device (names that are not a fragment id
//! or its `.digest`, by the scan's rule, are ignored); once the folder has been quiet for
//! [`SETTLE`] (or [`MAX_BATCH`] after the first event), each touched id is looked at once (a
//! stat of `<id>` and of `<id>.digest`) and the result applied to the held inventory as a delta
//! (`Inventories::apply_changes`), which the link sends. A queue overflow (`IN_Q_OVERFLOW`:
//! events were lost) asks the task for a full rescan of every device instead.
//!
//! The pure parts (the kernel's event records, the folding) are unit-tested; the thread is
//! exercised by `tests/fragments.rs` with the agent binary on a real folder.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roaring::RoaringBitmap;

use crate::fragment_task::{FragmentSettings, Inventories};
use crate::fragments;

/// A batch is applied once no event came for this long…
pub const SETTLE: Duration = Duration::from_millis(100);
/// … or this long after its first event, whichever is first.
pub const MAX_BATCH: Duration = Duration::from_secs(1);

/// What a watch asks the kernel for.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_MOVED_TO
    | libc::IN_CLOSE_WRITE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_ONLYDIR;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("inotify_init1: {0}")]
    Init(#[source] std::io::Error),
    #[error("starting the fragment-watch thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// One event record of `read(2)` on an inotify descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub wd: i32,
    pub mask: u32,
    /// The name within the watched folder (NUL padding removed); empty for events on the
    /// folder itself and for `IN_Q_OVERFLOW`.
    pub name: &'a [u8],
}

/// The records in `buf` (what one `read(2)` returned); a truncated record at the end is left
/// out (the kernel never writes one).
pub fn parse_events(buf: &[u8]) -> Vec<Event<'_>> {
    const HEADER: usize = 16; // wd i32, mask u32, cookie u32, len u32
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = buf.get(at..at + HEADER) {
        let field = |i: usize| [header[i], header[i + 1], header[i + 2], header[i + 3]];
        let wd = i32::from_ne_bytes(field(0));
        let mask = u32::from_ne_bytes(field(4));
        let len = u32::from_ne_bytes(field(12)) as usize;
        let Some(name) = buf.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        out.push(Event {
            wd,
            mask,
            name: &name[..end],
        });
        at += HEADER + len;
    }
    out
}

/// The changes of one batch: the ids touched per device, or "events were lost".
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    pub touched: BTreeMap<u32, RoaringBitmap>,
    /// The kernel's queue overflowed: every device needs a full rescan.
    pub overflow: bool,
}

impl Changes {
    /// Folds one event on `device`'s folder (`None`: a descriptor no watch of ours has, as
    /// `IN_Q_OVERFLOW`'s -1).
    pub fn add(&mut self, device: Option<u32>, mask: u32, name: &[u8]) {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            self.overflow = true;
            return;
        }
        let Some(device) = device else { return };
        if let Some((id, _digest)) = fragments::classify(name) {
            self.touched.entry(device).or_default().insert(id);
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.overflow && self.touched.is_empty()
    }
}

/// One watched folder.
struct Watched {
    device: u32,
    dir: PathBuf,
    grace: Duration,
}

/// Starts watching every device folder of `devices` on a thread of its own, applying changes
/// to `out`. A folder that cannot be watched is warned about and left to the scans. Not
/// stopped at exit (it holds nothing that needs closing).
pub fn spawn(devices: &[FragmentSettings], out: Arc<Inventories>) -> Result<(), WatchError> {
    // SAFETY: plain syscall; the descriptor is owned at once.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(WatchError::Init(std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut watches = BTreeMap::new();
    for s in devices {
        use std::os::unix::ffi::OsStrExt as _;
        let Ok(path) = std::ffi::CString::new(s.dir.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: a valid descriptor and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), MASK) };
        if wd < 0 {
            tracing::warn!(device = s.device_id, dir = %s.dir.display(),
                error = %std::io::Error::last_os_error(),
                "fragment folder not watched: its changes show at the next scan");
            continue;
        }
        watches.insert(
            wd,
            Watched {
                device: s.device_id,
                dir: s.dir.clone(),
                grace: s.orphan_grace,
            },
        );
    }
    let devices: Vec<u32> = devices.iter().map(|s| s.device_id).collect();
    std::thread::Builder::new()
        .name("fragment-watch".into())
        .spawn(move || run(&fd, &watches, &devices, &out))
        .map_err(WatchError::Thread)?;
    Ok(())
}

/// Waits for `fd` to be readable for at most `timeout` (`None`: no limit); whether it is.
fn readable(fd: &OwnedFd, timeout: Option<Duration>) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

fn run(fd: &OwnedFd, watches: &BTreeMap<i32, Watched>, devices: &[u32], out: &Inventories) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut changes = Changes::default();
    let mut first: Option<Instant> = None;
    loop {
        let timeout = first.map(|f| SETTLE.min(MAX_BATCH.saturating_sub(f.elapsed())));
        if readable(fd, timeout) {
            loop {
                // SAFETY: reads into our own buffer of its length.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    let e = std::io::Error::last_os_error();
                    if n < 0 && e.kind() != std::io::ErrorKind::WouldBlock {
                        tracing::warn!(error = %e, "reading fragment folder changes");
                    }
                    break;
                }
                for event in parse_events(&buf[..n as usize]) {
                    if event.mask & libc::IN_IGNORED != 0
                        && let Some(w) = watches.get(&event.wd)
                    {
                        tracing::warn!(device = w.device, dir = %w.dir.display(),
                            "fragment folder no longer watched (removed or unmounted): its changes show at the next scan");
                    }
                    changes.add(
                        watches.get(&event.wd).map(|w| w.device),
                        event.mask,
                        event.name,
                    );
                }
            }
            if !changes.is_empty() && first.is_none() {
                first = Some(Instant::now());
            }
            if first.is_some_and(|f| f.elapsed() < MAX_BATCH) {
                continue;
            }
        }
        if changes.is_empty() {
            first = None;
            continue;
        }
        first = None;
        apply(std::mem::take(&mut changes), watches, devices, out);
    }
}

/// Looks at each touched id once and applies the result; an overflow rescans every device.
fn apply(changes: Changes, watches: &BTreeMap<i32, Watched>, devices: &[u32], out: &Inventories) {
    if changes.overflow {
        tracing::warn!("fragment folder change queue overflowed: every device is scanned again");
        for &device in devices {
            out.rescan(device);
        }
        return;
    }
    for (device, ids) in changes.touched {
        let Some(w) = watches.values().find(|w| w.device == device) else {
            continue;
        };
        let mut states = BTreeMap::new();
        for id in &ids {
            match fragments::stat_fragment(&w.dir, id, w.grace) {
                Ok(state) => {
                    states.insert(id, state);
                }
                Err(e) => {
                    tracing::debug!(device, id, error = %e, "fragment not looked at; the next scan will")
                }
            }
        }
        out.apply_changes(device, &states);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(wd: i32, mask: u32, name: &[u8], padded: usize) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&wd.to_ne_bytes());
        r.extend_from_slice(&mask.to_ne_bytes());
        r.extend_from_slice(&0u32.to_ne_bytes());
        r.extend_from_slice(&(padded as u32).to_ne_bytes());
        r.extend_from_slice(name);
        r.resize(16 + padded, 0);
        r
    }

    #[test]
    fn records_parse_with_their_padding_and_a_truncated_one_is_left_out() {
        let mut buf = record(1, libc::IN_CREATE, b"100", 16);
        buf.extend(record(1, libc::IN_DELETE, b"100.digest", 16));
        buf.extend(record(-1, libc::IN_Q_OVERFLOW, b"", 0));
        let whole = buf.len();
        buf.extend(record(1, libc::IN_CREATE, b"200", 16));
        let events = parse_events(&buf[..whole + 20]);
        assert_eq!(
            events,
            [
                Event {
                    wd: 1,
                    mask: libc::IN_CREATE,
                    name: b"100"
                },
                Event {
                    wd: 1,
                    mask: libc::IN_DELETE,
                    name: b"100.digest"
                },
                Event {
                    wd: -1,
                    mask: libc::IN_Q_OVERFLOW,
                    name: b""
                },
            ]
        );
    }

    #[test]
    fn events_fold_into_touched_ids_and_an_overflow_asks_for_a_rescan() {
        let mut c = Changes::default();
        assert!(c.is_empty());
        c.add(Some(7), libc::IN_CREATE, b"100");
        c.add(Some(7), libc::IN_CLOSE_WRITE, b"100");
        c.add(Some(7), libc::IN_MOVED_TO, b"101.digest");
        c.add(Some(7), libc::IN_DELETE, b"102");
        c.add(Some(8), libc::IN_MOVED_FROM, b"5");
        // Not fragment names, by the scan's rule.
        for name in [
            &b"0100"[..],
            b"x",
            b"100.tmp",
            b"100.digest.tmp",
            b"",
            b"99999999999",
        ] {
            c.add(Some(7), libc::IN_CREATE, name);
        }
        // A descriptor of no watch of ours.
        c.add(None, libc::IN_CREATE, b"300");
        assert!(!c.overflow);
        assert_eq!(
            c.touched,
            BTreeMap::from([
                (7, [100, 101, 102].into_iter().collect()),
                (8, [5].into_iter().collect()),
            ])
        );
        c.add(None, libc::IN_Q_OVERFLOW, b"");
        assert!(c.overflow && !c.is_empty());
    }

    /// The thread's whole path on a temporary folder: a fragment created and one deleted show
    /// in the published inventory as one delta each batch, without a scan.
    #[test]
    fn a_created_and_a_deleted_fragment_reach_the_inventory_as_a_delta() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1"), b"one").unwrap();
        std::fs::write(dir.path().join("2"), b"two!").unwrap();
        let out = Arc::new(Inventories::default());
        let mut budget = fragments::IoBudget::new(0.0);
        let inv = fragments::scan(3, dir.path(), Duration::from_secs(3600), &mut budget).unwrap();
        out.publish(inv);
        let settings = FragmentSettings {
            device_id: 3,
            dir: dir.path().to_path_buf(),
            scan_period: Duration::from_secs(3600),
            scrub_period: Duration::from_secs(7200),
            io_mb_per_s: 1.0,
            busy_load_per_core: 1.0,
            busy_disk_util: 1.0,
            orphan_grace: Duration::from_secs(3600),
            digest: fragments::DigestKind::Md5Hex,
            state_dir: dir.path().to_path_buf(),
        };
        let mut changed = out.subscribe();
        spawn(&[settings], out.clone()).unwrap();
        std::fs::write(dir.path().join("3"), b"three").unwrap();
        std::fs::write(dir.path().join("3.digest"), b"x").unwrap();
        std::fs::remove_file(dir.path().join("1")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let published = loop {
            let (_, p) = out.snapshot().into_iter().next().unwrap();
            if p.inventory.present == [2, 3].into_iter().collect::<RoaringBitmap>()
                && !p.inventory.no_digest.contains(3)
            {
                break p;
            }
            assert!(Instant::now() < deadline, "changes not applied: {p:?}");
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(1), changed.changed()).await;
            });
        };
        assert_eq!(published.inventory.sizes, [4, 5]);
        assert_eq!(published.whole_generation, 1);
        assert!(published.generation > 1);
        assert!(!published.deltas.is_empty());
    }
}
