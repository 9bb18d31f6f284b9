//! The controller's TOML settings (`serve --config FILE`). Relative paths are relative to the
//! file. Errors name the file, the key and what is wrong.
//!
//! ```toml
//! [link]
//! listen = "[::]:7443"          # QUIC (UDP) address agents connect to
//! ca_dir = "ca"                 # made by `nodewarden-controller ca init`
//! idle_timeout_ms = 2500        # an agent silent this long is offline
//! keep_alive_ms = 0             # 0: the controller sends none (see below)
//! expiry_warning_days = 30
//!
//! data_dir = "/var/lib/nodewarden"  # default: $STATE_DIRECTORY, else `data` beside this file
//!
//! [database]                    # absent: embedded SQLite in data_dir
//! url = "mysql://nodewarden:secret@127.0.0.1:3306/nodewarden"
//! flush_interval_ms = 1000
//! event_buffer = 100000         # events kept while the database is unreachable
//!
//! [cluster]                     # optional: one of several controllers on one MySQL database
//! id = "ops1"                   # this controller's id, unique in the fleet (docs/scale-out.md)
//! lease_ttl_ms = 10000          # a node's link lease lapses this long after its holder's last renewal
//! peer_listen = "10.0.0.5:9444" # optional: actions forwarded by the other controllers (mutual TLS)
//! peer_url = "https://ops1.example:9444"  # how they reach it (default https://<peer_listen>)
//! peer_cert_file = "ca/peer-ops1.pem"     # `ca issue-controller` (default <ca_dir>/peer-<id>.pem)
//!
//! [http]                        # (also accepted as [admin], its former name)
//! listen = "127.0.0.1:9180"     # API, /metrics, Prometheus service discovery; "" disables
//! tls = false                   # true: HTTPS with the link's server certificate (ca_dir/server.pem)
//! # tls_cert_file = "/etc/nodewarden/https.pem"  # or another pair (a site CA's, for browsers);
//! # tls_key_file = "/etc/nodewarden/https.key"   # either implies tls = true
//! api_token_file = "api.token"  # default <data_dir>/api.token, generated (0600) if absent
//! sd_token_file = "/etc/nodewarden/prometheus-sd.token"  # made by the package's postinst
//! alerts_token_file = "/etc/nodewarden/alertmanager.token" # Alertmanager's webhook (postinst)
//!
//! [grafana]                     # optional: the console links each node to its dashboard
//! url = "http://grafana.example:3000"
//! [prometheus]                  # optional: node links, and the node page's charts from it
//! url = "http://prometheus.example:9090"
//!
//! [pushgateway]
//! url = "http://127.0.0.1:9091" # "" disables pushing
//! interval_ms = 5000
//! timeout_ms = 2000             # per request; a slow Pushgateway never delays the next round
//! legacy_prefix = "dontpanic"   # prefix of the original system's two families
//!
//! [dfs]                         # optional: the DFS's own DEVICE table (see docs/metrics.md)
//! url = "mysql://reader:secret@127.0.0.1:3306/DFS"
//! interval_ms = 5000
//!
//! [actions]                     # remote operations (docs/operations-remote.md)
//! operation_timeout = 120       # seconds one operation may take over the agent link
//! concurrency = 16              # nodes on the SSH / Wake-on-LAN fallback at once
//! link_concurrency = 4096       # nodes commanded over their agent links at once
//! wake_wait = 180               # seconds a woken node's agent gets to connect
//!
//! [ssh]                         # the SSH fallback's fleet defaults
//! user = "nodewarden"
//! key_file = "/etc/nodewarden/ssh/id_ed25519"
//! known_hosts = "/etc/nodewarden/ssh/known_hosts"
//! # port = 22, connect_timeout = 10, command_timeout = 60
//!
//! [nodes.storage-01]            # per node, all optional
//! host = "10.0.3.17"            # SSH host; default: the address its agent last connected from
//! ssh = { port = 2222 }         # over the fleet's [ssh], field by field
//! wake_to = "10.0.3.5:9"        # magic packets here instead of the subnet's broadcast
//! services = ["storage-client"] # for a node whose agent never reported: what stop/restart act on
//! macs = ["52:54:00:12:34:56"]  # for a node whose agent never described it (needs wake_to)
//! ```
//!
//! Agents send keep-alives (every 1 s by default; 10,000 agents cost the controller a quarter of
//! a core that way, twice as much at 500 ms: docs/perf.md). The controller by default does not: QUIC
//! restarts the idle timer when an endpoint sends its first ack-eliciting packet after a receive,
//! so controller keep-alives would push detection of a dead agent out by up to one interval.
//! Without them, a dead agent is offline at most `idle_timeout_ms` (plus the link's 250 ms
//! liveness sweep) after its last packet.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ssh::SshSettings;
use crate::store::{ClusterConfig, StoreConfig};

#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    data_dir: Option<PathBuf>,
    link: RawLink,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    cluster: Option<RawCluster>,
    #[serde(default, alias = "admin")]
    http: RawHttp,
    #[serde(default)]
    actions: RawActions,
    #[serde(default)]
    ssh: SshSettings,
    #[serde(default)]
    nodes: BTreeMap<String, NodeSettings>,
    #[serde(default)]
    pushgateway: RawPushgateway,
    #[serde(default)]
    dfs: RawDfs,
    #[serde(default)]
    grafana: RawLinkTarget,
    #[serde(default)]
    prometheus: RawLinkTarget,
}

/// `[grafana]` / `[prometheus]`: where the console links a node to (and, for Prometheus, where
/// the node page's charts are asked for: `api_prometheus.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLinkTarget {
    #[serde(default)]
    url: String,
}

impl RawLinkTarget {
    /// `None` for an empty or absent `url`; else an `http(s)://` URL without spaces or control
    /// characters, kept without its trailing `/`.
    fn resolve(&self, section: &str) -> Result<Option<String>, String> {
        let url = self.url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok
            || url.len() > 2048
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
            || url.contains(['"', '<', '>', '\\'])
        {
            return Err(format!(
                "{section}.url: {url:?} must be an http:// or https:// URL (no spaces or quotes, \
                 at most 2048 bytes)"
            ));
        }
        Ok(Some(url.trim_end_matches('/').to_string()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawActions {
    operation_timeout: f64,
    concurrency: usize,
    link_concurrency: usize,
    wake_wait: f64,
}

impl Default for RawActions {
    fn default() -> Self {
        RawActions {
            operation_timeout: 120.0,
            concurrency: 16,
            link_concurrency: 4096,
            wake_wait: 180.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPushgateway {
    #[serde(default = "default_pushgateway_url")]
    url: String,
    #[serde(default = "default_five_seconds")]
    interval_ms: u64,
    #[serde(default = "default_push_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_legacy_prefix")]
    legacy_prefix: String,
}

impl Default for RawPushgateway {
    fn default() -> Self {
        RawPushgateway {
            url: default_pushgateway_url(),
            interval_ms: default_five_seconds(),
            timeout_ms: default_push_timeout(),
            legacy_prefix: default_legacy_prefix(),
        }
    }
}

/// How to reach one node off its link (`[nodes.<name>]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// The SSH host; default: the address the node's agent last connected from.
    pub host: Option<String>,
    /// Overrides of the fleet's `[ssh]`.
    #[serde(default)]
    pub ssh: SshSettings,
    /// Where this node's magic packets go instead of its subnet's broadcast address (e.g. a
    /// relay on its segment, `10.0.3.5:9`).
    pub wake_to: Option<SocketAddr>,
    /// The services it manages, for a node whose agent never reported (its agent's
    /// `[[services]]` names); what its agent reports takes precedence.
    #[serde(default)]
    pub services: Vec<String>,
    /// Its MAC addresses, for a node whose agent never described its interfaces; needs
    /// `wake_to` (nothing else says where its segment is).
    #[serde(default)]
    pub macs: Vec<nodewarden_shared::wol::MacAddress>,
}

/// Remote operations settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionsConfig {
    pub operation_timeout: Duration,
    pub limits: crate::actions::Limits,
    pub wake_wait: Duration,
    /// The fleet's SSH defaults (`[ssh]`); the fallback is off for a node that ends up without
    /// a user, key file or known_hosts.
    pub ssh: SshSettings,
    pub nodes: BTreeMap<String, NodeSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDfs {
    url: Option<String>,
    interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    listen: String,
    ca_dir: PathBuf,
    #[serde(default = "default_idle")]
    idle_timeout_ms: u64,
    #[serde(default = "default_keep_alive")]
    keep_alive_ms: u64,
    #[serde(default = "default_expiry_warning")]
    expiry_warning_days: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    flush_interval_ms: Option<u64>,
    event_buffer: Option<usize>,
    write_timeout_ms: Option<u64>,
}

/// `[cluster]`: this controller is one of several sharing one MySQL/MariaDB database
/// (docs/scale-out.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    id: String,
    lease_ttl_ms: Option<u64>,
    /// Where this controller's peer endpoint listens (actions forwarded to it by the others).
    peer_listen: Option<String>,
    /// How the others reach it (default `https://<peer_listen>`).
    peer_url: Option<String>,
    /// Its peer certificate and key (`ca issue-controller`; default `<ca_dir>/peer-<id>.pem`).
    peer_cert_file: Option<PathBuf>,
    peer_key_file: Option<PathBuf>,
}

/// `[cluster] peer_*`: the endpoint the cluster's other controllers forward actions to, and the
/// identity this controller presents to theirs.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    pub listen: SocketAddr,
    pub url: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl RawCluster {
    fn peer(&self, base: &Path, ca_dir: &Path) -> Result<Option<PeerConfig>, String> {
        let Some(listen) = self.peer_listen.as_deref().filter(|l| !l.is_empty()) else {
            if self.peer_url.is_some() {
                return Err("cluster.peer_url needs cluster.peer_listen".into());
            }
            return Ok(None);
        };
        let listen: SocketAddr = listen
            .parse()
            .map_err(|e| format!("cluster.peer_listen: {listen:?}: {e}"))?;
        let url = match &self.peer_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("https://{listen}"),
        };
        if !url.starts_with("https://")
            || url.len() > 512
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("cluster.peer_url: {url:?} must be an https:// URL"));
        }
        let file = |given: &Option<PathBuf>, default: String| match given {
            Some(f) => base.join(f),
            None => ca_dir.join(default),
        };
        Ok(Some(PeerConfig {
            listen,
            url,
            cert_file: file(&self.peer_cert_file, format!("peer-{}.pem", self.id)),
            key_file: file(&self.peer_key_file, format!("peer-{}.key", self.id)),
        }))
    }
}

impl RawCluster {
    /// Checked against the store it needs (MySQL) and the flush interval that renews it.
    fn resolve(&self, store: &StoreConfig, pusher: bool) -> Result<ClusterConfig, String> {
        crate::store::check_controller_id(&self.id).map_err(|e| format!("cluster.id: {e}"))?;
        if store.url.is_none() {
            return Err(
                "cluster: several controllers share one MySQL/MariaDB database; set \
                        [database] url (the embedded SQLite store serves one controller)"
                    .into(),
            );
        }
        let ttl = Duration::from_millis(self.lease_ttl_ms.unwrap_or(10_000));
        if !(1_000..=300_000).contains(&ttl.as_millis()) {
            return Err(format!(
                "cluster.lease_ttl_ms: {} is outside 1000..=300000",
                ttl.as_millis()
            ));
        }
        if ttl < store.flush_interval * 3 {
            return Err(format!(
                "cluster.lease_ttl_ms: {} must be at least three flush intervals \
                 (database.flush_interval_ms = {}), which renew it",
                ttl.as_millis(),
                store.flush_interval.as_millis()
            ));
        }
        Ok(ClusterConfig {
            id: self.id.clone(),
            lease_ttl: ttl,
            pusher,
            peer_url: self.peer_url.clone(),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default = "default_http")]
    listen: Option<String>,
    api_token_file: Option<PathBuf>,
    #[serde(default = "default_sd_token_file")]
    sd_token_file: PathBuf,
    #[serde(default = "default_alerts_token_file")]
    alerts_token_file: PathBuf,
    tls: Option<bool>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: default_http(),
            api_token_file: None,
            sd_token_file: default_sd_token_file(),
            alerts_token_file: default_alerts_token_file(),
            tls: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

fn default_idle() -> u64 {
    2500
}
fn default_keep_alive() -> u64 {
    0
}
fn default_expiry_warning() -> u32 {
    30
}
fn default_http() -> Option<String> {
    Some("127.0.0.1:9180".into())
}
fn default_sd_token_file() -> PathBuf {
    PathBuf::from("/etc/nodewarden/prometheus-sd.token")
}
fn default_alerts_token_file() -> PathBuf {
    PathBuf::from("/etc/nodewarden/alertmanager.token")
}
fn default_pushgateway_url() -> String {
    "http://127.0.0.1:9091".into()
}
fn default_five_seconds() -> u64 {
    5000
}
fn default_push_timeout() -> u64 {
    2000
}
fn default_legacy_prefix() -> String {
    "dontpanic".into()
}

/// Where and how often the fleet aggregates are pushed (`[pushgateway]`).
#[derive(Debug, Clone, PartialEq)]
pub struct PushConfig {
    /// Base URL, e.g. `http://127.0.0.1:9091`; groups go to `<url>/metrics/job/<job>`.
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub legacy_prefix: String,
}

/// The DFS's own database (`[dfs]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DfsConfig {
    pub url: String,
    pub interval: Duration,
}

/// The certificate and key the HTTP server serves HTTPS with (`[http] tls`).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub listen: SocketAddr,
    pub ca_dir: PathBuf,
    pub idle_timeout: Duration,
    /// `None`: the controller sends no keep-alives of its own.
    pub keep_alive: Option<Duration>,
    pub expiry_warning_days: u32,
    /// The controller's HTTP server (`[http] listen`): API, `/metrics`, service discovery.
    pub http_listen: Option<SocketAddr>,
    /// `None`: plain HTTP.
    pub http_tls: Option<HttpTls>,
    /// Bearer tokens of the `/api/v1` API (generated on first start when absent).
    pub api_token_file: PathBuf,
    /// The bearer token Prometheus presents for service discovery.
    pub sd_token_file: PathBuf,
    /// The bearer token Alertmanager presents to `POST /api/v1/alerts/webhook`.
    pub alerts_token_file: PathBuf,
    /// `None`: pushing disabled (`pushgateway.url = ""`).
    pub push: Option<PushConfig>,
    pub dfs: Option<DfsConfig>,
    /// Holds the SQLite database when no `database.url` is set.
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub actions: ActionsConfig,
    /// `[grafana] url`: the console links each node to its dashboard there.
    pub grafana_url: Option<String>,
    /// `[prometheus] url`: the console links each node to its series there, and the node page's
    /// charts come from it (`api_prometheus.rs`).
    pub prometheus_url: Option<String>,
    /// `[cluster] peer_*`: where the cluster's other controllers forward actions to this one.
    pub peer: Option<PeerConfig>,
}

/// Keep-alives, when sent, must come well inside the idle timeout, or a quiet but healthy
/// connection would be dropped.
pub fn check_timeouts(idle_ms: u64, keep_alive_ms: u64) -> Result<(), String> {
    if !(200..=600_000).contains(&idle_ms) {
        return Err(format!(
            "idle_timeout_ms: {idle_ms} is outside 200..=600000"
        ));
    }
    if keep_alive_ms.saturating_mul(2) > idle_ms {
        return Err(format!(
            "keep_alive_ms: {keep_alive_ms} must be at most half of idle_timeout_ms ({idle_ms})"
        ));
    }
    Ok(())
}

impl ControllerConfig {
    pub fn load(file: &Path) -> Result<ControllerConfig, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(&text, file)
    }

    /// Parses and validates the file's text; each section is validated beside its own type
    /// (`RawLink::resolve`, `RawHttp::resolve`, …), errors name the file and the key.
    pub fn parse(text: &str, file: &Path) -> Result<ControllerConfig, ConfigError> {
        let err = |message: String| ConfigError {
            file: file.to_path_buf(),
            message,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let base = base_dir(file);
        let link = raw.link.resolve(base).map_err(err)?;
        let (http_listen, http_tls) = raw.http.resolve(base, &link.ca_dir).map_err(err)?;
        let push = raw.pushgateway.resolve().map_err(err)?;
        let dfs = raw.dfs.resolve().map_err(err)?;
        let grafana_url = raw.grafana.resolve("grafana").map_err(err)?;
        let prometheus_url = raw.prometheus.resolve("prometheus").map_err(err)?;
        let data_dir = match raw.data_dir {
            Some(d) => base.join(d),
            None => std::env::var_os("STATE_DIRECTORY")
                .map(PathBuf::from)
                .unwrap_or_else(|| base.join("data")),
        };
        let mut store = raw.database.resolve(&data_dir).map_err(err)?;
        let mut peer = None;
        if let Some(cluster) = &raw.cluster {
            let mut resolved = cluster.resolve(&store, push.is_some()).map_err(err)?;
            peer = cluster.peer(base, &link.ca_dir).map_err(err)?;
            resolved.peer_url = peer.as_ref().map(|p| p.url.clone());
            store.cluster = Some(resolved);
        }
        let actions = raw
            .actions
            .resolve(base, &raw.ssh, &raw.nodes)
            .map_err(err)?;
        Ok(ControllerConfig {
            listen: link.listen,
            ca_dir: link.ca_dir,
            idle_timeout: link.idle_timeout,
            keep_alive: link.keep_alive,
            expiry_warning_days: link.expiry_warning_days,
            http_listen,
            http_tls,
            api_token_file: match raw.http.api_token_file {
                Some(f) => base.join(f),
                None => data_dir.join("api.token"),
            },
            sd_token_file: base.join(raw.http.sd_token_file),
            alerts_token_file: base.join(raw.http.alerts_token_file),
            push,
            dfs,
            data_dir,
            store,
            actions,
            grafana_url,
            prometheus_url,
            peer,
        })
    }
}

/// `[link]`, validated.
struct LinkSection {
    listen: SocketAddr,
    ca_dir: PathBuf,
    idle_timeout: Duration,
    keep_alive: Option<Duration>,
    expiry_warning_days: u32,
}

impl RawLink {
    fn resolve(&self, base: &Path) -> Result<LinkSection, String> {
        let listen: SocketAddr = self
            .listen
            .parse()
            .map_err(|e| format!("link.listen: {:?}: {e}", self.listen))?;
        check_timeouts(self.idle_timeout_ms, self.keep_alive_ms)
            .map_err(|e| format!("link.{e}"))?;
        Ok(LinkSection {
            listen,
            ca_dir: base.join(&self.ca_dir),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            keep_alive: (self.keep_alive_ms > 0).then(|| Duration::from_millis(self.keep_alive_ms)),
            expiry_warning_days: self.expiry_warning_days,
        })
    }
}

impl RawHttp {
    /// The listen address (none: no HTTP server) and the HTTPS files (none: plain HTTP).
    fn resolve(
        &self,
        base: &Path,
        ca_dir: &Path,
    ) -> Result<(Option<SocketAddr>, Option<HttpTls>), String> {
        let listen = match self.listen.as_deref() {
            None | Some("") => None,
            Some(a) => Some(
                a.parse::<SocketAddr>()
                    .map_err(|e| format!("http.listen: {a:?}: {e}"))?,
            ),
        };
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), Some(_)) if self.tls == Some(false) => {
                return Err(
                    "http.tls: false contradicts http.tls_cert_file and tls_key_file".into(),
                );
            }
            (Some(cert), Some(key)) => Some(HttpTls {
                cert_file: base.join(cert),
                key_file: base.join(key),
            }),
            (None, None) if self.tls == Some(true) => Some(HttpTls {
                cert_file: ca_dir.join(crate::cadir::SERVER_CERT),
                key_file: ca_dir.join(crate::cadir::SERVER_KEY),
            }),
            (None, None) => None,
            (Some(_), None) => return Err("http.tls_cert_file: needs http.tls_key_file too".into()),
            (None, Some(_)) => return Err("http.tls_key_file: needs http.tls_cert_file too".into()),
        };
        Ok((listen, tls))
    }
}

/// A push or read interval: 100 ms to an hour.
fn interval(key: &str, ms: u64) -> Result<Duration, String> {
    if (100..=3_600_000).contains(&ms) {
        Ok(Duration::from_millis(ms))
    } else {
        Err(format!("{key}: {ms} is outside 100..=3600000"))
    }
}

impl RawPushgateway {
    fn resolve(&self) -> Result<Option<PushConfig>, String> {
        if self.url.is_empty() {
            return Ok(None);
        }
        let url = self.url.trim_end_matches('/').to_string();
        if !url.starts_with("http://") {
            return Err(format!("pushgateway.url: {url:?} must start with http://"));
        }
        let prefix = &self.legacy_prefix;
        let valid_prefix = prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !prefix.starts_with(|c: char| c.is_ascii_digit());
        if prefix.is_empty() || !valid_prefix {
            return Err(format!(
                "pushgateway.legacy_prefix: {prefix:?} is not a metric name prefix \
                 ([a-zA-Z_][a-zA-Z0-9_]*)"
            ));
        }
        Ok(Some(PushConfig {
            url,
            interval: interval("pushgateway.interval_ms", self.interval_ms)?,
            timeout: interval("pushgateway.timeout_ms", self.timeout_ms)?,
            legacy_prefix: prefix.clone(),
        }))
    }
}

impl RawDfs {
    fn resolve(&self) -> Result<Option<DfsConfig>, String> {
        let Some(url) = self.url.clone().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        if !url.starts_with("mysql://") && !url.starts_with("mariadb://") {
            return Err("dfs.url: must be a mysql:// URL of the DFS database".into());
        }
        Ok(Some(DfsConfig {
            url,
            interval: interval(
                "dfs.interval_ms",
                self.interval_ms.unwrap_or(default_five_seconds()),
            )?,
        }))
    }
}

impl RawDatabase {
    fn resolve(&self, data_dir: &Path) -> Result<StoreConfig, String> {
        let mut store = StoreConfig::new(data_dir);
        store.url = self.url.clone().filter(|u| !u.is_empty());
        if let Some(ms) = self.flush_interval_ms {
            if !(10..=3_600_000).contains(&ms) {
                return Err(format!(
                    "database.flush_interval_ms: {ms} is outside 10..=3600000"
                ));
            }
            store.flush_interval = Duration::from_millis(ms);
        }
        if let Some(n) = self.event_buffer {
            if n == 0 {
                return Err("database.event_buffer: must be at least 1".into());
            }
            store.event_buffer = n;
        }
        if let Some(ms) = self.write_timeout_ms {
            store.write_timeout = Duration::from_millis(ms.max(100));
        }
        Ok(store)
    }
}

impl NodeSettings {
    /// `[nodes.<name>]`, with relative SSH paths resolved against `base`.
    fn resolve(&self, name: &str, base: &Path) -> Result<NodeSettings, String> {
        nodes_name_ok(name).map_err(|e| format!("nodes.{name}: {e}"))?;
        for service in &self.services {
            nodewarden_shared::ops::validate_service_name(service)
                .map_err(|e| format!("nodes.{name}.services: {e}"))?;
        }
        if !self.macs.is_empty() && self.wake_to.is_none() {
            return Err(format!(
                "nodes.{name}.macs needs nodes.{name}.wake_to (where its magic packets go: \
                 the directed broadcast of its subnet, e.g. \"10.0.3.255:9\", or a relay)"
            ));
        }
        if self.macs.len() > crate::actions::MAX_WAKE_MACS {
            return Err(format!(
                "nodes.{name}.macs: at most {} MAC addresses",
                crate::actions::MAX_WAKE_MACS
            ));
        }
        Ok(NodeSettings {
            ssh: resolve_ssh(&self.ssh, base),
            ..self.clone()
        })
    }
}

/// SSH settings with relative key and known_hosts paths resolved against `base`.
fn resolve_ssh(s: &SshSettings, base: &Path) -> SshSettings {
    SshSettings {
        key_file: s.key_file.as_ref().map(|p| base.join(p)),
        known_hosts: s.known_hosts.as_ref().map(|p| base.join(p)),
        ..s.clone()
    }
}

impl RawActions {
    /// `[actions]` with the fleet's `[ssh]` and every `[nodes.<name>]`.
    fn resolve(
        &self,
        base: &Path,
        ssh: &SshSettings,
        nodes: &BTreeMap<String, NodeSettings>,
    ) -> Result<ActionsConfig, String> {
        let seconds = |key: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("{key}: {v} is not a positive number of seconds"))
        };
        if self.concurrency == 0 {
            return Err("actions.concurrency: must be at least 1".into());
        }
        if self.link_concurrency == 0 {
            return Err("actions.link_concurrency: must be at least 1".into());
        }
        let nodes = nodes
            .iter()
            .map(|(name, n)| Ok((name.clone(), n.resolve(name, base)?)))
            .collect::<Result<BTreeMap<_, _>, String>>()?;
        Ok(ActionsConfig {
            operation_timeout: seconds("actions.operation_timeout", self.operation_timeout)?,
            limits: crate::actions::Limits {
                link: self.link_concurrency,
                fallback: self.concurrency,
            },
            wake_wait: seconds("actions.wake_wait", self.wake_wait)?,
            ssh: resolve_ssh(ssh, base),
            nodes,
        })
    }
}

/// Relative paths in the file are relative to the file's folder.
fn base_dir(file: &Path) -> &Path {
    file.parent().unwrap_or(Path::new("."))
}

fn nodes_name_ok(name: &str) -> Result<(), String> {
    nodewarden_shared::name::validate_node_name(name).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ControllerConfig, String> {
        ControllerConfig::parse(text, Path::new("/etc/nw/controller.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_cluster_needs_mysql_a_valid_id_and_a_lease_longer_than_three_flushes() {
        let base = "[link]\nlisten = \"127.0.0.1:1\"\nca_dir = \"ca\"\n";
        let mysql = "[database]\nurl = \"mysql://u:p@127.0.0.1:3306/fleet\"\n";
        let e = parse(&format!("{base}[cluster]\nid = \"ops1\"\n")).unwrap_err();
        assert!(e.contains("[database] url"), "{e}");
        let e = parse(&format!("{base}{mysql}[cluster]\nid = \"ops 1\"\n")).unwrap_err();
        assert!(e.contains("cluster.id"), "{e}");
        let e = parse(&format!(
            "{base}{mysql}flush_interval_ms = 1000\n[cluster]\nid = \"ops1\"\nlease_ttl_ms = 2000\n"
        ))
        .unwrap_err();
        assert!(e.contains("three flush intervals"), "{e}");
        let c = parse(&format!(
            "{base}{mysql}[cluster]\nid = \"ops1\"\npeer_listen = \"127.0.0.1:9444\"\n"
        ))
        .unwrap();
        let cluster = c.store.cluster.unwrap();
        assert_eq!(cluster.id, "ops1");
        assert_eq!(cluster.lease_ttl, Duration::from_secs(10));
        assert_eq!(cluster.peer_url.as_deref(), Some("https://127.0.0.1:9444"));
        let peer = c.peer.unwrap();
        assert_eq!(peer.cert_file, Path::new("/etc/nw/ca/peer-ops1.pem"));
        assert_eq!(peer.key_file, Path::new("/etc/nw/ca/peer-ops1.key"));
        let e = parse(&format!(
            "{base}{mysql}[cluster]\nid = \"ops1\"\npeer_url = \"https://x:1\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("peer_listen"), "{e}");
        let e = parse(&format!(
            "{base}{mysql}[cluster]\nid = \"ops1\"\npeer_listen = \"127.0.0.1:9\"\npeer_url = \"http://x:1\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("https://"), "{e}");
    }

    #[test]
    fn https_from_the_link_certificate_or_a_pair_of_files() {
        let base = "[link]\nlisten = \"127.0.0.1:1\"\nca_dir = \"ca\"\n";
        assert_eq!(parse(base).unwrap().http_tls, None);
        let c = parse(&format!("{base}[http]\ntls = true\n")).unwrap();
        assert_eq!(
            c.http_tls,
            Some(HttpTls {
                cert_file: "/etc/nw/ca/server.pem".into(),
                key_file: "/etc/nw/ca/server.key".into(),
            })
        );
        let c = parse(&format!(
            "{base}[http]\ntls_cert_file = \"https.pem\"\ntls_key_file = \"/k/https.key\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.http_tls,
            Some(HttpTls {
                cert_file: "/etc/nw/https.pem".into(),
                key_file: "/k/https.key".into(),
            })
        );
        let e = parse(&format!("{base}[http]\ntls_cert_file = \"https.pem\"\n")).unwrap_err();
        assert_eq!(
            e,
            "/etc/nw/controller.toml: http.tls_cert_file: needs http.tls_key_file too"
        );
        let e = parse(&format!("{base}[http]\ntls_key_file = \"k\"\n")).unwrap_err();
        assert!(
            e.contains("http.tls_key_file: needs http.tls_cert_file"),
            "{e}"
        );
        let e = parse(&format!(
            "{base}[http]\ntls = false\ntls_cert_file = \"c\"\ntls_key_file = \"k\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("http.tls: false contradicts"), "{e}");
        assert!(parse(&format!("{base}[http]\ntls = \"yes\"\n")).is_err());
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse("[link]\nlisten = \"127.0.0.1:7443\"\nca_dir = \"ca\"\n").unwrap();
        assert_eq!(c.ca_dir, Path::new("/etc/nw/ca"));
        assert_eq!(c.idle_timeout, Duration::from_millis(2500));
        assert_eq!(c.keep_alive, None);
        assert_eq!(c.http_listen, Some("127.0.0.1:9180".parse().unwrap()));
        assert_eq!(
            c.sd_token_file,
            Path::new("/etc/nodewarden/prometheus-sd.token")
        );
        assert_eq!(c.api_token_file, c.data_dir.join("api.token"));
        let push = c.push.as_ref().unwrap();
        assert_eq!(push.url, "http://127.0.0.1:9091");
        assert_eq!(push.interval, Duration::from_secs(5));
        assert_eq!(push.legacy_prefix, "dontpanic");
        assert_eq!(c.dfs, None);
        assert_eq!(c.store.url, None);
        let c = parse(
            "data_dir = \"state\"\n[link]\nlisten = \"127.0.0.1:7443\"\nca_dir = \"ca\"\n\
             [database]\nurl = \"mysql://u:p@127.0.0.1/nw\"\nflush_interval_ms = 250\n",
        )
        .unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/nw/state"));
        assert_eq!(c.store.url.as_deref(), Some("mysql://u:p@127.0.0.1/nw"));
        assert_eq!(c.store.flush_interval, Duration::from_millis(250));
        let c = parse("[link]\nlisten = \"[::1]:1\"\nca_dir = \"/ca\"\n[admin]\nlisten = \"\"\n")
            .unwrap();
        assert_eq!(c.http_listen, None);
        let c = parse(
            "[link]\nlisten = \"[::1]:1\"\nca_dir = \"/ca\"\n[http]\nlisten = \"127.0.0.1:1\"\n\
             sd_token_file = \"sd.token\"\n[pushgateway]\nurl = \"http://127.0.0.1:2/\"\n\
             interval_ms = 500\nlegacy_prefix = \"old\"\n[dfs]\nurl = \"mysql://u@h/DFS\"\n",
        )
        .unwrap();
        assert_eq!(c.sd_token_file, Path::new("/etc/nw/sd.token"));
        let push = c.push.unwrap();
        assert_eq!(push.url, "http://127.0.0.1:2");
        assert_eq!(push.interval, Duration::from_millis(500));
        assert_eq!(push.legacy_prefix, "old");
        assert_eq!(c.dfs.unwrap().interval, Duration::from_secs(5));
        let c =
            parse("[link]\nlisten = \"[::1]:1\"\nca_dir = \"/ca\"\n[pushgateway]\nurl = \"\"\n")
                .unwrap();
        assert_eq!(c.push, None);
    }

    #[test]
    fn ssh_defaults_and_node_overrides() {
        let c = parse(
            "[link]\nlisten = \"127.0.0.1:1\"\nca_dir = \"ca\"\n\
             [actions]\noperation_timeout = 30\n\
             [ssh]\nuser = \"nw\"\nkey_file = \"ssh/key\"\nknown_hosts = \"/k\"\n\
             [nodes.storage-01]\nhost = \"10.0.3.17\"\nssh = { port = 2222 }\n",
        )
        .unwrap();
        assert_eq!(c.actions.operation_timeout, Duration::from_secs(30));
        assert_eq!(c.actions.limits.fallback, 16);
        assert_eq!(c.actions.limits.link, 4096);
        assert_eq!(
            c.actions.ssh.key_file.as_deref(),
            Some(Path::new("/etc/nw/ssh/key"))
        );
        let n = &c.actions.nodes["storage-01"];
        assert_eq!(n.host.as_deref(), Some("10.0.3.17"));
        assert_eq!(n.ssh.port, Some(2222));
        let base = "[link]\nlisten = \"127.0.0.1:1\"\nca_dir = \"ca\"\n";
        for (extra, want) in [
            ("[actions]\nconcurrency = 0\n", "actions.concurrency"),
            (
                "[actions]\nlink_concurrency = 0\n",
                "actions.link_concurrency",
            ),
            ("[actions]\nwake_wait = -1\n", "actions.wake_wait"),
            ("[ssh]\npassword = \"x\"\n", "unknown field `password`"),
            ("[nodes.\"../x\"]\nhost = \"a\"\n", "nodes.../x"),
        ] {
            let e = parse(&format!("{base}{extra}")).unwrap_err();
            assert!(e.contains(want), "{e} !~ {want}");
        }
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = parse("[link]\nlisten = \"nowhere\"\nca_dir = \"ca\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/nw/controller.toml: link.listen:"),
            "{e}"
        );
        let e = parse("[link]\nlisten = \"127.0.0.1:1\"\nca_dir = \"ca\"\nkeep_alive_ms = 5000\n")
            .unwrap_err();
        assert!(e.contains("link.keep_alive_ms"), "{e}");
        let e = parse("[link]\nlisten = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.contains("ca_dir"), "{e}");
        let e = parse("[link]\nlisten = \"127.0.0.1:1\"\nca_dir = \"x\"\nbogus = 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = parse(
            "[link]\nlisten = \"127.0.0.1:1\"\nca_dir = \"x\"\n[database]\nevent_buffer = 0\n",
        )
        .unwrap_err();
        assert!(e.contains("database.event_buffer"), "{e}");
        let e = parse(
            "[link]\nlisten = \"127.0.0.1:1\"\nca_dir = \"x\"\n[pushgateway]\nlegacy_prefix = \"a-b\"\n",
        )
        .unwrap_err();
        assert!(e.contains("pushgateway.legacy_prefix"), "{e}");
        let e = parse(
            "[link]\nlisten = \"127.0.0.1:1\"\nca_dir = \"x\"\n[dfs]\nurl = \"postgres://x\"\n",
        )
        .unwrap_err();
        assert!(e.contains("dfs.url"), "{e}");
    }

    #[test]
    fn grafana_and_prometheus_urls_are_optional_links_checked_for_their_form() {
        let base = "[link]\nlisten = \"127.0.0.1:1\"\nca_dir = \"x\"\n";
        let c = ControllerConfig::parse(base, Path::new("/c.toml")).unwrap();
        assert_eq!((c.grafana_url, c.prometheus_url), (None, None));
        let c = ControllerConfig::parse(
            &format!("{base}[grafana]\nurl = \"https://grafana.example:3000/\"\n[prometheus]\nurl = \"http://127.0.0.1:9090\"\n"),
            Path::new("/c.toml"),
        )
        .unwrap();
        assert_eq!(
            c.grafana_url.as_deref(),
            Some("https://grafana.example:3000")
        );
        assert_eq!(c.prometheus_url.as_deref(), Some("http://127.0.0.1:9090"));
        for (extra, want) in [
            ("[grafana]\nurl = \"ftp://x\"\n", "grafana.url"),
            ("[prometheus]\nurl = \"http://a b\"\n", "prometheus.url"),
            (
                "[prometheus]\nurl = \"javascript:alert(1)\"\n",
                "prometheus.url",
            ),
            ("[grafana]\nurl = \"http://x\"\ntoken = \"t\"\n", "token"),
        ] {
            let e = ControllerConfig::parse(&format!("{base}{extra}"), Path::new("/c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
    }
}
