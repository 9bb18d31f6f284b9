//! `tcpstat`: TCP sockets by state, and their queued bytes, as node_exporter 1.12.1 counts them:
//! a sock_diag (`NETLINK_SOCK_DIAG`, inet_diag) dump of every IPv4 TCP socket in states 0–11
//! (`TCPF_ALL` 0xFFF), and of every IPv6 one when `net/tcp6` exists under `--path.procfs`,
//! summed; `rx_queued_bytes`/`tx_queued_bytes` add up each socket's `idiag_rqueue`/`wqueue`
//! (for a listener: its accept backlog and its limit, as the kernel reports them).
//!
//! As there, a state's series exists only when a socket is in it, and the byte series only when
//! there is a socket at all; a state number beyond those named is `unknown` (12 and 13 land in
//! the byte series, as node_exporter's enum has it: the kernel reports none in this mask).
//! Decisions: one sock_diag socket is kept open between scrapes (node_exporter dials one per
//! dump); the dump asks for no `INET_DIAG_INFO` extension (node_exporter does, and discards it:
//! the queues and state are in the base message), so the kernel skips filling a `tcp_info` per
//! socket. No IPv6 is probed once per hotplug epoch.

use std::io;

use super::netlink::SockDiagSocket;
use super::source::Absence;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "tcpstat",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(TcpStatCollector::default()))
}

/// `TCPF_ALL` as node_exporter asks for it: states 0 to 11.
const STATES: u32 = 0xFFF;
/// `struct inet_diag_msg` (linux/inet_diag.h): its length and fields' offsets.
const INET_DIAG_MSG_LEN: usize = 72;
const STATE_AT: usize = 1;
const RQUEUE_AT: usize = 56;
const WQUEUE_AT: usize = 60;

/// node_exporter's `tcpConnectionState` names, by state number (1–13); 12 and 13 are its
/// queued-bytes pseudo-states.
const NAMES: [&str; 14] = [
    "unknown",
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
    "rx_queued_bytes",
    "tx_queued_bytes",
];
const RX_QUEUED: usize = 12;
const TX_QUEUED: usize = 13;

/// Per-state counts (and queued bytes in slots 12 and 13); `None`: no series. Slot 0 counts
/// every state without a name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts(pub [Option<f64>; 14]);

impl Counts {
    fn add(&mut self, slot: usize, value: f64) {
        let entry = self.0[slot].get_or_insert(0.0);
        *entry += value;
    }

    /// Adds one socket's `inet_diag_msg`.
    pub fn add_socket(&mut self, body: &[u8]) -> io::Result<()> {
        let field = |at: usize| {
            body.get(at..at + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        if body.len() < INET_DIAG_MSG_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "netlink: short inet_diag_msg",
            ));
        }
        let (Some(rqueue), Some(wqueue)) = (field(RQUEUE_AT), field(WQUEUE_AT)) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "netlink: short inet_diag_msg",
            ));
        };
        self.add(TX_QUEUED, f64::from(wqueue));
        self.add(RX_QUEUED, f64::from(rqueue));
        let state = usize::from(body[STATE_AT]);
        self.add(if state < NAMES.len() { state } else { 0 }, 1.0);
        Ok(())
    }
}

#[derive(Default)]
struct TcpStatCollector {
    socket: Option<SockDiagSocket>,
    no_ipv6: Absence,
}

impl TcpStatCollector {
    fn dump(&mut self, family: u8, counts: &mut Counts) -> io::Result<()> {
        let socket = match &mut self.socket {
            Some(socket) => socket,
            None => self.socket.insert(SockDiagSocket::open()?),
        };
        let result = socket.dump_sockets(family, libc::IPPROTO_TCP as u8, STATES, |body| {
            counts.add_socket(body)
        });
        if result.is_err() {
            // The rest of a failed dump may still be queued on the socket.
            self.socket = None;
        }
        result
    }
}

impl Collector for TcpStatCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let mut counts = Counts::default();
        let netlink = |e: io::Error| CollectorError::Io {
            path: "NETLINK_SOCK_DIAG".into(),
            source: e,
        };
        self.dump(libc::AF_INET as u8, &mut counts)
            .map_err(netlink)?;
        let tcp6 = ctx.paths.proc("net/tcp6");
        let ipv6 = self.no_ipv6.read(ctx, || {
            std::fs::metadata(&tcp6)
                .map(|_| ())
                .map_err(|e| CollectorError::io(&tcp6, e))
        });
        if ipv6.unwrap_or(false) {
            self.dump(libc::AF_INET6 as u8, &mut counts)
                .map_err(netlink)?;
        }
        if counts.0.iter().all(Option::is_none) {
            return Ok(());
        }
        // node_exporter's registry prints the series sorted by state name.
        let mut order: Vec<usize> = (0..NAMES.len())
            .filter(|&i| counts.0[i].is_some())
            .collect();
        order.sort_by_key(|&i| NAMES[i]);
        let mut f = out.family(
            "node_tcp_connection_states",
            "Number of connection states.",
            Kind::Gauge,
        )?;
        for i in order {
            if let Some(value) = counts.0[i] {
                f.sample(&[("state", NAMES[i])], value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Paths;
    use crate::collector::netlink::{Batch, parse_messages};
    use crate::collector::testing::render;
    use std::io::{Read, Write};

    /// An `inet_diag_msg` as the kernel sends it (x86-64, recorded layout): family, state,
    /// timer, retrans, the socket id (ports, addresses, interface, cookie), expires, rqueue,
    /// wqueue, uid, inode.
    fn diag_msg(family: u8, state: u8, rqueue: u32, wqueue: u32) -> Vec<u8> {
        let mut m = vec![0u8; INET_DIAG_MSG_LEN];
        m[0] = family;
        m[1] = state;
        m[4..6].copy_from_slice(&9100u16.to_be_bytes());
        m[8..12].copy_from_slice(&[127, 0, 0, 1]);
        m[RQUEUE_AT..RQUEUE_AT + 4].copy_from_slice(&rqueue.to_ne_bytes());
        m[WQUEUE_AT..WQUEUE_AT + 4].copy_from_slice(&wqueue.to_ne_bytes());
        m[64..68].copy_from_slice(&1000u32.to_ne_bytes());
        m[68..72].copy_from_slice(&4_194_305u32.to_ne_bytes());
        m
    }

    fn message(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn counts_recorded_answers() {
        let mut datagram = Vec::new();
        for (state, rq, wq) in [
            (10, 3, 4096),
            (1, 0, 0),
            (1, 120, 2896),
            (6, 0, 0),
            (8, 1, 0),
        ] {
            datagram.extend(message(20, 7, &diag_msg(2, state, rq, wq)));
        }
        // A message of another dump is skipped.
        datagram.extend(message(20, 6, &diag_msg(2, 1, 9, 9)));
        datagram.extend(message(3, 7, &0u32.to_ne_bytes()));
        let mut counts = Counts::default();
        let batch = parse_messages(&datagram, 7, |_, body| counts.add_socket(body)).unwrap();
        assert_eq!(batch, Batch::Done);
        let mut expected = Counts::default();
        expected.0[1] = Some(2.0);
        expected.0[6] = Some(1.0);
        expected.0[8] = Some(1.0);
        expected.0[10] = Some(1.0);
        expected.0[RX_QUEUED] = Some(124.0);
        expected.0[TX_QUEUED] = Some(6992.0);
        assert_eq!(counts, expected);

        let mut counts = Counts::default();
        counts.add_socket(&diag_msg(2, 14, 0, 0)).unwrap();
        counts.add_socket(&diag_msg(2, 12, 5, 0)).unwrap();
        assert_eq!(counts.0[0], Some(1.0), "unnamed state");
        assert_eq!(
            counts.0[RX_QUEUED],
            Some(5.0 + 1.0),
            "state 12 is counted there"
        );
        assert!(counts.add_socket(&[2, 1, 0]).is_err());
    }

    fn state(text: &str, name: &str) -> f64 {
        let prefix = format!("node_tcp_connection_states{{state=\"{name}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn counts_this_hosts_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(&[1u8; 3000]).unwrap();
        // Wait until the bytes are in the server's receive queue.
        let mut peek = [0u8; 1];
        server.set_nonblocking(false).unwrap();
        assert_eq!(server.peek(&mut peek).unwrap(), 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let text = loop {
            let text = render(
                "tcpstat",
                Box::new(TcpStatCollector::default()),
                Paths::default(),
            );
            if state(&text, "rx_queued_bytes") >= 3000.0 || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert!(
            text.contains("node_scrape_collector_success{collector=\"tcpstat\"} 1"),
            "{text}"
        );
        assert!(state(&text, "listen") >= 1.0, "{text}");
        assert!(state(&text, "established") >= 2.0, "{text}");
        assert!(state(&text, "rx_queued_bytes") >= 3000.0, "{text}");
        let mut sink = vec![0u8; 3000];
        server.read_exact(&mut sink).unwrap();
        // The socket is kept and reused.
        let mut collector = TcpStatCollector::default();
        let mut counts = Counts::default();
        collector.dump(libc::AF_INET as u8, &mut counts).unwrap();
        collector.dump(libc::AF_INET6 as u8, &mut counts).unwrap();
        assert!(collector.socket.is_some());
    }
}
