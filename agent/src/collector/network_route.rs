//! `network_route`: this network namespace's unicast routes over rtnetlink, as node_exporter
//! 1.12.1 reports them (jsimonetti/rtnetlink): one `RTM_GETROUTE` dump of every family and
//! table, of which routes of type `RTN_UNICAST` count (1.12.1 compares the type with `RTA_DST`,
//! also 1); a multipath route gives one `node_network_route_info` per next hop, with its weight
//! (`rtnh_hops + 1`); the interface names come from the scrape's link dump.
//!
//! Decisions: a route message that does not decode (an address neither 4 nor 16 bytes long, a
//! bad next hop) is skipped and counted as malformed, where 1.12.1 fails the whole collection.
//! Identical `route_info` label sets (the same route in two tables) are reported once, as the
//! Go registry keeps only the first, while `node_network_routes` counts both, as 1.12.1 does.
//! The rtnetlink socket is kept between scrapes.

use std::fmt::Write as _;
use std::path::Path;

use super::netlink::{RawIp, Route, RouteSocket};
use super::{
    BuildContext, BuildError, Collector, CollectorError, Context, Kind, MetricWriter, Registration,
    no_flags,
};

pub static REGISTRATION: Registration = Registration {
    name: "network_route",
    default_enabled: false,
    flags: no_flags,
    build,
};

fn build(_: &BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError> {
    Ok(Box::new(NetworkRouteCollector::default()))
}

/// `rtm_type` of a unicast route (`RTN_UNICAST`).
const RTN_UNICAST: u8 = 1;

/// Label values of one `route_info` sample, in label-name order (the order Go prints and
/// sorts them in): dest, device, gw, priority, proto, src, weight.
type Row = [String; 7];

#[derive(Default)]
struct NetworkRouteCollector {
    socket: Option<RouteSocket>,
    routes: Vec<Route>,
    /// Rows reused between scrapes; the first `used` are this scrape's.
    rows: Vec<Row>,
    order: Vec<usize>,
}

/// rtnetlink.h's `RTPROT_*` names, as 1.12.1 spells them.
pub fn protocol_name(protocol: u8) -> &'static str {
    match protocol {
        0 => "unspec",
        1 => "redirect",
        2 => "kernel",
        3 => "boot",
        4 => "static",
        8 => "gated",
        9 => "ra",
        10 => "mrt",
        11 => "zebra",
        12 => "bird",
        13 => "dnrouted",
        14 => "xorp",
        15 => "ntk",
        16 => "dhcp",
        17 => "mrouted",
        42 => "babel",
        186 => "bgp",
        187 => "isis",
        188 => "ospf",
        189 => "rip",
        192 => "eigrp",
        _ => "unknown",
    }
}

/// `networkRouteIPToString`: empty when absent.
fn write_ip(ip: Option<&RawIp>, out: &mut String) {
    if let Some(ip) = ip {
        ip.write_go(out);
    }
}

/// `networkRouteIPWithPrefixToString`: "default" for a zero prefix, else Go's `IPNet.String`.
pub fn write_dest(dst: Option<&RawIp>, len: u8, out: &mut String) {
    if len == 0 {
        out.push_str("default");
        return;
    }
    let Some(ip) = dst else {
        // A nil IP: IPNet.String of an invalid network.
        out.push_str("<nil>");
        return;
    };
    let bits = if ip.to4().is_some() { 32 } else { 128 };
    if u32::from(len) > bits {
        // net.CIDRMask returns nil for a prefix longer than the address.
        out.push_str("<nil>");
        return;
    }
    ip.write_go(out);
    let _ = write!(out, "/{len}");
}

impl NetworkRouteCollector {
    fn next_row(&mut self, used: &mut usize) -> usize {
        if *used == self.rows.len() {
            self.rows.push(Row::default());
        }
        let row = &mut self.rows[*used];
        for s in row.iter_mut() {
            s.clear();
        }
        *used += 1;
        *used - 1
    }
}

fn link_name(links: &[super::netlink::Link], index: u32) -> &str {
    links
        .iter()
        .find(|l| l.index as u32 == index)
        .map_or("", |l| l.name.as_str())
}

impl Collector for NetworkRouteCollector {
    fn update(
        &mut self,
        ctx: &Context<'_>,
        out: &mut MetricWriter<'_, '_>,
    ) -> Result<(), CollectorError> {
        let source = Path::new("rtnetlink RTM_GETROUTE");
        let links = ctx.links().ok_or_else(|| CollectorError::Parse {
            path: "rtnetlink RTM_GETLINK".into(),
            reason: "couldn't get links".into(),
        })?;
        if self.socket.is_none() {
            self.socket = Some(RouteSocket::open().map_err(|e| CollectorError::io(source, e))?);
        }
        let socket = self.socket.as_mut().ok_or(CollectorError::NoData)?;
        let malformed = match socket.routes(&mut self.routes) {
            Ok(n) => n,
            Err(e) => {
                self.socket = None;
                return Err(CollectorError::io(source, e));
            }
        };
        for _ in 0..malformed {
            ctx.malformed(source, "route message");
        }

        let mut used = 0;
        let routes = std::mem::take(&mut self.routes);
        for route in routes.iter().filter(|r| r.kind == RTN_UNICAST) {
            let hops = route.multipath.len().max(1);
            for hop in 0..hops {
                let next = route.multipath.get(hop);
                let i = self.next_row(&mut used);
                let [dest, device, gw, priority, proto, src, weight] = &mut self.rows[i];
                write_dest(route.dst.as_ref(), route.dst_len, dest);
                let ifindex = next.map_or(route.oif, |h| h.ifindex);
                device.push_str(link_name(links, ifindex));
                let gateway = match next {
                    Some(h) => h.gateway.as_ref(),
                    None => route.gateway.as_ref(),
                };
                write_ip(gateway, gw);
                let _ = write!(priority, "{}", route.priority);
                proto.push_str(protocol_name(route.protocol));
                write_ip(route.prefsrc.as_ref(), src);
                if let Some(h) = next {
                    let _ = write!(weight, "{}", u32::from(h.hops) + 1);
                }
            }
        }
        self.routes = routes;
        if used == 0 {
            return Ok(());
        }

        let rows = &self.rows[..used];
        self.order.clear();
        self.order.extend(0..used);
        self.order.sort_by(|&a, &b| rows[a].cmp(&rows[b]));
        const NAMES: [&str; 7] = ["dest", "device", "gw", "priority", "proto", "src", "weight"];
        let mut f = out.family(
            "node_network_route_info",
            "network routing table information",
            Kind::Gauge,
        )?;
        let mut previous: Option<&Row> = None;
        for &i in &self.order {
            let row = &rows[i];
            if previous == Some(row) {
                continue;
            }
            previous = Some(row);
            let labels: [(&str, &str); 7] = std::array::from_fn(|k| (NAMES[k], row[k].as_str()));
            f.sample(&labels, 1.0)?;
        }

        // Routes per device, counted over every next hop (duplicates too), by device name.
        self.order.sort_by(|&a, &b| rows[a][1].cmp(&rows[b][1]));
        let mut f = out.family(
            "node_network_routes",
            "network routes by interface",
            Kind::Gauge,
        )?;
        let mut i = 0;
        while i < self.order.len() {
            let device = &rows[self.order[i]][1];
            let mut n = 0;
            while i < self.order.len() && rows[self.order[i]][1] == *device {
                n += 1;
                i += 1;
            }
            f.sample(&[("device", device)], f64::from(n))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::netlink::{NextHop, parse_route};
    use crate::collector::testing::{assert_golden, fixture, render};

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(payload);
        a.resize((a.len() + 3) & !3, 0);
        a
    }

    /// An `rtmsg`: family, dst_len, table, protocol, scope, type.
    fn rtmsg(family: u8, dst_len: u8, table: u8, protocol: u8, kind: u8) -> Vec<u8> {
        let mut b = vec![0u8; 12];
        b[0] = family;
        b[1] = dst_len;
        b[4] = table;
        b[5] = protocol;
        b[7] = kind;
        b
    }

    fn rtnexthop(hops: u8, ifindex: u32, gateway: &[u8]) -> Vec<u8> {
        let attrs = attr(5, gateway);
        let mut b = Vec::new();
        b.extend_from_slice(&((8 + attrs.len()) as u16).to_ne_bytes());
        b.push(0);
        b.push(hops);
        b.extend_from_slice(&ifindex.to_ne_bytes());
        b.extend(attrs);
        b
    }

    fn ip(s: &str) -> RawIp {
        match s.parse::<std::net::IpAddr>().unwrap() {
            std::net::IpAddr::V4(v4) => RawIp::new(&v4.octets()).unwrap(),
            std::net::IpAddr::V6(v6) => RawIp::new(&v6.octets()).unwrap(),
        }
    }

    #[test]
    fn decodes_a_multipath_route() {
        // `ip route add 198.51.100.0/24 proto bird metric 20 nexthop via 10.1.0.2 dev eth0
        // weight 1 nexthop via 10.2.0.2 dev eth1 weight 3`, as the kernel dumps it.
        let mut body = rtmsg(2, 24, 254, 12, 1);
        body.extend(attr(15, &254u32.to_ne_bytes())); // RTA_TABLE
        body.extend(attr(1, &[198, 51, 100, 0]));
        body.extend(attr(6, &20u32.to_ne_bytes()));
        let mut hops = rtnexthop(0, 2, &[10, 1, 0, 2]);
        hops.extend(rtnexthop(2, 3, &[10, 2, 0, 2]));
        body.extend(attr(9, &hops));
        let route = parse_route(&body).unwrap();
        assert_eq!(route.dst, Some(ip("198.51.100.0")));
        assert_eq!(route.priority, 20);
        assert_eq!(route.protocol, 12);
        assert_eq!(
            route.multipath,
            [
                NextHop {
                    ifindex: 2,
                    hops: 0,
                    gateway: Some(ip("10.1.0.2"))
                },
                NextHop {
                    ifindex: 3,
                    hops: 2,
                    gateway: Some(ip("10.2.0.2"))
                }
            ]
        );
        // Truncations and bad lengths are errors, never panics.
        for cut in 13..body.len() {
            let _ = parse_route(&body[..cut]);
        }
        let mut bad = rtmsg(2, 24, 254, 12, 1);
        bad.extend(attr(1, &[198, 51, 100]));
        assert!(parse_route(&bad).is_err());
        let mut bad_hop = rtmsg(2, 24, 254, 12, 1);
        bad_hop.extend(attr(9, &[4, 0, 0, 0, 1, 0, 0, 0]));
        assert!(parse_route(&bad_hop).is_err());
    }

    fn nlmsg(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize((m.len() + 3) & !3, 0);
        m
    }

    #[test]
    fn malformed_routes_are_skipped_and_counted() {
        let mut good = rtmsg(10, 0, 254, 3, 1);
        good.extend(attr(5, ip("fe80::1").as_bytes()));
        good.extend(attr(4, &2u32.to_ne_bytes()));
        let mut bad = rtmsg(28, 20, 254, 3, 1); // AF_MPLS: a 4-byte label is no address here
        bad.extend(attr(1, &[0, 1, 0x41]));
        let mut datagram = nlmsg(24, 7, &good);
        datagram.extend(nlmsg(24, 7, &bad));
        datagram.extend(nlmsg(3, 7, &0u32.to_ne_bytes()));
        let (mut out, mut malformed) = (Vec::new(), 0);
        let batch =
            crate::collector::netlink::parse_route_batch(&datagram, 7, &mut out, &mut malformed)
                .unwrap();
        assert_eq!(batch, crate::collector::netlink::Batch::Done);
        assert_eq!(malformed, 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].gateway, Some(ip("fe80::1")));
        assert_eq!(out[0].oif, 2);
    }

    #[test]
    fn formats_as_go() {
        let s = |ip: RawIp| {
            let mut out = String::new();
            ip.write_go(&mut out);
            out
        };
        assert_eq!(s(ip("2001:db8::1")), "2001:db8::1");
        assert_eq!(s(ip("2001:db8:0:1:0:0:0:1")), "2001:db8:0:1::1");
        assert_eq!(s(ip("2001:0:0:1:0:0:0:1")), "2001:0:0:1::1");
        // Of two equally long runs, the first.
        assert_eq!(s(ip("2001:0:0:1:0:0:1:1")), "2001::1:0:0:1:1");
        assert_eq!(s(ip("2001:db8:1:1:1:1:0:1")), "2001:db8:1:1:1:1:0:1");
        assert_eq!(s(ip("::")), "::");
        assert_eq!(s(ip("fe80::")), "fe80::");
        assert_eq!(s(ip("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(s(ip("::102:304")), "::102:304");
        let d = |dst: Option<RawIp>, len| {
            let mut out = String::new();
            write_dest(dst.as_ref(), len, &mut out);
            out
        };
        assert_eq!(d(None, 0), "default");
        assert_eq!(d(Some(ip("10.0.0.0")), 8), "10.0.0.0/8");
        assert_eq!(d(Some(ip("2001:db8::")), 32), "2001:db8::/32");
        assert_eq!(d(Some(ip("10.0.0.0")), 33), "<nil>");
        assert_eq!(protocol_name(186), "bgp");
        assert_eq!(protocol_name(99), "unknown");
    }

    #[test]
    fn routes_in_a_namespace_golden() {
        let Some(text) = crate::collector::netlink::test_netns::run(
            &[
                "ip link add nwa0 type veth peer name nwb0",
                "ip link add nwa1 type veth peer name nwb1",
                "for l in nwa0 nwb0 nwa1 nwb1; do ip link set $l up; done",
                "ip addr add 10.1.0.1/24 dev nwa0",
                "ip addr add 10.2.0.1/24 dev nwa1",
                "ip -6 addr add 2001:db8::1/64 dev nwa0 nodad",
                "ip -6 addr add 2001:db8:1::1/64 dev nwa1 nodad",
                "ip route add default via 10.1.0.254",
                "ip route add 192.0.2.0/24 via 10.1.0.2 metric 50 proto static",
                "ip route add 192.0.2.0/24 via 10.1.0.2 metric 50 proto static table 100",
                "ip route add 198.51.100.0/24 proto bird metric 20 nexthop via 10.1.0.2 dev nwa0 weight 1 nexthop via 10.2.0.2 dev nwa1 weight 3",
                "ip route add 203.0.113.0/24 dev nwa1 src 10.2.0.1 proto 186",
                "ip route add unreachable 100.64.0.0/10",
                "ip -6 route add 2001:db8:5::/48 proto zebra nexthop via 2001:db8::2 dev nwa0 weight 2 nexthop via 2001:db8:1::2 dev nwa1",
            ],
            |sys| {
                let paths = crate::collector::Paths {
                    sysfs: sys.to_path_buf(),
                    ..crate::collector::Paths::default()
                };
                let c = crate::collector::testing::build_with(
                    &REGISTRATION,
                    &["--collector.network_route"],
                    &paths,
                );
                render("network_route", c, paths)
            },
        ) else {
            return;
        };
        assert_golden(&fixture("hw-netlink/golden/network_route.prom"), &text);
    }
}
