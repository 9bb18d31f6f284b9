//! The agent's own settings (`--config FILE`, TOML): the controller link, the node's roles,
//! storage devices and managed services. One file and one schema for the agent, `op` and
//! `ssh-dispatch`: services and storage devices are the operations' declarations
//! ([`crate::ops::config`], their source of truth), checked here with the rest. Relative paths of
//! the `[controller]` files are relative to this file; the declarations' paths must be absolute.
//! Declared storage devices imply the `storage` role. Errors name the file, the key and what is
//! wrong.
//!
//! ```toml
//! roles = ["storage"]                  # storage, ray, other
//!
//! [controller]
//! address = "controller.lab:7443"      # host:port (UDP); each resolved address in turn
//! server_name = "controller.lab"       # must be in the controller certificate's SANs
//! # or several controllers of one fleet (docs/scale-out.md), linked to one at a time:
//! # addresses = ["ops1.lab:7443", "ops2.lab:7443"]  # server name: each one's host, unless
//! # prefer = "ops1.lab:7443"           # server_name is given; prefer: tried first
//! ca_file = "ca.pem"
//! cert_file = "node.pem"
//! key_file = "node.key"
//! # keep_alive_ms = 1000, idle_timeout_ms = 2500, report_interval_ms = 5000, reconnect_max_ms = 5000
//!
//! [[storage.devices]]
//! id = 3                               # DEVICE.ID in the DFS database
//! fragment_dir = "/srv/dfs/fragments"
//!
//! [fragments]                          # the fragment task (crate::fragment_task)
//! scrub_period = "7d"
//!
//! [ray]                                # implies the ray role (crate::ray)
//! metrics_port = 8080                  # Ray's --metrics-export-port on this node
//! # discovery_file = "/tmp/ray/prom_metrics_service_discovery.json", metrics_path = "/metrics"
//!
//! [[services]]
//! name = "dfs-client"
//! start = ["java", "-jar", "client.jar"]
//! workdir = "/opt/dfs"
//! pid_file = "/run/nodewarden/dfs-client.pid"
//!
//! [[services]]
//! name = "ray"
//! unit = "ray-worker.service"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use nodewarden_shared::protocol::Role;
use serde::Deserialize;

use crate::fragment_task::{FragmentSettings, RawFragments};
use crate::ops::config::{OpsConfig, ServiceDecl, StorageDecl};
use crate::ray::RaySettings;

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    controller: Option<RawController>,
    #[serde(default)]
    roles: Vec<Role>,
    #[serde(default)]
    storage: StorageDecl,
    #[serde(default)]
    services: Vec<ServiceDecl>,
    fragments: Option<RawFragments>,
    ray: Option<RaySettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawController {
    address: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
    prefer: Option<String>,
    server_name: Option<String>,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default = "default_keep_alive")]
    keep_alive_ms: u64,
    #[serde(default = "default_idle")]
    idle_timeout_ms: u64,
    #[serde(default = "default_report")]
    report_interval_ms: u64,
    #[serde(default = "default_reconnect_max")]
    reconnect_max_ms: u64,
}

/// The default keep-alive interval, in milliseconds (`keep_alive_ms`).
pub const DEFAULT_KEEP_ALIVE_MS: u64 = 1000;
/// The default idle timeout, in milliseconds (`idle_timeout_ms`).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 2500;

fn default_keep_alive() -> u64 {
    DEFAULT_KEEP_ALIVE_MS
}
fn default_idle() -> u64 {
    DEFAULT_IDLE_TIMEOUT_MS
}
fn default_report() -> u64 {
    5000
}
/// The default longest wait between connection attempts, in milliseconds.
pub const DEFAULT_RECONNECT_MAX_MS: u64 = 5000;

fn default_reconnect_max() -> u64 {
    DEFAULT_RECONNECT_MAX_MS
}

#[derive(Debug, Clone, PartialEq)]
pub struct ControllerLink {
    /// The controllers of the fleet, linked to one at a time (`session::Failover`).
    pub controllers: Vec<ControllerAddress>,
    /// The index in `controllers` tried first.
    pub prefer: Option<usize>,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    pub report_interval: Duration,
    pub reconnect_max: Duration,
}

/// One controller: where to reach it and the name its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerAddress {
    /// `host:port` (UDP); each resolved address in turn.
    pub address: String,
    pub server_name: String,
}

impl ControllerAddress {
    /// One controller named as it is reached (`server_name` from the address's host).
    pub fn new(address: &str, server_name: &str) -> ControllerAddress {
        ControllerAddress {
            address: address.to_string(),
            server_name: server_name.to_string(),
        }
    }
}

/// `address` + `server_name` (one controller), or `addresses` (several; each one's server
/// name is its host unless `server_name` is given), checked.
fn controller_addresses(c: &RawController) -> Result<Vec<ControllerAddress>, String> {
    let listed: Vec<&String> = match (&c.address, c.addresses.is_empty()) {
        (Some(_), false) => {
            return Err("controller: give address or addresses, not both".into());
        }
        (None, true) => return Err("controller: address (or addresses) is missing".into()),
        (Some(a), true) => {
            if c.server_name.is_none() {
                return Err(
                    "controller.server_name: missing (the name in the controller's certificate)"
                        .into(),
                );
            }
            vec![a]
        }
        (None, false) => c.addresses.iter().collect(),
    };
    if listed.len() > 16 {
        return Err(format!(
            "controller.addresses: {} controllers, at most 16",
            listed.len()
        ));
    }
    let key = if c.address.is_some() {
        "address"
    } else {
        "addresses"
    };
    let mut out: Vec<ControllerAddress> = Vec::new();
    for a in listed {
        let host = match a.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host,
            _ => return Err(format!("controller.{key}: {a:?} is not host:port")),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = c.server_name.clone().unwrap_or_else(|| host.to_string());
        if server_name.trim().is_empty() {
            return Err("controller.server_name: must not be empty".into());
        }
        if out.iter().any(|o| o.address == *a) {
            return Err(format!("controller.addresses: {a:?} is listed twice"));
        }
        out.push(ControllerAddress {
            address: a.clone(),
            server_name,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub file: PathBuf,
    pub controller: Option<ControllerLink>,
    pub roles: Vec<Role>,
    /// The declared services and storage devices: all the node may be asked to do.
    pub ops: OpsConfig,
    /// The fragment task's settings per enabled storage device (`[fragments]`; none without
    /// that section).
    pub fragments: Vec<FragmentSettings>,
    /// Where Ray's metrics endpoint is looked for (`[ray]`, or its defaults on a node with
    /// the `ray` role); `None` on a node without Ray.
    pub ray: Option<RaySettings>,
}

impl AgentConfig {
    pub fn load(file: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(&text, file)
    }

    pub fn parse(text: &str, file: &Path) -> Result<AgentConfig, ConfigError> {
        let err = |message: String| ConfigError {
            file: file.to_path_buf(),
            message,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let controller = raw
            .controller
            .map(|c| -> Result<ControllerLink, ConfigError> {
                let controllers = controller_addresses(&c).map_err(err)?;
                let prefer = match &c.prefer {
                    None => None,
                    Some(p) => Some(
                        controllers
                            .iter()
                            .position(|a| a.address == *p)
                            .ok_or_else(|| {
                                err(format!(
                                    "controller.prefer: {p:?} is not one of controller.addresses"
                                ))
                            })?,
                    ),
                };
                if !(200..=600_000).contains(&c.idle_timeout_ms) {
                    return Err(err(format!(
                        "controller.idle_timeout_ms: {} is outside 200..=600000",
                        c.idle_timeout_ms
                    )));
                }
                if c.keep_alive_ms == 0 || c.keep_alive_ms * 2 > c.idle_timeout_ms {
                    return Err(err(format!(
                        "controller.keep_alive_ms: {} must be above 0 and at most half of idle_timeout_ms ({})",
                        c.keep_alive_ms, c.idle_timeout_ms
                    )));
                }
                if c.report_interval_ms < 100 {
                    return Err(err(format!(
                        "controller.report_interval_ms: {} is below 100",
                        c.report_interval_ms
                    )));
                }
                if c.reconnect_max_ms < 100 {
                    return Err(err(format!(
                        "controller.reconnect_max_ms: {} is below 100",
                        c.reconnect_max_ms
                    )));
                }
                Ok(ControllerLink {
                    controllers,
                    prefer,
                    ca_file: base.join(c.ca_file),
                    cert_file: base.join(c.cert_file),
                    key_file: base.join(c.key_file),
                    keep_alive: Duration::from_millis(c.keep_alive_ms),
                    idle_timeout: Duration::from_millis(c.idle_timeout_ms),
                    report_interval: Duration::from_millis(c.report_interval_ms),
                    reconnect_max: Duration::from_millis(c.reconnect_max_ms),
                })
            })
            .transpose()?;

        let ops = OpsConfig {
            services: raw.services,
            storage: raw.storage,
        };
        ops.check().map_err(|e| err(e.to_string()))?;
        let mut fragments = match &raw.fragments {
            Some(f) => f.resolve(&ops.storage.devices).map_err(err)?,
            None => Vec::new(),
        };
        for f in &mut fragments {
            f.state_dir = base.join(&f.state_dir);
        }
        let mut roles = raw.roles;
        if !ops.storage.devices.is_empty() {
            roles.push(Role::Storage);
        }
        if let Some(problem) = raw.ray.as_ref().and_then(RaySettings::problem) {
            return Err(err(problem));
        }
        if raw.ray.is_some() {
            roles.push(Role::Ray);
        }
        roles.sort();
        roles.dedup();
        let ray = roles
            .contains(&Role::Ray)
            .then(|| raw.ray.unwrap_or_default());
        Ok(AgentConfig {
            file: file.to_path_buf(),
            controller,
            roles,
            ops,
            fragments,
            ray,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
roles = ["storage", "ray"]

[controller]
address = "controller.lab:7443"
server_name = "controller.lab"
ca_file = "ca.pem"
cert_file = "/etc/nw/node.pem"
key_file = "node.key"
idle_timeout_ms = 3000

[[storage.devices]]
id = 3
fragment_dir = "/srv/f3"

[[storage.devices]]
id = 4
fragment_dir = "/srv/f4"

[[services]]
name = "dfs-client"
workdir = "/opt/dfs"
start = ["java", "-jar", "client.jar"]
pid_file = "/run/nodewarden/dfs-client.pid"
"#;

    fn parse(text: &str) -> Result<AgentConfig, String> {
        AgentConfig::parse(text, Path::new("/etc/nw/agent.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn full_file() {
        let c = parse(FULL).unwrap();
        let link = c.controller.unwrap();
        assert_eq!(link.ca_file, Path::new("/etc/nw/ca.pem"));
        assert_eq!(link.cert_file, Path::new("/etc/nw/node.pem"));
        assert_eq!(link.idle_timeout, Duration::from_secs(3));
        assert_eq!(
            link.keep_alive,
            Duration::from_millis(DEFAULT_KEEP_ALIVE_MS)
        );
        assert_eq!(
            link.controllers,
            [ControllerAddress::new(
                "controller.lab:7443",
                "controller.lab"
            )]
        );
        assert_eq!(link.prefer, None);
        // Several controllers: each one's server name is its host unless one is given.
        let several = FULL
            .replace(
                "address = \"controller.lab:7443\"",
                "addresses = [\"ops1.lab:7443\", \"[::1]:7443\"]\nprefer = \"[::1]:7443\"",
            )
            .replace("server_name = \"controller.lab\"\n", "");
        let link = parse(&several).unwrap().controller.unwrap();
        assert_eq!(
            link.controllers,
            [
                ControllerAddress::new("ops1.lab:7443", "ops1.lab"),
                ControllerAddress::new("[::1]:7443", "::1"),
            ]
        );
        assert_eq!(link.prefer, Some(1));
        assert_eq!(c.roles, vec![Role::Storage, Role::Ray]);
        assert_eq!(c.ops.storage.devices[1].fragment_dir, Path::new("/srv/f4"));
        assert_eq!(c.ops.services[0].name, "dfs-client");
        // No controller section: metrics only.
        assert_eq!(parse("roles = [\"other\"]").unwrap().controller, None);
        // Declared devices imply the storage role.
        let c = parse("[[storage.devices]]\nid = 1\nfragment_dir = \"/f\"\n").unwrap();
        assert_eq!(c.roles, vec![Role::Storage]);
        assert!(c.fragments.is_empty());
        let c = parse(&format!("{FULL}[fragments]\nio_mb_per_s = 2\n")).unwrap();
        assert_eq!(c.fragments.len(), 2);
        assert_eq!(c.fragments[1].dir, Path::new("/srv/f4"));
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let cases = [
            (FULL.replace("\"ray\"", "\"gpu\""), "unknown variant `gpu`"),
            (
                FULL.replace("id = 4", "id = 3"),
                "storage.devices[1] (id 3): device id declared twice",
            ),
            (
                FULL.replace("\"/srv/f4\"", "\"f4\""),
                "storage.devices[1] (id 4).fragment_dir: f4 must be an absolute path",
            ),
            (
                FULL.replace(
                    "[[storage.devices]]\nid = 3",
                    "[storage]\nbogus = 1\n[[storage.devices]]\nid = 3",
                ),
                "unknown field `bogus`",
            ),
            (
                FULL.replace("pid_file = \"/run/nodewarden/dfs-client.pid\"\n", ""),
                "services[0] (\"dfs-client\"): a started process needs pid_file",
            ),
            (
                FULL.replace("controller.lab:7443", "controller.lab"),
                "controller.address",
            ),
            (
                FULL.replace("idle_timeout_ms = 3000", "keep_alive_ms = 1500"),
                "controller.keep_alive_ms",
            ),
            (
                FULL.replace("server_name = \"controller.lab\"\n", ""),
                "controller.server_name: missing",
            ),
            (
                FULL.replace(
                    "address = \"controller.lab:7443\"",
                    "addresses = [\"a:1\", \"b\"]",
                ),
                "controller.addresses: \"b\" is not host:port",
            ),
            (
                FULL.replace(
                    "address = \"controller.lab:7443\"",
                    "address = \"a:1\"\naddresses = [\"b:1\"]",
                ),
                "give address or addresses, not both",
            ),
            (
                FULL.replace(
                    "address = \"controller.lab:7443\"",
                    "addresses = [\"a:1\", \"b:1\"]\nprefer = \"c:1\"",
                ),
                "controller.prefer: \"c:1\" is not one of controller.addresses",
            ),
            (
                FULL.replace("workdir", "wrokdir"),
                "unknown field `wrokdir`",
            ),
            (
                format!("{FULL}[fragments]\nscrub_period = \"1w\"\n"),
                "fragments.scrub_period: \"1w\" is not a period",
            ),
            (
                format!("{FULL}[[fragments.devices]]\nid = 7\n"),
                "fragments.devices[0] (id 7): not a declared storage device",
            ),
            (
                FULL.replace("workdir = \"/opt/dfs\"\n", "unit = \"x\"\n"),
                "services[0] (\"dfs-client\"): declare either unit or start",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.starts_with("/etc/nw/agent.toml: "), "{e}");
            assert!(e.contains(want), "{e} !~ {want}");
        }
    }
}
