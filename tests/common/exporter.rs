//! The exporter binary under test: run to completion, or spawned as a
//! daemon that is killed when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// `once`'s failure, with its log: exit code 1, and the log says each of `why`.
pub fn once_refused(env: &[(&str, String)], why: &[&str]) -> String {
    let out = exporter(&["once"], env);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "once: {log}");
    for w in why {
        assert!(log.contains(w), "{w:?} not in once's log:\n{log}");
    }
    log
}

/// `check`'s report (stdout), asserting whether it passed.
pub fn check_report(env: &[(&str, String)], passes: bool) -> String {
    let out = exporter(&["check"], env);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.success(),
        passes,
        "check: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
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

/// Where a daemon spawned with [`spawn_exporter`] serves `/health` and
/// `/metrics`, from its log. It listens on a port the kernel chose (the
/// default `127.0.0.1:0` above): a port found free before the daemon starts
/// can be taken meanwhile by a server another test starts.
pub async fn served_addr(log: &Path) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let addr = text
            .lines()
            .find(|l| l.contains("serving /health and /metrics"))
            .and_then(|l| l.split("address=").nth(1))
            .and_then(|a| a.split_whitespace().next()?.parse().ok());
        if let Some(addr) = addr {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon never said where it serves /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends a signal (`-TERM`, `-INT`) to a child process.
pub fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(sig)
        .arg(child.id().to_string())
        .status();
}

/// A count from the pass line of `family` in `log` (`rows`, `skipped`, …):
/// the first such line (a pass that follows, to repair what
/// VictoriaMetrics dropped, as v1.150 sometimes does after a delete, reads
/// that PDL again).
pub fn pass_count(log: &str, family: &str, field: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("pass::outcome") && l.contains(&format!("family=\"{family}\"")))
        .unwrap_or_else(|| panic!("no pass line for {family} in:\n{log}"));
    line.split(&format!(" {field}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {line}"))
}
