//! A minimal rtnetlink client: one `RTM_GETLINK` dump for every interface's name and
//! `rtnl_link_stats64`, as node_exporter 1.5's netdev collector reads them. The socket is kept
//! open across scrapes; parsing is a plain function over the received bytes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_ADDRESS: u16 = 1;
const IFLA_BROADCAST: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_TXQLEN: u16 = 13;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKMODE: u16 = 17;
const IFLA_IFALIAS: u16 = 20;
const IFLA_STATS64: u16 = 23;
const IFLA_GROUP: u16 = 27;
const IFLA_CARRIER: u16 = 33;
const IFLA_CARRIER_CHANGES: u16 = 35;
const IFLA_CARRIER_UP_COUNT: u16 = 47;
const IFLA_CARRIER_DOWN_COUNT: u16 = 48;

/// The `rtnl_link_stats64` counters, in kernel order (missing trailing ones are zero).
pub const STATS64_FIELDS: usize = 24;
pub const RX_PACKETS: usize = 0;
pub const TX_PACKETS: usize = 1;
pub const RX_BYTES: usize = 2;
pub const TX_BYTES: usize = 3;
pub const RX_ERRORS: usize = 4;
pub const TX_ERRORS: usize = 5;
pub const RX_DROPPED: usize = 6;
pub const TX_DROPPED: usize = 7;
pub const MULTICAST: usize = 8;
pub const COLLISIONS: usize = 9;
pub const RX_LENGTH_ERRORS: usize = 10;
pub const RX_OVER_ERRORS: usize = 11;
pub const RX_CRC_ERRORS: usize = 12;
pub const RX_FRAME_ERRORS: usize = 13;
pub const RX_FIFO_ERRORS: usize = 14;
pub const RX_MISSED_ERRORS: usize = 15;
pub const TX_ABORTED_ERRORS: usize = 16;
pub const TX_CARRIER_ERRORS: usize = 17;
pub const TX_FIFO_ERRORS: usize = 18;
pub const TX_HEARTBEAT_ERRORS: usize = 19;
pub const TX_WINDOW_ERRORS: usize = 20;
pub const RX_COMPRESSED: usize = 21;
pub const TX_COMPRESSED: usize = 22;
pub const RX_NOHANDLER: usize = 23;

/// One interface from the dump.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Link {
    pub name: String,
    pub stats: [u64; STATS64_FIELDS],
    pub index: i32,
    /// `ifi_type` (ARPHRD_*).
    pub kind: u16,
    /// `ifi_flags` (dev_get_flags(): includes the RUNNING/LOWER_UP/DORMANT state bits).
    pub flags: u32,
    pub address: Option<Vec<u8>>,
    pub broadcast: Option<Vec<u8>>,
    pub mtu: Option<u32>,
    /// Only present when it differs from the index.
    pub link: Option<u32>,
    pub txqlen: Option<u32>,
    pub operstate: Option<u8>,
    pub linkmode: Option<u8>,
    pub ifalias: Option<String>,
    pub group: Option<u32>,
    pub carrier: Option<u8>,
    pub carrier_changes: Option<u32>,
    pub carrier_up_count: Option<u32>,
    pub carrier_down_count: Option<u32>,
}

pub struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// What one received datagram held.
#[derive(Debug, PartialEq)]
pub enum Batch {
    More,
    Done,
}

/// Parses one datagram of a `RTM_GETLINK` dump answering `seq`, appending links to `out`.
pub fn parse_batch(mut b: &[u8], seq: u32, out: &mut Vec<Link>) -> io::Result<Batch> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"));
    while b.len() >= NLMSG_HDRLEN {
        let len = u32_at(b, 0).ok_or_else(|| invalid("short header"))? as usize;
        let kind = u16_at(b, 4).ok_or_else(|| invalid("short header"))?;
        let msg_seq = u32_at(b, 8).ok_or_else(|| invalid("short header"))?;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(invalid("bad message length"));
        }
        let body = &b[NLMSG_HDRLEN..len];
        b = b.get(align4(len)..).unwrap_or(&[]);
        if msg_seq != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(Batch::Done),
            NLMSG_ERROR => {
                let errno = u32_at(body, 0).ok_or_else(|| invalid("short error"))? as i32;
                if errno == 0 {
                    continue;
                }
                return Err(io::Error::from_raw_os_error(-errno));
            }
            RTM_NEWLINK => {
                if body.len() < IFINFOMSG_LEN {
                    return Err(invalid("short ifinfomsg"));
                }
                let mut attrs = &body[IFINFOMSG_LEN..];
                let mut link = Link {
                    kind: u16_at(body, 2).unwrap_or(0),
                    index: u32_at(body, 4).unwrap_or(0) as i32,
                    flags: u32_at(body, 8).unwrap_or(0),
                    ..Link::default()
                };
                while attrs.len() >= 4 {
                    let alen = u16_at(attrs, 0).unwrap_or(0) as usize;
                    let akind = u16_at(attrs, 2).unwrap_or(0) & 0x3fff;
                    if alen < 4 || alen > attrs.len() {
                        return Err(invalid("bad attribute length"));
                    }
                    let payload = &attrs[4..alen];
                    match akind {
                        IFLA_IFNAME => {
                            let end = payload
                                .iter()
                                .position(|&c| c == 0)
                                .unwrap_or(payload.len());
                            link.name = String::from_utf8_lossy(&payload[..end]).into_owned();
                        }
                        IFLA_ADDRESS => link.address = Some(payload.to_vec()),
                        IFLA_BROADCAST => link.broadcast = Some(payload.to_vec()),
                        IFLA_MTU => link.mtu = u32_at(payload, 0),
                        IFLA_LINK => link.link = u32_at(payload, 0),
                        IFLA_TXQLEN => link.txqlen = u32_at(payload, 0),
                        IFLA_OPERSTATE => link.operstate = payload.first().copied(),
                        IFLA_LINKMODE => link.linkmode = payload.first().copied(),
                        IFLA_IFALIAS => {
                            let end = payload
                                .iter()
                                .position(|&c| c == 0)
                                .unwrap_or(payload.len());
                            link.ifalias =
                                Some(String::from_utf8_lossy(&payload[..end]).into_owned());
                        }
                        IFLA_GROUP => link.group = u32_at(payload, 0),
                        IFLA_CARRIER => link.carrier = payload.first().copied(),
                        IFLA_CARRIER_CHANGES => link.carrier_changes = u32_at(payload, 0),
                        IFLA_CARRIER_UP_COUNT => link.carrier_up_count = u32_at(payload, 0),
                        IFLA_CARRIER_DOWN_COUNT => link.carrier_down_count = u32_at(payload, 0),
                        IFLA_STATS64 => {
                            for (slot, chunk) in link.stats.iter_mut().zip(payload.chunks_exact(8))
                            {
                                *slot = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
                            }
                        }
                        _ => {}
                    }
                    attrs = attrs.get(align4(alen)..).unwrap_or(&[]);
                }
                if !link.name.is_empty() {
                    out.push(link);
                }
            }
            _ => {}
        }
    }
    Ok(Batch::More)
}

/// The request for a dump of every link.
pub fn dump_request(seq: u32) -> [u8; NLMSG_HDRLEN + IFINFOMSG_LEN] {
    let mut req = [0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
    req[0..4].copy_from_slice(&((NLMSG_HDRLEN + IFINFOMSG_LEN) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    // pid 0 (the kernel assigns ours); ifinfomsg all zero: AF_UNSPEC, every interface.
    req
}

impl RouteSocket {
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a freshly created descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(RouteSocket {
            fd,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Every interface's name and counters, into `out` (cleared first).
    pub fn links(&mut self, out: &mut Vec<Link>) -> io::Result<()> {
        out.clear();
        self.seq = self.seq.wrapping_add(1);
        let req = dump_request(self.seq);
        // SAFETY: req is a valid buffer of the given length; the socket is open.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            // SAFETY: buf is a valid writable buffer of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let received = self.buf.get(..n as usize).unwrap_or(&[]);
            if received.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "netlink: empty read",
                ));
            }
            if parse_batch(received, self.seq, out)? == Batch::Done {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize(align4(m.len()), 0);
        m
    }

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(payload);
        a.resize(align4(a.len()), 0);
        a
    }

    fn link(name: &str, stats: &[u64]) -> Vec<u8> {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[4..8].copy_from_slice(&7i32.to_ne_bytes());
        body.extend(attr(IFLA_MTU, &1500u32.to_ne_bytes()));
        body.extend(attr(IFLA_ADDRESS, &[2, 0xfc, 0, 0, 0, 1]));
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        body.extend(attr(IFLA_IFNAME, &cname));
        let raw: Vec<u8> = stats.iter().flat_map(|v| v.to_ne_bytes()).collect();
        body.extend(attr(IFLA_STATS64, &raw));
        body
    }

    #[test]
    fn parses_links_and_done() {
        let mut stats = [0u64; STATS64_FIELDS];
        stats[RX_BYTES] = 1234;
        stats[RX_NOHANDLER] = 7;
        let mut datagram = message(RTM_NEWLINK, 5, &link("veth-ab.c", &stats));
        // An old kernel without rx_nohandler: 23 counters.
        datagram.extend(message(RTM_NEWLINK, 5, &link("eth0.100", &stats[..23])));
        datagram.extend(message(RTM_NEWLINK, 4, &link("stale", &stats)));
        let mut out = Vec::new();
        assert_eq!(parse_batch(&datagram, 5, &mut out).unwrap(), Batch::More);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].name, "veth-ab.c");
        assert_eq!(out[0].stats[RX_BYTES], 1234);
        assert_eq!(out[0].stats[RX_NOHANDLER], 7);
        assert_eq!(out[0].index, 7);
        assert_eq!(out[0].mtu, Some(1500));
        assert_eq!(out[0].address.as_deref(), Some(&[2, 0xfc, 0, 0, 0, 1][..]));
        assert_eq!(out[0].carrier, None);
        assert_eq!(out[1].stats[RX_NOHANDLER], 0);
        let done = message(NLMSG_DONE, 5, &0u32.to_ne_bytes());
        assert_eq!(parse_batch(&done, 5, &mut out).unwrap(), Batch::Done);
    }

    #[test]
    fn errors_and_garbage() {
        let err = message(NLMSG_ERROR, 1, &(-libc::EPERM).to_ne_bytes());
        let mut out = Vec::new();
        assert_eq!(
            parse_batch(&err, 1, &mut out).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        let mut bad = message(RTM_NEWLINK, 1, &link("x", &[1]));
        bad[0] = 0xff; // length beyond the datagram
        assert!(parse_batch(&bad, 1, &mut out).is_err());
        let mut bad_attr = message(RTM_NEWLINK, 1, &link("x", &[1]));
        bad_attr[NLMSG_HDRLEN + IFINFOMSG_LEN] = 0xff;
        assert!(parse_batch(&bad_attr, 1, &mut out).is_err());
    }

    #[test]
    fn dumps_this_hosts_links() {
        let mut socket = RouteSocket::open().unwrap();
        let mut links = Vec::new();
        socket.links(&mut links).unwrap();
        assert!(links.iter().any(|l| l.name == "lo"), "{links:?}");
        // The socket is reusable.
        socket.links(&mut links).unwrap();
        assert!(links.iter().any(|l| l.name == "lo"));
    }
}
