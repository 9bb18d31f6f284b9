//! Wake-on-LAN: MAC address parsing and the magic packet (6 × 0xFF, then the MAC 16 times). Pure,
//! so the controller and a peer agent on the node's segment build the same bytes.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Length of a magic packet.
pub const MAGIC_PACKET_LEN: usize = 6 + 16 * 6;
/// The UDP port Wake-on-LAN senders use by convention (the discard port).
pub const DEFAULT_PORT: u16 = 9;

/// A 48-bit MAC address, written `aa:bb:cc:dd:ee:ff` (also accepted with `-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddress(pub [u8; 6]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MAC address {input:?} is not six hex pairs separated by ':' or '-' ({reason})")]
pub struct MacParseError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for MacAddress {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| MacParseError {
            input: s.chars().take(40).collect(),
            reason,
        };
        let separator = if s.contains(':') { ':' } else { '-' };
        if s.contains(':') && s.contains('-') {
            return Err(err("mixed separators"));
        }
        let mut bytes = [0u8; 6];
        let mut parts = s.split(separator);
        for byte in bytes.iter_mut() {
            let part = parts.next().ok_or_else(|| err("fewer than six parts"))?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err("each part is two hex digits"));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err("each part is two hex digits"))?;
        }
        if parts.next().is_some() {
            return Err(err("more than six parts"));
        }
        Ok(MacAddress(bytes))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl TryFrom<String> for MacAddress {
    type Error = MacParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MacAddress> for String {
    fn from(m: MacAddress) -> String {
        m.to_string()
    }
}

/// The magic packet that wakes the NIC with this MAC.
pub fn magic_packet(mac: MacAddress) -> [u8; MAGIC_PACKET_LEN] {
    let mut packet = [0xFFu8; MAGIC_PACKET_LEN];
    for chunk in packet[6..].chunks_exact_mut(6) {
        chunk.copy_from_slice(&mac.0);
    }
    packet
}

/// The directed broadcast address of `address/prefix_len` (e.g. 10.0.3.17/24 → 10.0.3.255),
/// where a magic packet for a host on that subnet goes. `None` for a prefix over 32.
pub fn directed_broadcast(address: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Addr> {
    if prefix_len > 32 {
        return None;
    }
    let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
    Some(Ipv4Addr::from(u32::from(address) | host_bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_separators_and_prints_colons() {
        let m: MacAddress = "AA:bb:0c:dd:ee:ff".parse().unwrap();
        assert_eq!(m.0, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0xff]);
        assert_eq!("aa-bb-0c-dd-ee-ff".parse::<MacAddress>().unwrap(), m);
        assert_eq!(m.to_string(), "aa:bb:0c:dd:ee:ff");
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:fg",
            "aa:bb-cc:dd:ee:ff",
            "aabbccddeeff",
            "a:bb:cc:dd:ee:ff",
            "aaa:bb:cc:dd:ee:ff",
            "+a:bb:cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:ff ",
        ] {
            assert!(bad.parse::<MacAddress>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn magic_packet_is_sync_stream_then_sixteen_macs() {
        let mac = MacAddress([1, 2, 3, 4, 5, 6]);
        let p = magic_packet(mac);
        assert_eq!(p.len(), 102);
        assert_eq!(&p[..6], &[0xFF; 6]);
        for i in 0..16 {
            assert_eq!(&p[6 + i * 6..12 + i * 6], &[1, 2, 3, 4, 5, 6]);
        }
    }

    #[test]
    fn directed_broadcasts() {
        let a = Ipv4Addr::new(10, 0, 3, 17);
        assert_eq!(
            directed_broadcast(a, 24),
            Some(Ipv4Addr::new(10, 0, 3, 255))
        );
        assert_eq!(
            directed_broadcast(a, 22),
            Some(Ipv4Addr::new(10, 0, 3, 255))
        );
        assert_eq!(
            directed_broadcast(a, 16),
            Some(Ipv4Addr::new(10, 0, 255, 255))
        );
        assert_eq!(directed_broadcast(a, 32), Some(a));
        assert_eq!(directed_broadcast(a, 0), Some(Ipv4Addr::BROADCAST));
        assert_eq!(directed_broadcast(a, 33), None);
    }

    #[test]
    fn serde_uses_the_text_form() {
        let m = MacAddress([0xde, 0xad, 0xbe, 0xef, 0, 1]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"de:ad:be:ef:00:01\"");
        assert_eq!(serde_json::from_str::<MacAddress>(&json).unwrap(), m);
        assert!(serde_json::from_str::<MacAddress>("\"nope\"").is_err());
    }
}
