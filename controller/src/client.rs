//! The CLI's side of the API. `POST /api/v1/actions` (`nodewarden-controller action …` and
//! `delete-fragments …`): builds the request, sends it with the API token when there is one,
//! prints each node's result as it arrives and ends with [`actions::render_table`]. `GET
//! /api/v1/nodes` and `/api/v1/events` (`nodes`, `events`): the fleet and the audit log as tables
//! ([`render_nodes`], [`render_events`]) or as the API's JSON.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};

use nodewarden_shared::ops::ActionPath;

use crate::actions::{self, NodeActionResult};
use crate::api_actions::{ActionEvent, ActionRequest, IdText};
use crate::http_auth;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{api}: {message}")]
    Api { api: String, message: String },
    #[error(
        "{api}: refusing to send the API token over plain http:// to a host other than this one \
         (anyone on the path could read it and act as you); use https:// (the controller's \
         `[http] tls = true`), or pass --insecure-http to send it anyway"
    )]
    InsecureHttp { api: String },
    #[error("{api}: not an http:// or https:// URL with a host")]
    BadUrl { api: String },
}

/// `fid device` pairs from a file's text: one pair per line (blank lines and `#` comments
/// skipped), or a JSON array of pairs. Ids stay text: the controller validates them.
pub fn parse_pairs(text: &str, file: &str) -> Result<Vec<(IdText, IdText)>, ClientError> {
    let err = |message: String| ClientError::File {
        file: file.to_string(),
        message,
    };
    let pairs = if text.trim_start().starts_with('[') {
        serde_json::from_str(text).map_err(|e| err(format!("not a JSON list of pairs: {e}")))?
    } else {
        pairs_from_lines(text).map_err(err)?
    };
    if pairs.is_empty() {
        return Err(err("no fragment pairs".into()));
    }
    Ok(pairs)
}

fn pairs_from_lines(text: &str) -> Result<Vec<(IdText, IdText)>, String> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [fid, device] => pairs.push((
                IdText::Text(fid.to_string()),
                IdText::Text(device.to_string()),
            )),
            _ => {
                return Err(format!(
                    "line {}: expected `fragment_id device_id`, got {} word(s)",
                    i + 1,
                    words.len()
                ));
            }
        }
    }
    Ok(pairs)
}

/// A file's text: from `explicit` (which must exist), else from `default` if it exists; `what`
/// names it when it is empty.
fn read_optional(
    explicit: Option<&Path>,
    default: &Path,
    what: &str,
) -> Result<Option<String>, ClientError> {
    let (path, required) = match explicit {
        Some(p) => (p, true),
        None => (default, false),
    };
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().is_empty() => Err(ClientError::File {
            file: path.display().to_string(),
            message: format!("the {what} file is empty"),
        }),
        Ok(t) => Ok(Some(t)),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClientError::File {
            file: path.display().to_string(),
            message: e.to_string(),
        }),
    }
}

/// The bearer token: from `explicit` (which must exist), else from `default` if it exists.
/// The file is read as the server reads its token file ([`http_auth::parse_tokens`]: `TOKEN` or
/// `NAME TOKEN` lines, comments, several tokens during a rotation); the first usable token is
/// sent. A file with none is an error naming its problems.
pub fn read_token(explicit: Option<&Path>, default: &Path) -> Result<Option<String>, ClientError> {
    let file = explicit.unwrap_or(default);
    let Some(text) = read_optional(explicit, default, "token")? else {
        return Ok(None);
    };
    let (tokens, problems) = http_auth::parse_tokens(&text);
    match tokens.into_iter().next() {
        Some((_, token)) => Ok(Some(token)),
        None => Err(ClientError::File {
            file: file.display().to_string(),
            message: if problems.is_empty() {
                "no token in the file (only comments)".into()
            } else {
                format!("no usable token: {}", problems.join("; "))
            },
        }),
    }
}

/// Refuses an `http://` API on another host than this one unless `insecure_http`: the token
/// would cross the network in clear. Loopback is `127.0.0.0/8`, `::1` and `localhost`.
pub fn check_api_scheme(api: &str, insecure_http: bool) -> Result<(), ClientError> {
    let bad = || ClientError::BadUrl {
        api: api.to_string(),
    };
    let uri: ureq::http::Uri = api.parse().map_err(|_| bad())?;
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if insecure_http || is_loopback_host(host) => Ok(()),
        Some("http") => Err(ClientError::InsecureHttp {
            api: api.to_string(),
        }),
        _ => Err(bad()),
    }
}

/// `127.0.0.0/8`, `::1` (also as `::ffff:127.x.y.z`) or `localhost`.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// The CA an `https://` API is verified against: from `explicit` (which must exist), else from
/// `default` (the controller's own CA) if it exists; `None`: the public roots.
pub fn read_ca(explicit: Option<&Path>, default: &Path) -> Result<Option<String>, ClientError> {
    read_optional(explicit, default, "CA certificate")
}

/// The default CA file: `<data_dir>/ca/ca.pem`, where the package's controller keeps its CA.
pub fn default_ca_file(data_dir: &Path) -> PathBuf {
    data_dir.join("ca").join("ca.pem")
}

/// Where and how to call the API.
pub struct ApiClient {
    pub api: String,
    pub token: Option<String>,
    /// Where the token was looked for, for a `401`'s message (e.g. "/var/lib/nodewarden/api.token
    /// (the default under --data-dir; not found)").
    pub token_source: String,
    /// PEM certificates an `https://` API must chain to (`None`: the public roots).
    pub ca_pem: Option<String>,
}

/// TLS for an `https://` API: the ring provider, and `ca_pem`'s certificates as the only roots
/// when given.
fn tls_config(ca_pem: Option<&str>) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
    let mut builder =
        TlsConfig::builder().unversioned_rustls_crypto_provider(nodewarden_shared::tls::provider());
    if let Some(pem) = ca_pem {
        let mut roots: Vec<Certificate<'static>> = Vec::new();
        for item in ureq::tls::parse_pem(pem.as_bytes()) {
            match item.map_err(|e| format!("the CA file: {e}"))? {
                PemItem::Certificate(c) => roots.push(c),
                _ => continue,
            }
        }
        if roots.is_empty() {
            return Err("the CA file holds no PEM certificate".into());
        }
        builder = builder.root_certs(RootCerts::Specific(std::sync::Arc::new(roots)));
    }
    Ok(builder.build())
}

/// One progress line for a node's result.
pub fn progress_line(r: &NodeActionResult, done: usize, total: usize) -> String {
    let path = match r.path {
        Some(ActionPath::Agent) => "agent",
        Some(ActionPath::Ssh) => "ssh",
        Some(ActionPath::WakeOnLan) => "wake_on_lan",
        None => "-",
    };
    let verdict = if r.succeeded() { "ok" } else { "FAILED" };
    let mut line = format!(
        "[{done}/{total}] {}: {verdict} via {path} ({} ms)",
        r.node, r.duration_ms
    );
    if let Some(e) = &r.error {
        line.push_str(&format!(": {}", e.replace(['\n', '\r'], " ")));
    }
    line
}

/// This process's account name, for the audit log when neither `--requested-by` nor `$USER`
/// nor `$LOGNAME` says who asks: the name the system's user database (`getpwuid_r`, so NSS
/// sources such as LDAP or sssd count) gives the real uid, else `uid:N`.
pub fn account_name() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    user_name(uid).unwrap_or_else(|| format!("uid:{uid}"))
}

/// The user database's name for `uid`, if it has one.
fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buffer = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: an all-zero `passwd` is a valid value (null pointers and zero ids).
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, and `buffer.len()` is the buffer's size;
        // the strings `entry` points at live in `buffer`, read before it is dropped or grown.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buffer.len() < 1 << 20 {
            buffer.resize(buffer.len() * 4, 0);
            continue;
        }
        if rc != 0 || found.is_null() || entry.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success `pw_name` is a NUL-terminated string inside `buffer`.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
        let name = name.to_string_lossy().into_owned();
        return (!name.is_empty()).then_some(name);
    }
}

pub use crate::wire::{
    CleanOrphansResult, DeviceView, EventView, FragmentAuditView, NodeView, OrphanPlanView,
};

/// `2026-12-02 14:09:45Z` for Unix milliseconds.
fn utc(ms: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    i64::try_from(ms / 1000)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("@{ms}ms"))
}

fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1u32 << 30))
}

/// The fleet, one line per node: state and since when, address, roles, services, storage (a
/// device another node owns shows as a conflict).
pub fn render_nodes(nodes: &[NodeView]) -> String {
    let rows: Vec<[String; 7]> = nodes
        .iter()
        .map(|n| {
            let address = n
                .connection
                .as_ref()
                .map(|c| c.remote.clone())
                .or_else(|| n.last_ip.map(|ip| ip.to_string()))
                .unwrap_or_else(|| "-".into());
            let or_dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
            let roles = n
                .roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(",");
            // With a report, each service's state; without (offline since a restart), the
            // declared names.
            let services = match &n.last_report {
                Some(r) => r
                    .services
                    .iter()
                    .map(|s| format!("{}:{}", s.name, service_status(s.status)))
                    .collect::<Vec<_>>()
                    .join(" "),
                None => n.services.join(" "),
            };
            let mut storage: Vec<String> = n
                .devices
                .iter()
                .map(|d| match &d.error {
                    Some(e) => format!("dev{}: {e}", d.device_id),
                    None => format!(
                        "dev{}: {}/{} GiB free",
                        d.device_id,
                        gib(d.free_bytes),
                        gib(d.total_bytes)
                    ),
                })
                .collect();
            storage.extend(
                n.device_conflicts
                    .iter()
                    .map(|c| format!("dev{}: CONFLICT (belongs to {})", c.device_id, c.owner)),
            );
            [
                n.name.clone(),
                match (&n.held_by, n.online) {
                    (Some(holder), _) => format!("online@{holder}"),
                    (None, true) => "online".into(),
                    (None, false) => "OFFLINE".into(),
                },
                utc(n.since),
                address,
                or_dash(roles),
                or_dash(services),
                or_dash(storage.join(", ")),
            ]
        })
        .collect();
    crate::table::render(
        [
            "NODE", "STATE", "SINCE", "ADDRESS", "ROLES", "SERVICES", "STORAGE",
        ],
        &rows,
    )
}

fn service_status(status: nodewarden_shared::protocol::ServiceStatus) -> String {
    // The wire names (lower case), as the API and the console show them.
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{status:?}"))
}

/// Storage devices, one line each: owner (and whether it is online), folder, space, and any
/// other node reporting the device (a conflict an operator settles with `device assign`).
pub fn render_devices(devices: &[DeviceView]) -> String {
    let rows: Vec<[String; 5]> = devices
        .iter()
        .map(|d| {
            [
                d.device_id.to_string(),
                format!(
                    "{}{}",
                    d.owner,
                    if d.owner_online { "" } else { " (offline)" }
                ),
                if d.fragment_dir.is_empty() {
                    "-".into()
                } else {
                    d.fragment_dir.clone()
                },
                format!("{}/{} GiB free", gib(d.free_bytes), gib(d.total_bytes)),
                if d.claimed_by.is_empty() {
                    "-".into()
                } else {
                    format!("CONFLICT: also reported by {}", d.claimed_by.join(", "))
                },
            ]
        })
        .collect();
    crate::table::render(["DEVICE", "OWNER", "FOLDER", "SPACE", "CLAIMS"], &rows)
}

/// `count (bytes)` of one fragment state.
fn state_cell(c: &nodewarden_shared::fragments::StateCount, bytes: bool) -> String {
    if bytes && c.count > 0 {
        format!("{} ({} B)", c.count, c.bytes)
    } else {
        c.count.to_string()
    }
}

/// Fragment audits, one line per device (counts, with bytes where the disk holds them), then
/// each device's sample ids per state that has any.
pub fn render_fragment_audits(audits: &[FragmentAuditView]) -> String {
    let rows: Vec<[String; 8]> = audits
        .iter()
        .map(|v| {
            let a = &v.audit;
            [
                v.device_id.to_string(),
                v.node.clone(),
                state_cell(&a.present, true),
                state_cell(&a.missing, false),
                state_cell(&a.orphaned, true),
                state_cell(&a.corrupt, true),
                state_cell(&a.no_digest, true),
                utc(v.audited_ms),
            ]
        })
        .collect();
    let mut out = crate::table::render(
        [
            "DEVICE",
            "NODE",
            "PRESENT",
            "MISSING",
            "ORPHANED",
            "CORRUPT",
            "NO DIGEST",
            "AUDITED",
        ],
        &rows,
    );
    for v in audits {
        let a = &v.audit;
        for (state, c) in [
            ("missing", &a.missing),
            ("orphaned", &a.orphaned),
            ("corrupt", &a.corrupt),
            ("no digest", &a.no_digest),
        ] {
            if !c.sample.is_empty() {
                let ids: Vec<String> = c.sample.iter().map(u32::to_string).collect();
                out.push_str(&format!(
                    "device {} {state}: {}{}\n",
                    v.device_id,
                    ids.join(" "),
                    if c.count > c.sample.len() as u64 {
                        " …"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    out
}

/// A clean-up's dry run, for the operator to confirm.
pub fn render_orphan_plan(p: &OrphanPlanView) -> String {
    let ids: Vec<String> = p.sample.iter().map(u32::to_string).collect();
    format!(
        "device {} on {}: {} orphaned fragment(s), {} bytes{}\n",
        p.device_id,
        p.node,
        p.count,
        p.bytes,
        if ids.is_empty() {
            String::new()
        } else {
            format!(
                "; e.g. {}{}",
                ids.join(" "),
                if p.count > p.sample.len() as u64 {
                    " …"
                } else {
                    ""
                }
            )
        }
    )
}

/// A confirmed clean-up's outcome.
pub fn render_clean_result(r: &CleanOrphansResult) -> String {
    let mut out = format!(
        "device {} on {}: {} planned, {} kept (in FRAGMENT at deletion time), {} sent for deletion: {}\n",
        r.device_id,
        r.node,
        r.planned,
        r.kept,
        r.deleted,
        if r.ok { "ok" } else { "FAILED" }
    );
    if let Some(result) = &r.result
        && let Some(error) = &result.error
    {
        out.push_str(&format!("error: {error}\n"));
    }
    out
}

/// The audit log, one line per entry, in the order given (the API's: newest first).
pub fn render_events(events: &[EventView]) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<[String; 8]> = events
        .iter()
        .map(|e| {
            [
                utc(e.at_ms),
                e.node.clone(),
                e.kind.clone(),
                dash(&e.actor),
                dash(&e.action),
                dash(&e.path),
                match (&e.result, e.duration_ms) {
                    (Some(r), Some(ms)) => format!("{r} ({ms} ms)"),
                    (Some(r), None) => r.clone(),
                    (None, _) => "-".into(),
                },
                e.detail.clone(),
            ]
        })
        .collect();
    crate::table::render(
        [
            "TIME", "NODE", "EVENT", "BY", "ACTION", "PATH", "RESULT", "DETAIL",
        ],
        &rows,
    )
}

impl ApiClient {
    /// What an error status means; a `401` also says where the token was looked for and how
    /// to point at the right one.
    fn refusal(&self, status: ureq::http::StatusCode, text: &str) -> String {
        let mut message = format!("{status}: {}", api_error(text));
        if status == ureq::http::StatusCode::UNAUTHORIZED {
            message.push_str(&format!(
                "; the token was read from {}. Point at the controller's API token with \
                 --token-file FILE (or NODEWARDEN_TOKEN_FILE), or at its data directory with \
                 --data-dir DIR (or NODEWARDEN_DATA_DIR), whose api.token is the default",
                self.token_source
            ));
        }
        message
    }

    /// An HTTP agent for this API: answers of any status come back as responses; an `https://`
    /// API is verified against [`ApiClient::ca_pem`].
    fn agent(&self, timeout: Option<std::time::Duration>) -> Result<ureq::Agent, String> {
        Ok(ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(timeout)
            .tls_config(tls_config(self.ca_pem.as_deref())?)
            .build()
            .into())
    }

    /// GETs `path` (with its query) and decodes the JSON answer.
    /// POSTs `body` as JSON to an API path and decodes the JSON answer (an error status is an
    /// error naming the API's message).
    pub fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let payload = serde_json::to_string(body).map_err(|e| self.error(&url, e.to_string()))?;
        let agent = self.json_agent(&url)?;
        let call = self.authorized(agent.post(&url).content_type("application/json"));
        self.json_answer(&url, call.send(payload))
    }

    /// DELETEs an API path and decodes the JSON answer.
    pub fn delete_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let agent = self.json_agent(&url)?;
        self.json_answer(&url, self.authorized(agent.delete(&url)).call())
    }

    /// GETs an API path and decodes the JSON answer.
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let agent = self.json_agent(&url)?;
        self.json_answer(&url, self.authorized(agent.get(&url)).call())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.trim_end_matches('/'))
    }

    fn error(&self, url: &str, message: String) -> ClientError {
        ClientError::Api {
            api: url.to_string(),
            message,
        }
    }

    /// An agent for one JSON request (30 s).
    fn json_agent(&self, url: &str) -> Result<ureq::Agent, ClientError> {
        self.agent(Some(std::time::Duration::from_secs(30)))
            .map_err(|e| self.error(url, e))
    }

    /// The request with the bearer token, if there is one.
    fn authorized<B>(&self, call: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => call.header("Authorization", &format!("Bearer {token}")),
            None => call,
        }
    }

    /// The decoded answer, or an error naming the status and the API's message.
    fn json_answer<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut response = sent.map_err(|e| self.error(url, e.to_string()))?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| self.error(url, format!("reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(self.error(url, self.refusal(status, &text)));
        }
        serde_json::from_str(&text).map_err(|e| self.error(url, format!("unexpected answer: {e}")))
    }

    /// Sends the request, calls `progress` per node as results arrive, returns every result.
    pub fn run(
        &self,
        request: &ActionRequest,
        mut progress: impl FnMut(&NodeActionResult, usize, usize),
    ) -> Result<Vec<NodeActionResult>, ClientError> {
        let url = format!("{}/api/v1/actions", self.api.trim_end_matches('/'));
        let err = |message: String| ClientError::Api {
            api: url.clone(),
            message,
        };
        let agent = self.agent(None).map_err(&err)?;
        let body = serde_json::to_string(request).map_err(|e| err(e.to_string()))?;
        let call = self.authorized(agent.post(&url).content_type("application/json"));
        let mut response = call.send(body).map_err(|e| err(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            return Err(err(self.refusal(status, &text)));
        }
        let mut results = Vec::new();
        let mut ended = false;
        let reader = std::io::BufReader::new(response.body_mut().as_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| err(format!("reading the answer: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<ActionEvent>(&line) {
                Ok(ActionEvent::Start { .. }) => {}
                Ok(ActionEvent::Result {
                    done,
                    total,
                    result,
                }) => {
                    progress(&result, done, total);
                    results.push(result);
                }
                Ok(ActionEvent::End { .. }) => ended = true,
                Err(e) => return Err(err(format!("unexpected answer line {line:?}: {e}"))),
            }
        }
        if !ended {
            return Err(err(format!(
                "the answer ended after {} node result(s), before the end of the action",
                results.len()
            )));
        }
        results.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(results)
    }
}

/// The message of an API error answer: its JSON `error`, else its text.
fn api_error(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.to_string())
        .trim()
        .to_string()
}

/// Runs one request from the command line: progress on stdout, then the table. Exit status 0
/// when every node succeeded, 1 when one failed.
pub fn run_cli(client: &ApiClient, request: &ActionRequest) -> Result<i32, ClientError> {
    let results = client.run(request, |r, done, total| {
        println!("{}", progress_line(r, done, total));
    })?;
    print!("{}", actions::render_table(&results));
    Ok(if results.iter().all(NodeActionResult::succeeded) {
        0
    } else {
        1
    })
}

/// Where a CLI setting came from, so that a message can say what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Given {
    /// The built-in default.
    #[default]
    Default,
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
}

/// Where the token was looked for, as a `401`'s message names it: the `--token-file` (flag or
/// `NODEWARDEN_TOKEN_FILE`), else `<data_dir>/api.token` with where the data directory came
/// from; `found`: whether a token was read there.
pub fn token_source(
    token_file: Option<(&Path, Given)>,
    data_dir: (&Path, Given),
    found: bool,
) -> String {
    if let Some((file, given)) = token_file {
        let how = match given {
            Given::Env => "NODEWARDEN_TOKEN_FILE",
            Given::Flag | Given::Default => "--token-file",
        };
        return format!("{} ({how})", file.display());
    }
    let (dir, given) = data_dir;
    let default = default_token_file(dir);
    let how = match given {
        Given::Flag => format!("the default under --data-dir {}", dir.display()),
        Given::Env => format!("the default under NODEWARDEN_DATA_DIR={}", dir.display()),
        Given::Default => format!(
            "the default under the default data directory {}",
            dir.display()
        ),
    };
    if found {
        format!("{} ({how})", default.display())
    } else {
        format!(
            "nowhere: {} ({how}) does not exist, so no token was sent",
            default.display()
        )
    }
}

/// The default token file: `<data_dir>/api.token`.
pub fn default_token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("api.token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_from_lines_and_json() {
        let p = parse_pairs("# batch 7\n101 3\n\n  102\t3  \n", "f").unwrap();
        assert_eq!(
            p,
            vec![
                (IdText::Text("101".into()), IdText::Text("3".into())),
                (IdText::Text("102".into()), IdText::Text("3".into())),
            ]
        );
        let p = parse_pairs("[[\"101\", \"3\"], [102, 3]]", "f").unwrap();
        assert_eq!(p[1], (IdText::Number(102), IdText::Number(3)));
        // Hostile ids pass through as text; the controller refuses them.
        assert_eq!(
            parse_pairs("../x 3\n", "f").unwrap()[0].0,
            IdText::Text("../x".into())
        );
        let e = parse_pairs("101 3\n101 3 extra\n", "pairs.txt")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("pairs.txt: line 2"), "{e}");
        assert!(parse_pairs("\n# nothing\n", "f").is_err());
        assert!(parse_pairs("[1, 2]", "f").is_err());
        // Found by fuzzing (fuzz/regressions/controller_pairs_file): an empty JSON list was
        // accepted, and the API then refused the request; it is refused here, as an empty file.
        assert!(parse_pairs(" []\n", "f").is_err());
    }

    #[test]
    fn account_names_come_from_the_user_database() {
        // root is uid 0 everywhere.
        assert_eq!(user_name(0).as_deref(), Some("root"));
        // A uid without an entry (the largest before -1, which means "no uid").
        assert_eq!(user_name(u32::MAX - 1), None);
        // This process's own account: what `id -un` says (NSS included), else `uid:N`.
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        let uid = std::process::Command::new("id").arg("-u").output().unwrap();
        let expected = if id.status.success() {
            String::from_utf8(id.stdout).unwrap().trim().to_string()
        } else {
            format!("uid:{}", String::from_utf8(uid.stdout).unwrap().trim())
        };
        assert_eq!(account_name(), expected);
        assert_ne!(account_name(), "cli");
    }

    #[test]
    fn token_sources_name_the_path_and_where_it_came_from() {
        let dir = Path::new("/srv/nw");
        let file = Path::new("/etc/nw/ops.token");
        assert_eq!(
            token_source(Some((file, Given::Flag)), (dir, Given::Env), true),
            "/etc/nw/ops.token (--token-file)"
        );
        assert_eq!(
            token_source(Some((file, Given::Env)), (dir, Given::Flag), true),
            "/etc/nw/ops.token (NODEWARDEN_TOKEN_FILE)"
        );
        assert_eq!(
            token_source(None, (dir, Given::Flag), true),
            "/srv/nw/api.token (the default under --data-dir /srv/nw)"
        );
        assert_eq!(
            token_source(None, (dir, Given::Env), false),
            "nowhere: /srv/nw/api.token (the default under NODEWARDEN_DATA_DIR=/srv/nw) does \
             not exist, so no token was sent"
        );
        assert_eq!(
            token_source(None, (dir, Given::Default), true),
            "/srv/nw/api.token (the default under the default data directory /srv/nw)"
        );
    }

    #[test]
    fn token_files() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("none");
        assert_eq!(read_token(None, &missing).unwrap(), None);
        assert!(read_token(Some(&missing), &missing).is_err());
        let t = d.path().join("api.token");
        std::fs::write(&t, "s3cret-0123456789abcdef\n").unwrap();
        assert_eq!(
            read_token(None, &t).unwrap().as_deref(),
            Some("s3cret-0123456789abcdef")
        );
        std::fs::write(&t, "\n").unwrap();
        let e = read_token(None, &t).unwrap_err().to_string();
        assert!(e.ends_with("the token file is empty"), "{e}");
        // The server's format: comments, a named token, the next one of a rotation.
        std::fs::write(
            &t,
            "# rotated 2026-12-01\nalice 0123456789abcdef0123\nfedcba9876543210fedc\n",
        )
        .unwrap();
        assert_eq!(
            read_token(None, &t).unwrap().as_deref(),
            Some("0123456789abcdef0123")
        );
        // A refused line is skipped as the server skips it.
        std::fs::write(&t, "short\nbob fedcba9876543210fedc\n").unwrap();
        assert_eq!(
            read_token(None, &t).unwrap().as_deref(),
            Some("fedcba9876543210fedc")
        );
        std::fs::write(&t, "# only a comment\nshort\n").unwrap();
        let e = read_token(Some(&t), &missing).unwrap_err().to_string();
        assert!(e.starts_with(&t.display().to_string()), "{e}");
        assert!(e.contains("line 2: token shorter"), "{e}");
    }

    #[test]
    fn plain_http_only_to_loopback_unless_told() {
        for api in [
            "http://127.0.0.1:9180",
            "http://127.8.9.10:9180/",
            "http://[::1]:9180",
            "http://localhost:9180",
            "http://LOCALHOST",
            "https://10.1.2.3:9180",
            "https://controller.example:9180",
        ] {
            assert!(check_api_scheme(api, false).is_ok(), "{api}");
        }
        for api in [
            "http://10.1.2.3:9180",
            "http://0.0.0.0:9180",
            "http://[2001:db8::1]:9180",
            "http://controller.example",
            "http://localhost.evil.example",
        ] {
            let e = check_api_scheme(api, false).unwrap_err();
            assert!(matches!(e, ClientError::InsecureHttp { .. }), "{api}");
            assert!(e.to_string().contains("--insecure-http"), "{e}");
            assert!(check_api_scheme(api, true).is_ok(), "{api}");
        }
        for api in ["ftp://127.0.0.1", "127.0.0.1:9180", "http://", ""] {
            assert!(
                matches!(check_api_scheme(api, true), Err(ClientError::BadUrl { .. })),
                "{api}"
            );
        }
    }

    /// The views read what the server writes: a registry node and an audit entry serialised by
    /// the controller's own types, rendered as the CLI prints them.
    #[test]
    fn nodes_and_events_from_the_servers_json() {
        use crate::registry::{Connection, Registry};
        use nodewarden_shared::protocol::{
            Health, Role, ServiceState, ServiceStatus, StateReport, StorageDevice,
        };
        let mut registry = Registry::new();
        let conn = |id, remote: &str| Connection {
            id,
            remote: remote.into(),
            agent_version: "0.1.0".into(),
            protocol_version: 1,
            connected_at: 1_796_219_385_000,
            cert_serial: "01".into(),
            cert_not_after_unix: 0,
            capabilities: vec![],
        };
        registry.connected("storage-1", conn(1, "10.0.3.17:40374"), 1_796_219_385_000);
        let report = StateReport {
            seq: 1,
            roles: vec![Role::Storage],
            storage: vec![
                StorageDevice {
                    device_id: 7,
                    fragment_dir: "/srv/dfs/7".into(),
                    total_bytes: 4 << 30,
                    free_bytes: 1 << 30,
                    error: None,
                },
                StorageDevice {
                    device_id: 8,
                    fragment_dir: "/srv/dfs/8".into(),
                    total_bytes: 0,
                    free_bytes: 0,
                    error: Some("No such file or directory".into()),
                },
            ],
            services: vec![ServiceState {
                name: "dfs-client".into(),
                status: ServiceStatus::Running,
            }],
            health: Health {
                load1: 0.5,
                memory_total_bytes: 1,
                memory_used_bytes: 1,
                root_fs_total_bytes: 1,
                root_fs_used_bytes: 1,
            },
            metrics_port: Some(9100),
            cpus: None,
        };
        assert!(
            registry
                .report("storage-1", 1, report, 1_796_219_386_000)
                .is_some()
        );
        registry.connected("ray-1", conn(2, "10.0.4.2:5000"), 1_796_219_300_000);
        registry.disconnected("ray-1", 2, "idle timeout", 1_796_219_390_000);
        let json = serde_json::to_string(&registry.nodes().collect::<Vec<_>>()).unwrap();
        let nodes: Vec<NodeView> = serde_json::from_str(&json).unwrap();
        assert_eq!(
            render_nodes(&nodes),
            "NODE       STATE    SINCE                 ADDRESS          ROLES    SERVICES            STORAGE\n\
             ray-1      OFFLINE  2026-12-02 13:49:50Z  10.0.4.2         -        -                   -\n\
             storage-1  online   2026-12-02 13:49:45Z  10.0.3.17:40374  storage  dfs-client:running  \
             dev7: 1.0/4.0 GiB free, dev8: No such file or directory\n"
        );

        use crate::api_events::{EventJson, event_json};
        use crate::store::{Event, EventKind, EventRecord, Operation, OperationPath};
        let at = |ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        let records = [
            EventRecord {
                id: 2,
                event: Event {
                    at: at(1_796_219_400_000),
                    node_id: "storage-1".into(),
                    kind: EventKind::Operation(Operation {
                        operation_id: None,
                        actor: "alice".into(),
                        action: "stop".into(),
                        path: OperationPath::Ssh,
                        result: crate::store::OperationResult::Failed {
                            error: "host key\nchanged".into(),
                        },
                        duration: std::time::Duration::from_millis(812),
                    }),
                },
            },
            EventRecord {
                id: 1,
                event: Event {
                    at: at(1_796_219_390_000),
                    node_id: "ray-1".into(),
                    kind: EventKind::Offline {
                        reason: "idle timeout".into(),
                    },
                },
            },
        ];
        let json: Vec<EventJson> = records.into_iter().map(event_json).collect();
        let events: Vec<EventView> =
            serde_json::from_str(&serde_json::to_string(&json).unwrap()).unwrap();
        assert_eq!(
            render_events(&events),
            "TIME                  NODE       EVENT      BY     ACTION  PATH  RESULT           DETAIL\n\
             2026-12-02 13:50:00Z  storage-1  operation  alice  stop    ssh   failed (812 ms)  host key changed\n\
             2026-12-02 13:49:50Z  ray-1      offline    -      -       -     -                idle timeout\n"
        );
    }

    #[test]
    fn ca_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(default_ca_file(d.path()), d.path().join("ca/ca.pem"));
        let missing = d.path().join("none.pem");
        assert_eq!(read_ca(None, &missing).unwrap(), None);
        let e = read_ca(Some(&missing), &missing).unwrap_err().to_string();
        assert!(e.starts_with(&missing.display().to_string()), "{e}");
        // Only certificates count; a file of something else is refused before any request.
        assert!(tls_config(Some("no PEM here")).is_err());
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(tls_config(Some(&key)).is_err());
        let ca = nodewarden_shared::ca::create_ca(
            "test CA",
            nodewarden_shared::ca::Validity::days_from(time::OffsetDateTime::now_utc(), 1),
        )
        .unwrap();
        assert!(tls_config(Some(&ca.cert_pem)).is_ok());
        assert!(tls_config(None).is_ok());
    }
}
