//! Throwaway PostgreSQL and VictoriaMetrics servers for the integration
//! tests, from Debian's `postgresql` and `victoria-metrics` packages, on free
//! loopback ports in temporary directories; killed when dropped.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::http::{basic_auth, get_blocking, get_tls_blocking, unverified_client};
use super::model;
use super::promql::{parse_export, sum_metric, Export};

/// An address where every connection is refused, for the tests of an
/// unreachable server: port 1, which no server of the tests takes (they
/// bind port 0, and the kernel hands out ports from its ephemeral range).
/// Not a free port: one found free now can be taken a moment later by a
/// server another test starts, which then receives this test's lines (seen
/// in CI: a daemon meant to reach nothing exported 12,504 samples).
pub const REFUSED: &str = "127.0.0.1:1";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn postgres_bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL's initdb was not found: install Debian's `postgresql` package (scripts/test installs it)")
    })
}

/// Builds a command that runs as the `postgres` user when we are root
/// (PostgreSQL refuses to run as root).
fn pg_command(bin: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// A running PostgreSQL server.
pub struct Postgres {
    child: Child,
    _dir: tempfile::TempDir,
    data: PathBuf,
    bindir: PathBuf,
    as_postgres: bool,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Postgres {
    /// initdb and start a server.
    pub fn start() -> Self {
        let mut pg = Self::init();
        pg.spawn();
        pg
    }

    /// initdb and start a server with TLS (`ssl = on`), serving certificate
    /// `cert` with key `key`; `hba`, when given, replaces pg_hba.conf (for
    /// `hostssl` lines), and `ca` becomes its `ssl_ca_file` (for client
    /// certificates).
    pub fn start_with_ssl(cert: &Path, key: &Path, ca: Option<&Path>, hba: Option<&str>) -> Self {
        let mut pg = Self::init();
        let mut conf =
            String::from("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        let mut files = vec![(cert, "server.crt"), (key, "server.key")];
        if let Some(ca) = ca {
            files.push((ca, "root.crt"));
            conf.push_str("ssl_ca_file = 'root.crt'\n");
        }
        for (from, name) in files {
            let to = pg.data.join(name);
            std::fs::copy(from, &to).expect("copy a TLS file into the data directory");
            // PostgreSQL refuses a key others may read.
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if pg.as_postgres {
                let ok = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&to)
                    .status();
                assert!(ok.map(|s| s.success()).unwrap_or(false), "chown {name}");
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(pg.data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut file, conf.as_bytes()).unwrap();
        if let Some(hba) = hba {
            std::fs::write(pg.data.join("pg_hba.conf"), hba).unwrap();
        }
        pg.spawn();
        pg
    }

    /// initdb, without starting the server.
    fn init() -> Self {
        let bindir = postgres_bindir();
        let dir = tempfile::Builder::new()
            .prefix("med-pg-")
            .tempdir()
            .expect("temp dir");
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status();
            assert!(
                ok.map(|s| s.success()).unwrap_or(false),
                "chown the PostgreSQL temp dir to postgres"
            );
        }
        let data = dir.path().join("data");
        let out = pg_command(&bindir.join("initdb"), as_postgres)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Postgres {
            child: Command::new("true").spawn().unwrap(),
            _dir: dir,
            data,
            bindir,
            as_postgres,
            port: free_port(),
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(
            self.data
                .parent()
                .unwrap()
                .join(format!("pg-{}.log", self.port)),
        )
        .unwrap();
        self.child = pg_command(&self.bindir.join("postgres"), self.as_postgres)
            .arg("-D")
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .args([
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
                "-k",
            ])
            .arg(self.data.parent().unwrap())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        // Our server's own socket file proves that the port is ours: another
        // test's server may have taken the same port in between.
        let socket = self
            .data
            .parent()
            .unwrap()
            .join(format!(".s.PGSQL.{}", self.port));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.port = free_port();
                return self.spawn();
            }
            if socket.exists() && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL of database `db`, as MyElectricalData writes it.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql+asyncpg://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The URL of database `db`, as sqlx takes it.
    pub fn sqlx_url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `db` and returns a pool on it.
    pub async fn create_db(&self, db: &str) -> PgPool {
        let admin = self.pool("postgres").await;
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        self.pool(db).await
    }

    /// A pool on database `db`.
    pub async fn pool(&self, db: &str) -> PgPool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match PgPoolOptions::new()
                .max_connections(4)
                .connect(&self.sqlx_url(db))
                .await
            {
                Ok(p) => return p,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot connect to PostgreSQL: {e}"),
            }
        }
    }

    /// The postmaster's own pid: when we are root, our child is `runuser`.
    fn postmaster_pid(&self) -> Option<String> {
        let pid = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        pid.lines().next().map(|l| l.trim().to_string())
    }

    fn signal(&mut self, sig: &str, wait_for_exit: bool) {
        if let Some(pid) = self.postmaster_pid() {
            let _ = Command::new("kill").arg(sig).arg(&pid).status();
        }
        let _ = self.child.wait();
        if !wait_for_exit {
            return;
        }
        // The postmaster removes its pid file last.
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.data.join("postmaster.pid").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&mut self) {
        self.signal("-INT", true);
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.spawn();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.signal("-QUIT", false);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running single-node VictoriaMetrics.
pub struct Victoria {
    child: Child,
    _dir: tempfile::TempDir,
    /// Its base URL.
    pub url: String,
    client: reqwest::Client,
    /// How it was started, to start it again on the same port and data.
    command: Vec<String>,
}

impl Victoria {
    /// Starts a server keeping 100 years.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server keeping 100 years, with extra flags; with `-tls`
    /// (and `-tlsCertFile=`, `-tlsKeyFile=`) its URL is https and the
    /// helpers read it without checking its certificate.
    pub fn start_with(flags: &[&str]) -> Self {
        let tls = flags.contains(&"-tls");
        let bin = which("victoria-metrics").unwrap_or_else(|| {
            panic!("victoria-metrics was not found on PATH: install Debian's `victoria-metrics` package (scripts/test installs it)")
        });
        let dir = tempfile::Builder::new()
            .prefix("med-vm-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        let flag = |name: &str| {
            flags
                .iter()
                .find_map(|f| f.strip_prefix(name))
                .unwrap_or("")
        };
        let auth = match (flag("-httpAuth.username="), flag("-httpAuth.password=")) {
            ("", _) => String::new(),
            (user, password) => basic_auth(user, password),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let (child, url, command) = 'start: loop {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join(format!("vm-{port}.log"))).unwrap();
            let mut command: Vec<String> = vec![
                bin.display().to_string(),
                format!("-storageDataPath={}", data.display()),
                format!("-httpListenAddr=127.0.0.1:{port}"),
                "-retentionPeriod=100y".into(),
                "-search.disableCache".into(),
                "-search.latencyOffset=0s".into(),
            ];
            command.extend(flags.iter().map(|f| f.to_string()));
            let mut child = Command::new(&command[0])
                .args(&command[1..])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start victoria-metrics");
            // The server on the port must be ours (another test's may have
            // taken the same port): it shows our data path in /metrics.
            let ours = format!("value=\"{}\"", data.display());
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    continue 'start;
                }
                let metrics = if tls {
                    get_tls_blocking(port, "/metrics", &auth).ok()
                } else {
                    get_blocking(port, "/metrics", &auth).ok()
                };
                if metrics.is_some_and(|m| m.contains(&ours)) {
                    let scheme = if tls { "https" } else { "http" };
                    break 'start (child, format!("{scheme}://127.0.0.1:{port}"), command);
                }
                assert!(
                    Instant::now() < deadline,
                    "VictoriaMetrics did not start (port {port})"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        Victoria {
            child,
            _dir: dir,
            url,
            client: unverified_client(),
            command,
        }
    }

    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    /// Stops the server (SIGTERM: it flushes what it holds).
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self._dir.path().join("vm-restarted.log"))
            .unwrap();
        self.child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("restart victoria-metrics");
        // Pooled connections went to the process that stopped.
        self.client = unverified_client();
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let health = || {
            if self.url.starts_with("https:") {
                get_tls_blocking(port, "/health", "").ok()
            } else {
                get_blocking(port, "/health", "").ok()
            }
        };
        while health().is_none_or(|r| !r.contains("OK")) {
            assert!(Instant::now() < deadline, "VictoriaMetrics did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Replaces the data directory with `from` (a copy, or nothing to
    /// start empty) while the server is stopped, then starts it again: a
    /// volume recreated, or restored from an old snapshot.
    pub fn replace_data(&mut self, from: Option<&Path>) {
        self.stop();
        let data = self.data_dir();
        let _ = std::fs::remove_dir_all(&data);
        if let Some(from) = from {
            copy_dir(from, &data);
        }
        self.restart();
    }

    /// Copies the data directory (the server stopped for a consistent
    /// copy, then started again) into `to`.
    pub fn copy_data(&mut self, to: &Path) {
        self.stop();
        copy_dir(&self.data_dir(), to);
        self.restart();
    }

    /// Deletes the series matching `selector`, as a person would by hand.
    pub async fn delete_series(&self, selector: &str) {
        let status = self
            .client
            .post(format!("{}/api/v1/admin/tsdb/delete_series", self.url))
            .form(&[("match[]", selector)])
            .send()
            .await
            .expect("delete_series")
            .status();
        assert!(status.is_success(), "delete_series answered {status}");
    }

    /// Every raw sample of the exporter's series: series labels → (ts, value) in stored order.
    pub async fn export_all(&self) -> Export {
        self.client
            .get(format!("{}/internal/force_flush", self.url))
            .send()
            .await
            .expect("force_flush");
        let body = self
            .client
            .post(format!("{}/api/v1/export", self.url))
            // The default end is now: samples of the next days would be left out.
            .form(&[
                ("match[]", "{__name__=~\"myelectricaldata_.*\"}".to_string()),
                (
                    "end",
                    (chrono::Utc::now().timestamp() + 4 * 86400).to_string(),
                ),
            ])
            .send()
            .await
            .expect("export")
            .text()
            .await
            .unwrap();
        parse_export(&body)
    }

    /// VictoriaMetrics' own `/metrics` counter `name`, all label sets summed
    /// when `filter` is empty, else those lines containing `filter`.
    /// VictoriaMetrics refreshes some of its counters only every second or
    /// so: the value is read until two reads 1.5 s apart agree.
    pub async fn counter(&self, name: &str, filter: &str) -> f64 {
        let read = || async {
            let body = self
                .client
                .get(format!("{}/metrics", self.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            sum_metric(&body, name, filter)
        };
        let mut last = read().await;
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let now = read().await;
            if now == last {
                return now;
            }
            last = now;
        }
        panic!("{name} did not settle");
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self._dir.path()).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with(".log") {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    /// `vm_rows_inserted_total`, all types summed, once settled.
    pub async fn rows_inserted(&self) -> f64 {
        self.counter("vm_rows_inserted_total", "").await
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies a directory tree (`cp -a`).
pub fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// A program on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// MyElectricalData's schema as a current install leaves it.
pub const SCHEMA: &str = include_str!("../fixtures/myelectricaldata_schema.sql");
/// MyElectricalData's schema as an older install's ORM created it (JSON
/// raw_data, plain unique constraints, the Tempo enum, no optional tables).
pub const SCHEMA_ORM: &str = include_str!("../fixtures/myelectricaldata_schema_orm.sql");
/// Data as the real client writes it, for either schema.
pub const DATA: &str = include_str!("../fixtures/myelectricaldata_data.sql");

/// A PostgreSQL with database `med` loaded with MyElectricalData's schema
/// and data, and an empty VictoriaMetrics.
pub struct Servers {
    /// The PostgreSQL server.
    pub pg: Postgres,
    /// The VictoriaMetrics server.
    pub vm: Victoria,
    /// A pool on `med`.
    pub pool: PgPool,
}

impl Servers {
    /// Starts both servers and loads the data into the current schema.
    pub async fn start() -> Self {
        Self::start_with_schema(SCHEMA).await
    }

    /// Starts both servers and loads the data into `schema`.
    pub async fn start_with_schema(schema: &str) -> Self {
        Self::start_with_victoria(schema, Victoria::start()).await
    }

    /// Starts PostgreSQL, loads the data into `schema`, beside `vm`.
    pub async fn start_with_victoria(schema: &str, vm: Victoria) -> Self {
        let pg = Postgres::start();
        let pool = pg.create_db("med").await;
        sqlx::raw_sql(schema).execute(&pool).await.unwrap();
        sqlx::raw_sql(DATA).execute(&pool).await.unwrap();
        Servers { pg, vm, pool }
    }

    /// The exporter's environment for these servers, plus `extra`.
    pub fn env(&self, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut e = vec![
            ("DATABASE_URL", self.pg.url("med")),
            ("VICTORIAMETRICS_URL", self.vm.url.clone()),
        ];
        e.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        e
    }

    /// Waits until VictoriaMetrics holds what the model computes from the
    /// database (with `labels`), or fails after `within`, showing `log`.
    pub async fn converge(
        &self,
        labels: &BTreeMap<String, String>,
        within: Duration,
        log: &Path,
        when: &str,
    ) {
        let deadline = Instant::now() + within;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let want =
                model::expected(&self.pool, labels, chrono::Utc::now().timestamp_millis()).await;
            let got = model::from_export(self.vm.export_all().await);
            if got == want {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("{}", std::fs::read_to_string(log).unwrap_or_default());
                model::assert_same(&got, &want, when);
            }
        }
    }
}
