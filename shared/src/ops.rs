//! The operation vocabulary shared by controller and agent, over the agent link and over the SSH
//! fallback: what can be asked of a node (a declared service's start/stop/restart/status, fragment
//! deletion on a declared storage device), how fragment ids from the DFS are validated, the
//! result of an operation, and the one-line syntax the SSH forced command accepts.
//!
//! Nothing here does I/O. Every input is validated into integers and safe tokens before anything
//! downstream sees it, so a path is only ever built from an integer, never from input text.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The first word of every operation line (the SSH forced command refuses anything else).
pub const LINE_PREFIX: &str = "nodewarden-op";
/// Longest operation line accepted. sshd hands the line to the forced command in
/// `SSH_ORIGINAL_COMMAND`, and Linux refuses environment strings over 128 KiB.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Most fragments one deletion operation carries; larger batches are split per device into
/// several operations (see [`deletions_by_device`]). 2048 ids of 20 digits fit in a line.
pub const MAX_FRAGMENTS_PER_OPERATION: usize = 2048;
/// Longest service name.
pub const MAX_SERVICE_NAME: usize = 64;
/// Output kept per stream of a command the agent runs.
pub const OUTPUT_LIMIT_BYTES: usize = 64 * 1024;

/// What to do with a declared service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceAction {
    Start,
    Stop,
    Restart,
    Status,
}

impl ServiceAction {
    pub const ALL: [ServiceAction; 4] = [
        ServiceAction::Start,
        ServiceAction::Stop,
        ServiceAction::Restart,
        ServiceAction::Status,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceAction::Start => "start",
            ServiceAction::Stop => "stop",
            ServiceAction::Restart => "restart",
            ServiceAction::Status => "status",
        }
    }

    pub fn parse(word: &str) -> Result<Self, OpsError> {
        ServiceAction::ALL
            .into_iter()
            .find(|a| a.as_str() == word)
            .ok_or_else(|| OpsError::UnknownAction(shown(word)))
    }
}

impl fmt::Display for ServiceAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One operation on one node. A deletion names one storage device; a DFS batch spanning devices
/// becomes one operation per device (see [`deletions_by_device`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Service {
        service: String,
        action: ServiceAction,
    },
    DeleteFragments {
        device_id: u32,
        fragment_ids: Vec<u64>,
    },
}

/// Why an operation or its input was refused. Quoted input is escaped and shortened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpsError {
    #[error("fragment id {0} is empty")]
    EmptyId(&'static str),
    #[error(
        "{what} {input} is not a non-negative decimal integer (only the digits 0-9 are allowed)"
    )]
    NotAnInteger { what: &'static str, input: String },
    #[error("{what} {input} has a leading zero (ids are written without one)")]
    LeadingZero { what: &'static str, input: String },
    #[error("{what} {input} is too large")]
    TooLarge { what: &'static str, input: String },
    #[error(
        "service name {0} is not allowed (1-{MAX_SERVICE_NAME} characters: letters, digits, '.', '_', '-'; not starting with '.' or '-')"
    )]
    BadServiceName(String),
    #[error("unknown service action {0} (expected start, stop, restart or status)")]
    UnknownAction(String),
    #[error("a fragment deletion needs at least one fragment id")]
    NoFragments,
    #[error(
        "{0} fragment ids in one operation; at most {MAX_FRAGMENTS_PER_OPERATION} (split the batch)"
    )]
    TooManyFragments(usize),
    #[error("operation line is {0} bytes; at most {MAX_LINE_BYTES}")]
    LineTooLong(usize),
    #[error(
        "operation line contains a character other than printable ASCII and spaces at byte {0}"
    )]
    BadCharacter(usize),
    #[error("not an operation line: it must start with {LINE_PREFIX:?}")]
    NotAnOperation,
    #[error("unknown operation {0} (expected service or delete-fragments)")]
    UnknownOperation(String),
    #[error("malformed operation line: {0}")]
    Malformed(&'static str),
}

/// Input as shown in an error: escaped and cut to 40 characters, so hostile input cannot forge
/// log lines.
fn shown(input: &str) -> String {
    let cut: String = input.chars().take(40).collect();
    if cut.len() < input.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

fn parse_decimal(input: &str, what: &'static str, max: u64) -> Result<u64, OpsError> {
    if input.is_empty() {
        return Err(OpsError::EmptyId(what));
    }
    if !input.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OpsError::NotAnInteger {
            what,
            input: shown(input),
        });
    }
    if input.len() > 1 && input.starts_with('0') {
        return Err(OpsError::LeadingZero {
            what,
            input: shown(input),
        });
    }
    match input.parse::<u64>() {
        Ok(v) if v <= max => Ok(v),
        _ => Err(OpsError::TooLarge {
            what,
            input: shown(input),
        }),
    }
}

/// A fragment id as the DFS writes it: decimal digits only, no sign, no whitespace, no leading
/// zero, fits in 64 bits. Anything else (`../x`, `1/2`, `-rf`, `1;rm`, ` 1`, `+1`) is an error.
pub fn parse_fragment_id(input: &str) -> Result<u64, OpsError> {
    parse_decimal(input, "fragment id", u64::MAX)
}

/// A storage device id (`DEVICE.ID`, a MySQL int), same rules as a fragment id.
pub fn parse_device_id(input: &str) -> Result<u32, OpsError> {
    parse_decimal(input, "device id", u64::from(u32::MAX)).map(|v| v as u32)
}

/// Whether `name` may name a service: a safe token that cannot be mistaken for an option or a path.
pub fn validate_service_name(name: &str) -> Result<(), OpsError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(OpsError::BadServiceName(shown(name)))
    }
}

/// Turns the DFS's `(fragment id, device id)` pairs, still as text, into deletion operations, one
/// per device (or several when a device has more than [`MAX_FRAGMENTS_PER_OPERATION`]), devices
/// in ascending order, ids deduplicated and sorted. One bad id rejects the whole batch, so
/// nothing is touched on bad input.
pub fn deletions_by_device<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Operation>, OpsError> {
    let mut by_device: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (fragment, device) in pairs {
        let fragment_id = parse_fragment_id(fragment)?;
        let device_id = parse_device_id(device)?;
        by_device.entry(device_id).or_default().push(fragment_id);
    }
    Ok(group_deletions(by_device))
}

/// As [`deletions_by_device`], for pairs already held as integers.
pub fn deletions_from_ids(pairs: impl IntoIterator<Item = (u64, u32)>) -> Vec<Operation> {
    let mut by_device: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (fragment_id, device_id) in pairs {
        by_device.entry(device_id).or_default().push(fragment_id);
    }
    group_deletions(by_device)
}

fn group_deletions(by_device: BTreeMap<u32, Vec<u64>>) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (device_id, mut ids) in by_device {
        ids.sort_unstable();
        ids.dedup();
        for chunk in ids.chunks(MAX_FRAGMENTS_PER_OPERATION) {
            ops.push(Operation::DeleteFragments {
                device_id,
                fragment_ids: chunk.to_vec(),
            });
        }
    }
    ops
}

impl Operation {
    pub fn service(service: &str, action: ServiceAction) -> Operation {
        Operation::Service {
            service: service.to_string(),
            action,
        }
    }

    /// Checks an operation that arrived already structured (from the API or the link): the same
    /// rules the line parser enforces.
    pub fn validate(&self) -> Result<(), OpsError> {
        match self {
            Operation::Service { service, .. } => validate_service_name(service),
            Operation::DeleteFragments { fragment_ids, .. } => {
                if fragment_ids.is_empty() {
                    Err(OpsError::NoFragments)
                } else if fragment_ids.len() > MAX_FRAGMENTS_PER_OPERATION {
                    Err(OpsError::TooManyFragments(fragment_ids.len()))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The operation as a forced-command line, e.g. `nodewarden-op service storage-client start`
    /// or `nodewarden-op delete-fragments 3 101 102`. Validates first, so no line is ever built
    /// from an unsafe name.
    pub fn to_line(&self) -> Result<String, OpsError> {
        self.validate()?;
        Ok(match self {
            Operation::Service { service, action } => {
                format!("{LINE_PREFIX} service {service} {action}")
            }
            Operation::DeleteFragments {
                device_id,
                fragment_ids,
            } => {
                let mut line = format!("{LINE_PREFIX} delete-fragments {device_id}");
                for id in fragment_ids {
                    line.push(' ');
                    line.push_str(&id.to_string());
                }
                line
            }
        })
    }

    /// Parses a whole line (what `SSH_ORIGINAL_COMMAND` holds). Only printable ASCII and spaces;
    /// words are separated by one or more spaces.
    pub fn parse_line(line: &str) -> Result<Operation, OpsError> {
        if line.len() > MAX_LINE_BYTES {
            return Err(OpsError::LineTooLong(line.len()));
        }
        if let Some(at) = line
            .bytes()
            .position(|b| !(b == b' ' || b.is_ascii_graphic()))
        {
            return Err(OpsError::BadCharacter(at));
        }
        let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
        match words.split_first() {
            Some((&LINE_PREFIX, rest)) => Operation::parse_words(rest),
            _ => Err(OpsError::NotAnOperation),
        }
    }

    /// Parses the words after the prefix (what `nodewarden-agent op ...` receives as arguments).
    pub fn parse_words<S: AsRef<str>>(words: &[S]) -> Result<Operation, OpsError> {
        let mut words = words.iter().map(AsRef::as_ref);
        let op = match words.next() {
            Some("service") => {
                let service = words
                    .next()
                    .ok_or(OpsError::Malformed("service needs a name and an action"))?;
                validate_service_name(service)?;
                let action = ServiceAction::parse(
                    words
                        .next()
                        .ok_or(OpsError::Malformed("service needs an action"))?,
                )?;
                if words.next().is_some() {
                    return Err(OpsError::Malformed(
                        "service takes exactly a name and an action",
                    ));
                }
                Operation::Service {
                    service: service.to_string(),
                    action,
                }
            }
            Some("delete-fragments") => {
                let device_id = parse_device_id(
                    words
                        .next()
                        .ok_or(OpsError::Malformed("delete-fragments needs a device id"))?,
                )?;
                let fragment_ids = words
                    .map(parse_fragment_id)
                    .collect::<Result<Vec<u64>, _>>()?;
                Operation::DeleteFragments {
                    device_id,
                    fragment_ids,
                }
            }
            Some(other) => return Err(OpsError::UnknownOperation(shown(other))),
            None => return Err(OpsError::Malformed("no operation")),
        };
        op.validate()?;
        Ok(op)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Service { service, action } => write!(f, "{action} {service}"),
            Operation::DeleteFragments {
                device_id,
                fragment_ids,
            } => write!(
                f,
                "delete {} fragment(s) on device {device_id}",
                fragment_ids.len()
            ),
        }
    }
}

/// Which way the controller reached the node (part of every action's result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionPath {
    Agent,
    Ssh,
    WakeOnLan,
}

/// A service's state as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Running,
    Stopped,
    Unknown,
}

/// How a command the agent ran ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandExit {
    Exited {
        code: i32,
    },
    Signalled {
        signal: i32,
    },
    TimedOut,
    SpawnFailed {
        error: String,
    },
    /// Started in the background and still running when the start check ended.
    Detached {
        pid: u32,
    },
}

/// One command the agent ran, with its output (each stream cut at [`OUTPUT_LIMIT_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReport {
    pub argv: Vec<String>,
    pub exit: CommandExit,
    pub stdout: String,
    pub stderr: String,
    /// Whether output was cut.
    pub truncated: bool,
    pub duration_ms: u64,
}

impl CommandReport {
    /// The report of `argv` before it runs; as it stands, what an empty command reports.
    pub fn not_started(argv: &[String]) -> CommandReport {
        CommandReport {
            argv: argv.to_vec(),
            exit: CommandExit::SpawnFailed {
                error: "empty command".into(),
            },
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            duration_ms: 0,
        }
    }

    pub fn succeeded(&self) -> bool {
        matches!(
            self.exit,
            CommandExit::Exited { code: 0 } | CommandExit::Detached { .. }
        )
    }
}

/// What happened to one fragment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FragmentOutcome {
    /// The fragment or its digest (or both) was removed.
    Deleted,
    /// Neither file existed: already deleted.
    AlreadyAbsent,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentResult {
    pub fragment_id: u64,
    pub outcome: FragmentOutcome,
}

/// The outcome of one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing was run: bad input, or a service or device the node does not declare.
    Refused { reason: String },
    Service {
        ok: bool,
        state: ServiceState,
        message: String,
        commands: Vec<CommandReport>,
    },
    Fragments {
        device_id: u32,
        results: Vec<FragmentResult>,
    },
}

/// What replaces the end of a text cut to fit a limit (a link frame, an SSH result line).
pub fn truncation_marker(omitted: usize) -> String {
    format!("… [truncated: {omitted} bytes omitted]")
}

/// Cuts `text` to at most `cap` bytes (or just the marker, when the marker alone is longer),
/// at a character boundary, ending in [`truncation_marker`]. Returns the bytes omitted (0: left
/// whole).
fn cut_text(text: &mut String, cap: usize) -> usize {
    if text.len() <= cap {
        return 0;
    }
    // The marker's length depends on the count it shows; the count only shrinks as the kept
    // prefix grows, so sizing the marker for the largest possible count is safe.
    let room = cap.saturating_sub(truncation_marker(text.len()).len());
    let mut keep = room.min(text.len());
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    let omitted = text.len() - keep;
    text.truncate(keep);
    text.push_str(&truncation_marker(omitted));
    omitted
}

/// What [`fit_texts`] made of a value.
#[derive(Debug)]
pub(crate) enum Fitted {
    Whole(Vec<u8>),
    Truncated {
        bytes: Vec<u8>,
        omitted: usize,
        /// The whole value's encoded length.
        encoded: usize,
    },
    /// Not even with every text cut to its marker.
    TooLarge {
        encoded: usize,
    },
}

/// Encodes `value` in at most `max` bytes, cutting its texts (those `visit` hands to its
/// callback) if needed, "water-filling" style: the largest cap such that every text longer than
/// it is cut to it ([`cut_text`]) and the encoding fits; shorter texts are kept whole. Pure.
pub(crate) fn fit_texts<T: Clone, E>(
    value: &T,
    max: usize,
    visit: impl Fn(&mut T, &mut dyn FnMut(&mut String) -> bool),
    encode: impl Fn(&T) -> Result<Vec<u8>, E>,
) -> Result<Fitted, E> {
    let whole = encode(value)?;
    if whole.len() <= max {
        return Ok(Fitted::Whole(whole));
    }
    let try_cap = |cap: usize, longest: &mut usize| {
        let mut cut = value.clone();
        let mut omitted = 0;
        visit(&mut cut, &mut |text| {
            *longest = (*longest).max(text.len());
            let n = cut_text(text, cap);
            omitted += n;
            n > 0
        });
        let bytes = encode(&cut)?;
        Ok((bytes.len() <= max).then_some((bytes, omitted)))
    };
    let mut longest = 0;
    let Some(mut best) = try_cap(0, &mut longest)? else {
        return Ok(Fitted::TooLarge {
            encoded: whole.len(),
        });
    };
    // The largest fitting cap in [0, longest): cap `longest` cuts nothing, which did not fit.
    let (mut fits, mut fails) = (0, longest);
    while fails - fits > 1 {
        let mid = fits + (fails - fits) / 2;
        match try_cap(mid, &mut 0)? {
            Some(found) => {
                best = found;
                fits = mid;
            }
            None => fails = mid,
        }
    }
    let (bytes, omitted) = best;
    Ok(Fitted::Truncated {
        bytes,
        omitted,
        encoded: whole.len(),
    })
}

impl Outcome {
    /// Calls `cut` on every text of the outcome; a command report whose output `cut` shortened
    /// (it returns true) is marked truncated.
    pub(crate) fn visit_texts(&mut self, cut: &mut dyn FnMut(&mut String) -> bool) {
        match self {
            Outcome::Refused { reason } => {
                cut(reason);
            }
            Outcome::Service {
                message, commands, ..
            } => {
                cut(message);
                for command in commands {
                    for arg in &mut command.argv {
                        cut(arg);
                    }
                    if let CommandExit::SpawnFailed { error } = &mut command.exit {
                        cut(error);
                    }
                    let out = cut(&mut command.stdout);
                    let err = cut(&mut command.stderr);
                    if out || err {
                        command.truncated = true;
                    }
                }
            }
            Outcome::Fragments { results, .. } => {
                for r in results {
                    if let FragmentOutcome::Failed(message) = &mut r.outcome {
                        cut(message);
                    }
                }
            }
        }
    }
}

/// Longest result line [`OperationResult::to_json_line`] prints when cutting texts can make it
/// fit: half the controller's SSH output limit (1 MiB). Command output can grow sixfold as JSON
/// (a NUL byte is `\u0000`), so four streams of 64 KiB would not fit that limit otherwise.
pub const MAX_JSON_LINE: usize = 512 * 1024;

/// Printed instead of a result that could not be encoded (cannot happen with these types).
const ENCODING_FAILED_LINE: &str = r#"{"operation":null,"outcome":{"refused":{"reason":"the result could not be encoded"}},"duration_ms":0}"#;

/// The result of one operation on one node, as the agent reports it over either path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationResult {
    /// `None` when the request could not even be parsed.
    pub operation: Option<Operation>,
    pub outcome: Outcome,
    pub duration_ms: u64,
}

impl OperationResult {
    pub fn refused(operation: Option<Operation>, reason: impl Into<String>) -> Self {
        OperationResult {
            operation,
            outcome: Outcome::Refused {
                reason: reason.into(),
            },
            duration_ms: 0,
        }
    }

    pub fn succeeded(&self) -> bool {
        match &self.outcome {
            Outcome::Refused { .. } => false,
            Outcome::Service { ok, .. } => *ok,
            Outcome::Fragments { results, .. } => results
                .iter()
                .all(|r| !matches!(r.outcome, FragmentOutcome::Failed(_))),
        }
    }

    pub fn is_refused(&self) -> bool {
        matches!(self.outcome, Outcome::Refused { .. })
    }

    /// One JSON line, what `nodewarden-agent op`/`ssh-dispatch` print: at most
    /// [`MAX_JSON_LINE`] bytes, its longest texts cut with [`truncation_marker`] if need be (a
    /// result whose lists alone are longer, which no declared operation makes, is printed whole).
    pub fn to_json_line(&self) -> String {
        // Serialising these plain types cannot fail (no maps, no non-string keys); the fallback
        // is still a valid result line.
        let visit = |r: &mut OperationResult, cut: &mut dyn FnMut(&mut String) -> bool| {
            r.outcome.visit_texts(cut)
        };
        let line = match fit_texts(self, MAX_JSON_LINE, visit, serde_json::to_vec) {
            Ok(Fitted::Whole(bytes) | Fitted::Truncated { bytes, .. }) => {
                String::from_utf8(bytes).ok()
            }
            Ok(Fitted::TooLarge { .. }) => serde_json::to_string(self).ok(),
            Err(_) => None,
        };
        line.unwrap_or_else(|| ENCODING_FAILED_LINE.to_string())
    }

    pub fn from_json_line(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_ids_accept_plain_decimals() {
        assert_eq!(parse_fragment_id("0"), Ok(0));
        assert_eq!(parse_fragment_id("101"), Ok(101));
        assert_eq!(parse_fragment_id("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn hostile_fragment_ids_are_rejected() {
        for bad in [
            "../x",
            "1/2",
            "-rf",
            "1;rm",
            "",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1\n",
            "\t1",
            "1.0",
            "1e3",
            "0x10",
            "١٢",
            "１",
            "01",
            "00",
            "18446744073709551616",
            "99999999999999999999999",
            "$(id)",
            "*",
            ".",
            "..",
        ] {
            assert!(parse_fragment_id(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(matches!(
            parse_fragment_id("-rf"),
            Err(OpsError::NotAnInteger { .. })
        ));
        assert!(matches!(
            parse_fragment_id("18446744073709551616"),
            Err(OpsError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_fragment_id("007"),
            Err(OpsError::LeadingZero { .. })
        ));
        assert_eq!(
            parse_fragment_id("../x").unwrap_err().to_string(),
            "fragment id \"../x\" is not a non-negative decimal integer (only the digits 0-9 are allowed)"
        );
    }

    #[test]
    fn device_ids_fit_the_mysql_int() {
        assert_eq!(parse_device_id("4294967295"), Ok(u32::MAX));
        assert!(parse_device_id("4294967296").is_err());
        assert!(parse_device_id("3/..").is_err());
    }

    #[test]
    fn errors_escape_and_shorten_hostile_input() {
        let e = parse_fragment_id(&format!("1\n{}", "x".repeat(100)))
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("\\n") && e.contains('…'), "{e}");
    }

    #[test]
    fn service_names_are_safe_tokens() {
        for good in ["storage-client", "ray_worker", "ray.head", "a", "A9"] {
            assert!(validate_service_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-rf",
            ".hidden",
            "a/b",
            "..",
            "a b",
            "a;b",
            "$x",
            "é",
            &"x".repeat(65),
        ] {
            assert!(validate_service_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lines_round_trip() {
        let ops = [
            Operation::service("storage-client", ServiceAction::Start),
            Operation::service("ray", ServiceAction::Status),
            Operation::DeleteFragments {
                device_id: 3,
                fragment_ids: vec![101, 102, u64::MAX],
            },
        ];
        for op in ops {
            let line = op.to_line().unwrap();
            assert_eq!(Operation::parse_line(&line), Ok(op));
        }
        assert_eq!(
            Operation::service("storage-client", ServiceAction::Restart)
                .to_line()
                .unwrap(),
            "nodewarden-op service storage-client restart"
        );
        assert_eq!(
            Operation::parse_line("nodewarden-op delete-fragments 3 101 102"),
            Ok(Operation::DeleteFragments {
                device_id: 3,
                fragment_ids: vec![101, 102]
            })
        );
        // Runs of spaces are tolerated (the words are the same).
        assert_eq!(
            Operation::parse_line("  nodewarden-op  service  x  stop "),
            Ok(Operation::service("x", ServiceAction::Stop))
        );
    }

    #[test]
    fn hostile_lines_are_refused() {
        type Expect = fn(&OpsError) -> bool;
        let cases: &[(&str, Expect)] = &[
            ("rm -rf /", |e| matches!(e, OpsError::NotAnOperation)),
            ("", |e| matches!(e, OpsError::NotAnOperation)),
            ("nodewarden-op", |e| matches!(e, OpsError::Malformed(_))),
            ("nodewarden-op delete-fragments 3 ../x", |e| {
                matches!(e, OpsError::NotAnInteger { .. })
            }),
            ("nodewarden-op delete-fragments 3 1/2", |e| {
                matches!(e, OpsError::NotAnInteger { .. })
            }),
            ("nodewarden-op delete-fragments 3 -rf", |e| {
                matches!(e, OpsError::NotAnInteger { .. })
            }),
            ("nodewarden-op delete-fragments 3 1;rm", |e| {
                matches!(e, OpsError::NotAnInteger { .. })
            }),
            ("nodewarden-op delete-fragments 3 1\trm", |e| {
                matches!(e, OpsError::BadCharacter(_))
            }),
            ("nodewarden-op delete-fragments 3 1\nrm -rf /", |e| {
                matches!(e, OpsError::BadCharacter(_))
            }),
            ("nodewarden-op delete-fragments 3", |e| {
                matches!(e, OpsError::NoFragments)
            }),
            ("nodewarden-op delete-fragments ../3 1", |e| {
                matches!(e, OpsError::NotAnInteger { .. })
            }),
            ("nodewarden-op service ../../bin/sh start", |e| {
                matches!(e, OpsError::BadServiceName(_))
            }),
            ("nodewarden-op service x start; rm -rf /", |e| {
                matches!(e, OpsError::UnknownAction(_))
            }),
            ("nodewarden-op service x start now", |e| {
                matches!(e, OpsError::Malformed(_))
            }),
            ("nodewarden-op service x kill", |e| {
                matches!(e, OpsError::UnknownAction(_))
            }),
            ("nodewarden-op exec sh", |e| {
                matches!(e, OpsError::UnknownOperation(_))
            }),
            ("nodewarden-opx service x start", |e| {
                matches!(e, OpsError::NotAnOperation)
            }),
        ];
        for (line, expected) in cases {
            match Operation::parse_line(line) {
                Ok(op) => panic!("{line:?} parsed as {op:?}"),
                Err(e) => assert!(expected(&e), "{line:?}: unexpected error {e:?}"),
            }
        }
    }

    #[test]
    fn line_and_fragment_limits() {
        let many: Vec<String> = (0..=MAX_FRAGMENTS_PER_OPERATION as u64)
            .map(|i| i.to_string())
            .collect();
        let line = format!("nodewarden-op delete-fragments 1 {}", many.join(" "));
        assert_eq!(
            Operation::parse_line(&line),
            Err(OpsError::TooManyFragments(MAX_FRAGMENTS_PER_OPERATION + 1))
        );
        assert!(matches!(
            Operation::parse_line(&"1 ".repeat(MAX_LINE_BYTES)),
            Err(OpsError::LineTooLong(_))
        ));
        // The largest operation still fits in a line.
        let biggest = Operation::DeleteFragments {
            device_id: u32::MAX,
            fragment_ids: vec![u64::MAX; MAX_FRAGMENTS_PER_OPERATION],
        };
        assert!(biggest.to_line().unwrap().len() <= MAX_LINE_BYTES);
    }

    #[test]
    fn dfs_pairs_group_per_device_and_reject_the_whole_batch_on_one_bad_id() {
        let ops =
            deletions_by_device([("101", "3"), ("102", "3"), ("201", "1"), ("101", "3")]).unwrap();
        assert_eq!(
            ops,
            vec![
                Operation::DeleteFragments {
                    device_id: 1,
                    fragment_ids: vec![201]
                },
                Operation::DeleteFragments {
                    device_id: 3,
                    fragment_ids: vec![101, 102]
                },
            ]
        );
        assert!(deletions_by_device([("101", "3"), ("../x", "3")]).is_err());
        assert!(deletions_by_device([("101", "-1")]).is_err());
        let big = deletions_from_ids((0..5000u64).map(|i| (i, 7)));
        assert_eq!(big.len(), 3);
        assert!(big.iter().all(|op| op.validate().is_ok()));
    }

    #[test]
    fn structured_operations_are_validated_like_lines() {
        assert!(
            Operation::service("../x", ServiceAction::Start)
                .to_line()
                .is_err()
        );
        assert_eq!(
            Operation::DeleteFragments {
                device_id: 1,
                fragment_ids: vec![]
            }
            .validate(),
            Err(OpsError::NoFragments)
        );
    }

    #[test]
    fn results_round_trip_as_json_lines() {
        let result = OperationResult {
            operation: Some(Operation::DeleteFragments {
                device_id: 3,
                fragment_ids: vec![1, 2, 3],
            }),
            outcome: Outcome::Fragments {
                device_id: 3,
                results: vec![
                    FragmentResult {
                        fragment_id: 1,
                        outcome: FragmentOutcome::Deleted,
                    },
                    FragmentResult {
                        fragment_id: 2,
                        outcome: FragmentOutcome::AlreadyAbsent,
                    },
                    FragmentResult {
                        fragment_id: 3,
                        outcome: FragmentOutcome::Failed("permission denied".into()),
                    },
                ],
            },
            duration_ms: 4,
        };
        let line = result.to_json_line();
        assert!(!line.contains('\n'));
        assert_eq!(OperationResult::from_json_line(&line).unwrap(), result);
        assert!(!result.succeeded());

        let service = OperationResult {
            operation: Some(Operation::service("x", ServiceAction::Start)),
            outcome: Outcome::Service {
                ok: true,
                state: ServiceState::Running,
                message: "started".into(),
                commands: vec![CommandReport {
                    argv: vec!["sleep".into(), "300".into()],
                    exit: CommandExit::Detached { pid: 42 },
                    stdout: String::new(),
                    stderr: String::new(),
                    truncated: false,
                    duration_ms: 1,
                }],
            },
            duration_ms: 2,
        };
        assert_eq!(
            OperationResult::from_json_line(&service.to_json_line()).unwrap(),
            service
        );
        assert!(service.succeeded());
        assert!(OperationResult::refused(None, "no").is_refused());

        // The same types travel over the agent link, encoded with postcard (which has no
        // self-describing formats: every enum here is externally tagged).
        for r in [&result, &service, &OperationResult::refused(None, "no")] {
            let bytes = postcard::to_allocvec(r).unwrap();
            assert_eq!(&postcard::from_bytes::<OperationResult>(&bytes).unwrap(), r);
        }
        let op = Operation::service("x", ServiceAction::Restart);
        let bytes = postcard::to_allocvec(&op).unwrap();
        assert_eq!(postcard::from_bytes::<Operation>(&bytes).unwrap(), op);
    }

    #[test]
    fn result_lines_stay_under_their_limit() {
        // A unit restart: two commands, each with 64 KiB of NUL bytes on both streams, 6 bytes
        // of JSON per byte: 1.5 MiB whole, over the controller's SSH output limit.
        let report = CommandReport {
            argv: vec!["systemctl".into(), "restart".into(), "x".into()],
            exit: CommandExit::Exited { code: 0 },
            stdout: "\0".repeat(OUTPUT_LIMIT_BYTES),
            stderr: "\0".repeat(OUTPUT_LIMIT_BYTES),
            truncated: false,
            duration_ms: 1,
        };
        let result = OperationResult {
            operation: Some(Operation::service("x", ServiceAction::Restart)),
            outcome: Outcome::Service {
                ok: true,
                state: ServiceState::Running,
                message: "unit x is running".into(),
                commands: vec![report.clone(), report],
            },
            duration_ms: 3,
        };
        assert!(serde_json::to_string(&result).unwrap().len() > 1024 * 1024);
        let line = result.to_json_line();
        assert!(line.len() <= MAX_JSON_LINE, "{}", line.len());
        assert!(line.len() > MAX_JSON_LINE - 64, "{}", line.len());
        assert!(!line.contains('\n'));
        let back = OperationResult::from_json_line(&line).unwrap();
        let Outcome::Service {
            message, commands, ..
        } = back.outcome
        else {
            panic!("{line}")
        };
        assert_eq!(message, "unit x is running");
        for c in &commands {
            assert!(c.truncated);
            assert_eq!(c.argv[0], "systemctl");
            for stream in [&c.stdout, &c.stderr] {
                assert!(stream.ends_with(" bytes omitted]"));
                assert!(stream.starts_with('\0'));
            }
        }
        // A small result is printed whole.
        let small = OperationResult::refused(None, "no");
        assert_eq!(small.to_json_line(), serde_json::to_string(&small).unwrap());
    }

    #[test]
    fn the_fallback_result_line_is_a_valid_refusal() {
        assert!(
            OperationResult::from_json_line(ENCODING_FAILED_LINE)
                .unwrap()
                .is_refused()
        );
    }
}
