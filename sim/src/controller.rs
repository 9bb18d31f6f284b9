//! The controller under test: started by the simulator (`--spawn-controller`: the release
//! binary on loopback ports, SQLite in a fresh data directory or `--database-url`), killed and
//! restarted on purpose, and measured from `/proc` (CPU time, resident memory). Also the few API
//! calls the simulator makes.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nodewarden_controller::wire::ActionEvent;

/// Clock ticks per second of `/proc/<pid>/stat` (`sysconf(_SC_CLK_TCK)`).
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; here 12 and 13 (state is 0).
    let ticks: f64 = fields
        .get(11..13)
        .context("short stat")?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    Ok(ticks / clock_ticks())
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A controller process this simulator runs.
pub struct Spawned {
    bin: PathBuf,
    config: PathBuf,
    pub data_dir: PathBuf,
    pub link: SocketAddr,
    pub http: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
}

impl Spawned {
    pub fn start(
        bin: &Path,
        run_dir: &Path,
        ca_dir: &Path,
        database_url: Option<&str>,
        idle_timeout_ms: u64,
        extra: &str,
    ) -> anyhow::Result<Spawned> {
        let data_dir = run_dir.join("data");
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let link: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let database = match database_url {
            Some(url) => format!("[database]\nurl = {url:?}\n"),
            None => String::new(),
        };
        let config = run_dir.join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[link]\nlisten = \"{link}\"\nca_dir = {:?}\n\
                 idle_timeout_ms = {idle_timeout_ms}\n\
                 [http]\nlisten = \"{http}\"\n[pushgateway]\nurl = \"\"\n{database}{extra}",
                data_dir.display().to_string(),
                ca_dir.display().to_string(),
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let mut c = Spawned {
            bin: bin.to_path_buf(),
            config,
            data_dir,
            link,
            http,
            child: None,
            log: run_dir.join("controller.log"),
        };
        c.launch()?;
        Ok(c)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("NODEWARDEN_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        // Ready when its HTTP port answers (the link is bound before it).
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&self.http, Duration::from_millis(200)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "the controller exited ({status}) at start; see {}",
                    self.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the controller did not listen within 60 s; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn signal(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) of our own child, not yet reaped.
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
    }

    /// SIGKILL (no flush, no goodbye), then the same controller again on the same data.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGKILL);
        self.launch()
    }

    /// SIGKILL, not restarted (a cluster's controller lost).
    pub fn stop_hard(&mut self) {
        self.signal(libc::SIGKILL);
    }

    /// SIGTERM, and waits for the exit (the store flushed).
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
    }

    pub fn api_token(&self) -> anyhow::Result<String> {
        let path = self.data_dir.join("api.token");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string())
    }

    /// The embedded store's file.
    pub fn sqlite_url(&self) -> String {
        format!(
            "sqlite://{}?mode=ro",
            self.data_dir.join("nodewarden.db").display()
        )
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// `POST /api/v1/actions` for every node; returns each node with the time from the request to
/// its result line, and how many results were not ok.
pub fn fanout(
    api: &str,
    token: &str,
    action: &str,
) -> anyhow::Result<(Vec<(String, Duration)>, usize)> {
    let mut body = serde_json::json!({
        "selector": {"all": true},
        "action": action,
        "requested_by": "fleet-sim",
    });
    if action != "delete-fragments" {
        body["service"] = crate::node::SERVICE.into();
    }
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build(),
    );
    let start = Instant::now();
    let response = agent
        .post(&format!("{api}/api/v1/actions"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(serde_json::to_vec(&body)?.as_slice())
        .context("POST /api/v1/actions")?;
    if response.status() != 200 {
        bail!("POST /api/v1/actions: {}", response.status());
    }
    let reader = BufReader::new(response.into_body().into_reader());
    let mut times = Vec::new();
    let mut failed = 0;
    for line in reader.lines() {
        let line = line.context("reading the action's answer")?;
        let event: ActionEvent = serde_json::from_str(&line)
            .with_context(|| format!("an answer line that is not an action event: {line}"))?;
        if let ActionEvent::Result { result, .. } = event {
            times.push((result.node.clone(), start.elapsed()));
            if !result.succeeded() {
                failed += 1;
            }
        }
    }
    Ok((times, failed))
}
