//! A minimal netlink client for the dumps the agent makes: rtnetlink `RTM_GETLINK` (every
//! interface's name and `rtnl_link_stats64`, as node_exporter 1.5's netdev collector reads them),
//! rtnetlink `RTM_GETROUTE` (every route, for network_route), rtnetlink `RTM_GETQDISC` (every
//! qdisc and its statistics, for qdisc), generic netlink dumps (a family's id by name, nl80211's
//! interfaces, scan results and stations, for wifi) and sock_diag
//! `SOCK_DIAG_BY_FAMILY` for UDP sockets (their queues, for udp_queues, cheaper than
//! /proc/net/udp). One socket type and receive loop serve them all; sockets are kept open across
//! scrapes; building requests and parsing answers are plain functions over bytes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `NETLINK_SOCK_DIAG` (linux/netlink.h).
const NETLINK_SOCK_DIAG: libc::c_int = 4;
/// linux/sock_diag.h: the request and answer type of a by-family socket dump.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct inet_diag_req_v2` and `struct inet_diag_msg` (linux/inet_diag.h).
const INET_DIAG_REQ_V2_LEN: usize = 56;
const INET_DIAG_MSG_LEN: usize = 72;
const INET_DIAG_MSG_RQUEUE: usize = 56;
const INET_DIAG_MSG_WQUEUE: usize = 60;
/// Received datagrams of a dump: the kernel fills at most 32 KiB per datagram unless a message
/// needs more (`netlink_dump`, `min_dump_alloc`: large links with many VFs); a longer one is
/// reported as truncated rather than misparsed.
const ROUTE_BUFFER: usize = 64 * 1024;
const DIAG_BUFFER: usize = 32 * 1024;
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

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
/// `sizeof(struct rtmsg)`.
const RTMSG_LEN: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_MULTIPATH: u16 = 9;
/// `sizeof(struct rtnexthop)`.
const RTNEXTHOP_LEN: usize = 8;

/// An IPv4 or IPv6 address as an attribute carried it (4 or 16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawIp {
    len: u8,
    bytes: [u8; 16],
}

impl RawIp {
    /// An address attribute's payload; only 4 or 16 bytes are addresses.
    pub fn new(b: &[u8]) -> Option<Self> {
        if b.len() != 4 && b.len() != 16 {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes[..b.len()].copy_from_slice(b);
        Some(RawIp {
            len: b.len() as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Go's `net.IP.To4`: the IPv4 address, also of an IPv4-mapped IPv6 one.
    pub fn to4(&self) -> Option<[u8; 4]> {
        let b = self.as_bytes();
        match b.len() {
            4 => Some([b[0], b[1], b[2], b[3]]),
            16 if b[..10].iter().all(|&x| x == 0) && b[10] == 0xff && b[11] == 0xff => {
                Some([b[12], b[13], b[14], b[15]])
            }
            _ => None,
        }
    }

    /// Writes the address as Go's `net.IP.String` does: dotted quad for IPv4 (and IPv4-mapped
    /// IPv6), RFC 5952 for IPv6 (the first longest run of two or more zero groups as `::`).
    pub fn write_go(&self, out: &mut String) {
        use std::fmt::Write as _;
        if let Some(v4) = self.to4() {
            let _ = write!(out, "{}.{}.{}.{}", v4[0], v4[1], v4[2], v4[3]);
            return;
        }
        let b = &self.bytes;
        let groups: [u16; 8] =
            std::array::from_fn(|i| u16::from_be_bytes([b[2 * i], b[2 * i + 1]]));
        let (mut best, mut best_len) = (8, 0);
        let mut i = 0;
        while i < 8 {
            if groups[i] == 0 {
                let start = i;
                while i < 8 && groups[i] == 0 {
                    i += 1;
                }
                if i - start > best_len && i - start >= 2 {
                    (best, best_len) = (start, i - start);
                }
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < 8 {
            if i == best {
                out.push_str("::");
                i += best_len;
                continue;
            }
            if i > 0 && i != best + best_len {
                out.push(':');
            }
            let _ = write!(out, "{:x}", groups[i]);
            i += 1;
        }
    }
}

/// One next hop of a multipath route (`struct rtnexthop` and its `RTA_GATEWAY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    pub hops: u8,
    pub gateway: Option<RawIp>,
}

/// One `RTM_NEWROUTE` of a route dump: the `rtmsg` fields and the attributes node_exporter
/// reads (jsimonetti/rtnetlink's decoding).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    pub family: u8,
    pub dst_len: u8,
    pub table: u8,
    pub protocol: u8,
    /// `rtm_type` (RTN_UNICAST, RTN_LOCAL …).
    pub kind: u8,
    pub dst: Option<RawIp>,
    pub prefsrc: Option<RawIp>,
    pub gateway: Option<RawIp>,
    pub oif: u32,
    pub priority: u32,
    pub multipath: Vec<NextHop>,
}

/// Walks the attributes in `b`, handing each (type without its flag bits, payload) to `f`.
/// A length running past the end, or shorter than an attribute header, is an error.
pub fn for_each_attr(
    mut b: &[u8],
    mut f: impl FnMut(u16, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    while b.len() >= 4 {
        let alen = u16_at(b, 0).unwrap_or(0) as usize;
        let akind = u16_at(b, 2).unwrap_or(0) & 0x3fff;
        if alen < 4 || alen > b.len() {
            return Err(invalid("bad attribute length"));
        }
        f(akind, &b[4..alen])?;
        b = b.get(align4(alen)..).unwrap_or(&[]);
    }
    Ok(())
}

fn ip_attr(payload: &[u8]) -> io::Result<RawIp> {
    RawIp::new(payload).ok_or_else(|| invalid("address attribute neither 4 nor 16 bytes"))
}

fn u32_attr(payload: &[u8]) -> io::Result<u32> {
    if payload.len() != 4 {
        return Err(invalid("u32 attribute not 4 bytes"));
    }
    u32_at(payload, 0).ok_or_else(|| invalid("short u32 attribute"))
}

/// One `RTM_NEWROUTE` body (`rtmsg` and attributes). Errors where rtnetlink's decoder fails:
/// an address of another length than 4 or 16, a u32 of another than 4, a bad next hop.
pub fn parse_route(body: &[u8]) -> io::Result<Route> {
    if body.len() < RTMSG_LEN {
        return Err(invalid("short rtmsg"));
    }
    let mut route = Route {
        family: body[0],
        dst_len: body[1],
        table: body[4],
        protocol: body[5],
        kind: body[7],
        ..Route::default()
    };
    for_each_attr(&body[RTMSG_LEN..], |kind, payload| {
        match kind {
            RTA_DST => route.dst = Some(ip_attr(payload)?),
            RTA_PREFSRC => route.prefsrc = Some(ip_attr(payload)?),
            RTA_GATEWAY => route.gateway = Some(ip_attr(payload)?),
            RTA_OIF => route.oif = u32_attr(payload)?,
            RTA_PRIORITY => route.priority = u32_attr(payload)?,
            RTA_MULTIPATH => parse_multipath(payload, &mut route.multipath)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(route)
}

/// `RTA_MULTIPATH`: packed `rtnexthop`s, each followed by its own attributes.
fn parse_multipath(mut b: &[u8], out: &mut Vec<NextHop>) -> io::Result<()> {
    while !b.is_empty() {
        if b.len() < RTNEXTHOP_LEN {
            return Err(invalid("short rtnexthop"));
        }
        let len = u16_at(b, 0).unwrap_or(0) as usize;
        if len < RTNEXTHOP_LEN || len > b.len() {
            return Err(invalid("bad rtnexthop length"));
        }
        let mut hop = NextHop {
            hops: b[3],
            ifindex: u32_at(b, 4).unwrap_or(0),
            gateway: None,
        };
        for_each_attr(&b[RTNEXTHOP_LEN..len], |kind, payload| {
            if kind == RTA_GATEWAY {
                hop.gateway = Some(ip_attr(payload)?);
            }
            Ok(())
        })?;
        out.push(hop);
        b = b.get(align4(len)..).unwrap_or(&[]);
    }
    Ok(())
}

/// The request for a dump of every route of every family and table (an all-zero `rtmsg`).
pub fn route_dump_request(seq: u32) -> [u8; NLMSG_HDRLEN + RTMSG_LEN] {
    let mut req = [0u8; NLMSG_HDRLEN + RTMSG_LEN];
    write_header(&mut req, RTM_GETROUTE, seq);
    req
}

/// Parses one datagram of a `RTM_GETROUTE` dump answering `seq`, appending routes to `out`; a
/// route message that does not decode is skipped and counted in `malformed`.
pub fn parse_route_batch(
    b: &[u8],
    seq: u32,
    out: &mut Vec<Route>,
    malformed: &mut usize,
) -> io::Result<Batch> {
    parse_messages(b, seq, |kind, body| {
        if kind == RTM_NEWROUTE {
            match parse_route(body) {
                Ok(route) => out.push(route),
                Err(e) => {
                    tracing::debug!(error = %e, "skipped malformed route message");
                    *malformed += 1;
                }
            }
        }
        Ok(())
    })
}

const RTM_NEWQDISC: u16 = 36;
const RTM_GETQDISC: u16 = 38;
/// `sizeof(struct tcmsg)`.
const TCMSG_LEN: usize = 20;
const TCA_KIND: u16 = 1;
const TCA_STATS: u16 = 3;
const TCA_STATS2: u16 = 7;
const TCA_STATS_BASIC: u16 = 1;
const TCA_STATS_QUEUE: u16 = 3;
/// `sizeof(struct tc_stats)`.
const TC_STATS_LEN: usize = 36;
/// `TC_H_ROOT`: the parent of a root qdisc.
const TC_H_ROOT: u32 = u32::MAX;

/// One qdisc of a `RTM_GETQDISC` dump, as ema/qdisc decodes it: the basic and queue statistics
/// of `TCA_STATS2`, overridden by the legacy `TCA_STATS` where the kernel sends both (it does,
/// after TCA_STATS2); packets are the 32-bit count both carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Qdisc {
    pub ifindex: i32,
    pub handle: u32,
    /// 0 for a root qdisc (`TC_H_ROOT` is reported as 0, as ema/qdisc does).
    pub parent: u32,
    pub kind: String,
    pub bytes: u64,
    pub packets: u32,
    pub drops: u32,
    pub requeues: u32,
    pub overlimits: u32,
    pub qlen: u32,
    pub backlog: u32,
}

fn short(what: &str) -> io::Error {
    invalid(what)
}

/// One `RTM_NEWQDISC` body (`tcmsg` and attributes).
pub fn parse_qdisc(body: &[u8]) -> io::Result<Qdisc> {
    if body.len() < TCMSG_LEN {
        return Err(short("short tcmsg"));
    }
    let parent = u32_at(body, 12).unwrap_or(0);
    let mut q = Qdisc {
        ifindex: u32_at(body, 4).unwrap_or(0) as i32,
        handle: u32_at(body, 8).unwrap_or(0),
        parent: if parent == TC_H_ROOT { 0 } else { parent },
        ..Qdisc::default()
    };
    let u32_in = |b: &[u8], at: usize, what: &str| u32_at(b, at).ok_or_else(|| short(what));
    for_each_attr(&body[TCMSG_LEN..], |kind, payload| {
        match kind {
            TCA_KIND => {
                let end = payload
                    .iter()
                    .position(|&c| c == 0)
                    .unwrap_or(payload.len());
                q.kind = String::from_utf8_lossy(&payload[..end]).into_owned();
            }
            TCA_STATS2 => {
                // A fresh TCA_STATS2 replaces all of these, absent parts being zero.
                let (mut bytes, mut packets) = (0, 0);
                let mut queue = [0u32; 5];
                for_each_attr(payload, |nested, p| {
                    match nested {
                        TCA_STATS_BASIC => {
                            bytes = u64::from_ne_bytes(
                                p.get(0..8)
                                    .and_then(|b| b.try_into().ok())
                                    .ok_or_else(|| short("short gnet_stats_basic"))?,
                            );
                            packets = u32_in(p, 8, "short gnet_stats_basic")?;
                        }
                        TCA_STATS_QUEUE => {
                            for (i, slot) in queue.iter_mut().enumerate() {
                                *slot = u32_in(p, 4 * i, "short gnet_stats_queue")?;
                            }
                        }
                        _ => {}
                    }
                    Ok(())
                })?;
                q.bytes = bytes;
                q.packets = packets;
                [q.qlen, q.backlog, q.drops, q.requeues, q.overlimits] = queue;
            }
            TCA_STATS => {
                if payload.len() < TC_STATS_LEN {
                    return Err(short("short tc_stats"));
                }
                q.bytes = u64::from_ne_bytes(payload[0..8].try_into().unwrap_or([0; 8]));
                q.packets = u32_in(payload, 8, "short tc_stats")?;
                q.drops = u32_in(payload, 12, "short tc_stats")?;
                q.overlimits = u32_in(payload, 16, "short tc_stats")?;
                q.qlen = u32_in(payload, 28, "short tc_stats")?;
                q.backlog = u32_in(payload, 32, "short tc_stats")?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(q)
}

/// The request for a dump of every qdisc (an all-zero `tcmsg`).
pub fn qdisc_dump_request(seq: u32) -> [u8; NLMSG_HDRLEN + TCMSG_LEN] {
    let mut req = [0u8; NLMSG_HDRLEN + TCMSG_LEN];
    write_header(&mut req, RTM_GETQDISC, seq);
    req
}

/// Parses one datagram of a `RTM_GETQDISC` dump answering `seq`, appending qdiscs to `out`; a
/// qdisc message that does not decode is skipped and counted in `malformed`.
pub fn parse_qdisc_batch(
    b: &[u8],
    seq: u32,
    out: &mut Vec<Qdisc>,
    malformed: &mut usize,
) -> io::Result<Batch> {
    parse_messages(b, seq, |kind, body| {
        if kind == RTM_NEWQDISC {
            match parse_qdisc(body) {
                Ok(q) => out.push(q),
                Err(e) => {
                    tracing::debug!(error = %e, "skipped malformed qdisc message");
                    *malformed += 1;
                }
            }
        }
        Ok(())
    })
}

/// `NETLINK_GENERIC` (linux/netlink.h).
const NETLINK_GENERIC: libc::c_int = 16;
/// linux/genetlink.h: the controller family and its family dump.
const GENL_ID_CTRL: u16 = 16;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const CTRL_ATTR_VERSION: u16 = 3;
/// `sizeof(struct genlmsghdr)`.
const GENL_HDRLEN: usize = 4;
const GENL_BUFFER: usize = 32 * 1024;

/// A generic netlink request: the family's id as message type, a dump, `genlmsghdr` with
/// `cmd` and `version`, then `attrs` (already encoded).
pub fn genl_dump_request(seq: u32, family: u16, cmd: u8, version: u8, attrs: &[u8]) -> Vec<u8> {
    let mut req = vec![0u8; NLMSG_HDRLEN + GENL_HDRLEN];
    req[NLMSG_HDRLEN] = cmd;
    req[NLMSG_HDRLEN + 1] = version;
    req.extend_from_slice(attrs);
    write_header(&mut req, family, seq);
    req
}

/// Appends one netlink attribute to `out`.
pub fn put_attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align4(out.len()), 0);
}

/// The (id, version) of the family named `name` in one `CTRL_CMD_NEWFAMILY` message's
/// attributes (after the genetlink header), if it is that family.
pub fn parse_family(attrs: &[u8], name: &str) -> io::Result<Option<(u16, u8)>> {
    let (mut id, mut version, mut matches) = (None, 0u8, false);
    for_each_attr(attrs, |kind, payload| {
        match kind {
            CTRL_ATTR_FAMILY_NAME => {
                let end = payload
                    .iter()
                    .position(|&c| c == 0)
                    .unwrap_or(payload.len());
                matches = &payload[..end] == name.as_bytes();
            }
            CTRL_ATTR_FAMILY_ID => id = u16_at(payload, 0),
            CTRL_ATTR_VERSION => version = u32_at(payload, 0).unwrap_or(0) as u8,
            _ => {}
        }
        Ok(())
    })?;
    Ok(if matches {
        id.map(|id| (id, version))
    } else {
        None
    })
}

/// A generic netlink socket kept between dumps.
pub struct GenlSocket(NetlinkSocket);

impl GenlSocket {
    pub fn open() -> io::Result<Self> {
        NetlinkSocket::open(NETLINK_GENERIC, GENL_BUFFER).map(GenlSocket)
    }

    /// The id and version of the generic netlink family `name` (one dump of the controller's
    /// families); `None` when the kernel has no such family (nl80211 without cfg80211).
    pub fn family(&mut self, name: &str) -> io::Result<Option<(u16, u8)>> {
        let mut found = None;
        self.dump(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, &[], |attrs| {
            if found.is_none() {
                found = parse_family(attrs, name)?;
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Dumps `cmd` of `family`, handing each answer's attributes (after the genetlink header)
    /// to `on_message`.
    pub fn dump(
        &mut self,
        family: u16,
        cmd: u8,
        version: u8,
        attrs: &[u8],
        mut on_message: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.0.dump(
            |seq| genl_dump_request(seq, family, cmd, version, attrs),
            |datagram, seq| {
                parse_messages(datagram, seq, |kind, body| {
                    if kind != family {
                        return Ok(());
                    }
                    let attrs = body
                        .get(GENL_HDRLEN..)
                        .ok_or_else(|| invalid("short genlmsghdr"))?;
                    on_message(attrs)
                })
            },
        )
    }
}

/// A netlink socket kept between dumps. After a failed dump it must be dropped, not reused: the
/// rest of that dump may still be queued on it.
struct NetlinkSocket {
    fd: OwnedFd,
    seq: u32,
    /// Receive buffer; its capacity is what a datagram may fill (never zeroed: only the bytes the
    /// kernel wrote are read, and untouched pages stay unallocated).
    buf: Vec<u8>,
}

/// The rtnetlink socket for link dumps.
pub struct RouteSocket(NetlinkSocket);

/// The sock_diag socket for UDP socket dumps.
pub struct SockDiagSocket(NetlinkSocket);

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"))
}

/// What one received datagram held.
#[derive(Debug, PartialEq)]
pub enum Batch {
    More,
    Done,
}

/// Walks the messages of one received datagram of the dump answering `seq`, handing each data
/// message's type and body to `on_message`; messages of other sequence numbers are skipped.
/// `NLMSG_DONE` ends the dump (with the error it carries, if the dump failed part-way);
/// `NLMSG_ERROR` with a non-zero code is that error.
pub fn parse_messages(
    mut b: &[u8],
    seq: u32,
    mut on_message: impl FnMut(u16, &[u8]) -> io::Result<()>,
) -> io::Result<Batch> {
    while !b.is_empty() {
        if b.len() < NLMSG_HDRLEN {
            return Err(invalid("short header"));
        }
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
            NLMSG_DONE => {
                // The dump's final status (netlink_dump's dump_done_errno): negative when the
                // dump failed after it started, e.g. no diag handler for the protocol.
                match u32_at(body, 0).map(|v| v as i32) {
                    Some(errno) if errno < 0 => {
                        return Err(io::Error::from_raw_os_error(errno.wrapping_neg()));
                    }
                    _ => return Ok(Batch::Done),
                }
            }
            NLMSG_ERROR => {
                let errno = u32_at(body, 0).ok_or_else(|| invalid("short error"))? as i32;
                if errno == 0 {
                    continue;
                }
                return Err(io::Error::from_raw_os_error(errno.wrapping_neg()));
            }
            _ => on_message(kind, body)?,
        }
    }
    Ok(Batch::More)
}

/// Parses one datagram of a `RTM_GETLINK` dump answering `seq`, appending links to `out`.
pub fn parse_batch(b: &[u8], seq: u32, out: &mut Vec<Link>) -> io::Result<Batch> {
    parse_messages(b, seq, |kind, body| {
        if kind == RTM_NEWLINK
            && let Some(link) = parse_link(body)?
        {
            out.push(link);
        }
        Ok(())
    })
}

/// One `RTM_NEWLINK` body (`ifinfomsg` and attributes); `None` for a link without a name.
fn parse_link(body: &[u8]) -> io::Result<Option<Link>> {
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
                link.ifalias = Some(String::from_utf8_lossy(&payload[..end]).into_owned());
            }
            IFLA_GROUP => link.group = u32_at(payload, 0),
            IFLA_CARRIER => link.carrier = payload.first().copied(),
            IFLA_CARRIER_CHANGES => link.carrier_changes = u32_at(payload, 0),
            IFLA_CARRIER_UP_COUNT => link.carrier_up_count = u32_at(payload, 0),
            IFLA_CARRIER_DOWN_COUNT => link.carrier_down_count = u32_at(payload, 0),
            IFLA_STATS64 => {
                for (slot, chunk) in link.stats.iter_mut().zip(payload.chunks_exact(8)) {
                    *slot = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
                }
            }
            _ => {}
        }
        attrs = attrs.get(align4(alen)..).unwrap_or(&[]);
    }
    Ok((!link.name.is_empty()).then_some(link))
}

/// The request for a dump of every link.
pub fn dump_request(seq: u32) -> [u8; NLMSG_HDRLEN + IFINFOMSG_LEN] {
    let mut req = [0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
    write_header(&mut req, RTM_GETLINK, seq);
    // ifinfomsg all zero: AF_UNSPEC, every interface.
    req
}

/// A request's `nlmsghdr`: its whole length, `kind`, a dump request, `seq`, pid 0 (the kernel
/// assigns ours).
fn write_header(req: &mut [u8], kind: u16, seq: u32) {
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&kind.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
}

/// The request for a dump of every socket of `family` (`AF_INET` or `AF_INET6`: sock_diag has
/// no all-families dump) and transport `protocol`, in any state, without extensions.
pub fn inet_diag_request(
    seq: u32,
    family: u8,
    protocol: u8,
) -> [u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN] {
    let mut req = [0u8; NLMSG_HDRLEN + INET_DIAG_REQ_V2_LEN];
    write_header(&mut req, SOCK_DIAG_BY_FAMILY, seq);
    let body = &mut req[NLMSG_HDRLEN..];
    body[0] = family;
    body[1] = protocol;
    // idiag_ext 0: no extension attributes. idiag_states: every state (UDP sockets are
    // TCP_CLOSE or TCP_ESTABLISHED; /proc/net/udp lists all of them). The socket id stays zero:
    // no port, address, interface or cookie filter.
    body[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    req
}

/// Bytes queued in sockets, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTotals {
    /// Send queues (`tx_queue` in /proc/net/udp, `idiag_wqueue`).
    pub tx: u64,
    /// Receive queues (`rx_queue`, `idiag_rqueue`).
    pub rx: u64,
}

/// Adds the queues of one `SOCK_DIAG_BY_FAMILY` answer message (`inet_diag_msg`) of `family` to
/// `totals`; a socket of another family (which the kernel does not send) is not counted.
pub fn add_inet_diag_queues(body: &[u8], family: u8, totals: &mut QueueTotals) -> io::Result<()> {
    if body.len() < INET_DIAG_MSG_LEN {
        return Err(invalid("short inet_diag_msg"));
    }
    if body[0] != family {
        return Ok(());
    }
    let rqueue =
        u32_at(body, INET_DIAG_MSG_RQUEUE).ok_or_else(|| invalid("short inet_diag_msg"))?;
    let wqueue =
        u32_at(body, INET_DIAG_MSG_WQUEUE).ok_or_else(|| invalid("short inet_diag_msg"))?;
    totals.tx = totals.tx.saturating_add(u64::from(wqueue));
    totals.rx = totals.rx.saturating_add(u64::from(rqueue));
    Ok(())
}

/// Parses one datagram of an inet_diag dump of `family` answering `seq`, adding each socket's
/// queues to `totals`.
pub fn parse_inet_diag_batch(
    b: &[u8],
    seq: u32,
    family: u8,
    totals: &mut QueueTotals,
) -> io::Result<Batch> {
    parse_messages(b, seq, |kind, body| {
        if kind != SOCK_DIAG_BY_FAMILY {
            return Err(invalid("unexpected message type in a sock_diag dump"));
        }
        add_inet_diag_queues(body, family, totals)
    })
}

impl NetlinkSocket {
    fn open(protocol: libc::c_int, buffer: usize) -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a freshly created descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(NetlinkSocket {
            fd,
            seq: 0,
            buf: Vec::with_capacity(buffer),
        })
    }

    /// Sends the request `make_request` builds for a fresh sequence number, then hands every
    /// received datagram of the answer to `parse` until it reports the end of the dump.
    fn dump<R: AsRef<[u8]>>(
        &mut self,
        make_request: impl FnOnce(u32) -> R,
        mut parse: impl FnMut(&[u8], u32) -> io::Result<Batch>,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let request = make_request(self.seq);
        let request = request.as_ref();
        // SAFETY: request is a valid buffer of the given length; the socket is open.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            self.buf.clear();
            let capacity = self.buf.capacity();
            // MSG_TRUNC: the datagram's real length is returned, so a truncated one is seen.
            // SAFETY: the pointer is valid for writes of `capacity` bytes (the Vec's spare
            // capacity); nothing is read from it here.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    capacity,
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "netlink: empty read",
                ));
            }
            if n > capacity {
                return Err(invalid("datagram larger than the receive buffer"));
            }
            // SAFETY: recv wrote (initialised) the first n bytes, and n <= capacity.
            unsafe { self.buf.set_len(n) };
            if parse(&self.buf, self.seq)? == Batch::Done {
                return Ok(());
            }
        }
    }
}

impl RouteSocket {
    pub fn open() -> io::Result<Self> {
        NetlinkSocket::open(libc::NETLINK_ROUTE, ROUTE_BUFFER).map(RouteSocket)
    }

    /// Every interface's name and counters, into `out` (cleared first).
    pub fn links(&mut self, out: &mut Vec<Link>) -> io::Result<()> {
        out.clear();
        self.0.dump(dump_request, |datagram, seq| {
            parse_batch(datagram, seq, out)
        })
    }

    /// Every route of every family and table, into `out` (cleared first); returns how many
    /// route messages were malformed and skipped.
    pub fn routes(&mut self, out: &mut Vec<Route>) -> io::Result<usize> {
        out.clear();
        let mut malformed = 0;
        self.0.dump(route_dump_request, |datagram, seq| {
            parse_route_batch(datagram, seq, out, &mut malformed)
        })?;
        Ok(malformed)
    }

    /// Every qdisc of every interface, into `out` (cleared first); returns how many qdisc
    /// messages were malformed and skipped.
    pub fn qdiscs(&mut self, out: &mut Vec<Qdisc>) -> io::Result<usize> {
        out.clear();
        let mut malformed = 0;
        self.0.dump(qdisc_dump_request, |datagram, seq| {
            parse_qdisc_batch(datagram, seq, out, &mut malformed)
        })?;
        Ok(malformed)
    }

    /// Asks for strict checking of dump requests (`NETLINK_GET_STRICT_CHK`), as ema/qdisc
    /// does; kernels before 4.20 lack it, which is no error.
    pub fn set_strict_check(&self) -> io::Result<()> {
        const SOL_NETLINK: libc::c_int = 270;
        const NETLINK_GET_STRICT_CHK: libc::c_int = 12;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a valid pointer to an int of the given size.
        let rc = unsafe {
            libc::setsockopt(
                self.0.fd.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_GET_STRICT_CHK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOPROTOOPT) {
                return Err(e);
            }
        }
        Ok(())
    }
}

impl SockDiagSocket {
    pub fn open() -> io::Result<Self> {
        NetlinkSocket::open(NETLINK_SOCK_DIAG, DIAG_BUFFER).map(SockDiagSocket)
    }

    /// The send and receive queues of every UDP socket of `family` (`AF_INET` or `AF_INET6`) in
    /// this network namespace, summed: one walk of the kernel's UDP hash table. The kernel
    /// reports the same figures /proc/net/udp prints (`sk_wmem_alloc_get`, `udp_rqueue_get`).
    pub fn udp_queue_totals(&mut self, family: u8) -> io::Result<QueueTotals> {
        let mut totals = QueueTotals::default();
        self.0.dump(
            |seq| inet_diag_request(seq, family, libc::IPPROTO_UDP as u8),
            |datagram, seq| parse_inet_diag_batch(datagram, seq, family, &mut totals),
        )?;
        Ok(totals)
    }

    /// Dumps the sockets of `family` and transport `protocol` whose state is in `states` (a
    /// mask of `1 << state`), handing each answer's `inet_diag_msg` (with its attributes) to
    /// `on_socket`.
    pub fn dump_sockets(
        &mut self,
        family: u8,
        protocol: u8,
        states: u32,
        mut on_socket: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.0.dump(
            |seq| {
                let mut request = inet_diag_request(seq, family, protocol);
                request[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8].copy_from_slice(&states.to_ne_bytes());
                request
            },
            |datagram, seq| {
                parse_messages(datagram, seq, |kind, body| {
                    if kind != SOCK_DIAG_BY_FAMILY {
                        return Err(invalid("unexpected message type in a sock_diag dump"));
                    }
                    on_socket(body)
                })
            },
        )
    }
}

/// Test support for collectors that read the kernel's networking state: a throw-away network
/// namespace with its own sysfs view, set up with `ip`/`tc` commands.
#[cfg(test)]
pub(crate) mod test_netns {
    use std::path::Path;
    use std::process::Command;

    /// Whether tests needing root should run: as root always; otherwise they are skipped,
    /// unless `CI=true`, where a missing capability is a failure.
    pub fn privileged() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root && std::env::var("CI").as_deref() == Ok("true") {
            panic!("this test needs root (CI=true: not skipped)");
        }
        root
    }

    /// Runs `f` on a thread of its own in a fresh network and mount namespace, after running
    /// each of `setup` with `sh -c` there; `f` gets the directory where that namespace's sysfs
    /// is mounted. `None`: skipped (not root, not CI). The namespaces go away with the thread.
    pub fn run<T: Send + 'static>(
        setup: &[&str],
        f: impl FnOnce(&Path) -> T + Send + 'static,
    ) -> Option<T> {
        if !privileged() {
            eprintln!("skipped: needs root");
            return None;
        }
        let setup: Vec<String> = setup.iter().map(|s| s.to_string()).collect();
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare and mount with valid C strings; this thread's namespaces only
            // (CLONE_FS is unshared with CLONE_NEWNS, so other threads keep theirs).
            unsafe {
                assert_eq!(
                    libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS),
                    0,
                    "unshare: {}",
                    std::io::Error::last_os_error()
                );
                let root = c"/";
                let rc = libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                );
                assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let target =
                std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).expect("path");
            // SAFETY: as above; sysfs mounted in this thread's private mount namespace.
            let rc = unsafe {
                libc::mount(
                    c"sysfs".as_ptr(),
                    target.as_ptr(),
                    c"sysfs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            assert_eq!(rc, 0, "mount sysfs: {}", std::io::Error::last_os_error());
            for command in setup
                .iter()
                .map(String::as_str)
                .chain(["ip link set lo up"])
            {
                let status = Command::new("sh")
                    .args(["-c", command])
                    .status()
                    .expect("sh");
                assert!(status.success(), "{command}: {status}");
            }
            let result = f(dir.path());
            // SAFETY: unmounting what was mounted above.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            result
        });
        Some(
            thread
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e)),
        )
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

    /// An `inet_diag_msg` for a socket of `family` with these queues.
    fn diag_msg(family: u8, wqueue: u32, rqueue: u32) -> Vec<u8> {
        let mut body = vec![0u8; INET_DIAG_MSG_LEN];
        body[0] = family;
        body[1] = 7; // TCP_CLOSE: an unconnected UDP socket
        body[INET_DIAG_MSG_RQUEUE..INET_DIAG_MSG_RQUEUE + 4].copy_from_slice(&rqueue.to_ne_bytes());
        body[INET_DIAG_MSG_WQUEUE..INET_DIAG_MSG_WQUEUE + 4].copy_from_slice(&wqueue.to_ne_bytes());
        // An attribute after the message (INET_DIAG_SHUTDOWN), as the kernel always sends.
        body.extend(attr(8, &[0]));
        body
    }

    const INET: u8 = libc::AF_INET as u8;
    const INET6: u8 = libc::AF_INET6 as u8;

    #[test]
    fn inet_diag_request_layout() {
        let req = inet_diag_request(9, INET6, libc::IPPROTO_UDP as u8);
        assert_eq!(req.len(), 72);
        assert_eq!(u32_at(&req, 0), Some(72));
        assert_eq!(u16_at(&req, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(u16_at(&req, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(u32_at(&req, 8), Some(9));
        assert_eq!(u32_at(&req, 12), Some(0));
        assert_eq!(&req[16..20], &[INET6, 17, 0, 0]);
        assert_eq!(u32_at(&req, 20), Some(u32::MAX));
        assert!(req[24..].iter().all(|&b| b == 0), "no socket id filter");
    }

    #[test]
    fn sums_inet_diag_queues_until_done() {
        let mut datagram = message(SOCK_DIAG_BY_FAMILY, 3, &diag_msg(INET, 768, 2304));
        datagram.extend(message(
            SOCK_DIAG_BY_FAMILY,
            3,
            &diag_msg(INET, 0, 4_294_967_040),
        ));
        // Another dump's leftovers and a socket of the other family are not counted.
        datagram.extend(message(SOCK_DIAG_BY_FAMILY, 2, &diag_msg(INET, 1, 1)));
        datagram.extend(message(SOCK_DIAG_BY_FAMILY, 3, &diag_msg(INET6, 1, 1)));
        let mut totals = QueueTotals::default();
        let batch = parse_inet_diag_batch(&datagram, 3, INET, &mut totals).unwrap();
        assert_eq!(batch, Batch::More);
        assert_eq!(
            totals,
            QueueTotals {
                tx: 768,
                rx: 2304 + 4_294_967_040
            }
        );
        let done = message(NLMSG_DONE, 3, &0i32.to_ne_bytes());
        assert_eq!(
            parse_inet_diag_batch(&done, 3, INET, &mut totals).unwrap(),
            Batch::Done
        );
        // A DONE of another dump does not end this one.
        let stale_done = message(NLMSG_DONE, 2, &0i32.to_ne_bytes());
        assert_eq!(
            parse_inet_diag_batch(&stale_done, 3, INET, &mut totals).unwrap(),
            Batch::More
        );
    }

    #[test]
    fn inet_diag_errors() {
        let mut totals = QueueTotals::default();
        // No diag handler for the protocol (udp_diag not built): an error, not an empty dump.
        let err = message(NLMSG_ERROR, 4, &(-libc::ENOENT).to_ne_bytes());
        let e = parse_inet_diag_batch(&err, 4, INET, &mut totals).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        // The same failure reported at the end of the dump.
        let failed_done = message(NLMSG_DONE, 4, &(-libc::ENOENT).to_ne_bytes());
        let e = parse_inet_diag_batch(&failed_done, 4, INET, &mut totals).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        // An error for another request is not ours; an acknowledgement (0) is no error.
        let other = message(NLMSG_ERROR, 5, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse_inet_diag_batch(&other, 4, INET, &mut totals).unwrap(),
            Batch::More
        );
        let ack = message(NLMSG_ERROR, 4, &0i32.to_ne_bytes());
        assert_eq!(
            parse_inet_diag_batch(&ack, 4, INET, &mut totals).unwrap(),
            Batch::More
        );
        // Extreme error codes do not overflow.
        let odd = message(NLMSG_ERROR, 4, &i32::MIN.to_ne_bytes());
        assert!(parse_inet_diag_batch(&odd, 4, INET, &mut totals).is_err());
        let odd_done = message(NLMSG_DONE, 4, &i32::MIN.to_ne_bytes());
        assert!(parse_inet_diag_batch(&odd_done, 4, INET, &mut totals).is_err());
        // An error message too short to hold its code.
        let short_error = message(NLMSG_ERROR, 4, &[0xff, 0xff]);
        assert!(parse_inet_diag_batch(&short_error, 4, INET, &mut totals).is_err());
        assert_eq!(totals, QueueTotals::default());
    }

    #[test]
    fn malformed_inet_diag_answers_are_errors() {
        let good = message(SOCK_DIAG_BY_FAMILY, 1, &diag_msg(INET, 1, 2));
        let parse = |b: &[u8]| parse_inet_diag_batch(b, 1, INET, &mut QueueTotals::default());
        assert!(parse(&good).is_ok());
        // Every truncation of a valid datagram is an error, never a panic or a partial sum
        // taken as complete.
        for cut in 1..good.len() {
            assert!(parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        // Lengths shorter than a header, or beyond the datagram.
        for len in [0u32, 15, good.len() as u32 + 4, u32::MAX] {
            let mut bad = good.clone();
            bad[0..4].copy_from_slice(&len.to_ne_bytes());
            assert!(parse(&bad).is_err(), "length {len}");
        }
        // A message too short for an inet_diag_msg.
        let short = message(SOCK_DIAG_BY_FAMILY, 1, &[INET; 40]);
        assert!(parse(&short).is_err());
        // A message type that has no business in this dump.
        let link = message(RTM_NEWLINK, 1, &link("x", &[1]));
        assert!(parse(&link).is_err());
        // Trailing bytes too short to be a message.
        let mut trailing = good.clone();
        trailing.extend([0u8; 8]);
        assert!(parse(&trailing).is_err());
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

    #[test]
    fn dumps_this_hosts_udp_sockets() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender
            .send_to(&[7u8; 1000], receiver.local_addr().unwrap())
            .unwrap();
        let mut socket = SockDiagSocket::open().unwrap();
        let totals = socket.udp_queue_totals(INET).unwrap();
        // The datagram waits in the receiver's queue (its skb's truesize: more than 1000).
        assert!(totals.rx >= 1000, "{totals:?}");
        // The socket is reusable, and the other family works too.
        assert!(socket.udp_queue_totals(INET).unwrap().rx >= 1000);
        socket.udp_queue_totals(INET6).unwrap();
    }
}
