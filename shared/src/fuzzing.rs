//! Fuzz harnesses for the shared crate's parsers and state machines: one function per
//! `fuzz/fuzz_targets/shared_*.rs` target, taking the fuzzer's bytes. The same functions replay
//! the committed corpora on stable (`tests/fuzz_corpus.rs`), so a regression fails without
//! nightly. An error returned by the code under test is fine; a panic (including a broken
//! property asserted here), an overflow or a hang is a bug. Pure: no I/O.

use std::collections::BTreeMap;

use crate::framing::{FrameDecoder, FrameError, MAX_FRAME, encode_frame};
use crate::ops::{MAX_FRAGMENTS_PER_OPERATION, Operation, OperationResult, deletions_by_device};
use crate::protocol::{
    self, AgentToController, CommandKind, CommandOutcome, CommandResponse, ControllerToAgent, Fit,
    Hello, encode_response,
};
use std::time::{Duration, Instant};

use crate::session::{
    AgentEffect, AgentSession, AgentTimers, ControllerEffect, ControllerSession, MAX_OUTSTANDING,
    ProtocolError,
};

/// Reads the fuzzer's bytes as small integers and slices.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    /// Up to `n` bytes (fewer at the end of the input).
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// The frame decoder fed one byte stream in fuzzer-chosen chunks, against a limit chosen by the
/// first byte. Properties: every chunking yields the same frames as one push; every frame is
/// non-empty and within the limit; re-encoding the frames gives back the stream's consumed
/// prefix; an error is sticky.
pub fn frame_decoder(data: &[u8]) {
    let mut input = Input(data);
    let Some(first) = input.byte() else { return };
    let max = match first % 4 {
        0 => MAX_FRAME,
        n => usize::from(n) * 16 + usize::from(first >> 2),
    };
    let Some(chunking) = input.byte() else { return };
    let stream = input.0;

    let whole = {
        let mut d = FrameDecoder::new(max);
        d.push(stream);
        drain(&mut d)
    };
    let mut d = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut error = None;
    // Chunk sizes cycle through 1..=chunking+1 bytes.
    let mut size = 1;
    for chunk in stream_chunks(stream, |s| {
        size = size % (usize::from(chunking) + 1) + 1;
        s.min(size)
    }) {
        d.push(chunk);
        let (got, e) = drain(&mut d);
        frames.extend(got);
        if let Some(e) = e {
            error = Some(e);
            break;
        }
    }
    assert_eq!(
        (frames.clone(), error.clone()),
        whole,
        "chunking changed the frames"
    );
    let mut reencoded = Vec::new();
    for f in &frames {
        assert!(
            !f.is_empty() && f.len() <= max,
            "frame of {} bytes",
            f.len()
        );
        reencoded.extend(encode_frame(f, max).expect("a decoded frame re-encodes"));
    }
    assert!(stream.starts_with(&reencoded), "frames are not the stream");
    match error {
        Some(e) => {
            assert!(matches!(e, FrameError::TooLarge { .. } | FrameError::Empty));
            assert_eq!(d.next_frame(), Err(e.clone()), "an error is sticky");
            assert_eq!(d.finish(), Err(e));
        }
        None => {
            let rest = stream.len() - reencoded.len();
            let want = if rest == 0 {
                Ok(())
            } else {
                Err(FrameError::Truncated { buffered: rest })
            };
            assert_eq!(d.finish(), want);
        }
    }
}

fn stream_chunks(
    mut stream: &[u8],
    mut next_len: impl FnMut(usize) -> usize,
) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if stream.is_empty() {
            return None;
        }
        let (head, rest) = stream.split_at(next_len(stream.len()).max(1));
        stream = rest;
        Some(head)
    })
}

fn drain(d: &mut FrameDecoder) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut out = Vec::new();
    loop {
        match d.next_frame() {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Re-encoding a decoded message is stable: encode → decode → encode gives the same bytes
/// (compared as bytes, since a report's `f64` may be NaN).
fn assert_reencodes<T>(message: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let bytes = protocol::encode(message).expect("a decoded message encodes");
    let again: T = protocol::decode(&bytes).expect("an encoded message decodes");
    assert_eq!(
        protocol::encode(&again).expect("encodes"),
        bytes,
        "{message:?}"
    );
}

/// An agent → controller frame payload (every message type: hello, state report, command
/// response with each outcome). A decoded message re-encodes stably; a command response also
/// goes through [`encode_response`] at the link's limit and at a small one, whose output must
/// fit and decode to the same id.
pub fn message_up(data: &[u8]) {
    let Ok(message) = protocol::decode::<AgentToController>(data) else {
        return;
    };
    assert_reencodes(&message);
    if let AgentToController::CommandResponse(response) = message {
        for max in [MAX_FRAME, 512] {
            let id = response.id;
            let (bytes, fit) =
                encode_response(response.clone(), max).expect("a decoded answer encodes");
            assert!(
                bytes.len() <= max,
                "{} bytes over {max} ({fit:?})",
                bytes.len()
            );
            let Ok(AgentToController::CommandResponse(back)) = protocol::decode(&bytes) else {
                panic!("encode_response made an undecodable payload");
            };
            assert_eq!(back.id, id);
            if fit == Fit::Whole {
                assert_eq!(
                    bytes,
                    protocol::encode(&AgentToController::CommandResponse(response.clone()))
                        .unwrap()
                );
            }
        }
    }
}

/// A controller → agent frame payload (welcome, command request with each kind, refusal). A
/// decoded message re-encodes stably; an operation that validates survives the forced-command
/// line syntax (`to_line` → `parse_line`) unchanged, as the SSH path needs.
pub fn message_down(data: &[u8]) {
    let Ok(message) = protocol::decode::<ControllerToAgent>(data) else {
        return;
    };
    assert_reencodes(&message);
    if let ControllerToAgent::CommandRequest(request) = &message
        && let CommandKind::Operation(op) = &request.kind
    {
        assert_operation_line_round_trips(op);
    }
}

fn assert_operation_line_round_trips(op: &Operation) {
    if let Ok(line) = op.to_line() {
        assert_eq!(Operation::parse_line(&line).as_ref(), Ok(op), "{line:?}");
    }
}

/// A forced-command line (`SSH_ORIGINAL_COMMAND`): what parses prints back to a line that
/// parses to the same operation.
pub fn operation_line(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(op) = Operation::parse_line(line) {
        op.validate().expect("a parsed operation validates");
        assert_operation_line_round_trips(&op);
    }
}

/// The JSON result line `nodewarden-agent op` prints and the controller's SSH path parses: what
/// parses prints back to a line that parses to the same result.
pub fn operation_result_json(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(result) = OperationResult::from_json_line(line) {
        let printed = result.to_json_line();
        let back = OperationResult::from_json_line(&printed).expect("a printed line parses");
        // The printed line may cut long texts; short ones come back whole.
        if printed.len() < 4096 {
            assert_eq!(back, result, "{printed}");
        }
    }
}

/// `(fragment id, device id)` pairs as the DFS hands them over, one `fid device` pair per line
/// (tabs and spaces), through [`deletions_by_device`]. Properties of an accepted batch: devices
/// ascending, ids sorted and unique per device, chunks within the limit, every pair present
/// exactly once, every operation valid.
pub fn fragment_pairs(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let pairs: Vec<(&str, &str)> = text
        .lines()
        .map(|l| l.split_once([' ', '\t']).unwrap_or((l, "")))
        .collect();
    let Ok(ops) = deletions_by_device(pairs.iter().copied()) else {
        return;
    };
    let mut expected: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (f, d) in &pairs {
        let f = crate::ops::parse_fragment_id(f).expect("accepted id");
        let d = crate::ops::parse_device_id(d).expect("accepted id");
        expected.entry(d).or_default().push(f);
    }
    let mut got: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut last_device = None;
    for op in &ops {
        op.validate().expect("a built deletion validates");
        let Operation::DeleteFragments {
            device_id,
            fragment_ids,
        } = op
        else {
            panic!("not a deletion: {op:?}");
        };
        assert!(last_device <= Some(*device_id), "devices out of order");
        last_device = Some(*device_id);
        assert!(!fragment_ids.is_empty() && fragment_ids.len() <= MAX_FRAGMENTS_PER_OPERATION);
        got.entry(*device_id)
            .or_default()
            .extend_from_slice(fragment_ids);
        assert_operation_line_round_trips(op);
    }
    for ids in expected.values_mut() {
        ids.sort_unstable();
        ids.dedup();
    }
    assert_eq!(got, expected);
}

/// A hello from fuzzer bytes: version range and a subset of the capabilities.
fn hello(input: &mut Input<'_>) -> Option<AgentToController> {
    const CAPS: [&str; 7] = [
        protocol::CAP_STATE_REPORT,
        "command:ping",
        "command:report-state",
        protocol::CAP_OPERATIONS,
        protocol::CAP_INVENTORY,
        protocol::CAP_FRAGMENTS,
        protocol::CAP_ENDPOINTS,
    ];
    let min_version = u16::from(input.byte()? % 4);
    let max_version = u16::from(input.byte()? % 4);
    let caps = input.byte()?;
    Some(AgentToController::Hello(Hello {
        min_version,
        max_version,
        agent_version: "fuzz".into(),
        capabilities: CAPS
            .iter()
            .enumerate()
            .filter(|(i, _)| caps & (1 << i) != 0)
            .map(|(_, c)| c.to_string())
            .collect(),
    }))
}

fn command_kind(selector: u8) -> CommandKind {
    match selector % 5 {
        0 => CommandKind::Ping,
        1 => CommandKind::ReportState,
        2 => CommandKind::Inventory,
        3 => CommandKind::Operation(Operation::service(
            "svc",
            crate::ops::ServiceAction::Restart,
        )),
        _ => CommandKind::Operation(Operation::DeleteFragments {
            device_id: 1,
            fragment_ids: vec![u64::from(selector)],
        }),
    }
}

/// A message as the link carries it: encoded, then framed.
fn framed<T: serde::Serialize>(message: &T) -> Vec<u8> {
    encode_frame(&protocol::encode(message).expect("encodes"), MAX_FRAME).expect("fits a frame")
}

/// The controller's session fed a fuzzer-chosen sequence of steps: raw bytes (partial and
/// broken frames included), well-formed hellos, requests (as the link makes them, with a reply
/// token), answers to outstanding or made-up ids, reports, and the passing of time. A model of
/// the outstanding commands runs beside it. Properties: no panic; established at most once and
/// only by a hello, with the welcome (and the inventory request, if announced) right after;
/// the outstanding count equals the model's and never exceeds [`MAX_OUTSTANDING`]; a reply
/// comes only for an outstanding id, with the kind and token it was asked with; ids are never
/// reused; a refusal is followed by the close; after the close nothing more comes out; no
/// hello within the deadline closes the session.
pub fn session_controller(data: &[u8]) {
    const DEADLINE: Duration = Duration::from_secs(5);
    let mut input = Input(data);
    let start = Instant::now();
    let mut now = start;
    let mut session: ControllerSession<u64> =
        ControllerSession::new("node-1", "fuzz", DEADLINE, now);
    // id -> (kind, token); token None: the session's own inventory request.
    let mut outstanding: BTreeMap<u64, (CommandKind, Option<u64>)> = BTreeMap::new();
    let mut issued: Vec<u64> = Vec::new();
    let mut caps: Option<Vec<String>> = None;
    let mut closed = false;
    let mut tokens = 0u64;
    let mut fragments_asked = false;
    let mut deltas_asked = false;
    let mut endpoints_asked = false;
    while let Some(step) = input.byte() {
        match step % 6 {
            0 => {
                let Some(len) = input.byte() else { break };
                session.handle_data(input.take(usize::from(len)));
            }
            1 => {
                let Some(h) = hello(&mut input) else { break };
                session.handle_data(&framed(&h));
            }
            2 => {
                let Some(selector) = input.byte() else { break };
                let kind = command_kind(selector);
                let before = session.outstanding();
                tokens += 1;
                match session.request(kind.clone(), tokens) {
                    Ok(()) => {
                        assert!(!closed, "a request taken after the close");
                        let caps = caps.as_ref().expect("a request before the hello");
                        assert!(caps.iter().any(|c| c == kind.capability()));
                        assert!(before < MAX_OUTSTANDING);
                        let Some(ControllerEffect::Send(ControllerToAgent::CommandRequest(r))) =
                            session.poll_effect()
                        else {
                            panic!("a request made no frame");
                        };
                        assert_eq!(r.kind, kind);
                        assert!(!issued.contains(&r.id), "id {} reused", r.id);
                        issued.push(r.id);
                        outstanding.insert(r.id, (kind, Some(tokens)));
                    }
                    Err((token, e)) => {
                        assert_eq!(token, tokens, "the token comes back");
                        match e {
                            ProtocolError::NotEstablished => {
                                assert!(caps.is_none() || closed)
                            }
                            ProtocolError::Unsupported(c) => {
                                assert!(!caps.as_ref().unwrap().iter().any(|k| k == c))
                            }
                            ProtocolError::TooManyOutstanding => {
                                assert_eq!(before, MAX_OUTSTANDING)
                            }
                            e => panic!("request failed with {e}"),
                        }
                    }
                }
            }
            // An answer to the n-th issued id (outstanding or not), or to a made-up one.
            3 => {
                let Some(n) = input.u16() else { break };
                let id = issued
                    .get(usize::from(n))
                    .copied()
                    .unwrap_or(u64::from(n) << 20);
                // The answers to the session's own fragments and endpoints requests come out as
                // nothing.
                let own = [CommandKind::FragmentInventories, CommandKind::Endpoints]
                    .into_iter()
                    .any(|kind| outstanding.get(&id) == Some(&(kind, None)));
                session.handle_data(&framed(&AgentToController::CommandResponse(
                    CommandResponse {
                        id,
                        outcome: CommandOutcome::Done,
                    },
                )));
                if own && !session.is_closed() {
                    outstanding.remove(&id);
                }
            }
            4 => session.handle_data(&framed(&AgentToController::StateReport(Default::default()))),
            _ => {
                let Some(tenths) = input.byte() else { break };
                now += Duration::from_millis(u64::from(tenths) * 100);
                session.handle_timeout(now);
            }
        }
        let mut refused = false;
        while let Some(effect) = session.poll_effect() {
            assert!(!closed, "{effect:?} after the close");
            assert!(!refused || matches!(effect, ControllerEffect::Close { .. }));
            match effect {
                ControllerEffect::Established(hello) => {
                    assert!(caps.is_none(), "established twice");
                    // The effects are drained after the whole step: a later frame of the same
                    // bytes may already have closed the session, so its state is not read here.
                    assert!(session.version() == Some(1) || session.is_closed());
                    assert!(now < start + DEADLINE, "established after the deadline");
                    let inventory = hello
                        .capabilities
                        .iter()
                        .any(|c| c == protocol::CAP_INVENTORY);
                    caps = Some(hello.capabilities);
                    let Some(ControllerEffect::Send(ControllerToAgent::Welcome(welcome))) =
                        session.poll_effect()
                    else {
                        panic!("no welcome after the hello");
                    };
                    assert_eq!(welcome.version, 1);
                    if inventory {
                        let Some(ControllerEffect::Send(ControllerToAgent::CommandRequest(r))) =
                            session.poll_effect()
                        else {
                            panic!("no inventory request");
                        };
                        assert_eq!(r.kind, CommandKind::Inventory);
                        issued.push(r.id);
                        outstanding.insert(r.id, (CommandKind::Inventory, None));
                    }
                }
                ControllerEffect::Send(ControllerToAgent::Refused { .. }) => refused = true,
                ControllerEffect::Send(other) => panic!("sent {other:?} unasked"),
                ControllerEffect::Report(_) => {
                    let caps = caps.as_ref().expect("a report before the hello");
                    if !fragments_asked && caps.iter().any(|c| c == protocol::CAP_FRAGMENTS) {
                        fragments_asked = true;
                        let Some(ControllerEffect::Send(ControllerToAgent::CommandRequest(r))) =
                            session.poll_effect()
                        else {
                            panic!("no fragments request after the first report");
                        };
                        assert_eq!(r.kind, CommandKind::FragmentInventories);
                        issued.push(r.id);
                        outstanding.insert(r.id, (CommandKind::FragmentInventories, None));
                        if caps.iter().any(|c| c == protocol::CAP_FRAGMENT_DELTAS) {
                            deltas_asked = true;
                            let Some(ControllerEffect::Send(ControllerToAgent::CommandRequest(r))) =
                                session.poll_effect()
                            else {
                                panic!("no deltas request after the fragments request");
                            };
                            assert_eq!(r.kind, CommandKind::FragmentDeltas);
                            issued.push(r.id);
                            outstanding.insert(r.id, (CommandKind::FragmentDeltas, None));
                        }
                    }
                    if !endpoints_asked && caps.iter().any(|c| c == protocol::CAP_ENDPOINTS) {
                        endpoints_asked = true;
                        let Some(ControllerEffect::Send(ControllerToAgent::CommandRequest(r))) =
                            session.poll_effect()
                        else {
                            panic!("no endpoints request after the first report");
                        };
                        assert_eq!(r.kind, CommandKind::Endpoints);
                        issued.push(r.id);
                        outstanding.insert(r.id, (CommandKind::Endpoints, None));
                    }
                }
                ControllerEffect::FragmentPart(_) => assert!(fragments_asked),
                ControllerEffect::FragmentDelta(_) => assert!(deltas_asked),
                ControllerEffect::Endpoints(list) => {
                    assert!(endpoints_asked);
                    assert!(list.len() <= protocol::MAX_ENDPOINTS);
                    assert!(list.iter().all(|e| e.problem().is_none()));
                }
                ControllerEffect::Inventory(response) => {
                    let (kind, token) = outstanding
                        .remove(&response.id)
                        .expect("an inventory answer to an id not outstanding");
                    assert_eq!((kind, token), (CommandKind::Inventory, None));
                }
                ControllerEffect::Reply {
                    reply,
                    kind,
                    response,
                } => {
                    let (want, token) = outstanding
                        .remove(&response.id)
                        .expect("a response to an id not outstanding was accepted");
                    assert_eq!((kind, Some(reply)), (want, token));
                }
                ControllerEffect::Close { error, .. } => {
                    closed = true;
                    assert!(session.is_closed());
                    if let ProtocolError::NoHello(_) = error {
                        assert!(caps.is_none() && now >= start + DEADLINE);
                    }
                }
            }
        }
        if !closed {
            assert_eq!(session.outstanding(), outstanding.len());
        }
        assert!(session.outstanding() <= MAX_OUTSTANDING);
    }
}

/// The agent's session fed a fuzzer-chosen sequence of steps: raw bytes from the controller,
/// well-formed welcomes and commands, collected reports, finished work and the passing of time.
/// Properties: no panic; the hello first; welcomed at most once, with a version this build
/// speaks; no collection asked for before the welcome nor while one runs; a report sent only
/// after its collection, with sequence numbers from 0 without gaps; answers only after the
/// welcome; nothing after the close.
pub fn session_agent(data: &[u8]) {
    const TIMERS: AgentTimers = AgentTimers {
        report_interval: Duration::from_secs(5),
        welcome_deadline: Duration::from_secs(10),
    };
    let mut input = Input(data);
    let start = Instant::now();
    let mut now = start;
    let mut session = AgentSession::new("fuzz", &["command:ping"], TIMERS, now);
    assert!(matches!(
        session.poll_effect(),
        Some(AgentEffect::Send(AgentToController::Hello(_)))
    ));
    let (mut welcomed, mut closed, mut collecting) = (false, false, false);
    let mut collected = false;
    let mut next_seq = 0;
    // Ids of inventories and operations handed out and not finished yet.
    let mut work: Vec<u64> = Vec::new();
    while let Some(step) = input.byte() {
        match step % 6 {
            0 => {
                let Some(len) = input.byte() else { break };
                session.handle_data(input.take(usize::from(len)), now);
            }
            1 => {
                let Some(version) = input.byte() else { break };
                session.handle_data(
                    &framed(&ControllerToAgent::Welcome(protocol::Welcome {
                        version: u16::from(version % 3),
                        node: "n".into(),
                        controller_version: "fuzz".into(),
                    })),
                    now,
                );
            }
            2 => {
                let Some(selector) = input.byte() else { break };
                session.handle_data(
                    &framed(&ControllerToAgent::CommandRequest(
                        protocol::CommandRequest {
                            id: u64::from(selector),
                            kind: command_kind(selector),
                        },
                    )),
                    now,
                );
            }
            // Work finishes only where the session handed it out, as in the link.
            3 => {
                let Some(some) = input.byte() else { break };
                if collecting {
                    collected = some & 1 == 1;
                    collecting = false;
                    session.report_collected((some & 1 == 1).then(Default::default));
                }
            }
            4 => {
                let Some(n) = input.byte() else { break };
                if !work.is_empty() {
                    let id = work.remove(usize::from(n) % work.len());
                    session.command_done(id, CommandOutcome::Done);
                }
            }
            _ => {
                let Some(tenths) = input.byte() else { break };
                now += Duration::from_millis(u64::from(tenths) * 100);
                session.handle_timeout(now);
            }
        }
        while let Some(effect) = session.poll_effect() {
            assert!(!closed, "{effect:?} after the close");
            match effect {
                AgentEffect::Welcomed(w) => {
                    assert!(!welcomed, "welcomed twice");
                    assert!(
                        (protocol::MIN_PROTOCOL_VERSION..=protocol::MAX_PROTOCOL_VERSION)
                            .contains(&w.version)
                    );
                    assert!(now < start + TIMERS.welcome_deadline);
                    welcomed = true;
                }
                AgentEffect::CollectReport => {
                    assert!(welcomed && !collecting, "a second collection");
                    collecting = true;
                }
                AgentEffect::Send(AgentToController::StateReport(r)) => {
                    assert!(collected, "a report that was not collected");
                    collected = false;
                    assert_eq!(r.seq, next_seq);
                    next_seq += 1;
                }
                AgentEffect::Send(other) => panic!("sent {other:?} unasked"),
                AgentEffect::Answer(_)
                | AgentEffect::SendFragments
                | AgentEffect::FragmentDeltasTaken => assert!(welcomed),
                AgentEffect::CollectEndpoints => {
                    assert!(welcomed);
                    session.endpoints_collected(None);
                }
                AgentEffect::CollectInventory { id } | AgentEffect::RunOperation { id, .. } => {
                    assert!(welcomed);
                    work.push(id);
                }
                AgentEffect::Close { .. } => {
                    closed = true;
                    assert!(session.is_closed() && session.poll_timeout().is_none());
                }
            }
        }
        assert_eq!(session.is_collecting(), collecting);
    }
}

/// A device's fragment inventory as it arrives from an agent (`DeviceInventory::decode`):
/// an accepted one has every set within `present` and one size per present id, re-encodes to
/// the same inventory, and reconciles against an empty table without a panic.
pub fn fragment_inventory(data: &[u8]) {
    use crate::fragments::{DeviceInventory, Reconciler};
    let Ok(inv) = DeviceInventory::decode(data) else {
        return;
    };
    assert_eq!(inv.sizes.len() as u64, inv.present.len());
    assert!(inv.corrupt.is_subset(&inv.present));
    let again = DeviceInventory::decode(&inv.encode().expect("encodes")).expect("round trip");
    assert_eq!(again, inv);
    let audit = Reconciler::new(&inv).finish();
    assert_eq!(audit.present.count, inv.present.len());
    assert_eq!(audit.missing.count, 0);
}

/// A fragment inventory delta as it arrives from an agent (`InventoryDelta::decode`), applied to
/// the inventory the controller holds. The first two bytes (little-endian) give the length of
/// that inventory's encoding, which follows them (an empty inventory when it does not decode);
/// the rest is the delta. An accepted delta re-encodes to itself, and applying it leaves an
/// inventory that is consistent (one size per present id, every flag within `present`, which
/// re-encodes to itself) and what the delta says: its removed ids gone, its set ids present with
/// its sizes and flags, every other id as it was.
pub fn fragment_delta(data: &[u8]) {
    use crate::fragments::{DeviceInventory, InventoryDelta};
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (base, delta) = rest.split_at(usize::from(u16::from_le_bytes(*len)).min(rest.len()));
    let Ok(delta) = InventoryDelta::decode(delta) else {
        return;
    };
    let again = InventoryDelta::decode(&delta.encode().expect("encodes")).expect("round trip");
    assert_eq!(again, delta);
    let before = DeviceInventory::decode(base).unwrap_or_else(|_| DeviceInventory {
        device_id: delta.device_id,
        ..DeviceInventory::default()
    });
    let mut inv = before.clone();
    inv.apply(&delta);

    assert_eq!(inv.sizes.len() as u64, inv.present.len());
    assert_eq!(inv.present, (&before.present - &delta.removed) | &delta.set);
    for (id, size) in delta.set.iter().zip(&delta.sizes) {
        assert_eq!(
            inv.size_of(id),
            Some(u64::from(*size)),
            "size of set id {id}"
        );
    }
    let kept = &before.present - &delta.removed - &delta.set;
    for id in kept.iter().take(4096) {
        assert_eq!(inv.size_of(id), before.size_of(id), "size of kept id {id}");
    }
    for (name, flags, was, now) in [
        (
            "no_digest",
            &inv.no_digest,
            &before.no_digest,
            &delta.no_digest,
        ),
        ("corrupt", &inv.corrupt, &before.corrupt, &delta.corrupt),
        ("recent", &inv.recent, &before.recent, &delta.recent),
    ] {
        assert!(flags.is_subset(&inv.present), "{name} outside present");
        assert_eq!(*flags, (was & &kept) | now, "{name}");
    }
    let encoded = inv.encode().expect("encodes");
    assert_eq!(DeviceInventory::decode(&encoded).expect("round trip"), inv);
}
