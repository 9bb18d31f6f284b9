//! A small fleet of real processes on loopback for the end-to-end tests (`tests/actions.rs`,
//! `tests/console.rs`): a CA, a controller with its SQLite store and HTTP API, and one agent "n1"
//! declaring a service "sleeper" (`sleep 300`) and a storage device 7. [`Lab::https`] serves the
//! controller's HTTP API over HTTPS with the link's server certificate.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::{ChildGuard, bin_path, free_port, read_pid, wait_for};

/// Lines a child wrote to stderr, collected by a thread (and echoed, prefixed, for failures).
#[derive(Clone, Default)]
pub struct Log(pub Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn attach(child: &mut ChildGuard, prefix: &str) -> Log {
        let log = Log::default();
        let stderr = child.0.stderr.take().expect("stderr piped");
        let (lines, prefix) = (log.0.clone(), prefix.to_string());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{prefix}] {line}");
                lines.lock().unwrap().push(line);
            }
        });
        log
    }

    pub fn count(&self, part: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(part))
            .count()
    }

    pub fn wait(&self, part: &str) {
        wait_for(
            &format!("a log line with {part:?}"),
            Duration::from_secs(20),
            || (self.count(part) > 0).then_some(()),
        );
    }
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills the declared service's process (by its pid file) if a failed test left it running.
pub struct ServiceCleanup(pub PathBuf);

impl Drop for ServiceCleanup {
    fn drop(&mut self) {
        if let Some(pid) = read_pid(&self.0) {
            // SAFETY: plain kill(2) of the test's own child process.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

pub const SERVICE_ARGV: [&str; 2] = ["sleep", "300"];

/// A CA, a controller, one node "n1" with a declared service "sleeper" and device 7.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub admin_port: u16,
    /// `[http] tls = true`: the API is `https://`, verified against `ca/ca.pem`.
    pub https: bool,
    pub controller: Option<(ChildGuard, Log)>,
    pub agent: Option<(ChildGuard, Log)>,
    _cleanup: ServiceCleanup,
}

impl Lab {
    pub fn new(controller_extra: &str) -> Lab {
        Lab::start(controller_extra, false)
    }

    /// The lab with the controller's HTTP server on HTTPS (`[http] tls = true`).
    pub fn https(controller_extra: &str) -> Lab {
        Lab::start(controller_extra, true)
    }

    fn start(controller_extra: &str, https: bool) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let controller = bin_path("nodewarden-controller");
        run_ok(
            Command::new(&controller)
                .args(["ca", "init", "--dir"])
                .arg(d.join("ca"))
                .args(["--san", "127.0.0.1"]),
        );
        run_ok(
            Command::new(&controller)
                .args(["ca", "issue", "n1", "--dir"])
                .arg(d.join("ca"))
                .arg("--out-dir")
                .arg(d.join("certs")),
        );
        let link_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .unwrap()
            .port();
        let admin_port = free_port();
        std::fs::create_dir(d.join("fragments")).unwrap();
        std::fs::write(
            d.join("agent.toml"),
            format!(
                "[controller]\naddress = \"127.0.0.1:{link_port}\"\nserver_name = \"127.0.0.1\"\n\
                 ca_file = \"certs/ca.pem\"\ncert_file = \"certs/n1.pem\"\nkey_file = \"certs/n1.key\"\n\
                 report_interval_ms = 200\n\n\
                 [[services]]\nname = \"sleeper\"\nstart = [\"{}\", \"{}\"]\nworkdir = \"{d}\"\n\
                 pid_file = \"{d}/sleeper.pid\"\nstop_grace = 5\n\n\
                 [[storage.devices]]\nid = 7\nfragment_dir = \"{d}/fragments\"\n",
                SERVICE_ARGV[0],
                SERVICE_ARGV[1],
                d = d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("controller.toml"),
            format!(
                "[link]\nlisten = \"127.0.0.1:{link_port}\"\nca_dir = \"ca\"\n\
                 [http]\nlisten = \"127.0.0.1:{admin_port}\"\ntls = {https}\n\
                 [pushgateway]\nurl = \"\"\n{controller_extra}"
            ),
        )
        .unwrap();
        let cleanup = ServiceCleanup(d.join("sleeper.pid"));
        let mut lab = Lab {
            dir,
            admin_port,
            https,
            controller: None,
            agent: None,
            _cleanup: cleanup,
        };
        lab.start_controller();
        lab.start_agent();
        lab
    }

    /// Starts the controller on `controller.toml` and waits for its HTTP endpoint.
    pub fn start_controller(&mut self) {
        let mut child = ChildGuard::spawn(
            Command::new(bin_path("nodewarden-controller"))
                .arg("serve")
                .arg("--config")
                .arg(self.path("controller.toml"))
                .env("NODEWARDEN_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let log = Log::attach(&mut child, "controller");
        log.wait("HTTP endpoint listening");
        self.controller = Some((child, log));
    }

    /// SIGKILL: the controller stops dead (no flush, no goodbye to agents), as in a crash.
    pub fn kill_controller(&mut self) {
        if let Some((mut child, _)) = self.controller.take() {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(child.pid() as i32, libc::SIGKILL) };
            let _ = child.0.wait();
        }
    }

    /// SIGTERM, and waits for the controller to exit (its store written).
    pub fn stop_controller(&mut self) {
        if let Some((mut child, _)) = self.controller.take() {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(child.pid() as i32, libc::SIGTERM) };
            let _ = child.0.wait();
        }
    }

    /// The controller's collected log.
    pub fn controller_log(&self) -> &Log {
        &self.controller.as_ref().expect("controller running").1
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn start_agent(&mut self) {
        self.start_agent_with(&[]);
    }

    /// [`Lab::start_agent`] with more command-line arguments.
    pub fn start_agent_with(&mut self, extra: &[String]) {
        self.start_agent_via(&[], extra);
    }

    /// [`Lab::start_agent_with`] through a wrapper command (`wrapper… nodewarden-agent …`), such
    /// as `hung_fuse`, which runs the agent in namespaces of its own; the guard holds the wrapper.
    pub fn start_agent_via(&mut self, wrapper: &[std::ffi::OsString], extra: &[String]) {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(bin_path("nodewarden-agent"));
                command
            }
            None => Command::new(bin_path("nodewarden-agent")),
        };
        let mut child = ChildGuard::spawn(
            command
                .arg("--config")
                .arg(self.path("agent.toml"))
                .arg("--web.listen-address=127.0.0.1:0")
                .args(extra)
                .env("NODEWARDEN_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let log = Log::attach(&mut child, "agent");
        self.agent = Some((child, log));
    }

    /// SIGTERM: the agent closes its connection, so the node goes offline at once.
    pub fn stop_agent(&mut self) {
        if let Some((mut child, _)) = self.agent.take() {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(child.pid() as i32, libc::SIGTERM) };
            let _ = child.0.wait();
        }
    }

    pub fn agent_log(&self) -> &Log {
        &self.agent.as_ref().expect("agent running").1
    }

    pub fn api(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.admin_port)
    }

    /// An HTTP client for [`Lab::api`]: over HTTPS it trusts the lab's CA and nothing else.
    /// Answers of any status are responses, not errors.
    pub fn http_agent(&self) -> ureq::Agent {
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if self.https {
            let pem = std::fs::read(self.path("ca/ca.pem")).expect("the lab's ca.pem");
            let ca = ureq::tls::Certificate::from_pem(&pem).expect("a PEM certificate");
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
                    .unversioned_rustls_crypto_provider(nodewarden_shared::tls::provider())
                    .build(),
            );
        }
        config.build().into()
    }

    /// The API token the controller generated in its data directory.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.path("data/api.token"))
            .expect("the controller's api.token")
            .trim()
            .to_string()
    }

    /// GETs an API path with `token`: the status and the answer's JSON (`Null` if it is none).
    pub fn get_as(&self, token: &str, path: &str) -> Result<(u16, Value), String> {
        let mut response = self
            .http_agent()
            .get(format!("{}{path}", self.api()))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// GETs an API path with the lab's token; fails the test unless the answer is 200.
    pub fn get_json(&self, path: &str) -> Value {
        match self.get_as(&self.token(), path) {
            Ok((200, answer)) => answer,
            other => panic!("GET {path}: {other:?}"),
        }
    }

    pub fn node(&self) -> Option<Value> {
        let (_, nodes) = self.get_as(&self.token(), "/api/v1/nodes").ok()?;
        nodes
            .as_array()?
            .iter()
            .find(|n| n["name"] == "n1")
            .cloned()
    }

    /// How many commands of `kind` the controller's `/metrics` counts over `path`
    /// (`nodewarden_controller_command_duration_seconds_count`; 0 when none).
    pub fn commands_counted(&self, kind: &str, path: &str) -> f64 {
        let text = self
            .http_agent()
            .get(format!("{}/metrics", self.api()))
            .call()
            .expect("the controller's /metrics")
            .body_mut()
            .read_to_string()
            .unwrap();
        crate::parse_exposition(&text)
            .get("nodewarden_controller_command_duration_seconds_count")
            .and_then(|f| f.value(&[("kind", kind), ("path", path)]))
            .unwrap_or(0.0)
    }

    /// Waits until the node's reported state of the service is `status` (and it is online or
    /// offline as `online` says).
    pub fn wait_service(&self, online: bool, status: &str) -> Value {
        wait_for(
            &format!("n1 online={online} with sleeper {status}"),
            Duration::from_secs(20),
            || {
                let n = self.node()?;
                (n["online"] == online && n["last_report"]["services"][0]["status"] == status)
                    .then_some(n)
            },
        )
    }

    /// The CLI with the API address and an empty data dir (no token file).
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(bin_path("nodewarden-controller"))
            .args(args)
            .arg("--api")
            .arg(self.api())
            .arg("--data-dir")
            .arg(self.path("data"))
            .args(["--requested-by", "test"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        eprintln!(
            "$ nodewarden-controller {args:?}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn pid(&self) -> u32 {
        read_pid(&self.path("sleeper.pid")).expect("a pid file")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.agent.take();
        self.controller.take();
    }
}
