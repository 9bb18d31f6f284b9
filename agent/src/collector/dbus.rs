//! The D-Bus client of the collectors that read systemd and logind (`systemd`, `logind`).
//!
//! node_exporter opens a new connection to the system bus on every scrape; the agent keeps one
//! open between scrapes and opens a new one only when the kept one was closed (the bus restarted,
//! the peer hung up) or a call on it failed at the connection level. The system bus is the one
//! `DBUS_SYSTEM_BUS_ADDRESS` names, else `/var/run/dbus/system_bus_socket`, as godbus (and
//! systemd's own sd-bus) find it. Scrapes run on the blocking pool, so the calls block their
//! thread: every call has a timeout ([`CALL_TIMEOUT`]), and a call that times out ends the
//! scrape's use of the connection (it is dropped and reopened next scrape).
//!
//! Replies are checked against the types the collectors expect: a reply of another type is an
//! error naming the call, never a panic (godbus's `Value().(string)` assertions would panic).

use std::time::Duration;

use zbus::connection::Builder;
use zbus::{Connection, OwnedVariant, Variant};

use super::CollectorError;

/// The longest one D-Bus method call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Which bus to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The system bus; as go-systemd's `NewWithContext`, root falls back to systemd's private
    /// socket when the system bus cannot be reached (`fallback_private`).
    System { fallback_private: bool },
    /// systemd's private socket `/run/systemd/private`: a peer-to-peer connection, no bus
    /// (`--collector.systemd.private`).
    SystemdPrivate,
    /// A bus at this address (tests: their private bus).
    #[cfg(test)]
    Address(String),
}

const SYSTEMD_PRIVATE: &str = "unix:path=/run/systemd/private";

#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    #[error("connecting to the {bus}: {source}")]
    Connect {
        bus: &'static str,
        #[source]
        source: zbus::Error,
    },
    #[error("{call}: {source}")]
    Call {
        call: String,
        #[source]
        source: zbus::Error,
    },
    #[error("{call}: unexpected reply: {source}")]
    Reply {
        call: String,
        #[source]
        source: zbus::Error,
    },
    #[error("{call}: expected a {expected}, got signature {got}")]
    Type {
        call: String,
        expected: &'static str,
        got: String,
    },
}

impl DbusError {
    /// Whether the connection this came from is unusable (to be dropped and reopened).
    pub fn breaks_connection(&self) -> bool {
        match self {
            DbusError::Connect { .. } => true,
            DbusError::Call { source, .. } => matches!(source, zbus::Error::InputOutput(_)),
            DbusError::Reply { .. } | DbusError::Type { .. } => false,
        }
    }

    /// A D-Bus error reply's name (`org.freedesktop.DBus.Error.UnknownProperty`, …).
    pub fn error_name(&self) -> Option<&str> {
        match self {
            DbusError::Call {
                source: zbus::Error::MethodError(name, _, _),
                ..
            } => Some(name.as_str()),
            _ => None,
        }
    }

    /// As a collector error: an I/O error on the bus object named `what` (no other variant of
    /// [`CollectorError`] keeps a source error).
    pub fn into_collector(self, what: &str) -> CollectorError {
        CollectorError::io(what, std::io::Error::other(self))
    }
}

/// A connection kept between scrapes.
pub struct Bus {
    target: Target,
    conn: Option<Connection>,
}

impl Bus {
    pub fn new(target: Target) -> Self {
        Bus { target, conn: None }
    }

    /// The kept connection, or a new one if there is none or it was closed.
    pub async fn connection(&mut self) -> Result<Connection, DbusError> {
        if let Some(conn) = &self.conn
            && !conn.is_closed()
        {
            return Ok(conn.clone());
        }
        self.conn = None;
        let conn = match &self.target {
            Target::SystemdPrivate => connect_private().await?,
            #[cfg(test)]
            Target::Address(address) => Builder::address(address.as_str())
                .method_timeout(CALL_TIMEOUT)
                .build()
                .await
                .map_err(|source| DbusError::Connect {
                    bus: "test bus",
                    source,
                })?,
            Target::System { fallback_private } => match connect_system().await {
                Ok(conn) => conn,
                // SAFETY: geteuid has no preconditions.
                Err(e) if *fallback_private && unsafe { libc::geteuid() } == 0 => {
                    tracing::debug!(error = %e, "system bus unreachable, trying systemd's private socket");
                    connect_private().await.map_err(|_| e)?
                }
                Err(e) => return Err(e),
            },
        };
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// The unique name of the kept connection (tests: whether it was reused).
    #[cfg(test)]
    pub fn kept_unique_name(&self) -> Option<String> {
        self.conn
            .as_ref()
            .and_then(|c| c.unique_name())
            .map(|n| n.to_string())
    }

    /// Call after a scrape's calls failed with `err`: drops the connection if it is unusable
    /// (the error says so, or the connection has seen its peer go).
    pub fn failed(&mut self, err: &DbusError) {
        if err.breaks_connection() || self.conn.as_ref().is_some_and(Connection::is_closed) {
            self.conn = None;
        }
    }
}

async fn connect_system() -> Result<Connection, DbusError> {
    let connect = |source| DbusError::Connect {
        bus: "system bus",
        source,
    };
    Builder::system()
        .method_timeout(CALL_TIMEOUT)
        .build()
        .await
        .map_err(connect)
}

async fn connect_private() -> Result<Connection, DbusError> {
    let connect = |source| DbusError::Connect {
        bus: "systemd private socket",
        source,
    };
    // No Hello on a peer-to-peer connection, as go-systemd's NewSystemdConnection.
    Builder::address(SYSTEMD_PRIVATE)
        .p2p()
        .method_timeout(CALL_TIMEOUT)
        .build()
        .await
        .map_err(connect)
}

/// Calls `interface.method` on `path` at `destination` with no arguments and returns its reply
/// deserialized as `R` (whose signature the reply must have).
pub async fn call<R>(
    conn: &Connection,
    destination: &str,
    path: &str,
    interface: &str,
    method: &str,
) -> Result<R, DbusError>
where
    R: for<'d> zbus::wire::DynamicDeserialize<'d>,
{
    let name = || format!("{interface}.{method} on {path}");
    let reply = conn
        .call_method(Some(destination), path, Some(interface), method, &())
        .await
        .map_err(|source| DbusError::Call {
            call: name(),
            source,
        })?;
    reply
        .body()
        .deserialize::<R>()
        .map_err(|source| DbusError::Reply {
            call: name(),
            source,
        })
}

/// `org.freedesktop.DBus.Properties.Get(interface, property)` on `path` at `destination`.
pub async fn get_property(
    conn: &Connection,
    destination: &str,
    path: &str,
    interface: &str,
    property: &str,
) -> Result<OwnedVariant, DbusError> {
    let name = || format!("Get {interface}.{property} on {path}");
    let reply = conn
        .call_method(
            Some(destination),
            path,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &(interface, property),
        )
        .await
        .map_err(|source| DbusError::Call {
            call: name(),
            source,
        })?;
    reply
        .body()
        .deserialize::<OwnedVariant>()
        .map_err(|source| DbusError::Reply {
            call: name(),
            source,
        })
}

/// A property's value as a string (`s`).
pub fn as_string(value: &Variant<'_>, what: &str) -> Result<String, DbusError> {
    match value {
        Variant::Str(s) => Ok(s.as_str().to_string()),
        other => Err(type_error(what, "string", other)),
    }
}

/// A property's value as a `u` (UINT32).
pub fn as_u32(value: &Variant<'_>, what: &str) -> Result<u32, DbusError> {
    match value {
        Variant::U32(v) => Ok(*v),
        other => Err(type_error(what, "uint32", other)),
    }
}

/// A property's value as a `t` (UINT64).
pub fn as_u64(value: &Variant<'_>, what: &str) -> Result<u64, DbusError> {
    match value {
        Variant::U64(v) => Ok(*v),
        other => Err(type_error(what, "uint64", other)),
    }
}

fn type_error(what: &str, expected: &'static str, got: &Variant<'_>) -> DbusError {
    DbusError::Type {
        call: what.to_string(),
        expected,
        got: got.value_signature().to_string(),
    }
}

/// A private bus for tests: a `dbus-daemon` of the test's own, with a minimal configuration in
/// a temporary directory, and fake services on it that answer from recorded replies.
#[cfg(test)]
pub(crate) mod testbus {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};

    use zbus::message::{Header, Type};
    use zbus::{Connection, Message};

    /// A running `dbus-daemon`, killed when dropped.
    pub struct PrivateBus {
        pub address: String,
        child: Child,
        _dir: tempfile::TempDir,
    }

    impl Drop for PrivateBus {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Serialises the tests that set `DBUS_SYSTEM_BUS_ADDRESS`.
    pub static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Starts a private bus, or `None` (with a message) when `dbus-daemon` is missing and this
    /// is not CI (where a missing daemon fails the test).
    pub fn start() -> Option<PrivateBus> {
        let daemon = "/usr/bin/dbus-daemon";
        if !std::path::Path::new(daemon).exists() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{daemon} is missing (Debian package dbus-daemon)");
            }
            eprintln!("skipped: {daemon} is missing (Debian package dbus-daemon)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>nodewarden-test</type>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                dir.path().display()
            ),
        )
        .expect("write bus config");
        let mut child = Command::new(daemon)
            .arg("--nofork")
            .arg("--print-address")
            .arg(format!("--config-file={}", config.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dbus-daemon");
        let stdout = child.stdout.take().expect("stdout");
        let mut address = String::new();
        BufReader::new(stdout)
            .read_line(&mut address)
            .expect("dbus-daemon prints its address");
        let address = address.trim().to_string();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        Some(PrivateBus {
            address,
            child,
            _dir: dir,
        })
    }

    /// A recorded property value, `[D-Bus type, value]` (types s, u, t, b), as a variant.
    pub fn json_variant(typed: &serde_json::Value) -> Option<zbus::Variant<'static>> {
        use zbus::Variant;
        let kind = typed.get(0)?.as_str()?;
        let value = typed.get(1)?;
        Some(match kind {
            "s" => Variant::from(value.as_str()?.to_string()),
            "u" => Variant::from(u32::try_from(value.as_u64()?).ok()?),
            "t" => Variant::from(value.as_u64()?),
            "b" => Variant::from(value.as_bool()?),
            _ => return None,
        })
    }

    /// Builds a reply to a call, from the service's connection.
    pub type BuildReply = Box<dyn FnOnce(&Connection, &Header<'_>) -> zbus::Result<Message> + Send>;

    /// What a fake service answers to one method call.
    pub enum Answer {
        Reply(BuildReply),
        Error(&'static str, String),
    }

    impl Answer {
        pub fn reply<B>(body: B) -> Answer
        where
            B: serde::Serialize + zbus::wire::DynamicType + Send + 'static,
        {
            Answer::Reply(Box::new(move |conn, header| {
                let mut builder = Message::method_return(header);
                if let Some(name) = conn.unique_name() {
                    builder = builder.sender(name);
                }
                builder.build(&body)
            }))
        }
    }

    /// Connects to `address`, owns `name` and answers every method call with `answer(path,
    /// interface, member, body)` on a thread of its own, until the bus goes away. Returns once
    /// the name is owned.
    pub fn serve<F>(address: &str, name: &'static str, answer: F)
    where
        F: Fn(&str, &str, &str, &Message) -> Answer + Send + 'static,
    {
        // The stream exists before the name is owned: no call sent to the name can come
        // before it and be missed.
        let (conn, mut stream) = zbus::block_on(async {
            let conn = zbus::connection::Builder::address(address).build().await?;
            let stream = zbus::MessageStream::from(&conn);
            conn.request_name(name).await?;
            zbus::Result::Ok((conn, stream))
        })
        .expect("fake service connects and owns its name");
        std::thread::spawn(move || {
            zbus::block_on(async move {
                loop {
                    let next = std::future::poll_fn(|cx| {
                        futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
                    })
                    .await;
                    let Some(Ok(msg)) = next else { break };
                    if msg.message_type() != Type::MethodCall {
                        continue;
                    }
                    let header = msg.header();
                    let path = header.path().map(|p| p.as_str()).unwrap_or("");
                    let interface = header.interface().map(|i| i.as_str()).unwrap_or("");
                    let member = header.member().map(|m| m.as_str()).unwrap_or("");
                    let sent = match answer(path, interface, member, &msg) {
                        Answer::Reply(build) => match build(&conn, &header) {
                            Ok(reply) => conn.send(&reply).await,
                            Err(e) => Err(e),
                        },
                        Answer::Error(name, text) => conn.reply_error(&header, name, &text).await,
                    };
                    if sent.is_err() {
                        break;
                    }
                }
            })
        });
    }
}
