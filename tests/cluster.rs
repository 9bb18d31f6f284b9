//! Issue 16 with the real binaries on loopback: three controllers of one fleet (one CA, each its
//! own id) sharing one private MariaDB, three agents each listing all three controllers and
//! preferring a different one, and a real Pushgateway every controller is pointed at. Step by
//! step: the leases name each agent's controller; one controller is killed with SIGKILL and its
//! agent is linked elsewhere within 10 s; one is drained; one loses its database (a relay cut)
//! and gives its links up; a node whose controller dies while its agent is frozen is recorded
//! offline with `controller lost`. After every step the Pushgateway's fleet group counts the
//! online devices of the whole fleet, pushed by exactly one controller.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodewarden_tests::lab::run_ok;
use nodewarden_tests::mariadb::PrivateMariaDb;
use nodewarden_tests::proxy::TcpProxy;
use nodewarden_tests::{
    ChildGuard, bin_path, free_port, get_text, parse_exposition, service, start_pushgateway,
    wait_for,
};

/// Lease term of the test's controllers.
const TTL_MS: u64 = 2000;

struct Controller {
    id: String,
    child: Option<ChildGuard>,
    dir: PathBuf,
    link: u16,
    http: u16,
}

impl Controller {
    fn start(root: &Path, id: &str, ca: &Path, db_url: &str, pushgateway: u16) -> Controller {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let (link, http, peer) = (nodewarden_tests::free_udp_port(), free_port(), free_port());
        // Its peer certificate, where `[cluster]` looks for it by default.
        run_ok(
            Command::new(bin_path("nodewarden-controller"))
                .args(["ca", "issue-controller", id, "--san", "127.0.0.1", "--dir"])
                .arg(ca)
                .arg("--out-dir")
                .arg(ca),
        );
        let config = dir.join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "[link]\nlisten = \"127.0.0.1:{link}\"\nca_dir = {ca:?}\n\
                 [http]\nlisten = \"127.0.0.1:{http}\"\n\
                 [database]\nurl = \"{db_url}\"\nflush_interval_ms = 200\n\
                 [cluster]\nid = \"{id}\"\nlease_ttl_ms = {TTL_MS}\n\
                 peer_listen = \"127.0.0.1:{peer}\"\n\
                 [pushgateway]\nurl = \"http://127.0.0.1:{pushgateway}\"\ninterval_ms = 300\n"
            ),
        )
        .unwrap();
        let mut c = Controller {
            id: id.to_string(),
            child: None,
            dir,
            link,
            http,
        };
        c.restart();
        c
    }

    fn restart(&mut self) {
        let child = ChildGuard::spawn(
            Command::new(bin_path("nodewarden-controller"))
                .arg("serve")
                .arg("--config")
                .arg(self.dir.join("controller.toml"))
                .env("NODEWARDEN_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.dir.join("stderr.log")).unwrap()),
        );
        self.child = Some(child);
        wait_for(
            &format!("controller {}", self.id),
            Duration::from_secs(30),
            || self.metrics(),
        );
    }

    fn token(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("data/api.token"))
            .ok()
            .map(|t| t.trim().to_string())
    }

    fn api(&self, method: &str, path: &str) -> Option<serde_json::Value> {
        nodewarden_tests::bearer_json(
            method,
            &format!("http://127.0.0.1:{}{path}", self.http),
            &self.token()?,
        )
    }

    /// Runs an action through this controller's API: the answer's lines.
    fn action(&self, body: serde_json::Value) -> Vec<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/api/v1/actions", self.http);
        let mut response = ureq::post(&url)
            .header(
                "Authorization",
                &format!("Bearer {}", self.token().unwrap()),
            )
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{} {body}: {e}", self.id));
        let text = response.body_mut().read_to_string().unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A figure of this controller's `/metrics`.
    fn metric(&self, name: &str) -> Option<f64> {
        let families = self.metrics()?;
        families.get(name)?.value(&[])
    }

    fn metrics(&self) -> Option<std::collections::BTreeMap<String, nodewarden_tests::Family>> {
        let text = get_text(&format!("http://127.0.0.1:{}/metrics", self.http))?;
        Some(parse_exposition(&text.replace("# EOF\n", "")))
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }
}

/// `node → holder` of the live leases, as the database has them.
fn holders(db: &PrivateMariaDb) -> std::collections::BTreeMap<String, String> {
    db.try_sql(
        "SELECT node_id, holder FROM fleet.node_leases WHERE holder IS NOT NULL \
         AND expires_ms > FLOOR(UNIX_TIMESTAMP(NOW(3)) * 1000)",
    )
    .unwrap_or_default()
    .lines()
    .filter_map(|l| {
        let (n, h) = l.split_once('\t')?;
        Some((n.to_string(), h.to_string()))
    })
    .collect()
}

/// The fleet group's online device count on the Pushgateway.
fn pushed_device_count(port: u16) -> Option<f64> {
    let text = get_text(&format!("http://127.0.0.1:{port}/metrics"))?;
    parse_exposition(&text)
        .get("dontpanic_online_device_count")?
        .value(&[("job", "online_device_count")])
}

/// Waits until the Pushgateway counts `devices` online devices and exactly one live
/// controller holds the pusher lease; that controller's id.
fn pushed_once(port: u16, devices: f64, controllers: &[&Controller]) -> String {
    wait_for(
        &format!("{devices} devices pushed by one controller"),
        Duration::from_secs(15),
        || {
            let pushers: Vec<&str> = controllers
                .iter()
                .filter(|c| c.alive())
                .filter(|c| c.metric("nodewarden_controller_pusher") == Some(1.0))
                .map(|c| c.id.as_str())
                .collect();
            (pushers.len() == 1 && pushed_device_count(port) == Some(devices))
                .then(|| pushers[0].to_string())
        },
    )
}

#[test]
fn three_controllers_share_the_fleet_through_leases_in_mariadb() {
    let Some(pushgateway_bin) = service("NW_TEST_PUSHGATEWAY_BIN") else {
        return;
    };
    let Some(db) = PrivateMariaDb::start() else {
        return;
    };
    let pg_port = free_port();
    let _pushgateway = start_pushgateway(&pushgateway_bin, pg_port);
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("ca");
    let controller_bin = bin_path("nodewarden-controller");
    run_ok(
        Command::new(&controller_bin)
            .args(["ca", "init", "--dir"])
            .arg(&ca)
            .args(["--san", "127.0.0.1"]),
    );
    // c3 reaches the database through a relay the test can cut.
    let relay = TcpProxy::start(db.port);
    let relayed = db
        .url()
        .replace(&format!(":{}/", db.port), &format!(":{}/", relay.port));
    let mut c1 = Controller::start(root.path(), "c1", &ca, &db.url(), pg_port);
    let mut c2 = Controller::start(root.path(), "c2", &ca, &db.url(), pg_port);
    let c3 = Controller::start(root.path(), "c3", &ca, &relayed, pg_port);

    // Agent i prefers controller i and lists all three; each has one storage device.
    let links = [c1.link, c2.link, c3.link];
    let mut agents = Vec::new();
    for i in 1..=3 {
        let node = format!("n{i}");
        let certs = root.path().join("certs");
        run_ok(
            Command::new(&controller_bin)
                .args(["ca", "issue", &node, "--dir"])
                .arg(&ca)
                .arg("--out-dir")
                .arg(&certs),
        );
        let fragments = root.path().join(format!("fragments-{i}"));
        std::fs::create_dir_all(&fragments).unwrap();
        let config = root.path().join(format!("agent-{i}.toml"));
        let addresses: Vec<String> = links.iter().map(|l| format!("\"127.0.0.1:{l}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "roles = [\"storage\"]\n[controller]\naddresses = [{}]\n\
                 prefer = \"127.0.0.1:{}\"\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n\
                 report_interval_ms = 300\nreconnect_max_ms = 1000\n\
                 [[storage.devices]]\nid = {i}\nfragment_dir = {fragments:?}\n",
                addresses.join(", "),
                links[i - 1],
                ca.join("ca.pem"),
                certs.join(format!("{node}.pem")),
                certs.join(format!("{node}.key")),
            ),
        )
        .unwrap();
        agents.push(nodewarden_tests::spawn_agent(&config));
    }

    // Each agent on its preferred controller, the lease naming it.
    let expected: std::collections::BTreeMap<String, String> = (1..=3)
        .map(|i| (format!("n{i}"), format!("c{i}")))
        .collect();
    wait_for(
        "each node leased by its preferred controller",
        Duration::from_secs(30),
        || (holders(&db) == expected).then_some(()),
    );
    let all = [&c1, &c2, &c3];
    let pusher = pushed_once(pg_port, 3.0, &all);
    eprintln!("pusher: {pusher}");

    // Every controller serves the whole fleet: discovery, the node list and the online gauge
    // name the nodes the two others hold, from the database.
    for c in all {
        let targets = wait_for(
            &format!("{} discovering the three agents", c.id),
            Duration::from_secs(15),
            || {
                let groups = c.api("GET", "/api/v1/sd/agents")?;
                let mut nodes: Vec<String> = groups
                    .as_array()?
                    .iter()
                    .filter_map(|g| g["labels"]["node"].as_str().map(str::to_string))
                    .collect();
                nodes.sort();
                (nodes == ["n1", "n2", "n3"]).then_some(groups)
            },
        );
        for g in targets.as_array().unwrap() {
            let target = g["targets"][0].as_str().unwrap();
            assert!(target.starts_with("127.0.0.1:"), "{g}");
        }
        // A node first linked elsewhere is learnt from the database within a few seconds.
        let listed = wait_for(
            &format!("{} listing the three nodes online", c.id),
            Duration::from_secs(15),
            || {
                let listed = c.api("GET", "/api/v1/nodes")?;
                let online = listed
                    .as_array()?
                    .iter()
                    .filter(|n| n["online"] == true)
                    .count();
                (online == 3).then_some(listed)
            },
        );
        for n in listed.as_array().unwrap() {
            let mine = n["name"].as_str().unwrap().replace('n', "c") == c.id;
            assert_eq!(n["held_by"].is_null(), mine, "{} lists {n}", c.id);
        }
        let families = c.metrics().unwrap();
        let online = &families["nodewarden_controller_node_online"];
        for node in ["n1", "n2", "n3"] {
            assert_eq!(
                online.value(&[("node", node)]),
                Some(1.0),
                "{} on {node}",
                c.id
            );
        }
    }

    // The CLI says where a node is linked.
    let table = nodewarden_tests::lab::run_ok(
        Command::new(bin_path("nodewarden-controller"))
            .arg("nodes")
            .arg("--api")
            .arg(format!("http://127.0.0.1:{}", c1.http))
            .arg("--token-file")
            .arg(c1.dir.join("data/api.token")),
    );
    for line in ["n1 ", "n2 ", "n3 "] {
        let row = table
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_default();
        let expected = match line {
            "n1 " => " online ",
            "n2 " => " online@c2 ",
            _ => " online@c3 ",
        };
        assert!(row.contains(expected), "{line}: {row:?} in\n{table}");
    }

    // The peer endpoint takes controllers' certificates only: a node's is refused in the
    // handshake, and so is no certificate.
    let peer_port = |c: &Controller| -> String {
        let text = std::fs::read_to_string(c.dir.join("controller.toml")).unwrap();
        let line = text.lines().find(|l| l.starts_with("peer_listen")).unwrap();
        line.split('"').nth(1).unwrap().to_string()
    };
    let certs = root.path().join("certs");
    let curl = |extra: &[&std::ffi::OsStr]| {
        Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .arg("--cacert")
            .arg(ca.join("ca.pem"))
            .args(extra)
            .arg(format!("https://{}/peer/v1/operation", peer_port(&c2)))
            .args(["-H", "Content-Type: application/json", "-d", "{}"])
            .output()
            .unwrap()
    };
    let node_cert = curl(&[
        "--cert".as_ref(),
        certs.join("n1.pem").as_os_str(),
        "--key".as_ref(),
        certs.join("n1.key").as_os_str(),
    ]);
    assert!(
        !node_cert.status.success(),
        "a node's certificate was let in"
    );
    let no_cert = curl(&[]);
    assert!(!no_cert.status.success(), "no certificate was let in");
    let peer_cert = curl(&[
        "--cert".as_ref(),
        ca.join("peer-c1.pem").as_os_str(),
        "--key".as_ref(),
        ca.join("peer-c1.key").as_os_str(),
    ]);
    // A controller's gets through TLS; the empty body is refused by the endpoint itself.
    assert_eq!(
        String::from_utf8_lossy(&peer_cert.stdout),
        "422",
        "{peer_cert:?}"
    );

    // An action through each controller on the nodes the two others hold: forwarded to the
    // holder over mutual TLS, the fragment files deleted on the node, audited once naming both.
    let mut latencies = Vec::new();
    for (i, via) in all.iter().enumerate() {
        for j in (1..=3).filter(|j| *j != i + 1) {
            let fid = 100 + 10 * (i + 1) + j;
            let file = root.path().join(format!("fragments-{j}/{fid}"));
            std::fs::write(&file, "x").unwrap();
            let asked = Instant::now();
            let lines = via.action(serde_json::json!({
                "action": "delete-fragments",
                "pairs": [[fid, j]],
                "requested_by": "alice",
            }));
            latencies.push(asked.elapsed());
            let end = lines.last().unwrap();
            assert_eq!(end["ok"], true, "{} on n{j}: {lines:?}", via.id);
            assert_eq!(lines[1]["result"]["node"], format!("n{j}"), "{lines:?}");
            assert!(
                !file.exists(),
                "{} survived a deletion through {}",
                file.display(),
                via.id
            );
            // Written within a flush interval of the answer.
            let via_detail = format!(
                "forwarded by controller {} to controller c{j}, which holds the node's link",
                via.id
            );
            let query = format!(
                "SELECT e.kind, e.path, e.result, e.actor FROM fleet.events r JOIN fleet.events e \
                 ON e.operation_id = r.operation_id WHERE r.kind = 'requested' \
                 AND r.node_id = 'n{j}' AND r.detail = '{}' ORDER BY e.id",
                via_detail.replace('\'', "''")
            );
            let audit = wait_for(
                "the forwarded action's audit",
                Duration::from_secs(10),
                || db.try_sql(&query).filter(|a| a.lines().count() == 2),
            );
            let rows: Vec<&str> = audit.lines().collect();
            assert_eq!(rows[0], "requested\tagent\tNULL\talice", "{audit}");
            assert_eq!(rows[1], "operation\tagent\tok\talice", "{audit}");
        }
    }
    latencies.sort();
    eprintln!(
        "forwarded actions (API call, {} of them): median {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );

    // SIGKILL c1: n1 is linked to another controller within 10 s, with a newer epoch.
    drop(c1.child.take());
    let killed = Instant::now();
    let moved_to = wait_for(
        "n1 leased again after c1 died",
        Duration::from_secs(10),
        || holders(&db).get("n1").filter(|h| *h != "c1").cloned(),
    );
    eprintln!(
        "SIGKILL of c1 → n1 leased by {moved_to}: {:?}",
        killed.elapsed()
    );
    let epoch = db.sql("SELECT epoch FROM fleet.node_leases WHERE node_id = 'n1'");
    assert!(epoch.trim().parse::<i64>().unwrap() >= 2, "epoch {epoch}");
    let pusher = pushed_once(pg_port, 3.0, &[&c2, &c3]);
    eprintln!("pusher after c1 died: {pusher}");
    // No node was recorded offline by the take-over: the database says online throughout.
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM fleet.nodes WHERE online = 1")
            .trim(),
        "3"
    );

    // From each remaining controller, an action on every node works.
    for via in [&c2, &c3] {
        for j in 1..=3 {
            let fid = 200 + j;
            let file = root.path().join(format!("fragments-{j}/{fid}"));
            std::fs::write(&file, "x").unwrap();
            let lines = via.action(serde_json::json!({
                "action": "delete-fragments",
                "pairs": [[fid, j]],
                "requested_by": "bob",
            }));
            assert_eq!(
                lines.last().unwrap()["ok"],
                true,
                "{} on n{j}: {lines:?}",
                via.id
            );
            assert!(!file.exists(), "{} survived", file.display());
        }
    }

    // Drain c2: whatever it held moves to c3.
    let drained = c2.api("POST", "/api/v1/controller/drain").expect("drain");
    assert_eq!(drained["draining"], true);
    wait_for(
        "every node on c3 after c2 drained",
        Duration::from_secs(10),
        || {
            let h = holders(&db);
            (h.len() == 3 && h.values().all(|c| c == "c3")).then_some(())
        },
    );
    pushed_once(pg_port, 3.0, &[&c2, &c3]);
    c2.api("DELETE", "/api/v1/controller/drain")
        .expect("resume");

    // Cut c3 from the database: a lease term later it gives its links up, and they move to c2.
    relay.cut();
    let cut = Instant::now();
    wait_for("c3 without authority", Duration::from_secs(15), || {
        (c3.metric("nodewarden_controller_lease_authority") == Some(0.0)).then_some(())
    });
    wait_for(
        "every node on c2 after c3 lost its database",
        Duration::from_secs(15),
        || {
            let h = holders(&db);
            (h.len() == 3 && h.values().all(|c| c == "c2")).then_some(())
        },
    );
    eprintln!("c3's database cut → every node on c2: {:?}", cut.elapsed());
    pushed_once(pg_port, 3.0, &[&c2, &c3]);
    relay.restore();
    wait_for("c3's authority back", Duration::from_secs(15), || {
        (c3.metric("nodewarden_controller_lease_authority") == Some(1.0)).then_some(())
    });

    // n3's agent frozen, then its controller c2 killed: n1 and n2 move to c3, n3 has no new
    // holder and is recorded offline with `controller lost` once its lease lapses.
    let n3_pid = agents[2].pid();
    let signal = |sig: &str| {
        run_ok(Command::new("kill").arg(sig).arg(n3_pid.to_string()));
    };
    signal("-STOP");
    drop(c2.child.take());
    wait_for("n1 and n2 on c3", Duration::from_secs(15), || {
        let h = holders(&db);
        (h.get("n1").map(String::as_str) == Some("c3")
            && h.get("n2").map(String::as_str) == Some("c3"))
        .then_some(())
    });
    wait_for(
        "n3 recorded offline: controller lost",
        Duration::from_secs(15),
        || {
            let rows = db.try_sql(
                "SELECT detail FROM fleet.events WHERE node_id = 'n3' AND kind = 'offline' \
             AND detail LIKE 'controller lost: c2%'",
            )?;
            (rows.lines().count() == 1).then_some(())
        },
    );
    assert_eq!(
        db.sql("SELECT online FROM fleet.nodes WHERE node_id = 'n3'")
            .trim(),
        "0"
    );
    pushed_once(pg_port, 2.0, &[&c3]);
    // Thawed, n3's agent links to c3, the only controller left.
    signal("-CONT");
    wait_for("n3 back on c3", Duration::from_secs(20), || {
        (holders(&db).get("n3").map(String::as_str) == Some("c3")).then_some(())
    });
    pushed_once(pg_port, 3.0, &[&c3]);
    // c1 comes back: it takes no node from c3 (no agent moves without a reason) and the
    // database still says all three online.
    c1.restart();
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM fleet.nodes WHERE online = 1")
            .trim(),
        "3"
    );
}
