//! `nfs`: NFS client statistics from /proc/net/rpc/nfs, as node_exporter 1.5 reports them
//! (procedure counts labelled with procfs's Go field names as `method`).

use super::source::read_into;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "nfs",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(NfsCollector::default()))
}

const V2: [&str; 18] = [
    "Null", "GetAttr", "SetAttr", "Root", "Lookup", "ReadLink", "Read", "WrCache", "Write",
    "Create", "Remove", "Rename", "Link", "SymLink", "MkDir", "RmDir", "ReadDir", "FsStat",
];

const V3: [&str; 22] = [
    "Null",
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

const V4: [&str; 59] = [
    "Null",
    "Read",
    "Write",
    "Commit",
    "Open",
    "OpenConfirm",
    "OpenNoattr",
    "OpenDowngrade",
    "Close",
    "Setattr",
    "FsInfo",
    "Renew",
    "SetClientID",
    "SetClientIDConfirm",
    "Lock",
    "Lockt",
    "Locku",
    "Access",
    "Getattr",
    "Lookup",
    "LookupRoot",
    "Remove",
    "Rename",
    "Link",
    "Symlink",
    "Create",
    "Pathconf",
    "StatFs",
    "ReadLink",
    "ReadDir",
    "ServerCaps",
    "DelegReturn",
    "GetACL",
    "SetACL",
    "FsLocations",
    "ReleaseLockowner",
    "Secinfo",
    "FsidPresent",
    "ExchangeID",
    "CreateSession",
    "DestroySession",
    "Sequence",
    "GetLeaseTime",
    "ReclaimComplete",
    // The kernel counts LAYOUTGET before GETDEVICEINFO (enum nfsprocedures4's order), but
    // node_exporter 1.12 (prometheus/procfs 0.17+) names the first GetDeviceInfo and the
    // second LayoutGet; a drop-in names them as it does (docs/agent.md).
    "GetDeviceInfo",
    "LayoutGet",
    "LayoutCommit",
    "LayoutReturn",
    "SecinfoNoName",
    "TestStateID",
    "FreeStateID",
    "GetDeviceList",
    "BindConnToSession",
    "DestroyClientID",
    "Seek",
    "Allocate",
    "DeAllocate",
    "LayoutStats",
    "Clone",
];

/// Everything node_exporter reports from the file; absent lines leave zeros, as in procfs.
#[derive(Debug, Clone, PartialEq)]
pub struct NfsStats {
    /// udp, tcp, tcp connections.
    pub network: [u64; 3],
    /// rpcs, retransmissions, auth refreshes.
    pub rpc: [u64; 3],
    pub v2: [u64; 18],
    pub v3: [u64; 22],
    pub v4: [u64; 59],
}

/// `procN <count> <values…>`: the values when the count matches and there are at least `min`.
fn proc_values(values: &[u64], min: usize) -> Option<&[u64]> {
    let (&count, rest) = values.split_first()?;
    (rest.len() as u64 == count && rest.len() >= min).then_some(rest)
}

fn fill(slots: &mut [u64], values: &[u64]) {
    for (slot, v) in slots.iter_mut().zip(values) {
        *slot = *v;
    }
}

/// Parses /proc/net/rpc/nfs; lines that do not fit are passed to `malformed` and skipped.
pub fn parse_nfs(text: &str, mut malformed: impl FnMut(&str)) -> NfsStats {
    let mut stats = NfsStats {
        network: [0; 3],
        rpc: [0; 3],
        v2: [0; 18],
        v3: [0; 22],
        v4: [0; 59],
    };
    let mut values = Vec::with_capacity(64);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(label) = fields.next() else {
            continue;
        };
        values.clear();
        let mut ok = true;
        for f in fields {
            match f.parse::<u64>() {
                Ok(v) => values.push(v),
                Err(_) => ok = false,
            }
        }
        let good = ok
            && match label {
                "net" if values.len() == 4 => {
                    fill(&mut stats.network, &values[1..]);
                    true
                }
                "rpc" if values.len() == 3 => {
                    fill(&mut stats.rpc, &values);
                    true
                }
                "proc2" => proc_values(&values, 18)
                    .map(|v| fill(&mut stats.v2, v))
                    .is_some(),
                "proc3" => proc_values(&values, 22)
                    .map(|v| fill(&mut stats.v3, v))
                    .is_some(),
                // Older kernels have fewer v4 operations: the rest stay zero.
                "proc4" => proc_values(&values, 0)
                    .map(|v| fill(&mut stats.v4, v))
                    .is_some(),
                _ => false,
            };
        if !good {
            malformed(line);
        }
    }
    stats
}

#[derive(Default)]
struct NfsCollector {
    buf: String,
    /// /proc/net/rpc/nfs exists once the NFS client is loaded.
    absence: super::source::Absence,
}

impl Collector for NfsCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let path = ctx.paths.proc("net/rpc/nfs");
        if !self.absence.read(ctx, || read_into(&path, &mut self.buf))? {
            return Err(CollectorError::NoData);
        }
        let s = parse_nfs(&self.buf, |line| ctx.malformed(&path, line));
        let mut f = out.family(
            "node_nfs_packets_total",
            "Total NFSd network packets (sent+received) by protocol type.",
            Kind::Counter,
        )?;
        f.sample(&[("protocol", "udp")], s.network[0] as f64)?;
        f.sample(&[("protocol", "tcp")], s.network[1] as f64)?;
        out.counter(
            "node_nfs_connections_total",
            "Total number of NFSd TCP connections.",
            s.network[2] as f64,
        )?;
        out.counter(
            "node_nfs_rpcs_total",
            "Total number of RPCs performed.",
            s.rpc[0] as f64,
        )?;
        out.counter(
            "node_nfs_rpc_retransmissions_total",
            "Number of RPC transmissions performed.",
            s.rpc[1] as f64,
        )?;
        out.counter(
            "node_nfs_rpc_authentication_refreshes_total",
            "Number of RPC authentication refreshes performed.",
            s.rpc[2] as f64,
        )?;
        let mut f = out.family(
            "node_nfs_requests_total",
            "Number of NFS procedures invoked.",
            Kind::Counter,
        )?;
        let versions: [(&str, &[&str], &[u64]); 3] =
            [("2", &V2, &s.v2), ("3", &V3, &s.v3), ("4", &V4, &s.v4)];
        for (proto, methods, values) in versions {
            for (method, value) in methods.iter().zip(values) {
                f.sample(&[("proto", proto), ("method", method)], *value as f64)?;
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
        assert_renders_golden("basic", "nfs", |_| Box::new(NfsCollector::default()));
    }

    /// A pNFS client: the kernel's LAYOUTGET position (44) is served as 1.12 names it.
    #[test]
    fn pnfs_client_names_layout_counts_as_node_exporter_1_12() {
        assert_renders_golden("storage", "nfs", |_| Box::new(NfsCollector::default()));
        let text = crate::collector::testing::render(
            "nfs",
            Box::new(NfsCollector::default()),
            crate::collector::Paths::fixture(&crate::collector::testing::fixture("storage")),
        );
        assert!(
            text.contains("node_nfs_requests_total{proto=\"4\",method=\"GetDeviceInfo\"} 18402"),
            "{text}"
        );
        assert!(
            text.contains("node_nfs_requests_total{proto=\"4\",method=\"LayoutGet\"} 12"),
            "{text}"
        );
    }

    #[test]
    fn malformed_and_short_lines() {
        let mut bad = Vec::new();
        let s = parse_nfs(
            "net 1 2 3\nrpc 10 1 0\nproc2 3 1 2 3\nproc4 2 7 8\nweird 1\n",
            |l| bad.push(l.to_string()),
        );
        assert_eq!(bad, ["net 1 2 3", "proc2 3 1 2 3", "weird 1"]);
        assert_eq!(s.rpc, [10, 1, 0]);
        assert_eq!(&s.v4[..3], &[7, 8, 0]);
    }
}
