//! Databases for the store suite: a SQLite file in a temporary directory, a fresh database on
//! the MariaDB server scripts/test.sh started, or a private MariaDB server a test may stop.

use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nodewarden_controller::store::{
    DeviceReport, NodeInfo, Operation, OperationPath, OperationResult, StoreConfig,
};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

/// The value of a service variable from scripts/services.sh. Under `NW_REQUIRE_SERVICES=1` or
/// `CI=true` a missing one fails the test; otherwise the test is skipped with a message.
/// (The same rule as `nodewarden_tests::service`.)
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let required = std::env::var("NW_REQUIRE_SERVICES").as_deref() == Ok("1")
                || std::env::var("CI").as_deref() == Ok("true");
            if required {
                panic!("{var} is not set: run the suite through scripts/test.sh");
            }
            eprintln!("SKIPPED: {var} is not set (run scripts/test.sh for the real services)");
            None
        }
    }
}

pub fn random_suffix() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

/// A database the suite runs against.
pub enum TestDb {
    Sqlite {
        dir: tempfile::TempDir,
    },
    MariaDb {
        server_url: String,
        database: String,
    },
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        TestDb::Sqlite {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A new database `nw_test_<random>` on the shared test server; `None` when skipped.
    pub async fn mariadb() -> Option<TestDb> {
        let server_url = service("NW_TEST_MYSQL_URL")?;
        let database = format!("nw_test_{}", random_suffix());
        let pool = server_pool(&server_url).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&pool)
            .await
            .expect("create test database");
        pool.close().await;
        Some(TestDb::MariaDb {
            server_url,
            database,
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        match self {
            TestDb::Sqlite { dir } => dir.path().to_path_buf(),
            // The data directory is unused with MySQL; point it somewhere that does not exist
            // so a test would notice a stray SQLite file.
            TestDb::MariaDb { .. } => PathBuf::from("/nonexistent/nodewarden-test"),
        }
    }

    pub fn url(&self) -> Option<String> {
        match self {
            TestDb::Sqlite { .. } => None,
            TestDb::MariaDb {
                server_url,
                database,
            } => Some(format!("{}/{database}", server_url.trim_end_matches('/'))),
        }
    }

    /// Explicit flushes only (a long interval), short retries.
    pub fn config(&self) -> StoreConfig {
        let mut config = StoreConfig::new(self.data_dir());
        config.url = self.url();
        config.flush_interval = Duration::from_secs(3600);
        config.retry_initial = Duration::from_millis(50);
        config.retry_max = Duration::from_millis(200);
        config
    }

    /// Applies only the first migration (the schema of the first release), as a store made by
    /// that release has it, so a test can fill it and let the current store migrate it.
    pub async fn migrate_to_first_release(&self) {
        let dialect = if self.url().is_some() {
            "mysql"
        } else {
            "sqlite"
        };
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect);
        let first = std::fs::read_dir(&source)
            .expect("migrations")
            .map(|e| e.expect("entry").path())
            .min()
            .expect("a first migration");
        let only = tempfile::tempdir().expect("tempdir");
        std::fs::copy(&first, only.path().join(first.file_name().expect("name"))).expect("copy");
        let migrator = sqlx::migrate::Migrator::new(only.path())
            .await
            .expect("first migration");
        match self {
            TestDb::Sqlite { dir } => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join("nodewarden.db"))
                    .create_if_missing(true);
                let pool = sqlx::SqlitePool::connect_with(options)
                    .await
                    .expect("open sqlite");
                migrator
                    .run(&pool)
                    .await
                    .expect("first migration on sqlite");
                pool.close().await;
            }
            TestDb::MariaDb { .. } => {
                let pool = server_pool(&self.url().unwrap_or_default()).await;
                migrator
                    .run(&pool)
                    .await
                    .expect("first migration on mariadb");
                pool.close().await;
            }
        }
    }

    /// Runs raw SQL on the test database (to set up a hostile schema).
    pub async fn execute(&self, sql: &str) {
        match self {
            TestDb::Sqlite { dir } => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join("nodewarden.db"))
                    .create_if_missing(true);
                let pool = sqlx::SqlitePool::connect_with(options)
                    .await
                    .expect("open sqlite");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&pool)
                    .await
                    .expect("execute on sqlite");
                pool.close().await;
            }
            TestDb::MariaDb { .. } => {
                let pool = server_pool(&self.url().unwrap_or_default()).await;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&pool)
                    .await
                    .expect("execute on mariadb");
                pool.close().await;
            }
        }
    }

    pub async fn cleanup(self) {
        if let TestDb::MariaDb {
            server_url,
            database,
        } = self
        {
            let pool = server_pool(&server_url).await;
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {database}")))
                .execute(&pool)
                .await;
            pool.close().await;
        }
    }
}

async fn server_pool(url: &str) -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(1)
        .connect_with(MySqlConnectOptions::from_str(url).expect("mysql url"))
        .await
        .unwrap_or_else(|e| panic!("connecting to the test MariaDB: {e}"))
}

/// A MariaDB server of the test's own (data directory, socket and port in a temporary
/// directory) that it can stop and start again.
pub struct PrivateMariaDb {
    dir: tempfile::TempDir,
    mariadbd: String,
    pub port: u16,
    child: Option<Child>,
    extra_args: Vec<String>,
}

pub const PRIVATE_USER: &str = "fleet";
pub const PRIVATE_PASSWORD: &str = "p4ss-w0rd-secret";

impl PrivateMariaDb {
    /// Installs and starts a server with a user `fleet` (password [`PRIVATE_PASSWORD`]) and a
    /// database `fleet`. `None` when the binaries are not configured (skipped).
    pub async fn start() -> Option<PrivateMariaDb> {
        PrivateMariaDb::start_with(Vec::new()).await
    }

    /// As [`start`](Self::start), with more `mariadbd` options (TLS, say).
    pub async fn start_with(extra_args: Vec<String>) -> Option<PrivateMariaDb> {
        let mariadbd = service("NW_TEST_MARIADBD")?;
        let install_db = service("NW_TEST_MARIADB_INSTALL_DB")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let user = current_user();
        let output = Command::new(&install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--user={user}"))
            .arg("--auth-root-authentication-method=normal")
            // Parallel installs must not share temporary files in /tmp.
            .arg(format!("--tmpdir={}", dir.path().display()))
            .output()
            .unwrap_or_else(|e| panic!("running {install_db}: {e}"));
        assert!(
            output.status.success(),
            "{install_db} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut server = PrivateMariaDb {
            dir,
            mariadbd,
            port,
            child: None,
            extra_args,
        };
        server.resume().await;
        let root = MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with(
                MySqlConnectOptions::new()
                    .socket(server.socket())
                    .username("root"),
            )
            .await
            .expect("root over the socket");
        for sql in [
            // mariadb-install-db creates anonymous accounts that could shadow ours.
            "DELETE FROM mysql.global_priv WHERE User = ''".to_string(),
            "FLUSH PRIVILEGES".to_string(),
            format!("CREATE USER '{PRIVATE_USER}'@'127.0.0.1' IDENTIFIED BY '{PRIVATE_PASSWORD}'"),
            format!("GRANT ALL ON *.* TO '{PRIVATE_USER}'@'127.0.0.1'"),
            "CREATE DATABASE fleet".to_string(),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&root)
                .await
                .expect("set up private server");
        }
        root.close().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!(
            "mysql://{PRIVATE_USER}:{PRIVATE_PASSWORD}@127.0.0.1:{}/fleet",
            self.port
        )
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysql.sock")
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen server must be able to die.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers, as in a
    /// network partition or a hung host.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts the server on the same data directory and port, and waits until it answers.
    pub async fn resume(&mut self) {
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
            .args(&self.extra_args)
            .stdin(Stdio::null())
            // Start-up warnings come before --log-error takes over; keep them with the log.
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).expect("stderr.log"),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.mariadbd));
        self.child = Some(child);
        // The server offers no readiness notification: poll the socket with a deadline.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answered = MySqlConnectOptions::new()
                .socket(self.socket())
                .username("root");
            if sqlx::ConnectOptions::connect(&answered).await.is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("mariadbd exited with {status}: {}", self.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not answer within 60 s: {}",
                self.error_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn error_log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "{}{}",
            read("stderr.log").unwrap_or_default(),
            read("error.log").unwrap_or_default()
        )
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

pub fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_764_000_000_000 + seconds * 1000)
}

pub fn node(id: &str) -> NodeInfo {
    NodeInfo {
        node_id: id.to_string(),
        hostname: format!("{id}.cluster.example"),
        addresses: vec!["10.1.0.7".into(), "fd00::7".into()],
        mac_addresses: vec!["52:54:00:12:34:56".into()],
        roles: vec!["storage".into(), "compute".into()],
        agent_version: "0.1.0".into(),
        cert_fingerprint: format!("sha256:{id}"),
        services: vec!["dfs-client".into()],
        interfaces: vec![],
        scrape: String::new(),
    }
}

pub fn device(device_id: i64, node_id: &str, free_bytes: u64, t: u64) -> DeviceReport {
    DeviceReport {
        device_id,
        node_id: node_id.to_string(),
        fragment_folder: format!("/srv/dfs/{device_id}"),
        total_bytes: 4_000_000_000_000,
        free_bytes,
        fragment_count: 12_345,
        reported_at: at(t),
    }
}

pub fn operation(actor: &str, action: &str, path: OperationPath, ok: bool) -> Operation {
    Operation {
        operation_id: None,
        actor: actor.to_string(),
        action: action.to_string(),
        path,
        result: if ok {
            OperationResult::Ok
        } else {
            OperationResult::Failed {
                error: "host unreachable".into(),
            }
        },
        duration: Duration::from_millis(250),
    }
}
