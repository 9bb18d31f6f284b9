//! The messages of the agent–controller link.
//!
//! Each frame (see [`crate::framing`]) carries one message encoded with postcard. The agent opens
//! one bidirectional stream per connection and sends [`AgentToController`] messages on it; the
//! controller answers on the same stream with [`ControllerToAgent`] messages.
//!
//! Versioning: the agent's [`Hello`] names the range of protocol versions it speaks and the
//! controller's [`Welcome`] picks one. Within a version, messages only grow by new enum variants
//! appended at the end (postcard encodes the variant index), and a peer only sends a variant the
//! other side announced: command kinds are listed as capabilities in the hello. A change of an
//! existing message's layout needs a new protocol version.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::ops::{Fitted, Operation, OperationResult, fit_texts};
use crate::wol::MacAddress;

/// ALPN protocol id of the link; a peer not speaking it fails the handshake.
pub const ALPN: &[u8] = b"nodewarden/1";

/// The protocol versions this build speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
pub const MAX_PROTOCOL_VERSION: u16 = 1;

/// Messages from an agent to the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentToController {
    Hello(Hello),
    StateReport(StateReport),
    CommandResponse(CommandResponse),
    /// One part of a storage device's fragment inventory; sent only after the controller asked
    /// with [`CommandKind::FragmentInventories`].
    FragmentInventory(InventoryPart),
    /// The other metrics endpoints the node serves (Ray's metrics agent, …), for the
    /// controller's service discovery; sent only after the controller asked with
    /// [`CommandKind::Endpoints`], then whenever the list changes. At most [`MAX_ENDPOINTS`].
    Endpoints(Vec<ScrapeEndpoint>),
    /// A change to a device's fragment inventory since the one of `base_generation` this
    /// connection sent; sent only after the controller asked with
    /// [`CommandKind::FragmentDeltas`].
    FragmentDelta(DeltaMessage),
}

/// One [`crate::fragments::InventoryDelta`] between two generations of a device's inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaMessage {
    pub device_id: u32,
    /// The generation the receiver must hold for the delta to apply.
    pub base_generation: u64,
    /// The generation it makes.
    pub generation: u64,
    /// `InventoryDelta::encode()`, at most [`INVENTORY_PART`] bytes (a larger change is sent
    /// as a whole inventory).
    pub data: Vec<u8>,
}

/// A Prometheus target on the node besides the agent's own `/metrics`: scraped at the address
/// the link comes from, on `port`, under the job `job`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScrapeEndpoint {
    /// The Prometheus job it belongs to (`ray`): lowercase letters, digits, `_` and `-`, at most
    /// 32 bytes, starting with a letter.
    pub job: String,
    pub port: u16,
    /// The metrics path (`/metrics`): at most 128 bytes of printable ASCII, starting with `/`.
    pub path: String,
}

/// Endpoints one [`AgentToController::Endpoints`] may carry.
pub const MAX_ENDPOINTS: usize = 16;

impl ScrapeEndpoint {
    /// Why this endpoint cannot be listed as a target, if it cannot.
    pub fn problem(&self) -> Option<&'static str> {
        let job = self.job.as_bytes();
        if job.is_empty() || job.len() > 32 || !job[0].is_ascii_lowercase() {
            return Some("a job name is 1 to 32 bytes and starts with a lowercase letter");
        }
        if !job
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Some("a job name has lowercase letters, digits, '_' and '-' only");
        }
        if self.port == 0 {
            return Some("port 0");
        }
        let path = self.path.as_bytes();
        if path.first() != Some(&b'/') || path.len() > 128 || !path.iter().all(u8::is_ascii_graphic)
        {
            return Some("a metrics path is up to 128 printable ASCII bytes starting with '/'");
        }
        None
    }
}

/// One part of `DeviceInventory::encode()` (`crate::fragments`): an inventory larger than
/// [`INVENTORY_PART`] goes in several parts, in order, with the same device and generation; the
/// receiver reassembles them with `fragments::InventoryAssembler`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryPart {
    pub device_id: u32,
    /// Increases with each inventory of the device in the agent's life.
    pub generation: u64,
    /// The whole encoding's length.
    pub total_len: u32,
    /// Where `data` starts in it.
    pub offset: u32,
    pub data: Vec<u8>,
}

/// Bytes of an inventory per [`InventoryPart`] (a part stays well under `MAX_FRAME`).
pub const INVENTORY_PART: usize = 192 * 1024;

/// Messages from the controller to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControllerToAgent {
    Welcome(Welcome),
    CommandRequest(CommandRequest),
    /// The controller refuses the session (e.g. no common protocol version); it closes the
    /// connection right after.
    Refused {
        reason: String,
    },
}

/// First message of every connection, from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub min_version: u16,
    pub max_version: u16,
    /// The agent's build version (`CARGO_PKG_VERSION`).
    pub agent_version: String,
    /// What the agent can do, e.g. `"state-report"` and one `command:<kind>` per
    /// [`CommandKind`] it executes.
    pub capabilities: Vec<String>,
}

/// The controller's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version both sides use from here on.
    pub version: u16,
    /// The node name the controller took from the agent's certificate.
    pub node: String,
    pub controller_version: String,
}

/// A node's state, sent after the welcome and then periodically.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StateReport {
    /// Increases by one per report on a connection; lets the controller see gaps.
    pub seq: u64,
    pub roles: Vec<Role>,
    pub storage: Vec<StorageDevice>,
    pub services: Vec<ServiceState>,
    pub health: Health,
    /// The TCP port of the agent's `/metrics` (its bound `--web.listen-address`), for the
    /// controller's Prometheus service discovery; the address is the one the link comes from.
    /// (Appended to the report: agents and controllers of this layout must be upgraded together.)
    pub metrics_port: Option<u16>,
    /// Online CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`), so the load can be read against them.
    /// Appended like `metrics_port`.
    pub cpus: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs a DFS storage client keeping fragments in local folders.
    Storage,
    /// Runs Ray (head or worker).
    Ray,
    Other,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Storage => "storage",
            Role::Ray => "ray",
            Role::Other => "other",
        }
    }
}

/// One storage device: the DFS `DEVICE.ID` and the filesystem holding its fragment folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageDevice {
    pub device_id: u32,
    pub fragment_dir: String,
    pub total_bytes: u64,
    /// Bytes available to an unprivileged writer (statvfs `f_bavail`).
    pub free_bytes: u64,
    /// Why the figures above are zero, when the folder could not be measured.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub name: String,
    pub status: ServiceStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceStatus {
    /// The agent does not (yet) observe this service.
    Unknown,
    Running,
    Stopped,
    Failed,
}

/// A small health summary; the full picture is in the node's `/metrics`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Health {
    pub load1: f64,
    pub memory_total_bytes: u64,
    /// `MemTotal - MemAvailable`.
    pub memory_used_bytes: u64,
    pub root_fs_total_bytes: u64,
    pub root_fs_used_bytes: u64,
}

/// A command from the controller; the agent answers each with a [`CommandResponse`] of the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    pub id: u64,
    pub kind: CommandKind,
}

/// What the controller can ask. Kinds are only appended; an agent announces each kind it
/// executes as its [`CommandKind::capability`], and the controller sends no other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandKind {
    /// Answered at once; measures the round trip.
    Ping,
    /// Send a state report now instead of at the next period.
    ReportState,
    /// Run one declared operation (docs/operations-remote.md); answered with
    /// [`CommandOutcome::Operation`]. The agent refuses anything its config does not declare.
    Operation(Operation),
    /// Describe the node's host name and network interfaces; answered with
    /// [`CommandOutcome::Inventory`]. The controller asks once per connection.
    Inventory,
    /// The controller takes [`AgentToController::FragmentInventory`] from now on: the agent
    /// sends each device's latest inventory, then each new one. Answered `Done`.
    FragmentInventories,
    /// The controller takes [`AgentToController::Endpoints`] from now on: the agent sends its
    /// list, then each changed one. Answered `Done`.
    Endpoints,
    /// The controller takes [`AgentToController::FragmentDelta`] from now on, after the whole
    /// inventories [`CommandKind::FragmentInventories`] asked for. Answered `Done`.
    FragmentDeltas,
}

/// Capability for [`CommandKind::Operation`]. The number is the version of the
/// [`Operation`]/[`OperationResult`] vocabulary: an agent that cannot decode a newer operation
/// must not be sent one (an undecodable frame closes the connection), so a change of that
/// vocabulary announces a new capability.
pub const CAP_OPERATIONS: &str = "command:ops/1";
/// Capability for [`CommandKind::Inventory`].
pub const CAP_INVENTORY: &str = "command:inventory";
/// Capability for [`CommandKind::FragmentInventories`] (and so for sending
/// [`AgentToController::FragmentInventory`]); `/1` versions `DeviceInventory`'s wire form.
pub const CAP_FRAGMENTS: &str = "command:fragments/1";
/// Capability for [`CommandKind::Endpoints`] (and so for sending
/// [`AgentToController::Endpoints`]); `/1` versions [`ScrapeEndpoint`]'s wire form.
pub const CAP_ENDPOINTS: &str = "command:endpoints/1";
/// Capability for [`CommandKind::FragmentDeltas`] (and so for sending
/// [`AgentToController::FragmentDelta`]); `/1` versions `InventoryDelta`'s wire form.
pub const CAP_FRAGMENT_DELTAS: &str = "command:fragment-deltas/1";

impl CommandKind {
    /// The capability an agent announces to receive this kind.
    pub fn capability(&self) -> &'static str {
        match self {
            CommandKind::Ping => "command:ping",
            CommandKind::ReportState => "command:report-state",
            CommandKind::Operation(_) => CAP_OPERATIONS,
            CommandKind::Inventory => CAP_INVENTORY,
            CommandKind::FragmentInventories => CAP_FRAGMENTS,
            CommandKind::Endpoints => CAP_ENDPOINTS,
            CommandKind::FragmentDeltas => CAP_FRAGMENT_DELTAS,
        }
    }
}

/// What the controller needs to reach a node other than through its link: its host name, and
/// per interface (loopback left out) the MAC (for Wake-on-LAN) and the addresses with the
/// directed broadcast address of each IPv4 subnet.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Inventory {
    pub hostname: String,
    pub interfaces: Vec<Interface>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    /// `None` for interfaces without an Ethernet-style address (tunnels, InfiniBand).
    pub mac: Option<MacAddress>,
    pub addresses: Vec<InterfaceAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceAddress {
    pub address: IpAddr,
    pub prefix_len: u8,
    /// The subnet's directed broadcast address (IPv4 only), where a magic packet goes.
    pub broadcast: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResponse {
    pub id: u64,
    pub outcome: CommandOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandOutcome {
    Done,
    /// The command could not be carried out at all (not the outcome of an operation, which is
    /// [`CommandOutcome::Operation`] even when refused).
    Failed {
        message: String,
    },
    /// The answer to [`CommandKind::Operation`].
    Operation(OperationResult),
    /// The answer to [`CommandKind::Inventory`].
    Inventory(Inventory),
}

/// QUIC application close codes of the link, so the other side can tell why it was closed.
pub mod close {
    /// Orderly shutdown of the closing side.
    pub const SHUTDOWN: u32 = 0;
    /// An undecodable or oversized frame, or a message out of order.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// A newer connection of the same node replaced this one.
    pub const REPLACED: u32 = 2;
    /// The node's certificate was revoked.
    pub const REVOKED: u32 = 3;
    /// The controller is draining (an operator moves its agents away): link to another one.
    pub const DRAINING: u32 = 4;
    /// Another controller of the cluster holds the node's link lease (this link is stale).
    pub const LEASE_LOST: u32 = 5;
    /// The controller cannot reach the cluster's database, so it holds no lease: link to
    /// another one.
    pub const NO_AUTHORITY: u32 = 6;

    /// A short name for logs.
    pub fn describe(code: u64) -> &'static str {
        match code {
            0 => "shutdown",
            1 => "protocol error",
            2 => "replaced by a newer connection",
            3 => "certificate revoked",
            4 => "controller draining",
            5 => "another controller holds the link",
            6 => "controller without its database",
            _ => "unknown reason",
        }
    }
}

/// Capability for sending periodic state reports.
pub const CAP_STATE_REPORT: &str = "state-report";

/// Not a command: the agent serves its `/metrics` over TLS (`--web.config.file`), so service
/// discovery gives Prometheus `https` for it. An announcement in the hello's capabilities, which
/// a controller that does not know it ignores: no change to the wire layout.
pub const CAP_METRICS_TLS: &str = "metrics:tls";

/// The error of [`encode`] (postcard's), so callers can keep it as a source.
pub use postcard::Error as EncodingError;

/// Encodes a message for a frame payload.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, EncodingError> {
    postcard::to_stdvec(message)
}

/// Decodes a frame payload; trailing bytes are an error (a frame holds exactly one message).
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, DecodeError> {
    let (message, rest) =
        postcard::take_from_bytes(payload).map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(message)
}

/// Why an answer could not be encoded at all (postcard failing on these plain types; kept so
/// the caller can log it rather than end the session).
#[derive(Debug, thiserror::Error)]
#[error("encoding the answer to command {id}")]
pub struct EncodeError {
    pub id: u64,
    #[source]
    pub source: postcard::Error,
}

/// How [`encode_response`] made an answer fit its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Encoded as it was.
    Whole,
    /// Its longest texts (command output, messages) were cut and marked with
    /// [`truncation_marker`]; `omitted` bytes in all. The encoding was `encoded` bytes before.
    Truncated { omitted: usize, encoded: usize },
    /// Even with every text cut it did not fit (a list too long for one frame): the outcome was
    /// replaced by [`CommandOutcome::Failed`] saying so. The encoding was `encoded` bytes.
    Replaced { encoded: usize },
}

pub use crate::ops::truncation_marker;

/// Encodes an answer as an [`AgentToController::CommandResponse`] payload of at most `max` bytes
/// (pass [`crate::framing::MAX_FRAME`]; anything under 256 bytes may not even fit the failure
/// that replaces an answer), whatever its outcome carries.
///
/// An answer that is too large has its texts cut "water-filling" style: the largest cap such
/// that every text longer than it is cut to it (at a character boundary, ending in
/// [`truncation_marker`]) and the encoding fits; shorter texts are kept whole. A cut command
/// output also sets its report's `truncated`. The operation echoed in a result is never cut (the
/// controller sent it in a frame of the same limit). If even the shortest cut does not fit, the
/// outcome becomes [`CommandOutcome::Failed`] for the same id. Pure: no I/O.
pub fn encode_response(
    response: CommandResponse,
    max: usize,
) -> Result<(Vec<u8>, Fit), EncodeError> {
    let id = response.id;
    let encoded = |r: &CommandResponse| {
        postcard::to_stdvec(&ResponseRef::CommandResponse(r))
            .map_err(|source| EncodeError { id, source })
    };
    let visit = |r: &mut CommandResponse, cut: &mut dyn FnMut(&mut String) -> bool| {
        visit_texts(&mut r.outcome, cut)
    };
    Ok(match fit_texts(&response, max, visit, encoded)? {
        Fitted::Whole(bytes) => (bytes, Fit::Whole),
        Fitted::Truncated {
            bytes,
            omitted,
            encoded,
        } => (bytes, Fit::Truncated { omitted, encoded }),
        Fitted::TooLarge { encoded: whole } => {
            let failed = CommandResponse {
                id,
                outcome: CommandOutcome::Failed {
                    message: format!(
                        "the agent's answer is {whole} bytes encoded, over the link's limit of \
                         {max} bytes even with its texts cut"
                    ),
                },
            };
            (encoded(&failed)?, Fit::Replaced { encoded: whole })
        }
    })
}

/// [`AgentToController`] by reference, for encoding an answer without copying it: serde gives
/// a newtype variant the same bytes whether it holds a value or a reference, as long as the
/// variants keep their order (a unit test compares the two).
#[derive(Serialize)]
enum ResponseRef<'a> {
    #[allow(dead_code)]
    Hello(&'a Hello),
    #[allow(dead_code)]
    StateReport(&'a StateReport),
    CommandResponse(&'a CommandResponse),
}

/// Calls `cut` on every text of an outcome (not the echoed operation); a command report whose
/// output `cut` shortened (it returns true) is marked truncated.
fn visit_texts(outcome: &mut CommandOutcome, cut: &mut dyn FnMut(&mut String) -> bool) {
    match outcome {
        CommandOutcome::Done => {}
        CommandOutcome::Failed { message } => {
            cut(message);
        }
        CommandOutcome::Operation(result) => result.outcome.visit_texts(cut),
        CommandOutcome::Inventory(inventory) => {
            cut(&mut inventory.hostname);
            for interface in &mut inventory.interfaces {
                cut(&mut interface.name);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("undecodable message: {0}")]
    Invalid(String),
    #[error("undecodable message: {0} bytes after its end")]
    TrailingBytes(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StateReport {
        StateReport {
            seq: 7,
            roles: vec![Role::Storage, Role::Ray],
            storage: vec![StorageDevice {
                device_id: 3,
                fragment_dir: "/srv/fragments".into(),
                total_bytes: 1 << 40,
                free_bytes: 1 << 39,
                error: None,
            }],
            services: vec![ServiceState {
                name: "dfs-client".into(),
                status: ServiceStatus::Unknown,
            }],
            health: Health {
                load1: 0.5,
                memory_total_bytes: 8 << 30,
                memory_used_bytes: 2 << 30,
                root_fs_total_bytes: 100 << 30,
                root_fs_used_bytes: 40 << 30,
            },
            metrics_port: Some(9100),
            cpus: Some(8),
        }
    }

    #[test]
    fn every_message_round_trips() {
        let up = [
            AgentToController::Hello(Hello {
                min_version: 1,
                max_version: 1,
                agent_version: "0.1.0".into(),
                capabilities: vec![CAP_STATE_REPORT.into(), "command:ping".into()],
            }),
            AgentToController::StateReport(report()),
            AgentToController::CommandResponse(CommandResponse {
                id: 9,
                outcome: CommandOutcome::Failed {
                    message: "no".into(),
                },
            }),
        ];
        for m in up {
            assert_eq!(decode::<AgentToController>(&encode(&m).unwrap()), Ok(m));
        }
        let down = [
            ControllerToAgent::Welcome(Welcome {
                version: 1,
                node: "n1".into(),
                controller_version: "0.1.0".into(),
            }),
            ControllerToAgent::CommandRequest(CommandRequest {
                id: 1,
                kind: CommandKind::ReportState,
            }),
            ControllerToAgent::Refused { reason: "x".into() },
        ];
        for m in down {
            assert_eq!(decode::<ControllerToAgent>(&encode(&m).unwrap()), Ok(m));
        }
    }

    #[test]
    fn operations_and_inventory_round_trip() {
        use crate::ops::{Outcome, ServiceAction, ServiceState};
        let op = Operation::service("storage-client", ServiceAction::Start);
        let down = ControllerToAgent::CommandRequest(CommandRequest {
            id: 4,
            kind: CommandKind::Operation(op.clone()),
        });
        assert_eq!(
            decode::<ControllerToAgent>(&encode(&down).unwrap()),
            Ok(down)
        );
        let deletion = ControllerToAgent::CommandRequest(CommandRequest {
            id: 5,
            kind: CommandKind::Operation(Operation::DeleteFragments {
                device_id: 3,
                fragment_ids: vec![1, u64::MAX],
            }),
        });
        assert_eq!(
            decode::<ControllerToAgent>(&encode(&deletion).unwrap()),
            Ok(deletion)
        );
        let result = OperationResult {
            operation: Some(op),
            outcome: Outcome::Service {
                ok: true,
                state: ServiceState::Running,
                message: "started as pid 9".into(),
                commands: vec![],
            },
            duration_ms: 3,
        };
        let inventory = Inventory {
            hostname: "storage-01".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some("52:54:00:ab:cd:ef".parse().unwrap()),
                addresses: vec![
                    InterfaceAddress {
                        address: "10.0.3.17".parse().unwrap(),
                        prefix_len: 24,
                        broadcast: Some(Ipv4Addr::new(10, 0, 3, 255)),
                    },
                    InterfaceAddress {
                        address: "fe80::1".parse().unwrap(),
                        prefix_len: 64,
                        broadcast: None,
                    },
                ],
            }],
        };
        for outcome in [
            CommandOutcome::Operation(result),
            CommandOutcome::Operation(OperationResult::refused(None, "not declared")),
            CommandOutcome::Inventory(inventory),
        ] {
            let up = AgentToController::CommandResponse(CommandResponse { id: 4, outcome });
            assert_eq!(decode::<AgentToController>(&encode(&up).unwrap()), Ok(up));
        }
    }

    #[test]
    fn existing_variants_keep_their_encoding() {
        // Appending kinds and outcomes must not move the ones older peers know.
        let ping = ControllerToAgent::CommandRequest(CommandRequest {
            id: 1,
            kind: CommandKind::Ping,
        });
        assert_eq!(encode(&ping).unwrap(), [1, 1, 0]);
        let report = ControllerToAgent::CommandRequest(CommandRequest {
            id: 1,
            kind: CommandKind::ReportState,
        });
        assert_eq!(encode(&report).unwrap(), [1, 1, 1]);
        let done = AgentToController::CommandResponse(CommandResponse {
            id: 2,
            outcome: CommandOutcome::Done,
        });
        assert_eq!(encode(&done).unwrap(), [2, 2, 0]);
        let failed = AgentToController::CommandResponse(CommandResponse {
            id: 2,
            outcome: CommandOutcome::Failed {
                message: "x".into(),
            },
        });
        assert_eq!(encode(&failed).unwrap(), [2, 2, 1, 1, b'x']);
        // The fragment messages come after every older variant.
        let subscribe = ControllerToAgent::CommandRequest(CommandRequest {
            id: 1,
            kind: CommandKind::FragmentInventories,
        });
        assert_eq!(encode(&subscribe).unwrap(), [1, 1, 4]);
        let part = AgentToController::FragmentInventory(InventoryPart {
            device_id: 3,
            generation: 1,
            total_len: 2,
            offset: 0,
            data: vec![7, 8],
        });
        assert_eq!(encode(&part).unwrap(), [3, 3, 1, 2, 0, 2, 7, 8]);
        assert_eq!(
            decode::<AgentToController>(&encode(&part).unwrap()).unwrap(),
            part
        );
    }

    #[test]
    fn hello_encoding_is_stable() {
        // The hello is what two different versions exchange first; its bytes must not change.
        let hello = AgentToController::Hello(Hello {
            min_version: 1,
            max_version: 2,
            agent_version: "v".into(),
            capabilities: vec!["c".into()],
        });
        assert_eq!(encode(&hello).unwrap(), [0, 1, 2, 1, b'v', 1, 1, b'c']);
    }

    #[test]
    fn garbage_and_trailing_bytes_are_errors() {
        assert!(matches!(
            decode::<AgentToController>(&[0xff, 0xff, 0xff]),
            Err(DecodeError::Invalid(_))
        ));
        assert!(decode::<AgentToController>(&[]).is_err());
        let mut bytes = encode(&AgentToController::StateReport(report())).unwrap();
        bytes.push(0);
        assert_eq!(
            decode::<AgentToController>(&bytes),
            Err(DecodeError::TrailingBytes(1))
        );
        // Every truncation of a valid message fails cleanly.
        let bytes = encode(&AgentToController::StateReport(report())).unwrap();
        for len in 0..bytes.len() {
            assert!(
                decode::<AgentToController>(&bytes[..len]).is_err(),
                "len {len}"
            );
        }
    }

    mod budget {
        use super::*;
        use crate::framing::MAX_FRAME;
        use crate::ops::{
            CommandExit, CommandReport, FragmentOutcome, FragmentResult, Operation, Outcome,
            ServiceAction, ServiceState,
        };

        fn service_answer(stdout: String, stderr: String, message: String) -> CommandResponse {
            CommandResponse {
                id: 77,
                outcome: CommandOutcome::Operation(OperationResult {
                    operation: Some(Operation::service("noisy", ServiceAction::Stop)),
                    outcome: Outcome::Service {
                        ok: true,
                        state: ServiceState::Stopped,
                        message,
                        commands: vec![CommandReport {
                            argv: vec!["sh".into(), "-c".into(), "noise".into()],
                            exit: CommandExit::Exited { code: 0 },
                            stdout,
                            stderr,
                            truncated: false,
                            duration_ms: 5,
                        }],
                    },
                    duration_ms: 6,
                }),
            }
        }

        fn decoded(payload: &[u8]) -> CommandResponse {
            match decode::<AgentToController>(payload) {
                Ok(AgentToController::CommandResponse(r)) => r,
                other => panic!("not a command response: {other:?}"),
            }
        }

        /// Every text of `got` is the one of `sent`, or a prefix of it at a character boundary
        /// followed by the marker with the right count. Returns how many were cut.
        fn check_texts(sent: &CommandResponse, got: &CommandResponse) -> usize {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            visit_texts(&mut sent.outcome.clone(), &mut |t| {
                a.push(t.clone());
                false
            });
            visit_texts(&mut got.outcome.clone(), &mut |t| {
                b.push(t.clone());
                false
            });
            assert_eq!(a.len(), b.len());
            let mut cut = 0;
            for (original, text) in a.iter().zip(&b) {
                if original == text {
                    continue;
                }
                cut += 1;
                let at = text.rfind("… [truncated: ").expect("a marker");
                let kept = &text[..at];
                assert!(original.starts_with(kept), "not a prefix");
                assert_eq!(
                    &text[at..],
                    truncation_marker(original.len() - kept.len()),
                    "marker count"
                );
            }
            cut
        }

        #[test]
        fn a_small_answer_is_encoded_as_it_is() {
            let answer = service_answer("ok\n".into(), String::new(), "stopped".into());
            let (bytes, fit) = encode_response(answer.clone(), MAX_FRAME).unwrap();
            assert_eq!(fit, Fit::Whole);
            // The borrowed encoding is byte for byte the owned message's.
            assert_eq!(
                bytes,
                encode(&AgentToController::CommandResponse(answer.clone())).unwrap()
            );
            assert_eq!(decoded(&bytes), answer);
        }

        #[test]
        fn sixty_four_kib_of_0xff_on_both_streams_fits_with_a_marker() {
            // What the agent makes of 64 KiB of 0xff per stream: U+FFFD, 3 bytes each.
            let lossy = String::from_utf8_lossy(&[0xff; 64 * 1024]).into_owned();
            assert_eq!(lossy.len(), 3 * 64 * 1024);
            let answer = service_answer(lossy.clone(), lossy.clone(), "stopped".into());
            assert!(
                encode(&AgentToController::CommandResponse(answer.clone()))
                    .unwrap()
                    .len()
                    > MAX_FRAME
            );
            let (bytes, fit) = encode_response(answer.clone(), MAX_FRAME).unwrap();
            assert!(bytes.len() <= MAX_FRAME, "{}", bytes.len());
            // Water-filling uses the budget rather than emptying the output.
            assert!(bytes.len() > MAX_FRAME - 64, "{}", bytes.len());
            let Fit::Truncated { omitted, encoded } = fit else {
                panic!("{fit:?}");
            };
            assert!(encoded > MAX_FRAME);
            let got = decoded(&bytes);
            assert_eq!(got.id, 77);
            assert_eq!(check_texts(&answer, &got), 2);
            let CommandOutcome::Operation(OperationResult {
                outcome:
                    Outcome::Service {
                        message, commands, ..
                    },
                ..
            }) = &got.outcome
            else {
                panic!("{:?}", got.outcome);
            };
            assert_eq!(message, "stopped");
            let report = &commands[0];
            assert!(report.truncated);
            assert_eq!(report.argv, ["sh", "-c", "noise"]);
            for stream in [&report.stdout, &report.stderr] {
                assert!(
                    stream.contains(" bytes omitted]"),
                    "{}",
                    &stream[stream.len() - 60..]
                );
                assert!(stream.starts_with('\u{fffd}'));
                assert!(stream.len() > 100 * 1024);
            }
            let kept = |t: &str| t.rfind("… [truncated: ").unwrap();
            assert_eq!(
                omitted,
                2 * lossy.len() - kept(&report.stdout) - kept(&report.stderr)
            );
        }

        #[test]
        fn multi_byte_characters_at_every_cut() {
            // Texts of 1-, 2-, 3- and 4-byte characters, cut at every budget in a range: the
            // cut always lands on a character boundary (postcard refuses invalid UTF-8 when
            // decoding), the marker counts what went, and the answer fits.
            for unit in ["a", "é", "€", "😀", "a€😀é"] {
                let text = unit.repeat(4000 / unit.len());
                let answer = service_answer(text.clone(), unit.repeat(3), text.clone());
                let whole = encode_response(answer.clone(), usize::MAX).unwrap().0.len();
                let coarse = (whole.saturating_sub(9000).max(256)..whole).step_by(97);
                // Consecutive budgets, so the cut meets every byte offset of a character.
                let fine = whole.saturating_sub(3000)..whole.saturating_sub(2940);
                for max in coarse.chain(fine) {
                    let (bytes, fit) = encode_response(answer.clone(), max).unwrap();
                    assert!(bytes.len() <= max, "{unit} {max}: {}", bytes.len());
                    let got = decoded(&bytes);
                    match fit {
                        Fit::Truncated { .. } => assert!(check_texts(&answer, &got) >= 1),
                        Fit::Replaced { .. } => {
                            assert!(matches!(got.outcome, CommandOutcome::Failed { .. }))
                        }
                        Fit::Whole => panic!("{unit} {max}: over the limit yet whole"),
                    }
                }
            }
        }

        #[test]
        fn random_answers_always_fit_or_fail_cleanly() {
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            let mut next = move |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n.max(1)
            };
            let alphabet = ['a', 'é', '€', '😀', '\u{fffd}', '\n'];
            for round in 0..120 {
                let mut text = |n: u64| -> String {
                    (0..next(n)).map(|_| alphabet[next(6) as usize]).collect()
                };
                let answer = service_answer(text(20_000), text(20_000), text(500));
                let max = 256 + next(100_000) as usize;
                let (bytes, fit) = encode_response(answer.clone(), max).unwrap();
                assert!(bytes.len() <= max, "round {round}: {} > {max}", bytes.len());
                let got = decoded(&bytes);
                assert_eq!(got.id, answer.id);
                match fit {
                    Fit::Whole => assert_eq!(got, answer),
                    Fit::Truncated { .. } => {
                        check_texts(&answer, &got);
                    }
                    Fit::Replaced { .. } => {
                        assert!(matches!(got.outcome, CommandOutcome::Failed { .. }))
                    }
                }
            }
        }

        fn deletion(count: u64, failure: &str) -> CommandResponse {
            let ids: Vec<u64> = (0..count).map(|i| 1_000_000_000 + i).collect();
            CommandResponse {
                id: 5,
                outcome: CommandOutcome::Operation(OperationResult {
                    operation: Some(Operation::DeleteFragments {
                        device_id: 3,
                        fragment_ids: ids.clone(),
                    }),
                    outcome: Outcome::Fragments {
                        device_id: 3,
                        results: ids
                            .iter()
                            .map(|&fragment_id| FragmentResult {
                                fragment_id,
                                outcome: FragmentOutcome::Failed(failure.to_string()),
                            })
                            .collect(),
                    },
                    duration_ms: 1,
                }),
            }
        }

        #[test]
        fn a_full_deletion_with_long_failures_keeps_every_verdict() {
            let answer = deletion(2048, &"permission denied: /srv/x/".repeat(40));
            let (bytes, fit) = encode_response(answer.clone(), MAX_FRAME).unwrap();
            assert!(bytes.len() <= MAX_FRAME);
            assert!(matches!(fit, Fit::Truncated { .. }), "{fit:?}");
            let got = decoded(&bytes);
            assert_eq!(check_texts(&answer, &got), 2048);
            let CommandOutcome::Operation(r) = &got.outcome else {
                panic!()
            };
            let Outcome::Fragments { results, .. } = &r.outcome else {
                panic!()
            };
            assert_eq!(results.len(), 2048);
            assert!(results.iter().all(|r| matches!(&r.outcome,
                FragmentOutcome::Failed(m) if m.starts_with("permission denied"))));
        }

        #[test]
        fn a_list_too_long_for_any_cut_becomes_a_failure_of_the_same_command() {
            let answer = deletion(100_000, "gone");
            let (bytes, fit) = encode_response(answer, MAX_FRAME).unwrap();
            assert!(bytes.len() <= MAX_FRAME);
            assert!(matches!(fit, Fit::Replaced { encoded } if encoded > MAX_FRAME));
            let got = decoded(&bytes);
            assert_eq!(got.id, 5);
            let CommandOutcome::Failed { message } = got.outcome else {
                panic!("{:?}", got.outcome)
            };
            assert!(message.contains("over the link's limit"), "{message}");
        }

        #[test]
        fn other_outcomes_are_cut_too() {
            for outcome in [
                CommandOutcome::Failed {
                    message: "x".repeat(MAX_FRAME),
                },
                CommandOutcome::Operation(OperationResult::refused(None, "r".repeat(MAX_FRAME))),
                CommandOutcome::Inventory(Inventory {
                    hostname: "h".repeat(MAX_FRAME),
                    interfaces: vec![],
                }),
            ] {
                let answer = CommandResponse { id: 1, outcome };
                let (bytes, fit) = encode_response(answer.clone(), MAX_FRAME).unwrap();
                assert!(bytes.len() <= MAX_FRAME);
                assert!(matches!(fit, Fit::Truncated { .. }), "{fit:?}");
                assert_eq!(check_texts(&answer, &decoded(&bytes)), 1);
            }
        }
    }
}
