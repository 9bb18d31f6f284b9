//! `qdisc`: statistics of every root queueing discipline over rtnetlink, as node_exporter
//! 1.12.1 reports them (ema/qdisc): one `RTM_GETQDISC` dump (strict checking asked for); a
//! qdisc whose parent is `TC_H_ROOT` is a root one, others (mq's children, ingress, clsact) are
//! left out; the counters are `TCA_STATS2`'s basic and queue statistics, overridden by the legacy
//! `TCA_STATS` the kernel sends after it (requeues only come from the former), packets being
//! their 32-bit count. Interface names come from the scrape's link dump (an unknown index is
//! "", as in 1.12.1). `--collector.qdisc.fixtures=<dir>` reads `<dir>/results.json` (ema/qdisc's
//! `QdiscInfo` array, Go's case-insensitive field names) instead, as 1.12.1 does.
//!
//! Decision: a qdisc message that does not decode is skipped and counted as malformed, where
//! 1.12.1 fails the whole collection (or panics, on a short statistics attribute). The
//! rtnetlink socket is kept between scrapes.

use std::path::{Path, PathBuf};

use clap::{Arg, Command};

use super::filter::{DeviceFilter, device_filter};
use super::netlink::{Qdisc, RouteSocket};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "qdisc",
    default_enabled: false,
    flags,
    build,
};

const FIXTURES: &str = "collector.qdisc.fixtures";
const DEVICE_INCLUDE: &str = "collector.qdisc.device-include";
const OLD_DEVICE_INCLUDE: &str = "collector.qdisk.device-include";
const DEVICE_EXCLUDE: &str = "collector.qdisc.device-exclude";
const OLD_DEVICE_EXCLUDE: &str = "collector.qdisk.device-exclude";

fn flags(command: Command) -> Command {
    command
        .arg(
            Arg::new(FIXTURES)
                .long(FIXTURES)
                .default_value("")
                .help("test fixtures to use for qdisc collector end-to-end testing"),
        )
        .arg(
            Arg::new(DEVICE_INCLUDE)
                .long(DEVICE_INCLUDE)
                .help("Regexp of qdisc devices to include (mutually exclusive to device-exclude)."),
        )
        .arg(
            Arg::new(OLD_DEVICE_INCLUDE)
                .long(OLD_DEVICE_INCLUDE)
                .help("DEPRECATED: Use collector.qdisc.device-include")
                .hide(true),
        )
        .arg(
            Arg::new(DEVICE_EXCLUDE)
                .long(DEVICE_EXCLUDE)
                .help("Regexp of qdisc devices to exclude (mutually exclusive to device-include)."),
        )
        .arg(
            Arg::new(OLD_DEVICE_EXCLUDE)
                .long(OLD_DEVICE_EXCLUDE)
                .help("DEPRECATED: Use collector.qdisc.device-exclude")
                .hide(true),
        )
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    let filter = device_filter(
        ctx,
        DEVICE_EXCLUDE,
        Some(OLD_DEVICE_EXCLUDE),
        DEVICE_INCLUDE,
        Some(OLD_DEVICE_INCLUDE),
    )?;
    let fixtures = ctx
        .flag(FIXTURES)
        .filter(|f| !f.is_empty())
        .map(|f| Path::new(f).join("results.json"));
    Ok(Box::new(QdiscCollector {
        filter,
        fixtures,
        socket: None,
        qdiscs: Vec::new(),
        rows: Vec::new(),
    }))
}

struct QdiscCollector {
    filter: DeviceFilter,
    fixtures: Option<PathBuf>,
    socket: Option<RouteSocket>,
    qdiscs: Vec<Qdisc>,
    /// (device, qdisc index) of this scrape's root qdiscs.
    rows: Vec<(String, usize)>,
}

/// The families in name order: (name, help, kind, value).
type Field = fn(&Qdisc) -> f64;
const FAMILIES: [(&str, &str, Kind, Field); 7] = [
    (
        "node_qdisc_backlog",
        "Number of bytes currently in queue to be sent.",
        Kind::Gauge,
        |q| f64::from(q.backlog),
    ),
    (
        "node_qdisc_bytes_total",
        "Number of bytes sent.",
        Kind::Counter,
        |q| q.bytes as f64,
    ),
    (
        "node_qdisc_current_queue_length",
        "Number of packets currently in queue to be sent.",
        Kind::Gauge,
        |q| f64::from(q.qlen),
    ),
    (
        "node_qdisc_drops_total",
        "Number of packets dropped.",
        Kind::Counter,
        |q| f64::from(q.drops),
    ),
    (
        "node_qdisc_overlimits_total",
        "Number of overlimit packets.",
        Kind::Counter,
        |q| f64::from(q.overlimits),
    ),
    (
        "node_qdisc_packets_total",
        "Number of packets sent.",
        Kind::Counter,
        |q| f64::from(q.packets),
    ),
    (
        "node_qdisc_requeues_total",
        "Number of packets dequeued, not transmitted, and requeued.",
        Kind::Counter,
        |q| f64::from(q.requeues),
    ),
];

/// ema/qdisc's `QdiscInfo` array from a fixtures file: (interface name, qdisc) pairs.
pub fn parse_fixtures(text: &str) -> Result<Vec<(String, Qdisc)>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let serde_json::Value::Array(items) = value else {
        if value.is_null() {
            return Ok(Vec::new());
        }
        return Err("not an array".into());
    };
    let mut out = Vec::new();
    for item in items {
        let serde_json::Value::Object(fields) = item else {
            return Err("not an object".into());
        };
        let mut name = String::new();
        let mut q = Qdisc::default();
        for (key, value) in &fields {
            // encoding/json matches field names case-insensitively; unknown ones are ignored.
            let key = key.to_ascii_lowercase();
            let string = || {
                value
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{key}: not a string"))
            };
            let number = |max: u64| {
                value
                    .as_u64()
                    .filter(|&v| v <= max)
                    .ok_or_else(|| format!("{key}: not an unsigned integer in range"))
            };
            let u32_field = || number(u64::from(u32::MAX)).map(|v| v as u32);
            match key.as_str() {
                "ifacename" => name = string()?,
                "kind" => q.kind = string()?,
                "parent" => q.parent = u32_field()?,
                "handle" => q.handle = u32_field()?,
                "bytes" => q.bytes = number(u64::MAX)?,
                "packets" => q.packets = u32_field()?,
                "drops" => q.drops = u32_field()?,
                "requeues" => q.requeues = u32_field()?,
                "overlimits" => q.overlimits = u32_field()?,
                "qlen" => q.qlen = u32_field()?,
                "backlog" => q.backlog = u32_field()?,
                "gcflows" | "throttled" | "flowsplimit" => {
                    number(u64::MAX)?;
                }
                _ => {}
            }
        }
        out.push((name, q));
    }
    Ok(out)
}

impl QdiscCollector {
    fn read(&mut self, ctx: &Context<'_>) -> Result<(), CollectorError> {
        self.rows.clear();
        if let Some(path) = &self.fixtures {
            let text = std::fs::read_to_string(path).map_err(|e| CollectorError::io(path, e))?;
            let parsed = parse_fixtures(&text).map_err(|reason| CollectorError::Parse {
                path: path.clone(),
                reason,
            })?;
            self.qdiscs.clear();
            for (name, q) in parsed {
                self.rows.push((name, self.qdiscs.len()));
                self.qdiscs.push(q);
            }
            return Ok(());
        }
        let source = Path::new("rtnetlink RTM_GETQDISC");
        if self.socket.is_none() {
            let socket = RouteSocket::open().map_err(|e| CollectorError::io(source, e))?;
            socket
                .set_strict_check()
                .map_err(|e| CollectorError::io(source, e))?;
            self.socket = Some(socket);
        }
        let socket = self.socket.as_mut().ok_or(CollectorError::NoData)?;
        let malformed = match socket.qdiscs(&mut self.qdiscs) {
            Ok(n) => n,
            Err(e) => {
                self.socket = None;
                return Err(CollectorError::io(source, e));
            }
        };
        for _ in 0..malformed {
            ctx.malformed(source, "qdisc message");
        }
        let links = ctx.links().ok_or_else(|| CollectorError::Parse {
            path: "rtnetlink RTM_GETLINK".into(),
            reason: "couldn't get interface names".into(),
        })?;
        for (i, q) in self.qdiscs.iter().enumerate() {
            let name = links
                .iter()
                .find(|l| l.index == q.ifindex)
                .map_or("", |l| l.name.as_str());
            self.rows.push((name.to_string(), i));
        }
        Ok(())
    }
}

impl Collector for QdiscCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        self.read(ctx)?;
        let qdiscs = &self.qdiscs;
        let filter = &self.filter;
        self.rows
            .retain(|(name, i)| qdiscs[*i].parent == 0 && !filter.ignored(name));
        if self.rows.is_empty() {
            return Ok(());
        }
        // Go sorts a family's samples by their label values: device, then kind.
        self.rows
            .sort_by(|a, b| (&a.0, &qdiscs[a.1].kind).cmp(&(&b.0, &qdiscs[b.1].kind)));
        for (name, help, kind, value) in FAMILIES {
            let mut f = out.family(name, help, kind)?;
            for (device, i) in &self.rows {
                let q = &qdiscs[*i];
                f.sample(&[("device", device), ("kind", &q.kind)], value(q))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::netlink::parse_qdisc;
    use crate::collector::testing::{assert_golden, fixture, render};

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(payload);
        a.resize((a.len() + 3) & !3, 0);
        a
    }

    fn tcmsg(ifindex: i32, handle: u32, parent: u32) -> Vec<u8> {
        let mut b = vec![0u8; 20];
        b[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        b[8..12].copy_from_slice(&handle.to_ne_bytes());
        b[12..16].copy_from_slice(&parent.to_ne_bytes());
        b
    }

    fn u32s(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    /// An fq_codel root qdisc as the kernel dumps it: TCA_KIND, TCA_OPTIONS, TCA_STATS2 (basic,
    /// rate estimator, queue, app), then the legacy TCA_STATS.
    fn fq_codel(stats_override: Option<u32>) -> Vec<u8> {
        let mut body = tcmsg(2, 0x8001_0000, u32::MAX);
        body.extend(attr(1, b"fq_codel\0"));
        body.extend(attr(2, &attr(1, &5000u32.to_ne_bytes())));
        let mut basic = 123_456_789_012u64.to_ne_bytes().to_vec();
        basic.extend(u32s(&[98_765, 0]));
        let mut stats2 = attr(1, &basic);
        stats2.extend(attr(2, &u32s(&[0, 0])));
        stats2.extend(attr(3, &u32s(&[3, 4500, 17, 2, 9])));
        stats2.extend(attr(4, &[0u8; 64]));
        body.extend(attr(7, &stats2));
        let mut legacy = 123_456_789_012u64.to_ne_bytes().to_vec();
        let drops = stats_override.unwrap_or(17);
        legacy.extend(u32s(&[98_765, drops, 9, 0, 0, 3, 4500]));
        body.extend(attr(3, &legacy));
        body
    }

    #[test]
    fn decodes_fq_codel_stats() {
        let q = parse_qdisc(&fq_codel(None)).unwrap();
        assert_eq!(
            q,
            Qdisc {
                ifindex: 2,
                handle: 0x8001_0000,
                parent: 0,
                kind: "fq_codel".into(),
                bytes: 123_456_789_012,
                packets: 98_765,
                drops: 17,
                requeues: 2,
                overlimits: 9,
                qlen: 3,
                backlog: 4500,
            }
        );
        // The legacy TCA_STATS, after TCA_STATS2, has the last word.
        assert_eq!(parse_qdisc(&fq_codel(Some(99))).unwrap().drops, 99);
        // An htb class's child qdisc keeps its parent.
        let child = parse_qdisc(&tcmsg(2, 0x10_0000, 0x1_0001)).unwrap();
        assert_eq!(child.parent, 0x1_0001);
        // Truncations never panic; short statistics are errors.
        let body = fq_codel(None);
        for cut in 0..body.len() {
            let _ = parse_qdisc(&body[..cut]);
        }
        let mut short = tcmsg(2, 0, u32::MAX);
        short.extend(attr(7, &attr(3, &[0u8; 8])));
        assert!(parse_qdisc(&short).is_err());
    }

    #[test]
    fn fixtures_file() {
        let parsed = parse_fixtures(
            r#"[{"IfaceName":"wlan0","Parent":0,"Handle":0,"Kind":"fq","Bytes":42,"packets":3,
                 "Drops":1,"Requeues":2,"Overlimits":4,"GcFlows":7,"Qlen":5,"Backlog":6}]"#,
        )
        .unwrap();
        assert_eq!(parsed[0].0, "wlan0");
        assert_eq!(parsed[0].1.kind, "fq");
        assert_eq!(parsed[0].1.packets, 3);
        assert_eq!(parsed[0].1.backlog, 6);
        assert!(parse_fixtures(r#"[{"Packets": -1}]"#).is_err());
        assert!(parse_fixtures("null").unwrap().is_empty());
    }

    #[test]
    fn fixtures_flag_renders() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("results.json"),
            r#"[{"IfaceName":"eth0","Parent":0,"Kind":"mq","Bytes":10,"Packets":1},
                {"IfaceName":"eth0","Parent":65537,"Kind":"fq","Bytes":7,"Packets":1},
                {"IfaceName":"lo","Parent":0,"Kind":"noqueue"}]"#,
        )
        .unwrap();
        let arg = format!("--collector.qdisc.fixtures={}", dir.path().display());
        let paths = crate::collector::Paths::default();
        let c = crate::collector::testing::build_with(
            &REGISTRATION,
            &["--collector.qdisc.device-exclude=^lo$", &arg],
            &paths,
        );
        let text = render("qdisc", c, paths);
        assert!(text.contains("node_qdisc_bytes_total{device=\"eth0\",kind=\"mq\"} 10\n"));
        assert!(!text.contains("kind=\"fq\""), "{text}");
        assert!(!text.contains("noqueue"), "{text}");
    }

    #[test]
    fn deprecated_flags() {
        let m = |args: &[&str]| {
            crate::cli::command()
                .try_get_matches_from(
                    std::iter::once("nodewarden-agent").chain(args.iter().copied()),
                )
                .unwrap()
        };
        let paths = crate::collector::Paths::default();
        let both = m(&[
            "--collector.qdisc.device-include=a",
            "--collector.qdisk.device-include=b",
        ]);
        let ctx = BuildContext {
            matches: &both,
            paths: &paths,
        };
        assert!(build(&ctx).is_err());
        let mixed = m(&[
            "--collector.qdisc.device-include=a",
            "--collector.qdisc.device-exclude=b",
        ]);
        let ctx = BuildContext {
            matches: &mixed,
            paths: &paths,
        };
        assert!(build(&ctx).is_err());
        let old = m(&["--collector.qdisk.device-exclude=b"]);
        let ctx = BuildContext {
            matches: &old,
            paths: &paths,
        };
        assert!(build(&ctx).is_ok());
    }

    #[test]
    fn qdiscs_in_a_namespace_golden() {
        let Some(text) = crate::collector::netlink::test_netns::run(
            &[
                // No IPv6 chatter (DAD, router solicitations): the counters stay put.
                "sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1",
                "ip link add nwa0 type veth peer name nwb0",
                "ip link add nwa1 type veth peer name nwb1",
                "for l in nwa0 nwb0 nwa1 nwb1; do ip link set $l up; done",
                // This kernel has htb, tbf, pfifo, mq and ingress built in.
                "tc qdisc add dev nwa0 root handle 1: htb default 10",
                "tc class add dev nwa0 parent 1: classid 1:10 htb rate 100mbit quantum 1514",
                "tc qdisc add dev nwa0 parent 1:10 handle 10: pfifo limit 50",
                "tc qdisc add dev nwa1 root pfifo limit 100",
                "tc qdisc add dev nwa1 ingress",
                "tc qdisc add dev nwb1 root tbf rate 1mbit burst 32kbit latency 400ms",
                // A static neighbour: no ARP on nwa1.
                "ip addr add 10.9.0.1/24 dev nwa1",
                "ip neigh add 10.9.0.9 lladdr 02:00:00:00:00:09 dev nwa1",
            ],
            |sys| {
                // Three 98-byte frames (14 + 20 + 8 + 56) through nwa1's qdisc.
                let udp = std::net::UdpSocket::bind("10.9.0.1:0").unwrap();
                for _ in 0..3 {
                    udp.send_to(&[0u8; 56], "10.9.0.9:9").unwrap();
                }
                let paths = crate::collector::Paths {
                    sysfs: sys.to_path_buf(),
                    ..crate::collector::Paths::default()
                };
                let c = crate::collector::testing::build_with(
                    &REGISTRATION,
                    &[
                        "--collector.qdisc",
                        "--collector.qdisc.device-exclude=^nwb0$",
                    ],
                    &paths,
                );
                render("qdisc", c, paths)
            },
        ) else {
            return;
        };
        assert_golden(&fixture("hw-netlink/golden/qdisc.prom"), &text);
    }
}
