//! `infiniband`: InfiniBand/RDMA port state and counters from /sys/class/infiniband, as
//! node_exporter 1.12.1 reads them through procfs 0.21.1: per device an info metric (`fw_ver`,
//! `board_id`, `hca_type`); per port `state`, `phys_state`, `rate` (the Gb/s figure parsed as a
//! float32, times 125000000) and whichever known files `counters/`, `counters_ext/` (kernels
//! before 4.5) and `hw_counters/` hold; `port_*data*` counters are multiplied by 4 (the kernel
//! reports them in 4-byte words) and `lifespan` (ms) is divided by 1000 in integers, as there.
//!
//! No /sys/class/infiniband is `NoData`. The layout (devices, ports, which counter files exist)
//! is listed once per hotplug epoch and the attributes are kept open: a port costs about 50
//! pread(2)s per scrape and no path walks. Decisions: only the files that become metrics are
//! read (procfs also reads `node_guid`, `link_layer` and unknown counter files, whose errors
//! would fail the collection); devices excluded by the device filter are not read at all; a
//! counter that does not parse (other than `N/A (no PMA)`, skipped as in procfs) is counted as a
//! malformed line and left out instead of failing the whole collection. Samples are sorted by
//! device and port name, as node_exporter's registry prints them.

use std::path::{Path, PathBuf};

use clap::Command;

use super::filter::DeviceFilter;
use super::flags::unanchored_regex_flag;
use super::gosyntax::parse_go_uint;
use super::source::{OpenAttr, sys_attr_absent};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "infiniband",
    default_enabled: true,
    flags,
    build,
};

const DEVICE_INCLUDE: &str = "collector.infiniband.device-include";
const DEVICE_EXCLUDE: &str = "collector.infiniband.device-exclude";

fn flags(command: Command) -> Command {
    command
        .arg(clap::Arg::new(DEVICE_INCLUDE).long(DEVICE_INCLUDE).help(
            "Regexp of infiniband devices to include (mutually exclusive to device-exclude).",
        ))
        .arg(clap::Arg::new(DEVICE_EXCLUDE).long(DEVICE_EXCLUDE).help(
            "Regexp of infiniband devices to exclude (mutually exclusive to device-include).",
        ))
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    // node_exporter's newDeviceFilter: both patterns apply when both are given.
    let filter = DeviceFilter {
        exclude: unanchored_regex_flag(ctx, DEVICE_EXCLUDE)?,
        include: unanchored_regex_flag(ctx, DEVICE_INCLUDE)?,
    };
    Ok(Box::new(InfinibandCollector::new(filter)))
}

/// Where a counter file lives under a port directory.
#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Counters,
    CountersExt,
    HwCounters,
}

/// How a file's value becomes the metric's.
#[derive(Clone, Copy)]
enum Scale {
    One,
    /// 4-byte words to bytes (wrapping, as Go's uint64 multiplication).
    Words,
    /// Milliseconds to whole seconds.
    Millis,
}

struct Counter {
    dir: Dir,
    file: &'static str,
    metric: &'static str,
    help: &'static str,
    kind: Kind,
    scale: Scale,
}

const fn c(dir: Dir, file: &'static str, metric: &'static str, help: &'static str) -> Counter {
    Counter {
        dir,
        file,
        metric,
        help,
        kind: Kind::Counter,
        scale: Scale::One,
    }
}

const fn words(dir: Dir, file: &'static str, metric: &'static str, help: &'static str) -> Counter {
    Counter {
        scale: Scale::Words,
        ..c(dir, file, metric, help)
    }
}

use Dir::{Counters as C, CountersExt as X, HwCounters as H};

/// Every counter, in the order node_exporter 1.12.1 emits them.
static COUNTERS: &[Counter] = &[
    c(
        X,
        "port_multicast_rcv_packets",
        "node_infiniband_legacy_multicast_packets_received_total",
        "Number of multicast packets received",
    ),
    c(
        X,
        "port_multicast_xmit_packets",
        "node_infiniband_legacy_multicast_packets_transmitted_total",
        "Number of multicast packets transmitted",
    ),
    words(
        X,
        "port_rcv_data_64",
        "node_infiniband_legacy_data_received_bytes_total",
        "Number of data octets received on all links",
    ),
    c(
        X,
        "port_rcv_packets_64",
        "node_infiniband_legacy_packets_received_total",
        "Number of data packets received on all links",
    ),
    c(
        X,
        "port_unicast_rcv_packets",
        "node_infiniband_legacy_unicast_packets_received_total",
        "Number of unicast packets received",
    ),
    c(
        X,
        "port_unicast_xmit_packets",
        "node_infiniband_legacy_unicast_packets_transmitted_total",
        "Number of unicast packets transmitted",
    ),
    words(
        X,
        "port_xmit_data_64",
        "node_infiniband_legacy_data_transmitted_bytes_total",
        "Number of data octets transmitted on all links",
    ),
    c(
        X,
        "port_xmit_packets_64",
        "node_infiniband_legacy_packets_transmitted_total",
        "Number of data packets received on all links",
    ),
    c(
        C,
        "excessive_buffer_overrun_errors",
        "node_infiniband_excessive_buffer_overrun_errors_total",
        "Number of times that OverrunErrors consecutive flow control update periods occurred, each having at least one overrun error.",
    ),
    c(
        C,
        "link_downed",
        "node_infiniband_link_downed_total",
        "Number of times the link failed to recover from an error state and went down",
    ),
    c(
        C,
        "link_error_recovery",
        "node_infiniband_link_error_recovery_total",
        "Number of times the link successfully recovered from an error state",
    ),
    c(
        C,
        "local_link_integrity_errors",
        "node_infiniband_local_link_integrity_errors_total",
        "Number of times that the count of local physical errors exceeded the threshold specified by LocalPhyErrors.",
    ),
    c(
        C,
        "multicast_rcv_packets",
        "node_infiniband_multicast_packets_received_total",
        "Number of multicast packets received (including errors)",
    ),
    c(
        C,
        "multicast_xmit_packets",
        "node_infiniband_multicast_packets_transmitted_total",
        "Number of multicast packets transmitted (including errors)",
    ),
    c(
        C,
        "port_rcv_constraint_errors",
        "node_infiniband_port_constraint_errors_received_total",
        "Number of packets received on the switch physical port that are discarded",
    ),
    c(
        C,
        "port_xmit_constraint_errors",
        "node_infiniband_port_constraint_errors_transmitted_total",
        "Number of packets not transmitted from the switch physical port",
    ),
    words(
        C,
        "port_rcv_data",
        "node_infiniband_port_data_received_bytes_total",
        "Number of data octets received on all links",
    ),
    words(
        C,
        "port_xmit_data",
        "node_infiniband_port_data_transmitted_bytes_total",
        "Number of data octets transmitted on all links",
    ),
    c(
        C,
        "port_rcv_discards",
        "node_infiniband_port_discards_received_total",
        "Number of inbound packets discarded by the port because the port is down or congested",
    ),
    c(
        C,
        "port_xmit_discards",
        "node_infiniband_port_discards_transmitted_total",
        "Number of outbound packets discarded by the port because the port is down or congested",
    ),
    c(
        C,
        "port_rcv_errors",
        "node_infiniband_port_errors_received_total",
        "Number of packets containing an error that were received on this port",
    ),
    c(
        C,
        "port_rcv_packets",
        "node_infiniband_port_packets_received_total",
        "Number of packets received on all VLs by this port (including errors)",
    ),
    c(
        C,
        "port_xmit_packets",
        "node_infiniband_port_packets_transmitted_total",
        "Number of packets transmitted on all VLs from this port (including errors)",
    ),
    c(
        C,
        "port_xmit_wait",
        "node_infiniband_port_transmit_wait_total",
        "Number of ticks during which the port had data to transmit but no data was sent during the entire tick",
    ),
    c(
        C,
        "unicast_rcv_packets",
        "node_infiniband_unicast_packets_received_total",
        "Number of unicast packets received (including errors)",
    ),
    c(
        C,
        "unicast_xmit_packets",
        "node_infiniband_unicast_packets_transmitted_total",
        "Number of unicast packets transmitted (including errors)",
    ),
    c(
        C,
        "port_rcv_remote_physical_errors",
        "node_infiniband_port_receive_remote_physical_errors_total",
        "Number of packets marked with the EBP (End of Bad Packet) delimiter received on the port.",
    ),
    c(
        C,
        "port_rcv_switch_relay_errors",
        "node_infiniband_port_receive_switch_relay_errors_total",
        "Number of packets that could not be forwarded by the switch.",
    ),
    c(
        C,
        "symbol_error",
        "node_infiniband_symbol_error_total",
        "Number of minor link errors detected on one or more physical lanes.",
    ),
    c(
        C,
        "VL15_dropped",
        "node_infiniband_vl15_dropped_total",
        "Number of incoming VL15 packets dropped due to resource limitations.",
    ),
    Counter {
        dir: H,
        file: "lifespan",
        metric: "node_infiniband_lifespan_seconds",
        help: "The maximum period in ms which defines the aging of the counter reads. Two consecutive reads within this period might return the same values.",
        kind: Kind::Gauge,
        scale: Scale::Millis,
    },
    c(
        H,
        "duplicate_request",
        "node_infiniband_duplicate_requests_packets_total",
        "The number of received packets. A duplicate request is a request that had been previously executed.",
    ),
    c(
        H,
        "implied_nak_seq_err",
        "node_infiniband_implied_nak_seq_errors_total",
        "The number of time the requested decided an ACK. with a PSN larger than the expected PSN for an RDMA read or response.",
    ),
    c(
        H,
        "local_ack_timeout_err",
        "node_infiniband_local_ack_timeout_errors_total",
        "The number of times QP's ack timer expired for RC, XRC, DCT QPs at the sender side. The QP retry limit was not exceed, therefore it is still recoverable error.",
    ),
    c(
        H,
        "np_cnp_sent",
        "node_infiniband_np_cnp_packets_sent_total",
        "The number of CNP packets sent by the Notification Point when it noticed congestion experienced in the RoCEv2 IP header (ECN bits). The counters was added in MLNX_OFED 4.1",
    ),
    c(
        H,
        "np_ecn_marked_roce_packets",
        "node_infiniband_np_ecn_marked_roce_packets_received_total",
        "The number of RoCEv2 packets received by the notification point which were marked for experiencing the congestion (ECN bits where '11' on the ingress RoCE traffic) . The counters was added in MLNX_OFED 4.1",
    ),
    c(
        H,
        "out_of_buffer",
        "node_infiniband_out_of_buffer_drops_total",
        "The number of drops occurred due to lack of WQE for the associated QPs.",
    ),
    c(
        H,
        "out_of_sequence",
        "node_infiniband_out_of_sequence_packets_received_total",
        "The number of out of sequence packets received.",
    ),
    c(
        H,
        "packet_seq_err",
        "node_infiniband_packet_sequence_errors_total",
        "The number of received NAK sequence error packets. The QP retry limit was not exceeded.",
    ),
    c(
        H,
        "req_cqe_error",
        "node_infiniband_req_cqes_errors_total",
        "The number of times requester detected CQEs completed with errors. The counters was added in MLNX_OFED 4.1",
    ),
    c(
        H,
        "req_cqe_flush_error",
        "node_infiniband_req_cqes_flush_errors_total",
        "The number of times requester detected CQEs completed with flushed errors. The counters was added in MLNX_OFED 4.1",
    ),
    c(
        H,
        "req_remote_access_errors",
        "node_infiniband_req_remote_access_errors_total",
        "The number of times requester detected remote access errors. The counters was added in MLNX_OFED 4.1",
    ),
    c(
        H,
        "req_remote_invalid_request",
        "node_infiniband_req_remote_invalid_request_errors_total",
        "The number of times requester detected remote invalid request errors. The counters was added in MLNX_OFED 4.1",
    ),
    c(
        H,
        "resp_cqe_error",
        "node_infiniband_resp_cqes_errors_total",
        "The number of times responder detected CQEs completed with errors. The counters was added in MLNX_OFED 4.1",
    ),
    c(
        H,
        "resp_cqe_flush_error",
        "node_infiniband_resp_cqes_flush_errors_total",
        "The number of times responder detected CQEs completed with flushed errors. The counters was added in MLNX_OFED 4.1",
    ),
    c(
        H,
        "resp_local_length_error",
        "node_infiniband_resp_local_length_errors_total",
        "The number of times responder detected local length errors. The counters was added in MLNX_OFED 4.1",
    ),
    c(
        H,
        "resp_remote_access_errors",
        "node_infiniband_resp_remote_access_errors_total",
        "The number of times responder detected remote access errors. The counters was added in MLNX_OFED 4.1",
    ),
    c(
        H,
        "rnr_nak_retry_err",
        "node_infiniband_rnr_nak_retry_packets_received_total",
        "The number of received RNR NAK packets. The QP retry limit was not exceeded.",
    ),
    c(
        H,
        "roce_adp_retrans",
        "node_infiniband_roce_adp_retransmits_total",
        "The number of adaptive retransmissions for RoCE traffic. The counter was added in MLNX_OFED rev 5.0-1.0.0.0 and kernel v5.6.0",
    ),
    c(
        H,
        "roce_adp_retrans_to",
        "node_infiniband_roce_adp_retransmits_timeout_total",
        "The number of times RoCE traffic reached timeout due to adaptive retransmission. The counter was added in MLNX_OFED rev 5.0-1.0.0.0 and kernel v5.6.0",
    ),
    c(
        H,
        "roce_slow_restart",
        "node_infiniband_roce_slow_restart_used_total",
        "The number of times RoCE slow restart was used. The counter was added in MLNX_OFED rev 5.0-1.0.0.0 and kernel v5.6.0",
    ),
    c(
        H,
        "roce_slow_restart_cnps",
        "node_infiniband_roce_slow_restart_cnps_total",
        "The number of times RoCE slow restart generated CNP packets. The counter was added in MLNX_OFED rev 5.0-1.0.0.0 and kernel v5.6.0",
    ),
    c(
        H,
        "roce_slow_restart_trans",
        "node_infiniband_roce_slow_restart_total",
        "The number of times RoCE slow restart changed state to slow restart. The counter was added in MLNX_OFED rev 5.0-1.0.0.0 and kernel v5.6.0",
    ),
    c(
        H,
        "rp_cnp_handled",
        "node_infiniband_rp_cnp_packets_handled_total",
        "The number of CNP packets handled by the Reaction Point HCA to throttle the transmission rate. The counters was added in MLNX_OFED 4.1",
    ),
    c(
        H,
        "rp_cnp_ignored",
        "node_infiniband_rp_cnp_ignored_packets_received_total",
        "The number of CNP packets received and ignored by the Reaction Point HCA. This counter should not raise if RoCE Congestion Control was enabled in the network. If this counter raise, verify that ECN was enabled on the adapter.",
    ),
    c(
        H,
        "rx_atomic_requests",
        "node_infiniband_rx_atomic_requests_total",
        "The number of received ATOMIC request for the associated QPs.",
    ),
    c(
        H,
        "rx_dct_connect",
        "node_infiniband_rx_dct_connect_requests_total",
        "The number of received connection requests for the associated DCTs.",
    ),
    c(
        H,
        "rx_read_requests",
        "node_infiniband_rx_read_requests_total",
        "The number of received READ requests for the associated QPs.",
    ),
    c(
        H,
        "rx_write_requests",
        "node_infiniband_rx_write_requests_total",
        "The number of received WRITE requests for the associated QPs.",
    ),
    c(
        H,
        "rx_icrc_encapsulated",
        "node_infiniband_rx_icrc_encapsulated_errors_total",
        "The number of RoCE packets with ICRC errors. This counter was added in MLNX_OFED 4.4 and kernel 4.19",
    ),
];

/// procfs's `parseState`: `"<id>: <name>"` to the id.
fn parse_state(s: &str) -> Option<u64> {
    let (id, rest) = s.split_once(':')?;
    if rest.contains(':') {
        return None;
    }
    let id: u64 = id.trim().parse().ok()?;
    (id <= u64::from(u32::MAX)).then_some(id)
}

/// procfs's `parseRate`: `"100 Gb/sec (4X EDR)"` to bytes per second (the figure parsed as a
/// float32, as `strconv.ParseFloat(s, 32)` does).
fn parse_rate(s: &str) -> Option<u64> {
    let (value, _) = s.split_once(' ')?;
    let value: f32 = value.trim().parse().ok()?;
    Some((f64::from(value) * 125_000_000.0) as u64)
}

struct CounterFile {
    /// Index into [`COUNTERS`].
    index: usize,
    attr: OpenAttr,
    path: PathBuf,
}

struct PortLayout {
    name: String,
    dir: PathBuf,
    state: OpenAttr,
    phys_state: OpenAttr,
    rate: OpenAttr,
    counters: Vec<CounterFile>,
}

struct DeviceLayout {
    name: String,
    dir: PathBuf,
    fw_ver: OpenAttr,
    board_id: OpenAttr,
    hca_type: OpenAttr,
    ports: Vec<PortLayout>,
}

/// A per-port gauge: name, help, value.
type PortGauge = (&'static str, &'static str, fn(&PortValues) -> f64);

/// One port's values this scrape.
struct PortValues {
    device: usize,
    port: usize,
    state: f64,
    phys_state: f64,
    rate: f64,
    /// Indexed like [`COUNTERS`].
    counters: Vec<Option<u64>>,
}

struct InfinibandCollector {
    filter: DeviceFilter,
    /// The epoch `devices` was listed in; `None`: list again.
    epoch: Option<u64>,
    listed: bool,
    /// `None`: no /sys/class/infiniband.
    devices: Option<Vec<DeviceLayout>>,
    info: Vec<[String; 3]>,
    values: Vec<PortValues>,
    buf: String,
}

fn io_err(path: &Path, e: std::io::Error) -> CollectorError {
    CollectorError::io(path, e)
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<(String, std::fs::FileType)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Ok(name) = entry.file_name().into_string() {
            entries.push((name, entry.file_type()?));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// The known counter files of one of a port's counter directories.
fn list_counters(
    port_dir: &Path,
    dir: Dir,
    out: &mut Vec<CounterFile>,
) -> Result<(), CollectorError> {
    let name = match dir {
        Dir::Counters => "counters",
        Dir::CountersExt => "counters_ext",
        Dir::HwCounters => "hw_counters",
    };
    let path = port_dir.join(name);
    let entries = match sorted_entries(&path) {
        Ok(entries) => entries,
        // counters_ext is optional; the others were seen to exist.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == Dir::CountersExt => {
            return Ok(());
        }
        Err(e) => return Err(io_err(&path, e)),
    };
    for (file, kind) in entries {
        if !kind.is_file() {
            continue;
        }
        if let Some(index) = COUNTERS.iter().position(|c| c.dir == dir && c.file == file) {
            out.push(CounterFile {
                index,
                attr: OpenAttr::default(),
                path: path.join(&file),
            });
        }
    }
    Ok(())
}

impl InfinibandCollector {
    fn new(filter: DeviceFilter) -> Self {
        InfinibandCollector {
            filter,
            epoch: None,
            listed: false,
            devices: None,
            info: Vec::new(),
            values: Vec::new(),
            buf: String::new(),
        }
    }

    /// Lists devices, ports and counter files, unless already done in this epoch.
    fn list(&mut self, ctx: &Context<'_>) -> Result<(), CollectorError> {
        if self.listed && self.epoch.is_some() && self.epoch == ctx.hotplug_epoch() {
            return Ok(());
        }
        self.listed = false;
        self.devices = None;
        let class = ctx.paths.sys("class/infiniband");
        let names = match sorted_entries(&class) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.epoch = ctx.hotplug_epoch();
                self.listed = true;
                return Ok(());
            }
            Err(e) => return Err(io_err(&class, e)),
        };
        let mut devices = Vec::new();
        for (name, _) in names {
            if self.filter.ignored(&name) {
                continue;
            }
            let dir = class.join(&name);
            let ports_dir = dir.join("ports");
            let mut ports = Vec::new();
            for (port, _) in sorted_entries(&ports_dir).map_err(|e| io_err(&ports_dir, e))? {
                match port.parse::<u64>() {
                    Ok(n) if n <= u64::from(u32::MAX) => {}
                    _ => {
                        return Err(CollectorError::Parse {
                            path: ports_dir.join(&port),
                            reason: "port directory is not a number".into(),
                        });
                    }
                }
                let port_dir = ports_dir.join(&port);
                let mut counters = Vec::new();
                if port_dir.join("counters").exists() {
                    list_counters(&port_dir, Dir::Counters, &mut counters)?;
                    list_counters(&port_dir, Dir::CountersExt, &mut counters)?;
                }
                if port_dir.join("hw_counters").exists() {
                    list_counters(&port_dir, Dir::HwCounters, &mut counters)?;
                }
                ports.push(PortLayout {
                    name: port,
                    dir: port_dir,
                    state: OpenAttr::default(),
                    phys_state: OpenAttr::default(),
                    rate: OpenAttr::default(),
                    counters,
                });
            }
            devices.push(DeviceLayout {
                name,
                dir,
                fw_ver: OpenAttr::default(),
                board_id: OpenAttr::default(),
                hca_type: OpenAttr::default(),
                ports,
            });
        }
        self.devices = Some(devices);
        self.epoch = ctx.hotplug_epoch();
        self.listed = true;
        Ok(())
    }

    /// Reads every listed device; `Ok(false)` when there is no InfiniBand class.
    fn read(&mut self, ctx: &Context<'_>) -> Result<bool, CollectorError> {
        self.list(ctx)?;
        let Some(devices) = self.devices.as_mut() else {
            return Ok(false);
        };
        let buf = &mut self.buf;
        self.info.clear();
        self.values.clear();
        for (d, device) in devices.iter_mut().enumerate() {
            let fw_path = device.dir.join("fw_ver");
            device
                .fw_ver
                .read(&fw_path, buf)
                .map_err(|e| io_err(&fw_path, e))?;
            let fw_ver = buf.clone();
            let mut optional =
                |attr: &mut OpenAttr, file: &str| -> Result<String, CollectorError> {
                    let path = device.dir.join(file);
                    match attr.read(&path, buf) {
                        Ok(()) => Ok(buf.clone()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                        Err(e) => Err(io_err(&path, e)),
                    }
                };
            let board_id = optional(&mut device.board_id, "board_id")?;
            let hca_type = optional(&mut device.hca_type, "hca_type")?;
            self.info.push([board_id, fw_ver, hca_type]);
            for (p, port) in device.ports.iter_mut().enumerate() {
                let mut attr = |attr: &mut OpenAttr,
                                file: &str,
                                parse: fn(&str) -> Option<u64>|
                 -> Result<f64, CollectorError> {
                    let path = port.dir.join(file);
                    attr.read(&path, buf).map_err(|e| io_err(&path, e))?;
                    parse(buf)
                        .map(|v| v as f64)
                        .ok_or_else(|| CollectorError::Parse {
                            path,
                            reason: format!("unexpected {file} {buf:?}"),
                        })
                };
                let state = attr(&mut port.state, "state", parse_state)?;
                let phys_state = attr(&mut port.phys_state, "phys_state", parse_state)?;
                let rate = attr(&mut port.rate, "rate", parse_rate)?;
                let mut counters = vec![None; COUNTERS.len()];
                for file in &mut port.counters {
                    match file.attr.read(&file.path, buf) {
                        Ok(()) => {}
                        Err(e) if sys_attr_absent(&e) => continue,
                        Err(e) => return Err(io_err(&file.path, e)),
                    }
                    let Some(value) = parse_go_uint(buf) else {
                        if !buf.contains("N/A (no PMA)") {
                            ctx.malformed(&file.path, buf);
                        }
                        continue;
                    };
                    let counter = &COUNTERS[file.index];
                    counters[file.index] = Some(match counter.scale {
                        Scale::One => value,
                        Scale::Words => value.wrapping_mul(4),
                        Scale::Millis => value / 1000,
                    });
                }
                self.values.push(PortValues {
                    device: d,
                    port: p,
                    state,
                    phys_state,
                    rate,
                    counters,
                });
            }
        }
        Ok(true)
    }
}

impl Collector for InfinibandCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        if !self.read(ctx)? {
            return Err(CollectorError::NoData);
        }
        let Some(devices) = self.devices.as_ref() else {
            return Ok(());
        };
        if devices.is_empty() {
            return Ok(());
        }
        let mut f = out.family(
            "node_infiniband_info",
            "Non-numeric data from /sys/class/infiniband/<device>, value is always 1.",
            Kind::Gauge,
        )?;
        for (device, [board_id, fw_ver, hca_type]) in devices.iter().zip(&self.info) {
            f.sample(
                &[
                    ("device", &device.name),
                    ("board_id", board_id),
                    ("firmware_version", fw_ver),
                    ("hca_type", hca_type),
                ],
                1.0,
            )?;
        }
        if self.values.is_empty() {
            return Ok(());
        }
        let labels = |v: &PortValues| {
            (
                devices[v.device].name.as_str(),
                devices[v.device].ports[v.port].name.as_str(),
            )
        };
        let gauges: [PortGauge; 3] = [
            (
                "node_infiniband_state_id",
                "State of the InfiniBand port (0: no change, 1: down, 2: init, 3: armed, 4: active, 5: act defer)",
                |v| v.state,
            ),
            (
                "node_infiniband_physical_state_id",
                "Physical state of the InfiniBand port (0: no change, 1: sleep, 2: polling, 3: disable, 4: shift, 5: link up, 6: link error recover, 7: phytest)",
                |v| v.phys_state,
            ),
            (
                "node_infiniband_rate_bytes_per_second",
                "Maximum signal transfer rate",
                |v| v.rate,
            ),
        ];
        for (name, help, value) in gauges {
            let mut f = out.family(name, help, Kind::Gauge)?;
            for v in &self.values {
                let (device, port) = labels(v);
                f.sample(&[("device", device), ("port", port)], value(v))?;
            }
        }
        for (i, counter) in COUNTERS.iter().enumerate() {
            if !self.values.iter().any(|v| v.counters[i].is_some()) {
                continue;
            }
            let mut f = out.family(counter.metric, counter.help, counter.kind)?;
            for v in &self.values {
                if let Some(value) = v.counters[i] {
                    let (device, port) = labels(v);
                    f.sample(&[("device", device), ("port", port)], value as f64)?;
                }
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
        assert_renders_golden("hw-network", "infiniband", |_| {
            Box::new(InfinibandCollector::new(DeviceFilter::default()))
        });
    }

    #[test]
    fn parsers_follow_procfs() {
        assert_eq!(parse_state("4: ACTIVE"), Some(4));
        assert_eq!(parse_state("5: LinkUp\n"), Some(5));
        assert_eq!(parse_state("ACTIVE"), None);
        assert_eq!(parse_state("4: A: B"), None);
        assert_eq!(parse_rate("56 Gb/sec (4X FDR)"), Some(7_000_000_000));
        assert_eq!(parse_rate("2.5 Gb/sec (1X SDR)"), Some(312_500_000));
        // 13.64 is not exact in float32: procfs's ParseFloat(s, 32) rounds it first.
        assert_eq!(
            parse_rate("13.64 Gb/sec (4X FDR10)"),
            Some((f64::from(13.64f32) * 125e6) as u64)
        );
        assert_eq!(parse_rate("100"), None);
        assert_eq!(parse_go_uint("0x1f"), Some(31));
        assert_eq!(parse_go_uint("010"), Some(8));
        assert_eq!(parse_go_uint("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_go_uint("-1"), None);
        assert_eq!(parse_go_uint("N/A (no PMA)"), None);
    }

    #[test]
    fn absent_class_is_no_data_and_filters_apply() {
        let dir = tempfile::tempdir().unwrap();
        let text = render(
            "infiniband",
            Box::new(InfinibandCollector::new(DeviceFilter::default())),
            Paths::fixture(dir.path()),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"infiniband\"} 0"));
        assert!(!text.contains("node_infiniband_info"));

        let paths = Paths::fixture(&fixture("hw-network"));
        let collector = build_with(
            &REGISTRATION,
            &["--collector.infiniband.device-include=mlx5"],
            &paths,
        );
        let text = render("infiniband", collector, paths);
        assert!(text.contains("device=\"mlx5_0\""));
        assert!(!text.contains("device=\"mlx4_0\""));
    }

    #[test]
    fn unavailable_and_malformed_counters_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let path = dir.path().join("sys/class/infiniband/hfi1_0").join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        w("fw_ver", "1.27.0\n");
        w("ports/1/state", "4: ACTIVE\n");
        w("ports/1/phys_state", "5: LinkUp\n");
        w("ports/1/rate", "100 Gb/sec (4X EDR)\n");
        w("ports/1/counters/port_xmit_wait", "N/A (no PMA)\n");
        w("ports/1/counters/symbol_error", "lots\n");
        w("ports/1/counters/link_downed", "0x10\n");
        let text = render(
            "infiniband",
            Box::new(InfinibandCollector::new(DeviceFilter::default())),
            Paths::fixture(dir.path()),
        );
        assert!(
            text.contains(
                "node_infiniband_info{device=\"hfi1_0\",board_id=\"\",firmware_version=\"1.27.0\",hca_type=\"\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("node_infiniband_link_downed_total{device=\"hfi1_0\",port=\"1\"} 16")
        );
        assert!(text.contains(
            "node_infiniband_rate_bytes_per_second{device=\"hfi1_0\",port=\"1\"} 12500000000"
        ));
        assert!(!text.contains("port_transmit_wait"));
        assert!(!text.contains("symbol_error"));
        assert!(
            text.contains("nodewarden_agent_malformed_lines_total 1"),
            "{text}"
        );

        // A port whose state cannot be parsed fails the collection, as in procfs.
        w("ports/1/state", "ACTIVE\n");
        let text = render(
            "infiniband",
            Box::new(InfinibandCollector::new(DeviceFilter::default())),
            Paths::fixture(dir.path()),
        );
        assert!(text.contains("node_scrape_collector_success{collector=\"infiniband\"} 0"));
    }
}
