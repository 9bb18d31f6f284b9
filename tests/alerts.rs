//! Issue 15's "alerts are delivered", with the real programs on loopback: a Prometheus of the
//! test's own running the SHIPPED prometheus.yml and alert rules (rewritten to the test's ports
//! and files, every `for:` shortened to a second) discovers the lab's agent through the
//! controller; an Alertmanager of the test's own runs the SHIPPED alertmanager.yml (its webhook
//! pointed at the lab's controller, group waits shortened). The agent is stopped, so
//! `NodewardenNodeOffline` (the controller's view of the node; the shipped inhibition keeps the
//! agent's own `NodewardenAgentDown` quiet meanwhile) fires for real, reaches the controller
//! through Alertmanager with its labels, is listed at `/api/v1/alerts` and audited as kind
//! `alert`; the agent comes back and the resolved notification takes it off the list and is
//! audited too. The webhook refuses a
//! missing or wrong token (401) and a malformed body (400) and records nothing for them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nodewarden_tests::lab::Lab;
use nodewarden_tests::{
    ChildGuard, free_port, get_text, prometheus_query, service, start_prometheus, wait_for,
};
use serde_json::Value;
use serde_yaml_ng::Value as Y;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository")
        .to_path_buf()
}

fn read_yaml(path: &Path) -> Y {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The shipped alert rules with every `for:` at one second, written under `dir`.
fn quick_rules(dir: &Path) -> PathBuf {
    let text =
        std::fs::read_to_string(repo().join("packaging/prometheus/rules/nodewarden-alerts.yml"))
            .unwrap();
    let quick: String = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for:") {
            Some(_) => format!("{}for: 1s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("alerts.yml");
    std::fs::write(&path, quick).unwrap();
    path
}

/// The shipped prometheus.yml, pointed at the lab and the test's Alertmanager.
fn prometheus_config(lab: &Lab, alertmanager_port: u16, rules: &Path, token: &Path) -> String {
    let mut config = read_yaml(&repo().join("packaging/prometheus/prometheus.yml"));
    config["global"]["scrape_interval"] = Y::from("1s");
    config["global"]["evaluation_interval"] = Y::from("1s");
    config["rule_files"] = Y::Sequence(vec![Y::from(rules.display().to_string())]);
    let targets = &mut config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"];
    assert_eq!(
        targets[0].as_str(),
        Some("127.0.0.1:9093"),
        "the shipped prometheus.yml sends alerts to the local Alertmanager"
    );
    *targets = Y::Sequence(vec![Y::from(format!("127.0.0.1:{alertmanager_port}"))]);
    let api = lab.api();
    let mut jobs = Vec::new();
    for job in config["scrape_configs"].as_sequence().unwrap().clone() {
        let mut job = job;
        match job["job_name"].as_str().unwrap_or_default() {
            "nodes" => {
                let sd = &mut job["http_sd_configs"][0];
                sd["url"] = Y::from(format!("{api}/api/v1/sd/agents"));
                sd["refresh_interval"] = Y::from("1s");
                sd["authorization"]["credentials_file"] = Y::from(token.display().to_string());
                jobs.push(job);
            }
            "nodewarden-controller" => {
                job["static_configs"][0]["targets"] =
                    Y::Sequence(vec![Y::from(format!("127.0.0.1:{}", lab.admin_port))]);
                jobs.push(job);
            }
            // No Pushgateway here; Prometheus's own job is not needed.
            _ => {}
        }
    }
    config["scrape_configs"] = Y::Sequence(jobs);
    if let Some(map) = config.as_mapping_mut() {
        map.remove("remote_write");
        map.remove("remote_read");
    }
    serde_yaml_ng::to_string(&config).unwrap()
}

/// The shipped alertmanager.yml, its webhook pointed at the lab's controller with `token`.
fn alertmanager_config(lab: &Lab, token: &Path) -> String {
    let shipped =
        std::fs::read_to_string(repo().join("packaging/alertmanager/alertmanager.yml")).unwrap();
    for part in [
        "http://127.0.0.1:9180/api/v1/alerts/webhook",
        "/etc/nodewarden/alertmanager.token",
    ] {
        assert!(
            shipped.contains(part),
            "alertmanager.yml no longer names {part}"
        );
    }
    shipped
        .replace(
            "http://127.0.0.1:9180/api/v1/alerts/webhook",
            &format!("{}/api/v1/alerts/webhook", lab.api()),
        )
        .replace(
            "/etc/nodewarden/alertmanager.token",
            &token.display().to_string(),
        )
        .lines()
        .map(|l| {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            if t.starts_with("group_wait:") {
                format!("{indent}group_wait: 1s")
            } else if t.starts_with("group_interval:") {
                format!("{indent}group_interval: 1s")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn start_alertmanager(bin: &str, config: &Path, dir: &Path) -> (ChildGuard, String) {
    let port = free_port();
    let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
    let guard = ChildGuard::spawn(
        Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_for("Alertmanager to be ready", Duration::from_secs(30), || {
        get_text(&format!("{url}/-/ready"))
    });
    (guard, url)
}

fn firing(lab: &Lab, alertname: &str) -> Option<Value> {
    lab.get_json("/api/v1/alerts")
        .as_array()?
        .iter()
        .find(|a| a["alertname"] == alertname && a["node"] == "n1")
        .cloned()
}

fn alert_events(lab: &Lab, alertname: &str, result: &str) -> Vec<Value> {
    lab.get_json("/api/v1/events?limit=1000&node=n1")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["kind"] == "alert" && e["action"] == alertname && e["result"] == result)
        .collect()
}

/// POSTs a webhook body with an optional token: the status.
fn post_webhook(lab: &Lab, token: Option<&str>, body: &str) -> u16 {
    let mut request = lab
        .http_agent()
        .post(format!("{}/api/v1/alerts/webhook", lab.api()))
        .header("Content-Type", "application/json");
    if let Some(t) = token {
        request = request.header("Authorization", &format!("Bearer {t}"));
    }
    request.send(body).map(|r| r.status().as_u16()).unwrap_or(0)
}

#[test]
fn a_real_alert_reaches_the_controller_through_alertmanager_and_resolves() {
    let (Some(prometheus), Some(alertmanager)) = (
        service("NW_TEST_PROMETHEUS_BIN"),
        service("NW_TEST_ALERTMANAGER_BIN"),
    ) else {
        return;
    };
    let mut lab = Lab::new("");
    wait_for("n1 online", Duration::from_secs(20), || {
        lab.node().filter(|n| n["online"] == true)
    });
    let work = tempfile::tempdir().unwrap();
    // Prometheus's discovery and Alertmanager's webhook take the API token as well as their own.
    let token = lab.path("data/api.token");

    let am_config = work.path().join("alertmanager.yml");
    std::fs::write(&am_config, alertmanager_config(&lab, &token)).unwrap();
    let (_am, am_url) = start_alertmanager(&alertmanager, &am_config, work.path());

    let rules = quick_rules(work.path());
    let config = work.path().join("prometheus.yml");
    let am_port: u16 = am_url.rsplit(':').next().unwrap().parse().unwrap();
    std::fs::write(&config, prometheus_config(&lab, am_port, &rules, &token)).unwrap();
    let prom_port = free_port();
    let (_prom, prom_url) =
        start_prometheus(&prometheus, &config, &work.path().join("data"), prom_port);
    wait_for("Prometheus scraping n1", Duration::from_secs(30), || {
        let up = prometheus_query(&prom_url, r#"up{job="nodes",node="n1"} == 1"#);
        (up["data"]["result"].as_array().map_or(0, Vec::len) == 1).then_some(())
    });
    assert!(firing(&lab, "NodewardenNodeOffline").is_none());

    // The agent stops: the controller sees the node offline, the shipped alert fires and is
    // delivered.
    lab.stop_agent();
    let alert = wait_for(
        "NodewardenNodeOffline delivered to the controller",
        Duration::from_secs(60),
        || firing(&lab, "NodewardenNodeOffline"),
    );
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["labels"]["job"], "nodewarden-controller");
    assert_eq!(alert["labels"]["node"], "n1");
    assert!(
        !alert["summary"].as_str().unwrap_or_default().is_empty(),
        "{alert}"
    );
    let fired = wait_for("the firing alert audited", Duration::from_secs(20), || {
        let events = alert_events(&lab, "NodewardenNodeOffline", "firing");
        (!events.is_empty()).then_some(events)
    });
    assert_eq!(fired[0]["actor"], "alertmanager");
    assert!(
        fired[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("critical: "),
        "{}",
        fired[0]
    );

    // The agent comes back: the node is online again and the alert resolves.
    lab.start_agent();
    wait_for(
        "NodewardenNodeOffline resolved on the controller",
        Duration::from_secs(90),
        || {
            firing(&lab, "NodewardenNodeOffline")
                .is_none()
                .then_some(())
        },
    );
    wait_for("the resolution audited", Duration::from_secs(20), || {
        (!alert_events(&lab, "NodewardenNodeOffline", "resolved").is_empty()).then_some(())
    });
}

#[test]
fn the_webhook_refuses_bad_tokens_and_bad_bodies_and_records_nothing() {
    let lab = Lab::new("");
    let token = lab.token();
    let events = |lab: &Lab| {
        lab.get_json("/api/v1/events?limit=1000")
            .as_array()
            .map_or(0, |e| e.iter().filter(|e| e["kind"] == "alert").count())
    };
    let valid = r#"{"version":"4","receiver":"nodewarden","status":"firing","alerts":[
        {"status":"firing","labels":{"alertname":"Probe","severity":"info","node":"n1"},
         "annotations":{"summary":"probe"},"startsAt":"2026-12-05T10:00:00Z",
         "fingerprint":"probe1"}]}"#;
    assert_eq!(post_webhook(&lab, None, valid), 401);
    assert_eq!(
        post_webhook(&lab, Some("not-the-token-0123456789"), valid),
        401
    );
    assert_eq!(post_webhook(&lab, Some(&token), "{not json"), 400);
    assert_eq!(
        post_webhook(
            &lab,
            Some(&token),
            &valid.replace(r#""version":"4""#, r#""version":"2""#)
        ),
        400
    );
    assert_eq!(lab.get_json("/api/v1/alerts"), serde_json::json!([]));
    // A valid one is taken (the check above can fail): listed, and audited once flushed.
    assert_eq!(post_webhook(&lab, Some(&token), valid), 200);
    assert_eq!(lab.get_json("/api/v1/alerts")[0]["alertname"], "Probe");
    wait_for("the probe audited", Duration::from_secs(20), || {
        (events(&lab) == 1).then_some(())
    });
}
