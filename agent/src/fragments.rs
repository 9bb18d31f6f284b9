//! The fragment inventory and scrub of a declared storage device: which `<id>` files its folder
//! holds (sizes, `.digest` presence, recent modification) as roaring bitmaps
//! (`nodewarden_shared::fragments::DeviceInventory`), and a scrub that reads every fragment and
//! checks it against its `.digest` file, both paced by an I/O budget (`IoBudget`) and meant to run
//! on a thread at idle I/O priority (`set_idle_io_priority`).
//!
//! Memory for 10 million fragments: the bitmaps (a few MiB for dense ids) plus 4 bytes of size per
//! fragment. The scan never holds a list of directory entries: pass 1 streams `readdir` into the
//! bitmaps, pass 2 stats `<dir>/<id>` in id order straight into the size vector.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use md5::Md5;
use nodewarden_shared::fragments::{DeviceInventory, InventoryDelta};
use roaring::RoaringBitmap;
use sha2::{Digest as _, Sha256};

/// What a stat of one fragment costs against the I/O budget (one inode block).
pub const STAT_COST: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum FragmentError {
    #[error("fragment folder {}: {source}", dir.display())]
    Folder {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setting idle I/O priority: {0}")]
    IoPriority(#[source] std::io::Error),
}

/// The `.digest` files' algorithm and encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
pub enum DigestKind {
    /// MD5 of the fragment as 32 lowercase hex digits: the default, because it is what the
    /// DFS's digest files of this size hold (32 hex digits) and the cheapest to verify; it
    /// detects rot, not tampering.
    #[default]
    #[serde(rename = "md5-hex")]
    Md5Hex,
    #[serde(rename = "sha256-hex")]
    Sha256Hex,
    /// Presence and size only: no fragment is read.
    #[serde(rename = "none")]
    None,
}

/// A byte-rate pacer: `charge` blocks the calling thread until the bytes spent so far fit
/// `rate` bytes per second since the budget started.
#[derive(Debug)]
pub struct IoBudget {
    rate: u64,
    started: Instant,
    spent: u64,
}

impl IoBudget {
    /// `mb_per_s` in MB/s (10^6 bytes); 0 means unlimited.
    pub fn new(mb_per_s: f64) -> IoBudget {
        IoBudget {
            rate: (mb_per_s * 1e6) as u64,
            started: Instant::now(),
            spent: 0,
        }
    }

    pub fn spent(&self) -> u64 {
        self.spent
    }

    pub fn charge(&mut self, bytes: u64) {
        self.spent = self.spent.saturating_add(bytes);
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.spent as f64 / self.rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

/// Puts the calling thread in the idle I/O class (`ioprio_set`), so its reads wait for any
/// other I/O on the disk.
pub fn set_idle_io_priority() -> Result<(), FragmentError> {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    // SAFETY: ioprio_set takes three integers; `0` is the calling thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << 13,
        )
    };
    if rc < 0 {
        return Err(FragmentError::IoPriority(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A fragment's file name: digits only, no leading zero (so the name is the id's own).
fn parse_id(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name.len() > 10 || (name[0] == b'0' && name.len() > 1) {
        return None;
    }
    if !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// What a name in a device folder is, by the scan's rule: fragment `<id>` (`false`) or its
/// `<id>.digest` (`true`); `None` for anything else.
pub fn classify(name: &[u8]) -> Option<(u32, bool)> {
    match name.strip_suffix(b".digest") {
        Some(stem) => parse_id(stem).map(|id| (id, true)),
        None => parse_id(name).map(|id| (id, false)),
    }
}

/// One fragment's state on disk, as a scan records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentFile {
    /// Saturating at `u32::MAX`.
    pub size: u32,
    pub digest: bool,
    /// Modified within the orphan grace period.
    pub recent: bool,
}

/// Fragment `id` in `dir` now: `None` when `<id>` is not a regular file (gone). One stat of
/// `<id>` and one of `<id>.digest`.
pub fn stat_fragment(
    dir: &Path,
    id: u32,
    grace: Duration,
) -> std::io::Result<Option<FragmentFile>> {
    let meta = match std::fs::metadata(dir.join(id.to_string())) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let digest = match std::fs::metadata(dir.join(format!("{id}.digest"))) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    let recent = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_none_or(|age| age < grace);
    Ok(Some(FragmentFile {
        size: u32::try_from(meta.len()).unwrap_or(u32::MAX),
        digest,
        recent,
    }))
}

/// Pass 1 of a scan: the fragment ids `readdir` lists, and those of them without a `.digest`.
/// The digest set is dropped before anything else is allocated: the peak is two bitmaps.
fn list(dir: &Path) -> Result<(RoaringBitmap, RoaringBitmap), FragmentError> {
    use std::os::unix::ffi::OsStrExt as _;
    let folder = |source| FragmentError::Folder {
        dir: dir.to_path_buf(),
        source,
    };
    let mut present = RoaringBitmap::new();
    let mut digests = RoaringBitmap::new();
    for entry in std::fs::read_dir(dir).map_err(folder)? {
        let entry = entry.map_err(folder)?;
        let name = entry.file_name();
        match classify(name.as_bytes()) {
            Some((id, true)) => {
                digests.insert(id);
            }
            Some((id, false)) => {
                present.insert(id);
            }
            None => {}
        }
    }
    let digestless = &present - &digests;
    Ok((present, digestless))
}

/// Stats a rescan hands over at a time ([`rescan`]).
pub const RESCAN_CHUNK: usize = 4096;

/// A scan that builds no inventory: the same two passes, stats and budget as [`scan`], but each
/// listed fragment's state (`None`: gone between the passes) is handed to `chunk` in ascending
/// id order, [`RESCAN_CHUNK`] at a time, for the caller to compare with the inventory it holds
/// (the fragment task turns them into a delta of its published inventory, so a rescan never
/// holds a second inventory). Returns the ids listed (what is held and not listed is gone).
pub fn rescan(
    dir: &Path,
    grace: Duration,
    budget: &mut IoBudget,
    mut chunk: impl FnMut(&[(u32, Option<FragmentFile>)]),
) -> Result<RoaringBitmap, FragmentError> {
    let folder = |source| FragmentError::Folder {
        dir: dir.to_path_buf(),
        source,
    };
    let (listed, digestless) = list(dir)?;
    let now = SystemTime::now();
    let mut path = dir.to_path_buf();
    let mut buf = Vec::with_capacity(RESCAN_CHUNK);
    for id in &listed {
        budget.charge(STAT_COST);
        path.push(id.to_string());
        let meta = std::fs::metadata(&path);
        path.pop();
        let file = match meta {
            Ok(m) if m.is_file() => Some(FragmentFile {
                size: u32::try_from(m.len()).unwrap_or(u32::MAX),
                digest: !digestless.contains(id),
                recent: m
                    .modified()
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_none_or(|age| age < grace),
            }),
            Ok(_) => None,
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(folder(e)),
        };
        buf.push((id, file));
        if buf.len() == RESCAN_CHUNK {
            chunk(&buf);
            buf.clear();
        }
    }
    if !buf.is_empty() {
        chunk(&buf);
    }
    Ok(listed)
}

/// Scans `dir` into an inventory. Fragments modified less than `grace` ago are `recent`.
/// A fragment that disappears between the passes is left out; a missing folder is an error
/// (an unmounted disk must not look like an empty one).
pub fn scan(
    device_id: u32,
    dir: &Path,
    grace: Duration,
    budget: &mut IoBudget,
) -> Result<DeviceInventory, FragmentError> {
    scan_from(device_id, dir, grace, budget, None, |_, _| {}).map(|(inv, _)| inv)
}

/// What an interrupted scan had found (`crate::scan_checkpoint`): every fragment up to
/// `position` in id order was stat'ed, and `inventory` holds those found (`present`, `sizes`,
/// `recent`; its `no_digest` and `corrupt` are not used).
#[derive(Debug, Clone, PartialEq)]
pub struct PartialScan {
    pub position: u32,
    pub inventory: DeviceInventory,
}

/// [`scan`], continuing `resume` when given: pass 1 lists the folder again (no stat, not
/// charged), the partial inventory loses the ids no longer listed, the listed ids up to its
/// position that it does not hold (new since) are stat'ed, and pass 2 stats only the ids after
/// its position. A fragment up to the position rewritten meanwhile keeps its old size until the
/// next scan. `stated` is called with each fragment pass 2 stats, in ascending id order (`None`:
/// gone), for the checkpoint. Returns the inventory and how many stats this call made.
pub fn scan_from(
    device_id: u32,
    dir: &Path,
    grace: Duration,
    budget: &mut IoBudget,
    resume: Option<PartialScan>,
    mut stated: impl FnMut(u32, Option<FragmentFile>),
) -> Result<(DeviceInventory, u64), FragmentError> {
    let folder = |source| FragmentError::Folder {
        dir: dir.to_path_buf(),
        source,
    };
    let (listed, digestless) = list(dir)?;
    let now = SystemTime::now();
    let stat = |path: &Path| -> Result<Option<(u32, bool)>, FragmentError> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(Some((
                u32::try_from(m.len()).unwrap_or(u32::MAX),
                m.modified()
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_none_or(|age| age < grace),
            ))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(folder(e)),
        }
    };
    let mut path = dir.to_path_buf();
    let mut stats = 0u64;
    let (mut inv, after, mut fix) = match resume {
        Some(partial) => {
            let mut inv = partial.inventory;
            inv.device_id = device_id;
            let p = partial.position;
            // Gone while the agent was down, and new ids up to the position (stat'ed now, put
            // in at the end in place: `DeviceInventory::apply`).
            let mut fix = InventoryDelta {
                device_id,
                removed: &inv.present - &listed,
                ..Default::default()
            };
            let back: RoaringBitmap = listed
                .iter()
                .take_while(|&id| id <= p)
                .filter(|&id| !inv.present.contains(id))
                .collect();
            for id in &back {
                budget.charge(STAT_COST);
                stats += 1;
                path.push(id.to_string());
                let file = stat(&path);
                path.pop();
                if let Some((size, young)) = file? {
                    fix.set.push(id);
                    fix.sizes.push(size);
                    if young {
                        fix.recent.push(id);
                    }
                }
            }
            inv.no_digest.clear();
            inv.corrupt.clear();
            (inv, Some(p), fix)
        }
        None => (
            DeviceInventory {
                device_id,
                sizes: Vec::with_capacity(listed.len() as usize),
                ..Default::default()
            },
            None,
            InventoryDelta::default(),
        ),
    };
    for id in listed
        .iter()
        .skip_while(|&id| after.is_some_and(|p| id <= p))
    {
        budget.charge(STAT_COST);
        stats += 1;
        path.push(id.to_string());
        let file = stat(&path);
        path.pop();
        let Some((size, young)) = file? else {
            stated(id, None);
            continue;
        };
        inv.present.push(id);
        inv.sizes.push(size);
        if young {
            inv.recent.push(id);
        }
        stated(
            id,
            Some(FragmentFile {
                size,
                digest: !digestless.contains(id),
                recent: young,
            }),
        );
    }
    if !fix.is_empty() {
        fix.device_id = device_id;
        inv.apply(&fix);
    }
    inv.no_digest = &digestless & &inv.present;
    Ok((inv, stats))
}

/// What one scrub pass found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ScrubReport {
    pub checked: u64,
    pub bytes: u64,
    pub corrupt: RoaringBitmap,
    /// Gone between the scan and the scrub, or unreadable.
    pub unreadable: u64,
    /// The pace stopped it before every fragment was read.
    pub stopped: bool,
    /// The last fragment id handled (checked or unreadable): where a resumed pass starts after.
    pub position: Option<u32>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a scrub does before its next fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    Go,
    /// The node is busy: wait a second and ask again.
    Wait,
    /// Stop here (the agent is stopping, or other work of the fragment task is due); the report
    /// says what was checked so far and where a resumed pass starts.
    Stop,
}

/// Reads each fragment of `inv` that has a digest and compares it with `.digest` (its first
/// token, hex, any case). Every byte read is charged to `budget`; `busy` is asked between
/// fragments and the scrub waits while it says so.
pub fn scrub(
    dir: &Path,
    inv: &DeviceInventory,
    kind: DigestKind,
    budget: &mut IoBudget,
    mut busy: impl FnMut() -> bool,
) -> ScrubReport {
    scrub_paced(
        dir,
        inv,
        kind,
        budget,
        None,
        || if busy() { Pace::Wait } else { Pace::Go },
        |_| {},
    )
}

/// [`scrub`] with a pace that may also stop it (`stopped` in the report says it did), starting
/// after fragment id `after` (a resumed pass: the ids up to it were checked before), and calling
/// `progress` with the report so far after each fragment handled (`report.position` is it).
pub fn scrub_paced(
    dir: &Path,
    inv: &DeviceInventory,
    kind: DigestKind,
    budget: &mut IoBudget,
    after: Option<u32>,
    mut pace: impl FnMut() -> Pace,
    mut progress: impl FnMut(&ScrubReport),
) -> ScrubReport {
    let mut report = ScrubReport::default();
    if kind == DigestKind::None {
        return report;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut todo = &inv.present - &inv.no_digest;
    if let Some(after) = after {
        todo.remove_range(..=after);
    }
    'fragments: for id in &todo {
        loop {
            match pace() {
                Pace::Go => break,
                Pace::Wait => std::thread::sleep(Duration::from_secs(1)),
                Pace::Stop => {
                    report.stopped = true;
                    break 'fragments;
                }
            }
        }
        report.position = Some(id);
        check_one(dir, id, kind, budget, &mut buf, &mut report);
        progress(&report);
    }
    report
}

/// Reads fragment `id` and compares it with its digest, counting the verdict in `report`.
fn check_one(
    dir: &Path,
    id: u32,
    kind: DigestKind,
    budget: &mut IoBudget,
    buf: &mut [u8],
    report: &mut ScrubReport,
) {
    let data = dir.join(id.to_string());
    let digest = dir.join(format!("{id}.digest"));
    let Ok(expected) = std::fs::read_to_string(&digest) else {
        report.unreadable += 1;
        return;
    };
    let expected = expected
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let Ok(mut file) = File::open(&data) else {
        report.unreadable += 1;
        return;
    };
    let mut md5 = Md5::new();
    let mut sha = Sha256::new();
    let mut failed = false;
    loop {
        match file.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                budget.charge(n as u64);
                report.bytes += n as u64;
                match kind {
                    DigestKind::Md5Hex => md5.update(&buf[..n]),
                    DigestKind::Sha256Hex => sha.update(&buf[..n]),
                    DigestKind::None => {}
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if failed {
        report.unreadable += 1;
        return;
    }
    let actual = match kind {
        DigestKind::Md5Hex => hex(&md5.finalize()),
        DigestKind::Sha256Hex => hex(&sha.finalize()),
        DigestKind::None => return,
    };
    report.checked += 1;
    if actual != expected {
        report.corrupt.insert(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(parse_id(b"1200"), Some(1200));
        assert_eq!(parse_id(b"0"), Some(0));
        for bad in [
            &b""[..],
            b"01",
            b"12a",
            b"99999999999",
            b"-1",
            b"4294967296",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }

    /// A scan continued from a partial one stats only what lies after its position, plus the
    /// ids that appeared behind it; ids gone behind it are dropped; the held state is kept.
    #[test]
    fn a_scan_resumes_after_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for id in [10u32, 12, 14, 16, 18] {
            std::fs::write(d.join(id.to_string()), vec![b'x'; id as usize]).unwrap();
            if id != 16 {
                std::fs::write(d.join(format!("{id}.digest")), b"0").unwrap();
            }
        }
        // What a first run found up to 14 (sizes it saw then, 12 recent then).
        let partial = PartialScan {
            position: 14,
            inventory: DeviceInventory {
                device_id: 3,
                present: [10u32, 12, 14].into_iter().collect(),
                sizes: vec![100, 120, 140],
                recent: [12u32].into_iter().collect(),
                ..Default::default()
            },
        };
        // While the agent was down: 10 went, 11 appeared.
        std::fs::remove_file(d.join("10")).unwrap();
        std::fs::write(d.join("11"), b"new").unwrap();
        let mut seen = Vec::new();
        let (inv, stats) = scan_from(
            3,
            d,
            Duration::ZERO,
            &mut IoBudget::new(0.0),
            Some(partial),
            |id, f| seen.push((id, f.map(|f| f.size))),
        )
        .unwrap();
        assert_eq!(stats, 3, "16, 18 and 11");
        assert_eq!(seen, vec![(16, Some(16)), (18, Some(18))]);
        assert_eq!(inv.device_id, 3);
        assert_eq!(
            inv.present.iter().collect::<Vec<_>>(),
            vec![11, 12, 14, 16, 18]
        );
        assert_eq!(inv.sizes, vec![3, 120, 140, 16, 18]);
        assert_eq!(inv.recent.iter().collect::<Vec<_>>(), vec![12]);
        assert_eq!(inv.no_digest.iter().collect::<Vec<_>>(), vec![11, 16]);
        assert!(inv.corrupt.is_empty());
        // The same folder scanned from the start: every fragment stat'ed once.
        let (fresh, stats) = scan_from(
            3,
            d,
            Duration::ZERO,
            &mut IoBudget::new(0.0),
            None,
            |_, _| {},
        )
        .unwrap();
        assert_eq!(stats, 5);
        assert_eq!(fresh.sizes, vec![3, 12, 14, 16, 18]);
    }

    #[test]
    fn scan_and_scrub_real_files() {
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, data: &[u8]| std::fs::write(dir.path().join(name), data).unwrap();
        put("100", b"hello");
        put(
            "100.digest",
            format!("{}\n", hex(&Md5::digest(b"hello"))).as_bytes(),
        );
        put("101", b"rot");
        put("101.digest", hex(&Md5::digest(b"not rot")).as_bytes());
        put("102", b"no digest");
        put("junk", b"x");
        put("7.digest", b"orphan digest");
        let mut budget = IoBudget::new(0.0);
        let inv = scan(3, dir.path(), Duration::ZERO, &mut budget).unwrap();
        assert_eq!(inv.present.iter().collect::<Vec<_>>(), vec![100, 101, 102]);
        assert_eq!(inv.sizes, vec![5, 3, 9]);
        assert_eq!(inv.no_digest.iter().collect::<Vec<_>>(), vec![102]);
        assert!(inv.recent.is_empty());
        let r = scrub(dir.path(), &inv, DigestKind::Md5Hex, &mut budget, || false);
        assert_eq!(r.checked, 2);
        assert_eq!(r.corrupt.iter().collect::<Vec<_>>(), vec![101]);
        assert!(matches!(
            scan(3, &dir.path().join("gone"), Duration::ZERO, &mut budget),
            Err(FragmentError::Folder { .. })
        ));
        // A resumed pass starts after its cursor and reports each fragment it handles.
        let mut seen = Vec::new();
        let r = scrub_paced(
            dir.path(),
            &inv,
            DigestKind::Md5Hex,
            &mut budget,
            Some(100),
            || Pace::Go,
            |r| seen.push((r.position, r.checked)),
        );
        assert_eq!((r.checked, r.position), (1, Some(101)));
        assert_eq!(r.corrupt.iter().collect::<Vec<_>>(), vec![101]);
        assert_eq!(seen, vec![(Some(101), 1)]);
        // Past the last fragment: nothing to read, no position.
        let r = scrub_paced(
            dir.path(),
            &inv,
            DigestKind::Md5Hex,
            &mut budget,
            Some(101),
            || Pace::Go,
            |_| panic!("no fragment after the cursor"),
        );
        assert_eq!((r.checked, r.position, r.stopped), (0, None, false));
        // A stop before the first fragment: stopped, no position.
        let r = scrub_paced(
            dir.path(),
            &inv,
            DigestKind::Md5Hex,
            &mut budget,
            None,
            || Pace::Stop,
            |_| {},
        );
        assert_eq!((r.checked, r.position, r.stopped), (0, None, true));
    }
}
