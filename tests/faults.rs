//! Faults a storage cluster sees every day, each bounded in time, on loopback and in network
//! namespaces and filesystems the test makes itself (the suite runs as root): an agent's network
//! cut and restored (a veth pair into a namespace of its own), the controller's data or CA
//! directory read-only (a read-only tmpfs). Each ends with the right state, a clear message and
//! every transition recorded once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodewarden_tests::lab::{Log, run_ok};
use nodewarden_tests::{
    ChildGuard, bin_path, free_port, get_text, prometheus_query, result_len, service,
    start_prometheus, start_pushgateway, wait_for,
};
use serde_json::Value;

fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args));
}

/// A network namespace joined to this one by a veth pair, with `HOST.1/30` on this side and
/// `HOST.2/30` inside; removed (with its interfaces) when dropped.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
    inner_ip: String,
}

impl Netns {
    fn new() -> Netns {
        let tag = std::process::id() % 100_000;
        let subnet = 4 * (tag % 60) + 4;
        let n = Netns {
            name: format!("nwf{tag}"),
            host_if: format!("nwfh{tag}"),
            host_ip: format!("10.77.1.{}", subnet + 1),
            inner_ip: format!("10.77.1.{}", subnet + 2),
        };
        let inner_if = format!("nwfi{tag}");
        ip(&["netns", "add", &n.name]);
        ip(&[
            "link", "add", &n.host_if, "type", "veth", "peer", "name", &inner_if,
        ]);
        ip(&["link", "set", &inner_if, "netns", &n.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", n.host_ip),
            "dev",
            &n.host_if,
        ]);
        ip(&["link", "set", &n.host_if, "up"]);
        ip(&[
            "netns",
            "exec",
            &n.name,
            "ip",
            "addr",
            "add",
            &format!("{}/30", n.inner_ip),
            "dev",
            &inner_if,
        ]);
        ip(&[
            "netns", "exec", &n.name, "ip", "link", "set", &inner_if, "up",
        ]);
        ip(&["netns", "exec", &n.name, "ip", "link", "set", "lo", "up"]);
        n
    }

    /// Takes the link down (a cut cable) or up again.
    fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A CA in `dir/ca` naming `san`, and node certificates for `nodes` in `dir/certs`.
fn ca(dir: &Path, san: &str, nodes: &[&str]) {
    let controller = bin_path("nodewarden-controller");
    run_ok(
        Command::new(&controller)
            .args(["ca", "init", "--dir"])
            .arg(dir.join("ca"))
            .args(["--san", san]),
    );
    for node in nodes {
        run_ok(
            Command::new(&controller)
                .args(["ca", "issue", node, "--dir"])
                .arg(dir.join("ca"))
                .arg("--out-dir")
                .arg(dir.join("certs")),
        );
    }
}

fn start_controller(config: &Path) -> (ChildGuard, Log) {
    let mut child = ChildGuard::spawn(
        Command::new(bin_path("nodewarden-controller"))
            .args(["serve", "--config"])
            .arg(config)
            .env("NODEWARDEN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let log = Log::attach(&mut child, "controller");
    log.wait("HTTP endpoint listening");
    (child, log)
}

fn get_json(api: &str, token: &str, path: &str) -> Value {
    let mut response = ureq::get(format!("{api}{path}"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn an_agents_network_cut_is_seen_within_three_seconds_and_recorded_once() {
    let Some(prometheus_bin) = service("NW_TEST_PROMETHEUS_BIN") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let net = Netns::new();
    ca(d, &net.host_ip, &["n1"]);
    let link_port = free_port();
    let http_port = free_port();
    let metrics_port = 19_100 + (std::process::id() % 500) as u16;
    std::fs::write(
        d.join("controller.toml"),
        format!(
            "[link]\nlisten = \"{}:{link_port}\"\nca_dir = \"ca\"\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\nsd_token_file = \"sd.token\"\n\
             [pushgateway]\nurl = \"\"\n",
            net.host_ip
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("sd.token"),
        "sd-token-for-the-fault-test-0123456789\n",
    )
    .unwrap();
    std::fs::write(
        d.join("agent.toml"),
        format!(
            "[controller]\naddress = \"{}:{link_port}\"\nserver_name = \"{}\"\n\
             ca_file = \"certs/ca.pem\"\ncert_file = \"certs/n1.pem\"\nkey_file = \"certs/n1.key\"\n\
             report_interval_ms = 500\n",
            net.host_ip, net.host_ip
        ),
    )
    .unwrap();
    let (_controller, _log) = start_controller(&d.join("controller.toml"));
    let api = format!("http://127.0.0.1:{http_port}");
    let token = std::fs::read_to_string(d.join("data/api.token"))
        .unwrap()
        .trim()
        .to_string();
    let _agent = ChildGuard::spawn(
        Command::new("ip")
            .args(["netns", "exec", &net.name])
            .arg(bin_path("nodewarden-agent"))
            .arg("--config")
            .arg(d.join("agent.toml"))
            .arg(format!(
                "--web.listen-address={}:{metrics_port}",
                net.inner_ip
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let node = |api: &str| -> Option<Value> {
        get_json(api, &token, "/api/v1/nodes")
            .as_array()?
            .iter()
            .find(|n| n["name"] == "n1")
            .cloned()
    };
    wait_for("n1 online with a report", Duration::from_secs(20), || {
        let n = node(&api)?;
        (n["online"] == true && !n["last_report"].is_null()).then_some(())
    });

    // A real Prometheus scraping the agent through the controller's service discovery.
    let prom_dir = d.join("prometheus");
    std::fs::create_dir(&prom_dir).unwrap();
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
             scrape_configs:\n  - job_name: nodes\n    http_sd_configs:\n\
             \x20     - url: {api}/api/v1/sd/agents\n        refresh_interval: 1s\n\
             \x20       authorization:\n          type: Bearer\n          credentials_file: {}\n",
            d.join("sd.token").display()
        ),
    )
    .unwrap();
    let (_prometheus, prom) = start_prometheus(
        &prometheus_bin,
        &prom_dir.join("prometheus.yml"),
        &prom_dir.join("data"),
        free_port(),
    );
    let up = |value: &str| {
        let answer = prometheus_query(
            &prom,
            &format!("up{{job=\"nodes\",node=\"n1\"}} == {value}"),
        );
        (result_len(&answer) == 1).then_some(())
    };
    wait_for(
        "Prometheus scraping n1 (up == 1)",
        Duration::from_secs(30),
        || up("1"),
    );

    // Cut: offline on the controller within 3 s of the cut (the link's idle timeout is 2 s).
    let cut_at = now_ms();
    let cut = Instant::now();
    net.link(false);
    wait_for("n1 offline", Duration::from_secs(10), || {
        (node(&api)?["online"] == false).then_some(())
    });
    let noticed = cut.elapsed();
    let offline_at = node(&api).unwrap()["since"].as_u64().unwrap();
    eprintln!(
        "offline recorded {} ms after the cut (seen through the API after {noticed:?})",
        offline_at.saturating_sub(cut_at)
    );
    assert!(
        offline_at.saturating_sub(cut_at) <= 3000,
        "offline {} ms after the cut (seen by the test after {noticed:?})",
        offline_at - cut_at
    );
    // Prometheus sees the target down (discovery keeps it until the node is offline, then drops
    // it: either way, no sample says up).
    wait_for("Prometheus: n1 not up", Duration::from_secs(20), || {
        let answer = prometheus_query(&prom, "up{job=\"nodes\",node=\"n1\"} == 1");
        (answer["status"] == "success" && result_len(&answer) == 0).then_some(())
    });
    let sd = get_text_with(&api, "sd-token-for-the-fault-test-0123456789");
    assert!(
        !sd.contains(&net.inner_ip),
        "an offline agent is not a target: {sd}"
    );

    // Restored: online again, scraped again.
    net.link(true);
    wait_for("n1 online again", Duration::from_secs(30), || {
        (node(&api)?["online"] == true).then_some(())
    });
    wait_for(
        "Prometheus scraping n1 again",
        Duration::from_secs(30),
        || up("1"),
    );

    // Each transition recorded exactly once (the audit log, written every second).
    let transitions = wait_for(
        "the transitions in the audit log",
        Duration::from_secs(10),
        || {
            let events = get_json(&api, &token, "/api/v1/events?node=n1&limit=100");
            let kinds: Vec<String> = events
                .as_array()?
                .iter()
                .rev()
                .filter(|e| e["at_ms"].as_u64() >= Some(cut_at))
                .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
                .collect();
            (kinds.len() >= 2).then_some(kinds)
        },
    );
    assert_eq!(transitions, ["offline", "online"]);
    let _ = get_text(&format!("{api}/metrics"));
}

fn get_text_with(api: &str, token: &str) -> String {
    ureq::get(format!("{api}/api/v1/sd/agents"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// A read-only tmpfs at a fresh directory, unmounted when dropped.
struct ReadOnlyMount(PathBuf);

impl ReadOnlyMount {
    /// Mounts a tmpfs at `at`, lets `fill` write into it, then remounts it read-only.
    fn new(at: &Path, fill: impl FnOnce(&Path)) -> ReadOnlyMount {
        std::fs::create_dir_all(at).unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
                .arg(at),
        );
        let mount = ReadOnlyMount(at.to_path_buf());
        fill(at);
        run_ok(Command::new("mount").args(["-o", "remount,ro"]).arg(at));
        mount
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_read_only_data_or_ca_directory_is_refused_with_its_path_and_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, "127.0.0.1", &[]);
    // The data directory on a read-only filesystem: the controller refuses to start.
    let data = d.join("data");
    let _ro_data = ReadOnlyMount::new(&data, |_| {});
    std::fs::write(
        d.join("controller.toml"),
        format!(
            "data_dir = \"data\"\n[link]\nlisten = \"127.0.0.1:{}\"\nca_dir = \"ca\"\n\
             [http]\nlisten = \"127.0.0.1:{}\"\n[pushgateway]\nurl = \"\"\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let out = Command::new(bin_path("nodewarden-controller"))
        .args(["serve", "--config"])
        .arg(d.join("controller.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&data.display().to_string()), "{err}");
    assert!(err.to_lowercase().contains("read-only"), "{err}");
    assert!(listing(&data).is_empty(), "{:?}", listing(&data));

    // The CA directory read-only: issuing a certificate fails naming the file, nothing changes.
    let ro_ca = d.join("ro-ca");
    let source = d.join("ca");
    let _ro_ca = ReadOnlyMount::new(&ro_ca, |at| {
        for name in listing(&source) {
            std::fs::copy(source.join(&name), at.join(&name)).unwrap();
        }
    });
    let before = listing(&ro_ca);
    let out = Command::new(bin_path("nodewarden-controller"))
        .args(["ca", "issue", "n9", "--dir"])
        .arg(&ro_ca)
        .arg("--out-dir")
        .arg(d.join("out"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&ro_ca.display().to_string()), "{err}");
    assert_eq!(listing(&ro_ca), before);
    // Recorded before written: no certificate came out of an issue that was not recorded.
    assert!(!d.join("out/n9.pem").exists());
}

/// A ureq client that gives up after `limit`: "answered promptly" is asserted, not hoped for.
fn bounded(limit: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(limit))
        .build()
        .into()
}

/// POSTs a `status` action to n1 within `limit`: the answer's status and lines.
fn status_action(lab: &nodewarden_tests::lab::Lab, limit: Duration) -> (u16, String) {
    let mut response = bounded(limit)
        .post(format!("{}/api/v1/actions", lab.api()))
        .header("Authorization", &format!("Bearer {}", lab.token()))
        .content_type("application/json")
        .send(
            serde_json::json!({"selector": {"node": "n1"}, "action": "status",
                               "requested_by": "fault-test"})
            .to_string(),
        )
        .unwrap_or_else(|e| panic!("POST /api/v1/actions within {limit:?}: {e}"));
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// n1's `online` flag read through the API within `limit`.
fn online_within(lab: &nodewarden_tests::lab::Lab, limit: Duration) -> Option<bool> {
    let mut response = bounded(limit)
        .get(format!("{}/api/v1/nodes", lab.api()))
        .header("Authorization", &format!("Bearer {}", lab.token()))
        .call()
        .unwrap_or_else(|e| panic!("GET /api/v1/nodes within {limit:?}: {e}"));
    let nodes: Value = serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()?;
    nodes.as_array()?.iter().find(|n| n["name"] == "n1")?["online"].as_bool()
}

/// The controller's own families.
fn controller_metrics(
    lab: &nodewarden_tests::lab::Lab,
) -> std::collections::BTreeMap<String, nodewarden_tests::Family> {
    let text = get_text(&format!("{}/metrics", lab.api())).expect("the controller's /metrics");
    nodewarden_tests::parse_exposition(&text.replace("# EOF\n", ""))
}

fn metric(
    families: &std::collections::BTreeMap<String, nodewarden_tests::Family>,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    families
        .get(name)
        .and_then(|f| f.value(labels))
        .unwrap_or(0.0)
}

/// The audit log of n1 (newest first), read within `limit`.
fn events_within(lab: &nodewarden_tests::lab::Lab, limit: Duration) -> Vec<Value> {
    let mut response = bounded(limit)
        .get(format!("{}/api/v1/events?node=n1&limit=500", lab.api()))
        .header("Authorization", &format!("Bearer {}", lab.token()))
        .call()
        .unwrap_or_else(|e| panic!("GET /api/v1/events within {limit:?}: {e}"));
    serde_json::from_str::<Value>(&response.body_mut().read_to_string().unwrap())
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The jobs of the groups the Pushgateway holds (its `push_time_seconds` series).
fn pushed_jobs(port: u16) -> Vec<String> {
    let Some(text) = get_text(&format!("http://127.0.0.1:{port}/metrics")) else {
        return Vec::new();
    };
    let families = nodewarden_tests::parse_exposition(&text);
    let mut jobs: Vec<String> = families
        .get("push_time_seconds")
        .map(|f| {
            f.samples
                .iter()
                .filter_map(|s| s.labels.get("job").cloned())
                .collect()
        })
        .unwrap_or_default();
    jobs.sort();
    jobs
}

/// How long the Pushgateway stays down: the 30 s, many push intervals (300 ms).
const PUSHGATEWAY_OUTAGE: Duration = Duration::from_secs(30);

#[test]
fn pushgateway_down_thirty_seconds_then_back_pushes_resume_and_nothing_waits_on_it() {
    let Some(bin) = service("NW_TEST_PUSHGATEWAY_BIN") else {
        return;
    };
    let port = free_port();
    let pushgateway = start_pushgateway(&bin, port);
    let mut lab = nodewarden_tests::lab::Lab::new("");
    // The lab's controller pushes nowhere: pointed at the test's Pushgateway, 300 ms rounds.
    lab.stop_agent();
    lab.stop_controller();
    let config = lab.path("controller.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[pushgateway]\nurl = \"\"\n",
        &format!("[pushgateway]\nurl = \"http://127.0.0.1:{port}\"\ninterval_ms = 300\n"),
    );
    assert!(text.contains("interval_ms = 300"), "{text}");
    std::fs::write(&config, text).unwrap();
    lab.start_controller();
    lab.start_agent();
    lab.wait_service(true, "stopped");
    let jobs = wait_for("the groups pushed", Duration::from_secs(20), || {
        let jobs = pushed_jobs(port);
        (jobs.contains(&"nodewarden".to_string())
            && jobs.contains(&"online_device_count".to_string()))
        .then_some(jobs)
    });
    let pushes = |lab: &nodewarden_tests::lab::Lab, result: &str| {
        metric(
            &controller_metrics(lab),
            "nodewarden_controller_pushgateway_pushes_total",
            &[("result", result)],
        )
    };

    // Down: killed, its port closed.
    drop(pushgateway);
    let down = Instant::now();
    let failures_at_cut = pushes(&lab, "failure");
    let prompt = Duration::from_secs(2);
    // The API answers, an action goes over the link and is recorded, a node transition is seen.
    let asked = Instant::now();
    let (code, answer) = status_action(&lab, prompt);
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains("\"ok\":true"), "{answer}");
    eprintln!(
        "action answered in {:?} with the Pushgateway down",
        asked.elapsed()
    );
    lab.stop_agent();
    wait_for("n1 offline", Duration::from_secs(5), || {
        (!online_within(&lab, prompt)?).then_some(())
    });
    lab.start_agent();
    wait_for("n1 online again", Duration::from_secs(15), || {
        online_within(&lab, prompt)?.then_some(())
    });
    // Recorded in the store while the Pushgateway is still down.
    wait_for(
        "the action and both transitions in the audit log",
        Duration::from_secs(10),
        || {
            let events = events_within(&lab, prompt);
            let kinds: Vec<&str> = events
                .iter()
                .rev()
                .filter_map(|e| e["kind"].as_str())
                .collect();
            let tail: Vec<&str> = kinds
                .iter()
                .copied()
                .skip_while(|k| *k != "offline")
                .collect();
            (events
                .iter()
                .any(|e| e["kind"] == "operation" && e["action"] == "status")
                && tail.starts_with(&["offline", "online"]))
            .then_some(())
        },
    );
    assert!(
        down.elapsed() < PUSHGATEWAY_OUTAGE,
        "the work with the Pushgateway down took {:?}",
        down.elapsed()
    );
    // The rest of the outage: pushes keep failing (counted), nothing else waits.
    wait_for(
        "the outage's length, pushes failing",
        PUSHGATEWAY_OUTAGE + Duration::from_secs(5),
        || (down.elapsed() >= PUSHGATEWAY_OUTAGE).then_some(()),
    );
    let failures = pushes(&lab, "failure") - failures_at_cut;
    assert!(
        failures >= 10.0,
        "{failures} failed pushes in {PUSHGATEWAY_OUTAGE:?} of 300 ms rounds"
    );
    assert!(pushed_jobs(port).is_empty());

    // Back on the same port, empty: the controller fills it again by itself.
    let successes_before = pushes(&lab, "success");
    let back = Instant::now();
    let _pushgateway = start_pushgateway(&bin, port);
    wait_for("the groups pushed again", Duration::from_secs(10), || {
        (pushed_jobs(port) == jobs).then_some(())
    });
    eprintln!(
        "groups back {:?} after the Pushgateway ({failures} failed pushes during the outage)",
        back.elapsed()
    );
    wait_for(
        "successful pushes counted again",
        Duration::from_secs(10),
        || (pushes(&lab, "success") >= successes_before + 2.0).then_some(()),
    );
    assert_eq!(lab.node().unwrap()["online"], true);
}

/// A small tmpfs at a fresh directory (a disk that fills), unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn new(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path()),
        );
        SmallDisk(dir)
    }

    /// Writes `name` until the filesystem refuses (ENOSPC): the bytes written.
    fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut file = std::fs::File::create(self.0.path().join(name)).unwrap();
        let chunk = vec![0x5a_u8; 4096];
        let mut written = 0;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {name}: {e}"),
            }
        }
        let _ = file.sync_all();
        written
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn sqlite_on_a_full_disk_keeps_events_and_writes_them_all_once_space_returns() {
    // 4 MiB: the schema, the WAL and the shared-memory index fit; the filler takes the rest.
    let disk = SmallDisk::new("4m");
    let db = disk.0.path().join("nodewarden.db");
    let mut lab = nodewarden_tests::lab::Lab::new(&format!(
        "[database]\nurl = \"sqlite://{}\"\nflush_interval_ms = 200\n",
        db.display()
    ));
    lab.wait_service(true, "stopped");
    wait_for("a first flush", Duration::from_secs(10), || {
        let m = controller_metrics(&lab);
        (metric(&m, "nodewarden_store_flushes_total", &[]) >= 1.0
            && metric(&m, "nodewarden_store_database_up", &[]) == 1.0)
            .then_some(())
    });
    let errors_before = metric(
        &controller_metrics(&lab),
        "nodewarden_store_flush_errors_total",
        &[],
    );
    let filled = disk.fill("filler");
    eprintln!("filler: {filled} bytes");

    // Events while the disk is full: actions, the agent leaving and coming back.
    let prompt = Duration::from_secs(2);
    let mut produced = 0;
    for _ in 0..3 {
        let (code, answer) = status_action(&lab, prompt);
        assert_eq!(code, 200, "{answer}");
        produced += 1;
    }
    lab.stop_agent();
    wait_for("n1 offline", Duration::from_secs(5), || {
        (!online_within(&lab, prompt)?).then_some(())
    });
    lab.start_agent();
    wait_for("n1 online", Duration::from_secs(15), || {
        online_within(&lab, prompt)?.then_some(())
    });
    let (code, answer) = status_action(&lab, prompt);
    assert_eq!(code, 200, "{answer}");
    produced += 1;

    // A clear error: the metrics and the log say so, the events wait in the buffer.
    let m = wait_for(
        "flushes failing on the full disk",
        Duration::from_secs(15),
        || {
            let m = controller_metrics(&lab);
            (metric(&m, "nodewarden_store_flush_errors_total", &[]) > errors_before
                && metric(&m, "nodewarden_store_database_up", &[]) == 0.0
                && metric(&m, "nodewarden_store_pending_events", &[]) >= (produced + 2) as f64)
                .then_some(m)
        },
    );
    assert_eq!(
        metric(&m, "nodewarden_store_events_dropped_total", &[]),
        0.0
    );
    let log = lab.controller_log();
    wait_for("the error in the log", Duration::from_secs(5), || {
        (log.count("flush failed, kept for retry") > 0 && log.count("full") > 0).then_some(())
    });
    assert!(log.count(&db.display().to_string()) > 0);

    // Space returns: one flush writes everything, once.
    std::fs::remove_file(disk.0.path().join("filler")).unwrap();
    let back = Instant::now();
    wait_for("the store written again", Duration::from_secs(40), || {
        let m = controller_metrics(&lab);
        (metric(&m, "nodewarden_store_database_up", &[]) == 1.0
            && metric(&m, "nodewarden_store_pending_events", &[]) == 0.0)
            .then_some(())
    });
    eprintln!(
        "store caught up {:?} after the space returned",
        back.elapsed()
    );
    let events = events_within(&lab, prompt);
    let operations = events
        .iter()
        .filter(|e| e["kind"] == "operation" && e["action"] == "status")
        .count();
    assert_eq!(operations, produced, "{events:?}");
    let kinds: Vec<&str> = events
        .iter()
        .rev()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| *k == "online" || *k == "offline")
        .collect();
    assert_eq!(kinds, ["online", "offline", "online"], "{events:?}");
    let uids: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["uid"].as_str()).collect();
    assert!(uids.is_empty() || uids.len() == events.len(), "{events:?}");

    // No corruption: SQLite's own check, on the file, once the controller has closed it.
    lab.stop_agent();
    lab.stop_controller();
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA integrity_check; SELECT count(*) FROM events WHERE kind = 'operation';")
        .output()
        .expect("the sqlite3 CLI");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("ok\n{produced}\n")
    );
}
