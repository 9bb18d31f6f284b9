//! Sending Wake-on-LAN magic packets (built by `nodewarden_shared::wol`) over UDP, to a subnet's
//! directed broadcast address or any other address (a peer on the node's segment relays too).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

pub use nodewarden_shared::wol::{
    DEFAULT_PORT, MAGIC_PACKET_LEN, MacAddress, MacParseError, directed_broadcast, magic_packet,
};
use tokio::net::UdpSocket;

#[derive(Debug, thiserror::Error)]
pub enum WolError {
    #[error("opening a UDP socket on {bind}: {source}")]
    Bind {
        bind: SocketAddr,
        source: std::io::Error,
    },
    #[error("sending the magic packet for {mac} to {target}: {source}")]
    Send {
        mac: MacAddress,
        target: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "sending the magic packet for {mac} to {target}: only {sent} of {MAGIC_PACKET_LEN} bytes went out"
    )]
    Short {
        mac: MacAddress,
        target: SocketAddr,
        sent: usize,
    },
}

/// Sends one magic packet per MAC to `target` (e.g. `10.0.3.255:9`), from an ephemeral port on
/// the unspecified address of the target's family (loopback for a loopback target).
pub async fn send_magic_packets(macs: &[MacAddress], target: SocketAddr) -> Result<(), WolError> {
    let bind = match target {
        SocketAddr::V4(a) if a.ip().is_loopback() => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        SocketAddr::V6(a) if a.ip().is_loopback() => SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    send_magic_packets_from(bind, macs, target).await
}

/// As [`send_magic_packets`], from a chosen local address.
pub async fn send_magic_packets_from(
    bind: SocketAddr,
    macs: &[MacAddress],
    target: SocketAddr,
) -> Result<(), WolError> {
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|source| WolError::Bind { bind, source })?;
    // Needed for a directed broadcast address; harmless for a unicast one.
    socket
        .set_broadcast(true)
        .map_err(|source| WolError::Bind { bind, source })?;
    for &mac in macs {
        let packet = magic_packet(mac);
        let sent = socket
            .send_to(&packet, target)
            .await
            .map_err(|source| WolError::Send {
                mac,
                target,
                source,
            })?;
        if sent != packet.len() {
            return Err(WolError::Short { mac, target, sent });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_receives_exactly_the_magic_packets() {
        let listener = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let macs: Vec<MacAddress> = ["52:54:00:12:34:56", "aa-bb-cc-dd-ee-ff"]
            .iter()
            .map(|m| m.parse().unwrap())
            .collect();
        send_magic_packets_from("127.0.0.1:0".parse().unwrap(), &macs, target)
            .await
            .unwrap();
        for mac in &macs {
            let mut buf = [0u8; 512];
            let (n, _) = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                listener.recv_from(&mut buf),
            )
            .await
            .expect("a packet within 5 s")
            .unwrap();
            assert_eq!(n, 102);
            let mut expected = vec![0xFF; 6];
            for _ in 0..16 {
                expected.extend_from_slice(&mac.0);
            }
            assert_eq!(&buf[..n], &expected[..]);
        }
    }
}
