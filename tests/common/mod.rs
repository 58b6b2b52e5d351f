//! Throwaway PostgreSQL and VictoriaMetrics servers for the integration
//! tests, from Debian's `postgresql` and `victoria-metrics` packages, on free
//! loopback ports in temporary directories; killed when dropped.

#![allow(dead_code)]

pub mod model;
pub mod proxy;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

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
        let mut pg = Postgres {
            child: Command::new("true").spawn().unwrap(),
            _dir: dir,
            data,
            bindir,
            as_postgres,
            port: free_port(),
        };
        pg.spawn();
        pg
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

    /// Starts a server keeping 100 years, with extra flags.
    pub fn start_with(flags: &[&str]) -> Self {
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
        let auth = (flag("-httpAuth.username="), flag("-httpAuth.password="));
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
                if http_get(port, "/metrics", auth).is_ok_and(|m| m.contains(&ours)) {
                    break 'start (child, format!("http://127.0.0.1:{port}"), command);
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
            client: reqwest::Client::new(),
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
        self.client = reqwest::Client::new();
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(port, "/health", ("", "")).map_or(true, |r| !r.contains("OK")) {
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
    pub async fn export_all(&self) -> BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> {
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
        let mut out: BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> = BTreeMap::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("export line is JSON");
            let labels: BTreeMap<String, String> = v["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let ts = v["timestamps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_i64().unwrap());
            let vals = v["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_f64().unwrap());
            out.entry(labels).or_default().extend(ts.zip(vals));
        }
        out
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
            body.lines()
                .filter(|l| {
                    l.starts_with(name)
                        && l[name.len()..].starts_with(['{', ' '])
                        && l.contains(filter)
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
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

/// A GET without an async runtime, to wait for start-up.
fn http_get(port: u16, path: &str, (user, password): (&str, &str)) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let auth = if user.is_empty() {
        String::new()
    } else {
        let token = base64(format!("{user}:{password}").as_bytes());
        format!("Authorization: Basic {token}\r\n")
    };
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The exporter binary with `args` and exactly the environment `env`.
///
/// `MED_TEST_EXPORTER`, when set, replaces the program: a command line split
/// on whitespace, the binary's path last, e.g. `qemu-aarch64-static -L
/// /usr/aarch64-linux-gnu target/cross/aarch64-unknown-linux-gnu/ci-cross/myelectricaldata-vm-exporter`
/// (scripts/test-cross runs the ARM builds so, under qemu-user).
fn exporter_command(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut c = match std::env::var("MED_TEST_EXPORTER") {
        Ok(line) if !line.trim().is_empty() => {
            let mut words = line.split_whitespace();
            let mut c = Command::new(words.next().unwrap());
            c.args(words);
            c
        }
        _ => Command::new(env!("CARGO_BIN_EXE_myelectricaldata-vm-exporter")),
    };
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Tests run daemons side by side: each listens on a port of its own.
        .env("VICTORIAMETRICS_HTTP_LISTEN_ADDR", "127.0.0.1:0")
        // The longest the test servers take to show a write to queries
        // (Debian's 1.79: about 9 s for a new series); a run against another
        // release may set MED_TEST_VERIFY_DELAY.
        .env(
            "VICTORIAMETRICS_VERIFY_DELAY",
            std::env::var("MED_TEST_VERIFY_DELAY").unwrap_or_else(|_| "20s".into()),
        );
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Runs the exporter binary with `env` and a subcommand; waits for it.
pub fn exporter(args: &[&str], env: &[(&str, String)]) -> Output {
    exporter_command(args, env)
        .output()
        .expect("run the exporter")
}

/// Runs the exporter binary and asserts it succeeded; returns its log.
pub fn run_ok(args: &[&str], env: &[(&str, String)]) -> String {
    let out = exporter(args, env);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?} failed: {log}");
    log
}

/// A spawned exporter, killed when dropped (also when a test fails).
pub struct Daemon(Child);

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns the exporter binary (for `run`), logs to a file.
pub fn spawn_exporter(args: &[&str], env: &[(&str, String)], log: &Path) -> Daemon {
    let child = exporter_command(args, env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn the exporter");
    Daemon(child)
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
        let pg = Postgres::start();
        let vm = Victoria::start();
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

/// Sends a signal (`-TERM`, `-INT`) to a child process.
pub fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(sig)
        .arg(child.id().to_string())
        .status();
}

/// An instant query at now against VictoriaMetrics at `vm`: the answer's
/// text and its parsed JSON.
pub async fn instant_query(vm: &str, query: &str) -> (String, serde_json::Value) {
    let body = reqwest::Client::new()
        .post(format!("{vm}/api/v1/query"))
        .form(&[("query", query)])
        .send()
        .await
        .expect("query VictoriaMetrics")
        .text()
        .await
        .expect("read the answer");
    let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (body, v)
}

/// Waits, near midnight in Paris, until the new day has begun: tests that
/// write rows for "today" and "tomorrow" must not see the day turn (their
/// files take up to two minutes on a loaded machine: five are kept clear).
pub async fn away_from_paris_midnight() {
    use chrono::TimeZone;
    let paris = chrono_tz::Europe::Paris;
    let now = chrono::Utc::now().with_timezone(&paris);
    let tomorrow = now.date_naive() + chrono::Days::new(1);
    let Some(midnight) = tomorrow
        .and_hms_opt(0, 0, 0)
        .and_then(|t| paris.from_local_datetime(&t).earliest())
    else {
        return;
    };
    let left = (midnight - now).num_seconds();
    if left < 300 {
        tokio::time::sleep(Duration::from_secs(left as u64 + 5)).await;
    }
}
