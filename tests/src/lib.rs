//! Support for the cross-crate integration tests: the real services that `scripts/test.sh`
//! started, the workspace's binaries, child processes that die with the test, and a parser for
//! the Prometheus text format used to compare exporters.

pub mod dfs;
pub mod fuse;
pub mod lab;
pub mod mariadb;
pub mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The value of a service variable exported by `scripts/services.sh`. With
/// `NW_REQUIRE_SERVICES=1` or `CI=true` a missing service fails the test; otherwise the test is
/// skipped with a message (a developer running plain `cargo test`).
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let required = std::env::var("NW_REQUIRE_SERVICES").as_deref() == Ok("1")
                || std::env::var("CI").as_deref() == Ok("true");
            if required {
                panic!("{var} is not set: run the suite through scripts/test.sh");
            }
            eprintln!("SKIPPED: {var} is not set (run scripts/test.sh for the real services)");
            None
        }
    }
}

/// A workspace binary, built by `cargo build --workspace` (scripts/test.sh does it first).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run cargo build --workspace",
        path.display()
    );
    path
}

/// A free UDP port on loopback (the agent link is QUIC).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free UDP port")
}

/// A port on 127.0.0.1 free for both TCP and UDP (an HTTP server or a QUIC endpoint), picked at
/// random below the kernel's ephemeral range. A port the OS hands out for `bind(0)` lies inside
/// that range, where any test's outgoing connection may take it as its local port before the
/// process under test binds it (seen: "Address already in use" under a parallel test run); below
/// the range only another test's `free_port` can, and 12,000 random ports make that unlikely.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOW: u16 = 20000;
    if ephemeral_low > LOW + 1000 {
        let span = u64::from(ephemeral_low - LOW);
        for _ in 0..500 {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
            hasher.write_u32(std::process::id());
            let port = LOW + (hasher.finish() % span) as u16;
            let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
            let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
            if tcp.is_ok() && udp.is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        ChildGuard(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}")),
        )
    }
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` until it returns `Some`, for at most `limit`. This awaits a readiness the
/// program under test offers no notification for (a port answering, a series appearing).
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid a service's pid file names, if it holds one.
pub fn read_pid(pid_file: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Alive and not a zombie (a detached process's parent may be a PID 1 that does not reap).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.get(s.rfind(')')? + 1..)?.to_string();
            after.split_whitespace().next().map(|st| st != "Z")
        })
        .unwrap_or(false)
}

/// A process's argv, from /proc.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// GETs a URL as text, `None` on any failure.
pub fn get_text(url: &str) -> Option<String> {
    ureq::get(url).call().ok()?.body_mut().read_to_string().ok()
}

/// A private Prometheus on `port` (a test's own, killed with the guard), once it is ready; its
/// log goes beside `data` (`<data>.log`).
pub fn start_prometheus(
    bin: &str,
    config: &std::path::Path,
    data: &std::path::Path,
    port: u16,
) -> (ChildGuard, String) {
    let log = std::fs::File::create(data.with_extension("log")).unwrap();
    let guard = ChildGuard::spawn(
        Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_for(
        "a private Prometheus to be ready",
        Duration::from_secs(60),
        || get_text(&format!("{url}/-/ready")),
    );
    (guard, url)
}

/// Prometheus's answer to an instant query (POSTed, so no expression needs URL escaping);
/// `Null` when it could not be had.
pub fn prometheus_query(prometheus: &str, expr: &str) -> serde_json::Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = agent
        .post(format!("{prometheus}/api/v1/query"))
        .send_form([("query", expr)])
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

/// The values of `labels` of each series of a query answer, sorted (a missing label is "").
pub fn series_labels(answer: &serde_json::Value, labels: &[&str]) -> Vec<Vec<String>> {
    let mut series: Vec<Vec<String>> = answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            labels
                .iter()
                .map(|l| s["metric"][*l].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .collect();
    series.sort();
    series
}

/// How many series a query answer holds.
pub fn result_len(answer: &serde_json::Value) -> usize {
    answer["data"]["result"].as_array().map_or(0, Vec::len)
}

/// One sample: its labels (sorted) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A family from the text format: its declared type and samples.
#[derive(Debug, Clone, Default)]
pub struct Family {
    pub kind: String,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn label_names(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .flat_map(|s| s.labels.keys().cloned())
            .collect()
    }
    /// The value of the sample whose labels include all of `want`.
    pub fn value(&self, want: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

/// Parses text format 0.0.4 into families by name. Panics with the line on malformed input,
/// which in a test is the failure wanted.
pub fn parse_exposition(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
            families.entry(name.to_string()).or_default().kind = kind.to_string();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let close = line
                    .rfind('}')
                    .unwrap_or_else(|| panic!("bad sample {line:?}"));
                (
                    &line[..open],
                    parse_labels(&line[open + 1..close]),
                    &line[close + 1..],
                )
            }
            None => {
                let (n, r) = line
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("bad sample {line:?}"));
                (n, BTreeMap::new(), r)
            }
        };
        let value_text = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value {line:?}"));
        let value = match value_text {
            "+Inf" | "inf" => f64::INFINITY,
            "-Inf" | "-inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value {line:?}")),
        };
        families
            .entry(name.to_string())
            .or_default()
            .samples
            .push(Sample { labels, value });
    }
    families
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if name.is_empty() {
            break;
        }
        chars.next(); // '='
        assert_eq!(chars.next(), Some('"'), "label {name} in {text:?}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name.trim().to_string(), value);
    }
    labels
}

/// `method` (GET, POST with no body, DELETE) on `url` with a bearer token: the JSON answer, or
/// `None` for a failed request or an answer that is not JSON.
pub fn bearer_json(method: &str, url: &str, token: &str) -> Option<serde_json::Value> {
    let bearer = format!("Bearer {token}");
    let mut response = match method {
        "POST" => ureq::post(url)
            .header("Authorization", &bearer)
            .send_empty(),
        "DELETE" => ureq::delete(url).header("Authorization", &bearer).call(),
        _ => ureq::get(url).header("Authorization", &bearer).call(),
    }
    .ok()?;
    serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()
}

/// The agent binary on `config`, its metrics on a free loopback port, quiet.
pub fn spawn_agent(config: &std::path::Path) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(bin_path("nodewarden-agent"))
            .arg("--config")
            .arg(config)
            .arg("--web.listen-address=127.0.0.1:0")
            .env("NODEWARDEN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// A Pushgateway on `127.0.0.1:port`, ready.
pub fn start_pushgateway(bin: &str, port: u16) -> ChildGuard {
    let child = ChildGuard::spawn(
        Command::new(bin)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for("the Pushgateway ready", Duration::from_secs(30), || {
        get_text(&format!("http://127.0.0.1:{port}/-/ready"))
    });
    child
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_labels_and_escapes() {
        let f = parse_exposition(
            "# HELP a_total x\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\\\\z\"} 2\n\
             # TYPE b gauge\nb 1.5e+07\n",
        );
        assert_eq!(f["a_total"].kind, "counter");
        assert_eq!(f["a_total"].samples[0].labels["y"], "q\"\\z");
        assert_eq!(f["b"].value(&[]), Some(1.5e7));
    }
}
