//! `udp_queues`: bytes queued in UDP sockets' send and receive buffers, summed per IP version as
//! node_exporter 1.5 sums /proc/net/udp and /proc/net/udp6.
//!
//! With the default `--path.procfs` (/proc) the sums come from two sock_diag dumps (one per
//! family) instead: the kernel walks its whole UDP hash table on every read() of those files,
//! and a file takes two reads (data, then end of file), so four walks and text formatting per
//! scrape against two walks. The kernel reports the same expressions both ways: net/ipv4/udp.c
//! (and net/ipv6/udp.c) print, and net/ipv4/udp_diag.c's `udp_diag_get_info` reports,
//! `sk_wmem_alloc_get` and `udp_rqueue_get` (`sk_rmem_alloc_get` in both before Linux 4.18), over
//! the same sockets (this network namespace's UDP table, one family).
//! Another procfs (fixtures, a host's /proc mounted elsewhere) is read as files, and so is /proc
//! once sock_diag fails (no socket allowed, no udp_diag in the kernel, a malformed answer).

use std::path::Path;

use super::netlink::{QueueTotals, SockDiagSocket};
use super::source::SourceFile;
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Paths,
    Registration, no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "udp_queues",
    default_enabled: true,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(UdpQueuesCollector::default()))
}

/// The file whose presence says this network namespace has IPv6 (the files reader would emit v6
/// series exactly when it exists). IPv6 cannot be unloaded, so once seen it is not checked again.
const PROC_UDP6: &str = "/proc/net/udp6";

/// The totals for IPv4 and IPv6; `None` where that IP version does not exist.
type Totals = [Option<QueueTotals>; 2];

/// Where the totals come from.
enum Reader {
    /// Not decided yet: the first scrape opens the sock_diag socket when procfs is /proc.
    Undecided,
    SockDiag {
        socket: SockDiagSocket,
        /// Whether IPv6 exists here (probed every scrape until it does).
        ipv6: bool,
    },
    /// /proc/net/udp and udp6 under `--path.procfs`.
    Files,
}

struct UdpQueuesCollector {
    reader: Reader,
    /// /proc/net/udp and udp6.
    sources: [SourceFile; 2],
    buf: String,
}

impl Default for UdpQueuesCollector {
    fn default() -> Self {
        UdpQueuesCollector {
            reader: Reader::Undecided,
            sources: [SourceFile::proc("net/udp"), SourceFile::proc("net/udp6")],
            buf: String::new(),
        }
    }
}

/// The `tx_queue:rx_queue` column (hex) of one socket line.
pub fn parse_queues(line: &str) -> Option<(u64, u64)> {
    let fields: [&str; 10] = {
        let mut it = line.split_ascii_whitespace();
        std::array::from_fn(|_| it.next().unwrap_or(""))
    };
    if fields.iter().any(|f| f.is_empty()) {
        return None;
    }
    let (tx, rx) = fields[4].split_once(':')?;
    Some((
        u64::from_str_radix(tx, 16).ok()?,
        u64::from_str_radix(rx, 16).ok()?,
    ))
}

/// Sums the queues of a socket table (the first line is the header).
pub fn sum_queues(text: &str, mut malformed: impl FnMut(&str)) -> QueueTotals {
    let mut totals = QueueTotals::default();
    for line in text.lines().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        match parse_queues(line) {
            Some((tx, rx)) => {
                totals.tx = totals.tx.saturating_add(tx);
                totals.rx = totals.rx.saturating_add(rx);
            }
            None => malformed(line),
        }
    }
    totals
}

/// One sock_diag dump for IPv4, and one for IPv6 if it exists.
fn dump_totals(socket: &mut SockDiagSocket, ipv6: bool) -> std::io::Result<Totals> {
    let v4 = socket.udp_queue_totals(libc::AF_INET as u8)?;
    let v6 = if ipv6 {
        Some(socket.udp_queue_totals(libc::AF_INET6 as u8)?)
    } else {
        None
    };
    Ok([Some(v4), v6])
}

impl UdpQueuesCollector {
    fn totals(&mut self, ctx: &Context<'_>) -> Result<Totals, CollectorError> {
        match self.diag_totals(ctx.paths) {
            Some(totals) => Ok(totals),
            None => self.file_totals(ctx),
        }
    }

    /// The totals over sock_diag, or `None` when the files are to be read (from now on).
    fn diag_totals(&mut self, paths: &Paths) -> Option<Totals> {
        if let Reader::Undecided = self.reader {
            self.reader = if paths.procfs != Path::new("/proc") {
                Reader::Files
            } else {
                match SockDiagSocket::open() {
                    Ok(socket) => Reader::SockDiag {
                        socket,
                        ipv6: false,
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "no sock_diag socket: reading /proc/net/udp");
                        Reader::Files
                    }
                }
            };
        }
        let Reader::SockDiag { socket, ipv6 } = &mut self.reader else {
            return None;
        };
        if !*ipv6 {
            *ipv6 = Path::new(PROC_UDP6).exists();
        }
        match dump_totals(socket, *ipv6) {
            Ok(totals) => Some(totals),
            Err(e) => {
                tracing::debug!(error = %e, "sock_diag UDP dump failed: reading /proc/net/udp");
                self.reader = Reader::Files;
                None
            }
        }
    }

    fn file_totals(&mut self, ctx: &Context<'_>) -> Result<Totals, CollectorError> {
        let mut totals = [None; 2];
        for (slot, source) in totals.iter_mut().zip(&mut self.sources) {
            match source.read_into(ctx.paths, &mut self.buf) {
                Ok(()) => {
                    let path = source.display_path();
                    *slot = Some(sum_queues(&self.buf, |line| ctx.malformed(path, line)))
                }
                // That IP version is disabled.
                Err(CollectorError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(totals)
    }
}

impl Collector for UdpQueuesCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let totals = self.totals(ctx)?;
        if totals.iter().all(Option::is_none) {
            return Err(CollectorError::NoData);
        }
        let mut family = out.family(
            "node_udp_queues",
            "Number of allocated memory in the kernel for UDP datagrams in bytes.",
            Kind::Gauge,
        )?;
        for (totals, ip) in totals.iter().zip(["v4", "v6"]) {
            if let Some(QueueTotals { tx, rx }) = totals {
                family.sample(&[("queue", "tx"), ("ip", ip)], *tx as f64)?;
                family.sample(&[("queue", "rx"), ("ip", ip)], *rx as f64)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::collector::testing::{assert_renders_golden, render};

    #[test]
    fn golden() {
        assert_renders_golden("basic", "udp_queues", |_| {
            Box::new(UdpQueuesCollector::default())
        });
    }

    #[test]
    fn ipv4_only_with_a_bad_line() {
        assert_renders_golden("odd", "udp_queues", |_| {
            Box::new(UdpQueuesCollector::default())
        });
    }

    /// A collector on the host's /proc that must be using sock_diag.
    fn on_sock_diag() -> UdpQueuesCollector {
        let mut collector = UdpQueuesCollector::default();
        assert!(collector.diag_totals(&Paths::default()).is_some());
        assert!(matches!(collector.reader, Reader::SockDiag { .. }));
        collector
    }

    /// Loopback UDP sockets holding `count` unread datagrams each (v4, and v6 where ::1 exists).
    fn queued_datagrams(count: usize) -> Vec<UdpSocket> {
        let mut sockets = Vec::new();
        for (any, host) in [("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "::1")] {
            let (Ok(receiver), Ok(sender)) = (UdpSocket::bind(any), UdpSocket::bind(any)) else {
                assert_ne!(host, "127.0.0.1", "IPv4 loopback is needed");
                continue;
            };
            for _ in 0..count {
                sender
                    .send_to(&[1u8; 1200], receiver.local_addr().unwrap())
                    .unwrap();
            }
            sockets.extend([receiver, sender]);
        }
        sockets
    }

    /// Retries `f` until it holds: other processes' UDP sockets may change between two reads.
    fn eventually(mut f: impl FnMut() -> Result<(), String>) {
        let mut last = String::new();
        for _ in 0..50 {
            match f() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("{last}");
    }

    #[test]
    fn sock_diag_totals_equal_the_proc_files_totals() {
        let sockets = queued_datagrams(3);
        let ipv6 = sockets.len() == 4;
        let mut diag = on_sock_diag();
        let mut files = UdpQueuesCollector {
            reader: Reader::Files,
            ..UdpQueuesCollector::default()
        };
        let paths = Paths::default();
        let malformed = AtomicU64::new(0);
        let ctx = Context::new(&paths, &malformed);
        eventually(|| {
            let from_diag = diag.totals(&ctx).unwrap();
            let from_files = files.totals(&ctx).unwrap();
            if from_diag != from_files {
                return Err(format!("sock_diag {from_diag:?}, files {from_files:?}"));
            }
            Ok(())
        });
        assert!(matches!(diag.reader, Reader::SockDiag { .. }));
        let totals = diag.totals(&ctx).unwrap();
        // Three datagrams of 1200 bytes wait in each receiver (their buffers' truesize: more).
        assert!(totals[0].unwrap().rx >= 3600, "{totals:?}");
        if ipv6 {
            assert!(totals[1].unwrap().rx >= 3600, "{totals:?}");
        }
        assert_eq!(totals[1].is_some(), Path::new(PROC_UDP6).exists());
        assert_eq!(malformed.load(Ordering::Relaxed), 0);
        drop(sockets);
    }

    #[test]
    fn renders_the_sock_diag_totals() {
        let sockets = queued_datagrams(2);
        eventually(|| {
            let before = on_sock_diag().diag_totals(&Paths::default()).unwrap();
            let text = render("udp_queues", Box::new(on_sock_diag()), Paths::default());
            let after = on_sock_diag().diag_totals(&Paths::default()).unwrap();
            if before != after {
                return Err(format!("changed while rendering: {before:?} {after:?}"));
            }
            for (totals, ip) in before.iter().zip(["v4", "v6"]) {
                for (queue, value) in totals.iter().flat_map(|t| [("tx", t.tx), ("rx", t.rx)]) {
                    let line =
                        format!("node_udp_queues{{queue=\"{queue}\",ip=\"{ip}\"}} {value}\n");
                    if !text.contains(&line) {
                        return Err(format!("{line} not in\n{text}"));
                    }
                }
            }
            Ok(())
        });
        drop(sockets);
    }

    #[test]
    fn other_procfs_paths_read_the_files() {
        let mut collector = UdpQueuesCollector::default();
        let paths = Paths::fixture(&crate::collector::testing::fixture("basic"));
        assert!(collector.diag_totals(&paths).is_none());
        assert!(matches!(collector.reader, Reader::Files));
    }

    #[test]
    fn lines() {
        let line = "  1: 00000000:0044 00000000:0000 07 00000100:00000200 00:00000000 00000000     0        0 17963 2 0000000000000000 0";
        assert_eq!(parse_queues(line), Some((0x100, 0x200)));
        assert_eq!(
            parse_queues("  1: 00000000:0044 00000000:0000 07 0100"),
            None
        );
        assert_eq!(
            parse_queues(
                "  1: 00000000:0044 00000000:0000 07 zz:00 00:00000000 00000000 0 0 17963"
            ),
            None
        );
    }
}
