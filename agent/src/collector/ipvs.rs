//! `ipvs`: IP Virtual Server totals from /proc/net/ip_vs_stats and per-backend connections and
//! weights from /proc/net/ip_vs, as node_exporter 1.12.1 reads them through procfs 0.21.1.
//! Backends are summed over the labels `--collector.ipvs.backend-labels` keeps (all six by
//! default), so dropping a label merges the backends that differed only by it.
//!
//! No ip_vs_stats (the ip_vs module not loaded) is `NoData`, remembered for the hotplug epoch;
//! ip_vs_stats present but ip_vs unreadable fails the collection after the totals, as there.
//! Both files are kept open (two reads per scrape). procfs's quirks are kept: a firewall-mark
//! service has an empty `local_address`, port 0 and its mark as printed (`%08X`); a service line
//! of another protocol (SCTP) is not recognised, so its backends count under the service before
//! it. Decision: a backend or service line procfs would reject (a bad address, a non-number)
//! fails the whole collection there; here it is counted as a malformed line and skipped (with
//! the backends of a skipped service). Backend samples are sorted by their label values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use clap::Command;

use super::source::{Absence, SourceFile};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "ipvs",
    default_enabled: true,
    flags,
    build,
};

const BACKEND_LABELS: &str = "collector.ipvs.backend-labels";

/// Every backend label, in node_exporter's order.
const ALL_LABELS: [&str; 6] = [
    "local_address",
    "local_port",
    "remote_address",
    "remote_port",
    "proto",
    "local_mark",
];

fn flags(command: Command) -> Command {
    command.arg(
        clap::Arg::new(BACKEND_LABELS)
            .long(BACKEND_LABELS)
            .default_value("local_address,local_port,remote_address,remote_port,proto,local_mark")
            .help("Comma separated list for IPVS backend stats labels."),
    )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let labels = parse_labels(ctx.flag(BACKEND_LABELS).unwrap_or_default()).map_err(|reason| {
        BuildError::Flag {
            flag: BACKEND_LABELS.to_string(),
            reason,
        }
    })?;
    Ok(Box::new(IpvsCollector::new(labels)))
}

/// node_exporter's `parseIpvsLabels`: the known labels named, in canonical order (as indices
/// into [`ALL_LABELS`]); unknown ones are an error listing them sorted.
fn parse_labels(flag: &str) -> Result<Vec<usize>, String> {
    let named: Vec<&str> = flag.split(',').filter(|l| !l.is_empty()).collect();
    let mut unknown: Vec<&str> = named
        .iter()
        .copied()
        .filter(|l| !ALL_LABELS.contains(l))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        unknown.dedup();
        return Err(format!(
            "unknown IPVS backend labels: {:?}",
            unknown.join(", ")
        ));
    }
    Ok((0..ALL_LABELS.len())
        .filter(|&i| named.contains(&ALL_LABELS[i]))
        .collect())
}

/// ip_vs_stats' cumulative totals: connections, incoming and outgoing packets and bytes.
pub fn parse_stats(text: &str) -> Option<[u64; 5]> {
    // procfs: SplitN(text, "\n", 4) must give 4 parts; the third holds the totals, in hex.
    let mut lines = text.splitn(4, '\n');
    let (_, _, totals) = (lines.next()?, lines.next()?, lines.next()?);
    lines.next()?;
    let mut out = [0u64; 5];
    let mut fields = totals.split_ascii_whitespace();
    for slot in &mut out {
        *slot = u64::from_str_radix(fields.next()?, 16).ok()?;
    }
    fields.next().is_none().then_some(out)
}

/// procfs's `parseIPPort`: `0A000A64:0050` or `[2001:0db8:…:0080]:0050`, the address as Go's
/// `net.IP.String()` prints it.
fn parse_ip_port(s: &str) -> Option<(String, u16)> {
    let ip: IpAddr = match s.len() {
        13 => {
            let raw = u32::from_str_radix(s.get(..8)?, 16).ok()?;
            if !s.get(..8)?.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            IpAddr::V4(Ipv4Addr::from(raw))
        }
        46 => IpAddr::V6(s.get(1..40)?.parse::<Ipv6Addr>().ok()?),
        _ => return None,
    };
    let port = s.get(s.len() - 4..)?;
    if !port.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    Some((go_ip_string(ip), port))
}

/// Go prints an IPv4-mapped IPv6 address as dotted quad.
fn go_ip_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// One real server line with its service's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    /// Label values in [`ALL_LABELS`] order.
    pub labels: [String; 6],
    pub weight: u64,
    pub active: u64,
    pub inactive: u64,
}

/// Parses /proc/net/ip_vs as procfs does; a line procfs would reject is passed to `malformed`
/// and skipped, as are the backends of a service line skipped so.
pub fn parse_backends(text: &str, mut malformed: impl FnMut(&str), out: &mut Vec<Backend>) {
    out.clear();
    // local_address, local_port, proto, local_mark of the current service; `None` after a
    // rejected service line.
    let mut service: Option<(String, String, String, String)> =
        Some((String::new(), "0".into(), String::new(), String::new()));
    for line in text.lines() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let Some(&first) = fields.first() else {
            continue;
        };
        if first == "IP" || first == "Prot" || fields.get(1) == Some(&"RemoteAddress:Port") {
            continue;
        }
        match first {
            "TCP" | "UDP" if fields.len() >= 2 => match parse_ip_port(fields[1]) {
                Some((address, port)) => {
                    service = Some((address, port.to_string(), first.into(), String::new()))
                }
                None => {
                    malformed(line);
                    service = None;
                }
            },
            "FWM" if fields.len() >= 2 => {
                service = Some((String::new(), "0".into(), first.into(), fields[1].into()))
            }
            "->" if fields.len() >= 6 => {
                let Some((local_address, local_port, proto, mark)) = &service else {
                    continue;
                };
                let parsed = (|| {
                    let (remote, remote_port) = parse_ip_port(fields[1])?;
                    Some(Backend {
                        weight: fields[3].parse().ok()?,
                        active: fields[4].parse().ok()?,
                        inactive: fields[5].parse().ok()?,
                        labels: [
                            local_address.clone(),
                            local_port.clone(),
                            remote,
                            remote_port.to_string(),
                            proto.clone(),
                            mark.clone(),
                        ],
                    })
                })();
                match parsed {
                    Some(backend) => out.push(backend),
                    None => malformed(line),
                }
            }
            _ => {}
        }
    }
}

struct IpvsCollector {
    labels: Vec<usize>,
    label_names: Vec<&'static str>,
    stats: SourceFile,
    absent: Absence,
    backends_file: SourceFile,
    buf: String,
    backends: Vec<Backend>,
    /// Label values (selected labels only) and summed (active, inactive, weight).
    sums: Vec<(Vec<String>, [u64; 3])>,
}

impl IpvsCollector {
    fn new(labels: Vec<usize>) -> Self {
        IpvsCollector {
            label_names: labels.iter().map(|&i| ALL_LABELS[i]).collect(),
            labels,
            stats: SourceFile::proc("net/ip_vs_stats"),
            absent: Absence::default(),
            backends_file: SourceFile::proc("net/ip_vs"),
            buf: String::new(),
            backends: Vec::new(),
            sums: Vec::new(),
        }
    }
}

impl Collector for IpvsCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let (stats, buf) = (&mut self.stats, &mut self.buf);
        if !self.absent.read(ctx, || stats.read_into(ctx.paths, buf))? {
            return Err(CollectorError::NoData);
        }
        let totals = parse_stats(&self.buf).ok_or_else(|| CollectorError::Parse {
            path: self.stats.display_path().to_path_buf(),
            reason: "ip_vs_stats corrupt".into(),
        })?;
        let families = [
            (
                "node_ipvs_connections_total",
                "The total number of connections made.",
            ),
            (
                "node_ipvs_incoming_packets_total",
                "The total number of incoming packets.",
            ),
            (
                "node_ipvs_outgoing_packets_total",
                "The total number of outgoing packets.",
            ),
            (
                "node_ipvs_incoming_bytes_total",
                "The total amount of incoming data.",
            ),
            (
                "node_ipvs_outgoing_bytes_total",
                "The total amount of outgoing data.",
            ),
        ];
        for ((name, help), value) in families.into_iter().zip(totals) {
            out.counter(name, help, value as f64)?;
        }

        self.backends_file.read_into(ctx.paths, &mut self.buf)?;
        let path = self.backends_file.display_path().to_path_buf();
        parse_backends(
            &self.buf,
            |line| ctx.malformed(&path, line),
            &mut self.backends,
        );
        self.sums.clear();
        for backend in &self.backends {
            let key = self.labels.iter().map(|&i| &backend.labels[i]);
            let slot = match self.sums.iter().position(|(k, _)| k.iter().eq(key.clone())) {
                Some(slot) => slot,
                None => {
                    self.sums.push((key.cloned().collect(), [0; 3]));
                    self.sums.len() - 1
                }
            };
            let sum = &mut self.sums[slot].1;
            sum[0] = sum[0].wrapping_add(backend.active);
            sum[1] = sum[1].wrapping_add(backend.inactive);
            sum[2] = sum[2].wrapping_add(backend.weight);
        }
        if self.sums.is_empty() {
            return Ok(());
        }
        self.sums.sort_by(|a, b| a.0.cmp(&b.0));
        let families = [
            (
                "node_ipvs_backend_connections_active",
                "The current active connections by local and remote address.",
            ),
            (
                "node_ipvs_backend_connections_inactive",
                "The current inactive connections by local and remote address.",
            ),
            (
                "node_ipvs_backend_weight",
                "The current backend weight by local and remote address.",
            ),
        ];
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(self.labels.len());
        for (i, (name, help)) in families.into_iter().enumerate() {
            let mut f = out.family(name, help, Kind::Gauge)?;
            for (values, sums) in &self.sums {
                labels.clear();
                labels.extend(
                    self.label_names
                        .iter()
                        .copied()
                        .zip(values.iter().map(String::as_str)),
                );
                f.sample(&labels, sums[i] as f64)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::testing::{assert_renders_golden, build_with, fixture, render};

    #[test]
    fn golden() {
        assert_renders_golden("hw-network", "ipvs", |paths| {
            build_with(&REGISTRATION, &[], paths)
        });
    }

    #[test]
    fn fewer_labels_sum_backends() {
        let paths = Paths::fixture(&fixture("hw-network"));
        let collector = build_with(
            &REGISTRATION,
            &["--collector.ipvs.backend-labels=proto,,local_port"],
            &paths,
        );
        let text = render("ipvs", collector, paths);
        assert!(
            text.contains("node_ipvs_backend_weight{local_port=\"80\",proto=\"TCP\"} 6\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "node_ipvs_backend_connections_active{local_port=\"0\",proto=\"FWM\"} 57\n"
            )
        );
    }

    #[test]
    fn label_flag_semantics() {
        assert_eq!(parse_labels("proto,local_address").unwrap(), [0, 4]);
        assert_eq!(parse_labels("").unwrap(), Vec::<usize>::new());
        assert_eq!(
            parse_labels("zeta,proto,alpha").unwrap_err(),
            "unknown IPVS backend labels: \"alpha, zeta\""
        );
    }

    #[test]
    fn addresses_print_as_go_does() {
        assert_eq!(
            parse_ip_port("0A000A64:0050"),
            Some(("10.0.10.100".into(), 80))
        );
        assert_eq!(
            parse_ip_port("[2001:0db8:0000:0000:0000:0000:0000:0080]:01BB"),
            Some(("2001:db8::80".into(), 443))
        );
        assert_eq!(
            parse_ip_port("[0000:0000:0000:0000:0000:ffff:0a00:0001]:0050"),
            Some(("10.0.0.1".into(), 80))
        );
        assert_eq!(parse_ip_port("0A000A6G:0050"), None);
        assert_eq!(parse_ip_port("10.0.0.1:80"), None);
    }

    #[test]
    fn malformed_lines_and_unknown_protocols() {
        let text = "IP Virtual Server version 1.2.1 (size=4096)\n\
            Prot LocalAddress:Port Scheduler Flags\n\
            \x20 -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n\
            TCP  0A000A64:0050 wlc\n\
            \x20 -> 0A000B01:0050      Masq    1      2          3\n\
            \x20 -> 0A000B02:0050      Masq    x      2          3\n\
            SCTP 0A000A64:0B59 rr\n\
            \x20 -> 0A000B03:0B59      Masq    1      5          6\n\
            TCP  0A00ZZ64:0050 wlc\n\
            \x20 -> 0A000B04:0050      Masq    1      7          8\n";
        let mut bad = Vec::new();
        let mut backends = Vec::new();
        parse_backends(text, |l| bad.push(l.trim().to_string()), &mut backends);
        assert_eq!(bad.len(), 2, "{bad:?}");
        // The SCTP service's backend counts under the TCP service before it, as in procfs.
        assert_eq!(backends.len(), 2);
        assert_eq!(backends[1].labels[2], "10.0.11.3");
        assert_eq!(backends[1].labels[4], "TCP");
    }

    #[test]
    fn stats_and_absence() {
        assert_eq!(parse_stats("a\nb\n 1 2 3 4 5\n"), Some([1, 2, 3, 4, 5]));
        assert_eq!(parse_stats("a\nb\n 1 2 3 4 5"), None);
        assert_eq!(parse_stats("a\nb\n 1 2 3 4\n"), None);
        let dir = tempfile::tempdir().unwrap();
        let text = render(
            "ipvs",
            Box::new(IpvsCollector::new(vec![0])),
            Paths::fixture(dir.path()),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"ipvs\"} 0"));
        assert!(!text.contains("node_ipvs"));
    }
}
