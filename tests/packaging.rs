//! The shipped configuration (`packaging/`, `systemd/`) checked by the real programs that will
//! read it: promtool checks the Prometheus configuration and rules and runs the rule unit tests;
//! the suite's Prometheus (which loads the shipped rules) parses every dashboard expression,
//! evaluates the rules, and shows data in the node row for a real node_exporter; systemd-analyze
//! verifies the units and the traced agent stays within its unit's seccomp filter; node runs the
//! polkit example; sh/bash parse the maintainer scripts; the Grafana provisioning examples point at
//! the shipped dashboard and Prometheus. Names are checked against
//! docs/metrics.md. The .deb packages are built from the suite's binaries
//! (packaging/deb/build.sh --bin-dir), linted by lintian (no errors) and, under CI=true as root,
//! installed on the machine (CA, configuration, tokens, `systemd-analyze verify` of the installed
//! units), then purged: nothing but the system users remains.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nodewarden_tests::{
    ChildGuard, bin_path, free_port, get_text, service, start_prometheus, wait_for,
};
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Yaml {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files in `dir` whose names end with `suffix`, sorted; at least one.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *{suffix} in {}", dir.display());
    found
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn describe(cmd: &str, out: &Output) -> String {
    format!(
        "{cmd}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn str_of<'a>(v: &'a Yaml, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Yaml::as_str)
}

// ---------------------------------------------------------------- names from docs/metrics.md

/// Every `nodewarden_*` / `dontpanic_*` name in `text` (recording rules' `level:name:ops` names
/// are words of their own and not included).
fn nodewarden_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("nodewarden_") || word.starts_with("dontpanic_"))
        .map(str::to_string)
        .collect()
}

/// The families docs/metrics.md defines (it is the contract).
fn contract_names() -> BTreeSet<String> {
    let names = nodewarden_names(&read(&repo().join("docs/metrics.md")));
    assert!(
        names.contains("dontpanic_online_device_count")
            && names.contains("nodewarden_storage_device_free_bytes"),
        "docs/metrics.md lost its families: {names:?}"
    );
    names
}

fn assert_in_contract(what: &str, used: &BTreeSet<String>) {
    let contract = contract_names();
    // A histogram's series carry a suffix the contract does not spell out.
    let defined = |name: &String| {
        contract.contains(name)
            || ["_bucket", "_count", "_sum"].iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|base| contract.contains(base))
            })
    };
    let unknown: Vec<_> = used.iter().filter(|name| !defined(name)).collect();
    assert!(
        unknown.is_empty(),
        "{what} uses names docs/metrics.md does not define: {unknown:?}"
    );
}

// ---------------------------------------------------------------- Prometheus configuration

const SHIPPED_RULES_DIR: &str = "/usr/share/nodewarden/prometheus/rules/";
const SHIPPED_TOKEN: &str = "/etc/nodewarden/prometheus-sd.token";
const SITE_RULES_DIR: &str = "/etc/prometheus/rules.d/";

fn promtool() -> Option<String> {
    service("NW_TEST_PROMTOOL")
}

#[test]
fn prometheus_config_has_the_contract_jobs() {
    let config = yaml(&repo().join("packaging/prometheus/prometheus.yml"));
    let jobs: BTreeMap<&str, &Yaml> = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs is a list")
        .iter()
        .map(|job| (str_of(job, "job_name").expect("job_name"), job))
        .collect();

    let nodes = jobs.get("nodes").expect("job nodes");
    let sd = &nodes["http_sd_configs"][0];
    assert_eq!(
        str_of(sd, "url"),
        Some("http://127.0.0.1:9180/api/v1/sd/agents")
    );
    assert_eq!(str_of(&sd["authorization"], "type"), Some("Bearer"));
    assert_eq!(
        str_of(&sd["authorization"], "credentials_file"),
        Some(SHIPPED_TOKEN)
    );

    let pushgateway = jobs.get("pushgateway").expect("job pushgateway");
    assert_eq!(pushgateway["honor_labels"].as_bool(), Some(true));
    assert_eq!(
        pushgateway["static_configs"][0]["targets"][0].as_str(),
        Some("127.0.0.1:9091")
    );
    let controller = jobs
        .get("nodewarden-controller")
        .expect("job nodewarden-controller");
    assert_eq!(
        controller["static_configs"][0]["targets"][0].as_str(),
        Some("127.0.0.1:9180")
    );

    assert_eq!(
        str_of(&config["remote_write"][0], "url"),
        Some("http://127.0.0.1:8086/api/v1/prom/write?db=prometheus")
    );
    assert_eq!(
        str_of(&config["remote_read"][0], "url"),
        Some("http://127.0.0.1:8086/api/v1/prom/read?db=prometheus")
    );

    // Every shipped rule file is loaded from where the package installs it.
    let loaded: BTreeSet<&str> = config["rule_files"]
        .as_sequence()
        .expect("rule_files")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    for rules in files(&repo().join("packaging/prometheus/rules"), ".yml") {
        let installed = format!(
            "{SHIPPED_RULES_DIR}{}",
            rules.file_name().unwrap().to_string_lossy()
        );
        assert!(
            loaded.contains(installed.as_str()),
            "{installed} is not in rule_files"
        );
    }
}

#[test]
fn promtool_checks_the_shipped_config() {
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("prometheus-sd.token");
    std::fs::write(&token, "test-token\n").unwrap();
    let rules_dir = repo().join("packaging/prometheus/rules");

    // The shipped file names installed paths; point them at this tree and temporary files.
    let shipped = read(&repo().join("packaging/prometheus/prometheus.yml"));
    let mut config = shipped.clone();
    for (from, to) in [
        (
            SHIPPED_RULES_DIR.to_string(),
            format!("{}/", rules_dir.display()),
        ),
        (SHIPPED_TOKEN.to_string(), token.display().to_string()),
        (
            SITE_RULES_DIR.to_string(),
            format!("{}/", dir.path().join("rules.d").display()),
        ),
    ] {
        assert!(
            shipped.contains(&from),
            "prometheus.yml no longer names {from}"
        );
        config = config.replace(&from, &to);
    }
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();

    let out = run(Command::new(&promtool)
        .args(["check", "config"])
        .arg(&config_path));
    let report = describe("promtool check config", &out);
    assert!(out.status.success(), "{report}");
    let rule_files = files(&rules_dir, ".yml").len();
    assert!(
        report.contains(&format!("SUCCESS: {rule_files} rule files found")),
        "promtool did not load the {rule_files} shipped rule files: {report}"
    );

    // The check can fail: with the rule files missing where the configuration names them, the
    // same configuration is refused.
    let missing = dir.path().join("missing");
    std::fs::write(
        &config_path,
        read(&config_path).replace(
            &format!("{}/", rules_dir.display()),
            &format!("{}/", missing.display()),
        ),
    )
    .unwrap();
    let out = run(Command::new(&promtool)
        .args(["check", "config"])
        .arg(&config_path));
    assert!(
        !out.status.success(),
        "promtool accepted missing rule files: {}",
        describe("promtool check config", &out)
    );
}

// ---------------------------------------------------------------- Alertmanager configuration

#[test]
fn amtool_checks_the_shipped_alertmanager_config_and_it_routes_every_severity() {
    let Some(amtool) = service("NW_TEST_AMTOOL") else {
        return;
    };
    let shipped = repo().join("packaging/alertmanager/alertmanager.yml");
    let out = run(Command::new(&amtool).arg("check-config").arg(&shipped));
    let report = describe("amtool check-config", &out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("2 receivers"), "{report}");

    // Every severity the shipped alerts carry has its own route; every receiver reaches the
    // controller's webhook with the token file the controller package makes.
    let config = yaml(&shipped);
    let routed: BTreeSet<String> = config["route"]["routes"]
        .as_sequence()
        .expect("routes")
        .iter()
        .flat_map(|r| r["matchers"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect();
    let alerts = yaml(&repo().join("packaging/prometheus/rules/nodewarden-alerts.yml"));
    for group in alerts["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let severity = rule["labels"]["severity"].as_str().expect("severity");
            assert!(
                routed.contains(&format!("severity=\"{severity}\"")),
                "no route for severity {severity} ({:?})",
                rule["alert"]
            );
        }
    }
    for receiver in config["receivers"].as_sequence().expect("receivers") {
        let hook = &receiver["webhook_configs"][0];
        assert_eq!(
            hook["url"].as_str(),
            Some("http://127.0.0.1:9180/api/v1/alerts/webhook")
        );
        assert_eq!(hook["send_resolved"].as_bool(), Some(true));
        assert_eq!(
            hook["http_config"]["authorization"]["credentials_file"].as_str(),
            Some("/etc/nodewarden/alertmanager.token")
        );
    }

    // The check can fail: a route to a receiver that does not exist is refused.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("alertmanager.yml");
    std::fs::write(
        &broken,
        read(&shipped).replace("receiver: nodewarden-critical", "receiver: nobody"),
    )
    .unwrap();
    let out = run(Command::new(&amtool).arg("check-config").arg(&broken));
    assert!(
        !out.status.success(),
        "amtool accepted a route to no receiver: {}",
        describe("amtool check-config", &out)
    );
}

#[test]
fn promtool_checks_the_shipped_rules() {
    let Some(promtool) = promtool() else { return };
    for rules in files(&repo().join("packaging/prometheus/rules"), ".yml") {
        let out = run(Command::new(&promtool).args(["check", "rules"]).arg(&rules));
        assert!(
            out.status.success(),
            "{}",
            describe(&format!("promtool check rules {}", rules.display()), &out)
        );
    }
}

#[test]
fn promtool_rule_unit_tests_pass() {
    let Some(promtool) = promtool() else { return };
    for test in files(&repo().join("packaging/prometheus/tests"), ".yml") {
        let out = run(Command::new(&promtool).args(["test", "rules"]).arg(&test));
        assert!(
            out.status.success(),
            "{}",
            describe(&format!("promtool test rules {}", test.display()), &out)
        );
    }
}

/// The shipped alerts, as (name, expression).
fn alerts() -> Vec<(String, String)> {
    let rules = yaml(&repo().join("packaging/prometheus/rules/nodewarden-alerts.yml"));
    let mut found = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            if let Some(alert) = str_of(rule, "alert") {
                found.push((
                    alert.to_string(),
                    str_of(rule, "expr").expect("expr").to_string(),
                ));
            }
        }
    }
    found
}

#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in files(&repo().join("packaging/prometheus/tests"), ".yml") {
        let doc = yaml(&test);
        for case in doc["tests"].as_sequence().expect("tests") {
            for check in case["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = str_of(check, "alertname").expect("alertname").to_string();
                let expected = check["exp_alerts"].as_sequence().map_or(0, Vec::len);
                if expected > 0 {
                    firing.insert(name);
                } else {
                    quiet.insert(name);
                }
            }
        }
    }
    let alerts = alerts();
    assert!(alerts.len() >= 9, "alerts went missing: {alerts:?}");
    for (name, _) in &alerts {
        assert!(firing.contains(name), "no test makes {name} fire");
        assert!(quiet.contains(name), "no test shows {name} staying quiet");
    }
    let expressions: BTreeMap<_, _> = alerts.into_iter().collect();
    assert_eq!(
        expressions.get("NodeCpuSaturated").map(String::as_str),
        Some(
            r#"node_load1 > on(instance) 2 * count by (instance)(node_cpu_seconds_total{mode="idle"})"#
        ),
        "the CPU saturation alert must keep the original system's expression"
    );
}

/// The unit tests can fail: a copy of the rules with the memory threshold moved to 95 % makes
/// them fail, so their assertions are real.
#[test]
fn promtool_rule_unit_tests_catch_a_changed_threshold() {
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::create_dir_all(dir.path().join("tests")).unwrap();
    let shipped = read(&repo().join("packaging/prometheus/rules/nodewarden-alerts.yml"));
    let changed = shipped.replace(
        "node_memory_MemTotal_bytes > 0.9",
        "node_memory_MemTotal_bytes > 0.95",
    );
    assert_ne!(shipped, changed, "the memory alert's threshold moved");
    std::fs::write(dir.path().join("rules/nodewarden-alerts.yml"), changed).unwrap();
    let test = dir.path().join("tests/nodewarden-alerts.test.yml");
    std::fs::copy(
        repo().join("packaging/prometheus/tests/nodewarden-alerts.test.yml"),
        &test,
    )
    .unwrap();
    let out = run(Command::new(&promtool).args(["test", "rules"]).arg(&test));
    let report = describe("promtool test rules (changed threshold)", &out);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("NodeMemoryHigh"), "{report}");
}

#[test]
fn rules_use_only_contract_names() {
    let mut used = BTreeSet::new();
    for rules in files(&repo().join("packaging/prometheus/rules"), ".yml") {
        used.extend(nodewarden_names(&read(&rules)));
    }
    assert_in_contract("packaging/prometheus/rules", &used);
}

fn influx_query(influx: &str, db: &str, q: &str) -> Option<Json> {
    let mut response = ureq::post(format!("{influx}/query"))
        .send_form([("db", db), ("q", q)])
        .ok()?;
    serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()
}

/// Drops a test database when dropped.
struct DropDatabase<'a>(&'a str, String);

impl Drop for DropDatabase<'_> {
    fn drop(&mut self) {
        let _ = influx_query(self.0, "", &format!("DROP DATABASE \"{}\"", self.1));
    }
}

/// The shipped remote_write and remote_read URLs work against a real InfluxDB 1.x: a Prometheus
/// running the shipped configuration writes its samples there, and a second, empty Prometheus
/// with only the shipped remote_read section answers queries from them.
#[test]
fn shipped_config_writes_to_and_reads_from_influxdb() {
    let (Some(prometheus_bin), Some(influx)) = (
        service("NW_TEST_PROMETHEUS_BIN"),
        service("NW_TEST_INFLUXDB_URL"),
    ) else {
        return;
    };
    let db = format!("nodewarden_packaging_{}", std::process::id());
    influx_query(&influx, "", &format!("CREATE DATABASE \"{db}\""))
        .unwrap_or_else(|| panic!("creating database {db} in {influx}"));
    let _drop_db = DropDatabase(&influx, db.clone());

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "test-token\n").unwrap();
    let self_port = free_port();
    let shipped = read(&repo().join("packaging/prometheus/prometheus.yml"));
    let mut config = shipped.clone();
    for (from, to) in [
        ("http://127.0.0.1:8086/".to_string(), format!("{influx}/")),
        ("?db=prometheus".to_string(), format!("?db={db}")),
        (
            "127.0.0.1:9090".to_string(),
            format!("127.0.0.1:{self_port}"),
        ),
        (
            "scrape_interval: 15s".to_string(),
            "scrape_interval: 1s".to_string(),
        ),
        (SHIPPED_TOKEN.to_string(), token.display().to_string()),
        (
            SHIPPED_RULES_DIR.to_string(),
            format!("{}/", repo().join("packaging/prometheus/rules").display()),
        ),
    ] {
        assert!(
            shipped.contains(&from),
            "prometheus.yml no longer contains {from}"
        );
        config = config.replace(&from, &to);
    }
    let writer_config = dir.path().join("writer.yml");
    std::fs::write(&writer_config, &config).unwrap();
    // The writer listens where its own `prometheus` job scrapes.
    let (writer, _) = start_prometheus(
        &prometheus_bin,
        &writer_config,
        &dir.path().join("writer"),
        self_port,
    );

    let select = r#"SELECT * FROM "up" WHERE "job" = 'prometheus' LIMIT 1"#;
    let stored = wait_for(
        "the shipped remote_write to store samples in InfluxDB",
        std::time::Duration::from_secs(90),
        || {
            let answer = influx_query(&influx, &db, select)?;
            let series = answer["results"][0]["series"].as_array()?.first()?.clone();
            Some(series)
        },
    );
    assert!(
        stored["columns"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == "monitor")),
        "the external label reached InfluxDB: {stored}"
    );
    drop(writer);

    // A Prometheus with nothing local, reading through the shipped remote_read section.
    let shipped_config: Yaml = serde_yaml_ng::from_str(&config).unwrap();
    let mut remote_read = shipped_config["remote_read"].clone();
    let first = remote_read
        .as_sequence_mut()
        .and_then(|s| s.first_mut())
        .and_then(Yaml::as_mapping_mut)
        .expect("a remote_read entry");
    // Local storage is empty, so let InfluxDB answer recent ranges too.
    first.insert("read_recent".into(), true.into());
    let mut reader_doc = serde_yaml_ng::Mapping::new();
    reader_doc.insert("remote_read".into(), remote_read);
    let reader_config = dir.path().join("reader.yml");
    std::fs::write(
        &reader_config,
        serde_yaml_ng::to_string(&reader_doc).unwrap(),
    )
    .unwrap();
    let (_reader, reader_url) = start_prometheus(
        &prometheus_bin,
        &reader_config,
        &dir.path().join("reader"),
        free_port(),
    );
    let answer = query(&reader_url, r#"up{job="prometheus"}"#);
    let result = &answer["data"]["result"][0];
    assert_eq!(result["metric"]["monitor"], "nodewarden", "{answer}");
    assert_eq!(result["value"][1], "1", "{answer}");
}

// ---------------------------------------------------------------- Grafana dashboard

fn dashboard() -> Json {
    let path = repo().join("packaging/grafana/nodewarden-dashboard.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Json) -> Vec<&Json> {
    fn walk<'a>(list: &'a Json, out: &mut Vec<&'a Json>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// (panel title, expression) for every target.
fn dashboard_expressions(dashboard: &Json) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| {
                    let expr = t["expr"]
                        .as_str()
                        .unwrap_or_else(|| panic!("a target of {title:?} has no expr"));
                    (title.clone(), expr.to_string())
                })
        })
        .collect()
}

/// Grafana's variables replaced by values Prometheus accepts; any other `$name` left over is
/// a variable the dashboard does not define, which fails.
fn substitute_variables(expr: &str) -> String {
    substitute_instance(expr, "127.0.0.1:9100")
}

/// [`substitute_variables`] with `$instance` as `instance` (a node, or the All value).
fn substitute_instance(expr: &str, instance: &str) -> String {
    let text = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$instance", instance);
    let leftover = text.match_indices('$').any(|(i, _)| {
        text[i + 1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '{')
    });
    assert!(!leftover, "unknown variable in {expr:?}");
    text
}

#[test]
fn dashboard_is_importable_and_complete() {
    let dash = dashboard();
    let schema = dash["schemaVersion"].as_i64().expect("schemaVersion");
    assert!((36..=39).contains(&schema), "schemaVersion {schema}");
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));

    let variables: BTreeMap<&str, &Json> = dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().expect("variable name"), v))
        .collect();
    let ds = variables
        .get("DS_PROMETHEUS")
        .expect("DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let instance = variables.get("instance").expect("instance variable");
    assert!(
        instance["definition"]
            .as_str()
            .is_some_and(|d| d.starts_with("label_values(node_uname_info")),
        "instance comes from node_uname_info: {instance}"
    );
    // "All" nodes, as a regex Prometheus matches every instance with (not Grafana's default,
    // an alternation of every value, which grows with the fleet), and several at once.
    assert_eq!(instance["includeAll"], true, "{instance}");
    assert_eq!(instance["multi"], true, "{instance}");
    assert_eq!(instance["allValue"], ".+", "{instance}");
    // With All or several nodes Grafana substitutes a regex (and escapes a single value's dots),
    // so every use of the variable must be a regex matcher.
    for (title, expr) in dashboard_expressions(&dash) {
        for (i, _) in expr.match_indices("$instance") {
            assert!(
                expr[..i].ends_with("instance=~\"") && expr[i..].starts_with("$instance\""),
                "{title:?}: $instance outside an instance=~\"$instance\" matcher: {expr}"
            );
        }
    }
    // The fleet overview is the first row, every panel in it reads the selection.
    let first_row = &dash["panels"][0];
    assert_eq!(first_row["type"], "row");
    assert!(
        first_row["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("Fleet")),
        "{first_row}"
    );
    let fleet = row_expressions(&dash, "Fleet");
    assert!(fleet.len() >= 8, "{fleet:?}");
    for (title, expr) in &fleet {
        assert!(
            expr.contains(r#"instance=~"$instance""#),
            "{title:?}: {expr}"
        );
    }

    let mut ids = BTreeSet::new();
    for panel in panels(&dash) {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(panel["id"].as_i64().expect("panel id")),
            "duplicate panel id in {title:?}"
        );
        for key in ["h", "w", "x", "y"] {
            assert!(
                panel["gridPos"][key].is_i64(),
                "{title:?} lacks gridPos.{key}"
            );
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title:?} must use the DS_PROMETHEUS variable"
        );
        let mut ref_ids = BTreeSet::new();
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title:?}");
            assert!(
                ref_ids.insert(target["refId"].as_str().expect("refId")),
                "duplicate refId in {title:?}"
            );
        }
        assert!(!ref_ids.is_empty(), "{title:?} has no targets");
    }

    let exprs = dashboard_expressions(&dash);
    let all: String = exprs
        .iter()
        .map(|(_, e)| e.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    // What operators had on the original dashboards, and the Storage and Operations rows.
    for family in [
        "node_uname_info",
        "node_boot_time_seconds",
        "node_memory_MemTotal_bytes",
        "node_load5",
        "node_cpu_seconds_total",
        "node_filesystem_avail_bytes",
        "node_disk_read_bytes_total",
        "node_disk_written_bytes_total",
        "node_netstat_Tcp_CurrEstab",
        "node_sockstat_TCP_tw",
        "node_network_receive_bytes_total",
        "node_network_transmit_bytes_total",
        "dontpanic_online_device_count",
        "dontpanic_device_leftrs",
        "nodewarden_dfs_device_leftrs",
        "nodewarden_storage_device_free_bytes",
        "nodewarden_nodes_online",
        "increase(nodewarden_controller_command_duration_seconds_count[1h])",
    ] {
        assert!(all.contains(family), "no panel shows {family}");
    }
    assert_in_contract("the dashboard", &nodewarden_names(&all));

    // Recording rules the dashboard reads must be shipped.
    let recording = read(&repo().join("packaging/prometheus/rules/nodewarden-recording.yml"));
    for (title, expr) in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if word.contains(':') && word.starts_with(|c: char| c.is_ascii_alphabetic()) {
                assert!(
                    recording.contains(&format!("record: {word}\n")),
                    "{title:?} reads {word}, which no shipped recording rule records"
                );
            }
        }
    }
}

/// The example Grafana provisioning files: a Prometheus data source at the shipped Prometheus's
/// address, and a file provider whose path is where the package installs the dashboard (and
/// the package installs both files).
#[test]
fn grafana_provisioning_examples_point_at_the_shipped_files() {
    let dir = repo().join("packaging/grafana/provisioning");
    let datasources = yaml(&dir.join("datasources/nodewarden.yaml"));
    assert_eq!(datasources["apiVersion"].as_i64(), Some(1));
    let ds = &datasources["datasources"][0];
    assert_eq!(str_of(ds, "type"), Some("prometheus"));
    assert_eq!(str_of(ds, "url"), Some("http://127.0.0.1:9090"));
    assert_eq!(
        ds["isDefault"].as_bool(),
        Some(true),
        "DS_PROMETHEUS picks the default"
    );

    let dashboards = yaml(&dir.join("dashboards/nodewarden.yaml"));
    assert_eq!(dashboards["apiVersion"].as_i64(), Some(1));
    let provider = &dashboards["providers"][0];
    assert_eq!(str_of(provider, "type"), Some("file"));
    let path = str_of(&provider["options"], "path").expect("options.path");
    let build = read(&repo().join("packaging/deb/build.sh"));
    let installed = "\"$share/grafana/nodewarden-dashboard.json\"";
    assert!(build.contains(installed), "build.sh installs {installed}");
    assert_eq!(path, "/usr/share/nodewarden/grafana");
    assert!(
        build.contains("packaging/grafana/provisioning/$kind/nodewarden.yaml"),
        "build.sh ships the provisioning examples"
    );
}

/// Prometheus's answer to an instant query (POSTed, so no expression needs URL escaping).
fn query(prometheus: &str, expr: &str) -> Json {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(format!("{prometheus}/api/v1/query"))
        .send_form([("query", expr)])
        .unwrap_or_else(|e| panic!("querying {prometheus}: {e}"));
    let body = response.body_mut().read_to_string().expect("query body");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("Prometheus answered {body:?}: {e}"))
}

#[test]
fn dashboard_expressions_parse_in_prometheus() {
    let Some(prometheus) = service("NW_TEST_PROMETHEUS_URL") else {
        return;
    };
    // The checker itself: a broken expression is refused with bad_data.
    let refused = query(&prometheus, "sum(rate(node_cpu_seconds_total[5m])");
    assert_eq!(refused["errorType"], "bad_data", "{refused}");

    let dash = dashboard();
    let mut exprs = dashboard_expressions(&dash);
    // The instance variable's selector too.
    exprs.push((
        "variable instance".into(),
        r#"node_uname_info{job="nodes"}"#.into(),
    ));
    // Each with one node and with All (the variable's allValue).
    let failures: Vec<String> = exprs
        .iter()
        .flat_map(|(title, expr)| {
            [
                substitute_variables(expr),
                substitute_instance(expr, ALL_NODES),
            ]
            .map(|concrete| {
                let answer = query(&prometheus, &concrete);
                (answer["status"] != "success")
                    .then(|| format!("{title:?}: {concrete}\n  -> {answer}"))
            })
        })
        .flatten()
        .collect();
    assert!(exprs.len() >= 30, "only {} expressions", exprs.len());
    assert!(
        failures.is_empty(),
        "Prometheus refused:\n{}",
        failures.join("\n")
    );
}

/// The node variable's All value (`allValue`).
const ALL_NODES: &str = ".+";

/// The targets of the panels in the row whose title starts with `row_title`.
fn row_expressions(dashboard: &Json, row_title: &str) -> Vec<(String, String)> {
    let mut in_row = false;
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?");
        if panel["type"] == "row" {
            in_row = title.starts_with(row_title);
            continue;
        }
        if in_row {
            for target in panel["targets"].as_array().into_iter().flatten() {
                found.push((
                    title.to_string(),
                    target["expr"].as_str().expect("expr").to_string(),
                ));
            }
        }
    }
    assert!(!found.is_empty(), "no row {row_title:?}");
    found
}

/// Removes a service-discovery file when dropped.
struct RemoveFile(PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn has_data(prometheus: &str, expr: &str) -> bool {
    let answer = query(prometheus, expr);
    answer["status"] == "success"
        && answer["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
}

/// Every panel of the node row shows data for a real node_exporter scraped in job `nodes` by
/// the suite's Prometheus (which loads the shipped rules, so recording rules count too), and the
/// fleet overview row with All nodes lists it.
#[test]
fn dashboard_node_row_has_data_for_node_exporter() {
    let (Some(prometheus), Some(sd_dir), Some(exporter)) = (
        service("NW_TEST_PROMETHEUS_URL"),
        service("NW_TEST_PROMETHEUS_SD_DIR"),
        service("NW_TEST_NODE_EXPORTER_URL"),
    ) else {
        return;
    };
    let instance = exporter
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let sd_file = Path::new(&sd_dir).join(format!("packaging-{}.json", std::process::id()));
    std::fs::write(
        &sd_file,
        format!(
            r#"[{{"targets":["{instance}"],"labels":{{"job":"nodes","node":"packaging-test"}}}}]"#
        ),
    )
    .unwrap();
    let _cleanup = RemoveFile(sd_file);
    wait_for(
        "Prometheus to scrape node_exporter",
        std::time::Duration::from_secs(60),
        || has_data(&prometheus, &format!(r#"up{{instance="{instance}"}} == 1"#)).then_some(()),
    );

    let dash = dashboard();
    let exprs: Vec<(String, String)> = row_expressions(&dash, "Node")
        .into_iter()
        .map(|(title, expr)| {
            let concrete = substitute_variables(&expr).replace("127.0.0.1:9100", &instance);
            (title, concrete)
        })
        .collect();
    // Rates need two scrapes and recording rules an evaluation: wait until all have data.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let missing = loop {
        let missing: Vec<&(String, String)> = exprs
            .iter()
            .filter(|(_, expr)| !has_data(&prometheus, expr))
            .collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "panels without data for {instance}: {missing:#?}"
    );

    // The fleet overview with All nodes: every per-node panel lists this node_exporter, the
    // counts count it.
    let fleet = row_expressions(&dash, "Fleet");
    let missing: Vec<String> = fleet
        .iter()
        .filter_map(|(title, expr)| {
            let concrete = substitute_instance(expr, ALL_NODES);
            let answer = wait_for(
                &format!("{title:?} (fleet row, All) to have data"),
                std::time::Duration::from_secs(60),
                || {
                    let answer = query(&prometheus, &concrete);
                    has_data_in(&answer).then_some(answer)
                },
            );
            let series = answer["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let per_node = series.iter().any(|s| s["metric"].get("instance").is_some());
            let listed = series
                .iter()
                .any(|s| s["metric"]["instance"] == instance.as_str());
            let counted = series
                .iter()
                .any(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0));
            let ok = if per_node {
                listed
            } else {
                // "Nodes up" counts it; "Nodes down" answers a number.
                title != "Nodes up" || counted
            };
            (!ok).then(|| format!("{title}: {concrete} -> {answer}"))
        })
        .collect();
    assert!(missing.is_empty(), "fleet row with All: {missing:#?}");
}

fn has_data_in(answer: &Json) -> bool {
    answer["status"] == "success"
        && answer["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
}

/// The suite's Prometheus loads the shipped rules and evaluates every one without error.
#[test]
fn shipped_rules_evaluate_in_prometheus() {
    let Some(prometheus) = service("NW_TEST_PROMETHEUS_URL") else {
        return;
    };
    let shipped: BTreeSet<String> = files(&repo().join("packaging/prometheus/rules"), ".yml")
        .iter()
        .flat_map(|path| {
            yaml(path)["groups"]
                .as_sequence()
                .expect("groups")
                .iter()
                .map(|g| str_of(g, "name").expect("group name").to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    // Every group evaluated at least once, then no rule reports an error.
    let groups = wait_for(
        "the shipped rule groups to be evaluated",
        std::time::Duration::from_secs(30),
        || {
            let body = get_text(&format!("{prometheus}/api/v1/rules"))?;
            let rules: Json = serde_json::from_str(&body).ok()?;
            let groups = rules["data"]["groups"].as_array()?.clone();
            let evaluated: BTreeSet<String> = groups
                .iter()
                .filter(|g| {
                    g["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
                })
                .filter_map(|g| g["name"].as_str().map(str::to_string))
                .collect();
            shipped.is_subset(&evaluated).then_some(groups)
        },
    );
    let broken: Vec<String> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["health"] != "ok" && r["health"] != "unknown")
        .map(|r| format!("{}: {}", r["name"], r["lastError"]))
        .collect();
    assert!(broken.is_empty(), "rules failing in Prometheus: {broken:?}");
}

/// A family of a pushed group and the one label it carries, if any.
type PushedFamily = (String, Option<String>);

/// The Pushgateway groups of docs/metrics.md: group name and its families.
fn contract_push_groups() -> Vec<(String, Vec<PushedFamily>)> {
    let doc = read(&repo().join("docs/metrics.md"));
    let section = doc
        .split("## Pushgateway groups")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/metrics.md has a Pushgateway groups section");
    let mut groups = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(group_cell), Some(families_cell)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let group = group_cell
            .split('`')
            .nth(1)
            .expect("group name")
            .to_string();
        // Backticked words in the families cell: `name` or `name{label}`.
        let families = families_cell
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| w.starts_with("nodewarden_") || w.starts_with("dontpanic_"))
            .map(|w| match w.split_once('{') {
                Some((name, label)) => (
                    name.to_string(),
                    Some(label.trim_end_matches('}').to_string()),
                ),
                None => (w.to_string(), None),
            })
            .collect::<Vec<_>>();
        groups.push((group, families));
    }
    assert!(
        groups.len() >= 3,
        "Pushgateway groups in docs/metrics.md: {groups:?}"
    );
    groups
}

/// The panels reading only Pushgateway families show data once the groups docs/metrics.md
/// defines are pushed to a real Pushgateway scraped with the shipped `pushgateway` job; the
/// groups keep their own job labels (honor_labels), and the shipped alerts evaluate on them.
#[test]
fn pushed_groups_reach_the_dashboard_and_alerts() {
    let (Some(prometheus_bin), Some(pushgateway_bin)) = (
        service("NW_TEST_PROMETHEUS_BIN"),
        service("NW_TEST_PUSHGATEWAY_BIN"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A private Pushgateway: the suite's shared one may hold groups other tests assert on.
    let pushgateway_port = free_port();
    let _pushgateway = ChildGuard::spawn(
        Command::new(&pushgateway_bin)
            .arg(format!("--web.listen-address=127.0.0.1:{pushgateway_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let pushgateway = format!("http://127.0.0.1:{pushgateway_port}");
    wait_for(
        "the Pushgateway",
        std::time::Duration::from_secs(30),
        || get_text(&format!("{pushgateway}/-/ready")),
    );

    // Push each group as the controller does: the whole group with PUT. Two online devices, so
    // StorageDevicesOnlineLow (below 3) must go pending.
    let groups = contract_push_groups();
    let mut pushed_families = BTreeSet::new();
    for (group, families) in &groups {
        let mut body = String::new();
        for (family, label) in families {
            let value = if family.ends_with("device_count") || family.ends_with("devices_online") {
                "2"
            } else {
                "1000"
            };
            match label.as_deref() {
                Some("id") => body.push_str(&format!(
                    "{family}{{id=\"1\"}} {value}\n{family}{{id=\"2\"}} {value}\n"
                )),
                Some(label) => body.push_str(&format!("{family}{{{label}=\"storage\"}} {value}\n")),
                None => body.push_str(&format!("{family} {value}\n")),
            }
            pushed_families.insert(family.clone());
        }
        ureq::put(format!("{pushgateway}/metrics/job/{group}"))
            .send(body.as_str())
            .unwrap_or_else(|e| panic!("pushing group {group}: {e}"));
    }

    // The shipped configuration with only its pushgateway job, pointed at the private one.
    let shipped: Yaml = yaml(&repo().join("packaging/prometheus/prometheus.yml"));
    let mut config = shipped.clone();
    let map = config.as_mapping_mut().unwrap();
    map.remove("remote_write");
    map.remove("remote_read");
    let mut job = shipped["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|j| str_of(j, "job_name") == Some("pushgateway"))
        .expect("job pushgateway")
        .clone();
    job["static_configs"][0]["targets"][0] = format!("127.0.0.1:{pushgateway_port}").into();
    map.insert("scrape_configs".into(), vec![job].into());
    let rules: Vec<Yaml> = files(&repo().join("packaging/prometheus/rules"), ".yml")
        .iter()
        .map(|p| p.display().to_string().into())
        .collect();
    map.insert("rule_files".into(), rules.into());
    config["global"]["scrape_interval"] = "1s".into();
    config["global"]["evaluation_interval"] = "1s".into();
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    let (_prometheus, prometheus) = start_prometheus(
        &prometheus_bin,
        &config_path,
        &dir.path().join("data"),
        free_port(),
    );

    // honor_labels: each group's samples keep the group's job, not "pushgateway".
    let count = wait_for(
        "the pushed groups to be scraped",
        std::time::Duration::from_secs(60),
        || {
            let answer = query(&prometheus, "dontpanic_online_device_count");
            answer["data"]["result"]
                .as_array()
                .filter(|r| !r.is_empty())
                .cloned()
        },
    );
    assert_eq!(
        count[0]["metric"]["job"], "online_device_count",
        "{count:?}"
    );
    assert_eq!(count[0]["value"][1], "2");

    // Every Storage and Operations panel target whose families are all pushed has data.
    let dash = dashboard();
    let mut checked = 0;
    for row in ["Storage", "Operations"] {
        for (title, expr) in row_expressions(&dash, row) {
            let names = nodewarden_names(&expr);
            let from_pushgateway = expr.contains("push_time_seconds")
                || (!names.is_empty() && names.iter().all(|n| pushed_families.contains(n)));
            if !from_pushgateway {
                continue;
            }
            let concrete = substitute_variables(&expr);
            wait_for(
                &format!("data in {title:?}: {expr}"),
                std::time::Duration::from_secs(30),
                || has_data(&prometheus, &concrete).then_some(()),
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 6,
        "only {checked} panel targets read pushed families"
    );

    // The alerts see the pushed groups: two devices online is too few; the groups are fresh.
    let alerts = wait_for(
        "StorageDevicesOnlineLow to go pending",
        std::time::Duration::from_secs(30),
        || {
            let body = get_text(&format!("{prometheus}/api/v1/alerts"))?;
            let alerts: Json = serde_json::from_str(&body).ok()?;
            let list = alerts["data"]["alerts"].as_array()?.clone();
            list.iter()
                .any(|a| a["labels"]["alertname"] == "StorageDevicesOnlineLow")
                .then_some(list)
        },
    );
    let low = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == "StorageDevicesOnlineLow")
        .unwrap();
    assert_eq!(low["labels"]["job"], "online_device_count", "{low}");
    assert_eq!(
        low["annotations"]["summary"],
        "Only 2 DFS storage devices are online"
    );
    assert!(
        !alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == "PushgatewayPushStale"),
        "fresh groups reported stale: {alerts:?}"
    );
}

// ---------------------------------------------------------------- systemd units

const UNITS: [&str; 2] = ["nodewarden-agent", "nodewarden-controller"];

/// `Key=value` settings of a unit file's [Service] section, in order.
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            settings.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    settings
}

#[test]
fn units_are_hardened() {
    for name in UNITS {
        let text = read(&repo().join(format!("systemd/{name}.service")));
        let settings = service_settings(&text);
        let get = |key: &str| -> Vec<&str> {
            settings
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        let one = |key: &str| -> &str {
            match get(key).as_slice() {
                [v] => v,
                other => panic!("{name}: {key} set {} times", other.len()),
            }
        };
        assert_eq!(one("ExecStart"), format!("/usr/bin/{name} $ARGS"), "{name}");
        assert_eq!(
            one("EnvironmentFile"),
            format!("-/etc/default/{name}"),
            "{name}"
        );
        assert_eq!(one("Restart"), "on-failure", "{name}");
        assert_eq!(one("NoNewPrivileges"), "true", "{name}");
        assert_eq!(one("ProtectSystem"), "strict", "{name}");
        assert_eq!(one("PrivateTmp"), "true", "{name}");
        assert_eq!(one("CapabilityBoundingSet"), "", "{name}: no capabilities");
        assert!(
            ["true", "read-only"].contains(&one("ProtectHome")),
            "{name}"
        );
        assert!(!one("User").is_empty() && one("User") != "root", "{name}");
        assert!(!one("StateDirectory").is_empty(), "{name}");
    }
    // The agent's timex collector needs adjtimex(2) (read-only without CAP_SYS_TIME).
    let agent = service_settings(&read(&repo().join("systemd/nodewarden-agent.service")));
    let filters: Vec<&str> = agent
        .iter()
        .filter(|(k, _)| k == "SystemCallFilter")
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        filters.is_empty()
            || filters
                .iter()
                .any(|f| f.split_whitespace().any(|s| s == "adjtimex")),
        "the agent's SystemCallFilter must allow adjtimex: {filters:?}"
    );
    assert!(
        !agent.contains(&("ProtectClock".into(), "true".into())),
        "ProtectClock forbids adjtimex, which the timex collector reads"
    );
    let controller = service_settings(&read(&repo().join("systemd/nodewarden-controller.service")));
    assert!(controller.contains(&("StateDirectory".into(), "nodewarden".into())));
    assert!(controller.contains(&("ReadWritePaths".into(), "/var/lib/nodewarden".into())));
}

fn systemd_analyze() -> Option<PathBuf> {
    program("systemd-analyze")
}

/// `systemd-analyze verify` on a copy of `unit` whose binary is replaced by `true` (the real one
/// is installed only by the package); its warnings count as failures.
fn verify(unit_text: &str, name: &str, dir: &Path) -> Output {
    let true_bin = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("true(1) exists");
    let path = dir.join(format!("{name}.service"));
    std::fs::write(
        &path,
        unit_text.replace(&format!("/usr/bin/{name}"), true_bin),
    )
    .unwrap();
    run(Command::new(systemd_analyze().unwrap())
        .arg("verify")
        .arg(&path))
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if systemd_analyze().is_none() {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (package systemd); unit verification not run"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in UNITS {
        let text = read(&repo().join(format!("systemd/{name}.service")));
        let out = verify(&text, name, dir.path());
        let report = describe(&format!("systemd-analyze verify {name}.service"), &out);
        assert!(out.status.success() && out.stderr.is_empty(), "{report}");

        let out = run(Command::new(systemd_analyze().unwrap())
            .args(["security", "--offline=true", "--no-pager"])
            .arg(dir.path().join(format!("{name}.service"))));
        let report = describe(&format!("systemd-analyze security {name}.service"), &out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let exposure: f64 = stdout
            .split("Overall exposure level for")
            .nth(1)
            .and_then(|rest| rest.split(':').nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level: {report}"));
        assert!(
            exposure <= 3.0,
            "{name} exposure {exposure} (systemd rates <= 3 OK): {report}"
        );
    }
    // The check can fail: a misspelt setting is reported.
    let broken = read(&repo().join("systemd/nodewarden-agent.service")).replace(
        "ProtectSystem=strict",
        "ProtectSystem=strict\nProtectSytem=strict",
    );
    let out = verify(&broken, "nodewarden-agent", dir.path());
    assert!(
        !out.stderr.is_empty(),
        "systemd-analyze missed a misspelt key: {}",
        describe("systemd-analyze verify", &out)
    );
}

fn program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The system calls a `SystemCallFilter=` allow-list admits, groups expanded by systemd itself.
fn allowed_syscalls(filters: &[&str]) -> BTreeSet<String> {
    let analyze = program("systemd-analyze").expect("systemd-analyze");
    let mut allowed = BTreeSet::new();
    let mut pending: Vec<String> = filters
        .iter()
        .flat_map(|f| f.split_whitespace())
        .map(str::to_string)
        .collect();
    let mut expanded = BTreeSet::new();
    while let Some(entry) = pending.pop() {
        if !entry.starts_with('@') {
            allowed.insert(entry);
            continue;
        }
        if !expanded.insert(entry.clone()) {
            continue;
        }
        let out = run(Command::new(&analyze).args(["syscall-filter", &entry]));
        assert!(
            out.status.success(),
            "{}",
            describe("systemd-analyze syscall-filter", &out)
        );
        // "@group" on its first line, then its members indented; comments start with '#'.
        for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
            let member = line.trim();
            if !member.is_empty() && !member.starts_with('#') {
                pending.push(member.to_string());
            }
        }
    }
    assert!(
        allowed.contains("read"),
        "expansion of {filters:?} failed: {allowed:?}"
    );
    allowed
}

/// Kills a process by pid when dropped (the agent under strace: killing strace would only
/// detach it).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a pid this test started; no memory is involved.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// The agent, traced while it starts and serves scrapes, makes only the system calls and opens
/// only the socket families its unit's seccomp and address-family filters allow; otherwise a
/// collector would fail with EPERM under systemd (this machine's tests run it without systemd).
#[test]
fn agent_stays_within_its_unit_sandbox() {
    let (Some(strace), Some(_)) = (program("strace"), program("systemd-analyze")) else {
        eprintln!(
            "SKIPPED: strace or systemd-analyze is not installed; the agent's syscalls were not checked against its unit"
        );
        return;
    };
    let unit = service_settings(&read(&repo().join("systemd/nodewarden-agent.service")));
    let values = |key: &str| -> Vec<&str> {
        unit.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let allowed = allowed_syscalls(&values("SystemCallFilter"));
    let families: BTreeSet<&str> = values("RestrictAddressFamilies")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("agent.strace");
    let port = free_port();
    let strace_log = dir.path().join("strace.stderr");
    let mut strace_run = ChildGuard::spawn(
        Command::new(strace)
            .args(["-f", "-qq", "-o"])
            .arg(&trace)
            .arg("--")
            .arg(bin_path("nodewarden-agent"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&strace_log).unwrap()),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let body = wait_for(
        "the traced agent to serve /metrics",
        std::time::Duration::from_secs(30),
        || {
            // strace refused (ptrace not permitted here) or the agent died: say so at once.
            if let Ok(Some(status)) = strace_run.0.try_wait() {
                panic!(
                    "strace ended ({status}) before the agent served: {}",
                    read(&strace_log)
                );
            }
            get_text(&url)
        },
    );
    assert!(body.contains("node_load1"), "scrape: {body}");
    get_text(&url).expect("a second scrape");
    // The first line of the trace is the agent's execve, prefixed with its pid.
    let agent_pid: i32 = read(&trace)
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .expect("the trace starts with the agent's pid");
    drop(KillOnDrop(agent_pid));
    strace_run.0.wait().expect("strace ends with the agent");

    let mut denied = BTreeSet::new();
    let mut bad_families = BTreeSet::new();
    for line in read(&trace).lines() {
        let Some((_, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        if call.starts_with("<...") || call.starts_with("+++") || call.starts_with("---") {
            continue;
        }
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        // strace names a call `???` when it could not read which one it was (the agent killed
        // at the end while a thread entered a call); there is nothing to check in it.
        if name == "???" {
            continue;
        }
        if !allowed.contains(name) {
            denied.insert(name.to_string());
        }
        if name == "socket" || name == "socketpair" {
            let family = args.split([',', ')']).next().unwrap_or("").trim();
            if !families.contains(family) {
                bad_families.insert(family.to_string());
            }
        }
    }
    assert!(
        denied.is_empty(),
        "the unit's SystemCallFilter denies {denied:?}"
    );
    assert!(
        bad_families.is_empty(),
        "RestrictAddressFamilies denies {bad_families:?}"
    );
}

/// The shipped polkit rule, run in node with polkit's rule API: the agent's user may start,
/// stop and restart the listed units and nothing else; other users and actions are not its
/// business. (polkitd itself needs a system bus this test does not have.)
#[test]
fn polkit_example_allows_only_declared_units_for_the_agent() {
    let Some(node) = program("node").or_else(|| program("nodejs")) else {
        eprintln!(
            "SKIPPED: node is not installed (package nodejs); the polkit rule's logic was not run"
        );
        return;
    };
    let rule = repo().join("systemd/examples/50-nodewarden-agent.rules");
    let harness = format!(
        r#"
const rules = [];
const polkit = {{ Result: {{ YES: "yes", NO: "no", NOT_HANDLED: null }}, addRule: f => rules.push(f) }};
eval(require("fs").readFileSync({path}, "utf8"));
const decide = (id, user, unit, verb) => {{
  const action = {{ id, lookup: key => ({{ unit, verb }})[key] }};
  for (const rule of rules) {{ const r = rule(action, {{ user }}); if (r !== null && r !== undefined) return r; }}
  return "not handled";
}};
const manage = "org.freedesktop.systemd1.manage-units";
console.log(JSON.stringify([
  decide(manage, "nodewarden-agent", "dfs-storage-client.service", "start"),
  decide(manage, "nodewarden-agent", "ray-worker.service", "stop"),
  decide(manage, "nodewarden-agent", "ray-worker.service", "restart"),
  decide(manage, "nodewarden-agent", "ssh.service", "stop"),
  decide(manage, "nodewarden-agent", "ray-worker.service", "enable"),
  decide(manage, "someone-else", "ray-worker.service", "start"),
  decide("org.freedesktop.systemd1.manage-unit-files", "nodewarden-agent", "ray-worker.service", "start"),
]));
"#,
        path = serde_json::to_string(&rule.display().to_string()).unwrap()
    );
    let out = run(Command::new(node).arg("-e").arg(harness));
    let report = describe("node (polkit rule)", &out);
    assert!(out.status.success(), "{report}");
    let decisions: Vec<String> =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {report}"));
    assert_eq!(
        decisions,
        [
            "yes",
            "yes",
            "yes",
            "not handled",
            "not handled",
            "not handled",
            "not handled"
        ],
        "{report}"
    );
}

// ---------------------------------------------------------------- Debian packaging

#[test]
fn maintainer_scripts_parse() {
    let deb = repo().join("packaging/deb");
    let mut checked = 0;
    for package in UNITS {
        for script in ["postinst", "prerm", "postrm"] {
            let path = deb.join(package).join(script);
            let text = read(&path);
            assert!(
                text.starts_with("#!/bin/sh\n"),
                "{}: #!/bin/sh",
                path.display()
            );
            assert!(text.contains("\nset -e\n"), "{}: set -e", path.display());
            // Debian runs them with /bin/sh (dash); bash -n as well for what dash allows.
            for shell in ["sh", "bash"] {
                let out = run(Command::new(shell).arg("-n").arg(&path));
                assert!(
                    out.status.success(),
                    "{}",
                    describe(&format!("{shell} -n {}", path.display()), &out)
                );
            }
            checked += 1;
        }
        assert!(
            deb.join(package).join("default").is_file(),
            "{package}: /etc/default file"
        );
    }
    let out = run(Command::new("bash").arg("-n").arg(deb.join("build.sh")));
    assert!(
        out.status.success(),
        "{}",
        describe("bash -n build.sh", &out)
    );
    assert_eq!(checked, 6);

    // The check can fail: a script with a syntax error is refused.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("postinst");
    std::fs::write(&broken, "#!/bin/sh\nset -e\nif true; then\n  echo\n").unwrap();
    assert!(
        !run(Command::new("sh").arg("-n").arg(&broken))
            .status
            .success()
    );
}

/// The controller package's settings: the real loader accepts them as shipped, they point at
/// the paths the package creates, the default file starts the controller on them, and the
/// controller serves with them (state and ports moved to a temporary directory and free
/// loopback ports, the CA made as the postinst makes it).
#[test]
fn shipped_controller_settings_load_and_serve() {
    use nodewarden_controller::config::ControllerConfig;
    let deb = repo().join("packaging/deb/nodewarden-controller");
    let shipped = deb.join("controller.toml");
    let config = ControllerConfig::load(&shipped).unwrap();
    assert_eq!(config.listen, "[::]:9443".parse().unwrap());
    assert_eq!(config.ca_dir, Path::new("/var/lib/nodewarden/ca"));
    assert_eq!(config.data_dir, Path::new("/var/lib/nodewarden"));
    assert_eq!(config.http_listen, Some("127.0.0.1:9180".parse().unwrap()));
    assert_eq!(
        config.sd_token_file,
        Path::new("/etc/nodewarden/prometheus-sd.token")
    );
    assert!(
        read(&deb.join("default"))
            .contains("\nARGS=\"serve --config /etc/nodewarden/controller.toml\"\n"),
        "the default file runs the controller on the shipped settings"
    );
    assert!(
        read(&repo().join("packaging/deb/build.sh"))
            .contains("\"$controller/etc/nodewarden/controller.toml\""),
        "build.sh installs the settings where the default file says"
    );
    assert!(read(&deb.join("postinst")).contains("ca init"));

    let dir = tempfile::tempdir().unwrap();
    let (state, etc) = (dir.path().join("state"), dir.path().join("etc"));
    std::fs::create_dir_all(&etc).unwrap();
    let ca_init = run(Command::new(bin_path("nodewarden-controller"))
        .args(["ca", "init", "--dir"])
        .arg(state.join("ca"))
        .args(["--san", "localhost"]));
    assert!(
        ca_init.status.success(),
        "{}",
        describe("ca init", &ca_init)
    );
    std::fs::write(
        etc.join("prometheus-sd.token"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let (link, http) = (free_port(), free_port());
    let moved = read(&shipped)
        .replace("/var/lib/nodewarden", &state.display().to_string())
        .replace("/etc/nodewarden", &etc.display().to_string())
        .replace("[::]:9443", &format!("127.0.0.1:{link}"))
        .replace("127.0.0.1:9180", &format!("127.0.0.1:{http}"))
        .replace("url = \"http://127.0.0.1:9091\"", "url = \"\"");
    let moved_file = etc.join("controller.toml");
    std::fs::write(&moved_file, moved).unwrap();
    let _controller = ChildGuard::spawn(
        Command::new(bin_path("nodewarden-controller"))
            .args(["serve", "--config"])
            .arg(&moved_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let metrics = wait_for(
        "the controller on the shipped settings",
        std::time::Duration::from_secs(30),
        || get_text(&format!("http://127.0.0.1:{http}/metrics")),
    );
    assert!(metrics.contains("nodewarden_controller_"), "{metrics}");
    // The embedded store and the generated API token landed in data_dir.
    assert!(state.join("api.token").is_file());
}

// ---------------------------------------------------------------- the .deb packages

/// Under CI (a throwaway machine) or when asked with `NW_TEST_INSTALL_DEBS=1`, as root: the
/// packages are installed on this machine and purged again.
fn may_install_packages() -> bool {
    let asked = std::env::var("CI").as_deref() == Ok("true")
        || std::env::var("NW_TEST_INSTALL_DEBS").as_deref() == Ok("1");
    // SAFETY: getuid(2) has no preconditions.
    asked && unsafe { libc::getuid() } == 0
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Purges the packages if a check fails half-way, so the machine is left as it was found.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "nodewarden-controller", "nodewarden-agent"])
            .output();
    }
}

const PACKAGES: [&str; 2] = ["nodewarden-agent", "nodewarden-controller"];

#[test]
fn packages_build_lint_install_verify_and_purge() {
    // Built from the suite's own binaries (debug, stripped by build.sh), gzip for speed.
    let bins = bin_path("nodewarden-agent").parent().unwrap().to_path_buf();
    let _ = bin_path("nodewarden-controller");
    let out = tempfile::tempdir().unwrap();
    let build = run(Command::new("bash")
        .arg(repo().join("packaging/deb/build.sh"))
        .arg("--bin-dir")
        .arg(&bins)
        .arg("--out")
        .arg(out.path())
        .arg("--fast"));
    assert!(build.status.success(), "{}", describe("build.sh", &build));
    let debs: Vec<PathBuf> = PACKAGES
        .iter()
        .map(|p| {
            let deb = String::from_utf8_lossy(&build.stdout)
                .lines()
                .find(|l| l.contains(&format!("/{p}_")))
                .unwrap_or_else(|| panic!("build.sh names no {p} package"))
                .to_string();
            PathBuf::from(deb)
        })
        .collect();

    // lintian: no errors (warnings are printed for the record).
    let Some(lintian) = program("lintian") else {
        // Missing: a failure under CI (service() panics there), a skip elsewhere.
        let _ = service("NW_TEST_LINTIAN");
        return;
    };
    let lint = run(Command::new(&lintian)
        .args(["--fail-on", "error"])
        .args(&debs));
    eprintln!("{}", describe("lintian", &lint));
    assert!(lint.status.success(), "{}", describe("lintian", &lint));
    assert!(
        !String::from_utf8_lossy(&lint.stdout)
            .lines()
            .any(|l| l.starts_with("E: ")),
        "{}",
        describe("lintian", &lint)
    );

    if !may_install_packages() {
        eprintln!(
            "SKIPPED: installing the packages (this machine's own dpkg) runs under CI=true as \
             root, or with NW_TEST_INSTALL_DEBS=1"
        );
        return;
    }
    for p in PACKAGES {
        assert!(
            !installed(p),
            "{p} is already installed on this machine: the test installs and purges its own"
        );
    }
    let _purge = Purge;
    let install = run(Command::new("dpkg").arg("-i").args(&debs));
    assert!(
        install.status.success(),
        "{}",
        describe("dpkg -i", &install)
    );

    // Both binaries answer, the controller made its CA, configuration and tokens.
    for p in PACKAGES {
        let v = run(Command::new(format!("/usr/bin/{p}")).arg("--version"));
        assert!(
            v.status.success() && String::from_utf8_lossy(&v.stdout).starts_with(p),
            "{}",
            describe(&format!("{p} --version"), &v)
        );
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let ca = std::fs::metadata("/var/lib/nodewarden/ca/ca.pem").expect("the controller's CA");
    let owner = |uid: u32| {
        run(Command::new("getent").args(["passwd", &uid.to_string()]))
            .stdout
            .split(|b| *b == b':')
            .next()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default()
    };
    assert_eq!(
        owner(ca.uid()),
        "nodewarden",
        "the CA belongs to the service's user"
    );
    let key = std::fs::metadata("/var/lib/nodewarden/ca/ca.key").expect("the CA key");
    assert_eq!(key.permissions().mode() & 0o077, 0, "the CA key is private");
    let config = std::fs::metadata("/etc/nodewarden/controller.toml").expect("controller.toml");
    assert_eq!(config.permissions().mode() & 0o777, 0o640);
    assert!(std::path::Path::new("/etc/nodewarden/controller-ca.pem").exists());
    for token in ["prometheus-sd.token", "alertmanager.token"] {
        let text = read(Path::new(&format!("/etc/nodewarden/{token}")));
        assert!(
            text.trim().len() == 64 && text.trim().bytes().all(|b| b.is_ascii_hexdigit()),
            "{token}: {text:?}"
        );
    }
    // The installed units, with their real binaries in place.
    if let Some(analyze) = systemd_analyze() {
        let units: Vec<String> = PACKAGES
            .iter()
            .map(|p| format!("/lib/systemd/system/{p}.service"))
            .collect();
        let verify = run(Command::new(analyze).arg("verify").args(&units));
        assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "{}",
            describe("systemd-analyze verify (installed units)", &verify)
        );
    } else {
        let _ = service("NW_TEST_SYSTEMD_ANALYZE");
    }

    // Purged: nothing of either package is left but the system users (Debian practice).
    let files: Vec<PathBuf> = PACKAGES
        .iter()
        .flat_map(|p| {
            String::from_utf8_lossy(&run(Command::new("dpkg").args(["-L", p])).stdout)
                .lines()
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        })
        .filter(|p| p.is_file())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("usr/bin/nodewarden-agent"))
    );
    let purge =
        run(Command::new("dpkg").args(["--purge", "nodewarden-controller", "nodewarden-agent"]));
    assert!(
        purge.status.success(),
        "{}",
        describe("dpkg --purge", &purge)
    );
    let left: Vec<&PathBuf> = files.iter().filter(|f| f.exists()).collect();
    assert!(left.is_empty(), "files left after purge: {left:?}");
    for dir in [
        "/etc/nodewarden",
        "/var/lib/nodewarden",
        "/var/lib/nodewarden-agent",
        "/etc/systemd/system/multi-user.target.wants/nodewarden-agent.service",
        "/etc/systemd/system/multi-user.target.wants/nodewarden-controller.service",
    ] {
        assert!(!Path::new(dir).exists(), "{dir} left after purge");
    }
    for p in PACKAGES {
        assert!(!installed(p), "{p} still installed");
    }
    for user in ["nodewarden", "nodewarden-agent"] {
        assert!(
            run(Command::new("getent").args(["passwd", user]))
                .status
                .success(),
            "the system user {user} stays after purge"
        );
    }
}
