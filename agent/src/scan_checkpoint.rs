//! The scan's checkpoint file, one per storage device in the fragment task's state directory
//! (`[fragments] state_dir`, beside the scrub cursors): how far the device's running inventory
//! scan got and what it found up to there, so that an agent restarted mid-scan continues after
//! the last checkpoint instead of stat'ing every fragment again (10 M fragments take ~34 min at
//! the default budget).
//!
//! The scan stats fragments in ascending id order (`fragments::scan_from`), whatever order
//! `readdir` lists them in, so "the ids up to `position`" is a stable prefix across restarts.
//! The file is an append-only log, written in O(fragments) in total rather than rewritten whole
//! at every checkpoint (a whole partial inventory of 10 M fragments is ~60 MB):
//!
//! - a header line of JSON, written atomically when a scan starts (temporary file, `fsync`,
//!   `rename`, folder `fsync`): `{"format":"nodewarden-scan-checkpoint/1","device_id":7,
//!   "dir":"/srv/f7","started":1700000000}`;
//! - then one segment per checkpoint (at most every [`CHECKPOINT_EVERY`]), appended and
//!   `fsync`ed: `u32` LE body length, the MD5 of the body (16 bytes), the body: `u32` LE
//!   `position` (the last id stat'ed) then an `InventoryDelta` wire form whose `set`, `sizes`
//!   and `recent` are the fragments found in (previous position, position].
//!
//! A segment is all or nothing: a short or mismatching last segment is an append a crash
//! interrupted, and [`load`] stops before it (the writer truncates it away when it continues).
//! A header that does not parse, names another format, device or folder, or a whole segment
//! whose content is invalid (ids outside its range, another device) makes [`load`] refuse the
//! file with a [`CheckpointError`]; the task logs it and scans from the start (never a panic).
//! The file is removed once the scan's inventory is published.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use md5::{Digest as _, Md5};
use nodewarden_shared::fragments::{DeviceInventory, InventoryDelta};
use serde::{Deserialize, Serialize};

use crate::fragments::{FragmentFile, PartialScan};

/// The `format` field of every checkpoint's header.
pub const FORMAT: &str = "nodewarden-scan-checkpoint/1";
/// How often a running scan appends a segment: what a crash makes it stat again at most.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// A header line longer than this is not a checkpoint's.
const MAX_HEADER: u64 = 64 * 1024;
/// A segment body larger than this is refused (a segment holds a few seconds of stats).
const MAX_SEGMENT: u32 = 64 << 20;
/// Bytes before a segment's body: its length and its MD5.
const FRAME_HEAD: usize = 4 + 16;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("scan checkpoint {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scan checkpoint {}: not a checkpoint header: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("scan checkpoint {}: {what}", path.display())]
    Foreign { path: PathBuf, what: String },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    device_id: u32,
    dir: String,
    started: u64,
}

/// An unfinished scan read back from its checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    /// Unix seconds when the scan first started.
    pub started: u64,
    /// The ids up to `partial.position` and their state.
    pub partial: PartialScan,
    /// The file's length up to the end of its last whole segment (where appends continue).
    valid_len: u64,
}

/// The checkpoint file of `device_id` in `state_dir`.
pub fn checkpoint_path(state_dir: &Path, device_id: u32) -> PathBuf {
    state_dir.join(format!("device-{device_id}.scan"))
}

/// Removes `device_id`'s checkpoint (its scan completed); none is fine.
pub fn remove(state_dir: &Path, device_id: u32) -> Result<(), CheckpointError> {
    let path = checkpoint_path(state_dir, device_id);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CheckpointError::Io { path, source }),
    }
}

/// Reads `device_id`'s checkpoint from `state_dir`: `Ok(None)` when there is none (or it holds
/// no segment yet); an error when it cannot be read, is not a checkpoint, or is another
/// device's or folder's. Memory: the partial inventory (at most the final one's size) plus one
/// segment.
pub fn load(
    state_dir: &Path,
    device_id: u32,
    dir: &Path,
) -> Result<Option<Resumed>, CheckpointError> {
    let path = checkpoint_path(state_dir, device_id);
    let io = |source| CheckpointError::Io {
        path: path.clone(),
        source,
    };
    let foreign = |what: String| CheckpointError::Foreign {
        path: path.clone(),
        what,
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    (&mut reader)
        .take(MAX_HEADER)
        .read_until(b'\n', &mut line)
        .map_err(io)?;
    if line.last() != Some(&b'\n') {
        return Err(foreign("no header line".into()));
    }
    let header: Header =
        serde_json::from_slice(&line).map_err(|source| CheckpointError::Parse {
            path: path.clone(),
            source,
        })?;
    if header.format != FORMAT {
        return Err(foreign(format!(
            "format {:?}, expected {FORMAT:?}",
            header.format
        )));
    }
    if header.device_id != device_id {
        return Err(foreign(format!(
            "written for device {}, not {device_id}",
            header.device_id
        )));
    }
    let folder = dir.display().to_string();
    if header.dir != folder {
        return Err(foreign(format!(
            "written for folder {:?}, the device now uses {folder:?}",
            header.dir
        )));
    }
    let mut valid_len = line.len() as u64;
    let mut inv = DeviceInventory {
        device_id,
        ..Default::default()
    };
    let mut position: Option<u32> = None;
    let mut body = Vec::new();
    loop {
        let mut head = [0u8; FRAME_HEAD];
        if !read_full(&mut reader, &mut head).map_err(io)? {
            break;
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if !(4..=MAX_SEGMENT).contains(&len) {
            // A length no writer makes: the tail of an interrupted append.
            break;
        }
        body.resize(len as usize, 0);
        if !read_full(&mut reader, &mut body).map_err(io)? || Md5::digest(&body)[..] != head[4..] {
            break;
        }
        let at = valid_len;
        let bad = |what: &str| foreign(format!("segment at byte {at}: {what}"));
        let end = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
        let seg = InventoryDelta::decode(&body[4..]).map_err(|e| bad(&e.to_string()))?;
        if seg.device_id != device_id {
            return Err(bad(&format!("of device {}", seg.device_id)));
        }
        if position.is_some_and(|p| end <= p) {
            return Err(bad("its position does not follow the previous one"));
        }
        let in_range = seg
            .set
            .min()
            .is_none_or(|min| position.is_none_or(|p| min > p))
            && seg.set.max().is_none_or(|max| max <= end);
        if !in_range || !seg.removed.is_empty() {
            return Err(bad("ids outside its range"));
        }
        for id in &seg.set {
            inv.present.push(id);
        }
        inv.sizes.extend_from_slice(&seg.sizes);
        inv.recent |= &seg.recent;
        position = Some(end);
        valid_len += (FRAME_HEAD + body.len()) as u64;
    }
    Ok(position.map(|position| Resumed {
        started: header.started,
        partial: PartialScan {
            position,
            inventory: inv,
        },
        valid_len,
    }))
}

/// Fills `buf` from `r`: `false` at a clean or short end of file (an interrupted append).
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A running scan's checkpoint: fed every fragment stat'ed in ascending id order
/// ([`Writer::record`]), it appends a segment at most every [`CHECKPOINT_EVERY`]. Holds only
/// the fragments since the last segment.
pub struct Writer {
    path: PathBuf,
    file: File,
    device_id: u32,
    every: Duration,
    last: Instant,
    pending: InventoryDelta,
    position: Option<u32>,
}

impl Writer {
    /// Starts `device_id`'s checkpoint for a scan of `dir` started at `started` (Unix
    /// seconds), replacing any earlier one atomically; creates `state_dir` if needed.
    pub fn create(
        state_dir: &Path,
        device_id: u32,
        dir: &Path,
        started: u64,
    ) -> Result<Writer, CheckpointError> {
        let path = checkpoint_path(state_dir, device_id);
        let tmp = state_dir.join(format!(".device-{device_id}.scan.tmp"));
        let header = Header {
            format: FORMAT.to_string(),
            device_id,
            dir: dir.display().to_string(),
            started,
        };
        let write = || -> std::io::Result<File> {
            std::fs::create_dir_all(state_dir)?;
            let mut file = File::create(&tmp)?;
            // Serializing a struct of strings and integers cannot fail.
            let mut text = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
            text.push(b'\n');
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(state_dir)?.sync_all()?;
            Ok(file)
        };
        let file = write().map_err(|source| CheckpointError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Writer::over(path, file, device_id, None))
    }

    /// Continues the checkpoint `resumed` was read from: anything after its last whole segment
    /// (an interrupted append) is cut off, and new segments follow.
    pub fn resume(
        state_dir: &Path,
        device_id: u32,
        resumed: &Resumed,
    ) -> Result<Writer, CheckpointError> {
        let path = checkpoint_path(state_dir, device_id);
        let open = || -> std::io::Result<File> {
            let file = std::fs::OpenOptions::new().append(true).open(&path)?;
            file.set_len(resumed.valid_len)?;
            file.sync_all()?;
            Ok(file)
        };
        let file = open().map_err(|source| CheckpointError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Writer::over(
            path,
            file,
            device_id,
            Some(resumed.partial.position),
        ))
    }

    fn over(path: PathBuf, file: File, device_id: u32, position: Option<u32>) -> Writer {
        Writer {
            path,
            file,
            device_id,
            every: CHECKPOINT_EVERY,
            last: Instant::now(),
            pending: InventoryDelta {
                device_id,
                ..Default::default()
            },
            position,
        }
    }

    /// Fragment `id` was stat'ed (`None`: gone); ids come in ascending order, each after the
    /// last one recorded. Appends a segment when the last one is [`CHECKPOINT_EVERY`] old.
    pub fn record(&mut self, id: u32, file: Option<FragmentFile>) -> Result<(), CheckpointError> {
        if self.position.is_some_and(|p| id <= p) {
            return Ok(());
        }
        if let Some(f) = file {
            self.pending.set.push(id);
            self.pending.sizes.push(f.size);
            if f.recent {
                self.pending.recent.push(id);
            }
        }
        self.position = Some(id);
        if self.last.elapsed() >= self.every {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends what was recorded since the last segment, if anything.
    pub fn flush(&mut self) -> Result<(), CheckpointError> {
        self.last = Instant::now();
        let Some(position) = self.position else {
            return Ok(());
        };
        let io = |source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        };
        let pending = std::mem::replace(
            &mut self.pending,
            InventoryDelta {
                device_id: self.device_id,
                ..Default::default()
            },
        );
        let wire = pending.encode().map_err(|e| io(std::io::Error::other(e)))?;
        let mut body = Vec::with_capacity(4 + wire.len());
        body.extend_from_slice(&position.to_le_bytes());
        body.extend_from_slice(&wire);
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&l| l <= MAX_SEGMENT)
            .ok_or_else(|| io(std::io::Error::other("segment too large")))?;
        let mut frame = Vec::with_capacity(FRAME_HEAD + body.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&Md5::digest(&body));
        frame.extend_from_slice(&body);
        self.file.write_all(&frame).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    /// Sets how often segments are appended (tests).
    pub fn with_every(mut self, every: Duration) -> Writer {
        self.every = every;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(bits: &roaring::RoaringBitmap) -> Vec<u32> {
        bits.iter().collect()
    }

    fn file(size: u32, recent: bool) -> Option<FragmentFile> {
        Some(FragmentFile {
            size,
            digest: true,
            recent,
        })
    }

    fn write_some(state: &Path, dir: &Path) -> Writer {
        let mut w = Writer::create(state, 7, dir, 1_700_000_000)
            .unwrap()
            .with_every(Duration::from_secs(3600));
        w.record(10, file(100, false)).unwrap();
        w.record(11, None).unwrap();
        w.record(12, file(120, true)).unwrap();
        w.flush().unwrap();
        w.record(20, file(200, false)).unwrap();
        w.flush().unwrap();
        w
    }

    #[test]
    fn round_trip_and_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let (state, dir) = (tmp.path().join("state"), Path::new("/srv/f7"));
        assert_eq!(load(&state, 7, dir).unwrap(), None);
        let mut w = write_some(&state, dir);
        // Recorded after the last segment: not in the file yet.
        w.record(30, file(300, false)).unwrap();
        let r = load(&state, 7, dir).unwrap().unwrap();
        assert_eq!(r.started, 1_700_000_000);
        assert_eq!(r.partial.position, 20);
        assert_eq!(ids(&r.partial.inventory.present), vec![10, 12, 20]);
        assert_eq!(r.partial.inventory.sizes, vec![100, 120, 200]);
        assert_eq!(ids(&r.partial.inventory.recent), vec![12]);
        assert_eq!(r.partial.inventory.device_id, 7);
        drop(w);
        // A crash mid-append: a torn segment after the last whole one is not read, and the
        // resumed writer cuts it off before appending.
        let path = checkpoint_path(&state, 7);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let r = load(&state, 7, dir).unwrap().unwrap();
        assert_eq!(r.partial.position, 20);
        let mut w = Writer::resume(&state, 7, &r).unwrap();
        w.record(15, file(1, false)).unwrap(); // at or before the position: ignored
        w.record(21, file(210, false)).unwrap();
        w.flush().unwrap();
        let r = load(&state, 7, dir).unwrap().unwrap();
        assert_eq!(r.partial.position, 21);
        assert_eq!(ids(&r.partial.inventory.present), vec![10, 12, 20, 21]);
        assert_eq!(r.partial.inventory.sizes, vec![100, 120, 200, 210]);
        // A segment whose checksum does not match (a write torn inside): the prefix before it.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load(&state, 7, dir).unwrap().unwrap().partial.position, 20);
        // A header without segments yet: nothing to resume.
        Writer::create(&state, 7, dir, 5).unwrap();
        assert_eq!(load(&state, 7, dir).unwrap(), None);
        // Removed once complete; removing again is fine.
        remove(&state, 7).unwrap();
        assert!(!path.exists());
        remove(&state, 7).unwrap();
        // Only the checkpoint ever lived there: the temporary file was renamed over it.
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
    }

    #[test]
    fn corrupt_or_foreign_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (state, dir) = (tmp.path(), Path::new("/srv/f7"));
        let path = checkpoint_path(state, 7);
        for (text, want) in [
            (&b""[..], "no header line"),
            (&b"{\"format\":"[..], "no header line"),
            (&b"\x00\x01garbage\n"[..], "not a checkpoint header"),
            (
                &b"{\"format\":\"other/1\",\"device_id\":7,\"dir\":\"/srv/f7\",\"started\":1}\n"[..],
                "format \"other/1\"",
            ),
            (
                &b"{\"format\":\"nodewarden-scan-checkpoint/1\",\"device_id\":7,\"dir\":\"/srv/f7\",\
                  \"started\":-1}\n"[..],
                "not a checkpoint header",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = load(state, 7, dir).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e} !~ {want}");
            assert!(e.contains("device-7.scan"), "{e} names the file");
        }
        // Another device's checkpoint (copied over), another folder's.
        drop(write_some(state, dir));
        std::fs::rename(&path, checkpoint_path(state, 8)).unwrap();
        let e = load(state, 8, dir).unwrap_err().to_string();
        assert!(e.contains("written for device 7, not 8"), "{e}");
        drop(write_some(state, dir));
        let e = load(state, 7, Path::new("/srv/other"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("written for folder \"/srv/f7\""), "{e}");
        // A whole segment (checksum right) whose content is wrong: refused, not half-used.
        let header = std::fs::read(&path).unwrap();
        let header_len = header.iter().position(|&b| b == b'\n').unwrap() + 1;
        let mut bad = header[..header_len].to_vec();
        let segment = |position: u32, set: &[u32], device: u32| {
            let delta = InventoryDelta {
                device_id: device,
                set: set.iter().copied().collect(),
                sizes: vec![1; set.len()],
                ..Default::default()
            };
            let mut body = position.to_le_bytes().to_vec();
            body.extend(delta.encode().unwrap());
            let mut frame = (body.len() as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(&Md5::digest(&body));
            frame.extend(body);
            frame
        };
        for (frames, want) in [
            (vec![segment(5, &[6], 7)], "ids outside its range"),
            (
                vec![segment(5, &[1], 7), segment(5, &[], 7)],
                "does not follow",
            ),
            (
                vec![segment(5, &[1], 7), segment(9, &[4], 7)],
                "ids outside its range",
            ),
            (vec![segment(5, &[1], 8)], "of device 8"),
        ] {
            bad.truncate(header_len);
            bad.extend(frames.concat());
            std::fs::write(&path, &bad).unwrap();
            let e = load(state, 7, dir).unwrap_err().to_string();
            assert!(e.contains(want), "{e} !~ {want}");
        }
        // Body of a valid checksum but not a delta at all.
        bad.truncate(header_len);
        let body = [1u8, 0, 0, 0, 0xff, 0xff, 0xff];
        bad.extend((body.len() as u32).to_le_bytes());
        bad.extend(Md5::digest(body));
        bad.extend(body);
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            load(state, 7, dir),
            Err(CheckpointError::Foreign { .. })
        ));
        // A folder where the file should be: an I/O error, not a panic.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(
            load(state, 7, dir),
            Err(CheckpointError::Io { .. })
        ));
        assert!(matches!(
            Writer::create(state, 7, dir, 1),
            Err(CheckpointError::Io { .. })
        ));
    }
}
