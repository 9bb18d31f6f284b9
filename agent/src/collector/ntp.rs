//! `ntp` (deprecated in node_exporter, still served by 1.12.1): one SNTP client query per
//! scrape to the local NTP server, as node_exporter does it with beevik/ntp 1.5: a version-4
//! (`--collector.ntp.protocol-version`) client packet with a random transmit timestamp as nonce,
//! over UDP with the IP TTL of `--collector.ntp.ip-ttl`, one second for the whole exchange.
//! The reply must be a server-mode packet echoing the nonce, with a non-zero transmit time not
//! before its receive time. Offset, RTT, minimum error and root distance are beevik/ntp's
//! integer NTP-timestamp arithmetic; `node_ntp_sanity` is node_exporter's RFC 5905 check
//! (including its leap-second smearing tolerance, remembered across scrapes).
//!
//! Decisions: a fresh socket per scrape, as node_exporter (a kept one could read a late reply
//! to an earlier scrape). A server name (allowed with `--collector.ntp.server-is-local`) is
//! resolved on every scrape, first address, as Go's resolver would.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Arg, Command};

use super::flags::{add_bool_flag, bool_flag};
use super::gosyntax::{parse_go_duration, parse_go_int};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "ntp",
    default_enabled: false,
    flags,
    build,
};

const SERVER: &str = "collector.ntp.server";
const PORT: &str = "collector.ntp.server-port";
const VERSION: &str = "collector.ntp.protocol-version";
const IS_LOCAL: &str = "collector.ntp.server-is-local";
const TTL: &str = "collector.ntp.ip-ttl";
const MAX_DISTANCE: &str = "collector.ntp.max-distance";
const TOLERANCE: &str = "collector.ntp.local-offset-tolerance";

fn flags(command: Command) -> Command {
    let string = |command: Command, name: &'static str, default: &'static str, help| {
        command.arg(Arg::new(name).long(name).default_value(default).help(help))
    };
    let command = string(
        command,
        SERVER,
        "127.0.0.1",
        "NTP server to use for ntp collector",
    );
    let command = string(
        command,
        PORT,
        "123",
        "UDP port number to connect to on NTP server",
    );
    let command = string(command, VERSION, "4", "NTP protocol version");
    let command = add_bool_flag(
        command,
        IS_LOCAL,
        false,
        "Certify that collector.ntp.server address is not a public ntp server",
    );
    let command = string(command, TTL, "1", "IP TTL to use while sending NTP query");
    let command = string(
        command,
        MAX_DISTANCE,
        "3.46608s",
        "Max accumulated distance to the root",
    );
    string(
        command,
        TOLERANCE,
        "1ms",
        "Offset between local clock and local ntpd time to tolerate",
    )
}

fn flag_error(flag: &str, reason: impl Into<String>) -> BuildError {
    BuildError::Flag {
        flag: flag.to_string(),
        reason: reason.into(),
    }
}

fn int_flag(ctx: &BuildContext<'_>, id: &str) -> Result<i64, BuildError> {
    let text = ctx.flag(id).unwrap_or("");
    parse_go_int(text).ok_or_else(|| flag_error(id, format!("expected an integer, got {text:?}")))
}

fn duration_flag(ctx: &BuildContext<'_>, id: &str) -> Result<Duration, BuildError> {
    let text = ctx.flag(id).unwrap_or("");
    parse_go_duration(text).ok_or_else(|| {
        flag_error(
            id,
            format!("expected a non-negative duration, got {text:?}"),
        )
    })
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(collector(ctx)?))
}

fn collector(ctx: &BuildContext<'_>) -> Result<NtpCollector, BuildError> {
    let server = ctx.flag(SERVER).unwrap_or("").to_string();
    let loopback = server.parse::<IpAddr>().is_ok_and(|ip| match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    });
    if !bool_flag(ctx, IS_LOCAL) && !loopback {
        return Err(flag_error(
            SERVER,
            "only IP address of local NTP server is valid for --collector.ntp.server",
        ));
    }
    let version = int_flag(ctx, VERSION)?;
    if !(2..=4).contains(&version) {
        return Err(flag_error(
            VERSION,
            format!("invalid NTP protocol version {version}; must be 2, 3, or 4"),
        ));
    }
    let tolerance = duration_flag(ctx, TOLERANCE)?;
    let port = int_flag(ctx, PORT)?;
    if !(1..=65535).contains(&port) {
        return Err(flag_error(
            PORT,
            format!("invalid NTP port number {port}; must be between 1 and 65535 inclusive"),
        ));
    }
    let ttl = int_flag(ctx, TTL)?;
    let max_distance = duration_flag(ctx, MAX_DISTANCE)?;
    tracing::warn!(
        "the ntp collector is deprecated and will be removed in the next major version release"
    );
    Ok(NtpCollector {
        address: fix_host_port(&server, port as u16),
        version: version as u8,
        ttl,
        max_distance: nanos(max_distance),
        tolerance: nanos(tolerance),
        leap_midnight: None,
    })
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// beevik/ntp's `fixHostPort`: the port flag applies only when the server names none.
fn fix_host_port(address: &str, port: u16) -> Result<String, &'static str> {
    if address.is_empty() {
        return Err("address string is empty");
    }
    if address.starts_with('[') {
        return match address.find(']') {
            None => Err("missing ']' in address"),
            Some(end) if end + 1 == address.len() => Ok(format!("{address}:{port}")),
            Some(end) if address.as_bytes()[end + 1] == b':' => Ok(address.to_string()),
            Some(_) => Err("unexpected character following ']' in address"),
        };
    }
    match address.rfind(':') {
        None => Ok(format!("{address}:{port}")),
        Some(last) if !address[..last].contains(':') => Ok(address.to_string()),
        Some(_) => Ok(format!("[{address}]:{port}")),
    }
}

struct NtpCollector {
    address: Result<String, &'static str>,
    version: u8,
    ttl: i64,
    /// Nanoseconds, as Go's `time.Duration`.
    max_distance: i64,
    tolerance: i64,
    /// node_exporter's `leapMidnight` (Unix nanoseconds): the midnight after a leap second was
    /// announced, kept because servers drop the flag right after it.
    leap_midnight: Option<i128>,
}

#[derive(Debug, thiserror::Error)]
enum NtpError {
    #[error("{0}")]
    Address(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("short reply: {0} bytes")]
    Short(usize),
    #[error("invalid mode in response")]
    Mode,
    #[error("invalid transmit time in response")]
    TransmitTime,
    #[error("server response didn't match request")]
    Mismatch,
    #[error("server clock ticked backwards")]
    Backwards,
}

/// node_exporter's message around the query's error, which it keeps as the source.
#[derive(Debug, thiserror::Error)]
#[error("couldn't get SNTP reply: {0}")]
struct NoReply(#[source] NtpError);

/// 2^32 NTP fractions a second: a 64-bit NTP timestamp (era 0 from 1900).
const NANOS_PER_SEC: u64 = 1_000_000_000;
/// Seconds from 1900-01-01 to 1970-01-01.
const NTP_UNIX_OFFSET: i128 = 2_208_988_800;
/// 2036-02-07T06:28:16Z, where NTP era 1 starts, in Unix seconds.
const ERA1_UNIX: i128 = 2_085_978_496;

/// beevik/ntp's `ntpTime.Duration`: nanoseconds of a 32.32 value, rounded half up.
fn ntp_duration(t: u64) -> i64 {
    let sec = (t >> 32).wrapping_mul(NANOS_PER_SEC);
    let frac = (t & 0xffff_ffff).wrapping_mul(NANOS_PER_SEC);
    let mut nsec = frac >> 32;
    if (frac as u32) >= 0x8000_0000 {
        nsec += 1;
    }
    sec.wrapping_add(nsec) as i64
}

/// `ntpTimeShort.Duration`: a 16.16 value.
fn ntp_short_duration(t: u32) -> i64 {
    let sec = u64::from(t >> 16) * NANOS_PER_SEC;
    let frac = u64::from(t & 0xffff) * NANOS_PER_SEC;
    let mut nsec = frac >> 16;
    if (frac as u16) >= 0x8000 {
        nsec += 1;
    }
    (sec + nsec) as i64
}

/// `ntpTime.Time`, as Unix nanoseconds: before 1970 in era 0 means era 1 (after 2036).
fn ntp_time_unix_nanos(t: u64) -> i128 {
    const T1970: u64 = 0x83aa_7e80_0000_0000;
    let d = i128::from(ntp_duration(t) as u64);
    if t < T1970 {
        ERA1_UNIX * 1_000_000_000 + d
    } else {
        d - NTP_UNIX_OFFSET * 1_000_000_000
    }
}

/// `toNtpTime`: Unix nanoseconds as a 32.32 NTP timestamp, fraction rounded half up.
fn to_ntp_time(unix_nanos: i128) -> u64 {
    let nsec = (unix_nanos + NTP_UNIX_OFFSET * 1_000_000_000) as u64;
    let sec = nsec / NANOS_PER_SEC;
    let rem = (nsec - sec * NANOS_PER_SEC) << 32;
    let mut frac = rem / NANOS_PER_SEC;
    if rem % NANOS_PER_SEC >= NANOS_PER_SEC / 2 {
        frac += 1;
    }
    (sec << 32) | frac
}

fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Go's `Duration.Seconds()`.
fn seconds(d: i64) -> f64 {
    let sec = d / 1_000_000_000;
    let nsec = d % 1_000_000_000;
    sec as f64 + nsec as f64 / 1e9
}

/// The fields of a reply that the metrics use, computed as beevik/ntp's `generateResponse`.
#[derive(Debug, Clone, PartialEq)]
struct Response {
    stratum: u8,
    leap: u8,
    /// Durations in nanoseconds, times in Unix nanoseconds.
    clock_offset: i64,
    rtt: i64,
    time: i128,
    reference_time: i128,
    root_delay: i64,
    root_dispersion: i64,
    root_distance: i64,
    min_error: i64,
}

/// The parsed header of a reply, its origin time replaced by the real send time.
struct Header {
    leap: u8,
    mode: u8,
    stratum: u8,
    root_delay: u32,
    root_dispersion: u32,
    reference: u64,
    origin: u64,
    receive: u64,
    transmit: u64,
}

fn parse_header(buf: &[u8]) -> Result<Header, NtpError> {
    let be32 = |at: usize| u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    let be64 = |at: usize| (u64::from(be32(at)) << 32) | u64::from(be32(at + 4));
    if buf.len() < 48 {
        return Err(NtpError::Short(buf.len()));
    }
    Ok(Header {
        leap: buf[0] >> 6,
        mode: buf[0] & 7,
        stratum: buf[1],
        root_delay: be32(4),
        root_dispersion: be32(8),
        reference: be64(16),
        origin: be64(24),
        receive: be64(32),
        transmit: be64(40),
    })
}

fn response(h: &Header, dst: u64) -> Response {
    let (org, rec, xmt) = (h.origin, h.receive, h.transmit);
    let signed = |v: i64| {
        if v < 0 {
            -ntp_duration(v.wrapping_neg() as u64)
        } else {
            ntp_duration(v as u64)
        }
    };
    let a = rec.wrapping_sub(org) as i64;
    let b = xmt.wrapping_sub(dst) as i64;
    let clock_offset = signed(a.wrapping_add(b.wrapping_sub(a) / 2));
    let rtt = (dst.wrapping_sub(org) as i64).wrapping_sub(xmt.wrapping_sub(rec) as i64);
    let rtt = ntp_duration(rtt.max(0) as u64);
    let error0 = org.saturating_sub(rec);
    let error1 = xmt.saturating_sub(dst);
    let min_error = ntp_duration(error0.max(error1));
    let root_delay = ntp_short_duration(h.root_delay);
    let root_dispersion = ntp_short_duration(h.root_dispersion);
    Response {
        stratum: h.stratum,
        leap: h.leap,
        clock_offset,
        rtt,
        time: ntp_time_unix_nanos(xmt),
        reference_time: ntp_time_unix_nanos(h.reference),
        root_delay,
        root_dispersion,
        root_distance: rtt.wrapping_add(root_delay) / 2 + root_dispersion,
        min_error,
    }
}

impl Response {
    /// beevik/ntp's `Validate`.
    fn valid(&self) -> bool {
        const MAX_POLL_INTERVAL: i128 = (1 << 17) * 1_000_000_000;
        const MAX_DISPERSION: i64 = 16 * 1_000_000_000;
        self.stratum != 0
            && self.stratum < 16
            && self.time - self.reference_time <= MAX_POLL_INTERVAL
            && self.root_delay / 2 + self.root_dispersion <= MAX_DISPERSION
            && self.time >= self.reference_time
            && self.leap != 3
    }
}

impl NtpCollector {
    fn query(&self) -> Result<Response, NtpError> {
        let address = self.address.as_deref().map_err(|e| NtpError::Address(e))?;
        let remote: SocketAddr = address
            .to_socket_addrs()?
            .next()
            .ok_or(NtpError::Address("no address"))?;
        let local: SocketAddr = if remote.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(remote)?;
        if self.ttl != 0 {
            // As golang.org/x/net/ipv4's SetTTL: IP_TTL, whatever the socket's family.
            let ttl = self.ttl as libc::c_int;
            // SAFETY: a valid socket and a c_int option of the size given.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_TTL,
                    (&ttl as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut request = [0u8; 48];
        request[0] = (self.version << 3) | 3; // no leap warning, client mode
        request[3] = 0x20;
        let nonce: u64 = rand::random();
        request[40..48].copy_from_slice(&nonce.to_be_bytes());
        socket.set_write_timeout(Some(Duration::from_secs(1)))?;
        let sent_at = (Instant::now(), SystemTime::now());
        socket.send(&request)?;
        let mut buf = [0u8; 8192];
        let left = deadline.saturating_duration_since(Instant::now());
        socket.set_read_timeout(Some(left.max(Duration::from_micros(1))))?;
        let n = socket.recv(&mut buf)?;
        let received_at = (Instant::now(), SystemTime::now());
        let mut header = parse_header(&buf[..n])?;
        if header.mode != 4 {
            return Err(NtpError::Mode);
        }
        if header.transmit == 0 {
            return Err(NtpError::TransmitTime);
        }
        if header.origin != nonce {
            return Err(NtpError::Mismatch);
        }
        if header.receive > header.transmit {
            return Err(NtpError::Backwards);
        }
        // beevik/ntp: the receive time is never before the send time (Go compares their
        // monotonic readings); both are converted from the wall clock.
        let xmit = unix_nanos(sent_at.1);
        let mut recv = unix_nanos(received_at.1);
        if received_at.0 < sent_at.0 {
            recv = xmit;
        }
        header.origin = to_ntp_time(xmit);
        Ok(response(&header, to_ntp_time(recv)))
    }

    /// node_exporter's sanity verdict for `r`, updating the remembered leap midnight.
    fn sane(&mut self, r: &Response) -> bool {
        const DAY: i128 = 86_400 * 1_000_000_000;
        let mut max_error = self.tolerance;
        if r.leap == 1 || r.leap == 2 {
            // Go's Truncate(24h) counts from year 1, a UTC midnight: the same as from 1970.
            self.leap_midnight = Some(r.time - r.time.rem_euclid(DAY) + DAY);
        }
        if let Some(midnight) = self.leap_midnight
            && midnight - DAY < r.time
            && r.time < midnight + DAY
        {
            max_error += 1_000_000_000;
        }
        r.valid() && r.root_distance <= self.max_distance && r.min_error <= max_error
    }
}

impl Collector for NtpCollector {
    fn update(
        &mut self,
        _ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let r = self.query().map_err(|e| {
            let what = self.address.as_deref().unwrap_or("");
            CollectorError::io(format!("ntp://{what}"), std::io::Error::other(NoReply(e)))
        })?;
        let sane = self.sane(&r);
        // "Go Zero is 0001-01-01, NTP Zero 1900-01-01, UNIX Zero 1970-01-01: keep ALL ancient
        // reftime values as zero" (node_exporter: Unix() > 0, whole seconds).
        let reftime = if r.reference_time.div_euclid(1_000_000_000) > 0 {
            r.reference_time as f64 / 1e9
        } else {
            0.0
        };
        out.gauge(
            "node_ntp_leap",
            "NTPD leap second indicator, 2 bits.",
            f64::from(r.leap),
        )?;
        out.gauge(
            "node_ntp_offset_seconds",
            "ClockOffset between NTP and local clock.",
            seconds(r.clock_offset),
        )?;
        out.gauge(
            "node_ntp_reference_timestamp_seconds",
            "NTPD ReferenceTime, UNIX timestamp.",
            reftime,
        )?;
        out.gauge(
            "node_ntp_root_delay_seconds",
            "NTPD RootDelay.",
            seconds(r.root_delay),
        )?;
        out.gauge(
            "node_ntp_root_dispersion_seconds",
            "NTPD RootDispersion.",
            seconds(r.root_dispersion),
        )?;
        out.gauge("node_ntp_rtt_seconds", "RTT to NTPD.", seconds(r.rtt))?;
        out.gauge(
            "node_ntp_sanity",
            "NTPD sanity according to RFC5905 heuristics and configured limits.",
            if sane { 1.0 } else { 0.0 },
        )?;
        out.gauge("node_ntp_stratum", "NTPD stratum.", f64::from(r.stratum))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
