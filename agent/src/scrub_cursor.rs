//! The scrub's cursor file, one per storage device in the fragment task's state directory
//! (`[fragments] state_dir`): where the current scrub pass stopped (the last fragment id it
//! handled, what it checked and found so far) and when the last complete pass ended with its
//! verdict, so that an agent restarted mid-scrub resumes after the cursor instead of starting
//! over, and keeps the last verdict and schedule across restarts.
//!
//! The file is JSON (`format: "nodewarden-scrub-cursor/1"`, the corrupt sets as base64 of
//! roaring's portable serialization), written atomically: a temporary file in the same folder,
//! `fsync`, `rename`, then the folder is synced. A file that cannot be parsed, names another
//! device or another digest algorithm is refused by [`load`] with a [`CursorError`]; the task
//! logs it and starts a fresh pass (never a panic).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::fragments::DigestKind;
use nodewarden_shared::fragments::{bitmap_bytes, bitmap_from_bytes};

/// The `format` field every cursor file carries.
pub const FORMAT: &str = "nodewarden-scrub-cursor/1";

/// A cursor file larger than this is not read (a corrupt set of every id of a device is
/// ~1.3 MB of base64; this leaves room for pathological id spreads).
pub const MAX_CURSOR_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("scrub cursor {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scrub cursor {}: not a cursor file: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("scrub cursor {}: {what}", path.display())]
    Foreign { path: PathBuf, what: String },
}

/// The state of one device's scrub, as kept in its cursor file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScrubCursor {
    pub device_id: u32,
    pub digest: DigestKind,
    /// The last pass that read every fragment.
    pub last_complete: Option<CompletePass>,
    /// The pass under way, if one is.
    pub pass: Option<PassProgress>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompletePass {
    /// Unix seconds when it ended.
    pub finished: u64,
    pub checked: u64,
    pub corrupt: RoaringBitmap,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PassProgress {
    /// Unix seconds when it started.
    pub started: u64,
    /// The last fragment id handled (checked or unreadable): the pass resumes after it; `None`
    /// before the first.
    pub position: Option<u32>,
    /// Fragments checked so far in this pass (before and after restarts).
    pub checked: u64,
    /// Bytes read so far in this pass.
    pub bytes: u64,
    /// Fragments found corrupt so far in this pass.
    pub corrupt: RoaringBitmap,
}

/// The file's JSON form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorFile {
    format: String,
    device_id: u32,
    digest: DigestKind,
    last_complete: Option<CompleteFile>,
    pass: Option<PassFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteFile {
    finished: u64,
    checked: u64,
    corrupt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PassFile {
    started: u64,
    position: Option<u32>,
    checked: u64,
    bytes: u64,
    corrupt: String,
}

fn encode_set(set: &RoaringBitmap) -> String {
    base64::engine::general_purpose::STANDARD.encode(bitmap_bytes(set))
}

fn decode_set(text: &str) -> Option<RoaringBitmap> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    bitmap_from_bytes("corrupt", &bytes).ok()
}

/// The cursor file of `device_id` in `state_dir`.
pub fn cursor_path(state_dir: &Path, device_id: u32) -> PathBuf {
    state_dir.join(format!("device-{device_id}.cursor"))
}

/// Reads `device_id`'s cursor from `state_dir`: `Ok(None)` when there is none yet; an error when
/// the file cannot be read, is not a cursor, or is another device's or another algorithm's.
pub fn load(
    state_dir: &Path,
    device_id: u32,
    digest: DigestKind,
) -> Result<Option<ScrubCursor>, CursorError> {
    use std::io::Read as _;
    let path = cursor_path(state_dir, device_id);
    let io = |source| CursorError::Io {
        path: path.clone(),
        source,
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut text = Vec::new();
    file.take(MAX_CURSOR_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(io)?;
    let foreign = |what: String| CursorError::Foreign {
        path: path.clone(),
        what,
    };
    if text.len() as u64 > MAX_CURSOR_BYTES {
        return Err(foreign(format!("larger than {MAX_CURSOR_BYTES} bytes")));
    }
    let raw: CursorFile = serde_json::from_slice(&text).map_err(|source| CursorError::Parse {
        path: path.clone(),
        source,
    })?;
    if raw.format != FORMAT {
        return Err(foreign(format!(
            "format {:?}, expected {FORMAT:?}",
            raw.format
        )));
    }
    if raw.device_id != device_id {
        return Err(foreign(format!(
            "written for device {}, not {device_id}",
            raw.device_id
        )));
    }
    if raw.digest != digest {
        return Err(foreign(format!(
            "written with digest {:?}, the device now uses {digest:?}",
            raw.digest
        )));
    }
    let set = |text: &str, field: &str| {
        decode_set(text).ok_or_else(|| foreign(format!("{field}: not a base64 roaring bitmap")))
    };
    let last_complete = match raw.last_complete {
        Some(c) => Some(CompletePass {
            finished: c.finished,
            checked: c.checked,
            corrupt: set(&c.corrupt, "last_complete.corrupt")?,
        }),
        None => None,
    };
    let pass = match raw.pass {
        Some(p) => Some(PassProgress {
            started: p.started,
            position: p.position,
            checked: p.checked,
            bytes: p.bytes,
            corrupt: set(&p.corrupt, "pass.corrupt")?,
        }),
        None => None,
    };
    Ok(Some(ScrubCursor {
        device_id,
        digest,
        last_complete,
        pass,
    }))
}

/// Writes `cursor` to its file in `state_dir` atomically (temporary file, fsync, rename, folder
/// fsync), creating `state_dir` if needed.
pub fn save(state_dir: &Path, cursor: &ScrubCursor) -> Result<(), CursorError> {
    let path = cursor_path(state_dir, cursor.device_id);
    let tmp = state_dir.join(format!(".device-{}.cursor.tmp", cursor.device_id));
    let raw = CursorFile {
        format: FORMAT.to_string(),
        device_id: cursor.device_id,
        digest: cursor.digest,
        last_complete: cursor.last_complete.as_ref().map(|c| CompleteFile {
            finished: c.finished,
            checked: c.checked,
            corrupt: encode_set(&c.corrupt),
        }),
        pass: cursor.pass.as_ref().map(|p| PassFile {
            started: p.started,
            position: p.position,
            checked: p.checked,
            bytes: p.bytes,
            corrupt: encode_set(&p.corrupt),
        }),
    };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(state_dir)?;
        let mut file = std::fs::File::create(&tmp)?;
        // Serializing plain structs of strings and integers cannot fail.
        let text = serde_json::to_vec(&raw).map_err(std::io::Error::other)?;
        file.write_all(&text)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(state_dir)?.sync_all()
    };
    write().map_err(|source| CursorError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor() -> ScrubCursor {
        ScrubCursor {
            device_id: 7,
            digest: DigestKind::Md5Hex,
            last_complete: Some(CompletePass {
                finished: 1_700_000_000,
                checked: 10,
                corrupt: [3u32, 9].into_iter().collect(),
            }),
            pass: Some(PassProgress {
                started: 1_700_000_100,
                position: Some(4_000_000_000),
                checked: 5,
                bytes: 12_345,
                corrupt: [1u32].into_iter().collect(),
            }),
        }
    }

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        assert_eq!(load(&state, 7, DigestKind::Md5Hex).unwrap(), None);
        save(&state, &cursor()).unwrap();
        assert_eq!(load(&state, 7, DigestKind::Md5Hex).unwrap(), Some(cursor()));
        let mut next = cursor();
        next.pass = None;
        save(&state, &next).unwrap();
        assert_eq!(load(&state, 7, DigestKind::Md5Hex).unwrap(), Some(next));
        // Only the cursor remains: the temporary file was renamed over it.
        let names: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["device-7.cursor".to_string()]);
    }

    #[test]
    fn corrupt_or_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let path = cursor_path(state, 7);
        for (text, want) in [
            ("", "not a cursor file"),
            ("{\"format\":", "not a cursor file"),
            ("\u{0}\u{1}garbage", "not a cursor file"),
            (
                "{\"format\":\"other/1\",\"device_id\":7,\"digest\":\"md5-hex\",\
                 \"last_complete\":null,\"pass\":null}",
                "format \"other/1\"",
            ),
            (
                "{\"format\":\"nodewarden-scrub-cursor/1\",\"device_id\":7,\"digest\":\"md5-hex\",\
                 \"last_complete\":null,\"pass\":{\"started\":1,\"position\":2,\"checked\":3,\
                 \"bytes\":4,\"corrupt\":\"!!\"}}",
                "pass.corrupt: not a base64 roaring bitmap",
            ),
            (
                "{\"format\":\"nodewarden-scrub-cursor/1\",\"device_id\":7,\"digest\":\"md5-hex\",\
                 \"last_complete\":null,\"pass\":{\"started\":1,\"position\":-2,\"checked\":3,\
                 \"bytes\":4,\"corrupt\":\"\"}}",
                "not a cursor file",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = load(state, 7, DigestKind::Md5Hex).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e} !~ {want}");
            assert!(e.contains("device-7.cursor"), "{e} names the file");
        }
        // Another device's cursor (copied over), another algorithm's.
        save(state, &cursor()).unwrap();
        std::fs::rename(&path, cursor_path(state, 8)).unwrap();
        let e = load(state, 8, DigestKind::Md5Hex).unwrap_err().to_string();
        assert!(e.contains("written for device 7, not 8"), "{e}");
        save(state, &cursor()).unwrap();
        let e = load(state, 7, DigestKind::Sha256Hex)
            .unwrap_err()
            .to_string();
        assert!(e.contains("digest Md5Hex"), "{e}");
        // A folder where the file should be: an I/O error, not a panic.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(
            load(state, 7, DigestKind::Md5Hex),
            Err(CursorError::Io { .. })
        ));
        assert!(matches!(
            save(state, &cursor()),
            Err(CursorError::Io { .. })
        ));
    }
}
