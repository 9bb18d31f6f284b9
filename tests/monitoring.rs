//! Issue 5's controller side with real programs on loopback: a Pushgateway of the test's own
//! (`NW_TEST_PUSHGATEWAY_BIN`) holds the fleet aggregates the controller pushes and forgets a
//! departed device; the controller's HTTP service discovery and its token checks; a Prometheus of
//! the test's own (`NW_TEST_PROMETHEUS_BIN`) running the SHIPPED configuration (rewritten to the
//! test's ports and files) discovers the agents through the controller, scrapes them, the
//! Pushgateway and the controller, and answers every expression of the shipped dashboard; the DFS
//! source reads a `DEVICE` table in MariaDB (`NW_TEST_MYSQL_URL`) and its values are what is
//! pushed. Needs `cargo build --workspace`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nodewarden_tests::lab::run_ok;
use nodewarden_tests::{
    ChildGuard, bin_path, free_port, parse_exposition, prometheus_query as query, result_len,
    series_labels, service, start_prometheus, wait_for,
};
use serde_json::Value;

const SD_TOKEN: &str = "sd-token-for-the-monitoring-test-0123456789";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository")
        .to_path_buf()
}

/// GET with an optional bearer token: (status, body); `None` when nothing answers.
fn get(url: &str, token: Option<&str>) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(t) = token {
        request = request.header("Authorization", &format!("Bearer {t}"));
    }
    let mut response = request.call().ok()?;
    let status = response.status().as_u16();
    Some((status, response.body_mut().read_to_string().ok()?))
}

fn get_ok(url: &str, token: Option<&str>) -> Option<String> {
    get(url, token).and_then(|(s, b)| (s == 200).then_some(b))
}

struct Fleet {
    dir: tempfile::TempDir,
    link_port: u16,
    http_port: u16,
    pushgateway_port: u16,
    _pushgateway: Option<ChildGuard>,
    /// Stands in for a hung Pushgateway: connections queue in its backlog, nothing answers.
    _black_hole: Option<std::net::TcpListener>,
    controller: Option<ChildGuard>,
    agents: BTreeMap<String, (ChildGuard, u16)>,
}

impl Fleet {
    /// A Pushgateway of its own (or, without a binary, a listener that never answers) and a CA.
    fn new(pushgateway_bin: Option<&str>) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pushgateway_port, pushgateway, black_hole) = match pushgateway_bin {
            Some(bin) => {
                let port = free_port();
                let child = ChildGuard::spawn(
                    Command::new(bin)
                        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                );
                wait_for("the Pushgateway", Duration::from_secs(30), || {
                    get_ok(&format!("http://127.0.0.1:{port}/-/ready"), None)
                });
                (port, Some(child), None)
            }
            None => {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let port = listener.local_addr().unwrap().port();
                (port, None, Some(listener))
            }
        };
        run_ok(
            Command::new(bin_path("nodewarden-controller"))
                .args(["ca", "init", "--dir"])
                .arg(dir.path().join("ca"))
                .args(["--san", "127.0.0.1"]),
        );
        std::fs::write(dir.path().join("sd.token"), format!("{SD_TOKEN}\n")).unwrap();
        let link_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("free UDP port");
        Fleet {
            dir,
            link_port,
            http_port: free_port(),
            pushgateway_port,
            _pushgateway: pushgateway,
            _black_hole: black_hole,
            controller: None,
            agents: BTreeMap::new(),
        }
    }

    fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn pushgateway(&self) -> String {
        format!("http://127.0.0.1:{}", self.pushgateway_port)
    }

    fn start_controller(&mut self, dfs_url: Option<&str>) {
        self.start_controller_with(dfs_url, "")
    }

    /// The same with more sections appended to its config.
    fn start_controller_with(&mut self, dfs_url: Option<&str>, extra: &str) {
        let dfs = dfs_url
            .map(|u| format!("[dfs]\nurl = \"{u}\"\ninterval_ms = 500\n"))
            .unwrap_or_default()
            + extra;
        let config = self.dir.path().join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "[link]\nlisten = \"127.0.0.1:{}\"\nca_dir = \"ca\"\n\
                 [http]\nlisten = \"127.0.0.1:{}\"\nsd_token_file = \"sd.token\"\n\
                 [pushgateway]\nurl = \"{}\"\ninterval_ms = 500\n{dfs}",
                self.link_port,
                self.http_port,
                self.pushgateway()
            ),
        )
        .unwrap();
        self.controller = Some(ChildGuard::spawn(
            Command::new(bin_path("nodewarden-controller"))
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .env("NODEWARDEN_LOG", "warn")
                .stdout(Stdio::null()),
        ));
        let metrics = format!("{}/metrics", self.http());
        wait_for("the controller's /metrics", Duration::from_secs(20), || {
            get_ok(&metrics, None)
        });
    }

    fn api_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/api.token"))
            .expect("api.token generated on first start")
            .trim()
            .to_string()
    }

    /// An agent with one storage device backed by a real temporary folder.
    fn start_agent(&mut self, node: &str, device_id: u32) {
        self.start_agent_with(node, device_id, "")
    }

    /// The same with more sections appended to its config.
    fn start_agent_with(&mut self, node: &str, device_id: u32, extra: &str) {
        let out = self.dir.path().join("nodes");
        run_ok(
            Command::new(bin_path("nodewarden-controller"))
                .args(["ca", "issue", node, "--dir"])
                .arg(self.dir.path().join("ca"))
                .arg("--out-dir")
                .arg(&out),
        );
        let fragments = self.dir.path().join(format!("fragments-{node}"));
        std::fs::create_dir_all(&fragments).unwrap();
        let config = self.dir.path().join(format!("agent-{node}.toml"));
        std::fs::write(
            &config,
            format!(
                "roles = [\"storage\"]\n\
                 [controller]\naddress = \"127.0.0.1:{}\"\nserver_name = \"127.0.0.1\"\n\
                 ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\nreport_interval_ms = 300\n\
                 reconnect_max_ms = 1000\n\
                 [[storage.devices]]\nid = {device_id}\nfragment_dir = {:?}\n{extra}",
                self.link_port,
                self.dir.path().join("ca/ca.pem"),
                out.join(format!("{node}.pem")),
                out.join(format!("{node}.key")),
                fragments,
            ),
        )
        .unwrap();
        let port = free_port();
        let child = ChildGuard::spawn(
            Command::new(bin_path("nodewarden-agent"))
                .arg("--config")
                .arg(&config)
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .env("NODEWARDEN_LOG", "warn")
                .stdout(Stdio::null()),
        );
        self.agents.insert(node.to_string(), (child, port));
    }

    /// The Pushgateway's families, parsed.
    fn pushed(&self) -> BTreeMap<String, nodewarden_tests::Family> {
        get_ok(&format!("{}/metrics", self.pushgateway()), None)
            .map(|t| parse_exposition(&t))
            .unwrap_or_default()
    }

    fn sd(&self, token: Option<&str>) -> Option<(u16, String)> {
        get(&format!("{}/api/v1/sd/agents", self.http()), token)
    }
}

fn value(
    families: &BTreeMap<String, nodewarden_tests::Family>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    families.get(name)?.value(labels)
}

/// The ids of a family's samples.
fn ids(families: &BTreeMap<String, nodewarden_tests::Family>, name: &str) -> Vec<String> {
    let mut ids: Vec<String> = families
        .get(name)
        .map(|f| {
            f.samples
                .iter()
                .filter_map(|s| s.labels.get("id").cloned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[test]
fn pushgateway_holds_disk_aggregates_and_forgets_a_departed_device() {
    let Some(pushgateway_bin) = service("NW_TEST_PUSHGATEWAY_BIN") else {
        return;
    };
    let mut fleet = Fleet::new(Some(&pushgateway_bin));
    fleet.start_controller(None);
    fleet.start_agent("store-a", 11);
    fleet.start_agent("store-b", 12);

    let pushed = wait_for("both devices pushed", Duration::from_secs(20), || {
        let p = fleet.pushed();
        (value(
            &p,
            "dontpanic_online_device_count",
            &[("job", "online_device_count")],
        ) == Some(2.0)
            && ids(&p, "dontpanic_device_leftrs") == ["11", "12"])
        .then_some(p)
    });
    for id in ["11", "12"] {
        let free = value(
            &pushed,
            "dontpanic_device_leftrs",
            &[("id", id), ("job", "device_leftrs")],
        )
        .expect("leftrs");
        assert!(free > 0.0, "device {id}: free bytes {free}");
    }
    assert_eq!(
        value(
            &pushed,
            "nodewarden_nodes_online",
            &[("role", "storage"), ("job", "nodewarden")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&pushed, "nodewarden_storage_devices_online", &[]),
        Some(2.0)
    );
    assert!(value(&pushed, "nodewarden_storage_size_bytes", &[]).unwrap_or(0.0) > 0.0);
    assert!(
        !pushed.contains_key("nodewarden_dfs_online_device_count"),
        "no DFS source configured"
    );

    // Service discovery: the SD token or the API token, nothing else.
    assert_eq!(fleet.sd(None).map(|r| r.0), Some(401));
    assert_eq!(
        fleet.sd(Some("wrong-token-0123456789")).map(|r| r.0),
        Some(401)
    );
    let (status, body) = fleet.sd(Some(SD_TOKEN)).expect("SD answers");
    assert_eq!(status, 200, "{body}");
    let mut groups: Vec<Value> = serde_json::from_str(&body).unwrap();
    groups.sort_by_key(|g| g["labels"]["node"].as_str().unwrap_or_default().to_string());
    let expected: Vec<Value> = ["store-a", "store-b"]
        .iter()
        .zip(["11", "12"])
        .map(|(node, id)| {
            serde_json::json!({
                "targets": [format!("127.0.0.1:{}", fleet.agents[*node].1)],
                "labels": {"node": node, "roles": "storage", "device_ids": id},
            })
        })
        .collect();
    assert_eq!(groups, expected);
    let api_token = fleet.api_token();
    assert_eq!(fleet.sd(Some(&api_token)).map(|r| r.0), Some(200));
    // The API takes the API token only; /metrics needs none.
    let nodes = format!("{}/api/v1/nodes", fleet.http());
    assert_eq!(get(&nodes, None).map(|r| r.0), Some(401));
    assert_eq!(get(&nodes, Some(SD_TOKEN)).map(|r| r.0), Some(401));
    assert_eq!(get(&nodes, Some(&api_token)).map(|r| r.0), Some(200));
    let own = parse_exposition(
        &get_ok(&format!("{}/metrics", fleet.http()), None)
            .unwrap()
            .replace("# EOF\n", ""),
    );
    assert_eq!(
        value(&own, "nodewarden_controller_agents_connected", &[]),
        Some(2.0)
    );
    assert!(
        value(
            &own,
            "nodewarden_controller_pushgateway_pushes_total",
            &[("result", "success")]
        )
        .unwrap_or(0.0)
            >= 3.0
    );

    // An agent's own /metrics: its device and the link.
    let agent_metrics = parse_exposition(
        &get_ok(
            &format!("http://127.0.0.1:{}/metrics", fleet.agents["store-a"].1),
            None,
        )
        .unwrap(),
    );
    assert!(
        value(
            &agent_metrics,
            "nodewarden_storage_device_free_bytes",
            &[("id", "11")]
        )
        .is_some()
    );
    assert_eq!(
        value(&agent_metrics, "nodewarden_agent_controller_connected", &[]),
        Some(1.0)
    );

    // store-b dies: after the next pushes its device is gone and the count is 1.
    fleet.agents.remove("store-b");
    wait_for(
        "store-b's device gone from the Pushgateway",
        Duration::from_secs(15),
        || {
            let p = fleet.pushed();
            (value(&p, "dontpanic_online_device_count", &[]) == Some(1.0)
                && ids(&p, "dontpanic_device_leftrs") == ["11"])
            .then_some(())
        },
    );
    let (_, body) = fleet.sd(Some(SD_TOKEN)).unwrap();
    assert!(!body.contains("store-b"), "{body}");
    // ... but the controller still knows it, offline: what NodewardenNodeOffline alerts on.
    let own = parse_exposition(
        &get_ok(&format!("{}/metrics", fleet.http()), None)
            .unwrap()
            .replace("# EOF\n", ""),
    );
    assert_eq!(
        value(
            &own,
            "nodewarden_controller_node_online",
            &[("node", "store-b")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &own,
            "nodewarden_controller_node_online",
            &[("node", "store-a")]
        ),
        Some(1.0)
    );
}

/// A Pushgateway that accepts connections but never answers: pushes time out and are counted,
/// while the link, the API and /metrics carry on.
#[test]
fn a_hung_pushgateway_delays_nothing_and_failures_are_counted() {
    let mut fleet = Fleet::new(None);
    fleet.start_controller(None);
    fleet.start_agent("store-h", 21);
    let metrics = format!("{}/metrics", fleet.http());
    let failures = |text: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(
                    "nodewarden_controller_pushgateway_pushes_total{result=\"failure\"} ",
                )
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    wait_for("two failed pushes counted", Duration::from_secs(20), || {
        let text = get_ok(&metrics, None)?;
        (failures(&text) >= 2.0).then_some(())
    });
    // The agent came online and the API answers promptly while pushes hang.
    let token = fleet.api_token();
    wait_for("store-h online", Duration::from_secs(10), || {
        let started = std::time::Instant::now();
        let (status, body) = get(&format!("{}/api/v1/nodes", fleet.http()), Some(&token))?;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the API took {:?} while pushes hang",
            started.elapsed()
        );
        (status == 200 && body.contains("\"online\":true")).then_some(())
    });
    let text = get_ok(&metrics, None).unwrap();
    assert!(
        text.contains("nodewarden_controller_agents_connected 1"),
        "{text}"
    );
    assert!(
        text.contains("nodewarden_store_flushes_total"),
        "the store's families: {text}"
    );
}

/// The shipped prometheus.yml, pointed at the test's controller, Pushgateway, token and rules,
/// with 1 s intervals. Long-term storage (InfluxDB) is not part of this test and is removed.
/// Stands in for Ray's metrics agent: a listener answering every request with one family in
/// the text format, for the life of the test process.
fn serve_ray_stand_in() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let body = "# TYPE ray_stand_in_tasks gauge\nray_stand_in_tasks 3\n";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn test_prometheus_config(fleet: &Fleet, prometheus_port: u16) -> String {
    use serde_yaml_ng::Value as Y;
    let shipped = repo().join("packaging/prometheus/prometheus.yml");
    let mut config: Y =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&shipped).unwrap()).unwrap();
    config["global"]["scrape_interval"] = Y::from("1s");
    config["global"]["evaluation_interval"] = Y::from("1s");
    let rules: Vec<Y> = config["rule_files"]
        .as_sequence()
        .expect("rule_files")
        .iter()
        .filter_map(|f| f.as_str())
        .filter_map(|f| f.strip_prefix("/usr/share/nodewarden/prometheus/rules/"))
        .map(|f| {
            Y::from(
                repo()
                    .join("packaging/prometheus/rules")
                    .join(f)
                    .display()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(rules.len(), 2, "the shipped rule files");
    config["rule_files"] = Y::Sequence(rules);
    let mut seen = Vec::new();
    for job in config["scrape_configs"]
        .as_sequence_mut()
        .expect("scrape_configs")
    {
        let name = job["job_name"].as_str().unwrap_or_default().to_string();
        // A discovery job: the shipped URL checked, then pointed at this fleet's controller.
        let mut point_sd = |path: &str| {
            let sd = &mut job["http_sd_configs"][0];
            assert_eq!(
                sd["url"].as_str(),
                Some(format!("http://127.0.0.1:9180{path}").as_str())
            );
            sd["url"] = Y::from(format!("{}{path}", fleet.http()));
            sd["refresh_interval"] = Y::from("1s");
            sd["authorization"]["credentials_file"] =
                Y::from(fleet.dir.path().join("sd.token").display().to_string());
        };
        match name.as_str() {
            "nodes" => point_sd("/api/v1/sd/agents"),
            "ray" => point_sd("/api/v1/sd/endpoints/ray"),
            "pushgateway" => {
                job["static_configs"][0]["targets"] = Y::Sequence(vec![Y::from(format!(
                    "127.0.0.1:{}",
                    fleet.pushgateway_port
                ))])
            }
            "nodewarden-controller" => {
                job["static_configs"][0]["targets"] =
                    Y::Sequence(vec![Y::from(format!("127.0.0.1:{}", fleet.http_port))])
            }
            "prometheus" => {
                job["static_configs"][0]["targets"] =
                    Y::Sequence(vec![Y::from(format!("127.0.0.1:{prometheus_port}"))])
            }
            other => panic!("a shipped job this test does not know: {other}"),
        }
        seen.push(name);
    }
    assert_eq!(
        seen,
        [
            "nodes",
            "ray",
            "pushgateway",
            "nodewarden-controller",
            "prometheus"
        ]
    );
    if let Some(map) = config.as_mapping_mut() {
        map.remove("remote_write");
        map.remove("remote_read");
    }
    serde_yaml_ng::to_string(&config).unwrap()
}

/// Every target expression of the shipped dashboard.
fn dashboard_expressions() -> Vec<(String, String)> {
    let path = repo().join("packaging/grafana/nodewarden-dashboard.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    fn walk(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for t in panel["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.to_string(), e.to_string()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// Expressions that by nature have no data in a healthy test fleet, with the reason.
const NO_DATA_BY_NATURE: &[(&str, &str)] = &[(
    "ALERTS{alertstate=\"firing\"}",
    "no alert fires in a healthy fleet (the alerts themselves are tested in tests/packaging.rs)",
)];

#[test]
fn prometheus_discovers_agents_and_every_dashboard_expression_has_data() {
    let (Some(pushgateway_bin), Some(prometheus_bin), Some(mysql)) = (
        service("NW_TEST_PUSHGATEWAY_BIN"),
        service("NW_TEST_PROMETHEUS_BIN"),
        service("NW_TEST_MYSQL_URL"),
    ) else {
        return;
    };
    // The original schema (SEED.md) and rows like the original's.
    let dfs = nodewarden_tests::dfs::Dfs::create(&mysql).with_device_table();
    dfs.sql(&format!(
        "USE `{}`; INSERT INTO DEVICE VALUES (1, '10.0.0.11', 8001, true, 1073741824, 16777215, \
         734003200), (2, '10.0.0.12', 8001, true, 1073741824, 255, 52428800), \
         (3, '10.0.0.13', 8001, false, 1073741824, 0, 999);",
        dfs.name
    ));
    let mut fleet = Fleet::new(Some(&pushgateway_bin));
    // The console's node charts come from this Prometheus (started below).
    let prometheus_port = free_port();
    fleet.start_controller_with(
        Some(&dfs.url),
        &format!("[prometheus]\nurl = \"http://127.0.0.1:{prometheus_port}\"\n"),
    );
    // store-a checks its (empty) fragment folder, so the dashboard's Fragments row has an
    // inventory, a scrub and an audit against the DFS's (empty) FRAGMENT table to show (the
    // scrub never waits for a busy test machine).
    fleet.start_agent_with(
        "store-a",
        1,
        "[fragments]\nstate_dir = \"fragment-state-store-a\"\n\
         busy_load_per_core = 1000\nbusy_disk_util = 1.0\n",
    );
    // store-b also runs Ray: its metrics agent is a stand-in serving one family.
    let ray_port = serve_ray_stand_in();
    fleet.start_agent_with("store-b", 2, &format!("[ray]\nmetrics_port = {ray_port}\n"));

    // The DFS source: exactly the table's online rows, under the original and nodewarden names.
    // Each group is its own PUT, so wait until every group of the round is in (a read between
    // two PUTs of a round sees some groups without the others).
    let pushed = wait_for("the DFS values pushed", Duration::from_secs(20), || {
        let p = fleet.pushed();
        (value(&p, "nodewarden_dfs_online_device_count", &[("job", "dfs")]) == Some(2.0)
            && value(&p, "nodewarden_storage_devices_online", &[]) == Some(2.0)
            && value(&p, "dontpanic_online_device_count", &[]).is_some()
            && ids(&p, "dontpanic_device_leftrs").len() == 2
            && ids(&p, "nodewarden_dfs_device_leftrs").len() == 2)
            .then_some(p)
    });
    assert_eq!(
        value(
            &pushed,
            "dontpanic_online_device_count",
            &[("job", "online_device_count")]
        ),
        Some(2.0)
    );
    assert_eq!(ids(&pushed, "dontpanic_device_leftrs"), ["1", "2"]);
    assert_eq!(
        value(
            &pushed,
            "dontpanic_device_leftrs",
            &[("id", "1"), ("job", "device_leftrs")]
        ),
        Some(734003200.0)
    );
    assert_eq!(
        value(&pushed, "dontpanic_device_leftrs", &[("id", "2")]),
        Some(52428800.0)
    );
    assert_eq!(
        value(
            &pushed,
            "nodewarden_dfs_device_leftrs",
            &[("id", "1"), ("job", "dfs")]
        ),
        Some(734003200.0)
    );
    assert_eq!(ids(&pushed, "nodewarden_dfs_device_leftrs"), ["1", "2"]);
    // A device going offline in the DFS leaves the next push.
    dfs.sql(&format!(
        "UPDATE `{}`.DEVICE SET ISONLINE = false WHERE ID = 2",
        dfs.name
    ));
    wait_for(
        "device 2 gone after it went offline in the DFS",
        Duration::from_secs(10),
        || {
            let p = fleet.pushed();
            (value(&p, "dontpanic_online_device_count", &[]) == Some(1.0)
                && ids(&p, "dontpanic_device_leftrs") == ["1"])
            .then_some(())
        },
    );
    dfs.sql(&format!(
        "UPDATE `{}`.DEVICE SET ISONLINE = true WHERE ID = 2",
        dfs.name
    ));

    // A command, so the command panels have data.
    let ping = format!("{}/api/v1/nodes/store-a/ping", fleet.http());
    let bearer = format!("Bearer {}", fleet.api_token());
    wait_for("store-a answers a ping", Duration::from_secs(10), || {
        ureq::post(&ping)
            .header("Authorization", &bearer)
            .send_empty()
            .ok()
    });

    let prometheus_dir = fleet.dir.path().join("prometheus");
    std::fs::create_dir_all(&prometheus_dir).unwrap();
    let config_file = prometheus_dir.join("prometheus.yml");
    std::fs::write(
        &config_file,
        test_prometheus_config(&fleet, prometheus_port),
    )
    .unwrap();
    let (_prometheus, prometheus) = start_prometheus(
        &prometheus_bin,
        &config_file,
        &prometheus_dir.join("data"),
        prometheus_port,
    );
    // Discovered through the controller and scraped directly, with the discovery labels.
    let up = wait_for(
        "both agents up in job nodes",
        Duration::from_secs(30),
        || {
            let a = query(&prometheus, "up{job=\"nodes\"} == 1");
            (result_len(&a) == 2).then_some(a)
        },
    );
    assert_eq!(
        series_labels(&up, &["node", "device_ids"]),
        [vec!["store-a", "1"], vec!["store-b", "2"]]
    );
    // Ray's endpoint: discovered (behind the discovery token) and scraped under job ray.
    let ray_sd = format!("{}/api/v1/sd/endpoints/ray", fleet.http());
    assert_eq!(get(&ray_sd, None).map(|(s, _)| s), Some(401));
    let ray = wait_for(
        "Ray's stand-in up in job ray",
        Duration::from_secs(30),
        || {
            let a = query(&prometheus, "ray_stand_in_tasks{job=\"ray\"}");
            (result_len(&a) == 1).then_some(a)
        },
    );
    assert_eq!(
        series_labels(&ray, &["node", "roles"]),
        [vec!["store-b", "storage,ray"]]
    );
    assert_eq!(
        result_len(&query(&prometheus, "up{job=\"ray\"} == 1")),
        1,
        "only store-b runs Ray"
    );
    // The console's node charts from Prometheus: the last hour of store-a on one grid.
    let bearer = format!("Bearer {}", fleet.api_token());
    let charts_of = |node: &str| -> Option<(u16, Value)> {
        let mut r = ureq::get(&format!("{}/api/v1/nodes/{node}/prometheus", fleet.http()))
            .header("Authorization", &bearer)
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .ok()?;
        let status = r.status().as_u16();
        Some((
            status,
            serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?,
        ))
    };
    let charts = wait_for(
        "store-a's charts from Prometheus",
        Duration::from_secs(60),
        || {
            let (status, c) = charts_of("store-a")?;
            let has = |key: &str| {
                c[key]
                    .as_array()
                    .is_some_and(|v| v.iter().any(Value::is_number))
            };
            let device = c["storage"]["1"]
                .as_array()
                .is_some_and(|v| v.iter().any(Value::is_number));
            (status == 200 && has("load1") && has("memory") && has("disk") && device).then_some(c)
        },
    );
    let grid = charts["times"].as_array().unwrap().len();
    assert_eq!(grid, 121, "an hour every 30 s");
    for key in ["memory", "disk"] {
        assert!(
            charts[key]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_f64)
                .all(|p| (0.0..=100.0).contains(&p)),
            "{key}: {charts}"
        );
    }
    let device = charts["storage"]["1"]
        .as_array()
        .expect("device 1's series");
    assert_eq!(device.len(), grid);
    assert_eq!(
        charts_of("bad%20name").map(|(s, _)| s),
        Some(400),
        "a name that could change the query is refused"
    );
    wait_for(
        "the Pushgateway and the controller scraped",
        Duration::from_secs(30),
        || {
            (result_len(&query(
                &prometheus,
                "up{job=~\"pushgateway|nodewarden-controller\"} == 1",
            )) == 2)
                .then_some(())
        },
    );

    let instance = format!("127.0.0.1:{}", fleet.agents["store-a"].1);
    let mut missing = Vec::new();
    for (title, expr) in dashboard_expressions() {
        if NO_DATA_BY_NATURE.iter().any(|(e, _)| *e == expr) {
            continue;
        }
        let concrete = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", &instance);
        // `$1` in label_replace is no variable.
        let leftover = concrete.match_indices('$').any(|(i, _)| {
            concrete[i + 1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '{')
        });
        assert!(!leftover, "unknown variable in {expr:?}");
        // Rates need two samples and recording rules an evaluation: wait a little for each.
        let found = (0..150).any(|_| {
            let answer = query(&prometheus, &concrete);
            let n = result_len(&answer);
            if n == 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
            n > 0
        });
        if !found {
            missing.push(format!("{title}: {concrete}"));
        }
    }
    assert!(
        missing.is_empty(),
        "dashboard expressions without data:\n{}",
        missing.join("\n")
    );
}
