//! What the node declares it may be asked to do: `[[services]]` and `[[storage.devices]]` in the
//! agent's TOML config. Nothing outside these declarations can be run, over either path. These
//! types are the schema of those tables; the whole file (with `[controller]` and `roles`) is
//! read by [`crate::config::AgentConfig`], whose errors name the file.
//!
//! ```toml
//! [[services]]
//! name = "storage-client"
//! start = ["java", "-jar", "client.jar"]
//! workdir = "/opt/dfs/client"
//! pid_file = "/run/nodewarden/storage-client.pid"
//!
//! [[services]]
//! name = "ray"
//! unit = "ray-worker.service"
//!
//! [[storage.devices]]
//! id = 3
//! fragment_dir = "/srv/dfs/fragments"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodewarden_shared::ops::validate_service_name;
use serde::Deserialize;

/// A managed service: a systemd unit, or explicit argv commands for a process that is not a unit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDecl {
    /// The name operations use (`nodewarden-op service <name> start`).
    pub name: String,
    /// A systemd unit: `systemctl start|stop|restart|is-active <unit>`.
    pub unit: Option<String>,
    /// For a process that is not a unit: the argv to start it (never a shell string). It runs
    /// detached in `workdir`, its pid recorded in `pid_file`.
    pub start: Option<Vec<String>>,
    /// An explicit stop argv; without one, stop sends SIGTERM (then SIGKILL) to the pid file's
    /// process group.
    pub stop: Option<Vec<String>>,
    pub workdir: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// Where a started process's stdout and stderr go (appended); default /dev/null.
    pub log_file: Option<PathBuf>,
    /// Run the commands as this user (the agent must run as root to switch).
    pub user: Option<String>,
    /// Environment for the commands: PATH (a standard one unless set here) and these, nothing
    /// inherited from the agent or the SSH session.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Seconds a command may take (systemctl, an explicit stop).
    #[serde(default = "default_timeout")]
    pub timeout: f64,
    /// Seconds between SIGTERM and SIGKILL when stopping by pid.
    #[serde(default = "default_stop_grace")]
    pub stop_grace: f64,
    /// Seconds a started process must stay up to count as started.
    #[serde(default = "default_start_grace")]
    pub start_grace: f64,
}

fn default_timeout() -> f64 {
    30.0
}
fn default_stop_grace() -> f64 {
    10.0
}
fn default_start_grace() -> f64 {
    0.5
}

/// How a declared service is run, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceKind {
    Unit(String),
    Process {
        start: Vec<String>,
        stop: Option<Vec<String>>,
        pid_file: PathBuf,
    },
}

impl ServiceDecl {
    pub fn kind(&self) -> Result<ServiceKind, String> {
        match (&self.unit, &self.start) {
            (Some(unit), None) => {
                if self.stop.is_some()
                    || self.pid_file.is_some()
                    || self.workdir.is_some()
                    || self.log_file.is_some()
                    || self.user.is_some()
                    || !self.env.is_empty()
                {
                    return Err(
                        "a unit service takes no stop, pid_file, workdir, log_file, user or env (the unit file says those)"
                            .into(),
                    );
                }
                if unit.is_empty()
                    || unit.starts_with('-')
                    || !unit
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"@._-:\\".contains(&b))
                {
                    return Err(format!("unit {unit:?} is not a systemd unit name"));
                }
                Ok(ServiceKind::Unit(unit.clone()))
            }
            (None, Some(start)) => {
                check_argv("start", start)?;
                if let Some(stop) = &self.stop {
                    check_argv("stop", stop)?;
                }
                let pid_file = self
                    .pid_file
                    .clone()
                    .ok_or("a started process needs pid_file")?;
                if !pid_file.is_absolute() {
                    return Err(format!(
                        "pid_file {} must be an absolute path",
                        pid_file.display()
                    ));
                }
                Ok(ServiceKind::Process {
                    start: start.clone(),
                    stop: self.stop.clone(),
                    pid_file,
                })
            }
            (Some(_), Some(_)) => Err("declare either unit or start, not both".into()),
            (None, None) => Err("declare unit or start".into()),
        }
    }

    pub fn timeout(&self) -> Duration {
        seconds(self.timeout)
    }
    pub fn stop_grace(&self) -> Duration {
        seconds(self.stop_grace)
    }
    pub fn start_grace(&self) -> Duration {
        seconds(self.start_grace)
    }
}

fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::from_secs(30))
}

fn check_argv(what: &str, argv: &[String]) -> Result<(), String> {
    match argv.first() {
        None => Err(format!("{what} is an empty command")),
        Some(program) if program.is_empty() => Err(format!("{what} has an empty program")),
        Some(_) if argv.iter().any(|a| a.contains('\0')) => {
            Err(format!("{what} has an argument with a NUL byte"))
        }
        Some(_) => Ok(()),
    }
}

/// A storage device whose fragments this node holds: `<fragment_dir>/<fid>` and
/// `<fragment_dir>/<fid>.digest`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageDeviceDecl {
    /// `DEVICE.ID` in the DFS database.
    pub id: u32,
    pub fragment_dir: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageDecl {
    #[serde(default)]
    pub devices: Vec<StorageDeviceDecl>,
}

/// The operations part of the agent config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpsConfig {
    pub services: Vec<ServiceDecl>,
    pub storage: StorageDecl,
}

pub use crate::config::ConfigError;

/// A declaration that does not check: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct DeclError {
    pub key: String,
    pub message: String,
}

impl OpsConfig {
    /// Reads the agent config file and returns its declarations (the whole file is checked, so
    /// `ssh-dispatch` refuses a file the agent itself would refuse).
    pub fn load(path: &Path) -> Result<OpsConfig, ConfigError> {
        crate::config::AgentConfig::load(path).map(|c| c.ops)
    }

    /// As [`OpsConfig::load`], for text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<OpsConfig, ConfigError> {
        crate::config::AgentConfig::parse(text, path).map(|c| c.ops)
    }

    /// Whether anything is declared (else the agent offers no operations on its link).
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.storage.devices.is_empty()
    }

    /// Every declaration is usable, names and ids are unique.
    pub fn check(&self) -> Result<(), DeclError> {
        let invalid = |key: String, message: String| DeclError { key, message };
        let mut names = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let key = format!("services[{i}] ({:?})", s.name);
            validate_service_name(&s.name).map_err(|e| invalid(key.clone(), e.to_string()))?;
            if !names.insert(&s.name) {
                return Err(invalid(key, "declared twice".into()));
            }
            s.kind().map_err(|m| invalid(key.clone(), m))?;
            for (field, path) in [("workdir", &s.workdir), ("log_file", &s.log_file)] {
                if let Some(path) = path
                    && !path.is_absolute()
                {
                    return Err(invalid(
                        format!("{key}.{field}"),
                        format!("{} must be an absolute path", path.display()),
                    ));
                }
            }
            if let Some(name) = s
                .env
                .keys()
                .find(|k| k.is_empty() || k.contains(['=', '\0']))
            {
                return Err(invalid(
                    format!("{key}.env"),
                    format!("{name:?} is not a variable name"),
                ));
            }
            for (field, v) in [
                ("timeout", s.timeout),
                ("stop_grace", s.stop_grace),
                ("start_grace", s.start_grace),
            ] {
                if !(v.is_finite() && v > 0.0 && v < 86_400.0) {
                    return Err(invalid(
                        format!("{key}.{field}"),
                        format!("{v} is not a number of seconds between 0 and 86400"),
                    ));
                }
            }
        }
        let mut ids = BTreeSet::new();
        for (i, d) in self.storage.devices.iter().enumerate() {
            let key = format!("storage.devices[{i}] (id {})", d.id);
            if !ids.insert(d.id) {
                return Err(invalid(key, "device id declared twice".into()));
            }
            if !d.fragment_dir.is_absolute() {
                return Err(invalid(
                    format!("{key}.fragment_dir"),
                    format!("{} must be an absolute path", d.fragment_dir.display()),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[[services]]
name = "storage-client"
start = ["java", "-jar", "client.jar"]
workdir = "/opt/dfs/client"
pid_file = "/run/nodewarden/storage-client.pid"

[[services]]
name = "ray"
unit = "ray-worker.service"
timeout = 60

[[storage.devices]]
id = 3
fragment_dir = "/srv/dfs/fragments"
"#;

    fn parse(text: &str) -> Result<OpsConfig, ConfigError> {
        OpsConfig::parse(text, Path::new("/etc/nodewarden/agent.toml"))
    }

    #[test]
    fn parses_the_documented_shape() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.services.len(), 2);
        assert_eq!(
            c.services[0].kind().unwrap(),
            ServiceKind::Process {
                start: vec!["java".into(), "-jar".into(), "client.jar".into()],
                stop: None,
                pid_file: "/run/nodewarden/storage-client.pid".into(),
            }
        );
        assert_eq!(
            c.services[1].kind().unwrap(),
            ServiceKind::Unit("ray-worker.service".into())
        );
        assert_eq!(c.services[1].timeout(), Duration::from_secs(60));
        assert_eq!(c.services[0].stop_grace(), Duration::from_secs(10));
        assert_eq!(c.storage.devices[0].id, 3);
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let cases = [
            (
                "[[services]]\nname = \"x\"\nstart = \"java -jar client.jar\"\npid_file = \"/p\"\n",
                "start",
            ),
            (
                "[[services]]\nname = \"x\"\nstart = [\"sleep\"]\n",
                "services[0] (\"x\"): a started process needs pid_file",
            ),
            (
                "[[services]]\nname = \"x\"\nunit = \"a\"\nstart = [\"b\"]\n",
                "either unit or start",
            ),
            (
                "[[services]]\nname = \"../x\"\nunit = \"a\"\n",
                "services[0] (\"../x\")",
            ),
            (
                "[[services]]\nname = \"x\"\nunit = \"a\"\n[[services]]\nname = \"x\"\nunit = \"b\"\n",
                "declared twice",
            ),
            (
                "[[services]]\nname = \"x\"\nunit = \"a\"\nuser = \"dfs\"\n",
                "a unit service takes no",
            ),
            (
                "[[services]]\nname = \"x\"\nunit = \"--now\"\n",
                "not a systemd unit",
            ),
            (
                "[[services]]\nname = \"x\"\nunit = \"a\"\ntimeout = -1\n",
                "services[0] (\"x\").timeout",
            ),
            (
                "[[services]]\nname = \"x\"\nunit = \"a\"\nshell = \"rm\"\n",
                "unknown field `shell`",
            ),
            ("[link]\ncontroller = \"x:1\"\n", "unknown field `link`"),
            (
                "[[storage.devices]]\nid = 1\nfragment_dir = \"rel\"\n",
                "storage.devices[0] (id 1).fragment_dir",
            ),
            (
                "[[storage.devices]]\nid = -1\nfragment_dir = \"/a\"\n",
                "id",
            ),
            (
                "[[storage.devices]]\nid = 1\nfragment_dir = \"/a\"\n[[storage.devices]]\nid = 1\nfragment_dir = \"/b\"\n",
                "declared twice",
            ),
            (
                "[[services]]\nname = \"x\"\nstart = []\npid_file = \"/p\"\n",
                "empty command",
            ),
            (
                "[[services]]\nname = \"x\"\nstart = [\"a\"]\npid_file = \"/p\"\nworkdir = \"opt\"\n",
                "services[0] (\"x\").workdir",
            ),
        ];
        for (text, expected) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with("/etc/nodewarden/agent.toml"), "{e}");
            assert!(e.contains(expected), "{expected:?} not in {e}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = OpsConfig::load(Path::new("/nonexistent/agent.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/agent.toml"), "{e}");
    }
}
