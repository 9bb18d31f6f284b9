//! The ntp collector against a real NTP server (Debian's chrony, `chronyd -x`: it never touches
//! the clock) on a loopback port, against fake servers for the replies it must refuse, and
//! beevik/ntp's arithmetic on fixed timestamps.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::collector::Paths;
use crate::collector::testing::{assert_golden, fixture, render};

fn matches(args: &[&str]) -> clap::ArgMatches {
    crate::cli::command()
        .try_get_matches_from(std::iter::once("nodewarden-agent").chain(args.iter().copied()))
        .unwrap()
}

fn build_from(args: &[&str]) -> Result<NtpCollector, BuildError> {
    let m = matches(args);
    let paths = Paths::default();
    collector(&BuildContext {
        matches: &m,
        paths: &paths,
    })
}

/// A running `chronyd -d -x` serving NTP on a loopback port, killed when dropped.
struct Chrony {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Chrony {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts chronyd; `None` (with a message) when it is missing outside CI.
fn chrony() -> Option<Chrony> {
    let daemon = "/usr/sbin/chronyd";
    if !Path::new(daemon).exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{daemon} is missing (Debian package chrony)");
        }
        eprintln!("skipped: {daemon} is missing (Debian package chrony)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let d = dir.path().display();
    let conf = dir.path().join("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nlocal stratum 8\nallow 127.0.0.1\nbindaddress 127.0.0.1\ncmdport 0\n\
             pidfile {d}/chronyd.pid\ndriftfile {d}/drift\n"
        ),
    )
    .unwrap();
    let child = Command::new(daemon)
        .args(["-d", "-x", "-f"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chronyd");
    Some(Chrony {
        port,
        child,
        _dir: dir,
    })
}

/// Replaces the values of the series that move with the clock by `X`.
fn mask(text: &str) -> String {
    text.lines()
        .map(|l| {
            let volatile = [
                "node_ntp_offset_seconds ",
                "node_ntp_reference_timestamp_seconds ",
                "node_ntp_root_dispersion_seconds ",
                "node_ntp_rtt_seconds ",
            ];
            match volatile.iter().find(|p| l.starts_with(*p)) {
                Some(p) => format!("{p}X\n"),
                None => format!("{l}\n"),
            }
        })
        .collect()
}

#[test]
fn against_chronyd() {
    let Some(server) = chrony() else {
        return;
    };
    let port = server.port.to_string();
    let port_flag = format!("--collector.ntp.server-port={port}");
    let mut c = build_from(&["--collector.ntp", &port_flag]).unwrap();
    // chronyd answers once it has bound its port: query until it does (each query is one
    // round trip, refused at once while nothing listens).
    let started = Instant::now();
    let r = loop {
        match c.query() {
            Ok(r) => break r,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                std::thread::yield_now();
            }
            Err(e) => panic!("chronyd did not answer: {e}"),
        }
    };
    assert_eq!((r.stratum, r.leap), (8, 0));
    assert!(r.rtt >= 0 && r.rtt < 1_000_000_000, "{r:?}");
    assert!(r.clock_offset.abs() < 100_000_000, "{r:?}");
    let now = unix_nanos(SystemTime::now());
    assert!(
        (now - r.reference_time).abs() < 600 * 1_000_000_000,
        "{r:?}"
    );
    assert!(c.sane(&r), "{r:?}");
    let text = render("ntp", Box::new(c), Paths::default());
    assert_golden(
        &fixture("hw-services/golden").join("ntp.prom"),
        &mask(&text),
    );
    // No distance to the root is within 0 s.
    let mut strict = build_from(&[
        "--collector.ntp",
        &port_flag,
        "--collector.ntp.max-distance=0s",
    ])
    .unwrap();
    let r = strict.query().unwrap();
    assert!(!strict.sane(&r), "{r:?}");
}

#[test]
fn no_server_is_a_failed_scrape() {
    let port = format!("--collector.ntp.server-port={}", free_udp_port());
    let c = build_from(&["--collector.ntp", &port]).unwrap();
    let text = render("ntp", Box::new(c), Paths::default());
    assert!(!text.contains("node_ntp_"), "{text}");
    assert!(text.contains("node_scrape_collector_success{collector=\"ntp\"} 0\n"));
}

/// A fake server answering one query with `reply(request)`.
fn fake_server(reply: impl FnOnce(&[u8]) -> Vec<u8> + Send + 'static) -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&reply(&buf[..n]), from);
        }
    });
    port
}

/// A well-formed server reply to `request`: stratum 2, times "now".
fn good_reply(request: &[u8]) -> Vec<u8> {
    let now = to_ntp_time(unix_nanos(SystemTime::now()));
    let mut r = vec![0u8; 48];
    r[0] = (4 << 3) | 4;
    r[1] = 2;
    r[16..24].copy_from_slice(&(now - (10u64 << 32)).to_be_bytes());
    r[24..32].copy_from_slice(&request[40..48]);
    r[32..40].copy_from_slice(&now.to_be_bytes());
    r[40..48].copy_from_slice(&now.to_be_bytes());
    r
}

#[test]
fn refused_replies() {
    type Corrupt = fn(&mut Vec<u8>);
    let cases: [(&str, Corrupt); 5] = [
        ("invalid mode", |r| r[0] = (4 << 3) | 3),
        ("didn't match", |r| r[24] ^= 0xff),
        ("invalid transmit time", |r| r[40..48].fill(0)),
        ("ticked backwards", |r| r[32] = 0xff),
        ("short reply", |r| r.truncate(47)),
    ];
    for (expected, corrupt) in cases {
        let port = fake_server(move |req| {
            let mut r = good_reply(req);
            corrupt(&mut r);
            r
        });
        let c = build_from(&[
            "--collector.ntp",
            &format!("--collector.ntp.server-port={port}"),
        ])
        .unwrap();
        let err = c.query().unwrap_err().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
    // The good one is read, stratum 2 and a reference 10 s old.
    let port = fake_server(good_reply);
    let mut c = build_from(&[
        "--collector.ntp",
        &format!("--collector.ntp.server-port={port}"),
    ])
    .unwrap();
    let r = c.query().unwrap();
    assert_eq!(r.stratum, 2);
    assert!(
        (r.time - r.reference_time - 10_000_000_000).abs() < 2,
        "{r:?}"
    );
    assert!(c.sane(&r));
}

#[test]
fn arithmetic_as_beevik_ntp() {
    // org 100 s, rec 101 s, xmt 101.5 s, dst 102.5 s (era 1's first seconds).
    let s = |secs: u64, frac: u64| (secs << 32) | frac;
    let h = Header {
        leap: 0,
        mode: 4,
        stratum: 3,
        root_delay: 0x0001_8000,      // 1.5 s
        root_dispersion: 0x0000_4000, // 0.25 s
        reference: s(0x83aa_7e80, 0),
        origin: s(100, 0),
        receive: s(101, 0),
        transmit: s(101, 0x8000_0000),
    };
    let r = response(&h, s(102, 0x8000_0000));
    assert_eq!(r.rtt, 2_000_000_000);
    assert_eq!(r.clock_offset, 0);
    assert_eq!(r.min_error, 0);
    assert_eq!(r.root_delay, 1_500_000_000);
    assert_eq!(r.root_dispersion, 250_000_000);
    assert_eq!(r.root_distance, 1_750_000_000 + 250_000_000);
    // 1970-01-01 as an NTP timestamp is Unix 0; small values are era 1 (2036 on).
    assert_eq!(r.reference_time, 0);
    assert_eq!(r.time, (ERA1_UNIX * 1_000_000_000) + 101_500_000_000);
    // A server 2 s ahead, 0.5 s each way: positive offset.
    let h = Header {
        receive: s(102, 0x8000_0000),
        transmit: s(102, 0x8000_0000),
        ..h
    };
    let r = response(&h, s(101, 0));
    assert_eq!((r.clock_offset, r.rtt), (2_000_000_000, 1_000_000_000));
    assert_eq!(r.min_error, 1_500_000_000);
    assert_eq!(seconds(-1_500_000_000), -1.5);
    // Round trips of the timestamp conversions.
    let t = 1_764_920_000_123_456_789i128;
    assert!((ntp_time_unix_nanos(to_ntp_time(t)) - t).abs() <= 1);
}

#[test]
fn leap_second_tolerance_is_remembered() {
    let mut c = build_from(&["--collector.ntp"]).unwrap();
    let day = 86_400 * 1_000_000_000i128;
    let midnight = 20_000 * day;
    let r = Response {
        stratum: 2,
        leap: 1,
        clock_offset: 0,
        rtt: 0,
        time: midnight - 3_600_000_000_000,
        reference_time: midnight - 3_700_000_000_000,
        root_delay: 0,
        root_dispersion: 0,
        root_distance: 0,
        min_error: 500_000_000,
    };
    // Leap announced: 0.5 s error is within 1 ms + 1 s, and so just after midnight, flag gone.
    assert!(!c.clone_sane(&Response {
        leap: 0,
        ..r.clone()
    }));
    assert!(c.sane(&r));
    let after = Response {
        leap: 0,
        time: midnight + 60_000_000_000,
        reference_time: midnight,
        ..r.clone()
    };
    assert!(c.sane(&after));
    let later = Response {
        time: midnight + 2 * day,
        reference_time: midnight + 2 * day,
        ..after
    };
    assert!(!c.sane(&later));
}

impl NtpCollector {
    /// `sane` on a copy of the state (the leap midnight unchanged).
    fn clone_sane(&self, r: &Response) -> bool {
        let mut copy = NtpCollector {
            address: self.address.clone(),
            ttl: self.ttl,
            version: self.version,
            max_distance: self.max_distance,
            tolerance: self.tolerance,
            leap_midnight: self.leap_midnight,
        };
        copy.sane(r)
    }
}

#[test]
fn flags_as_node_exporter_checks_them() {
    assert!(build_from(&["--collector.ntp.server=192.0.2.1"]).is_err());
    assert!(build_from(&["--collector.ntp.server=localhost"]).is_err());
    assert!(
        build_from(&[
            "--collector.ntp.server=ntp.example",
            "--collector.ntp.server-is-local"
        ])
        .is_ok()
    );
    assert!(build_from(&["--collector.ntp.server=::1"]).is_ok());
    assert!(build_from(&["--collector.ntp.protocol-version=5"]).is_err());
    assert!(build_from(&["--collector.ntp.protocol-version=1"]).is_err());
    assert!(build_from(&["--collector.ntp.server-port=0"]).is_err());
    assert!(build_from(&["--collector.ntp.server-port=65536"]).is_err());
    assert!(build_from(&["--collector.ntp.local-offset-tolerance=soon"]).is_err());
    assert!(build_from(&["--collector.ntp.max-distance=1.5s"]).is_ok());
    let c = build_from(&["--collector.ntp.server=::1"]).unwrap();
    assert_eq!(c.address.as_deref(), Ok("[::1]:123"));
    assert_eq!(
        fix_host_port("127.0.0.1:456", 123).as_deref(),
        Ok("127.0.0.1:456")
    );
    assert_eq!(fix_host_port("[::1]:9", 123).as_deref(), Ok("[::1]:9"));
    assert_eq!(fix_host_port("[::1]", 123).as_deref(), Ok("[::1]:123"));
    assert!(fix_host_port("[::1", 123).is_err());
    assert!(fix_host_port("", 123).is_err());
}
