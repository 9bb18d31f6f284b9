//! The CLI's side of `POST /api/v1/actions` (`nodewarden-controller action …` and
//! `delete-fragments …`): builds the request, sends it with the API token when there is one,
//! prints each node's result as it arrives and ends with [`actions::render_table`].

use std::io::BufRead as _;
use std::path::{Path, PathBuf};

use nodewarden_shared::ops::ActionPath;

use crate::actions::{self, NodeActionResult};
use crate::api_actions::{ActionEvent, ActionRequest, IdText};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{api}: {message}")]
    Api { api: String, message: String },
}

/// `fid device` pairs from a file's text: one pair per line (blank lines and `#` comments
/// skipped), or a JSON array of pairs. Ids stay text: the controller validates them.
pub fn parse_pairs(text: &str, file: &str) -> Result<Vec<(IdText, IdText)>, ClientError> {
    let err = |message: String| ClientError::File {
        file: file.to_string(),
        message,
    };
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text)
            .map_err(|e| err(format!("not a JSON list of pairs: {e}")));
    }
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
                return Err(err(format!(
                    "line {}: expected `fragment_id device_id`, got {} word(s)",
                    i + 1,
                    words.len()
                )));
            }
        }
    }
    if pairs.is_empty() {
        return Err(err("no fragment pairs".into()));
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
pub fn read_token(explicit: Option<&Path>, default: &Path) -> Result<Option<String>, ClientError> {
    Ok(read_optional(explicit, default, "token")?.map(|t| t.trim().to_string()))
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

impl ApiClient {
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
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(None)
            .tls_config(tls_config(self.ca_pem.as_deref()).map_err(&err)?)
            .build()
            .into();
        let body = serde_json::to_string(request).map_err(|e| err(e.to_string()))?;
        let mut call = agent.post(&url).content_type("application/json");
        if let Some(token) = &self.token {
            call = call.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = call.send(body).map_err(|e| err(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or(text);
            return Err(err(format!("{status}: {}", message.trim())));
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
    }

    #[test]
    fn token_files() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("none");
        assert_eq!(read_token(None, &missing).unwrap(), None);
        assert!(read_token(Some(&missing), &missing).is_err());
        let t = d.path().join("api.token");
        std::fs::write(&t, "s3cret\n").unwrap();
        assert_eq!(read_token(None, &t).unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&t, "\n").unwrap();
        let e = read_token(None, &t).unwrap_err().to_string();
        assert!(e.ends_with("the token file is empty"), "{e}");
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
