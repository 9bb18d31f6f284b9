//! Benchmark: the agent's fragment inventory memory (issue 17's target: ≤ 64 MiB at 10 M
//! fragments on one device). Creates `--count` fragment files `<id>` (consecutive ids from
//! 1 000 000, no `.digest` files), empty or sparse files of `--size` bytes (no data blocks: the
//! size is what the inventory records, and a realistic one makes its wire form realistic), in
//! `--dir` (kept for a rerun unless `--clean`), then runs the
//! agent's own `fragments::scan` with no I/O budget and publishes the inventory as the fragment
//! task does (`Inventories::publish`), printing the process's peak resident memory (VmHWM,
//! /proc/self/status) before, after the scan, after the publish (what the task holds now: one
//! copy shared with the link), and with the wire encoding held beside it (what the task held
//! before: the decoded inventory and `DeviceInventory::encode()`). Between the publish and the
//! send, the next scan both ways: a `rescan` against the published inventory (what the task
//! does now) and a whole `scan` beside it (what it did before).
//!
//!     cargo build --release -p nodewarden-tests --bin bench_fragments
//!     target/release/bench_fragments --dir /var/tmp/frag-bench --count 1000000 --size 8388608

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nodewarden_agent::fragment_task::Inventories;
use nodewarden_agent::fragments::{IoBudget, rescan, scan};

/// `VmHWM` or `VmRSS` of this process, in KiB.
fn status_kib(field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))
}

/// Resets VmHWM to the current VmRSS (`echo 5 > /proc/self/clear_refs`), so the next stage's
/// peak is its own.
fn reset_peak() -> anyhow::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5").context("resetting VmHWM")
}

fn report(stage: &str) -> anyhow::Result<u64> {
    let hwm = status_kib("VmHWM")?;
    println!(
        "{stage:<40} VmHWM {:>8.1} MiB  VmRSS {:>8.1} MiB",
        hwm as f64 / 1024.0,
        status_kib("VmRSS")? as f64 / 1024.0
    );
    Ok(hwm)
}

fn main() -> anyhow::Result<()> {
    let mut dir = None;
    let mut count: u32 = 1_000_000;
    let mut clean = false;
    let mut size: u64 = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--count" => {
                count = args
                    .next()
                    .context("--count N")?
                    .parse()
                    .context("--count N")?
            }
            "--size" => {
                size = args
                    .next()
                    .context("--size BYTES")?
                    .parse()
                    .context("--size BYTES")?
            }
            "--clean" => clean = true,
            other => anyhow::bail!(
                "unknown argument {other:?} (--dir D --count N [--size BYTES] [--clean])"
            ),
        }
    }
    let dir = dir.context("--dir D (a scratch folder)")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let first = 1_000_000u32;
    let made = Instant::now();
    let mut created = 0u32;
    for id in first..first + count {
        let path = dir.join(id.to_string());
        let meta = std::fs::metadata(&path).ok();
        if meta.as_ref().is_none_or(|m| m.len() != size) {
            let file = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            file.set_len(size)
                .with_context(|| format!("sizing {}", path.display()))?;
            created += 1;
        }
    }
    println!(
        "{count} fragment files of {size} bytes in {} ({created} created or resized in {:.1?})",
        dir.display(),
        made.elapsed()
    );
    let base = report("before the scan")?;
    let started = Instant::now();
    let mut budget = IoBudget::new(0.0);
    let inv = scan(1, &dir, Duration::ZERO, &mut budget)
        .with_context(|| format!("scanning {}", dir.display()))?;
    let took = started.elapsed();
    anyhow::ensure!(
        inv.present.len() >= u64::from(count),
        "scan found {} fragments",
        inv.present.len()
    );
    println!(
        "scan of {} fragments in {took:.1?} (present {} B, no_digest {} B, sizes {} B serialized/held)",
        inv.present.len(),
        inv.present.serialized_size(),
        inv.no_digest.serialized_size(),
        inv.sizes.capacity() * 4
    );
    let after_scan = report("after the scan")?;
    let out = Arc::new(Inventories::default());
    out.publish(inv);
    let published = report("after publish (one copy, held by the task)")?;
    reset_peak()?;
    // The next scan as the task makes it now: a rescan against the published inventory, its
    // chunks compared under the lock, the delta applied in place.
    let started = Instant::now();
    let mut delta = nodewarden_shared::fragments::InventoryDelta {
        device_id: 1,
        ..Default::default()
    };
    let corrupt = roaring::RoaringBitmap::new();
    let listed = rescan(&dir, Duration::ZERO, &mut budget, |chunk| {
        out.diff_rescanned(1, chunk, &corrupt, &mut delta)
    })
    .with_context(|| format!("rescanning {}", dir.display()))?;
    let rescan_took = started.elapsed();
    let changed = delta.set.len() + delta.removed.len();
    out.publish_rescan(delta, &listed);
    drop(listed);
    let rescanned = report("after a rescan (now: no second copy)")?;
    println!("rescan in {rescan_took:.1?}, {changed} ids changed");
    reset_peak()?;
    // The scan before: a whole second inventory built while the first stays published.
    let second = scan(1, &dir, Duration::ZERO, &mut budget)
        .with_context(|| format!("scanning {}", dir.display()))?;
    let two = report("a whole scan beside it (the design before)")?;
    drop(second);
    reset_peak()?;
    let held = out.snapshot();
    // A send as the link makes it: one part at a time, each dropped once written.
    let mut sent = 0usize;
    for part in held[0].1.inventory.parts(1).context("encoding")? {
        sent += std::hint::black_box(part).data.len();
    }
    let sending = report("after a send part by part (now)")?;
    println!("sent {sent} bytes in parts");
    let encoded = held[0].1.inventory.encode().context("encoding")?;
    let both = report("with encode() beside it (the old design)")?;
    println!("encoded inventory: {} bytes", encoded.len());
    let per = |kib: u64| (kib.saturating_sub(base) as f64 * 1024.0) / f64::from(count);
    println!(
        "per fragment above the start: scan {:.2} B, published {:.2} B, rescan peak {:.2} B, scan beside it {:.2} B, send peak {:.2} B, decoded+encoded {:.2} B",
        per(after_scan),
        per(published),
        per(rescanned),
        per(two),
        per(sending),
        per(both)
    );
    println!(
        "extrapolated to 10 M fragments: rescan peak {:.1} MiB, whole scan beside the published one {:.1} MiB",
        per(rescanned) * 1e7 / 1048576.0,
        per(two) * 1e7 / 1048576.0
    );
    println!(
        "extrapolated to 10 M fragments: published {:.1} MiB, send peak {:.1} MiB, decoded+encoded {:.1} MiB (target 64 MiB)",
        per(published) * 1e7 / 1048576.0,
        per(sending) * 1e7 / 1048576.0,
        per(both) * 1e7 / 1048576.0
    );
    drop(encoded);
    if clean {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}
