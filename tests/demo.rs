//! The README's first command, `scripts/demo.sh`, run as a newcomer runs it, with the suite's
//! binaries (`NW_DEMO_BIN`, so no second build) and every port moved to a free one: the demo
//! starts the controller, three agents, a stand-in Ray metrics endpoint and the real Prometheus,
//! Pushgateway and Alertmanager with the shipped configuration. Checked end to end: Prometheus
//! scrapes every job it discovers (three agents, Ray's endpoint, the Pushgateway, the controller),
//! the fleet aggregates reach the Pushgateway, the alert the demo tells how to fire
//! (`kill -STOP` of storage-2's agent) reaches the controller through Alertmanager, the CLI works
//! with nothing but the printed `export` line, and Ctrl-C (SIGINT to the script) leaves no
//! process behind.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nodewarden_tests::{
    bin_path, free_port, get_text, prometheus_query, read_pid, series_labels, service, wait_for,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The demo's process group, killed outright if the test fails half-way.
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals the group this test created.
        unsafe {
            libc::kill(-self.0, libc::SIGKILL);
        }
    }
}

fn tcp_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Three consecutive free ports (the demo's agents take a base port and the next two).
fn free_run_of_three() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX - 2 && tcp_free(p + 1) && tcp_free(p + 2) {
            return p;
        }
    }
}

#[test]
fn the_demo_runs_the_whole_pipeline_and_an_alert_fired_on_purpose_reaches_the_controller() {
    let (Some(_), Some(_), Some(_)) = (
        service("NW_TEST_PROMETHEUS_BIN"),
        service("NW_TEST_PUSHGATEWAY_BIN"),
        service("NW_TEST_ALERTMANAGER_BIN"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let bin = bin_path("nodewarden-controller")
        .parent()
        .unwrap()
        .to_path_buf();
    let http = free_port();
    let prometheus = free_port();
    let pushgateway = free_port();
    let agents = free_run_of_three();
    let mut child = Command::new("bash")
        .arg(repo().join("scripts/demo.sh"))
        .env("NODEWARDEN_DEMO_DIR", &demo)
        .env("NW_DEMO_BIN", &bin)
        .env("NW_DEMO_HTTP_PORT", http.to_string())
        .env("NW_DEMO_LINK_PORT", free_port().to_string())
        .env("NW_DEMO_AGENT_PORT", agents.to_string())
        .env("NW_DEMO_RAY_PORT", free_port().to_string())
        .env("NW_DEMO_PROMETHEUS_PORT", prometheus.to_string())
        .env("NW_DEMO_PUSHGATEWAY_PORT", pushgateway.to_string())
        .env("NW_DEMO_ALERTMANAGER_PORT", free_port().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("scripts/demo.sh");
    let group = Group(child.id() as i32);
    let (lines, seen) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("demo| {line}");
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    wait_for("the demo's ready message", Duration::from_secs(120), || {
        while let Ok(line) = seen.try_recv() {
            printed.push(line);
        }
        printed
            .iter()
            .any(|l| l.starts_with("Ctrl-C stops"))
            .then_some(())
    });
    let export = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("export "))
        .expect("the demo prints an export line for the CLI")
        .to_string();
    for what in ["Prometheus:", "Pushgateway:", "Alertmanager:", "kill -STOP"] {
        assert!(
            printed.iter().any(|l| l.contains(what)),
            "the demo names {what}: {printed:#?}"
        );
    }
    assert!(
        !printed.iter().any(|l| l.contains("not running:")),
        "{printed:#?}"
    );

    // Prometheus, on the shipped configuration: every job discovered and up.
    let prom = format!("http://127.0.0.1:{prometheus}");
    wait_for("every demo target up", Duration::from_secs(90), || {
        let up = series_labels(&prometheus_query(&prom, "up == 1"), &["job", "node"]);
        let want = [
            vec!["nodes", "ray-1"],
            vec!["nodes", "storage-1"],
            vec!["nodes", "storage-2"],
            vec!["nodewarden-controller", ""],
            vec!["prometheus", ""],
            vec!["pushgateway", ""],
            vec!["ray", "ray-1"],
        ];
        (up == want).then_some(())
    });
    // The fleet aggregates in the original names, through the Pushgateway.
    wait_for("the aggregates pushed", Duration::from_secs(30), || {
        get_text(&format!("http://127.0.0.1:{pushgateway}/metrics"))
            .filter(|t| {
                t.lines()
                    .any(|l| l.starts_with("dontpanic_online_device_count{") && l.ends_with(" 4"))
            })
            .map(|_| ())
    });

    // The alert fired on purpose, as the demo prints it.
    let storage_2 = read_pid(&demo.join("run/storage-2.agent.pid")).expect("storage-2's pid");
    // SAFETY: signals a process of the demo's own group.
    unsafe {
        libc::kill(storage_2 as i32, libc::SIGSTOP);
    }
    let token = std::fs::read_to_string(demo.join("data/api.token")).unwrap();
    wait_for(
        "NodewardenNodeOffline for storage-2 delivered to the controller",
        Duration::from_secs(240),
        || {
            let body = ureq::get(&format!("http://127.0.0.1:{http}/api/v1/alerts"))
                .header("Authorization", &format!("Bearer {}", token.trim()))
                .call()
                .ok()?
                .body_mut()
                .read_to_string()
                .ok()?;
            let alerts: serde_json::Value = serde_json::from_str(&body).ok()?;
            alerts
                .as_array()?
                .iter()
                .any(|a| a["alertname"] == "NodewardenNodeOffline" && a["node"] == "storage-2")
                .then_some(())
        },
    );
    // SAFETY: as above.
    unsafe {
        libc::kill(storage_2 as i32, libc::SIGCONT);
    }
    // The CLI with only the printed environment: the alert is in storage-2's audit trail (the
    // audit log is written in batches: wait for it).
    wait_for(
        "the alert in the CLI's events",
        Duration::from_secs(20),
        || {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "export {export}; nodewarden-controller events --node storage-2"
                ))
                .env_remove("NODEWARDEN_API")
                .env_remove("NODEWARDEN_DATA_DIR")
                .env_remove("NODEWARDEN_TOKEN_FILE")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            text.contains("NodewardenNodeOffline").then_some(())
        },
    );

    // Ctrl-C: the script stops everything it started.
    // SAFETY: signals the script this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = wait_for("the demo to stop", Duration::from_secs(30), || {
        child.try_wait().ok().flatten()
    });
    let _ = status;
    wait_for(
        "no process of the demo left",
        Duration::from_secs(30),
        || {
            // SAFETY: signal 0 only asks whether the group still has a member.
            let left = unsafe { libc::kill(-group.0, 0) } == 0;
            (!left).then_some(())
        },
    );
    for port in [http, prometheus, pushgateway, agents] {
        assert!(tcp_free(port), "127.0.0.1:{port} still taken after Ctrl-C");
    }
}
