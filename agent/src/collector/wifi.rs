//! `wifi`: WiFi interfaces, their BSS and stations over nl80211 (generic netlink), as node_exporter
//! 1.12.1 reports them (mdlayher/wifi): the nl80211 family is looked up by name (absent, as
//! without cfg80211: `NoData`); one `NL80211_CMD_GET_INTERFACE` dump, then per named interface
//! its frequency, a `NL80211_CMD_GET_SCAN` dump (the first BSS carrying a status gives
//! `station_info`) and a `NL80211_CMD_GET_STATION` dump. `ENOENT` from either is "not found"
//! (skipped); other errors fail the collection, as in 1.12.1.
//!
//! Decisions and gaps: the generic netlink socket and the family id are kept between scrapes
//! (the family is looked up again after a failure). A message that does not decode (a short
//! attribute, where mdlayher/wifi would panic or fail) is skipped and counted as malformed.
//! `--collector.wifi.fixtures` (1.12.1's JSON test fixtures) is accepted but not supported: a
//! collector given it fails every scrape with an error saying so.

use std::path::Path;

use super::netlink::{GenlSocket, put_attr};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
};

pub static REGISTRATION: Registration = Registration {
    name: "wifi",
    default_enabled: false,
    flags,
    build,
};

const FIXTURES: &str = "collector.wifi.fixtures";

fn flags(command: clap::Command) -> clap::Command {
    command.arg(
        clap::Arg::new(FIXTURES)
            .long(FIXTURES)
            .default_value("")
            .help("test fixtures to use for wifi collector metrics"),
    )
}

fn build(ctx: &BuildContext<'_>) -> std::result::Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(WifiCollector {
        fixtures: ctx.flag(FIXTURES).is_some_and(|f| !f.is_empty()),
        socket: None,
        family: None,
    }))
}

// linux/nl80211.h.
const NL80211_CMD_GET_INTERFACE: u8 = 5;
const NL80211_CMD_GET_STATION: u8 = 17;
const NL80211_CMD_GET_SCAN: u8 = 32;
const NL80211_ATTR_IFINDEX: u16 = 3;
const NL80211_ATTR_IFNAME: u16 = 4;
const NL80211_ATTR_MAC: u16 = 6;
const NL80211_ATTR_STA_INFO: u16 = 21;
const NL80211_ATTR_WIPHY_FREQ: u16 = 38;
const NL80211_ATTR_BSS: u16 = 47;
const NL80211_BSS_BSSID: u16 = 1;
const NL80211_BSS_INFORMATION_ELEMENTS: u16 = 6;
const NL80211_BSS_STATUS: u16 = 9;
const STA_INACTIVE_TIME: u16 = 1;
const STA_RX_BYTES: u16 = 2;
const STA_TX_BYTES: u16 = 3;
const STA_SIGNAL: u16 = 7;
const STA_TX_BITRATE: u16 = 8;
const STA_RX_PACKETS: u16 = 9;
const STA_TX_PACKETS: u16 = 10;
const STA_TX_RETRIES: u16 = 11;
const STA_TX_FAILED: u16 = 12;
const STA_RX_BITRATE: u16 = 14;
const STA_CONNECTED_TIME: u16 = 16;
const STA_BEACON_LOSS: u16 = 18;
const STA_RX_BYTES64: u16 = 23;
const STA_TX_BYTES64: u16 = 24;
const RATE_INFO_BITRATE: u16 = 1;
const RATE_INFO_BITRATE32: u16 = 5;
/// The SSID information element.
const IE_SSID: u8 = 0;

type Result<T> = std::io::Result<T>;

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("nl80211: {what}"))
}

fn u32_of(p: &[u8]) -> Result<u32> {
    Ok(u32::from_ne_bytes(
        p.get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("short u32"))?,
    ))
}

fn u16_of(p: &[u8]) -> Result<u16> {
    Ok(u16::from_ne_bytes(
        p.get(..2)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("short u16"))?,
    ))
}

fn u64_of(p: &[u8]) -> Result<u64> {
    Ok(u64::from_ne_bytes(
        p.get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("short u64"))?,
    ))
}

/// Go's `net.HardwareAddr.String`: lower-case hex bytes joined by colons.
pub fn mac_string(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, byte) in b.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// mdlayher/wifi's decodeSSID: UTF-8, each invalid byte a U+FFFD.
pub fn decode_ssid(b: &[u8]) -> String {
    let mut s = String::new();
    for chunk in b.utf8_chunks() {
        s.push_str(chunk.valid());
        for _ in chunk.invalid() {
            s.push('\u{fffd}');
        }
    }
    s
}

/// One nl80211 interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    /// MHz.
    pub frequency: u32,
}

pub fn parse_interface(attrs: &[u8]) -> Result<Interface> {
    let mut ifi = Interface::default();
    super::netlink::for_each_attr(attrs, |kind, p| {
        match kind {
            NL80211_ATTR_IFINDEX => ifi.index = u32_of(p)?,
            NL80211_ATTR_IFNAME => {
                let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
                ifi.name = String::from_utf8_lossy(&p[..end]).into_owned();
            }
            NL80211_ATTR_MAC => ifi.mac = p.to_vec(),
            NL80211_ATTR_WIPHY_FREQ => ifi.frequency = u32_of(p)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(ifi)
}

/// The BSS an interface is joined to: BSSID, SSID and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bss {
    pub bssid: Vec<u8>,
    pub ssid: String,
    pub status: u32,
}

/// One `NL80211_CMD_NEW_SCAN_RESULTS` message: its BSS if that carries a status.
pub fn parse_scan_result(attrs: &[u8]) -> Result<Option<Bss>> {
    let mut found = None;
    super::netlink::for_each_attr(attrs, |kind, p| {
        if kind != NL80211_ATTR_BSS || found.is_some() {
            return Ok(());
        }
        let mut bss = Bss::default();
        let mut has_status = false;
        super::netlink::for_each_attr(p, |kind, p| {
            match kind {
                NL80211_BSS_BSSID => bss.bssid = p.to_vec(),
                NL80211_BSS_STATUS => {
                    bss.status = u32_of(p)?;
                    has_status = true;
                }
                NL80211_BSS_INFORMATION_ELEMENTS => {
                    let mut ies = p;
                    while !ies.is_empty() {
                        let (header, rest) = ies
                            .split_first_chunk::<2>()
                            .ok_or_else(|| bad("short IE"))?;
                        let [id, len] = *header;
                        let data = rest.get(..len as usize).ok_or_else(|| bad("short IE"))?;
                        if id == IE_SSID {
                            bss.ssid = decode_ssid(data);
                        }
                        ies = &rest[len as usize..];
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        if has_status {
            found = Some(bss);
        }
        Ok(())
    })?;
    Ok(found)
}

/// One station's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Station {
    pub mac: Vec<u8>,
    pub connected_seconds: f64,
    pub inactive_seconds: f64,
    pub receive_bitrate: f64,
    pub transmit_bitrate: f64,
    pub received_bytes: u64,
    pub transmitted_bytes: u64,
    pub signal: i8,
    pub transmit_retries: u32,
    pub transmit_failed: u32,
    pub beacon_loss: u32,
    pub transmitted_packets: u32,
    pub received_packets: u32,
}

fn parse_bitrate(p: &[u8]) -> Result<f64> {
    let mut rate = 0u32;
    super::netlink::for_each_attr(p, |kind, p| {
        match kind {
            RATE_INFO_BITRATE32 => rate = u32_of(p)?,
            RATE_INFO_BITRATE if rate == 0 => rate = u32::from(u16_of(p)?),
            _ => {}
        }
        Ok(())
    })?;
    // Units of 100 kbit/s.
    Ok(f64::from(rate) * 100_000.0)
}

/// One `NL80211_CMD_NEW_STATION` message; `None` without station information.
pub fn parse_station(attrs: &[u8]) -> Result<Option<Station>> {
    let mut mac = Vec::new();
    let mut station = None;
    super::netlink::for_each_attr(attrs, |kind, p| {
        match kind {
            NL80211_ATTR_MAC if station.is_none() => mac = p.to_vec(),
            NL80211_ATTR_STA_INFO if station.is_none() => {
                let mut s = Station::default();
                super::netlink::for_each_attr(p, |kind, p| {
                    match kind {
                        STA_CONNECTED_TIME => s.connected_seconds = f64::from(u32_of(p)?),
                        STA_INACTIVE_TIME => s.inactive_seconds = f64::from(u32_of(p)?) / 1000.0,
                        STA_RX_BYTES64 => s.received_bytes = u64_of(p)?,
                        STA_TX_BYTES64 => s.transmitted_bytes = u64_of(p)?,
                        // The 32-bit counts only while the 64-bit ones have said nothing.
                        STA_RX_BYTES if s.received_bytes == 0 => {
                            s.received_bytes = u64::from(u32_of(p)?)
                        }
                        STA_TX_BYTES if s.transmitted_bytes == 0 => {
                            s.transmitted_bytes = u64::from(u32_of(p)?)
                        }
                        STA_SIGNAL => {
                            s.signal = *p.first().ok_or_else(|| bad("short signal"))? as i8
                        }
                        STA_RX_PACKETS => s.received_packets = u32_of(p)?,
                        STA_TX_PACKETS => s.transmitted_packets = u32_of(p)?,
                        STA_TX_RETRIES => s.transmit_retries = u32_of(p)?,
                        STA_TX_FAILED => s.transmit_failed = u32_of(p)?,
                        STA_BEACON_LOSS => s.beacon_loss = u32_of(p)?,
                        STA_RX_BITRATE => s.receive_bitrate = parse_bitrate(p)?,
                        STA_TX_BITRATE => s.transmit_bitrate = parse_bitrate(p)?,
                        _ => {}
                    }
                    Ok(())
                })?;
                station = Some(s);
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(station.map(|mut s| {
        s.mac = mac;
        s
    }))
}

/// `bssStatusMode`.
fn mode(status: u32) -> &'static str {
    match status {
        0 | 1 => "client",
        2 => "ad-hoc",
        _ => "unknown",
    }
}

/// What one scrape found.
#[derive(Debug, Default)]
pub struct Scan {
    /// (interface, its BSS, its stations).
    pub interfaces: Vec<(Interface, Option<Bss>, Vec<Station>)>,
}

struct WifiCollector {
    fixtures: bool,
    socket: Option<GenlSocket>,
    family: Option<(u16, u8)>,
}

fn not_found(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

impl WifiCollector {
    fn scan(&mut self, ctx: &Context<'_>) -> std::result::Result<Scan, CollectorError> {
        let source = Path::new("nl80211");
        let io = |e| CollectorError::io(source, e);
        if self.socket.is_none() {
            self.socket = Some(GenlSocket::open().map_err(io)?);
            self.family = None;
        }
        let socket = self.socket.as_mut().ok_or(CollectorError::NoData)?;
        let (family, version) = match self.family {
            Some(f) => f,
            None => match socket.family("nl80211").map_err(io)? {
                Some(f) => {
                    self.family = Some(f);
                    f
                }
                None => return Err(CollectorError::NoData),
            },
        };
        let mut malformed = 0usize;
        let mut interfaces = Vec::new();
        socket
            .dump(family, NL80211_CMD_GET_INTERFACE, version, &[], |attrs| {
                match parse_interface(attrs) {
                    Ok(ifi) => interfaces.push(ifi),
                    Err(_) => malformed += 1,
                }
                Ok(())
            })
            .map_err(io)?;
        let mut scan = Scan::default();
        for ifi in interfaces {
            if ifi.name.is_empty() {
                continue;
            }
            let mut request = Vec::new();
            put_attr(&mut request, NL80211_ATTR_IFINDEX, &ifi.index.to_ne_bytes());
            if !ifi.mac.is_empty() {
                put_attr(&mut request, NL80211_ATTR_MAC, &ifi.mac);
            }
            let mut bss = None;
            let result = socket.dump(family, NL80211_CMD_GET_SCAN, version, &request, |attrs| {
                if bss.is_none() {
                    match parse_scan_result(attrs) {
                        Ok(found) => bss = found,
                        Err(_) => malformed += 1,
                    }
                }
                Ok(())
            });
            match result {
                Ok(()) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(io(e)),
            }
            let mut stations = Vec::new();
            let mut without_info = false;
            let result = socket.dump(
                family,
                NL80211_CMD_GET_STATION,
                version,
                &request,
                |attrs| {
                    match parse_station(attrs) {
                        Ok(Some(s)) => stations.push(s),
                        // mdlayher/wifi: a station message without information is "not found".
                        Ok(None) => without_info = true,
                        Err(_) => malformed += 1,
                    }
                    Ok(())
                },
            );
            match result {
                Ok(()) => {}
                Err(e) if not_found(&e) => stations.clear(),
                Err(e) => return Err(io(e)),
            }
            if without_info {
                stations.clear();
            }
            scan.interfaces.push((ifi, bss, stations));
        }
        for _ in 0..malformed {
            ctx.malformed(source, "nl80211 message");
        }
        Ok(scan)
    }
}

/// Station families in name order: (name, help, kind, value).
type StationField = fn(&Station) -> f64;
const STATION_FAMILIES: [(&str, &str, Kind, StationField); 13] = [
    (
        "node_wifi_station_beacon_loss_total",
        "The total number of times a station has detected a beacon loss.",
        Kind::Counter,
        |s| f64::from(s.beacon_loss),
    ),
    (
        "node_wifi_station_connected_seconds_total",
        "The total number of seconds a station has been connected to an access point.",
        Kind::Counter,
        |s| s.connected_seconds,
    ),
    (
        "node_wifi_station_inactive_seconds",
        "The number of seconds since any wireless activity has occurred on a station.",
        Kind::Gauge,
        |s| s.inactive_seconds,
    ),
    // node_wifi_station_info sorts here.
    (
        "node_wifi_station_receive_bits_per_second",
        "The current WiFi receive bitrate of a station, in bits per second.",
        Kind::Gauge,
        |s| s.receive_bitrate,
    ),
    (
        "node_wifi_station_receive_bytes_total",
        "The total number of bytes received by a WiFi station.",
        Kind::Counter,
        |s| s.received_bytes as f64,
    ),
    (
        "node_wifi_station_received_packets_total",
        "The total number of packets received by a station.",
        Kind::Counter,
        |s| f64::from(s.received_packets),
    ),
    (
        "node_wifi_station_signal_dbm",
        "The current WiFi signal strength, in decibel-milliwatts (dBm).",
        Kind::Gauge,
        |s| f64::from(s.signal),
    ),
    (
        "node_wifi_station_transmit_bits_per_second",
        "The current WiFi transmit bitrate of a station, in bits per second.",
        Kind::Gauge,
        |s| s.transmit_bitrate,
    ),
    (
        "node_wifi_station_transmit_bytes_total",
        "The total number of bytes transmitted by a WiFi station.",
        Kind::Counter,
        |s| s.transmitted_bytes as f64,
    ),
    (
        "node_wifi_station_transmit_failed_total",
        "The total number of times a station has failed to send a packet.",
        Kind::Counter,
        |s| f64::from(s.transmit_failed),
    ),
    (
        "node_wifi_station_transmit_retries_total",
        "The total number of times a station has had to retry while sending a packet.",
        Kind::Counter,
        |s| f64::from(s.transmit_retries),
    ),
    (
        "node_wifi_station_transmitted_packets_total",
        "The total number of packets transmitted by a station.",
        Kind::Counter,
        |s| f64::from(s.transmitted_packets),
    ),
    ("", "", Kind::Gauge, |_| 0.0),
];
/// Where node_wifi_station_info goes among [`STATION_FAMILIES`].
const INFO_POSITION: usize = 3;

/// Writes a scan's families in name order, samples sorted by their label values.
pub fn write_scan(
    scan: &Scan,
    out: &mut MetricWriter<'_, '_>,
) -> std::result::Result<(), CollectorError> {
    let mut ifaces: Vec<_> = scan.interfaces.iter().collect();
    ifaces.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    if !ifaces.is_empty() {
        let mut f = out.family(
            "node_wifi_interface_frequency_hertz",
            "The current frequency a WiFi interface is operating at, in hertz.",
            Kind::Gauge,
        )?;
        for (ifi, _, _) in &ifaces {
            f.sample(&[("device", &ifi.name)], f64::from(ifi.frequency) * 1e6)?;
        }
    }
    // (device, mac, station) sorted by labels.
    let mut stations: Vec<(&str, String, &Station)> = ifaces
        .iter()
        .flat_map(|(ifi, _, st)| {
            st.iter()
                .map(|s| (ifi.name.as_str(), mac_string(&s.mac), s))
        })
        .collect();
    stations.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for (i, (name, help, kind, value)) in STATION_FAMILIES.iter().enumerate() {
        if i == INFO_POSITION {
            let mut infos: Vec<(String, &str, &str, &str)> = ifaces
                .iter()
                .filter_map(|(ifi, bss, _)| {
                    let bss = bss.as_ref()?;
                    Some((
                        mac_string(&bss.bssid),
                        ifi.name.as_str(),
                        mode(bss.status),
                        bss.ssid.as_str(),
                    ))
                })
                .collect();
            if !infos.is_empty() {
                infos.sort();
                let mut f = out.family(
                    "node_wifi_station_info",
                    "Labeled WiFi interface station information as provided by the operating system.",
                    Kind::Gauge,
                )?;
                for (bssid, device, mode, ssid) in &infos {
                    f.sample(
                        &[
                            ("bssid", bssid),
                            ("device", device),
                            ("mode", mode),
                            ("ssid", ssid),
                        ],
                        1.0,
                    )?;
                }
            }
        }
        if name.is_empty() || stations.is_empty() {
            continue;
        }
        let mut f = out.family(name, help, *kind)?;
        for (device, mac, s) in &stations {
            f.sample(&[("device", device), ("mac_address", mac)], value(s))?;
        }
    }
    Ok(())
}

impl Collector for WifiCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> std::result::Result<(), CollectorError> {
        if self.fixtures {
            return Err(CollectorError::Parse {
                path: FIXTURES.into(),
                reason: "wifi test fixtures are not supported by this agent".into(),
            });
        }
        let scan = match self.scan(ctx) {
            Ok(scan) => scan,
            Err(e) => {
                if !matches!(e, CollectorError::NoData) {
                    self.socket = None;
                }
                return Err(e);
            }
        };
        write_scan(&scan, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_attr(&mut out, kind, payload);
        out
    }

    const MAC: [u8; 6] = [0x02, 0x1a, 0x11, 0xf0, 0x00, 0x01];
    const AP: [u8; 6] = [0xa0, 0x63, 0x91, 0x2b, 0x9c, 0x40];

    fn interface_msg() -> Vec<u8> {
        let mut b = attr(NL80211_ATTR_IFINDEX, &3u32.to_ne_bytes());
        b.extend(attr(NL80211_ATTR_IFNAME, b"wlp2s0\0"));
        b.extend(attr(5, &2u32.to_ne_bytes())); // IFTYPE station
        b.extend(attr(NL80211_ATTR_MAC, &MAC));
        b.extend(attr(NL80211_ATTR_WIPHY_FREQ, &5180u32.to_ne_bytes()));
        b
    }

    fn scan_msg(status: Option<u32>, ssid: &[u8]) -> Vec<u8> {
        let mut bss = attr(NL80211_BSS_BSSID, &AP);
        bss.extend(attr(2, &5180u32.to_ne_bytes()));
        let mut ies = vec![IE_SSID, ssid.len() as u8];
        ies.extend_from_slice(ssid);
        ies.extend([1, 2, 0x8c, 0x12]); // supported rates
        bss.extend(attr(NL80211_BSS_INFORMATION_ELEMENTS, &ies));
        if let Some(s) = status {
            bss.extend(attr(NL80211_BSS_STATUS, &s.to_ne_bytes()));
        }
        let mut b = attr(NL80211_ATTR_IFINDEX, &3u32.to_ne_bytes());
        b.extend(attr(NL80211_ATTR_BSS, &bss));
        b
    }

    fn rate(bitrate32: Option<u32>, bitrate: u16) -> Vec<u8> {
        let mut r = attr(RATE_INFO_BITRATE, &bitrate.to_ne_bytes());
        if let Some(b) = bitrate32 {
            r.extend(attr(RATE_INFO_BITRATE32, &b.to_ne_bytes()));
        }
        r
    }

    fn station_msg() -> Vec<u8> {
        let mut info = attr(STA_INACTIVE_TIME, &1250u32.to_ne_bytes());
        info.extend(attr(STA_RX_BYTES, &4000u32.to_ne_bytes()));
        info.extend(attr(STA_TX_BYTES, &3000u32.to_ne_bytes()));
        info.extend(attr(STA_RX_BYTES64, &(5u64 << 32).to_ne_bytes()));
        info.extend(attr(STA_SIGNAL, &[(-52i8) as u8]));
        info.extend(attr(STA_TX_BITRATE, &rate(Some(8667), 8667)));
        info.extend(attr(STA_RX_BITRATE, &rate(None, 5400)));
        info.extend(attr(STA_RX_PACKETS, &321u32.to_ne_bytes()));
        info.extend(attr(STA_TX_PACKETS, &123u32.to_ne_bytes()));
        info.extend(attr(STA_TX_RETRIES, &7u32.to_ne_bytes()));
        info.extend(attr(STA_TX_FAILED, &2u32.to_ne_bytes()));
        info.extend(attr(STA_CONNECTED_TIME, &3600u32.to_ne_bytes()));
        info.extend(attr(STA_BEACON_LOSS, &1u32.to_ne_bytes()));
        let mut b = attr(NL80211_ATTR_IFINDEX, &3u32.to_ne_bytes());
        b.extend(attr(NL80211_ATTR_MAC, &AP));
        b.extend(attr(NL80211_ATTR_STA_INFO, &info));
        b
    }

    #[test]
    fn decodes_nl80211_messages() {
        let ifi = parse_interface(&interface_msg()).unwrap();
        assert_eq!(ifi.name, "wlp2s0");
        assert_eq!(ifi.index, 3);
        assert_eq!(ifi.frequency, 5180);
        assert_eq!(mac_string(&ifi.mac), "02:1a:11:f0:00:01");
        assert_eq!(parse_scan_result(&scan_msg(None, b"x")).unwrap(), None);
        let bss = parse_scan_result(&scan_msg(Some(1), b"caf\xc3\xa9 \xff\xfe"))
            .unwrap()
            .unwrap();
        assert_eq!(bss.ssid, "café \u{fffd}\u{fffd}");
        assert_eq!(bss.status, 1);
        let s = parse_station(&station_msg()).unwrap().unwrap();
        assert_eq!(s.received_bytes, 5 << 32);
        assert_eq!(s.transmitted_bytes, 3000);
        assert_eq!(s.signal, -52);
        assert_eq!(s.inactive_seconds, 1.25);
        assert_eq!(s.transmit_bitrate, 866_700_000.0);
        assert_eq!(s.receive_bitrate, 540_000_000.0);
        assert_eq!(parse_station(&attr(NL80211_ATTR_MAC, &AP)).unwrap(), None);
        // Truncations never panic.
        for msg in [interface_msg(), scan_msg(Some(0), b"ssid"), station_msg()] {
            for cut in 0..msg.len() {
                let _ = parse_interface(&msg[..cut]);
                let _ = parse_scan_result(&msg[..cut]);
                let _ = parse_station(&msg[..cut]);
            }
        }
        // A short u32 is an error, not a panic.
        assert!(parse_interface(&attr(NL80211_ATTR_WIPHY_FREQ, &[1, 2])).is_err());
    }

    #[test]
    fn renders_a_station_golden() {
        let scan = Scan {
            interfaces: vec![
                (
                    parse_interface(&interface_msg()).unwrap(),
                    parse_scan_result(&scan_msg(Some(1), b"home")).unwrap(),
                    vec![parse_station(&station_msg()).unwrap().unwrap()],
                ),
                (
                    Interface {
                        index: 4,
                        name: "wlan1".into(),
                        mac: vec![],
                        frequency: 2412,
                    },
                    None,
                    vec![],
                ),
            ],
        };
        struct Fixed(Scan);
        impl Collector for Fixed {
            fn update(
                &mut self,
                _: &Context<'_>,
                out: &mut MetricWriter<'_, '_>,
            ) -> std::result::Result<(), CollectorError> {
                write_scan(&self.0, out)
            }
        }
        let text = crate::collector::testing::render(
            "wifi",
            Box::new(Fixed(scan)),
            crate::collector::Paths::default(),
        );
        crate::collector::testing::assert_golden(
            &crate::collector::testing::fixture("hw-netlink/golden/wifi.prom"),
            &text,
        );
    }

    #[test]
    fn no_wlan_here() {
        // Against the real kernel: without cfg80211 there is no nl80211 family (NoData); with it
        // and no WLAN, an empty, successful collection. Either way no wifi families.
        let paths = crate::collector::Paths::default();
        let c = crate::collector::testing::build_with(&REGISTRATION, &["--collector.wifi"], &paths);
        let text = crate::collector::testing::render("wifi", c, paths);
        assert!(!text.contains("node_wifi_"), "{text}");
        let mut socket = GenlSocket::open().unwrap();
        let has_nl80211 = socket.family("nl80211").unwrap().is_some();
        // The controller always knows itself.
        assert!(socket.family("nlctrl").unwrap().is_some());
        let success = if has_nl80211 { 1 } else { 0 };
        assert!(
            text.contains(&format!(
                "node_scrape_collector_success{{collector=\"wifi\"}} {success}"
            )),
            "{text}"
        );
    }
}
