//! The DFS's side of issue 17's tests: a database of the test's own on the suite's MariaDB
//! (`NW_TEST_MYSQL_URL`) holding the original `FRAGMENT(ID, PATH)` table, dropped at the end,
//! and real fragment files (`<id>` plus `<id>.digest` holding the `md5sum` the DFS writes).
//! Shared by `tests/fragments.rs` and the console's fragments view test.

use crate::lab::run_ok;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

/// A DFS database of the test's own, with the original `FRAGMENT` table; dropped at the end.
pub struct Dfs {
    client: Vec<String>,
    pub name: String,
    /// The database's URL, for `[dfs] url`.
    pub url: String,
}

impl Dfs {
    /// `server_url` is `mysql://user:password@host:port`.
    pub fn create(server_url: &str) -> Dfs {
        let rest = server_url.strip_prefix("mysql://").expect("mysql:// URL");
        let (userinfo, hostport) = rest.rsplit_once('@').expect("user@host");
        let hostport = hostport.trim_end_matches('/');
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
        let name = format!(
            "DFS_frag_{}_{}",
            std::process::id(),
            SystemTime::now()
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

    /// The `DEVICE` table the controller's `[dfs]` reader also reads (empty).
    pub fn with_device_table(self) -> Dfs {
        self.sql(&format!(
            "USE `{}`; CREATE TABLE DEVICE(ID int auto_increment primary key, IP char(20), \
             PORT int, ISONLINE boolean not null, RS int default 0, TIME int default 0, \
             LEFTRS int default 0);",
            self.name
        ));
        self
    }

    pub fn sql(&self, statements: &str) {
        run_ok(
            Command::new("mariadb")
                .args(&self.client)
                .arg("-e")
                .arg(statements),
        );
    }

    /// Rows `(fragment id, device id)` into `FRAGMENT`.
    pub fn insert(&self, rows: &[(u32, u32)]) {
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

/// A fragment and, unless `digest_of` is `None`, its `.digest` holding the real `md5sum` of
/// `digest_of` (the content itself for a sound fragment).
pub fn fragment(dir: &Path, id: u32, content: &[u8], digest_of: Option<&[u8]>) {
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

/// Sets `path`'s modification time `age` in the past (an orphan older than the grace period).
pub fn age(path: &Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

/// The lab with `[dfs]` on a fresh DFS database (`DEVICE` and `FRAGMENT`), its agent stopped so
/// that its fragment folder can be filled before the agent runs with `[fragments]`.
pub fn lab_with_dfs(mysql: &str) -> (Dfs, crate::lab::Lab) {
    let dfs = Dfs::create(mysql).with_device_table();
    let mut lab = crate::lab::Lab::new(&format!("[dfs]\nurl = \"{}\"\n", dfs.url));
    lab.stop_agent();
    (dfs, lab)
}

/// Gives the lab's agent a `[fragments]` section: `settings` (TOML lines), never paused for a
/// busy machine, its state in `fragment-state`.
pub fn enable_fragments(lab: &crate::lab::Lab, settings: &str) {
    let path = lab.path("agent.toml");
    let mut toml = std::fs::read_to_string(&path).unwrap();
    toml.push_str(&format!(
        "\n[fragments]\n{settings}busy_load_per_core = 1000\nbusy_disk_util = 1.0\n\
         state_dir = \"fragment-state\"\n"
    ));
    std::fs::write(&path, toml).unwrap();
}
