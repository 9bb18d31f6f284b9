//! Fragment deletion on a declared storage device: `<dir>/<fid>` and `<dir>/<fid>.digest`.
//! File names are built from the integer id, so no request text ever becomes a path.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use nodewarden_shared::ops::{FragmentOutcome, FragmentResult, Outcome};

/// Deletes each fragment and its digest in `dir`, on the blocking pool (unlink can stall on a
/// busy disk). A missing file counts as already deleted; a missing folder fails every fragment
/// (an unmounted disk must not look like success).
pub async fn delete_fragments(device_id: u32, dir: PathBuf, ids: Vec<u64>) -> Outcome {
    let results = tokio::task::spawn_blocking(move || delete_in(&dir, &ids)).await;
    match results {
        Ok(results) => Outcome::Fragments { device_id, results },
        Err(e) => Outcome::Refused {
            reason: format!("deleting on device {device_id}: {e}"),
        },
    }
}

fn delete_in(dir: &Path, ids: &[u64]) -> Vec<FragmentResult> {
    if !dir.is_dir() {
        let why = format!("fragment folder {} is missing", dir.display());
        return ids
            .iter()
            .map(|&fragment_id| FragmentResult {
                fragment_id,
                outcome: FragmentOutcome::Failed(why.clone()),
            })
            .collect();
    }
    ids.iter()
        .map(|&fragment_id| FragmentResult {
            fragment_id,
            outcome: delete_one(dir, fragment_id),
        })
        .collect()
}

fn delete_one(dir: &Path, fragment_id: u64) -> FragmentOutcome {
    let name = fragment_id.to_string();
    let mut removed = false;
    let mut errors = Vec::new();
    for path in [dir.join(&name), dir.join(format!("{name}.digest"))] {
        match std::fs::remove_file(&path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    if !errors.is_empty() {
        FragmentOutcome::Failed(errors.join("; "))
    } else if removed {
        FragmentOutcome::Deleted
    } else {
        FragmentOutcome::AlreadyAbsent
    }
}
