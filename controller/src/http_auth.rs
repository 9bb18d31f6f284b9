//! Bearer-token authentication of the controller's HTTP server.
//!
//! Two token files: the API's (`<data_dir>/api.token` by default, generated with the system's
//! CSPRNG, mode 0600, when absent) and Prometheus's service-discovery token
//! (`/etc/nodewarden/prometheus-sd.token`, written by the package's postinst). Each file holds
//! one token per line (blank lines and `#` comments ignored), so a token can be rotated by adding
//! the new one before removing the old. Files are re-read when they change (a `stat` per request),
//! so rotation needs no restart. Tokens are compared in constant time.
//!
//! A line may name the operator the token belongs to, `NAME TOKEN` (a bearer token holds no
//! blank, so a line with one is unambiguous). A request with a named token acts as that operator
//! ([`Caller`], put into the request's extensions): the audit log records the name, whatever the
//! request claims in `requested_by`. An unnamed token leaves the claim as the only record.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Tokens shorter than this are refused when loading: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

type Stamp = Option<(u64, u64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

/// The tokens of one file, re-read when the file changes. A file that cannot be read or holds
/// no usable token admits nobody (and says why in the log once per change).
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<(Stamp, Vec<KnownToken>)>,
}

/// A token's digest and whom it identifies.
type KnownToken = ([u8; 32], Caller);

/// Who a request's token says it comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The operator a named token belongs to; `None` for an unnamed token.
    pub operator: Option<Arc<str>>,
}

/// Whether `name` may name an operator: 1–64 letters, digits and `._@-` (it goes into logs and
/// the audit log, so nothing that could forge a line or a field).
pub fn valid_operator_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

/// SHA-256 of a token: comparing digests of equal length hides the tokens' lengths too.
fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Constant-time equality of two digests.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The tokens a file's text holds, each with its operator's name if the line gives one
/// (`NAME TOKEN`): trimmed, blank and `#` lines skipped, too-short tokens and bad names refused
/// (returned as problems naming the line).
pub fn parse_tokens(text: &str) -> (Vec<(Option<String>, String)>, Vec<String>) {
    let mut tokens = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, token) = match line.split_once(char::is_whitespace) {
            Some((name, token)) => (Some(name), token.trim()),
            None => (None, line),
        };
        if let Some(name) = name
            && (!valid_operator_name(name) || token.contains(char::is_whitespace))
        {
            problems.push(format!(
                "line {}: expected TOKEN or NAME TOKEN (a name of 1-64 letters, digits and ._@-); ignored",
                i + 1
            ));
            continue;
        }
        if token.len() < MIN_TOKEN_LEN {
            problems.push(format!(
                "line {}: token shorter than {MIN_TOKEN_LEN} characters ignored",
                i + 1
            ));
            continue;
        }
        tokens.push((name.map(str::to_string), token.to_string()));
    }
    (tokens, problems)
}

impl TokenFile {
    pub fn new(path: impl Into<PathBuf>) -> TokenFile {
        TokenFile {
            path: path.into(),
            // A stamp no file has, so the first check loads.
            state: Mutex::new((Some((u64::MAX, 0, 0, 0)), Vec::new())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn refresh(&self) {
        let now = stamp(&self.path);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 == now {
            return;
        }
        state.0 = now;
        state.1 = match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let (tokens, problems) = parse_tokens(&text);
                for p in problems {
                    tracing::warn!(file = %self.path.display(), "{p}");
                }
                if tokens.is_empty() {
                    tracing::warn!(file = %self.path.display(), "no usable token: every request with it is refused");
                }
                tokens
                    .into_iter()
                    .map(|(name, token)| {
                        let operator = name.map(Arc::from);
                        (digest(token.as_bytes()), Caller { operator })
                    })
                    .collect()
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "token file unreadable: every request with it is refused");
                Vec::new()
            }
        };
    }

    /// Whether `presented` is one of the file's tokens.
    pub fn admits(&self, presented: &str) -> bool {
        self.identify(presented).is_some()
    }

    /// The caller `presented` identifies, if it is one of the file's tokens. Every token is
    /// compared, in constant time, whichever matches.
    pub fn identify(&self, presented: &str) -> Option<Caller> {
        self.refresh();
        let presented = digest(presented.as_bytes());
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for (token, caller) in &state.1 {
            if same(token, &presented) && found.is_none() {
                found = Some(caller.clone());
            }
        }
        found
    }
}

/// Creates `path` with a fresh random token (32 bytes from the system CSPRNG, hex), mode 0600,
/// unless it exists. Returns whether it was created.
pub fn ensure_token_file(path: &Path) -> std::io::Result<bool> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| std::io::Error::other("the system random generator failed"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(format!("{token}\n").as_bytes())?;
            f.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// The token files requests are checked against.
#[derive(Debug, Clone)]
pub struct Auth {
    pub api: Arc<TokenFile>,
    pub sd: Arc<TokenFile>,
    /// Alertmanager's webhook token.
    pub alerts: Arc<TokenFile>,
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a valid bearer token is required\n",
    )
        .into_response()
}

/// The `/api/v1` API: the API token only.
/// The caller, named or not, goes into the request's extensions for the handlers.
pub async fn require_api(State(auth): State<Auth>, mut req: Request, next: Next) -> Response {
    match bearer(&req).and_then(|t| auth.api.identify(t)) {
        Some(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        None => unauthorized(),
    }
}

/// Service discovery: Prometheus's token, or the API token.
pub async fn require_sd(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    match bearer(&req) {
        Some(t) if auth.sd.admits(t) || auth.api.admits(t) => next.run(req).await,
        _ => unauthorized(),
    }
}

/// Alertmanager's webhook: its own token, or the API token (an operator testing the receiver).
pub async fn require_alerts(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    match bearer(&req) {
        Some(t) if auth.alerts.admits(t) || auth.api.admits(t) => next.run(req).await,
        _ => unauthorized(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn tokens_one_per_line_short_ones_refused() {
        let (tokens, problems) =
            parse_tokens("# comment\n\n  0123456789abcdef0123  \nshort\nfedcba9876543210\n");
        let unnamed = |t: &str| (None, t.to_string());
        assert_eq!(
            tokens,
            [unnamed("0123456789abcdef0123"), unnamed("fedcba9876543210")]
        );
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("line 4:"), "{problems:?}");
    }

    #[test]
    fn named_tokens_identify_their_operator() {
        let text = "alice 0123456789abcdef0123\n\
                    bob.ops@site\tfedcba9876543210fedc\n\
                    unnamed-token-0123456789\n\
                    bad\u{7}name 1111111111111111\n\
                    carol 2222 2222 2222 2222 2222\n\
                    dave short\n";
        let (tokens, problems) = parse_tokens(text);
        let names: Vec<Option<&str>> = tokens.iter().map(|(n, _)| n.as_deref()).collect();
        assert_eq!(names, [Some("alice"), Some("bob.ops@site"), None]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        for (problem, line) in problems.iter().zip([4, 5, 6]) {
            assert!(problem.starts_with(&format!("line {line}:")), "{problem}");
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.token");
        std::fs::write(&path, text).unwrap();
        let file = TokenFile::new(&path);
        let operator = |t: &str| file.identify(t).map(|c| c.operator.map(|o| o.to_string()));
        assert_eq!(operator("0123456789abcdef0123"), Some(Some("alice".into())));
        assert_eq!(
            operator("fedcba9876543210fedc"),
            Some(Some("bob.ops@site".into()))
        );
        assert_eq!(operator("unnamed-token-0123456789"), Some(None));
        // A name is not a token, nor is a refused line's token.
        assert_eq!(operator("alice"), None);
        assert_eq!(operator("1111111111111111"), None);
        assert!(valid_operator_name("a") && !valid_operator_name(""));
        assert!(!valid_operator_name(&"x".repeat(65)) && !valid_operator_name("a b"));
    }

    #[test]
    fn generated_file_is_private_and_admits_its_token_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/api.token");
        assert!(ensure_token_file(&path).unwrap());
        assert!(
            !ensure_token_file(&path).unwrap(),
            "an existing file is kept"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
        assert_eq!(token.len(), 64);
        let file = TokenFile::new(&path);
        assert!(file.admits(&token));
        assert!(!file.admits(&token[..63]));
        assert!(!file.admits(""));
        // Rotation: a rewritten file is picked up without a restart.
        std::fs::write(&path, "new-token-0123456789\n").unwrap();
        assert!(file.admits("new-token-0123456789"));
        assert!(!file.admits(&token));
        // A missing file admits nobody.
        let missing = TokenFile::new(dir.path().join("none"));
        assert!(!missing.admits("anything-long-enough"));
    }
}
