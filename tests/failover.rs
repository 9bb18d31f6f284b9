//! Issue 16's agent side, with the real binaries on loopback: two controllers of one fleet (one
//! CA, each its own embedded store) and an agent that lists both and prefers the first. Drained
//! through the API, the first closes the link and turns the agent away: the agent is online on
//! the second within seconds and the first records it offline with the drain's reason. Killed
//! with SIGKILL, the second loses the agent to the first (resumed) again within 10 s.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodewarden_tests::lab::run_ok;
use nodewarden_tests::{ChildGuard, bin_path, free_port, wait_for};
use serde_json::Value;

struct Controller {
    child: Option<ChildGuard>,
    dir: PathBuf,
    link: u16,
    http: u16,
}

impl Controller {
    fn start(root: &Path, name: &str, ca: &Path) -> Controller {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (link, http) = (nodewarden_tests::free_udp_port(), free_port());
        let config = dir.join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "[link]\nlisten = \"127.0.0.1:{link}\"\nca_dir = {ca:?}\n\
                 [http]\nlisten = \"127.0.0.1:{http}\"\n[pushgateway]\nurl = \"\"\n"
            ),
        )
        .unwrap();
        let child = ChildGuard::spawn(
            Command::new(bin_path("nodewarden-controller"))
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .env("NODEWARDEN_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let c = Controller {
            child: Some(child),
            dir,
            link,
            http,
        };
        wait_for(
            &format!("controller {name}"),
            Duration::from_secs(20),
            || c.token().and_then(|_| c.get("/api/v1/nodes")),
        );
        c
    }

    fn token(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("data/api.token"))
            .ok()
            .map(|t| t.trim().to_string())
    }

    fn request(&self, method: &str, path: &str) -> Option<Value> {
        nodewarden_tests::bearer_json(
            method,
            &format!("http://127.0.0.1:{}{path}", self.http),
            &self.token()?,
        )
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.request("GET", path)
    }

    /// Whether `node` is online on this controller.
    fn online(&self, node: &str) -> bool {
        self.get("/api/v1/nodes")
            .and_then(|n| {
                n.as_array()?
                    .iter()
                    .find(|n| n["name"] == node)
                    .map(|n| n["online"] == true)
            })
            .unwrap_or(false)
    }
}

#[test]
fn an_agent_moves_to_another_controller_when_one_drains_or_dies() {
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("ca");
    run_ok(
        Command::new(bin_path("nodewarden-controller"))
            .args(["ca", "init", "--dir"])
            .arg(&ca)
            .args(["--san", "127.0.0.1"]),
    );
    let nodes = root.path().join("nodes");
    run_ok(
        Command::new(bin_path("nodewarden-controller"))
            .args(["ca", "issue", "n1", "--dir"])
            .arg(&ca)
            .arg("--out-dir")
            .arg(&nodes),
    );
    let a = Controller::start(root.path(), "a", &ca);
    let mut b = Controller::start(root.path(), "b", &ca);

    let config = root.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "roles = [\"other\"]\n[controller]\n\
             addresses = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\nprefer = \"127.0.0.1:{}\"\n\
             ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\nreport_interval_ms = 300\n\
             reconnect_max_ms = 1000\n",
            a.link,
            b.link,
            a.link,
            ca.join("ca.pem"),
            nodes.join("n1.pem"),
            nodes.join("n1.key"),
        ),
    )
    .unwrap();
    let _agent = nodewarden_tests::spawn_agent(&config);
    // The preferred controller first.
    wait_for(
        "n1 online on a (preferred)",
        Duration::from_secs(20),
        || a.online("n1").then_some(()),
    );
    assert!(!b.online("n1"));

    // Drain a: the agent moves to b, and a keeps turning it away.
    let drained = a
        .request("POST", "/api/v1/controller/drain")
        .expect("drain");
    assert_eq!(drained["draining"], true);
    assert_eq!(drained["links_closed"], 1);
    let moved = Instant::now();
    wait_for(
        "n1 online on b after a drained",
        Duration::from_secs(10),
        || b.online("n1").then_some(()),
    );
    eprintln!("drain → online on b: {:?}", moved.elapsed());
    assert!(!a.online("n1"));
    assert_eq!(a.get("/api/v1/controller/drain").unwrap()["draining"], true);
    wait_for(
        "a's offline event names the drain",
        Duration::from_secs(10),
        || {
            a.get("/api/v1/events?node=n1&limit=20")?
                .as_array()?
                .iter()
                .any(|e| {
                    e["kind"] == "offline"
                        && e["detail"]
                            .as_str()
                            .is_some_and(|d| d.contains("controller draining"))
                })
                .then_some(())
        },
    );

    // Resume a, kill b: the agent is back on a within 10 s.
    // Through the CLI, as an operator would.
    let cli = |args: &[&str]| {
        run_ok(
            Command::new(bin_path("nodewarden-controller"))
                .args(args)
                .arg("--api")
                .arg(format!("http://127.0.0.1:{}", a.http))
                .arg("--token-file")
                .arg(a.dir.join("data/api.token")),
        )
    };
    assert_eq!(cli(&["drain", "--status"]), "draining\n");
    assert!(cli(&["drain", "--resume"]).starts_with("not draining"));
    assert_eq!(
        a.get("/api/v1/controller/drain").unwrap()["draining"],
        false
    );
    drop(b.child.take());
    let killed = Instant::now();
    wait_for(
        "n1 online on a after b died",
        Duration::from_secs(10),
        || a.online("n1").then_some(()),
    );
    eprintln!("SIGKILL of b → online on a: {:?}", killed.elapsed());
}
