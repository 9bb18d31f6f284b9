//! The agent's own settings (`--config FILE`, TOML): the controller link, the node's roles,
//! storage devices and managed services. Relative paths are relative to the file. Errors name
//! the file, the key and what is wrong.
//!
//! ```toml
//! roles = ["storage"]                  # storage, ray, other
//!
//! [controller]
//! address = "controller.lab:7443"      # host:port (UDP); each resolved address in turn
//! server_name = "controller.lab"       # must be in the controller certificate's SANs
//! ca_file = "ca.pem"
//! cert_file = "node.pem"
//! key_file = "node.key"
//! # keep_alive_ms = 500, idle_timeout_ms = 2000, report_interval_ms = 5000, reconnect_max_ms = 5000
//!
//! [[storage.devices]]
//! id = 3                               # DEVICE.ID in the DFS database
//! fragment_dir = "/srv/dfs/fragments"
//!
//! [[services]]
//! name = "dfs-client"
//! workdir = "/opt/dfs"
//! command = ["java", "-jar", "client.jar"]
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodewarden_shared::protocol::Role;
use serde::Deserialize;

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
    storage: RawStorage,
    #[serde(default)]
    services: Vec<Service>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawController {
    address: String,
    server_name: String,
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

fn default_keep_alive() -> u64 {
    500
}
fn default_idle() -> u64 {
    2000
}
fn default_report() -> u64 {
    5000
}
fn default_reconnect_max() -> u64 {
    5000
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default)]
    devices: Vec<RawDevice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    id: u32,
    fragment_dir: PathBuf,
}

/// A service the node runs and the controller may operate (operations are a later issue).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// A systemd unit, when the service is one.
    pub unit: Option<String>,
    /// Otherwise the command line that runs it, and where.
    pub command: Option<Vec<String>>,
    pub workdir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ControllerLink {
    pub address: String,
    pub server_name: String,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    pub report_interval: Duration,
    pub reconnect_max: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: u32,
    pub fragment_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub file: PathBuf,
    pub controller: Option<ControllerLink>,
    pub roles: Vec<Role>,
    pub devices: Vec<Device>,
    pub services: Vec<Service>,
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
                match c.address.rsplit_once(':') {
                    Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                    _ => {
                        return Err(err(format!(
                            "controller.address: {:?} is not host:port",
                            c.address
                        )));
                    }
                }
                if c.server_name.trim().is_empty() {
                    return Err(err("controller.server_name: must not be empty".into()));
                }
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
                    address: c.address,
                    server_name: c.server_name,
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

        let mut seen = BTreeSet::new();
        let mut devices = Vec::new();
        for (i, d) in raw.storage.devices.into_iter().enumerate() {
            if !seen.insert(d.id) {
                return Err(err(format!(
                    "storage.devices[{i}].id: device {} is listed twice",
                    d.id
                )));
            }
            if d.fragment_dir.as_os_str().is_empty() {
                return Err(err(format!(
                    "storage.devices[{i}].fragment_dir: must not be empty"
                )));
            }
            devices.push(Device {
                id: d.id,
                fragment_dir: base.join(d.fragment_dir),
            });
        }
        if !devices.is_empty() && !raw.roles.contains(&Role::Storage) {
            return Err(err(
                "roles: storage devices are configured but \"storage\" is not among the roles"
                    .into(),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, s) in raw.services.iter().enumerate() {
            if s.name.trim().is_empty() {
                return Err(err(format!("services[{i}].name: must not be empty")));
            }
            if !names.insert(s.name.clone()) {
                return Err(err(format!(
                    "services[{i}].name: service {:?} is listed twice",
                    s.name
                )));
            }
            match (&s.unit, &s.command) {
                (Some(_), Some(_)) => {
                    return Err(err(format!(
                        "services[{i}]: give either unit or command, not both"
                    )));
                }
                (None, None) => {
                    return Err(err(format!("services[{i}]: give a unit or a command")));
                }
                (None, Some(c)) if c.is_empty() => {
                    return Err(err(format!("services[{i}].command: must not be empty")));
                }
                _ => {}
            }
        }
        let mut roles = raw.roles;
        roles.sort();
        roles.dedup();
        Ok(AgentConfig {
            file: file.to_path_buf(),
            controller,
            roles,
            devices,
            services: raw.services,
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
fragment_dir = "f4"

[[services]]
name = "dfs-client"
workdir = "/opt/dfs"
command = ["java", "-jar", "client.jar"]
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
        assert_eq!(link.keep_alive, Duration::from_millis(500));
        assert_eq!(c.roles, vec![Role::Storage, Role::Ray]);
        assert_eq!(c.devices[1].fragment_dir, Path::new("/etc/nw/f4"));
        assert_eq!(c.services[0].name, "dfs-client");
        // No controller section: metrics only.
        assert_eq!(parse("roles = [\"other\"]").unwrap().controller, None);
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let cases = [
            (FULL.replace("\"ray\"", "\"gpu\""), "unknown variant `gpu`"),
            (
                FULL.replace("id = 4", "id = 3"),
                "storage.devices[1].id: device 3 is listed twice",
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
                "missing field `server_name`",
            ),
            (
                FULL.replace("workdir", "wrokdir"),
                "unknown field `wrokdir`",
            ),
            (
                FULL.replace("[\"storage\", \"ray\"]", "[\"ray\"]"),
                "roles: storage devices",
            ),
            (
                FULL.replace(
                    "command = [\"java\", \"-jar\", \"client.jar\"]",
                    "unit = \"x\"\ncommand = [\"y\"]",
                ),
                "services[0]: give either",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.starts_with("/etc/nw/agent.toml: "), "{e}");
            assert!(e.contains(want), "{e} !~ {want}");
        }
    }
}
