//! `nfsd`: NFS server statistics from /proc/net/rpc/nfsd, as node_exporter 1.12.1 reports them
//! through procfs 0.21.1: reply cache, file handles, bytes, threads, read-ahead cache, network and
//! RPC counts, and `node_nfsd_requests_total{proto,method}` for NFSv2, v3 and the v4 operations
//! (the Go field names as `method`, `wdeleg_getattr` as method `WdelegGetattr`). A version the
//! kernel does not serve (NFSv2 on kernels built without it) is reported as zeros, as there.
//!
//! No /proc/net/rpc/nfsd (nfsd not loaded) is `NoData`, remembered for the hotplug epoch; the
//! file is kept open otherwise (one read per scrape). Decision: a line procfs would reject (an
//! unknown key, a wrong field count, a non-number) fails the whole collection there; here it is
//! counted as a malformed line and its figures stay zero, and the rest is reported.

use super::source::{Absence, SourceFile};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "nfsd",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(NfsdCollector::default()))
}

/// NFSv2 procedures reported, with their position in the `proc2` values (after the count).
const V2: [(&str, usize); 17] = [
    ("GetAttr", 1),
    ("SetAttr", 2),
    ("Root", 3),
    ("Lookup", 4),
    ("ReadLink", 5),
    ("Read", 6),
    ("WrCache", 7),
    ("Write", 8),
    ("Create", 9),
    ("Remove", 10),
    ("Rename", 11),
    ("Link", 12),
    ("SymLink", 13),
    ("MkDir", 14),
    ("RmDir", 15),
    ("ReadDir", 16),
    ("FsStat", 17),
];

/// NFSv3 procedures reported (every one but Null), in order from position 1 of `proc3`.
const V3: [&str; 21] = [
    "GetAttr",
    "SetAttr",
    "Lookup",
    "Access",
    "ReadLink",
    "Read",
    "Write",
    "Create",
    "MkDir",
    "SymLink",
    "MkNod",
    "Remove",
    "RmDir",
    "Rename",
    "Link",
    "ReadDir",
    "ReadDirPlus",
    "FsStat",
    "FsInfo",
    "PathConf",
    "Commit",
];

/// NFSv4 operations reported, with their operation number (position in `proc4ops`): procfs's
/// `V4Ops` fields, without PutPubFH and PutRootFH, which node_exporter does not report.
const V4: [(&str, usize); 35] = [
    ("Access", 3),
    ("Close", 4),
    ("Commit", 5),
    ("Create", 6),
    ("DelegPurge", 7),
    ("DelegReturn", 8),
    ("GetAttr", 9),
    ("GetFH", 10),
    ("Link", 11),
    ("Lock", 12),
    ("Lockt", 13),
    ("Locku", 14),
    ("Lookup", 15),
    ("LookupRoot", 16),
    ("Nverify", 17),
    ("Open", 18),
    ("OpenAttr", 19),
    ("OpenConfirm", 20),
    ("OpenDgrd", 21),
    ("PutFH", 22),
    ("Read", 25),
    ("ReadDir", 26),
    ("ReadLink", 27),
    ("Remove", 28),
    ("Rename", 29),
    ("Renew", 30),
    ("RestoreFH", 31),
    ("SaveFH", 32),
    ("SecInfo", 33),
    ("SetAttr", 34),
    ("SetClientID", 35),
    ("SetClientIDConfirm", 36),
    ("Verify", 37),
    ("Write", 38),
    // Only in kernels since 2.6 (40 operations): zero before, as in procfs.
    ("RelLockOwner", 39),
];

/// The figures node_exporter reports, zero for lines absent or rejected.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NfsdStats {
    /// rc: hits, misses, nocache.
    pub reply_cache: [u64; 3],
    pub fh_stale: u64,
    /// io: read, write.
    pub io: [u64; 2],
    pub threads: u64,
    /// ra: cache size, not found.
    pub read_ahead: [u64; 2],
    /// net: netcnt, udpcnt, tcpcnt, tcpconnect.
    pub net: [u64; 4],
    /// rpc: count, badcnt, badfmt, badauth, badclnt.
    pub rpc: [u64; 5],
    /// proc2 values after the count (18: Null first).
    pub v2: Vec<u64>,
    /// proc3 values after the count (22: Null first).
    pub v3: Vec<u64>,
    /// proc4ops values after the count, by operation number.
    pub v4_ops: Vec<u64>,
    pub wdeleg_getattr: u64,
}

/// Parses /proc/net/rpc/nfsd as procfs does; a line procfs would reject is passed to
/// `malformed` and skipped.
pub fn parse_nfsd(text: &str, mut malformed: impl FnMut(&str)) -> NfsdStats {
    let mut stats = NfsdStats::default();
    let mut values: Vec<u64> = Vec::with_capacity(80);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else {
            malformed(line);
            continue;
        };
        values.clear();
        let parsed = if key == "th" {
            // Only the thread count and the "full" count; the histogram is floats.
            fields.take(2).try_for_each(|f| {
                values.push(f.parse().ok()?);
                Some(())
            })
        } else {
            fields.try_for_each(|f| {
                values.push(f.parse().ok()?);
                Some(())
            })
        };
        if parsed.is_none() || values.is_empty() || !store(&mut stats, key, &values) {
            malformed(line);
        }
    }
    stats
}

/// A `proc<N>` line's values after the count, when the count matches and is at least `min`.
fn counted(values: &[u64], min: usize) -> Option<Vec<u64>> {
    let (&count, rest) = values.split_first()?;
    (count as usize == rest.len() && rest.len() >= min).then(|| rest.to_vec())
}

fn store(stats: &mut NfsdStats, key: &str, v: &[u64]) -> bool {
    fn exact<const N: usize>(v: &[u64]) -> Option<[u64; N]> {
        v.try_into().ok()
    }
    match key {
        "rc" => exact::<3>(v).map(|a| stats.reply_cache = a).is_some(),
        "fh" => exact::<5>(v).map(|a| stats.fh_stale = a[0]).is_some(),
        "io" => exact::<2>(v).map(|a| stats.io = a).is_some(),
        "th" => exact::<2>(v).map(|a| stats.threads = a[0]).is_some(),
        "ra" => exact::<12>(v)
            .map(|a| stats.read_ahead = [a[0], a[11]])
            .is_some(),
        "net" => exact::<4>(v).map(|a| stats.net = a).is_some(),
        "rpc" => exact::<5>(v).map(|a| stats.rpc = a).is_some(),
        "proc2" => counted(v, 18).map(|a| stats.v2 = a).is_some(),
        "proc3" => counted(v, 22).map(|a| stats.v3 = a).is_some(),
        // procfs checks it (exactly null and compound) though node_exporter reports neither.
        "proc4" => counted(v, 2).filter(|a| a.len() == 2).is_some(),
        "proc4ops" => counted(v, 39).map(|a| stats.v4_ops = a).is_some(),
        "wdeleg_getattr" => {
            stats.wdeleg_getattr = v[0];
            true
        }
        _ => false,
    }
}

struct NfsdCollector {
    file: SourceFile,
    absent: Absence,
    buf: String,
}

impl Default for NfsdCollector {
    fn default() -> Self {
        NfsdCollector {
            file: SourceFile::proc("net/rpc/nfsd"),
            absent: Absence::default(),
            buf: String::new(),
        }
    }
}

impl Collector for NfsdCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let (file, buf) = (&mut self.file, &mut self.buf);
        if !self.absent.read(ctx, || file.read_into(ctx.paths, buf))? {
            return Err(CollectorError::NoData);
        }
        let path = self.file.display_path().to_path_buf();
        let s = parse_nfsd(&self.buf, |line| ctx.malformed(&path, line));
        write(&s, out)?;
        Ok(())
    }
}

fn write(s: &NfsdStats, out: &mut MetricWriter<'_, '_>) -> Result<(), std::fmt::Error> {
    out.counter(
        "node_nfsd_reply_cache_hits_total",
        "Total number of NFSd Reply Cache hits (client lost server response).",
        s.reply_cache[0] as f64,
    )?;
    out.counter(
        "node_nfsd_reply_cache_misses_total",
        "Total number of NFSd Reply Cache an operation that requires caching (idempotent).",
        s.reply_cache[1] as f64,
    )?;
    out.counter(
        "node_nfsd_reply_cache_nocache_total",
        "Total number of NFSd Reply Cache non-idempotent operations (rename/delete/…).",
        s.reply_cache[2] as f64,
    )?;
    out.counter(
        "node_nfsd_file_handles_stale_total",
        "Total number of NFSd stale file handles",
        s.fh_stale as f64,
    )?;
    out.counter(
        "node_nfsd_disk_bytes_read_total",
        "Total NFSd bytes read.",
        s.io[0] as f64,
    )?;
    out.counter(
        "node_nfsd_disk_bytes_written_total",
        "Total NFSd bytes written.",
        s.io[1] as f64,
    )?;
    out.gauge(
        "node_nfsd_server_threads",
        "Total number of NFSd kernel threads that are running.",
        s.threads as f64,
    )?;
    out.gauge(
        "node_nfsd_read_ahead_cache_size_blocks",
        "How large the read ahead cache is in blocks.",
        s.read_ahead[0] as f64,
    )?;
    out.counter(
        "node_nfsd_read_ahead_cache_not_found_total",
        "Total number of NFSd read ahead cache not found.",
        s.read_ahead[1] as f64,
    )?;
    let mut f = out.family(
        "node_nfsd_packets_total",
        "Total NFSd network packets (sent+received) by protocol type.",
        Kind::Counter,
    )?;
    f.sample(&[("proto", "udp")], s.net[1] as f64)?;
    f.sample(&[("proto", "tcp")], s.net[2] as f64)?;
    out.counter(
        "node_nfsd_connections_total",
        "Total number of NFSd TCP connections.",
        s.net[3] as f64,
    )?;
    let mut f = out.family(
        "node_nfsd_rpc_errors_total",
        "Total number of NFSd RPC errors by error type.",
        Kind::Counter,
    )?;
    f.sample(&[("error", "fmt")], s.rpc[2] as f64)?;
    f.sample(&[("error", "auth")], s.rpc[3] as f64)?;
    f.sample(&[("error", "cInt")], s.rpc[4] as f64)?;
    out.counter(
        "node_nfsd_server_rpcs_total",
        "Total number of NFSd RPCs.",
        s.rpc[0] as f64,
    )?;
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0) as f64;
    let mut f = out.family(
        "node_nfsd_requests_total",
        "Total number NFSd Requests by method and protocol.",
        Kind::Counter,
    )?;
    for (method, i) in V2 {
        f.sample(&[("proto", "2"), ("method", method)], at(&s.v2, i))?;
    }
    for (i, method) in V3.iter().enumerate() {
        f.sample(&[("proto", "3"), ("method", method)], at(&s.v3, i + 1))?;
    }
    for (method, i) in V4 {
        f.sample(&[("proto", "4"), ("method", method)], at(&s.v4_ops, i))?;
    }
    f.sample(
        &[("proto", "4"), ("method", "WdelegGetattr")],
        s.wdeleg_getattr as f64,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-network", "nfsd", |_| Box::new(NfsdCollector::default()));
    }

    #[test]
    fn old_and_malformed_lines() {
        // A 2.6.18 server: NFSv2 served, 39 v4 operations (no RELEASE_LOCKOWNER), no wdeleg.
        let ops39: String = (0..39).map(|i| format!(" {i}")).collect();
        let text = format!(
            "rc 1 2 3\nfh 4 0 0 0 0\nio 5 6\nth 8 1 0.000 0.000\nra 32 1 2 3 4 5 6 7 8 9 10 11\n\
             net 7 1 6 2\nrpc 7 0 0 0 0\nproc2 18 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n\
             proc4ops 39{ops39}\nbogus 1\nrc x y z\nio 1 2 3\n\nproc3 23 1 2\n"
        );
        let mut bad = Vec::new();
        let s = parse_nfsd(&text, |l| bad.push(l.to_string()));
        assert_eq!(bad, ["bogus 1", "rc x y z", "io 1 2 3", "", "proc3 23 1 2"]);
        assert_eq!(s.reply_cache, [1, 2, 3]);
        assert_eq!(s.threads, 8);
        assert_eq!(s.read_ahead, [32, 11]);
        assert_eq!(s.io, [5, 6]);
        assert_eq!(s.v2[17], 17);
        assert_eq!(s.v4_ops.len(), 39);
        assert!(s.v3.is_empty());
    }

    #[test]
    fn no_nfsd_is_no_data() {
        let dir = tempfile::tempdir().unwrap();
        let text = render(
            "nfsd",
            Box::new(NfsdCollector::default()),
            Paths::fixture(dir.path()),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"nfsd\"} 0"));
        assert!(!text.contains("node_nfsd_"));
    }
}
