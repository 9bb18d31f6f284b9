//! Per-connection state machines of both ends of the link, free of I/O, in the manner of
//! quinn-proto: the link tasks feed them the bytes they read ([`ControllerSession::handle_data`],
//! [`AgentSession::handle_data`]), the results of work done beside the loop (a collected state
//! report, an operation's outcome), and the passing of time (`handle_timeout` when
//! `poll_timeout` is due); then they carry out the effects the machine queues (`poll_effect`):
//! send a message, collect a report, run an operation, close with a code. Every rule of the
//! link lives here, tested without sockets; the loops in `agent/src/link.rs` and
//! `controller/src/link.rs` only read, feed and drain.
//!
//! Controller side: the first message must be a [`Hello`] with a protocol version in common,
//! within the hello deadline; reports and responses are accepted only after it, and every
//! response must answer an outstanding request, whose reply token (the caller waiting for it)
//! the machine keeps. An agent that can describe itself is asked for its inventory once.
//! Agent side: the first message must be the [`Welcome`], within the welcome deadline; then a
//! report right away and every report interval, one collection at a time. Any violation closes
//! the connection with [`close::PROTOCOL_ERROR`] and the reason.
//!
//! [`Backoff`] is the agent's reconnect rule, including what a close code means for it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::framing::{FrameDecoder, FrameError, MAX_FRAME};
use crate::ops::Operation;
use crate::protocol::{
    self, AgentToController, CAP_ENDPOINTS, CAP_FRAGMENT_DELTAS, CAP_FRAGMENTS, CAP_INVENTORY,
    CommandKind, CommandOutcome, CommandRequest, CommandResponse, ControllerToAgent, DecodeError,
    DeltaMessage, Hello, InventoryPart, MAX_ENDPOINTS, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION,
    ScrapeEndpoint, StateReport, Welcome, close,
};

/// Most commands a controller keeps in flight on one connection.
pub const MAX_OUTSTANDING: usize = 1024;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("no hello within {0:?}")]
    NoHello(Duration),
    #[error("no welcome from the controller within {0:?}")]
    NoWelcome(Duration),
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
    #[error("a {0} the controller did not ask for")]
    Unsolicited(&'static str),
    #[error("an endpoint list the controller cannot use: {0}")]
    BadEndpoints(String),
}

fn up_name(m: &AgentToController) -> &'static str {
    match m {
        AgentToController::Hello(_) => "hello",
        AgentToController::StateReport(_) => "state report",
        AgentToController::CommandResponse(_) => "command response",
        AgentToController::FragmentInventory(_) => "fragment inventory",
        AgentToController::Endpoints(_) => "endpoint list",
        AgentToController::FragmentDelta(_) => "fragment delta",
    }
}

fn down_name(m: &ControllerToAgent) -> &'static str {
    match m {
        ControllerToAgent::Welcome(_) => "welcome",
        ControllerToAgent::CommandRequest(_) => "command request",
        ControllerToAgent::Refused { .. } => "refusal",
    }
}

/// What the controller's link task must do for one connection, in order.
#[derive(Debug, PartialEq)]
pub enum ControllerEffect<R> {
    /// The hello was accepted: register the connection (it may replace an older one of the
    /// node) before the welcome that follows goes out.
    Established(Hello),
    /// Send this message.
    Send(ControllerToAgent),
    /// A state report to record.
    Report(StateReport),
    /// The answer to the inventory request the session made itself after the hello.
    Inventory(CommandResponse),
    /// A part of a device's fragment inventory (asked for after the first state report, so the
    /// report that claims the node's devices is recorded before any inventory of them).
    FragmentPart(InventoryPart),
    /// A change to a device's fragment inventory (only once the session asked for deltas).
    FragmentDelta(DeltaMessage),
    /// The node's other metrics endpoints (checked: at most [`MAX_ENDPOINTS`], each valid),
    /// replacing the ones it sent before on this connection.
    Endpoints(Vec<ScrapeEndpoint>),
    /// The answer to a request made with [`ControllerSession::request`], for its reply token.
    Reply {
        reply: R,
        kind: CommandKind,
        response: CommandResponse,
    },
    /// End the connection with this application close code; the session is over.
    Close { code: u32, error: ProtocolError },
}

#[derive(Debug)]
enum ControllerState {
    AwaitingHello {
        deadline: Instant,
    },
    Established {
        version: u16,
        capabilities: BTreeSet<String>,
        /// The session asked for fragment inventories (after the first report).
        fragments_asked: bool,
        /// … and for deltas between them (the agent announced [`CAP_FRAGMENT_DELTAS`]).
        deltas_asked: bool,
        /// The session asked for the node's endpoint list (after the first report).
        endpoints_asked: bool,
    },
    Closed,
}

/// Who waits for the answer to a request.
#[derive(Debug)]
enum Waiter<R> {
    /// The session's own inventory request.
    Inventory,
    /// The session's own request for fragment inventories (its `Done` needs nothing).
    Fragments,
    /// The session's own request for the endpoint list (its `Done` needs nothing).
    Endpoints,
    Caller(R),
}

/// The controller's end of one connection, for the node named by its certificate. `R` is the
/// reply token of a request (what the link task answers the caller with).
#[derive(Debug)]
pub struct ControllerSession<R> {
    node: String,
    controller_version: String,
    state: ControllerState,
    hello_deadline: Duration,
    decoder: FrameDecoder,
    next_command_id: u64,
    outstanding: BTreeMap<u64, (CommandKind, Waiter<R>)>,
    effects: VecDeque<ControllerEffect<R>>,
}

impl<R> ControllerSession<R> {
    /// A session that must see a hello within `hello_deadline` of `now`.
    pub fn new(
        node: impl Into<String>,
        controller_version: impl Into<String>,
        hello_deadline: Duration,
        now: Instant,
    ) -> Self {
        ControllerSession {
            node: node.into(),
            controller_version: controller_version.into(),
            state: ControllerState::AwaitingHello {
                deadline: now + hello_deadline,
            },
            hello_deadline,
            decoder: FrameDecoder::new(MAX_FRAME),
            next_command_id: 1,
            outstanding: BTreeMap::new(),
            effects: VecDeque::new(),
        }
    }

    /// The negotiated version, once established.
    pub fn version(&self) -> Option<u16> {
        match self.state {
            ControllerState::Established { version, .. } => Some(version),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, ControllerState::Closed)
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// The next effect to carry out.
    pub fn poll_effect(&mut self) -> Option<ControllerEffect<R>> {
        self.effects.pop_front()
    }

    /// When [`ControllerSession::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ControllerState::AwaitingHello { deadline } => Some(deadline),
            _ => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let ControllerState::AwaitingHello { deadline } = self.state
            && now >= deadline
        {
            self.close(ProtocolError::NoHello(self.hello_deadline));
        }
    }

    /// Bytes read from the stream.
    pub fn handle_data(&mut self, bytes: &[u8]) {
        if self.is_closed() {
            return;
        }
        self.decoder.push(bytes);
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    self.handle_frame(&frame);
                    if self.is_closed() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => return self.close(e.into()),
            }
        }
    }

    /// The agent ended its stream: an error if it did so inside a frame.
    pub fn handle_end(&mut self) -> Result<(), ProtocolError> {
        self.decoder.finish().map_err(ProtocolError::from)
    }

    /// One frame's payload.
    pub fn handle_frame(&mut self, payload: &[u8]) {
        let result = protocol::decode(payload)
            .map_err(ProtocolError::from)
            .and_then(|m| self.on_message(m));
        if let Err(e) = result {
            // The agent learns why before the connection closes.
            self.effects
                .push_back(ControllerEffect::Send(ControllerToAgent::Refused {
                    reason: e.to_string(),
                }));
            self.close(e);
        }
    }

    fn close(&mut self, error: ProtocolError) {
        if self.is_closed() {
            return;
        }
        self.state = ControllerState::Closed;
        self.effects.push_back(ControllerEffect::Close {
            code: close::PROTOCOL_ERROR,
            error,
        });
    }

    fn on_message(&mut self, message: AgentToController) -> Result<(), ProtocolError> {
        match (&self.state, message) {
            (ControllerState::AwaitingHello { .. }, AgentToController::Hello(hello)) => {
                let version = hello.max_version.min(MAX_PROTOCOL_VERSION);
                if hello.min_version > hello.max_version
                    || version < hello.min_version.max(MIN_PROTOCOL_VERSION)
                {
                    return Err(ProtocolError::NoCommonVersion {
                        agent_min: hello.min_version,
                        agent_max: hello.max_version,
                    });
                }
                let inventory = hello.capabilities.iter().any(|c| c == CAP_INVENTORY);
                self.state = ControllerState::Established {
                    version,
                    capabilities: hello.capabilities.iter().cloned().collect(),
                    fragments_asked: false,
                    deltas_asked: false,
                    endpoints_asked: false,
                };
                self.effects.push_back(ControllerEffect::Established(hello));
                self.effects
                    .push_back(ControllerEffect::Send(ControllerToAgent::Welcome(
                        Welcome {
                            version,
                            node: self.node.clone(),
                            controller_version: self.controller_version.clone(),
                        },
                    )));
                if inventory {
                    let request = self.new_request(CommandKind::Inventory, Waiter::Inventory);
                    self.effects.push_back(ControllerEffect::Send(request));
                }
                Ok(())
            }
            (ControllerState::AwaitingHello { .. }, other) => {
                Err(ProtocolError::ExpectedHello(up_name(&other)))
            }
            (ControllerState::Established { .. }, AgentToController::Hello(_)) => {
                Err(ProtocolError::DuplicateHello)
            }
            (ControllerState::Established { .. }, AgentToController::StateReport(r)) => {
                self.effects.push_back(ControllerEffect::Report(r));
                if let ControllerState::Established {
                    capabilities,
                    fragments_asked,
                    ..
                } = &mut self.state
                    && !*fragments_asked
                    && capabilities.contains(CAP_FRAGMENTS)
                {
                    *fragments_asked = true;
                    let request =
                        self.new_request(CommandKind::FragmentInventories, Waiter::Fragments);
                    self.effects.push_back(ControllerEffect::Send(request));
                }
                if let ControllerState::Established {
                    capabilities,
                    fragments_asked: true,
                    deltas_asked,
                    ..
                } = &mut self.state
                    && !*deltas_asked
                    && capabilities.contains(CAP_FRAGMENT_DELTAS)
                {
                    *deltas_asked = true;
                    let request = self.new_request(CommandKind::FragmentDeltas, Waiter::Fragments);
                    self.effects.push_back(ControllerEffect::Send(request));
                }
                if let ControllerState::Established {
                    capabilities,
                    endpoints_asked,
                    ..
                } = &mut self.state
                    && !*endpoints_asked
                    && capabilities.contains(CAP_ENDPOINTS)
                {
                    *endpoints_asked = true;
                    let request = self.new_request(CommandKind::Endpoints, Waiter::Endpoints);
                    self.effects.push_back(ControllerEffect::Send(request));
                }
                Ok(())
            }
            (
                ControllerState::Established {
                    endpoints_asked, ..
                },
                AgentToController::Endpoints(list),
            ) => {
                if !*endpoints_asked {
                    return Err(ProtocolError::Unsolicited("endpoint list"));
                }
                if list.len() > MAX_ENDPOINTS {
                    return Err(ProtocolError::BadEndpoints(format!(
                        "{} endpoints, at most {MAX_ENDPOINTS}",
                        list.len()
                    )));
                }
                if let Some((e, problem)) = list.iter().find_map(|e| Some((e, e.problem()?))) {
                    return Err(ProtocolError::BadEndpoints(format!(
                        "{}:{} {:?}: {problem}",
                        e.job.escape_debug(),
                        e.port,
                        e.path
                    )));
                }
                self.effects.push_back(ControllerEffect::Endpoints(list));
                Ok(())
            }
            (
                ControllerState::Established {
                    fragments_asked, ..
                },
                AgentToController::FragmentInventory(part),
            ) => {
                if !*fragments_asked {
                    return Err(ProtocolError::Unsolicited("fragment inventory"));
                }
                self.effects.push_back(ControllerEffect::FragmentPart(part));
                Ok(())
            }
            (
                ControllerState::Established { deltas_asked, .. },
                AgentToController::FragmentDelta(d),
            ) => {
                if !*deltas_asked {
                    return Err(ProtocolError::Unsolicited("fragment delta"));
                }
                self.effects.push_back(ControllerEffect::FragmentDelta(d));
                Ok(())
            }
            (ControllerState::Established { .. }, AgentToController::CommandResponse(r)) => {
                let (kind, waiter) = self
                    .outstanding
                    .remove(&r.id)
                    .ok_or(ProtocolError::UnknownCommandId(r.id))?;
                self.effects.push_back(match waiter {
                    Waiter::Inventory => ControllerEffect::Inventory(r),
                    Waiter::Fragments | Waiter::Endpoints => return Ok(()),
                    Waiter::Caller(reply) => ControllerEffect::Reply {
                        reply,
                        kind,
                        response: r,
                    },
                });
                Ok(())
            }
            (ControllerState::Closed, _) => Ok(()),
        }
    }

    fn new_request(&mut self, kind: CommandKind, waiter: Waiter<R>) -> ControllerToAgent {
        let id = self.next_command_id;
        self.next_command_id += 1;
        self.outstanding.insert(id, (kind.clone(), waiter));
        ControllerToAgent::CommandRequest(CommandRequest { id, kind })
    }

    /// Asks the agent again for every device's whole inventory (a delta did not apply to what
    /// this side holds); nothing when the session never asked for inventories.
    pub fn resend_fragments(&mut self) {
        if let ControllerState::Established {
            fragments_asked: true,
            ..
        } = &self.state
        {
            let request = self.new_request(CommandKind::FragmentInventories, Waiter::Fragments);
            self.effects.push_back(ControllerEffect::Send(request));
        }
    }

    /// Queues a request to send with a fresh id, kept outstanding with `reply` until its
    /// answer comes; refused (with the token back) when the agent cannot take it.
    pub fn request(&mut self, kind: CommandKind, reply: R) -> Result<(), (R, ProtocolError)> {
        let ControllerState::Established { capabilities, .. } = &self.state else {
            return Err((reply, ProtocolError::NotEstablished));
        };
        if !capabilities.contains(kind.capability()) {
            return Err((reply, ProtocolError::Unsupported(kind.capability())));
        }
        if self.outstanding.len() >= MAX_OUTSTANDING {
            return Err((reply, ProtocolError::TooManyOutstanding));
        }
        let request = self.new_request(kind, Waiter::Caller(reply));
        self.effects.push_back(ControllerEffect::Send(request));
        Ok(())
    }

    /// The reply tokens still waiting, taken when the connection is over (their callers learn
    /// that it ended).
    pub fn take_waiting(&mut self) -> Vec<R> {
        std::mem::take(&mut self.outstanding)
            .into_values()
            .filter_map(|(_, w)| match w {
                Waiter::Caller(r) => Some(r),
                Waiter::Inventory | Waiter::Fragments | Waiter::Endpoints => None,
            })
            .collect()
    }
}

/// Deadlines and periods of the agent's end.
#[derive(Debug, Clone, Copy)]
pub struct AgentTimers {
    /// A state report this often once welcomed (and one right at the welcome).
    pub report_interval: Duration,
    /// The controller must welcome the agent this soon after its hello.
    pub welcome_deadline: Duration,
}

/// What the agent's link task must do for one connection, in order.
#[derive(Debug, PartialEq)]
pub enum AgentEffect {
    /// Send the hello or a state report.
    Send(AgentToController),
    /// Send this answer (the link fits it under the frame limit).
    Answer(CommandResponse),
    /// The controller welcomed the agent: the session is up.
    Welcomed(Welcome),
    /// Collect the node's state beside the loop and hand it to
    /// [`AgentSession::report_collected`] (`None` if it could not be collected).
    CollectReport,
    /// Describe the node beside the loop; hand the outcome to [`AgentSession::command_done`].
    CollectInventory { id: u64 },
    /// The controller takes fragment inventories from now on: send each device's latest, then
    /// each new one ([`AgentToController::FragmentInventory`]).
    SendFragments,
    /// The controller takes deltas between a device's inventories from now on
    /// ([`AgentToController::FragmentDelta`]).
    FragmentDeltasTaken,
    /// Find the node's other metrics endpoints beside the loop and hand them to
    /// [`AgentSession::endpoints_collected`] (asked for with each report once the controller
    /// takes them).
    CollectEndpoints,
    /// Run a declared operation beside the loop; hand the outcome to
    /// [`AgentSession::command_done`].
    RunOperation { id: u64, operation: Operation },
    /// End the connection with this application close code; the session is over.
    Close { code: u32, error: ProtocolError },
}

/// The agent's end of one connection.
#[derive(Debug)]
pub struct AgentSession {
    timers: AgentTimers,
    welcomed: bool,
    welcome_deadline: Instant,
    next_report: Option<Instant>,
    next_report_seq: u64,
    /// A collection is running beside the loop; the timer does not start a second one.
    collecting: bool,
    /// `ReportState` commands answered once the report in collection is sent.
    after_report: Vec<u64>,
    /// The controller takes endpoint lists ([`CommandKind::Endpoints`]).
    endpoints_asked: bool,
    /// An endpoint collection is running beside the loop.
    endpoints_collecting: bool,
    /// The list last sent on this connection; an unchanged list is not sent again.
    endpoints_sent: Option<Vec<ScrapeEndpoint>>,
    decoder: FrameDecoder,
    effects: VecDeque<AgentEffect>,
    closed: bool,
}

impl AgentSession {
    /// A new connection's session: the hello is the first effect.
    pub fn new(
        agent_version: &str,
        capabilities: &[&str],
        timers: AgentTimers,
        now: Instant,
    ) -> AgentSession {
        let hello = Self::hello(agent_version, capabilities);
        AgentSession {
            timers,
            welcomed: false,
            welcome_deadline: now + timers.welcome_deadline,
            next_report: None,
            next_report_seq: 0,
            collecting: false,
            after_report: Vec::new(),
            endpoints_asked: false,
            endpoints_collecting: false,
            endpoints_sent: None,
            decoder: FrameDecoder::new(MAX_FRAME),
            effects: VecDeque::from([AgentEffect::Send(hello)]),
            closed: false,
        }
    }

    /// The hello this end sends first.
    pub fn hello(agent_version: &str, capabilities: &[&str]) -> AgentToController {
        AgentToController::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: MAX_PROTOCOL_VERSION,
            agent_version: agent_version.to_string(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn poll_effect(&mut self) -> Option<AgentEffect> {
        self.effects.pop_front()
    }

    /// When [`AgentSession::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            None
        } else if !self.welcomed {
            Some(self.welcome_deadline)
        } else {
            self.next_report
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if !self.welcomed {
            if now >= self.welcome_deadline {
                self.close(ProtocolError::NoWelcome(self.timers.welcome_deadline));
            }
            return;
        }
        if self.next_report.is_some_and(|due| now >= due) {
            // The next period counts from now: a late tick is not made up for with a burst.
            self.next_report = Some(now + self.timers.report_interval);
            self.collect_report();
        }
    }

    /// Bytes read from the stream.
    pub fn handle_data(&mut self, bytes: &[u8], now: Instant) {
        if self.closed {
            return;
        }
        self.decoder.push(bytes);
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    self.handle_frame(&frame, now);
                    if self.closed {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => return self.close(e.into()),
            }
        }
    }

    /// One frame's payload.
    pub fn handle_frame(&mut self, payload: &[u8], now: Instant) {
        let result = protocol::decode(payload)
            .map_err(ProtocolError::from)
            .and_then(|m| self.on_message(m, now));
        if let Err(e) = result {
            self.close(e);
        }
    }

    fn close(&mut self, error: ProtocolError) {
        if !self.closed {
            self.closed = true;
            self.effects.push_back(AgentEffect::Close {
                code: close::PROTOCOL_ERROR,
                error,
            });
        }
    }

    fn on_message(
        &mut self,
        message: ControllerToAgent,
        now: Instant,
    ) -> Result<(), ProtocolError> {
        match (self.welcomed, message) {
            (_, ControllerToAgent::Refused { reason }) => Err(ProtocolError::Refused(reason)),
            (false, ControllerToAgent::Welcome(w)) => {
                if !(MIN_PROTOCOL_VERSION..=MAX_PROTOCOL_VERSION).contains(&w.version) {
                    return Err(ProtocolError::BadVersion(w.version));
                }
                self.welcomed = true;
                self.effects.push_back(AgentEffect::Welcomed(w));
                // A report at once, so the controller knows the node's state from the start.
                self.next_report = Some(now + self.timers.report_interval);
                self.collect_report();
                Ok(())
            }
            (false, other) => Err(ProtocolError::ExpectedWelcome(down_name(&other))),
            (true, ControllerToAgent::Welcome(_)) => Err(ProtocolError::DuplicateWelcome),
            (true, ControllerToAgent::CommandRequest(r)) => {
                match r.kind {
                    CommandKind::Ping => {
                        self.effects.push_back(AgentEffect::Answer(CommandResponse {
                            id: r.id,
                            outcome: CommandOutcome::Done,
                        }))
                    }
                    CommandKind::ReportState => {
                        self.after_report.push(r.id);
                        self.collect_report();
                    }
                    CommandKind::Inventory => self
                        .effects
                        .push_back(AgentEffect::CollectInventory { id: r.id }),
                    CommandKind::FragmentInventories => {
                        self.effects.push_back(AgentEffect::Answer(CommandResponse {
                            id: r.id,
                            outcome: CommandOutcome::Done,
                        }));
                        self.effects.push_back(AgentEffect::SendFragments);
                    }
                    CommandKind::FragmentDeltas => {
                        self.effects.push_back(AgentEffect::Answer(CommandResponse {
                            id: r.id,
                            outcome: CommandOutcome::Done,
                        }));
                        self.effects.push_back(AgentEffect::FragmentDeltasTaken);
                    }
                    CommandKind::Endpoints => {
                        self.effects.push_back(AgentEffect::Answer(CommandResponse {
                            id: r.id,
                            outcome: CommandOutcome::Done,
                        }));
                        self.endpoints_asked = true;
                        self.collect_endpoints();
                    }
                    CommandKind::Operation(operation) => {
                        self.effects.push_back(AgentEffect::RunOperation {
                            id: r.id,
                            operation,
                        })
                    }
                }
                Ok(())
            }
        }
    }

    fn collect_report(&mut self) {
        if !self.collecting {
            self.collecting = true;
            self.effects.push_back(AgentEffect::CollectReport);
        }
        if self.endpoints_asked {
            self.collect_endpoints();
        }
    }

    fn collect_endpoints(&mut self) {
        if !self.endpoints_collecting {
            self.endpoints_collecting = true;
            self.effects.push_back(AgentEffect::CollectEndpoints);
        }
    }

    /// The endpoints found for [`AgentEffect::CollectEndpoints`] (`None`: could not be looked
    /// at; nothing is sent): sent when they differ from the list last sent, sorted, without
    /// duplicates, at most [`MAX_ENDPOINTS`] of the valid ones.
    pub fn endpoints_collected(&mut self, endpoints: Option<Vec<ScrapeEndpoint>>) {
        self.endpoints_collecting = false;
        let Some(mut list) = endpoints else {
            return;
        };
        if self.closed || !self.endpoints_asked {
            return;
        }
        list.retain(|e| e.problem().is_none());
        list.sort();
        list.dedup();
        list.truncate(MAX_ENDPOINTS);
        if self.endpoints_sent.as_ref() != Some(&list) {
            self.endpoints_sent = Some(list.clone());
            self.effects
                .push_back(AgentEffect::Send(AgentToController::Endpoints(list)));
        }
    }

    /// Whether a collection asked for with [`AgentEffect::CollectReport`] is still running.
    pub fn is_collecting(&self) -> bool {
        self.collecting
    }

    /// The state collected for [`AgentEffect::CollectReport`]: sent with the next sequence
    /// number, then the `ReportState` commands waiting for it are answered.
    pub fn report_collected(&mut self, report: Option<StateReport>) {
        self.collecting = false;
        if self.closed {
            return;
        }
        if let Some(mut report) = report {
            report.seq = self.next_report_seq;
            self.next_report_seq += 1;
            self.effects
                .push_back(AgentEffect::Send(AgentToController::StateReport(report)));
        }
        for id in std::mem::take(&mut self.after_report) {
            self.effects.push_back(AgentEffect::Answer(CommandResponse {
                id,
                outcome: CommandOutcome::Done,
            }));
        }
    }

    /// The outcome of work done beside the loop for command `id`.
    pub fn command_done(&mut self, id: u64, outcome: CommandOutcome) {
        if !self.closed {
            self.effects
                .push_back(AgentEffect::Answer(CommandResponse { id, outcome }));
        }
    }
}

/// Jittered exponential backoff between the agent's connection attempts: attempt n waits a
/// uniformly random time in `[d/2, d]` with `d = min(cap, base * 2^n)` ("equal jitter"), so
/// agents restarted together spread out, yet never wait longer than the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The next delay, given a uniform random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX));
        let d = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        d / 2 + d.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }

    /// A session was established: the next failure starts from the base again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The controller closed the connection with this application code: after being
    /// replaced by a newer connection of the node, or revoked, waiting long is right (another
    /// instance holds the link, or the node is not welcome).
    pub fn on_closed_by_controller(&mut self, code: u64) {
        if code == u64::from(close::REPLACED) || code == u64::from(close::REVOKED) {
            self.attempt = 31;
        }
    }
}

/// Which controller an agent that lists several links to next. The preferred one comes first
/// when there is one; the others follow in an order rotated by a random offset drawn once per
/// agent, so the agents of a lost controller spread over the rest instead of all trying the
/// same one. A connection that fails, or a link that ends, moves on to the next; once every
/// controller has failed in a row the agent backs off ([`Backoff`]) before the next round, so a
/// single controller behaves as before. A controller that is draining counts as failed.
#[derive(Debug, Clone)]
pub struct Failover {
    order: Vec<usize>,
    pos: usize,
    failed_in_a_row: usize,
}

/// What to do after [`Failover::failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try the next controller now (after at most [`FAILOVER_SPREAD`], drawn at random).
    Next,
    /// Every controller failed in a row: wait the backoff delay first.
    Backoff,
}

/// The most a failover waits before trying the next controller: thousands of agents of a lost
/// controller arrive at the others spread over this, not in one burst.
pub const FAILOVER_SPREAD: Duration = Duration::from_secs(1);

impl Failover {
    /// `count` controllers (at least one), `preferred` among them, `unit` a uniform random
    /// number in `[0, 1)` drawn once for this agent.
    pub fn new(count: usize, preferred: Option<usize>, unit: f64) -> Failover {
        let count = count.max(1);
        let preferred = preferred.filter(|p| *p < count);
        let rest: Vec<usize> = (0..count).filter(|i| Some(*i) != preferred).collect();
        let offset = if rest.is_empty() {
            0
        } else {
            ((unit.clamp(0.0, 1.0) * rest.len() as f64) as usize).min(rest.len() - 1)
        };
        let mut order: Vec<usize> = preferred.into_iter().collect();
        order.extend(rest[offset..].iter().chain(&rest[..offset]));
        Failover {
            order,
            pos: 0,
            failed_in_a_row: 0,
        }
    }

    /// The index of the controller to link to now.
    pub fn current(&self) -> usize {
        self.order[self.pos]
    }

    /// A link was established (the controller welcomed the agent).
    pub fn established(&mut self) {
        self.failed_in_a_row = 0;
    }

    /// The connection to the current controller failed, or its link ended: moves on.
    pub fn failed(&mut self) -> Retry {
        self.pos = (self.pos + 1) % self.order.len();
        self.failed_in_a_row += 1;
        if self.failed_in_a_row >= self.order.len() {
            self.failed_in_a_row = 0;
            Retry::Backoff
        } else {
            Retry::Next
        }
    }
}

/// The controller's rule for a silent agent: its connection is over once no packet has arrived
/// for `silence` (the link's idle timeout), whatever QUIC's own idle timer says. That timer is
/// at least three probe timeouts, and a controller sends almost nothing an agent must
/// acknowledge, so a connection's RTT estimate can stay what a busy start made it (seconds, with
/// thousands of agents connecting at once) for its whole life; the simulator saw cut agents
/// detected after 8 s and some never. Fed the connection's count of received datagrams at each
/// look (the link looks at every connection a few times per second).
#[derive(Debug, Clone)]
pub struct Liveness {
    silence: Duration,
    received: u64,
    since: Instant,
}

impl Liveness {
    pub fn new(silence: Duration, received: u64, now: Instant) -> Liveness {
        Liveness {
            silence,
            received,
            since: now,
        }
    }

    /// `received`: datagrams received on the connection so far. `true` once none has arrived
    /// for the silence limit.
    pub fn is_silent(&mut self, received: u64, now: Instant) -> bool {
        if received != self.received {
            self.received = received;
            self.since = now;
            return false;
        }
        now.saturating_duration_since(self.since) >= self.silence
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::encode_frame;
    use crate::protocol::{CAP_OPERATIONS, CAP_STATE_REPORT, encode};

    const TIMERS: AgentTimers = AgentTimers {
        report_interval: Duration::from_secs(5),
        welcome_deadline: Duration::from_secs(10),
    };
    const HELLO: Duration = Duration::from_secs(5);

    fn frame<T: serde::Serialize>(m: &T) -> Vec<u8> {
        encode_frame(&encode(m).unwrap(), MAX_FRAME).unwrap()
    }

    fn hello(min: u16, max: u16, caps: &[&str]) -> AgentToController {
        AgentToController::Hello(Hello {
            min_version: min,
            max_version: max,
            agent_version: "t".into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
        })
    }

    fn one<T: std::fmt::Debug>(mut v: Vec<T>) -> T {
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
    }

    fn drain<R>(c: &mut ControllerSession<R>) -> Vec<ControllerEffect<R>> {
        std::iter::from_fn(|| c.poll_effect()).collect()
    }

    fn drain_agent(a: &mut AgentSession) -> Vec<AgentEffect> {
        std::iter::from_fn(|| a.poll_effect()).collect()
    }

    /// A controller session established with an agent announcing `caps`.
    fn established(caps: &[&str]) -> ControllerSession<u32> {
        let mut c = ControllerSession::new("n", "c", HELLO, Instant::now());
        c.handle_data(&frame(&hello(1, 1, caps)));
        drain(&mut c);
        assert_eq!(c.version(), Some(1));
        c
    }

    /// What the controller sends, as the agent decodes it.
    fn sent_requests<R>(effects: &[ControllerEffect<R>]) -> Vec<CommandRequest> {
        effects
            .iter()
            .filter_map(|e| match e {
                ControllerEffect::Send(ControllerToAgent::CommandRequest(r)) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn full_exchange_between_both_ends() {
        let now = Instant::now();
        let mut agent = AgentSession::new("t", &[CAP_STATE_REPORT, "command:ping"], TIMERS, now);
        let mut controller: ControllerSession<&str> = ControllerSession::new("n1", "c", HELLO, now);
        let AgentEffect::Send(up) = one(drain_agent(&mut agent)) else {
            panic!("the hello comes first");
        };
        // Fed one byte at a time: frames are reassembled.
        for b in frame(&up) {
            controller.handle_data(&[b]);
        }
        let effects = drain(&mut controller);
        let [
            ControllerEffect::Established(h),
            ControllerEffect::Send(welcome),
        ] = &effects[..]
        else {
            panic!("established, then the welcome (no inventory: not announced)");
        };
        assert_eq!(h.agent_version, "t");
        assert_eq!(controller.version(), Some(1));
        assert_eq!(agent.poll_timeout(), Some(now + TIMERS.welcome_deadline));
        agent.handle_data(&frame(&welcome), now);
        let effects = drain_agent(&mut agent);
        assert!(
            matches!(&effects[..], [AgentEffect::Welcomed(w), AgentEffect::CollectReport] if w.node == "n1")
        );
        assert_eq!(agent.poll_timeout(), Some(now + TIMERS.report_interval));

        for seq in 0..3 {
            if seq > 0 {
                agent.handle_timeout(now + TIMERS.report_interval * seq);
                assert_eq!(drain_agent(&mut agent), vec![AgentEffect::CollectReport]);
            }
            agent.report_collected(Some(StateReport::default()));
            let AgentEffect::Send(report) = one(drain_agent(&mut agent)) else {
                panic!("the report is sent");
            };
            controller.handle_data(&frame(&report));
            let ControllerEffect::Report(r) = one(drain(&mut controller)) else {
                panic!("not a report");
            };
            assert_eq!(r.seq, u64::from(seq));
        }

        controller.request(CommandKind::Ping, "caller").unwrap();
        assert_eq!(controller.outstanding(), 1);
        let ControllerEffect::Send(req) = one(drain(&mut controller)) else {
            panic!("the request is sent");
        };
        agent.handle_data(&frame(&req), now);
        let AgentEffect::Answer(resp) = one(drain_agent(&mut agent)) else {
            panic!("a ping is answered at once");
        };
        assert_eq!(resp.outcome, CommandOutcome::Done);
        let answer = AgentToController::CommandResponse(resp.clone());
        controller.handle_data(&frame(&answer));
        assert_eq!(
            drain(&mut controller),
            vec![ControllerEffect::Reply {
                reply: "caller",
                kind: CommandKind::Ping,
                response: resp.clone()
            }]
        );
        assert_eq!(controller.outstanding(), 0);
        // The same id again is not outstanding any more: refused, then closed.
        controller.handle_data(&frame(&answer));
        let effects = drain(&mut controller);
        assert!(matches!(
            &effects[..],
            [
                ControllerEffect::Send(ControllerToAgent::Refused { .. }),
                ControllerEffect::Close { code: close::PROTOCOL_ERROR, error: ProtocolError::UnknownCommandId(id) }
            ] if *id == resp.id
        ));
        assert!(controller.is_closed());
        // Nothing more comes out of a closed session.
        controller.handle_data(&frame(&hello(1, 1, &[])));
        assert!(drain(&mut controller).is_empty());
    }

    #[test]
    fn controller_requires_hello_first_once_and_in_time() {
        let now = Instant::now();
        let mut c: ControllerSession<()> = ControllerSession::new("n", "c", HELLO, now);
        assert_eq!(
            c.request(CommandKind::Ping, ()),
            Err(((), ProtocolError::NotEstablished))
        );
        c.handle_data(&frame(&AgentToController::StateReport(
            StateReport::default(),
        )));
        assert!(matches!(
            drain(&mut c).last(),
            Some(ControllerEffect::Close {
                error: ProtocolError::ExpectedHello("state report"),
                ..
            })
        ));

        let mut c = established(&[]);
        c.handle_data(&frame(&hello(1, 1, &[])));
        assert!(matches!(
            drain(&mut c).last(),
            Some(ControllerEffect::Close {
                error: ProtocolError::DuplicateHello,
                ..
            })
        ));

        // The hello deadline: nothing before it, a close at it, and no timer after.
        let mut c: ControllerSession<()> = ControllerSession::new("n", "c", HELLO, now);
        assert_eq!(c.poll_timeout(), Some(now + HELLO));
        c.handle_timeout(now + HELLO - Duration::from_millis(1));
        assert!(drain(&mut c).is_empty());
        c.handle_timeout(now + HELLO);
        assert_eq!(
            drain(&mut c),
            vec![ControllerEffect::Close {
                code: close::PROTOCOL_ERROR,
                error: ProtocolError::NoHello(HELLO)
            }]
        );
        assert_eq!(c.poll_timeout(), None);
        // Once established, no deadline runs.
        assert_eq!(established(&[]).poll_timeout(), None);
    }

    #[test]
    fn undecodable_and_oversized_input_closes() {
        let mut c: ControllerSession<()> = ControllerSession::new("n", "c", HELLO, Instant::now());
        c.handle_data(&[0, 0, 0, 2, 0xff, 0x00]);
        assert!(matches!(
            drain(&mut c).last(),
            Some(ControllerEffect::Close {
                error: ProtocolError::Decode(_),
                ..
            })
        ));
        let mut c: ControllerSession<()> = ControllerSession::new("n", "c", HELLO, Instant::now());
        c.handle_data(&u32::MAX.to_be_bytes());
        assert!(matches!(
            drain(&mut c).last(),
            Some(ControllerEffect::Close {
                error: ProtocolError::Frame(FrameError::TooLarge { .. }),
                ..
            })
        ));
        // A stream ended inside a frame.
        let mut c: ControllerSession<()> = ControllerSession::new("n", "c", HELLO, Instant::now());
        c.handle_data(&[0, 0, 0, 9, 1]);
        assert!(matches!(
            c.handle_end(),
            Err(ProtocolError::Frame(FrameError::Truncated { buffered: 5 }))
        ));
    }

    #[test]
    fn version_negotiation() {
        // A newer agent that still speaks 1 gets 1.
        let mut c: ControllerSession<()> = ControllerSession::new("n", "c", HELLO, Instant::now());
        c.handle_data(&frame(&hello(1, 5, &[])));
        assert_eq!(c.version(), Some(1));
        for (min, max) in [(2, 3), (0, 0), (3, 1)] {
            let mut c: ControllerSession<()> =
                ControllerSession::new("n", "c", HELLO, Instant::now());
            c.handle_data(&frame(&hello(min, max, &[])));
            assert!(
                matches!(
                    drain(&mut c).last(),
                    Some(ControllerEffect::Close {
                        error: ProtocolError::NoCommonVersion { .. },
                        ..
                    })
                ),
                "{min}..{max}"
            );
        }
        let now = Instant::now();
        let mut a = AgentSession::new("t", &[], TIMERS, now);
        a.handle_data(
            &frame(&ControllerToAgent::Welcome(Welcome {
                version: 9,
                node: "n".into(),
                controller_version: "c".into(),
            })),
            now,
        );
        assert!(matches!(
            drain_agent(&mut a).last(),
            Some(AgentEffect::Close {
                error: ProtocolError::BadVersion(9),
                ..
            })
        ));
    }

    #[test]
    fn commands_need_the_capability_and_room() {
        let mut c = established(&["command:ping"]);
        assert!(c.request(CommandKind::Ping, 0).is_ok());
        assert_eq!(
            c.request(CommandKind::ReportState, 1),
            Err((1, ProtocolError::Unsupported("command:report-state")))
        );
        for i in 1..MAX_OUTSTANDING {
            c.request(CommandKind::Ping, i as u32).unwrap();
        }
        assert_eq!(
            c.request(CommandKind::Ping, 9),
            Err((9, ProtocolError::TooManyOutstanding))
        );
        // When the connection ends, every waiting caller's token comes back.
        let mut waiting = c.take_waiting();
        waiting.sort();
        assert_eq!(waiting, (0..MAX_OUTSTANDING as u32).collect::<Vec<_>>());
        assert_eq!(c.outstanding(), 0);
    }

    #[test]
    fn fragment_deltas_are_asked_for_with_the_inventories_when_announced() {
        use crate::protocol::{CAP_FRAGMENT_DELTAS, CAP_FRAGMENTS, DeltaMessage};
        let delta = DeltaMessage {
            device_id: 3,
            base_generation: 1,
            generation: 2,
            data: vec![0],
        };
        // Without the capability (an older agent): inventories only, and a delta is
        // unsolicited.
        let mut c = established(&[CAP_STATE_REPORT, CAP_FRAGMENTS]);
        c.handle_data(&frame(&AgentToController::StateReport(Default::default())));
        let req = one(sent_requests(&drain(&mut c)));
        assert_eq!(req.kind, CommandKind::FragmentInventories);
        c.handle_data(&frame(&AgentToController::FragmentDelta(delta.clone())));
        assert!(c.is_closed());

        let mut c = established(&[CAP_STATE_REPORT, CAP_FRAGMENTS, CAP_FRAGMENT_DELTAS]);
        c.handle_data(&frame(&AgentToController::FragmentDelta(delta.clone())));
        assert!(c.is_closed(), "a delta before the request is unsolicited");
        let mut c = established(&[CAP_STATE_REPORT, CAP_FRAGMENTS, CAP_FRAGMENT_DELTAS]);
        c.handle_data(&frame(&AgentToController::StateReport(Default::default())));
        let kinds: Vec<CommandKind> = sent_requests(&drain(&mut c))
            .into_iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                CommandKind::FragmentInventories,
                CommandKind::FragmentDeltas
            ]
        );
        c.handle_data(&frame(&AgentToController::StateReport(Default::default())));
        assert!(sent_requests(&drain(&mut c)).is_empty(), "asked once");
        c.handle_data(&frame(&AgentToController::FragmentDelta(delta.clone())));
        assert_eq!(drain(&mut c), vec![ControllerEffect::FragmentDelta(delta)]);
        // A delta that did not apply: the inventories are asked for again.
        c.resend_fragments();
        let req = one(sent_requests(&drain(&mut c)));
        assert_eq!(req.kind, CommandKind::FragmentInventories);
        assert!(!c.is_closed());

        // The agent answers and takes note.
        let now = Instant::now();
        let mut a = welcomed_agent(now);
        let req = CommandRequest {
            id: 9,
            kind: CommandKind::FragmentDeltas,
        };
        a.handle_data(&frame(&ControllerToAgent::CommandRequest(req)), now);
        assert_eq!(
            drain_agent(&mut a),
            vec![
                AgentEffect::Answer(CommandResponse {
                    id: 9,
                    outcome: CommandOutcome::Done,
                }),
                AgentEffect::FragmentDeltasTaken
            ]
        );
    }

    #[test]
    fn fragment_inventories_are_asked_for_after_the_first_report() {
        use crate::protocol::{CAP_FRAGMENTS, InventoryPart};
        let part = InventoryPart {
            device_id: 3,
            generation: 1,
            total_len: 1,
            offset: 0,
            data: vec![0],
        };
        // Before the first report, a part is unsolicited: the session ends.
        let mut c = established(&[CAP_STATE_REPORT, CAP_FRAGMENTS]);
        c.handle_data(&frame(&AgentToController::FragmentInventory(part.clone())));
        assert!(c.is_closed());
        // An agent that does not announce them is never asked.
        let mut c = established(&[CAP_STATE_REPORT]);
        c.handle_data(&frame(&AgentToController::StateReport(Default::default())));
        assert!(sent_requests(&drain(&mut c)).is_empty());

        let mut c = established(&[CAP_STATE_REPORT, CAP_FRAGMENTS]);
        c.handle_data(&frame(&AgentToController::StateReport(Default::default())));
        let effects = drain(&mut c);
        assert!(matches!(effects[0], ControllerEffect::Report(_)));
        let req = one(sent_requests(&effects));
        assert_eq!(req.kind, CommandKind::FragmentInventories);
        // Asked once per connection.
        c.handle_data(&frame(&AgentToController::StateReport(Default::default())));
        assert!(sent_requests(&drain(&mut c)).is_empty());
        // The agent answers and starts sending.
        let now = Instant::now();
        let mut a = welcomed_agent(now);
        a.handle_data(&frame(&ControllerToAgent::CommandRequest(req.clone())), now);
        let effects = drain_agent(&mut a);
        let done = CommandResponse {
            id: req.id,
            outcome: CommandOutcome::Done,
        };
        assert_eq!(
            effects,
            vec![
                AgentEffect::Answer(done.clone()),
                AgentEffect::SendFragments
            ]
        );
        c.handle_data(&frame(&AgentToController::CommandResponse(done)));
        assert!(drain(&mut c).is_empty());
        assert_eq!(c.outstanding(), 0);
        c.handle_data(&frame(&AgentToController::FragmentInventory(part.clone())));
        assert_eq!(drain(&mut c), vec![ControllerEffect::FragmentPart(part)]);
        assert!(!c.is_closed());
    }

    #[test]
    fn endpoint_lists_are_asked_for_checked_and_sent_only_when_they_change() {
        use crate::protocol::{CAP_ENDPOINTS, MAX_ENDPOINTS, ScrapeEndpoint};
        let ray = |port| ScrapeEndpoint {
            job: "ray".into(),
            port,
            path: "/metrics".into(),
        };
        // Unasked, a list ends the session.
        let mut c = established(&[CAP_STATE_REPORT, CAP_ENDPOINTS]);
        c.handle_data(&frame(&AgentToController::Endpoints(vec![ray(8080)])));
        assert!(c.is_closed());
        // Asked after the first report, once.
        let mut c = established(&[CAP_STATE_REPORT, CAP_ENDPOINTS]);
        c.handle_data(&frame(&AgentToController::StateReport(Default::default())));
        let req = one(sent_requests(&drain(&mut c)));
        assert_eq!(req.kind, CommandKind::Endpoints);
        c.handle_data(&frame(&AgentToController::StateReport(Default::default())));
        assert!(sent_requests(&drain(&mut c)).is_empty());

        // The agent answers, collects beside its loop, and sends the list once per change.
        let now = Instant::now();
        let mut a = welcomed_agent(now);
        a.handle_data(&frame(&ControllerToAgent::CommandRequest(req.clone())), now);
        let done = CommandResponse {
            id: req.id,
            outcome: CommandOutcome::Done,
        };
        assert_eq!(
            drain_agent(&mut a),
            vec![
                AgentEffect::Answer(done.clone()),
                AgentEffect::CollectEndpoints
            ]
        );
        let bad = ScrapeEndpoint {
            job: "Ray job".into(),
            ..ray(1)
        };
        a.endpoints_collected(Some(vec![ray(8080), bad.clone(), ray(8080)]));
        let sent = drain_agent(&mut a);
        assert_eq!(
            sent,
            vec![AgentEffect::Send(AgentToController::Endpoints(vec![ray(
                8080
            )]))]
        );
        // The next report's collection looks again; the same list is not sent twice.
        a.handle_timeout(now + TIMERS.report_interval);
        assert_eq!(
            drain_agent(&mut a),
            vec![AgentEffect::CollectReport, AgentEffect::CollectEndpoints]
        );
        a.endpoints_collected(Some(vec![ray(8080)]));
        assert!(drain_agent(&mut a).is_empty());
        // Ray stopped: the empty list goes out; a failed look sends nothing.
        a.handle_timeout(now + TIMERS.report_interval * 2);
        drain_agent(&mut a);
        a.endpoints_collected(None);
        assert!(drain_agent(&mut a).is_empty());
        a.report_collected(None);
        a.handle_timeout(now + TIMERS.report_interval * 3);
        drain_agent(&mut a);
        a.endpoints_collected(Some(vec![]));
        assert_eq!(
            drain_agent(&mut a),
            vec![AgentEffect::Send(AgentToController::Endpoints(vec![]))]
        );

        // The controller takes a valid list and refuses a bad or oversized one.
        c.handle_data(&frame(&AgentToController::CommandResponse(done)));
        let AgentEffect::Send(list) = &sent[0] else {
            unreachable!()
        };
        c.handle_data(&frame(list));
        assert_eq!(
            drain(&mut c),
            vec![ControllerEffect::Endpoints(vec![ray(8080)])]
        );
        c.handle_data(&frame(&AgentToController::Endpoints(vec![bad])));
        let effects = drain(&mut c);
        assert!(
            matches!(&effects[..], [
                ControllerEffect::Send(ControllerToAgent::Refused { .. }),
                ControllerEffect::Close { error: ProtocolError::BadEndpoints(m), .. },
            ] if m.contains("lowercase")),
            "{effects:?}"
        );
        let mut c = established(&[CAP_STATE_REPORT, CAP_ENDPOINTS]);
        c.handle_data(&frame(&AgentToController::StateReport(Default::default())));
        drain(&mut c);
        let many: Vec<_> = (1..=MAX_ENDPOINTS as u16 + 1).map(ray).collect();
        c.handle_data(&frame(&AgentToController::Endpoints(many)));
        assert!(c.is_closed());
    }

    #[test]
    fn operations_go_only_to_an_agent_that_announced_them() {
        use crate::ops::{Operation, ServiceAction};
        let op = CommandKind::Operation(Operation::service("x", ServiceAction::Stop));
        // An agent without declared operations does not announce them.
        let mut c = established(&[CAP_STATE_REPORT, "command:ping"]);
        assert_eq!(
            c.request(op.clone(), 1),
            Err((1, ProtocolError::Unsupported(CAP_OPERATIONS)))
        );
        assert_eq!(c.outstanding(), 0);
        // An older vocabulary's capability is not enough either.
        let mut c = established(&["command:ops/0"]);
        assert!(c.request(op.clone(), 1).is_err());

        let mut c = established(&[CAP_OPERATIONS]);
        c.request(op.clone(), 7).unwrap();
        let req = one(sent_requests(&drain(&mut c)));
        assert_eq!(req.kind, op);
        // The agent runs it beside its loop and answers when it is done.
        let now = Instant::now();
        let mut a = welcomed_agent(now);
        a.handle_data(&frame(&ControllerToAgent::CommandRequest(req.clone())), now);
        let Some(AgentEffect::RunOperation { id, operation }) = a.poll_effect() else {
            panic!("the operation is run");
        };
        assert_eq!(
            (id, CommandKind::Operation(operation)),
            (req.id, op.clone())
        );
        let outcome = CommandOutcome::Operation(crate::ops::OperationResult::refused(
            None,
            "service \"x\" is not declared on this node",
        ));
        a.command_done(id, outcome.clone());
        let Some(AgentEffect::Answer(response)) = a.poll_effect() else {
            panic!("answered");
        };
        c.handle_data(&frame(&AgentToController::CommandResponse(
            response.clone(),
        )));
        assert_eq!(
            drain(&mut c),
            vec![ControllerEffect::Reply {
                reply: 7,
                kind: op,
                response
            }]
        );
    }

    #[test]
    fn an_agent_that_describes_itself_is_asked_once_for_its_inventory() {
        let mut c: ControllerSession<u32> = ControllerSession::new("n", "c", HELLO, Instant::now());
        c.handle_data(&frame(&hello(1, 1, &[CAP_INVENTORY])));
        let effects = drain(&mut c);
        assert!(matches!(effects[0], ControllerEffect::Established(_)));
        assert!(matches!(
            effects[1],
            ControllerEffect::Send(ControllerToAgent::Welcome(_))
        ));
        let req = one(sent_requests(&effects));
        assert_eq!(req.kind, CommandKind::Inventory);
        let response = CommandResponse {
            id: req.id,
            outcome: CommandOutcome::Failed {
                message: "x".into(),
            },
        };
        c.handle_data(&frame(&AgentToController::CommandResponse(
            response.clone(),
        )));
        assert_eq!(drain(&mut c), vec![ControllerEffect::Inventory(response)]);
        // The session's own request is nobody's to answer when the connection ends.
        assert!(c.take_waiting().is_empty());
    }

    fn welcomed_agent(now: Instant) -> AgentSession {
        let mut a = AgentSession::new("t", &[], TIMERS, now);
        a.handle_data(
            &frame(&ControllerToAgent::Welcome(Welcome {
                version: 1,
                node: "n".into(),
                controller_version: "c".into(),
            })),
            now,
        );
        drain_agent(&mut a);
        a.report_collected(None);
        a
    }

    #[test]
    fn agent_requires_welcome_first_in_time_and_reports_refusal() {
        let now = Instant::now();
        let cmd = ControllerToAgent::CommandRequest(CommandRequest {
            id: 1,
            kind: CommandKind::Ping,
        });
        let mut a = AgentSession::new("t", &[], TIMERS, now);
        a.handle_data(&frame(&cmd), now);
        assert!(matches!(
            drain_agent(&mut a).last(),
            Some(AgentEffect::Close {
                error: ProtocolError::ExpectedWelcome("command request"),
                ..
            })
        ));
        let mut a = welcomed_agent(now);
        a.handle_data(
            &frame(&ControllerToAgent::Refused {
                reason: "old".into(),
            }),
            now,
        );
        assert_eq!(
            drain_agent(&mut a),
            vec![AgentEffect::Close {
                code: close::PROTOCOL_ERROR,
                error: ProtocolError::Refused("old".into())
            }]
        );
        assert_eq!(a.poll_timeout(), None);

        let mut a = AgentSession::new("t", &[], TIMERS, now);
        drain_agent(&mut a);
        a.handle_timeout(now + TIMERS.welcome_deadline - Duration::from_millis(1));
        assert!(drain_agent(&mut a).is_empty());
        a.handle_timeout(now + TIMERS.welcome_deadline);
        assert_eq!(
            drain_agent(&mut a),
            vec![AgentEffect::Close {
                code: close::PROTOCOL_ERROR,
                error: ProtocolError::NoWelcome(TIMERS.welcome_deadline)
            }]
        );
    }

    #[test]
    fn one_collection_at_a_time_and_report_state_answered_after_the_report() {
        let now = Instant::now();
        let mut a = welcomed_agent(now);
        let tick = now + TIMERS.report_interval;
        a.handle_timeout(tick);
        assert_eq!(drain_agent(&mut a), vec![AgentEffect::CollectReport]);
        // A collection stuck (a hung mount) is never doubled by the timer...
        a.handle_timeout(tick + TIMERS.report_interval);
        assert!(drain_agent(&mut a).is_empty());
        assert!(a.is_collecting());
        // ... nor by the controller asking for a report; the ask is answered after the report.
        a.handle_data(
            &frame(&ControllerToAgent::CommandRequest(CommandRequest {
                id: 4,
                kind: CommandKind::ReportState,
            })),
            tick,
        );
        assert!(drain_agent(&mut a).is_empty());
        a.report_collected(Some(StateReport::default()));
        let effects = drain_agent(&mut a);
        assert!(matches!(
            &effects[..],
            [
                AgentEffect::Send(AgentToController::StateReport(r)),
                AgentEffect::Answer(CommandResponse { id: 4, outcome: CommandOutcome::Done })
            ] if r.seq == 0
        ));
        // A late timer does not catch up with a burst: the next period counts from the late tick.
        assert_eq!(a.poll_timeout(), Some(tick + TIMERS.report_interval * 2));
        // The inventory is collected beside the loop too.
        a.handle_data(
            &frame(&ControllerToAgent::CommandRequest(CommandRequest {
                id: 5,
                kind: CommandKind::Inventory,
            })),
            tick,
        );
        assert_eq!(
            drain_agent(&mut a),
            vec![AgentEffect::CollectInventory { id: 5 }]
        );
    }

    #[test]
    fn a_connection_is_silent_after_the_limit_without_a_packet() {
        let t = Instant::now();
        let limit = Duration::from_millis(2500);
        let mut l = Liveness::new(limit, 7, t);
        assert!(!l.is_silent(7, t + Duration::from_millis(2499)));
        // A packet restarts the count.
        assert!(!l.is_silent(8, t + Duration::from_millis(2499)));
        assert!(!l.is_silent(8, t + Duration::from_millis(4998)));
        assert!(l.is_silent(8, t + Duration::from_millis(4999)));
        // A clock that seems to go back never makes a connection silent.
        let mut l = Liveness::new(limit, 0, t + Duration::from_secs(9));
        assert!(!l.is_silent(0, t));
    }

    #[test]
    fn backoff_grows_with_jitter_stays_under_the_cap_and_heeds_close_codes() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(100));
        assert_eq!(b.next_delay(0.999_999).as_millis(), 399);
        assert_eq!(b.next_delay(0.5), Duration::from_millis(600));
        for _ in 0..100 {
            let d = b.next_delay(1.0);
            assert!(d <= Duration::from_secs(5), "{d:?}");
        }
        assert_eq!(b.next_delay(0.0), Duration::from_millis(2500));
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_millis(200));
        b.reset();
        b.on_closed_by_controller(u64::from(close::SHUTDOWN));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(200));
        for code in [close::REPLACED, close::REVOKED] {
            b.reset();
            b.on_closed_by_controller(u64::from(code));
            assert_eq!(b.next_delay(1.0), Duration::from_secs(5));
        }
    }

    #[test]
    fn failover_prefers_spreads_moves_on_and_backs_off_after_a_full_round() {
        // One controller: every failure is a full round (as before several were possible).
        let mut one = Failover::new(1, None, 0.7);
        assert_eq!(one.current(), 0);
        assert_eq!(one.failed(), Retry::Backoff);
        assert_eq!(one.current(), 0);

        // Preferred first, the rest rotated by the agent's draw.
        let mut f = Failover::new(4, Some(2), 0.5);
        let mut seen = vec![f.current()];
        let mut retries = Vec::new();
        for _ in 0..4 {
            retries.push(f.failed());
            seen.push(f.current());
        }
        assert_eq!(seen, [2, 1, 3, 0, 2]);
        assert_eq!(
            retries,
            [Retry::Next, Retry::Next, Retry::Next, Retry::Backoff]
        );
        // Different draws start the others at different places: agents spread.
        let firsts: std::collections::BTreeSet<usize> = [0.0, 0.34, 0.67, 0.99]
            .iter()
            .map(|u| Failover::new(3, None, *u).current())
            .collect();
        assert_eq!(firsts.len(), 3);
        // A link that was established and then lost moves on without waiting.
        let mut g = Failover::new(2, None, 0.0);
        assert_eq!(g.failed(), Retry::Next);
        g.established();
        assert_eq!(g.failed(), Retry::Next);
        assert_eq!(g.current(), 0);
        assert_eq!(g.failed(), Retry::Backoff);
        // A preference out of range is ignored; a draw out of range is clamped.
        assert_eq!(Failover::new(2, Some(9), 5.0).current(), 1);
    }
}
