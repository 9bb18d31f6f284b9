//! The agent side by side with the real node_exporter (both started on this machine), checked
//! by promtool, and scraped by a real Prometheus. Services come from scripts/test.sh.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use nodewarden_tests::{
    ChildGuard, bin_path, free_port, get_text, parse_exposition, service, wait_for,
};

/// node_exporter families nodewarden deliberately does not serve: its build info names Go.
const NOT_IMPERSONATED: &[&str] = &["node_exporter_build_info"];

/// Families of node_exporter 1.12.1's defaults that the reference here (1.5) does not serve.
const FAMILIES_SINCE_1_5: &[&str] = &[
    "node_netstat_TcpExt_TCPOFOQueue",
    "node_netstat_TcpExt_TCPRcvQDrop",
];

/// Labels the agent serves as node_exporter 1.12.1 does that the reference here (Debian's 1.5)
/// lacks: they may be extra, never missing.
const LABELS_SINCE_1_5: &[(&str, &[&str])] = &[
    ("node_disk_info", &["rotational"]),
    ("node_network_info", &["adminstate"]),
    ("node_filesystem_avail_bytes", &["device_error"]),
    ("node_filesystem_device_error", &["device_error"]),
    ("node_filesystem_files", &["device_error"]),
    ("node_filesystem_files_free", &["device_error"]),
    ("node_filesystem_free_bytes", &["device_error"]),
    ("node_filesystem_readonly", &["device_error"]),
    ("node_filesystem_size_bytes", &["device_error"]),
];

fn start_agent(extra: &[&str]) -> (ChildGuard, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = ChildGuard::spawn(
        Command::new(bin_path("nodewarden-agent"))
            .arg(format!("--web.listen-address={addr}"))
            .args(extra)
            .stdout(Stdio::null()),
    );
    let url = format!("http://{addr}/metrics");
    wait_for("agent to serve metrics", Duration::from_secs(20), || {
        get_text(&url)
    });
    (child, url)
}

#[test]
fn agent_serves_every_node_exporter_family_with_the_same_type_and_labels() {
    let Some(ne_url) = service("NW_TEST_NODE_EXPORTER_URL") else {
        return;
    };
    let (_agent, url) = start_agent(&[]);
    let reference = parse_exposition(&get_text(&ne_url).expect("node_exporter answers"));
    let ours = parse_exposition(&get_text(&url).expect("agent answers"));

    let mut problems = Vec::new();
    let mut compared = 0;
    for (name, family) in reference.iter().filter(|(n, _)| n.starts_with("node_")) {
        if NOT_IMPERSONATED.contains(&name.as_str()) {
            continue;
        }
        compared += 1;
        let Some(mine) = ours.get(name) else {
            problems.push(format!("missing family {name} ({})", family.kind));
            continue;
        };
        if mine.kind != family.kind {
            problems.push(format!(
                "{name}: type {} but node_exporter says {}",
                mine.kind, family.kind
            ));
        }
        let mut mine_labels = mine.label_names();
        let reference_labels = family.label_names();
        if let Some((_, newer)) = LABELS_SINCE_1_5.iter().find(|(n, _)| n == name) {
            mine_labels.retain(|l| reference_labels.contains(l) || !newer.contains(&l.as_str()));
        }
        if mine_labels != reference_labels {
            problems.push(format!(
                "{name}: labels {:?} but node_exporter has {:?}",
                mine_labels, reference_labels
            ));
        }
    }
    assert!(
        compared > 100,
        "node_exporter served only {compared} node families"
    );
    assert!(
        problems.is_empty(),
        "{} of {compared} families differ:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn stable_values_agree_with_node_exporter() {
    let Some(ne_url) = service("NW_TEST_NODE_EXPORTER_URL") else {
        return;
    };
    let (_agent, url) = start_agent(&[]);
    let reference = parse_exposition(&get_text(&ne_url).expect("node_exporter answers"));
    let ours = parse_exposition(&get_text(&url).expect("agent answers"));

    for name in ["node_memory_MemTotal_bytes", "node_memory_SwapTotal_bytes"] {
        assert_eq!(ours[name].value(&[]), reference[name].value(&[]), "{name}");
    }
    let idle_cpus = |f: &nodewarden_tests::Family| {
        f.samples
            .iter()
            .filter(|s| s.labels.get("mode").map(String::as_str) == Some("idle"))
            .count()
    };
    assert_eq!(
        idle_cpus(&ours["node_cpu_seconds_total"]),
        idle_cpus(&reference["node_cpu_seconds_total"])
    );
    let boot = |f: &nodewarden_tests::Family| f.value(&[]).unwrap();
    assert!(
        (boot(&ours["node_boot_time_seconds"]) - boot(&reference["node_boot_time_seconds"])).abs()
            <= 1.0
    );
    let sizes = &reference["node_filesystem_size_bytes"];
    assert!(!sizes.samples.is_empty());
    for sample in &sizes.samples {
        let mountpoint = &sample.labels["mountpoint"];
        assert_eq!(
            ours["node_filesystem_size_bytes"].value(&[("mountpoint", mountpoint)]),
            Some(sample.value),
            "size of {mountpoint}"
        );
    }
}

/// promtool's lint findings on a scrape, with the parse errors separated out.
fn promtool_findings(promtool: &str, text: &str) -> BTreeSet<String> {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !report.contains("error while linting"),
        "promtool could not parse the output:\n{report}"
    );
    report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn promtool_finds_no_problem_node_exporter_does_not_have() {
    let Some(ne_url) = service("NW_TEST_NODE_EXPORTER_URL") else {
        return;
    };
    let Some(promtool) = service("NW_TEST_PROMTOOL") else {
        return;
    };
    let (_agent, url) = start_agent(&[]);
    let reference = promtool_findings(&promtool, &get_text(&ne_url).unwrap());
    let ours = promtool_findings(&promtool, &get_text(&url).unwrap());
    // Families node_exporter 1.12.1 serves by default that the reference (1.5) lacks carry
    // the same findings in 1.12.1 (TcpExt counters are CamelCase there too).
    let extra: Vec<_> = ours
        .difference(&reference)
        .filter(|finding| {
            !FAMILIES_SINCE_1_5
                .iter()
                .any(|name| finding.starts_with(&format!("{name} ")))
        })
        .collect();
    assert!(
        extra.is_empty(),
        "promtool findings node_exporter does not have: {extra:#?}"
    );
}

fn query(prometheus: &str, expr: &str) -> Option<serde_json::Value> {
    let body = ureq::get(&format!("{prometheus}/api/v1/query"))
        .query("query", expr)
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    (!result.is_empty()).then(|| v["data"]["result"].clone())
}

#[test]
fn prometheus_scrapes_the_agent_and_answers_the_operators_expressions() {
    let Some(prometheus) = service("NW_TEST_PROMETHEUS_URL") else {
        return;
    };
    let Some(sd_dir) = service("NW_TEST_PROMETHEUS_SD_DIR") else {
        return;
    };
    let (_agent, url) = start_agent(&[]);
    let instance = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let sd_file =
        std::path::Path::new(&sd_dir).join(format!("agent-compat-{}.json", std::process::id()));
    std::fs::write(
        &sd_file,
        format!(r#"[{{"targets":["{instance}"],"labels":{{"job":"nodes"}}}}]"#),
    )
    .unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Remove(sd_file);

    let sel = format!(r#"instance="{instance}""#);
    wait_for(
        "Prometheus to scrape the agent",
        Duration::from_secs(60),
        || query(&prometheus, &format!("up{{{sel}}} == 1")),
    );
    // CPU saturation (SEED.md), with `bool` so that an idle machine still answers with a series.
    let saturation = wait_for(
        "the CPU saturation expression",
        Duration::from_secs(30),
        || {
            query(
                &prometheus,
                &format!(
                    r#"node_load1{{{sel}}} > bool on(instance) 2 * count by (instance)(node_cpu_seconds_total{{mode="idle",{sel}}})"#
                ),
            )
        },
    );
    assert_eq!(saturation.as_array().unwrap().len(), 1);
    let usage = wait_for(
        "the memory usage expression",
        Duration::from_secs(30),
        || {
            query(
                &prometheus,
                &format!(
                    "(node_memory_MemTotal_bytes{{{sel}}} - (node_memory_MemFree_bytes{{{sel}}} + node_memory_Buffers_bytes{{{sel}}} + node_memory_Cached_bytes{{{sel}}})) / node_memory_MemTotal_bytes{{{sel}}}"
                ),
            )
        },
    );
    let value: f64 = usage[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(value > 0.0 && value < 1.0, "memory usage {value}");
}
