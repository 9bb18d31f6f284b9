//! Issue 17 end to end against real MariaDB (`NW_TEST_MYSQL_URL`) holding the DFS schema and real
//! fragment files: the agent's scan and scrub (`nodewarden_agent::fragments`) make a device's
//! inventory, which travels in its wire form to the controller's reconciliation
//! (`nodewarden_controller::fragments`) reading `FRAGMENT` in batches; the orphan clean-up's dry
//! run, a row the DFS gains before the deletion, the re-check, and the deletion through the
//! agent's one operation entry point (`ops::Executor`, which the link and SSH both use).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nodewarden_agent::fragments::{DigestKind, IoBudget, scan, scrub};
use nodewarden_agent::ops::{Executor, config::OpsConfig};
use nodewarden_controller::fragments::FragmentTable;
use nodewarden_shared::fragments::DeviceInventory;
use nodewarden_shared::ops::{FragmentOutcome, Outcome};
use nodewarden_tests::service;

const DEVICE: u32 = 4;

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A DFS database of the test's own, with the original `FRAGMENT` table; dropped at the end.
struct Dfs {
    client: Vec<String>,
    name: String,
    url: String,
}

impl Dfs {
    fn create(server_url: &str) -> Dfs {
        let rest = server_url.strip_prefix("mysql://").expect("mysql:// URL");
        let (userinfo, hostport) = rest.rsplit_once('@').expect("user@host");
        let hostport = hostport.trim_end_matches('/');
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
        let name = format!(
            "DFS_frag_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
                % 1_000_000_000
        );
        let dfs = Dfs {
            client: vec![
                "--no-defaults".into(),
                format!("--host={host}"),
                format!("--port={port}"),
                format!("--user={user}"),
                format!("--password={password}"),
            ],
            url: format!("{}/{name}", server_url.trim_end_matches('/')),
            name,
        };
        dfs.sql(&format!("CREATE DATABASE `{}`", dfs.name));
        dfs.sql(&format!(
            "USE `{}`; CREATE TABLE FRAGMENT(ID int primary key, PATH char(20));",
            dfs.name
        ));
        dfs
    }

    fn sql(&self, statements: &str) {
        run_ok(
            Command::new("mariadb")
                .args(&self.client)
                .arg("-e")
                .arg(statements),
        );
    }

    fn insert(&self, rows: &[(u32, u32)]) {
        let values: Vec<String> = rows
            .iter()
            .map(|(id, dev)| format!("({id}, '{dev}')"))
            .collect();
        self.sql(&format!(
            "USE `{}`; INSERT INTO FRAGMENT VALUES {};",
            self.name,
            values.join(",")
        ));
    }
}

impl Drop for Dfs {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(&self.client)
            .arg("-e")
            .arg(format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .output();
    }
}

/// A fragment and, unless `digest` is `None`, its `.digest` holding the real `md5sum` of
/// `digest_of` (the content itself for a sound fragment).
fn fragment(dir: &Path, id: u32, content: &[u8], digest_of: Option<&[u8]>) {
    std::fs::write(dir.join(id.to_string()), content).unwrap();
    if let Some(source) = digest_of {
        let src = dir.join(format!("{id}.digest-source"));
        std::fs::write(&src, source).unwrap();
        let sum = run_ok(Command::new("md5sum").arg(&src));
        std::fs::remove_file(&src).unwrap();
        let hex = sum.split_whitespace().next().unwrap().to_string();
        std::fs::write(dir.join(format!("{id}.digest")), hex + "\n").unwrap();
    }
}

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
