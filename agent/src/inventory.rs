//! What the controller needs to reach this node off the link: the host name and, per network
//! interface (loopback left out), its MAC address (for Wake-on-LAN), addresses and the directed
//! broadcast address of each IPv4 subnet. Answers the link's `Inventory` command.
//!
//! Addresses come from `getifaddrs(3)`, MACs from `/sys/class/net/<if>/address`; turning them
//! into an [`Inventory`] is a plain function ([`build`]) the tests drive with fixtures.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use nodewarden_shared::protocol::{Interface, InterfaceAddress, Inventory};
use nodewarden_shared::wol::{MacAddress, directed_broadcast};

/// One `getifaddrs` entry: the interface, whether it is a loopback, and an address with its
/// netmask when the entry carries an IP address (link-layer entries carry none).
#[derive(Debug, Clone, PartialEq)]
pub struct IfEntry {
    pub interface: String,
    pub loopback: bool,
    pub address: Option<(IpAddr, Option<IpAddr>)>,
}

fn prefix_len(netmask: Option<IpAddr>, address: IpAddr) -> u8 {
    match netmask {
        Some(IpAddr::V4(m)) => u32::from(m).count_ones() as u8,
        Some(IpAddr::V6(m)) => u128::from(m).count_ones() as u8,
        None if address.is_ipv4() => 32,
        None => 128,
    }
}

/// The inventory from `getifaddrs` entries and a MAC lookup per interface name.
pub fn build(
    hostname: &str,
    entries: &[IfEntry],
    mac_of: impl Fn(&str) -> Option<MacAddress>,
) -> Inventory {
    let mut interfaces: BTreeMap<&str, Interface> = BTreeMap::new();
    for e in entries.iter().filter(|e| !e.loopback) {
        let interface = interfaces
            .entry(e.interface.as_str())
            .or_insert_with(|| Interface {
                name: e.interface.clone(),
                mac: mac_of(&e.interface),
                addresses: Vec::new(),
            });
        if let Some((address, netmask)) = e.address {
            let prefix_len = prefix_len(netmask, address);
            let broadcast = match address {
                IpAddr::V4(v4) if prefix_len < 31 => directed_broadcast(v4, prefix_len),
                _ => None,
            };
            interface.addresses.push(InterfaceAddress {
                address,
                prefix_len,
                broadcast,
            });
        }
    }
    Inventory {
        hostname: hostname.trim().to_string(),
        interfaces: interfaces.into_values().collect(),
    }
}

/// The MAC in a sysfs `address` file; `None` for an unreadable, non-Ethernet or all-zero one.
pub fn read_mac(sysfs: &Path, interface: &str) -> Option<MacAddress> {
    if interface.is_empty() || interface.contains('/') || interface.starts_with('.') {
        return None;
    }
    let text =
        std::fs::read_to_string(sysfs.join("class/net").join(interface).join("address")).ok()?;
    let mac: MacAddress = text.trim().parse().ok()?;
    (mac.0 != [0; 6]).then_some(mac)
}

/// Converts a `sockaddr` from `getifaddrs` into an address, for IPv4 and IPv6 only.
///
/// # Safety
/// `sa` is null or points to a valid `sockaddr` of the size its family implies.
unsafe fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: non-null and valid per the caller; the family says which struct it is.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let v4 = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let v6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

/// Every `getifaddrs` entry of this host.
pub fn interface_entries() -> std::io::Result<Vec<IfEntry>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut entries = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is an element of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cursor };
        cursor = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the list's sockaddrs are valid for their family.
        let address =
            unsafe { ip_of(ifa.ifa_addr) }.map(|a| (a, unsafe { ip_of(ifa.ifa_netmask) }));
        entries.push(IfEntry {
            interface: name,
            loopback: ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0,
            address,
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(entries)
}

/// This host's inventory. An interface list that cannot be read gives an inventory without
/// interfaces (logged): the host name still helps.
pub fn collect(procfs: &Path, sysfs: &Path) -> Inventory {
    let hostname =
        std::fs::read_to_string(procfs.join("sys/kernel/hostname")).unwrap_or_else(|e| {
            tracing::warn!("{}/sys/kernel/hostname: {e}", procfs.display());
            String::new()
        });
    let entries = interface_entries().unwrap_or_else(|e| {
        tracing::warn!("listing network interfaces (getifaddrs): {e}");
        Vec::new()
    });
    build(&hostname, &entries, |name| read_mac(sysfs, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(interface: &str, loopback: bool, address: Option<(&str, &str)>) -> IfEntry {
        IfEntry {
            interface: interface.into(),
            loopback,
            address: address.map(|(a, m)| (a.parse().unwrap(), Some(m.parse().unwrap()))),
        }
    }

    #[test]
    fn interfaces_with_macs_prefixes_and_broadcasts_without_loopback() {
        let sys = tempfile::tempdir().unwrap();
        for (name, mac) in [
            ("eth0", "52:54:00:ab:cd:ef\n"),
            ("wg0", "00:00:00:00:00:00\n"),
            (
                "ib0",
                "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:6b:31\n",
            ),
            ("lo", "00:00:00:00:00:00\n"),
        ] {
            let dir = sys.path().join("class/net").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("address"), mac).unwrap();
        }
        let entries = [
            entry("lo", true, None),
            entry("lo", true, Some(("127.0.0.1", "255.0.0.0"))),
            entry("eth0", false, None),
            entry("eth0", false, Some(("10.0.3.17", "255.255.255.0"))),
            entry(
                "eth0",
                false,
                Some(("fe80::5054:ff:feab:cdef", "ffff:ffff:ffff:ffff::")),
            ),
            entry("wg0", false, Some(("10.9.0.1", "255.255.255.255"))),
            entry("ib0", false, Some(("192.168.7.9", "255.255.240.0"))),
            entry("nomac", false, None),
        ];
        let inv = build("storage-01\n", &entries, |n| read_mac(sys.path(), n));
        assert_eq!(inv.hostname, "storage-01");
        let names: Vec<&str> = inv.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "ib0", "nomac", "wg0"]);
        let eth0 = &inv.interfaces[0];
        assert_eq!(eth0.mac, Some("52:54:00:ab:cd:ef".parse().unwrap()));
        assert_eq!(eth0.addresses.len(), 2);
        assert_eq!(eth0.addresses[0].prefix_len, 24);
        assert_eq!(
            eth0.addresses[0].broadcast,
            Some(Ipv4Addr::new(10, 0, 3, 255))
        );
        assert_eq!(eth0.addresses[1].prefix_len, 64);
        assert_eq!(eth0.addresses[1].broadcast, None);
        // A 20-byte InfiniBand address is no MAC; its subnet still has a broadcast.
        let ib0 = &inv.interfaces[1];
        assert_eq!(ib0.mac, None);
        assert_eq!(
            ib0.addresses[0].broadcast,
            Some(Ipv4Addr::new(192, 168, 15, 255))
        );
        // No sysfs entry, all-zero MAC, a /32 without broadcast.
        assert_eq!(inv.interfaces[2].mac, None);
        assert_eq!(inv.interfaces[3].mac, None);
        assert_eq!(inv.interfaces[3].addresses[0].broadcast, None);
        assert_eq!(read_mac(sys.path(), "../../etc"), None);
    }

    #[test]
    fn this_host_lists_without_loopback() {
        let entries = interface_entries().unwrap();
        assert!(entries.iter().any(|e| e.loopback), "{entries:?}");
        let inv = collect(Path::new("/proc"), Path::new("/sys"));
        assert!(!inv.hostname.is_empty());
        assert!(inv.interfaces.iter().all(|i| i.name != "lo"));
    }
}
