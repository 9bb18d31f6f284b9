//! Issue 17 end to end against real MariaDB (`NW_TEST_MYSQL_URL`) holding the DFS schema and real
//! fragment files: the agent's scan and scrub (`nodewarden_agent::fragments`) make a device's
//! inventory, which travels in its wire form to the controller's reconciliation
//! (`nodewarden_controller::fragments`) reading `FRAGMENT` in batches; the orphan clean-up's dry
//! run, a row the DFS gains before the deletion, the re-check, and the deletion through the
//! agent's one operation entry point (`ops::Executor`, which the link and SSH both use). And the
//! same with real processes: an agent with `[fragments]`, its inventory over the link, the
//! controller's audit and clean-up over HTTP and the CLI.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nodewarden_agent::fragments::{DigestKind, IoBudget, scan, scrub};
use nodewarden_agent::ops::{Executor, config::OpsConfig};
use nodewarden_controller::fragments::FragmentTable;
use nodewarden_shared::fragments::DeviceInventory;
use nodewarden_shared::ops::{FragmentOutcome, Outcome};
use nodewarden_tests::dfs::{Dfs, age, enable_fragments, fragment, lab_with_dfs};
use nodewarden_tests::lab::run_ok;
use nodewarden_tests::lab::{Lab, Log};
use nodewarden_tests::{service, wait_for};
use serde_json::{Value, json};

const DEVICE: u32 = 4;

/// Scan + scrub, as the agent does, then through the wire form as the controller receives it.
fn inventory(dir: &Path, grace: Duration) -> DeviceInventory {
    let mut budget = IoBudget::new(0.0);
    let mut inv = scan(DEVICE, dir, grace, &mut budget).unwrap();
    let report = scrub(dir, &inv, DigestKind::Md5Hex, &mut budget, || false);
    inv.corrupt = report.corrupt;
    DeviceInventory::decode(&inv.encode().unwrap()).unwrap()
}

#[tokio::test]
async fn reconciliation_finds_each_state_and_clean_up_keeps_what_the_dfs_gained() {
    let Some(mysql) = service("NW_TEST_MYSQL_URL") else {
        return;
    };
    let dfs = Dfs::create(&mysql);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 100, 101: sound and in the table. 102: corrupt. 103: no digest. 200 (gone from disk):
    // missing. 300, 301: orphans (301 gains a row between the dry run and the deletion).
    // Device 5's rows must not count here.
    fragment(d, 100, b"fragment 100", Some(b"fragment 100"));
    fragment(d, 101, b"fragment 101", Some(b"fragment 101"));
    fragment(d, 102, b"rotten", Some(b"fragment 102"));
    fragment(d, 103, b"fragment 103", None);
    fragment(
        d,
        300,
        b"orphan three hundred",
        Some(b"orphan three hundred"),
    );
    fragment(d, 301, b"orphan 301", Some(b"orphan 301"));
    dfs.insert(&[
        (100, DEVICE),
        (101, DEVICE),
        (102, DEVICE),
        (103, DEVICE),
        (200, DEVICE),
        (300, 5),
        (999, 5),
    ]);
    // Batches of 2 rows: the read pages through the table.
    let table = FragmentTable::connect_lazy(&dfs.url, Duration::from_secs(10))
        .unwrap()
        .with_batch(2);

    // Young files are not orphans yet.
    let young = table
        .audit(&inventory(d, Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(young.orphaned.count, 0);

    let inv = inventory(d, Duration::ZERO);
    let audit = table.audit(&inv).await.unwrap();
    assert_eq!((audit.present.count, audit.present.bytes), (6, 72));
    assert_eq!(
        (audit.missing.count, audit.missing.sample.clone()),
        (1, vec![200])
    );
    assert_eq!(audit.orphaned.count, 2);
    assert_eq!(audit.orphaned.bytes, 30);
    assert_eq!(audit.orphaned.sample, vec![300, 301]);
    assert_eq!(
        (audit.corrupt.count, audit.corrupt.sample.clone()),
        (1, vec![102])
    );
    assert_eq!((audit.corrupt.bytes), 6);
    assert_eq!(
        (audit.no_digest.count, audit.no_digest.sample.clone()),
        (1, vec![103])
    );

    // Dry run, then the DFS gains 301, then the deletion re-checks.
    let plan = table.plan_orphans(&inv).await.unwrap();
    assert_eq!(
        (plan.count, plan.bytes, plan.sample.clone()),
        (2, 30, vec![300, 301])
    );
    dfs.insert(&[(301, DEVICE)]);
    let rechecked = table.recheck(&plan).await.unwrap();
    assert_eq!(rechecked.kept.iter().collect::<Vec<_>>(), vec![301]);
    let ops = rechecked.operations(DEVICE);
    assert_eq!(ops.len(), 1);

    let config = format!(
        "[[storage.devices]]\nid = {DEVICE}\nfragment_dir = \"{}\"\n",
        d.display()
    );
    let executor = Executor::new(&OpsConfig::parse(&config, Path::new("agent.toml")).unwrap());
    let result = executor.execute(&ops[0]).await;
    match &result.outcome {
        Outcome::Fragments { results, .. } => {
            assert_eq!(results.len(), 1);
            assert_eq!(results[0].fragment_id, 300);
            assert_eq!(results[0].outcome, FragmentOutcome::Deleted);
        }
        other => panic!("deletion: {other:?}"),
    }
    // End state on disk and in a new audit.
    assert!(!d.join("300").exists() && !d.join("300.digest").exists());
    assert!(d.join("301").exists() && d.join("301.digest").exists());
    let after = table.audit(&inventory(d, Duration::ZERO)).await.unwrap();
    assert_eq!(after.orphaned.count, 0);
    assert_eq!(after.present.count, 5);
    table.close().await;
}

#[test]
fn a_scrub_under_an_io_budget_stays_within_it() {
    let dir = tempfile::tempdir().unwrap();
    // 8 fragments of 128 KiB: 1 MiB read at 1 MB/s.
    for id in 0..8u32 {
        let content = vec![id as u8; 128 * 1024];
        fragment(dir.path(), 1000 + id, &content, Some(&content));
    }
    let mut unlimited = IoBudget::new(0.0);
    let inv = scan(DEVICE, dir.path(), Duration::ZERO, &mut unlimited).unwrap();
    let mut budget = IoBudget::new(1.0);
    let started = Instant::now();
    let report = scrub(dir.path(), &inv, DigestKind::Md5Hex, &mut budget, || false);
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(report.checked, 8);
    assert!(report.corrupt.is_empty());
    assert_eq!(report.bytes, 8 * 128 * 1024);
    let rate = report.bytes as f64 / elapsed;
    assert!(rate <= 1.0e6 * 1.01, "{rate} B/s over a 1 MB/s budget");
    // And the budget is not a pretext to crawl: within 25 % of it.
    assert!(rate >= 0.75e6, "{rate} B/s, far under a 1 MB/s budget");
}

/// POSTs JSON to the lab's API with its token: the status and the answer's JSON.
fn post(lab: &Lab, path: &str, body: &Value) -> (u16, Value) {
    let mut response = lab
        .http_agent()
        .post(format!("{}{path}", lab.api()))
        .header("Authorization", &format!("Bearer {}", lab.token()))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The whole path with real processes: an agent with `[fragments]` scans and scrubs a real
/// folder and sends its inventory over the link; the controller audits it against MariaDB and
/// answers over HTTP (and the CLI) with the right counts, and shows them on /metrics; the
/// clean-up's dry run, a row the DFS gains before the confirmation, the confirmed run that
/// keeps it and deletes the other orphan through the agent, with its audit record written
/// before the deletion; and the agent's rescan after the deletion clears the orphan.
#[test]
fn agent_inventory_through_the_controller_to_audit_and_clean_up_over_http() {
    let Some(mysql) = service("NW_TEST_MYSQL_URL") else {
        return;
    };
    const LAB_DEVICE: u32 = 7;
    // The lab's agent has no [fragments] yet: the folder is filled, then it restarts with one.
    let (dfs, mut lab) = lab_with_dfs(&mysql);
    let d = lab.path("fragments");
    // 100: sound. 101: corrupt. 102: no digest. 300: missing (a row, no file). 200, 201:
    // orphans (200 gains a row between the dry run and the confirmation). 202: an orphan too
    // young to count. 900: another device's row.
    fragment(&d, 100, b"fragment 100", Some(b"fragment 100"));
    fragment(&d, 101, b"rotten!", Some(b"fragment 101"));
    fragment(&d, 102, b"fragment 102", None);
    fragment(&d, 200, b"orphan 200", Some(b"orphan 200"));
    fragment(&d, 201, b"orphan 2001", Some(b"orphan 2001"));
    fragment(&d, 202, b"uploading", Some(b"uploading"));
    for id in [100, 101, 102, 200, 201] {
        age(&d.join(id.to_string()), Duration::from_secs(2 * 3600));
    }
    dfs.insert(&[
        (100, LAB_DEVICE),
        (101, LAB_DEVICE),
        (102, LAB_DEVICE),
        (202, LAB_DEVICE + 1),
        (300, LAB_DEVICE),
        (900, 8),
    ]);
    enable_fragments(
        &lab,
        "scan_period = \"1h\"\nscrub_period = \"1h\"\norphan_grace = \"1h\"\nio_mb_per_s = 100\n",
    );
    lab.start_agent();

    // The scan's inventory comes first, the scrub's verdict after it.
    let path = format!("/api/v1/fragments/audit?device={LAB_DEVICE}");
    let view = wait_for(
        "an audit of device 7 with the scrub's verdict",
        Duration::from_secs(30),
        || match lab.get_as(&lab.token(), &path) {
            Ok((200, v)) if v["audit"]["corrupt"]["count"] == 1 => Some(v),
            _ => None,
        },
    );
    assert_eq!(view["node"], "n1");
    // The scrub's cursor is in the configured state_dir (relative to agent.toml's folder).
    assert!(lab.path("fragment-state/device-7.cursor").is_file());
    let a = &view["audit"];
    let state = |s: &str| {
        (
            a[s]["count"].as_u64().unwrap(),
            a[s]["bytes"].as_u64().unwrap(),
            a[s]["sample"].clone(),
        )
    };
    assert_eq!(state("present").0, 6);
    assert_eq!(state("present").1, 12 + 7 + 12 + 10 + 11 + 9);
    assert_eq!(state("missing"), (1, 0, json!([300])));
    assert_eq!(state("orphaned"), (2, 21, json!([200, 201])));
    assert_eq!(state("corrupt"), (1, 7, json!([101])));
    assert_eq!(state("no_digest"), (1, 12, json!([102])));
    // Unknown parameters and devices are refused.
    assert_eq!(
        lab.get_as(&lab.token(), "/api/v1/fragments/audit?dev=7")
            .unwrap()
            .0,
        400
    );
    assert_eq!(
        lab.get_as(&lab.token(), "/api/v1/fragments/audit?device=8")
            .unwrap()
            .0,
        404
    );
    assert_eq!(lab.get_as("wrong", &path).unwrap().0, 401);

    // The CLI over the same API.
    let out = lab.cli(&["fragments", "audit", "--device", "7", "--json"], None);
    assert!(out.status.success());
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["audit"]["missing"]["sample"], json!([300]));
    let out = lab.cli(&["fragments", "audit"], None);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(table.contains("device 7 orphaned: 200 201"), "{table}");

    // /metrics: counts and bytes per device and state.
    let text = lab
        .http_agent()
        .get(format!("{}/metrics", lab.api()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let metrics = nodewarden_tests::parse_exposition(&text);
    let gauge = |family: &str, s: &str| {
        metrics
            .get(family)
            .and_then(|f| f.value(&[("id", "7"), ("state", s)]))
    };
    assert_eq!(gauge("nodewarden_fragments", "missing"), Some(1.0));
    assert_eq!(gauge("nodewarden_fragments", "corrupt"), Some(1.0));
    assert_eq!(gauge("nodewarden_fragments_bytes", "orphaned"), Some(21.0));

    // The dry run deletes nothing; the DFS gains 200; the confirmation keeps it.
    let (status, plan) = post(
        &lab,
        "/api/v1/fragments/clean-orphans",
        &json!({"device": 7, "requested_by": "test"}),
    );
    assert_eq!(status, 200, "{plan}");
    assert_eq!(
        (plan["count"].clone(), plan["bytes"].clone()),
        (json!(2), json!(21))
    );
    assert_eq!(plan["sample"], json!([200, 201]));
    assert!(d.join("200").exists() && d.join("201").exists());
    dfs.insert(&[(200, LAB_DEVICE)]);
    let confirm = json!({"device": 7, "plan_id": plan["plan_id"], "requested_by": "test"});
    let (status, done) = post(&lab, "/api/v1/fragments/clean-orphans", &confirm);
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(
        (
            done["planned"].clone(),
            done["kept"].clone(),
            done["deleted"].clone()
        ),
        (json!(2), json!(1), json!(1))
    );
    assert_eq!(done["kept_sample"], json!([200]));
    assert_eq!(done["result"]["path"], "agent");
    assert!(!d.join("201").exists() && !d.join("201.digest").exists());
    assert!(d.join("200").exists() && d.join("200.digest").exists());
    // A plan is confirmed once.
    let (status, _) = post(&lab, "/api/v1/fragments/clean-orphans", &confirm);
    assert_eq!(status, 404);

    // The audit log: the request, written before the deletion started, then its end.
    let events = wait_for(
        "the clean-up's request and end in the audit log",
        Duration::from_secs(20),
        || {
            let (_, events) = lab.get_as(&lab.token(), "/api/v1/events?node=n1").ok()?;
            let mine: Vec<Value> = events
                .as_array()?
                .iter()
                .filter(|e| {
                    e["action"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("clean-orphans device 7"))
                })
                .cloned()
                .collect();
            (mine.len() == 2).then_some(mine)
        },
    );
    // Newest first.
    let (end, request) = (&events[0], &events[1]);
    assert_eq!(request["kind"], "requested");
    assert_eq!(end["kind"], "operation");
    assert_eq!(end["result"], "ok");
    assert_eq!(request["operation_id"], end["operation_id"]);
    assert!(request["id"].as_i64() < end["id"].as_i64());
    let started = end["at_ms"].as_u64().unwrap() - end["duration_ms"].as_u64().unwrap();
    assert!(
        request["at_ms"].as_u64().unwrap() <= started,
        "{request} / {end}"
    );

    // The deletion made the agent scan again: the orphan is gone from a fresh audit.
    wait_for(
        "an audit after the clean-up without orphans",
        Duration::from_secs(30),
        || match lab.get_as(&lab.token(), &path) {
            Ok((200, v)) if v["audit"]["orphaned"]["count"] == 0 => {
                assert_eq!(v["audit"]["present"]["count"], 5);
                Some(())
            }
            _ => None,
        },
    );
    // The CLI's dry run now finds nothing to delete, and deletes nothing.
    let out = lab.cli(
        &["fragments", "clean-orphans", "--device", "7", "--yes"],
        None,
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dry run: device 7 on n1: 0 orphaned fragment(s), 0 bytes"),
        "{text}"
    );
    assert!(d.join("200").exists());
}

/// The agent binary on `config`, its metrics on `port`, its log collected.
fn spawn_agent(config: &Path, port: u16) -> (nodewarden_tests::ChildGuard, Log) {
    let mut child = nodewarden_tests::ChildGuard::spawn(
        Command::new(nodewarden_tests::bin_path("nodewarden-agent"))
            .arg("--config")
            .arg(config)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .env("NODEWARDEN_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    let log = Log::attach(&mut child, "agent");
    (child, log)
}

/// The cursor file's JSON, once it parses.
fn read_cursor(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// A scrub interrupted by a crash (SIGKILL mid-pass) resumes after its cursor when the agent
/// starts again: a fragment rotted behind the cursor while the agent was down is not read again
/// (the pass does not start over), one rotted ahead of it is found, the corrupt fragment found
/// before the crash stays in the verdict, and the pass counts every fragment exactly once. End
/// state: the cursor file and the agent's /metrics.
#[test]
fn a_scrub_killed_mid_pass_resumes_after_its_cursor() {
    const N: u32 = 2000;
    const FIRST: u32 = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("fragments");
    std::fs::create_dir(&d).unwrap();
    // 2000 fragments of 8 KiB: 8 MB to stat (4 KiB a stat) and 16 MB to read at 4 MB/s, so
    // the pass lasts ~4 s and writes its cursor every second.
    let content = |id: u32| {
        let mut c = id.to_le_bytes().repeat(2048);
        c[0] ^= 1;
        c
    };
    for id in FIRST..FIRST + N {
        std::fs::write(d.join(id.to_string()), content(id)).unwrap();
    }
    let names: Vec<String> = (FIRST..FIRST + N).map(|id| id.to_string()).collect();
    let sums = run_ok(Command::new("md5sum").current_dir(&d).args(&names));
    for line in sums.lines() {
        let (hex, name) = line.split_once("  ").unwrap();
        std::fs::write(d.join(format!("{name}.digest")), format!("{hex}\n")).unwrap();
    }
    // Rotten from the start, early in the pass: found before the crash.
    std::fs::write(d.join((FIRST + 1).to_string()), b"rotten").unwrap();
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[storage.devices]]\nid = 7\nfragment_dir = \"{}\"\n\n\
             [fragments]\nscan_period = \"1h\"\nscrub_period = \"1h\"\nio_mb_per_s = 4\n\
             busy_load_per_core = 1000\nbusy_disk_util = 1.0\nstate_dir = \"state\"\n",
            d.display()
        ),
    )
    .unwrap();
    let cursor_file = tmp.path().join("state/device-7.cursor");
    let (mut agent, _log) = spawn_agent(&config, nodewarden_tests::free_port());
    // Mid-pass: a cursor past the rotten fragment, the pass not finished.
    wait_for(
        "a scrub cursor past fragment 1010",
        Duration::from_secs(60),
        || {
            let c = read_cursor(&cursor_file)?;
            (c["pass"]["position"].as_u64()? > u64::from(FIRST + 10)).then_some(())
        },
    );
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) };
    let _ = agent.0.wait();
    let before = read_cursor(&cursor_file).expect("the cursor survives the crash");
    assert!(
        before["last_complete"].is_null(),
        "killed mid-pass: {before}"
    );
    let position = before["pass"]["position"].as_u64().unwrap() as u32;
    let checked_before = before["pass"]["checked"].as_u64().unwrap();
    assert!(
        position > FIRST + 10 && position < FIRST + N - 1,
        "{before}"
    );
    // Every fragment up to the cursor was checked once, none unreadable.
    assert_eq!(checked_before, u64::from(position - FIRST + 1), "{before}");
    // While the agent is down: one fragment rots behind the cursor, one ahead of it.
    let behind = FIRST + 5;
    let ahead = FIRST + N - 1;
    std::fs::write(d.join(behind.to_string()), b"rotted behind the cursor").unwrap();
    std::fs::write(d.join(ahead.to_string()), b"rotted ahead of the cursor").unwrap();

    let port = nodewarden_tests::free_port();
    let (_agent, log) = spawn_agent(&config, port);
    let metrics = wait_for(
        "a complete scrub pass on the restarted agent's /metrics",
        Duration::from_secs(60),
        || {
            let text = nodewarden_tests::get_text(&format!("http://127.0.0.1:{port}/metrics"))?;
            let families = nodewarden_tests::parse_exposition(&text);
            families
                .get("nodewarden_fragments_scrub_last_complete_timestamp_seconds")?
                .value(&[("id", "7")])?;
            Some(families)
        },
    );
    assert_eq!(log.count("fragment scrub resumed after its cursor"), 1);
    let after = read_cursor(&cursor_file).unwrap();
    assert!(after["pass"].is_null(), "{after}");
    let last = &after["last_complete"];
    // Each fragment counted once over the two runs.
    assert_eq!(last["checked"], u64::from(N), "{after}");
    let value = |name: &str| {
        metrics
            .get(name)
            .and_then(|f| f.value(&[("id", "7")]))
            .unwrap_or_else(|| panic!("{name}{{id=\"7\"}} on /metrics"))
    };
    // This run read only what lay after the cursor.
    assert_eq!(
        value("nodewarden_fragments_scrub_checked_total"),
        (u64::from(N) - checked_before) as f64
    );
    assert_eq!(value("nodewarden_fragments_scrub_position_ratio"), 1.0);
    // The verdict: the fragment rotten from the start (found before the crash) and the one
    // rotted ahead of the cursor; not the one behind it, which this pass had already read.
    assert_eq!(value("nodewarden_fragments_scrub_corrupt"), 2.0);
    let finished = value("nodewarden_fragments_scrub_last_complete_timestamp_seconds");
    assert_eq!(finished, last["finished"].as_u64().unwrap() as f64);
    let corrupt = base64_set(last["corrupt"].as_str().unwrap());
    assert_eq!(corrupt, vec![FIRST + 1, ahead]);
    // The scan before the scrub succeeded, and says so.
    assert_eq!(value("nodewarden_fragments_scan_failing"), 0.0);
    assert_eq!(value("nodewarden_fragments_scan_failures_total"), 0.0);
    let scanned = value("nodewarden_fragments_scan_last_success_timestamp_seconds");
    assert!(
        scanned > 0.0 && scanned <= finished,
        "{scanned} then {finished}"
    );
    assert!(value("nodewarden_fragments_scan_period_seconds") > 0.0);
}

/// A roaring bitmap's ids from the cursor file's base64 of its portable serialization.
fn base64_set(text: &str) -> Vec<u32> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    roaring::RoaringBitmap::deserialize_from(&bytes[..])
        .unwrap()
        .iter()
        .collect()
}

/// Changes between scans (inotify) with real processes: the agent binary on a real folder with
/// a scan period of an hour; once its first inventories reached the controller, a fragment is
/// created (with its digest), one deleted, one created without a digest and its digest added
/// after: the controller's audit shows each within seconds, carried as deltas (the agent's
/// link says so, and sends no whole inventory meanwhile; the controller applied every one).
#[test]
fn changes_between_scans_reach_the_controller_as_deltas() {
    let Some(mysql) = service("NW_TEST_MYSQL_URL") else {
        return;
    };
    let (dfs, mut lab) = lab_with_dfs(&mysql);
    let d = lab.path("fragments");
    fragment(&d, 100, b"fragment 100", Some(b"fragment 100"));
    fragment(&d, 101, b"fragment 101", Some(b"fragment 101"));
    dfs.insert(&[(100, 7), (101, 7), (150, 7)]);
    enable_fragments(
        &lab,
        "scan_period = \"1h\"\nscrub_period = \"1h\"\norphan_grace = \"1h\"\nio_mb_per_s = 100\n",
    );
    // The link's sends are logged at debug.
    lab.start_agent_via(
        &[
            "env".into(),
            "NODEWARDEN_LOG=info,nodewarden_agent::link=debug".into(),
        ],
        &[],
    );
    let path = "/api/v1/fragments/audit?device=7";
    let audit = |check: &dyn Fn(&Value) -> bool| {
        wait_for("the audit", Duration::from_secs(20), || {
            match lab.get_as(&lab.token(), path) {
                Ok((200, v)) if check(&v["audit"]) => Some(v["audit"].clone()),
                _ => None,
            }
        })
    };
    lab.agent_log().wait("fragment scrub done");
    let first = audit(&|a| a["present"]["count"] == 2 && a["missing"]["sample"] == json!([150]));
    assert_eq!(first["present"]["bytes"], 24);
    // The scan's and the scrub's inventories went whole.
    lab.agent_log().wait("fragment inventory sent");
    let whole = lab.agent_log().count("fragment inventory sent");

    // 150 arrives (with its digest), 101 goes, 160 arrives without a digest.
    fragment(&d, 150, b"fragment 150!", Some(b"fragment 150!"));
    std::fs::remove_file(d.join("101")).unwrap();
    std::fs::remove_file(d.join("101.digest")).unwrap();
    fragment(&d, 160, b"uploading", None);
    let changed = audit(&|a| {
        a["present"]["count"] == 3
            && a["missing"]["sample"] == json!([101])
            && a["no_digest"]["sample"] == json!([160])
    });
    assert_eq!(changed["present"]["bytes"], 12 + 13 + 9);
    assert_eq!(
        changed["orphaned"]["count"], 0,
        "160 is younger than the grace"
    );
    // Its digest arrives.
    fragment(&d, 160, b"uploading", Some(b"uploading"));
    audit(&|a| a["no_digest"]["count"] == 0 && a["present"]["count"] == 3);

    assert!(lab.agent_log().count("fragment deltas sent") >= 1);
    assert_eq!(
        lab.agent_log().count("fragment inventory sent"),
        whole,
        "no whole inventory for changes between scans"
    );
    assert_eq!(lab.controller_log().count("fragment delta not applied"), 0);
    assert_eq!(lab.agent_log().count("fragment folder not watched"), 0);
}

/// The position of the last whole segment of a scan checkpoint (`agent/src/scan_checkpoint.rs`:
/// a JSON header line, then segments of `u32` LE length, MD5, body starting with the `u32` LE
/// position), if it has one.
fn checkpoint_position(path: &Path) -> Option<u32> {
    let bytes = std::fs::read(path).ok()?;
    let mut at = bytes.iter().position(|&b| b == b'\n')? + 1;
    let mut position = None;
    while let Some(head) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(head.try_into().ok()?) as usize;
        let Some(body) = bytes.get(at + 20..at + 20 + len) else {
            break;
        };
        position = Some(u32::from_le_bytes(body.get(..4)?.try_into().ok()?));
        at += 20 + len;
    }
    position
}

/// A field `name=value` of the one log line holding `message`.
fn log_field(log: &Log, message: &str, name: &str) -> u64 {
    let lines = log.0.lock().unwrap();
    let line = lines
        .iter()
        .find(|l| l.contains(message))
        .unwrap_or_else(|| panic!("a log line with {message:?}"));
    let start = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + name.len()
        + 2;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{name} in {line}"))
}

/// A scan interrupted by a crash (SIGKILL mid-scan) continues after its checkpoint when the
/// agent starts again: the restarted agent stats only the fragments after the checkpoint's
/// position (plus one that appeared behind it while the agent was down), drops one deleted
/// behind it meanwhile, and the inventory the controller audits against MariaDB is complete
/// and correct; the checkpoint is gone once the scan completed. End state: the agent's log of
/// its stats, the checkpoint file, the controller's audit.
#[test]
fn a_scan_killed_mid_way_resumes_after_its_checkpoint() {
    const N: u32 = 3000;
    const FIRST: u32 = 10_000;
    let Some(mysql) = service("NW_TEST_MYSQL_URL") else {
        return;
    };
    let (dfs, mut lab) = lab_with_dfs(&mysql);
    let d = lab.path("fragments");
    // Even ids, so one can appear between two of them; one without a digest.
    let ids: Vec<u32> = (0..N).map(|i| FIRST + 2 * i).collect();
    let size = |id: u32| (1 + id % 50) as usize;
    let digestless = FIRST + 2 * (N - 10);
    for &id in &ids {
        std::fs::write(d.join(id.to_string()), vec![b'f'; size(id)]).unwrap();
        if id != digestless {
            std::fs::write(d.join(format!("{id}.digest")), "0\n").unwrap();
        }
    }
    let rows: Vec<(u32, u32)> = ids.iter().map(|&id| (id, 7)).collect();
    dfs.insert(&rows);
    // 3000 stats of 4 KiB at 1 MB/s: ~12 s, a checkpoint every 2 s. No scrub reads.
    enable_fragments(
        &lab,
        "scan_period = \"1h\"\nscrub_period = \"1h\"\norphan_grace = \"1h\"\nio_mb_per_s = 1\ndigest = \"none\"\n",
    );
    let checkpoint = lab.path("fragment-state/device-7.scan");
    let pid_file = lab.path("scanning-agent.pid");
    // Through a shell that writes its pid and execs the agent: that pid is the agent's.
    lab.start_agent_via(
        &[
            "sh".into(),
            "-c".into(),
            format!("echo $$ > '{}' && exec \"$@\"", pid_file.display()).into(),
            "sh".into(),
        ],
        &[],
    );
    wait_for(
        "a scan checkpoint with a segment",
        Duration::from_secs(30),
        || checkpoint_position(&checkpoint),
    );
    let pid = nodewarden_tests::read_pid(&pid_file).expect("the agent's pid");
    // SAFETY: plain kill(2) of our own child (the shell exec'ed the agent).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    lab.stop_agent();
    let position = checkpoint_position(&checkpoint).expect("the checkpoint survives the crash");
    assert!(
        position > FIRST && position < FIRST + 2 * (N - 100),
        "killed mid-scan at {position}"
    );
    let held = ids.iter().filter(|&&id| id <= position).count() as u64;
    let ahead = u64::from(N) - held;
    // While the agent is down: one fragment behind the position goes, one appears there.
    std::fs::remove_file(d.join(FIRST.to_string())).unwrap();
    std::fs::remove_file(d.join(format!("{FIRST}.digest"))).unwrap();
    let appeared = FIRST + 1;
    std::fs::write(d.join(appeared.to_string()), b"appeared").unwrap();
    std::fs::write(d.join(format!("{appeared}.digest")), "0\n").unwrap();

    lab.start_agent();
    wait_for("the resumed scan's end", Duration::from_secs(90), || {
        (lab.agent_log().count("fragment scan done") > 0).then_some(())
    });
    let log = lab.agent_log();
    assert_eq!(log.count("fragment scan resumed after its checkpoint"), 1);
    assert_eq!(
        log_field(
            log,
            "fragment scan resumed after its checkpoint",
            "position"
        ),
        u64::from(position)
    );
    assert_eq!(
        log_field(log, "fragment scan resumed after its checkpoint", "held"),
        held
    );
    // Only what lay after the position, plus the one that appeared behind it.
    assert_eq!(log_field(log, "fragment scan done", "stats"), ahead + 1);
    assert_eq!(
        log_field(log, "fragment scan done", "present"),
        u64::from(N)
    );
    wait_for(
        "the complete scan's checkpoint removed",
        Duration::from_secs(10),
        || (!checkpoint.exists()).then_some(()),
    );
    // The controller's audit of the whole inventory.
    let audit = wait_for("the audit", Duration::from_secs(30), || {
        match lab.get_as(&lab.token(), "/api/v1/fragments/audit?device=7") {
            Ok((200, v)) if v["audit"]["present"]["count"] == N => Some(v["audit"].clone()),
            _ => None,
        }
    });
    let bytes: usize = ids[1..].iter().map(|&id| size(id)).sum::<usize>() + b"appeared".len();
    assert_eq!(audit["present"]["bytes"], bytes as u64, "{audit}");
    assert_eq!(audit["missing"]["count"], 1, "{audit}");
    assert_eq!(audit["missing"]["sample"], json!([FIRST]), "{audit}");
    assert_eq!(audit["no_digest"]["count"], 1, "{audit}");
    assert_eq!(audit["no_digest"]["sample"], json!([digestless]), "{audit}");
    assert_eq!(audit["corrupt"]["count"], 0, "{audit}");
    assert_eq!(
        audit["orphaned"]["count"], 0,
        "the one that appeared is young"
    );
    assert_eq!(log.count("scan checkpoint ignored"), 0);
    assert_eq!(log.count("scan checkpoint not written"), 0);
}
