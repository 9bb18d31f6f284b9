//! A private MariaDB server a test owns and can kill and restart (the controller's store under
//! an outage): installed in a temporary directory from the binaries scripts/services.sh names
//! (`NW_TEST_MARIADBD`, `NW_TEST_MARIADB_INSTALL_DB`), on its own loopback port, with a user
//! `fleet` and a database `fleet`. The same idea as `controller/tests/store/support.rs`'s async
//! `PrivateMariaDb`, here without an async runtime (the `mariadb` client over the socket).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, service, wait_for};

pub const USER: &str = "fleet";
pub const PASSWORD: &str = "p4ss-w0rd-secret";

pub struct PrivateMariaDb {
    dir: tempfile::TempDir,
    mariadbd: String,
    pub port: u16,
    child: Option<Child>,
}

fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl PrivateMariaDb {
    /// Installs and starts the server; `None` when the binaries are not configured (skipped).
    pub fn start() -> Option<PrivateMariaDb> {
        let mariadbd = service("NW_TEST_MARIADBD")?;
        let install_db = service("NW_TEST_MARIADB_INSTALL_DB")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let output = Command::new(&install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--user={}", current_user()))
            .arg("--auth-root-authentication-method=socket")
            .arg(format!("--tmpdir={}", dir.path().display()))
            .output()
            .unwrap_or_else(|e| panic!("running {install_db}: {e}"));
        assert!(
            output.status.success(),
            "{install_db} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut server = PrivateMariaDb {
            dir,
            mariadbd,
            port: free_port(),
            child: None,
        };
        server.resume();
        server.sql(&format!(
            "DELETE FROM mysql.global_priv WHERE User = ''; FLUSH PRIVILEGES; \
             CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL ON *.* TO '{USER}'@'127.0.0.1'; CREATE DATABASE fleet;"
        ));
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{}/fleet", self.port)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysql.sock")
    }

    /// Runs SQL as root over the socket: its tab-separated rows without a header, `None` when
    /// the server does not answer.
    pub fn try_sql(&self, sql: &str) -> Option<String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg("-S")
            .arg(self.socket())
            .args(["-u", "root", "-N", "-B", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|| panic!("{sql}: failed; {}", self.error_log()))
    }

    /// SIGKILL: the server dies as in a crash (open transactions lost, connections reset).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server on the same data directory and port; returns once it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let dir = self.dir.path();
        let child = Command::new(&self.mariadbd)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--tmpdir={}", dir.display()))
            .arg(format!("--user={}", current_user()))
            .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.mariadbd));
        self.child = Some(child);
        // The server offers no readiness notification: ask it until it answers.
        wait_for(
            "the private MariaDB answering",
            Duration::from_secs(60),
            || {
                if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                    panic!("mariadbd exited with {status}: {}", self.error_log());
                }
                self.try_sql("SELECT 1")
            },
        );
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}
