//! The SSH fallback: runs one declared operation on a node whose agent is offline.
//!
//! Key authentication only; the server's host key must already be in a known_hosts file (an
//! unknown or changed key is refused and never learned); connect and command timeouts. The only
//! thing sent is an operation line (`nodewarden-op …`), which the node's forced command
//! (`nodewarden-agent ssh-dispatch`) runs if its config declares it. The reply is the agent's
//! JSON result line. See docs/operations-remote.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodewarden_shared::ops::{Operation, OperationResult, OpsError};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, client};

/// Most stdout kept from the remote side (a result line with 2048 fragment results fits easily).
const STDOUT_LIMIT: usize = 1024 * 1024;
/// Most stderr kept.
const STDERR_LIMIT: usize = 64 * 1024;

/// How to reach one node over SSH (per node, or filled from the fleet defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Host name or address, as written in known_hosts.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The controller's private key (OpenSSH format, unencrypted; ed25519 recommended).
    pub key_file: PathBuf,
    /// The only host keys trusted: `[host]:port` entries for ports other than 22.
    pub known_hosts: PathBuf,
    /// TCP connect, key exchange and authentication together.
    pub connect_timeout: Duration,
    /// From sending the operation to the end of its reply.
    pub command_timeout: Duration,
}

impl SshTarget {
    /// `user@host:port`, how errors name the node.
    pub fn display(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// SSH settings as configured, for the fleet (`[ssh]`) or one node; a node's settings override
/// the fleet's field by field (see [`SshTarget::resolve`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub key_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    /// Seconds.
    pub connect_timeout: Option<f64>,
    /// Seconds.
    pub command_timeout: Option<f64>,
}

impl SshTarget {
    /// The target for `host` from a node's settings over the fleet defaults. User, key file and
    /// known_hosts must come from one of them; port defaults to 22, timeouts to 10 s and 60 s.
    pub fn resolve(
        host: &str,
        node: &SshSettings,
        fleet: &SshSettings,
    ) -> Result<SshTarget, String> {
        let missing = |what: &str| {
            format!("no SSH {what} for {host} (set it for the node or in the fleet's [ssh])")
        };
        let seconds = |v: Option<f64>, default: f64, what: &str| {
            let v = v.unwrap_or(default);
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    format!("SSH {what} for {host}: {v} is not a positive number of seconds")
                })
        };
        Ok(SshTarget {
            host: host.to_string(),
            port: node.port.or(fleet.port).unwrap_or(22),
            user: node
                .user
                .clone()
                .or_else(|| fleet.user.clone())
                .ok_or_else(|| missing("user"))?,
            key_file: node
                .key_file
                .clone()
                .or_else(|| fleet.key_file.clone())
                .ok_or_else(|| missing("key_file"))?,
            known_hosts: node
                .known_hosts
                .clone()
                .or_else(|| fleet.known_hosts.clone())
                .ok_or_else(|| missing("known_hosts"))?,
            connect_timeout: seconds(
                node.connect_timeout.or(fleet.connect_timeout),
                10.0,
                "connect_timeout",
            )?,
            command_timeout: seconds(
                node.command_timeout.or(fleet.command_timeout),
                60.0,
                "command_timeout",
            )?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// Refused before connecting.
    #[error("operation refused before connecting: {0}")]
    InvalidOperation(#[from] OpsError),
    #[error("loading the SSH key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("known_hosts file {path}: {message}")]
    KnownHosts { path: PathBuf, message: String },
    /// The TCP connection failed: refused, no route, unreachable network (what a sleeping or
    /// powered-off node gives), or anything else the system says (see
    /// [`SshError::is_unreachable`]).
    #[error("connecting to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// No TCP connection within the connect timeout.
    #[error("connecting to {target}: no answer within {timeout:?}")]
    ConnectTimeout { target: String, timeout: Duration },
    /// Connected, then the SSH handshake failed (no SSH banner, no common algorithm, the
    /// connection closed): something answers on that address.
    #[error("SSH handshake with {target} failed after the connection was accepted: {source}")]
    Handshake {
        target: String,
        #[source]
        source: russh::Error,
    },
    /// Connected, then the handshake and authentication did not finish in time.
    #[error(
        "{target} accepted the connection but the SSH handshake did not finish within {timeout:?}"
    )]
    HandshakeTimeout { target: String, timeout: Duration },
    #[error(
        "host key of {target} ({fingerprint}) is not in {known_hosts}; refusing to connect (add it after checking it out of band)"
    )]
    HostKeyUnknown {
        target: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    #[error(
        "host key of {target} ({fingerprint}) differs from the one recorded in {known_hosts} line {line}; refusing to connect (possible man-in-the-middle, or the node was reinstalled)"
    )]
    HostKeyChanged {
        target: String,
        fingerprint: String,
        known_hosts: PathBuf,
        line: usize,
    },
    #[error("{target} refused the key {key_file} for user {user}")]
    AuthenticationRefused {
        target: String,
        user: String,
        key_file: PathBuf,
    },
    #[error("SSH session with {target}: {message}")]
    Session { target: String, message: String },
    #[error("{target}: the operation did not finish within {timeout:?}")]
    CommandTimeout { target: String, timeout: Duration },
    #[error(
        "{target} did not answer with an operation result (exit status {exit_status:?}): {message}; stderr: {stderr}"
    )]
    BadReply {
        target: String,
        exit_status: Option<u32>,
        message: String,
        stderr: String,
    },
}

impl SshError {
    /// Whether the node did not answer at all: the TCP connection was refused, had no route or
    /// timed out. Only then may a wake make sense; a node that accepted the connection and then
    /// failed the handshake, refused the key or showed another host key is up (or is not the
    /// node), and is never woken on that account.
    pub fn is_unreachable(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            SshError::ConnectTimeout { .. } => true,
            SshError::Connect { source, .. } => matches!(
                source.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::TimedOut
            ),
            _ => false,
        }
    }
}

/// What the remote side sent back for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOutput {
    pub exit_status: Option<u32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `op` on the node: validated first (nothing is sent for an invalid operation), then the
/// operation line, then the agent's JSON result, checked to be about this operation.
pub async fn run_operation(
    target: &SshTarget,
    op: &Operation,
) -> Result<OperationResult, SshError> {
    let (mut results, error) = run_operations(target, std::slice::from_ref(op), |_| {}).await;
    match (error, results.pop()) {
        (Some(e), _) => Err(e),
        (None, Some(r)) => Ok(r),
        (None, None) => Err(SshError::Session {
            target: target.display(),
            message: "no result".into(),
        }),
    }
}

/// Runs several operations in order over one connection (one session channel each). All are
/// validated before connecting. Returns the results gathered and, if one step failed, why; the
/// operations after a failure are not sent. `answered` sees how long each answered operation
/// took, the first one's time including connecting and authenticating (what a caller waits).
pub async fn run_operations(
    target: &SshTarget,
    ops: &[Operation],
    mut answered: impl FnMut(std::time::Duration),
) -> (Vec<OperationResult>, Option<SshError>) {
    let mut results = Vec::new();
    let lines = match ops
        .iter()
        .map(Operation::to_line)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(lines) => lines,
        Err(e) => return (results, Some(e.into())),
    };
    if lines.is_empty() {
        return (results, None);
    }
    let mut started = std::time::Instant::now();
    let session = match open_session(target).await {
        Ok(s) => s,
        Err(e) => return (results, Some(e)),
    };
    let mut error = None;
    for (op, line) in ops.iter().zip(&lines) {
        match exec_with_timeout(target, &session, line).await {
            Ok(output) => match parse_reply(target, op, &output) {
                Ok(r) => {
                    answered(started.elapsed());
                    started = std::time::Instant::now();
                    results.push(r);
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            },
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let _ = session
        .disconnect(Disconnect::ByApplication, "", "en")
        .await;
    (results, error)
}

/// The agent's result line out of the remote output, checked to be about `op`.
fn parse_reply(
    target: &SshTarget,
    op: &Operation,
    output: &RemoteOutput,
) -> Result<OperationResult, SshError> {
    let bad_reply = |message: String| SshError::BadReply {
        target: target.display(),
        exit_status: output.exit_status,
        message,
        stderr: output.stderr.chars().take(2000).collect(),
    };
    let last = output
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| bad_reply("no output".into()))?;
    let result = OperationResult::from_json_line(last)
        .map_err(|e| bad_reply(format!("not a result line ({e})")))?;
    // A refusal of an unparsable request carries no operation; anything else must be ours.
    if result.operation.as_ref().is_some_and(|o| o != op) {
        return Err(bad_reply(format!(
            "the result is for another operation: {:?}",
            result.operation
        )));
    }
    Ok(result)
}

/// Connects, authenticates and sends `line` as the exec request; returns the remote output. Only
/// [`run_operations`] should build lines; this is public so tests can check what the node does
/// with a line no controller would send.
pub async fn run_line(target: &SshTarget, line: &str) -> Result<RemoteOutput, SshError> {
    let session = open_session(target).await?;
    let output = exec_with_timeout(target, &session, line).await;
    let _ = session
        .disconnect(Disconnect::ByApplication, "", "en")
        .await;
    output
}

/// Connects (TCP, within the connect timeout), then does the SSH handshake and authentication
/// within what is left of it. The two steps fail with different errors: only the first can mean
/// the node is down ([`SshError::is_unreachable`]).
async fn open_session(target: &SshTarget) -> Result<client::Handle<HostKeyCheck>, SshError> {
    let key = load_key(&target.key_file)?;
    check_known_hosts_file(&target.known_hosts)?;
    let deadline = tokio::time::Instant::now() + target.connect_timeout;
    let stream = tokio::time::timeout_at(
        deadline,
        tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| SshError::ConnectTimeout {
        target: target.display(),
        timeout: target.connect_timeout,
    })?
    .map_err(|source| SshError::Connect {
        target: target.display(),
        source,
    })?;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(target = %target.display(), error = %e, "TCP_NODELAY not set");
    }
    tokio::time::timeout_at(deadline, handshake(target, stream, key))
        .await
        .map_err(|_| SshError::HandshakeTimeout {
            target: target.display(),
            timeout: target.connect_timeout,
        })?
}

async fn exec_with_timeout(
    target: &SshTarget,
    session: &client::Handle<HostKeyCheck>,
    line: &str,
) -> Result<RemoteOutput, SshError> {
    tokio::time::timeout(target.command_timeout, exec(target, session, line))
        .await
        .map_err(|_| SshError::CommandTimeout {
            target: target.display(),
            timeout: target.command_timeout,
        })?
}

fn load_key(path: &Path) -> Result<russh::keys::PrivateKey, SshError> {
    russh::keys::load_secret_key(path, None).map_err(|e| SshError::Key {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A missing known_hosts file would make every host "unknown"; say so plainly instead.
fn check_known_hosts_file(path: &Path) -> Result<(), SshError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| SshError::KnownHosts {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Checks the server's key against known_hosts during the handshake.
struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    target: String,
}

#[derive(Debug)]
enum HandlerError {
    Ssh(russh::Error),
    HostKey(SshError),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Ssh(e)
    }
}

impl client::Handler for HostKeyCheck {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_key else {
            return Err(HandlerError::HostKey(SshError::HostKeyUnknown {
                target: self.target.clone(),
                fingerprint: "a host certificate (not supported)".into(),
                known_hosts: self.known_hosts.clone(),
            }));
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        // russh only reads this file; nothing here ever writes to it.
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => Ok(true),
            Ok(false) => Err(HandlerError::HostKey(SshError::HostKeyUnknown {
                target: self.target.clone(),
                fingerprint,
                known_hosts: self.known_hosts.clone(),
            })),
            Err(russh::keys::Error::KeyChanged { line }) => {
                Err(HandlerError::HostKey(SshError::HostKeyChanged {
                    target: self.target.clone(),
                    fingerprint,
                    known_hosts: self.known_hosts.clone(),
                    line,
                }))
            }
            Err(e) => Err(HandlerError::HostKey(SshError::KnownHosts {
                path: self.known_hosts.clone(),
                message: e.to_string(),
            })),
        }
    }
}

async fn handshake(
    target: &SshTarget,
    stream: tokio::net::TcpStream,
    key: russh::keys::PrivateKey,
) -> Result<client::Handle<HostKeyCheck>, SshError> {
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(target.command_timeout + target.connect_timeout),
        ..Default::default()
    });
    let handler = HostKeyCheck {
        host: target.host.clone(),
        port: target.port,
        known_hosts: target.known_hosts.clone(),
        target: target.display(),
    };
    let session_error = |message: String| SshError::Session {
        target: target.display(),
        message,
    };
    let mut session = client::connect_stream(config, stream, handler)
        .await
        .map_err(|e| match e {
            HandlerError::HostKey(e) => e,
            HandlerError::Ssh(source) => SshError::Handshake {
                target: target.display(),
                source,
            },
        })?;
    let auth = session
        .authenticate_publickey(
            target.user.clone(),
            PrivateKeyWithHashAlg::new(Arc::new(key), None),
        )
        .await
        .map_err(|e| session_error(format!("authenticating: {e}")))?;
    if !auth.success() {
        return Err(SshError::AuthenticationRefused {
            target: target.display(),
            user: target.user.clone(),
            key_file: target.key_file.clone(),
        });
    }
    Ok(session)
}

async fn exec(
    target: &SshTarget,
    session: &client::Handle<HostKeyCheck>,
    line: &str,
) -> Result<RemoteOutput, SshError> {
    let session_error = |message: String| SshError::Session {
        target: target.display(),
        message,
    };
    let mut channel = session
        .channel_open_session()
        .await
        .map_err(|e| session_error(format!("opening a channel: {e}")))?;
    channel
        .exec(true, line)
        .await
        .map_err(|e| session_error(format!("sending the operation: {e}")))?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut exit_status = None;
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => append_bounded(&mut stdout, &data, STDOUT_LIMIT),
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                append_bounded(&mut stderr, &data, STDERR_LIMIT)
            }
            ChannelMsg::ExitStatus { exit_status: s } => exit_status = Some(s),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    Ok(RemoteOutput {
        exit_status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn append_bounded(buf: &mut Vec<u8>, data: &[u8], limit: usize) {
    let room = limit.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewarden_shared::ops::ServiceAction;

    fn target(dir: &Path) -> SshTarget {
        SshTarget {
            host: "127.0.0.1".into(),
            port: 1,
            user: "nobody".into(),
            key_file: dir.join("id_ed25519"),
            known_hosts: dir.join("known_hosts"),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn node_settings_override_fleet_defaults() {
        let fleet = SshSettings {
            user: Some("nodewarden".into()),
            key_file: Some("/etc/nodewarden/ssh/id_ed25519".into()),
            known_hosts: Some("/etc/nodewarden/ssh/known_hosts".into()),
            command_timeout: Some(90.0),
            ..Default::default()
        };
        let node = SshSettings {
            user: Some("dfs".into()),
            port: Some(2222),
            ..Default::default()
        };
        let t = SshTarget::resolve("storage-01", &node, &fleet).unwrap();
        assert_eq!(t.user, "dfs");
        assert_eq!(t.port, 2222);
        assert_eq!(t.key_file, PathBuf::from("/etc/nodewarden/ssh/id_ed25519"));
        assert_eq!(t.connect_timeout, Duration::from_secs(10));
        assert_eq!(t.command_timeout, Duration::from_secs(90));
        assert_eq!(t.display(), "dfs@storage-01:2222");

        let e =
            SshTarget::resolve("n1", &SshSettings::default(), &SshSettings::default()).unwrap_err();
        assert!(e.contains("no SSH user for n1"), "{e}");
        let bad = SshSettings {
            connect_timeout: Some(-1.0),
            ..fleet.clone()
        };
        let e = SshTarget::resolve("n1", &bad, &fleet).unwrap_err();
        assert!(e.contains("connect_timeout for n1"), "{e}");
    }

    #[tokio::test]
    async fn invalid_operations_are_refused_before_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        // No key file, no known_hosts, nothing listening: the operation is refused first.
        let e = run_operation(
            &target(dir.path()),
            &Operation::service("../../bin/sh", ServiceAction::Start),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, SshError::InvalidOperation(_)), "{e}");
    }

    #[tokio::test]
    async fn missing_key_and_known_hosts_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path());
        let op = Operation::service("x", ServiceAction::Status);
        let e = run_operation(&t, &op).await.unwrap_err();
        assert!(
            matches!(&e, SshError::Key { path, .. } if path == &t.key_file),
            "{e}"
        );
        // A throwaway key kept as a fixture (authorized nowhere).
        let t = SshTarget {
            key_file: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/ssh/test_key_ed25519"),
            ..t
        };
        let e = run_operation(&t, &op).await.unwrap_err();
        assert!(
            matches!(&e, SshError::KnownHosts { path, .. } if path == &t.known_hosts),
            "{e}"
        );
        // With a known_hosts file but nothing listening: a connection error naming the target.
        std::fs::write(&t.known_hosts, "").unwrap();
        let e = run_operation(&t, &op).await.unwrap_err();
        assert!(
            matches!(&e, SshError::Connect { target, .. } if target == "nobody@127.0.0.1:1"),
            "{e}"
        );
    }

    /// A target with a real (unauthorized) key and an empty known_hosts, at `port`.
    fn reachable_target(dir: &Path, port: u16) -> SshTarget {
        std::fs::write(dir.join("known_hosts"), "").unwrap();
        SshTarget {
            port,
            key_file: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/ssh/test_key_ed25519"),
            ..target(dir)
        }
    }

    async fn classify(t: &SshTarget) -> SshError {
        run_operation(t, &Operation::service("x", ServiceAction::Status))
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        // A port just freed: nothing listens there, the kernel refuses the connection.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = classify(&reachable_target(dir.path(), port)).await;
        assert!(matches!(e, SshError::Connect { .. }), "{e}");
        assert!(e.is_unreachable(), "{e}");
    }

    #[tokio::test]
    async fn a_listener_that_is_not_ssh_is_reachable() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                .await
                .unwrap();
            conn.shutdown().await.unwrap();
            // Reads what the client sends until it gives up.
            let mut sink = Vec::new();
            let _ = conn.read_to_end(&mut sink).await;
        });
        let e = classify(&reachable_target(dir.path(), port)).await;
        assert!(matches!(e, SshError::Handshake { .. }), "{e}");
        assert!(!e.is_unreachable(), "{e}");
        assert!(
            e.to_string().contains("after the connection was accepted"),
            "{e}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_listener_that_never_answers_is_a_handshake_timeout_not_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and holds the connection without a word (a hung service, a tarpit).
        let server = tokio::spawn(async move { listener.accept().await.map(|(c, _)| c) });
        let t = SshTarget {
            connect_timeout: Duration::from_millis(300),
            ..reachable_target(dir.path(), port)
        };
        let e = classify(&t).await;
        assert!(matches!(e, SshError::HandshakeTimeout { .. }), "{e}");
        assert!(!e.is_unreachable(), "{e}");
        drop(server.await.unwrap());
    }

    #[test]
    fn only_connection_failures_that_mean_down_are_unreachable() {
        use std::io::{Error, ErrorKind};
        let connect = |kind| SshError::Connect {
            target: "t".into(),
            source: Error::from(kind),
        };
        for kind in [
            ErrorKind::ConnectionRefused,
            ErrorKind::HostUnreachable,
            ErrorKind::NetworkUnreachable,
            ErrorKind::TimedOut,
        ] {
            assert!(connect(kind).is_unreachable(), "{kind:?}");
        }
        // A name that does not resolve is a configuration error, not a sleeping node.
        assert!(!connect(ErrorKind::Other).is_unreachable());
        assert!(!connect(ErrorKind::PermissionDenied).is_unreachable());
        let timeout = |handshake| {
            if handshake {
                SshError::HandshakeTimeout {
                    target: "t".into(),
                    timeout: Duration::from_secs(1),
                }
            } else {
                SshError::ConnectTimeout {
                    target: "t".into(),
                    timeout: Duration::from_secs(1),
                }
            }
        };
        assert!(timeout(false).is_unreachable());
        assert!(!timeout(true).is_unreachable());
        for refused in [
            SshError::HostKeyChanged {
                target: "t".into(),
                fingerprint: "f".into(),
                known_hosts: "k".into(),
                line: 1,
            },
            SshError::HostKeyUnknown {
                target: "t".into(),
                fingerprint: "f".into(),
                known_hosts: "k".into(),
            },
            SshError::AuthenticationRefused {
                target: "t".into(),
                user: "u".into(),
                key_file: "k".into(),
            },
        ] {
            assert!(!refused.is_unreachable(), "{refused}");
        }
    }
}
