//! Per-connection state machines of both ends, free of I/O: the link tasks feed them decoded
//! frames and send what they return.
//!
//! Controller side: the first message must be a [`Hello`] with a protocol version in common;
//! reports and responses are accepted only after it, and every response must answer an
//! outstanding request. Agent side: the first message must be the [`Welcome`].
//! Any violation is a [`ProtocolError`], after which the connection is closed.

use std::collections::{BTreeMap, BTreeSet};

use crate::protocol::{
    self, AgentToController, CommandKind, CommandRequest, CommandResponse, ControllerToAgent,
    DecodeError, Hello, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, StateReport, Welcome,
};

/// Most commands a controller keeps in flight on one connection.
pub const MAX_OUTSTANDING: usize = 1024;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("expected a hello first, got {0}")]
    ExpectedHello(&'static str),
    #[error("a second hello on an established session")]
    DuplicateHello,
    #[error(
        "no common protocol version: agent speaks {agent_min}..={agent_max}, controller {MIN_PROTOCOL_VERSION}..={MAX_PROTOCOL_VERSION}"
    )]
    NoCommonVersion { agent_min: u16, agent_max: u16 },
    #[error("response to command {0}, which is not outstanding")]
    UnknownCommandId(u64),
    #[error("the session is not established yet")]
    NotEstablished,
    #[error("the agent does not support {0}")]
    Unsupported(&'static str),
    #[error("{MAX_OUTSTANDING} commands already outstanding")]
    TooManyOutstanding,
    #[error("expected a welcome first, got {0}")]
    ExpectedWelcome(&'static str),
    #[error("a second welcome on an established session")]
    DuplicateWelcome,
    #[error("controller chose protocol version {0}, which this agent does not speak")]
    BadVersion(u16),
    #[error("controller refused the session: {0}")]
    Refused(String),
}

fn up_name(m: &AgentToController) -> &'static str {
    match m {
        AgentToController::Hello(_) => "hello",
        AgentToController::StateReport(_) => "state report",
        AgentToController::CommandResponse(_) => "command response",
    }
}

fn down_name(m: &ControllerToAgent) -> &'static str {
    match m {
        ControllerToAgent::Welcome(_) => "welcome",
        ControllerToAgent::CommandRequest(_) => "command request",
        ControllerToAgent::Refused { .. } => "refusal",
    }
}

/// What a controller learned from one agent message.
#[derive(Debug, Clone, PartialEq)]
pub enum ControllerEvent {
    /// The session is established: send `reply` (the welcome).
    Established {
        hello: Hello,
        reply: ControllerToAgent,
    },
    Report(StateReport),
    CommandDone {
        kind: CommandKind,
        response: CommandResponse,
    },
}

#[derive(Debug)]
enum ControllerState {
    AwaitingHello,
    Established {
        version: u16,
        capabilities: BTreeSet<String>,
    },
}

/// The controller's end of one connection, for the node named by its certificate.
#[derive(Debug)]
pub struct ControllerSession {
    node: String,
    controller_version: String,
    state: ControllerState,
    next_command_id: u64,
    outstanding: BTreeMap<u64, CommandKind>,
}

impl ControllerSession {
    pub fn new(node: impl Into<String>, controller_version: impl Into<String>) -> Self {
        ControllerSession {
            node: node.into(),
            controller_version: controller_version.into(),
            state: ControllerState::AwaitingHello,
            next_command_id: 1,
            outstanding: BTreeMap::new(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The negotiated version, once established.
    pub fn version(&self) -> Option<u16> {
        match self.state {
            ControllerState::Established { version, .. } => Some(version),
            ControllerState::AwaitingHello => None,
        }
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Decodes and handles one frame payload.
    pub fn on_frame(&mut self, payload: &[u8]) -> Result<ControllerEvent, ProtocolError> {
        self.on_message(protocol::decode(payload)?)
    }

    pub fn on_message(
        &mut self,
        message: AgentToController,
    ) -> Result<ControllerEvent, ProtocolError> {
        match (&self.state, message) {
            (ControllerState::AwaitingHello, AgentToController::Hello(hello)) => {
                let version = hello.max_version.min(MAX_PROTOCOL_VERSION);
                if hello.min_version > hello.max_version
                    || version < hello.min_version.max(MIN_PROTOCOL_VERSION)
                {
                    return Err(ProtocolError::NoCommonVersion {
                        agent_min: hello.min_version,
                        agent_max: hello.max_version,
                    });
                }
                self.state = ControllerState::Established {
                    version,
                    capabilities: hello.capabilities.iter().cloned().collect(),
                };
                let reply = ControllerToAgent::Welcome(Welcome {
                    version,
                    node: self.node.clone(),
                    controller_version: self.controller_version.clone(),
                });
                Ok(ControllerEvent::Established { hello, reply })
            }
            (ControllerState::AwaitingHello, other) => {
                Err(ProtocolError::ExpectedHello(up_name(&other)))
            }
            (ControllerState::Established { .. }, AgentToController::Hello(_)) => {
                Err(ProtocolError::DuplicateHello)
            }
            (ControllerState::Established { .. }, AgentToController::StateReport(r)) => {
                Ok(ControllerEvent::Report(r))
            }
            (ControllerState::Established { .. }, AgentToController::CommandResponse(r)) => {
                let kind = self
                    .outstanding
                    .remove(&r.id)
                    .ok_or(ProtocolError::UnknownCommandId(r.id))?;
                Ok(ControllerEvent::CommandDone { kind, response: r })
            }
        }
    }

    /// A request to send, with a fresh id recorded as outstanding.
    pub fn request(&mut self, kind: CommandKind) -> Result<ControllerToAgent, ProtocolError> {
        let ControllerState::Established { capabilities, .. } = &self.state else {
            return Err(ProtocolError::NotEstablished);
        };
        if !capabilities.contains(kind.capability()) {
            return Err(ProtocolError::Unsupported(kind.capability()));
        }
        if self.outstanding.len() >= MAX_OUTSTANDING {
            return Err(ProtocolError::TooManyOutstanding);
        }
        let id = self.next_command_id;
        self.next_command_id += 1;
        self.outstanding.insert(id, kind.clone());
        Ok(ControllerToAgent::CommandRequest(CommandRequest {
            id,
            kind,
        }))
    }
}

/// What an agent learned from one controller message.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    Welcomed(Welcome),
    Command(CommandRequest),
}

/// The agent's end of one connection.
#[derive(Debug, Default)]
pub struct AgentSession {
    welcome: Option<Welcome>,
    next_report_seq: u64,
}

impl AgentSession {
    pub fn new() -> Self {
        Self::default()
    }

    /// The first message to send.
    pub fn hello(&self, agent_version: &str, capabilities: &[&str]) -> AgentToController {
        AgentToController::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: MAX_PROTOCOL_VERSION,
            agent_version: agent_version.to_string(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        })
    }

    pub fn welcome(&self) -> Option<&Welcome> {
        self.welcome.as_ref()
    }

    pub fn on_frame(&mut self, payload: &[u8]) -> Result<AgentEvent, ProtocolError> {
        self.on_message(protocol::decode(payload)?)
    }

    pub fn on_message(&mut self, message: ControllerToAgent) -> Result<AgentEvent, ProtocolError> {
        match (&self.welcome, message) {
            (_, ControllerToAgent::Refused { reason }) => Err(ProtocolError::Refused(reason)),
            (None, ControllerToAgent::Welcome(w)) => {
                if !(MIN_PROTOCOL_VERSION..=MAX_PROTOCOL_VERSION).contains(&w.version) {
                    return Err(ProtocolError::BadVersion(w.version));
                }
                self.welcome = Some(w.clone());
                Ok(AgentEvent::Welcomed(w))
            }
            (None, other) => Err(ProtocolError::ExpectedWelcome(down_name(&other))),
            (Some(_), ControllerToAgent::Welcome(_)) => Err(ProtocolError::DuplicateWelcome),
            (Some(_), ControllerToAgent::CommandRequest(r)) => Ok(AgentEvent::Command(r)),
        }
    }

    /// Wraps a report with the next sequence number; `None` before the welcome.
    pub fn report(&mut self, mut report: StateReport) -> Option<AgentToController> {
        self.welcome.as_ref()?;
        report.seq = self.next_report_seq;
        self.next_report_seq += 1;
        Some(AgentToController::StateReport(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CAP_STATE_REPORT, CommandOutcome, encode};

    fn hello(min: u16, max: u16, caps: &[&str]) -> AgentToController {
        AgentToController::Hello(Hello {
            min_version: min,
            max_version: max,
            agent_version: "t".into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
        })
    }

    #[test]
    fn full_exchange_between_both_ends() {
        let mut agent = AgentSession::new();
        let mut controller = ControllerSession::new("n1", "c");
        assert_eq!(agent.report(StateReport::default()), None);
        let up = encode(&agent.hello("t", &[CAP_STATE_REPORT, "command:ping"])).unwrap();
        let ControllerEvent::Established { reply, .. } = controller.on_frame(&up).unwrap() else {
            panic!("not established");
        };
        assert_eq!(controller.version(), Some(1));
        let down = encode(&reply).unwrap();
        let AgentEvent::Welcomed(w) = agent.on_frame(&down).unwrap() else {
            panic!("not welcomed");
        };
        assert_eq!(w.node, "n1");

        for seq in 0..3 {
            let r = agent.report(StateReport::default()).unwrap();
            let ControllerEvent::Report(r) = controller.on_frame(&encode(&r).unwrap()).unwrap()
            else {
                panic!("not a report");
            };
            assert_eq!(r.seq, seq);
        }

        let req = controller.request(CommandKind::Ping).unwrap();
        assert_eq!(controller.outstanding(), 1);
        let AgentEvent::Command(cmd) = agent.on_frame(&encode(&req).unwrap()).unwrap() else {
            panic!("not a command");
        };
        let resp = AgentToController::CommandResponse(CommandResponse {
            id: cmd.id,
            outcome: CommandOutcome::Done,
        });
        assert!(matches!(
            controller.on_message(resp.clone()),
            Ok(ControllerEvent::CommandDone {
                kind: CommandKind::Ping,
                ..
            })
        ));
        assert_eq!(controller.outstanding(), 0);
        // The same id again is not outstanding any more.
        assert_eq!(
            controller.on_message(resp),
            Err(ProtocolError::UnknownCommandId(cmd.id))
        );
    }

    #[test]
    fn controller_requires_hello_first_and_once() {
        let mut c = ControllerSession::new("n", "c");
        assert_eq!(
            c.on_message(AgentToController::StateReport(StateReport::default())),
            Err(ProtocolError::ExpectedHello("state report"))
        );
        assert_eq!(
            c.request(CommandKind::Ping),
            Err(ProtocolError::NotEstablished)
        );
        assert!(c.on_message(hello(1, 1, &[])).is_ok());
        assert_eq!(
            c.on_message(hello(1, 1, &[])),
            Err(ProtocolError::DuplicateHello)
        );
    }

    #[test]
    fn version_negotiation() {
        // A newer agent that still speaks 1 gets 1.
        let mut c = ControllerSession::new("n", "c");
        assert!(c.on_message(hello(1, 5, &[])).is_ok());
        assert_eq!(c.version(), Some(1));
        for (min, max) in [(2, 3), (0, 0), (3, 1)] {
            let mut c = ControllerSession::new("n", "c");
            assert!(
                matches!(
                    c.on_message(hello(min, max, &[])),
                    Err(ProtocolError::NoCommonVersion { .. })
                ),
                "{min}..{max}"
            );
        }
        let mut a = AgentSession::new();
        assert_eq!(
            a.on_message(ControllerToAgent::Welcome(Welcome {
                version: 9,
                node: "n".into(),
                controller_version: "c".into()
            })),
            Err(ProtocolError::BadVersion(9))
        );
    }

    #[test]
    fn commands_need_the_capability() {
        let mut c = ControllerSession::new("n", "c");
        c.on_message(hello(1, 1, &["command:ping"])).unwrap();
        assert!(c.request(CommandKind::Ping).is_ok());
        assert_eq!(
            c.request(CommandKind::ReportState),
            Err(ProtocolError::Unsupported("command:report-state"))
        );
        for _ in 1..MAX_OUTSTANDING {
            c.request(CommandKind::Ping).unwrap();
        }
        assert_eq!(
            c.request(CommandKind::Ping),
            Err(ProtocolError::TooManyOutstanding)
        );
    }

    #[test]
    fn operations_go_only_to_an_agent_that_announced_them() {
        use crate::ops::{Operation, ServiceAction};
        use crate::protocol::{CAP_INVENTORY, CAP_OPERATIONS};
        let op = CommandKind::Operation(Operation::service("x", ServiceAction::Stop));
        // An agent without declared operations does not announce them.
        let mut c = ControllerSession::new("n", "c");
        c.on_message(hello(1, 1, &[CAP_STATE_REPORT, "command:ping"]))
            .unwrap();
        assert_eq!(
            c.request(op.clone()),
            Err(ProtocolError::Unsupported(CAP_OPERATIONS))
        );
        assert_eq!(
            c.request(CommandKind::Inventory),
            Err(ProtocolError::Unsupported(CAP_INVENTORY))
        );
        assert_eq!(c.outstanding(), 0);
        // An older vocabulary's capability is not enough either.
        let mut c = ControllerSession::new("n", "c");
        c.on_message(hello(1, 1, &["command:ops/0"])).unwrap();
        assert!(c.request(op.clone()).is_err());

        let mut c = ControllerSession::new("n", "c");
        c.on_message(hello(1, 1, &[CAP_OPERATIONS])).unwrap();
        let ControllerToAgent::CommandRequest(req) = c.request(op.clone()).unwrap() else {
            panic!("not a request");
        };
        assert_eq!(req.kind, op);
        // The response comes back with the kind it answers.
        let response = CommandResponse {
            id: req.id,
            outcome: CommandOutcome::Operation(crate::ops::OperationResult::refused(
                None,
                "service \"x\" is not declared on this node",
            )),
        };
        let event = c
            .on_message(AgentToController::CommandResponse(response.clone()))
            .unwrap();
        assert_eq!(event, ControllerEvent::CommandDone { kind: op, response });
    }

    #[test]
    fn agent_requires_welcome_first_and_reports_refusal() {
        let mut a = AgentSession::new();
        let cmd = ControllerToAgent::CommandRequest(CommandRequest {
            id: 1,
            kind: CommandKind::Ping,
        });
        assert_eq!(
            a.on_message(cmd),
            Err(ProtocolError::ExpectedWelcome("command request"))
        );
        assert_eq!(
            a.on_message(ControllerToAgent::Refused {
                reason: "old".into()
            }),
            Err(ProtocolError::Refused("old".into()))
        );
        assert!(matches!(
            a.on_frame(&[0xff, 0x00]),
            Err(ProtocolError::Decode(_))
        ));
    }
}
