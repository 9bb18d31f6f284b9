//! Ray's own metrics endpoint on this node, for the controller's service discovery (job `ray`
//! beside `nodes`). Ray's metrics agent serves Prometheus metrics on its metrics export port
//! (`ray start --metrics-export-port`); the head also writes the whole cluster's list to
//! `<ray temp dir>/prom_metrics_service_discovery.json`. A node running Ray reports the port of
//! `[ray] metrics_port`, and every port of its own addresses in that discovery file, while a
//! socket of this host listens on it (`/proc/net/tcp`, `/proc/net/tcp6`): a stopped Ray leaves
//! discovery at the next report, a stale discovery file lists nothing.
//!
//! The parsing is plain functions over text; [`RaySource::endpoints`] does the reading (blocking,
//! run beside the link's loop).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nodewarden_shared::protocol::ScrapeEndpoint;
use serde::Deserialize;

/// Where Ray's head writes its Prometheus file-discovery list by default.
pub const DEFAULT_DISCOVERY_FILE: &str = "/tmp/ray/prom_metrics_service_discovery.json";
/// The job Ray's targets are listed under.
pub const JOB: &str = "ray";

/// `[ray]` in the agent's config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaySettings {
    /// Ray's `--metrics-export-port` on this node.
    pub metrics_port: Option<u16>,
    /// Ray's discovery file (read where it exists: on the head).
    #[serde(default = "default_discovery_file")]
    pub discovery_file: PathBuf,
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
}

fn default_discovery_file() -> PathBuf {
    PathBuf::from(DEFAULT_DISCOVERY_FILE)
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

impl Default for RaySettings {
    fn default() -> Self {
        RaySettings {
            metrics_port: None,
            discovery_file: default_discovery_file(),
            metrics_path: default_metrics_path(),
        }
    }
}

impl RaySettings {
    /// Why the settings cannot be used, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if self.metrics_port == Some(0) {
            return Some("ray.metrics_port: 0 is not a port".into());
        }
        let probe = ScrapeEndpoint {
            job: JOB.into(),
            port: 1,
            path: self.metrics_path.clone(),
        };
        probe
            .problem()
            .map(|p| format!("ray.metrics_path {:?}: {p}", self.metrics_path))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RayError {
    #[error("reading {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a Prometheus file-discovery list: {source}")]
    Discovery {
        file: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Adds the ports some socket listens on (state `0A`) in one `/proc/net/tcp`-format table
/// ("  sl  local_address rem_address   st ..." then one socket per line) to `ports`. The kernel
/// lists the listening sockets first (`tcp_get_idx`: the listening hash, then the established
/// one), so the read stops at the first other socket: on a busy Ray node the rest is most of
/// the file.
fn listening_lines<S: AsRef<str>, E>(
    lines: impl Iterator<Item = Result<S, E>>,
    ports: &mut BTreeSet<u16>,
) -> Result<(), E> {
    for line in lines.skip(1) {
        let line = line?;
        let mut fields = line.as_ref().split_whitespace();
        let (Some(_), Some(local), Some(_), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if state != "0A" {
            break;
        }
        if let Some(port) = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        {
            ports.insert(port);
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct TargetGroup {
    #[serde(default)]
    targets: Vec<String>,
}

/// The ports of `own` addresses among a Prometheus file-discovery list's targets
/// (`[{"labels": {...}, "targets": ["10.0.0.5:8080", ...]}]`); targets that are not `ip:port`
/// are passed over.
pub fn discovered_ports(json: &str, own: &[IpAddr]) -> Result<BTreeSet<u16>, serde_json::Error> {
    let groups: Vec<TargetGroup> = serde_json::from_str(json)?;
    Ok(groups
        .iter()
        .flat_map(|g| &g.targets)
        .filter_map(|t| t.parse::<SocketAddr>().ok())
        .filter(|a| own.contains(&a.ip()))
        .map(|a| a.port())
        .collect())
}

/// Finds Ray's endpoint on this node with `[ray]`'s settings.
pub struct RaySource {
    settings: RaySettings,
    procfs: PathBuf,
    /// The last problem logged, so a lasting one is logged once, not at every report.
    last_problem: Mutex<Option<String>>,
}

impl RaySource {
    pub fn new(settings: RaySettings, procfs: &Path) -> RaySource {
        RaySource {
            settings,
            procfs: procfs.to_path_buf(),
            last_problem: Mutex::new(None),
        }
    }

    /// The endpoints to report now; `None` when the listening sockets could not be read.
    pub fn endpoints(&self, own: impl FnOnce() -> Vec<IpAddr>) -> Option<Vec<ScrapeEndpoint>> {
        let mut listening = BTreeSet::new();
        for name in ["net/tcp", "net/tcp6"] {
            let file = self.procfs.join(name);
            let read = std::fs::File::open(&file).and_then(|f| {
                let lines = std::io::BufRead::lines(std::io::BufReader::new(f));
                listening_lines(lines, &mut listening)
            });
            match read {
                Ok(()) => {}
                // No IPv6 in this kernel: no tcp6 table.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == "net/tcp6" => {}
                Err(source) => {
                    self.problem(Some(RayError::Read { file, source }.to_string()));
                    return None;
                }
            }
        }
        let mut candidates: BTreeSet<u16> = self.settings.metrics_port.into_iter().collect();
        match self.discovery() {
            Ok(Some(json)) => match discovered_ports(&json, &own()) {
                Ok(ports) => {
                    self.problem(None);
                    candidates.extend(ports);
                }
                Err(source) => self.problem(Some(
                    RayError::Discovery {
                        file: self.settings.discovery_file.clone(),
                        source,
                    }
                    .to_string(),
                )),
            },
            Ok(None) => self.problem(None),
            Err(e) => self.problem(Some(e.to_string())),
        }
        Some(
            candidates
                .intersection(&listening)
                .map(|&port| ScrapeEndpoint {
                    job: JOB.into(),
                    port,
                    path: self.settings.metrics_path.clone(),
                })
                .collect(),
        )
    }

    /// The discovery file's text; `None` where there is none (a worker, or Ray not started).
    fn discovery(&self) -> Result<Option<String>, RayError> {
        match std::fs::read_to_string(&self.settings.discovery_file) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RayError::Read {
                file: self.settings.discovery_file.clone(),
                source,
            }),
        }
    }

    fn problem(&self, now: Option<String>) {
        let mut last = self.last_problem.lock().unwrap_or_else(|p| p.into_inner());
        if *last != now {
            match &now {
                Some(problem) => tracing::warn!("looking for Ray's metrics endpoint: {problem}"),
                None if last.is_some() => tracing::info!("Ray's metrics endpoint: readable again"),
                None => {}
            }
            *last = now;
        }
    }
}

/// This host's addresses (loopback included: a one-machine Ray lists 127.0.0.1).
pub fn own_addresses() -> Vec<IpAddr> {
    match crate::inventory::interface_entries() {
        Ok(entries) => entries
            .into_iter()
            .filter_map(|e| e.address.map(|(ip, _)| ip))
            .collect(),
        Err(e) => {
            tracing::warn!("listing this host's addresses (getifaddrs): {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listening ports of whole tables given as text.
    fn listening_ports<'a>(tables: impl IntoIterator<Item = &'a str>) -> BTreeSet<u16> {
        let mut ports = BTreeSet::new();
        for table in tables {
            let Ok(()) = listening_lines(
                table.lines().map(Ok::<_, std::convert::Infallible>),
                &mut ports,
            );
        }
        ports
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 100 0 0 10 0
   2: 0500000A:D2F0 0600000A:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 4244 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5000 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_listening_sockets_count() {
        // 0x1F90 = 8080 and 0x2382 = 9090 listen; 0xD2F0 is an established client socket.
        assert_eq!(
            listening_ports([TCP, TCP6]),
            BTreeSet::from([8080, 8081, 9090])
        );
        assert!(listening_ports(["garbage\nmore garbage 1 2 3\n", ""]).is_empty());
        // Listening sockets come first: the first other socket ends the read.
        let late = format!(
            "{TCP}   3: 00000000:1F92 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4245 1 0 100 0 0 10 0\n"
        );
        assert!(!listening_ports([late.as_str()]).contains(&8082));
    }

    /// The kernel's order, on this machine's real table: a listener is found while established
    /// connections (to it and elsewhere) exist.
    #[test]
    fn a_real_listener_is_found_past_established_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _accepted = listener.accept().unwrap();
        let source = RaySource::new(
            RaySettings {
                metrics_port: Some(port),
                discovery_file: PathBuf::from("/nonexistent/ray-discovery.json"),
                ..Default::default()
            },
            Path::new("/proc"),
        );
        let found = source.endpoints(Vec::new).expect("readable tables");
        assert_eq!(found.iter().map(|e| e.port).collect::<Vec<_>>(), [port]);
        drop(listener);
        assert!(source.endpoints(Vec::new).unwrap().is_empty());
    }

    #[test]
    fn the_discovery_file_gives_the_ports_of_this_hosts_addresses() {
        let json = r#"[{"labels": {"job": "ray"},
            "targets": ["10.0.0.5:8080", "10.0.0.6:8080", "10.0.0.5:44217", "[fd00::5]:8090", "head:1"]}]"#;
        let own: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        assert_eq!(
            discovered_ports(json, &own).unwrap(),
            BTreeSet::from([8080, 8090, 44217])
        );
        assert!(discovered_ports("[]", &own).unwrap().is_empty());
        assert!(discovered_ports("{\"targets\": 1}", &own).is_err());
    }

    #[test]
    fn endpoints_are_the_candidates_that_listen() {
        let dir = tempfile::tempdir().unwrap();
        let procfs = dir.path().join("proc");
        std::fs::create_dir_all(procfs.join("net")).unwrap();
        std::fs::write(procfs.join("net/tcp"), TCP).unwrap();
        let discovery = dir.path().join("sd.json");
        let settings = RaySettings {
            metrics_port: Some(9090),
            discovery_file: discovery.clone(),
            ..RaySettings::default()
        };
        let source = RaySource::new(settings, &procfs);
        let own = || vec!["127.0.0.1".parse().unwrap()];
        let ports = |list: Option<Vec<ScrapeEndpoint>>| -> Vec<u16> {
            list.expect("readable").iter().map(|e| e.port).collect()
        };
        // No discovery file (a worker): the configured port, which listens.
        assert_eq!(ports(source.endpoints(own)), [9090]);
        // The head's file adds its own listening port; 7777 does not listen, 10.9.9.9 is not us.
        std::fs::write(
            &discovery,
            r#"[{"targets": ["127.0.0.1:8080", "127.0.0.1:7777", "10.9.9.9:8081"]}]"#,
        )
        .unwrap();
        let list = source.endpoints(own).unwrap();
        assert_eq!(
            list.iter().map(|e| e.port).collect::<Vec<_>>(),
            [8080, 9090]
        );
        assert!(list.iter().all(|e| e.job == "ray" && e.path == "/metrics"));
        // A broken file is logged and passed over; the configured port still counts.
        std::fs::write(&discovery, "not json").unwrap();
        assert_eq!(ports(source.endpoints(own)), [9090]);
        // Nothing listening on it: nothing reported. Unreadable sockets: not looked at.
        std::fs::write(procfs.join("net/tcp"), "header\n").unwrap();
        assert!(source.endpoints(own).unwrap().is_empty());
        std::fs::remove_file(procfs.join("net/tcp")).unwrap();
        assert_eq!(source.endpoints(own), None);
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(RaySettings::default().problem(), None);
        let bad_path = RaySettings {
            metrics_path: "metrics".into(),
            ..RaySettings::default()
        };
        assert!(bad_path.problem().unwrap().contains("ray.metrics_path"));
        let zero = RaySettings {
            metrics_port: Some(0),
            ..RaySettings::default()
        };
        assert!(zero.problem().is_some());
    }
}
