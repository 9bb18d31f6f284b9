//! `mountstats`: per-mount NFS client statistics from /proc/self/mountstats, as node_exporter
//! 1.12.1 reports them through procfs 0.21.1: bytes, events, per-operation counts and times,
//! and every `xprt:` transport (numbered from 0 in the `transport` label), labelled with the
//! export, the transport's protocol and the server address (`addr=` of the mount's super options
//! in /proc/self/mountinfo, whose entries come in the same order). As there, one mount of an
//! export through the same protocol and address is reported (the first); each mount point of
//! it has a `mountpoint_info`.
//!
//! Both files are kept open; mountinfo is read only when there is an NFS mount. procfs's
//! parsing is kept (statvers 1.0/1.1 transport lengths, UDP and RDMA transports padded to the
//! TCP layout, millisecond times modulo 2^53 divided by 1000). Decision: a mount whose
//! statistics procfs would reject (a wrong field count, a non-number) fails the whole collection
//! there; here that mount is counted as a malformed line and left out, and so is a mountinfo
//! line without its ` - ` separator (its mount then has an empty `mountaddr`).

use std::collections::HashSet;

use super::gosyntax::parse_go_duration;
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "mountstats",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(MountStatsCollector::default()))
}

/// The transport fields in procfs's layout (TCP 1.1 order): port, bind, connect, connect idle,
/// idle, sends, receives, bad xids, active, backlog, max slots, sending, pending.
pub const TRANSPORT_FIELDS: usize = 13;

#[derive(Debug, Clone, PartialEq)]
pub struct Transport {
    pub protocol: String,
    pub values: [u64; TRANSPORT_FIELDS],
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub name: String,
    /// requests, transmissions, major timeouts, bytes sent, bytes received, queue ms,
    /// response ms, request ms.
    pub values: [u64; 8],
}

/// One NFS mount with statistics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NfsMount {
    /// The mount's position among all mounts (its line in mountinfo).
    pub index: usize,
    pub device: String,
    pub mount_point: String,
    pub age_seconds: f64,
    pub bytes: [u64; 8],
    pub events: [u64; 27],
    pub operations: Vec<Operation>,
    pub transports: Vec<Transport>,
}

fn parse_u64s<const N: usize>(fields: &[&str]) -> Option<[u64; N]> {
    if fields.len() != N {
        return None;
    }
    let mut out = [0u64; N];
    for (slot, f) in out.iter_mut().zip(fields) {
        *slot = f.parse().ok()?;
    }
    Some(out)
}

/// procfs's `parseNFSTransportStats` for the fields after `xprt:`.
fn parse_transport(fields: &[&str], statvers: &str) -> Option<Transport> {
    let (&protocol, values) = fields.split_first()?;
    let length_ok = match (statvers, protocol) {
        ("1.0", "tcp") => values.len() == 10,
        ("1.0", "udp") => values.len() == 7,
        ("1.1", "tcp") => values.len() == 13,
        ("1.1", "udp") => values.len() == 10,
        // procfs fills a 31-slot array: more would not fit.
        ("1.1", "rdma") => (20..=31).contains(&values.len()),
        _ => false,
    };
    if !length_ok {
        return None;
    }
    let mut ns = [0u64; 31];
    for (slot, f) in ns.iter_mut().zip(values) {
        *slot = f.parse().ok()?;
    }
    let mut out = [0u64; TRANSPORT_FIELDS];
    match protocol {
        // No connect, connect idle time and idle time over UDP: zeros inserted after bind.
        "udp" => {
            out[..2].copy_from_slice(&ns[..2]);
            out[5..].copy_from_slice(&ns[2..10]);
        }
        "tcp" => out.copy_from_slice(&ns[..TRANSPORT_FIELDS]),
        // RDMA has no max slots, sending and pending queue figures: zeros in their place.
        _ => out[..10].copy_from_slice(&ns[..10]),
    }
    Some(Transport {
        protocol: protocol.to_string(),
        values: out,
    })
}

/// A mount's statistics lines after its `device` line, up to the blank line that ends them,
/// as procfs reads them; `None` when procfs would reject them.
fn parse_nfs_stats<'a>(
    lines: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
    statvers: &str,
    mount: &mut NfsMount,
) -> Option<()> {
    let mut ok = true;
    // Until a blank line or `per-op statistics`.
    for line in lines.by_ref() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let Some(&key) = fields.first() else { break };
        let rest = &fields[1..];
        match key {
            "age:" if !rest.is_empty() => match parse_go_duration(&format!("{}s", rest[0])) {
                Some(age) => mount.age_seconds = age.as_secs_f64(),
                None => ok = false,
            },
            "bytes:" if !rest.is_empty() => match parse_u64s::<8>(rest) {
                Some(bytes) => mount.bytes = bytes,
                None => ok = false,
            },
            "events:" if !rest.is_empty() => match parse_u64s::<27>(rest) {
                Some(events) => mount.events = events,
                None => ok = false,
            },
            "xprt:" if rest.len() >= 2 => match parse_transport(rest, statvers) {
                Some(t) => mount.transports.push(t),
                None => ok = false,
            },
            "opts:" if !rest.is_empty() => {}
            "opts:" | "age:" | "bytes:" | "events:" | "xprt:" => ok = false,
            "per-op" => break,
            _ => {}
        }
    }
    // The per-operation lines, up to a blank line (or, more leniently than procfs, the next
    // mount's device line).
    while let Some(line) = lines.next_if(|l| !l.trim_start().starts_with("device ")) {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let Some((&name, values)) = fields.split_first() else {
            break;
        };
        if values.len() < 8 {
            ok = false;
            continue;
        }
        let mut parsed = [0u64; 8];
        let mut valid = true;
        for (i, f) in values.iter().enumerate() {
            match f.parse::<u64>() {
                Ok(v) if i < 8 => parsed[i] = v,
                Ok(_) => {}
                Err(_) => valid = false,
            }
        }
        if !valid {
            ok = false;
            continue;
        }
        mount.operations.push(Operation {
            name: name.strip_suffix(':').unwrap_or(name).to_string(),
            values: parsed,
        });
    }
    ok.then_some(())
}

/// Parses /proc/self/mountstats: the NFS mounts with statistics. A mount procfs would reject is
/// passed (its device line) to `malformed` and left out.
pub fn parse_mountstats(text: &str, mut malformed: impl FnMut(&str)) -> Vec<NfsMount> {
    let mut mounts = Vec::new();
    let mut index = 0;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.first() != Some(&"device") {
            continue;
        }
        let this = index;
        index += 1;
        let well_formed = fields.len() >= 8
            && fields[2] == "mounted"
            && fields[3] == "on"
            && fields[5] == "with"
            && fields[6] == "fstype";
        if !well_formed {
            malformed(line);
            continue;
        }
        if fields.len() == 8 {
            // No statistics (not NFS).
            continue;
        }
        if fields[7] != "nfs" && fields[7] != "nfs4" {
            malformed(line);
            continue;
        }
        let statvers = fields[8].strip_prefix("statvers=").unwrap_or(fields[8]);
        let mut mount = NfsMount {
            index: this,
            device: fields[1].to_string(),
            mount_point: fields[4].to_string(),
            ..NfsMount::default()
        };
        match parse_nfs_stats(&mut lines, statvers, &mut mount) {
            Some(()) => mounts.push(mount),
            None => malformed(line),
        }
    }
    mounts
}

/// The `addr=` super option of the mountinfo line for each wanted mount index (ascending),
/// empty when absent. procfs splits options on `=` and keeps the second part.
fn mount_addresses(
    mountinfo: &str,
    wanted: &[usize],
    mut malformed: impl FnMut(&str),
) -> Vec<String> {
    let mut out = vec![String::new(); wanted.len()];
    let mut next = 0;
    for (i, line) in mountinfo.lines().enumerate() {
        let Some(&want) = wanted.get(next) else { break };
        if i < want {
            continue;
        }
        while wanted.get(next) == Some(&i) {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 10 || fields[fields.len() - 4] != "-" {
                malformed(line);
            } else if let Some(options) = fields.last() {
                for option in options.split(',') {
                    let mut parts = option.split('=');
                    if parts.next() == Some("addr") {
                        out[next] = parts.next().unwrap_or("").to_string();
                    }
                }
            }
            next += 1;
        }
    }
    out
}

/// The event counters reported: (metric, help, position in the `events:` line).
const EVENTS: [(&str, &str, usize); 26] = [
    (
        "node_mountstats_nfs_event_inode_revalidate_total",
        "Number of times cached inode attributes are re-validated from the server.",
        0,
    ),
    (
        "node_mountstats_nfs_event_dnode_revalidate_total",
        "Number of times cached dentry nodes are re-validated from the server.",
        1,
    ),
    (
        "node_mountstats_nfs_event_data_invalidate_total",
        "Number of times an inode cache is cleared.",
        2,
    ),
    (
        "node_mountstats_nfs_event_attribute_invalidate_total",
        "Number of times cached inode attributes are invalidated.",
        3,
    ),
    (
        "node_mountstats_nfs_event_vfs_open_total",
        "Number of times cached inode attributes are invalidated.",
        4,
    ),
    (
        "node_mountstats_nfs_event_vfs_lookup_total",
        "Number of times a directory lookup has occurred.",
        5,
    ),
    (
        "node_mountstats_nfs_event_vfs_access_total",
        "Number of times permissions have been checked.",
        6,
    ),
    (
        "node_mountstats_nfs_event_vfs_update_page_total",
        "Number of updates (and potential writes) to pages.",
        7,
    ),
    (
        "node_mountstats_nfs_event_vfs_read_page_total",
        "Number of pages read directly via mmap()'d files.",
        8,
    ),
    (
        "node_mountstats_nfs_event_vfs_read_pages_total",
        "Number of times a group of pages have been read.",
        9,
    ),
    (
        "node_mountstats_nfs_event_vfs_write_page_total",
        "Number of pages written directly via mmap()'d files.",
        10,
    ),
    (
        "node_mountstats_nfs_event_vfs_write_pages_total",
        "Number of times a group of pages have been written.",
        11,
    ),
    (
        "node_mountstats_nfs_event_vfs_getdents_total",
        "Number of times directory entries have been read with getdents().",
        12,
    ),
    (
        "node_mountstats_nfs_event_vfs_setattr_total",
        "Number of times directory entries have been read with getdents().",
        13,
    ),
    (
        "node_mountstats_nfs_event_vfs_flush_total",
        "Number of pending writes that have been forcefully flushed to the server.",
        14,
    ),
    (
        "node_mountstats_nfs_event_vfs_fsync_total",
        "Number of times fsync() has been called on directories and files.",
        15,
    ),
    (
        "node_mountstats_nfs_event_vfs_lock_total",
        "Number of times locking has been attempted on a file.",
        16,
    ),
    (
        "node_mountstats_nfs_event_vfs_file_release_total",
        "Number of times files have been closed and released.",
        17,
    ),
    (
        "node_mountstats_nfs_event_truncation_total",
        "Number of times files have been truncated.",
        19,
    ),
    (
        "node_mountstats_nfs_event_write_extension_total",
        "Number of times a file has been grown due to writes beyond its existing end.",
        20,
    ),
    (
        "node_mountstats_nfs_event_silly_rename_total",
        "Number of times a file was removed while still open by another process.",
        21,
    ),
    (
        "node_mountstats_nfs_event_short_read_total",
        "Number of times the NFS server gave less data than expected while reading.",
        22,
    ),
    (
        "node_mountstats_nfs_event_short_write_total",
        "Number of times the NFS server wrote less data than expected while writing.",
        23,
    ),
    (
        "node_mountstats_nfs_event_jukebox_delay_total",
        "Number of times the NFS server indicated EJUKEBOX; retrieving data from offline storage.",
        24,
    ),
    (
        "node_mountstats_nfs_event_pnfs_read_total",
        "Number of NFS v4.1+ pNFS reads.",
        25,
    ),
    (
        "node_mountstats_nfs_event_pnfs_write_total",
        "Number of NFS v4.1+ pNFS writes.",
        26,
    ),
];

/// What one scrape reports for a mount point or an export.
struct Report<'m> {
    mount: &'m NfsMount,
    protocol: &'m str,
    address: &'m str,
}

impl<'m> Report<'m> {
    fn labels(&self) -> [(&'static str, &'m str); 3] {
        [
            ("export", self.mount.device.as_str()),
            ("protocol", self.protocol),
            ("mountaddr", self.address),
        ]
    }
}

struct MountStatsCollector {
    mountstats: SourceFile,
    mountinfo: SourceFile,
    buf: String,
    info_buf: String,
}

impl Default for MountStatsCollector {
    fn default() -> Self {
        MountStatsCollector {
            mountstats: SourceFile::proc("self/mountstats"),
            mountinfo: SourceFile::proc("self/mountinfo"),
            buf: String::new(),
            info_buf: String::new(),
        }
    }
}

const OPERATION_FAMILIES: [(&str, &str); 8] = [
    (
        "node_mountstats_nfs_operations_requests_total",
        "Number of requests performed for a given operation.",
    ),
    (
        "node_mountstats_nfs_operations_transmissions_total",
        "Number of times an actual RPC request has been transmitted for a given operation.",
    ),
    (
        "node_mountstats_nfs_operations_major_timeouts_total",
        "Number of times a request has had a major timeout for a given operation.",
    ),
    (
        "node_mountstats_nfs_operations_sent_bytes_total",
        "Number of bytes sent for a given operation, including RPC headers and payload.",
    ),
    (
        "node_mountstats_nfs_operations_received_bytes_total",
        "Number of bytes received for a given operation, including RPC headers and payload.",
    ),
    (
        "node_mountstats_nfs_operations_queue_time_seconds_total",
        "Duration all requests spent queued for transmission for a given operation before they were sent, in seconds.",
    ),
    (
        "node_mountstats_nfs_operations_response_time_seconds_total",
        "Duration all requests took to get a reply back after a request for a given operation was transmitted, in seconds.",
    ),
    (
        "node_mountstats_nfs_operations_request_time_seconds_total",
        "Duration all requests took from when a request was enqueued to when it was completely handled for a given operation, in seconds.",
    ),
];

const BYTES_FAMILIES: [(&str, &str); 8] = [
    (
        "node_mountstats_nfs_read_bytes_total",
        "Number of bytes read using the read() syscall.",
    ),
    (
        "node_mountstats_nfs_write_bytes_total",
        "Number of bytes written using the write() syscall.",
    ),
    (
        "node_mountstats_nfs_direct_read_bytes_total",
        "Number of bytes read using the read() syscall in O_DIRECT mode.",
    ),
    (
        "node_mountstats_nfs_direct_write_bytes_total",
        "Number of bytes written using the write() syscall in O_DIRECT mode.",
    ),
    (
        "node_mountstats_nfs_total_read_bytes_total",
        "Number of bytes read from the NFS server, in total.",
    ),
    (
        "node_mountstats_nfs_total_write_bytes_total",
        "Number of bytes written to the NFS server, in total.",
    ),
    (
        "node_mountstats_nfs_read_pages_total",
        "Number of pages read directly via mmap()'d files.",
    ),
    (
        "node_mountstats_nfs_write_pages_total",
        "Number of pages written directly via mmap()'d files.",
    ),
];

/// Transport families: (name, help, kind, field in [`Transport::values`]).
const TRANSPORT_FAMILIES: [(&str, &str, Kind, usize); 10] = [
    (
        "node_mountstats_nfs_transport_bind_total",
        "Number of times the client has had to establish a connection from scratch to the NFS server.",
        Kind::Counter,
        1,
    ),
    (
        "node_mountstats_nfs_transport_connect_total",
        "Number of times the client has made a TCP connection to the NFS server.",
        Kind::Counter,
        2,
    ),
    (
        "node_mountstats_nfs_transport_idle_time_seconds",
        "Duration since the NFS mount last saw any RPC traffic, in seconds.",
        Kind::Gauge,
        4,
    ),
    (
        "node_mountstats_nfs_transport_sends_total",
        "Number of RPC requests for this mount sent to the NFS server.",
        Kind::Counter,
        5,
    ),
    (
        "node_mountstats_nfs_transport_receives_total",
        "Number of RPC responses for this mount received from the NFS server.",
        Kind::Counter,
        6,
    ),
    (
        "node_mountstats_nfs_transport_bad_transaction_ids_total",
        "Number of times the NFS server sent a response with a transaction ID unknown to this client.",
        Kind::Counter,
        7,
    ),
    (
        "node_mountstats_nfs_transport_backlog_queue_total",
        "Total number of items added to the RPC backlog queue.",
        Kind::Counter,
        9,
    ),
    (
        "node_mountstats_nfs_transport_maximum_rpc_slots",
        "Maximum number of simultaneously active RPC requests ever used.",
        Kind::Gauge,
        10,
    ),
    (
        "node_mountstats_nfs_transport_sending_queue_total",
        "Total number of items added to the RPC transmission sending queue.",
        Kind::Counter,
        11,
    ),
    (
        "node_mountstats_nfs_transport_pending_queue_total",
        "Total number of items added to the RPC transmission pending queue.",
        Kind::Counter,
        12,
    ),
];

/// 2^53: node_exporter reduces times modulo the float64 mantissa.
const MANTISSA: u64 = 9_007_199_254_740_992;

impl Collector for MountStatsCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.mountstats.read_into(ctx.paths, &mut self.buf)?;
        let path = self.mountstats.display_path().to_path_buf();
        let mounts = parse_mountstats(&self.buf, |line| ctx.malformed(&path, line));
        if mounts.is_empty() {
            return Ok(());
        }
        self.mountinfo.read_into(ctx.paths, &mut self.info_buf)?;
        let info_path = self.mountinfo.display_path().to_path_buf();
        let wanted: Vec<usize> = mounts.iter().map(|m| m.index).collect();
        let addresses = mount_addresses(&self.info_buf, &wanted, |line| {
            ctx.malformed(&info_path, line)
        });

        // node_exporter's deduplication: mount points by (export, protocol, address, mount
        // point), statistics by (export, protocol, address), the first transport's protocol
        // deciding.
        let mut infos: Vec<(&NfsMount, &str, &str)> = Vec::new();
        let mut reports: Vec<Report<'_>> = Vec::new();
        let mut seen_points: HashSet<(&str, &str, &str, &str)> = HashSet::new();
        let mut seen_devices: HashSet<(&str, &str, &str)> = HashSet::new();
        for (mount, address) in mounts.iter().zip(&addresses) {
            for transport in &mount.transports {
                let protocol = transport.protocol.as_str();
                let key = (
                    mount.device.as_str(),
                    protocol,
                    address.as_str(),
                    mount.mount_point.as_str(),
                );
                if seen_points.insert(key) {
                    infos.push((mount, protocol, address));
                }
                if !seen_devices.insert((mount.device.as_str(), protocol, address.as_str())) {
                    break;
                }
                reports.push(Report {
                    mount,
                    protocol,
                    address,
                });
            }
        }
        if infos.is_empty() {
            return Ok(());
        }
        let mut f = out.family(
            "node_mountstats_nfs_mountpoint_info",
            "Info metric for an NFS mountpoint.",
            Kind::Gauge,
        )?;
        for (mount, protocol, address) in &infos {
            f.sample(
                &[
                    ("export", &mount.device),
                    ("protocol", protocol),
                    ("mountaddr", address),
                    ("mountpoint", &mount.mount_point),
                ],
                1.0,
            )?;
        }
        let mut f = out.family(
            "node_mountstats_nfs_age_seconds_total",
            "The age of the NFS mount in seconds.",
            Kind::Counter,
        )?;
        for r in &reports {
            f.sample(&r.labels(), r.mount.age_seconds)?;
        }
        for (i, (name, help)) in BYTES_FAMILIES.iter().enumerate() {
            let mut f = out.family(name, help, Kind::Counter)?;
            for r in &reports {
                f.sample(&r.labels(), r.mount.bytes[i] as f64)?;
            }
        }
        let mut index = super::IndexLabels::default();
        index.ensure(
            reports
                .iter()
                .map(|r| r.mount.transports.len())
                .max()
                .unwrap_or(0),
        );
        for (name, help, kind, field) in TRANSPORT_FAMILIES {
            let mut f = out.family(name, help, kind)?;
            for r in &reports {
                for (t, transport) in r.mount.transports.iter().enumerate() {
                    let mut value = transport.values[field];
                    if field == 4 {
                        value %= MANTISSA;
                    }
                    f.sample(
                        &[
                            ("export", &r.mount.device),
                            ("protocol", r.protocol),
                            ("mountaddr", r.address),
                            ("transport", index.get(t)),
                        ],
                        value as f64,
                    )?;
                }
            }
        }
        if reports.iter().any(|r| !r.mount.operations.is_empty()) {
            for (i, (name, help)) in OPERATION_FAMILIES.iter().enumerate() {
                let mut f = out.family(name, help, Kind::Counter)?;
                for r in &reports {
                    for op in &r.mount.operations {
                        let raw = op.values[i];
                        let value = if i >= 5 {
                            (raw % MANTISSA) as f64 / 1000.0
                        } else {
                            raw as f64
                        };
                        f.sample(
                            &[
                                ("export", &r.mount.device),
                                ("protocol", r.protocol),
                                ("mountaddr", r.address),
                                ("operation", &op.name),
                            ],
                            value,
                        )?;
                    }
                }
            }
        }
        for (name, help, i) in EVENTS {
            let mut f = out.family(name, help, Kind::Counter)?;
            for r in &reports {
                f.sample(&r.labels(), r.mount.events[i] as f64)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::testing::assert_renders_golden;

    #[test]
    fn golden() {
        assert_renders_golden("hw-network", "mountstats", |_| {
            Box::new(MountStatsCollector::default())
        });
    }

    #[test]
    fn reads_this_hosts_mounts() {
        let text = crate::collector::testing::render(
            "mountstats",
            Box::new(MountStatsCollector::default()),
            crate::collector::Paths::default(),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"mountstats\"} 1"));
    }

    #[test]
    fn transports_are_padded_as_procfs_does() {
        let udp = parse_transport(
            &"udp 832 0 6 6 0 6 0 6 0 0".split(' ').collect::<Vec<_>>(),
            "1.1",
        )
        .unwrap();
        assert_eq!(udp.values, [832, 0, 0, 0, 0, 6, 6, 0, 6, 0, 6, 0, 0]);
        let old_tcp = parse_transport(
            &"tcp 1 2 3 4 5 6 7 8 9 10".split(' ').collect::<Vec<_>>(),
            "1.0",
        )
        .unwrap();
        assert_eq!(old_tcp.values, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0, 0]);
        let rdma: Vec<String> = std::iter::once("rdma".to_string())
            .chain((1..=27).map(|i| i.to_string()))
            .collect();
        let rdma: Vec<&str> = rdma.iter().map(String::as_str).collect();
        let rdma = parse_transport(&rdma, "1.1").unwrap();
        assert_eq!(rdma.values, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0, 0]);
        assert!(parse_transport(&["tcp", "1", "2"], "1.1").is_none());
        assert!(parse_transport(&["rdma", "1"], "1.0").is_none());
        assert!(parse_transport(&["tcp"; 14], "1.2").is_none());
    }

    #[test]
    fn malformed_mounts_are_left_out_and_indexed() {
        let text = "device rootfs mounted on / with fstype rootfs\n\
            device a:/x mounted on /x with fstype nfs statvers=1.1\n\
            \topts:\trw\n\
            \tage:\t10\n\
            \tbytes:\t1 2 3\n\
            \txprt:\ttcp 1 2 3 4 5 6 7 8 9 10 11 12 13\n\
            \tper-op statistics\n\
            \t        NULL: 0 0 0 0 0 0 0 0 0\n\
            \n\
            device b:/y mounted on /y with fstype nfs statvers=1.1\n\
            \tage:\t20\n\
            \txprt:\tudp 1 2 3 4 5 6 7 8 9 10\n\
            \tper-op statistics\n\
            \t        NULL: 1 2 3 4 5 6 7 8\n\
            \t     GETATTR: 1 2 3 4 5 6000 7000 8000 9\n\
            \n\
            device c mounted on /c with fstype cifs statvers=1.0\n\
            device odd line\n";
        let mut bad = Vec::new();
        let mounts = parse_mountstats(text, |l| bad.push(l.to_string()));
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert_eq!(mounts.len(), 1);
        let m = &mounts[0];
        assert_eq!(
            (m.index, m.device.as_str(), m.age_seconds),
            (2, "b:/y", 20.0)
        );
        assert_eq!(m.operations.len(), 2);
        assert_eq!(m.operations[1].name, "GETATTR");
        assert_eq!(m.operations[1].values[7], 8000);
        assert_eq!(m.transports[0].protocol, "udp");
    }

    #[test]
    fn addresses_by_mount_index() {
        let info = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
            2 1 0:5 / /x rw shared:3 - nfs a:/x rw,vers=3,addr=10.0.0.1\n\
            3 1 0:6 / /y rw - nfs b:/y rw,addr=fe80::1\n\
            broken\n";
        let mut bad = 0;
        let got = mount_addresses(info, &[1, 2, 3, 9], |_| bad += 1);
        assert_eq!(got, ["10.0.0.1", "fe80::1", "", ""]);
        assert_eq!(bad, 1);
    }
}
