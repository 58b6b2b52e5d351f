//! VictoriaMetrics on another machine: behind vmauth with a bearer token or
//! basic authentication, over TLS with a home certificate authority
//! (`VICTORIAMETRICS_TLS_CA_FILE`), with a client certificate. The exact
//! mirror read back through each; a wrong token, authority or host name
//! refused with nothing written; `check`'s lines; and no secret in any
//! command's output.
//!
//! The certificates are made at test time with the `openssl` command
//! (Debian's `openssl` package) in a temporary directory.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::exporter::{check_report, once_refused};
use common::http::{get_blocking, get_tls_blocking};
use common::model::{assert_exported, from_export};
use common::pki::Pki;
use common::{exporter, free_port, run_ok, served_addr, spawn_exporter, which, Servers, Victoria};

const TOKEN: &str = "Bearer-T0ken-of-the-household";
const USER: &str = "alice";
const PASSWORD: &str = "Basic-Passw0rd-of-the-household";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The usual certificates: authorities `home` and `other`; `vm` for
/// 127.0.0.1 and `elsewhere` for another name, both from `home`; `client`
/// from `home`.
fn pki() -> Pki {
    let pki = Pki::new();
    pki.authority("home")
        .authority("other")
        .issue("home", "vm", "IP:127.0.0.1,DNS:localhost")
        .issue("home", "elsewhere", "DNS:elsewhere.example")
        .issue("home", "client", "DNS:exporter.home.example");
    pki
}

/// vmauth in front of a VictoriaMetrics: a user with a bearer token and
/// one with a password, each routed only the paths the exporter uses.
struct VmAuth {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

/// The paths the exporter asks for: imports, read-backs, deletes and the
/// cache reset (regular expressions, as vmauth reads `src_paths`).
const ROUTED: [&str; 6] = [
    "/api/v1/import/prometheus",
    "/api/v1/export",
    "/api/v1/query",
    "/api/v1/series",
    "/api/v1/admin/tsdb/delete_series",
    "/internal/resetRollupResultCache",
];

impl VmAuth {
    /// Starts vmauth before `backend`, over https when `tls` gives its flags.
    fn start(backend: &str, tls: Option<[String; 3]>) -> Self {
        let bin = which("vmauth").unwrap_or_else(|| {
            panic!("vmauth was not found on PATH: install Debian's `victoria-metrics` package")
        });
        let dir = tempfile::Builder::new()
            .prefix("med-vmauth-")
            .tempdir()
            .unwrap();
        let paths: Vec<String> = ROUTED.iter().map(|p| format!("{p:?}")).collect();
        let route = format!(
            "  url_map:\n  - src_paths: [{}]\n    url_prefix: {backend:?}\n",
            paths.join(", ")
        );
        let config = format!(
            "users:\n- bearer_token: {TOKEN:?}\n{route}- username: {USER:?}\n  password: {PASSWORD:?}\n{route}"
        );
        let config_path = dir.path().join("auth.yml");
        std::fs::write(&config_path, config).unwrap();
        let ours = format!("value=\"{}\"", config_path.display());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join(format!("vmauth-{port}.log"))).unwrap();
            let mut command = Command::new(&bin);
            command
                .arg(format!("-auth.config={}", config_path.display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .args(tls.iter().flatten())
                .stdout(Stdio::null())
                .stderr(log);
            let mut child = command.spawn().expect("start vmauth");
            // The server on the port must be ours: its /metrics shows our config.
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let metrics = if tls.is_some() {
                    get_tls_blocking(port, "/metrics", "").ok()
                } else {
                    get_blocking(port, "/metrics", "").ok()
                };
                if metrics.is_some_and(|m| m.contains(&ours)) {
                    let scheme = if tls.is_some() { "https" } else { "http" };
                    return VmAuth {
                        child,
                        dir,
                        url: format!("{scheme}://127.0.0.1:{port}"),
                    };
                }
                assert!(Instant::now() < deadline, "vmauth did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn log(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with(".log") {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }
}

impl Drop for VmAuth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The line of `report` for `check`, which must exist.
fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.contains(check))
        .unwrap_or_else(|| panic!("no {check:?} line in:\n{report}"))
}

/// Nothing of the exporter's in VictoriaMetrics.
async fn nothing_written(vm: &Victoria, when: &str) {
    let found = vm.export_all().await;
    assert!(
        found.is_empty(),
        "{when}: {} series written: {:?}",
        found.len(),
        found.keys().take(3).collect::<Vec<_>>()
    );
}

/// `once` exports everything and VictoriaMetrics holds the model's mirror.
async fn mirror_through(servers: &Servers, env: &[(&str, String)], when: &str) {
    let before = now_ms();
    run_ok(&["once"], env);
    assert_exported(
        &servers.pool,
        &BTreeMap::new(),
        before,
        &from_export(servers.vm.export_all().await),
        when,
    )
    .await;
}

#[tokio::test]
async fn the_mirror_is_exact_through_vmauth_with_a_bearer_token_and_a_wrong_token_writes_nothing() {
    let servers = Servers::start().await;
    let vmauth = VmAuth::start(&servers.vm.url, None);
    let fast = ("VICTORIAMETRICS_POLL_INTERVAL", "1s".to_string());
    let base = vec![
        ("DATABASE_URL", servers.pg.url("med")),
        ("VICTORIAMETRICS_URL", vmauth.url.clone()),
        fast,
    ];

    let mut wrong = base.clone();
    wrong.push(("VICTORIAMETRICS_BEARER_TOKEN", "Not-the-t0ken".into()));
    let log = once_refused(&wrong, &["400", "cannot find the provided auth token"]);
    assert!(!log.contains("Not-the-t0ken"), "{log}");
    let report = check_report(&wrong, false);
    assert!(
        line(&report, "Credentials accepted").starts_with("[FAIL]"),
        "{report}"
    );
    assert!(
        report.contains("what to do: check VICTORIAMETRICS_BEARER_TOKEN"),
        "{report}"
    );
    assert!(!report.contains("Not-the-t0ken"), "{report}");
    let mut none = base.clone();
    none.retain(|(k, _)| *k != "VICTORIAMETRICS_BEARER_TOKEN");
    once_refused(&none, &["401"]);
    nothing_written(&servers.vm, "with a wrong token, or none").await;

    // The token from a file, as a unit file would keep it; plain http, so
    // that imports take the direct path and reads and deletes reqwest's.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut good = base.clone();
    good.push((
        "VICTORIAMETRICS_BEARER_TOKEN_FILE",
        token_file.display().to_string(),
    ));
    mirror_through(&servers, &good, "through vmauth with a bearer token").await;

    let report = check_report(&good, true);
    let credentials = line(&report, "Credentials accepted");
    assert!(credentials.starts_with("[ OK ]"), "{report}");
    assert!(
        credentials.contains(&format!(
            "bearer token from file {} (VICTORIAMETRICS_BEARER_TOKEN_FILE) accepted",
            token_file.display()
        )),
        "{report}"
    );
    assert!(
        line(&report, "TLS to VictoriaMetrics").contains("[ OK ] TLS to VictoriaMetrics")
            && line(&report, "TLS to VictoriaMetrics").contains("not used (http://)"),
        "{report}"
    );
    for ok in [
        "A sample written and read back",
        "Series deletion allowed",
        "Mirror verified",
    ] {
        assert!(line(&report, ok).starts_with("[ OK ]"), "{report}");
    }
    assert!(!report.contains(TOKEN), "{report}");
    assert!(!vmauth.log().contains("panic"), "{}", vmauth.log());
}

#[tokio::test]
async fn the_mirror_is_exact_through_vmauth_over_tls_with_a_home_authority_and_basic_authentication(
) {
    let pki = pki();
    let servers = Servers::start().await;
    let vmauth = VmAuth::start(&servers.vm.url, Some(pki.tls_flags("vm")));
    let ca = ("VICTORIAMETRICS_TLS_CA_FILE", pki.path("home.pem"));
    let base = vec![
        ("DATABASE_URL", servers.pg.url("med")),
        ("VICTORIAMETRICS_URL", vmauth.url.clone()),
        ca.clone(),
    ];
    let mut basic = base.clone();
    basic.push(("VICTORIAMETRICS_USERNAME", USER.into()));
    basic.push(("VICTORIAMETRICS_PASSWORD", PASSWORD.into()));
    mirror_through(&servers, &basic, "through vmauth over TLS, basic auth").await;

    let report = check_report(&basic, true);
    assert!(
        line(&report, "Credentials accepted").contains("basic, as user \"alice\" accepted"),
        "{report}"
    );
    let tls = line(&report, "TLS to VictoriaMetrics");
    assert!(
        tls.starts_with("[ OK ]")
            && tls.contains(&format!(
                "https: the server's certificate verified against the public roots and the CA file {} (VICTORIAMETRICS_TLS_CA_FILE); no client certificate",
                ca.1
            )),
        "{report}"
    );
    assert!(!report.contains(PASSWORD), "{report}");

    // A bearer token over https: imports through reqwest carry it too.
    let mut bearer = base.clone();
    bearer.push(("VICTORIAMETRICS_BEARER_TOKEN", TOKEN.into()));
    let report = check_report(&bearer, true);
    assert!(
        line(&report, "Credentials accepted")
            .contains("bearer token from the environment (VICTORIAMETRICS_BEARER_TOKEN) accepted"),
        "{report}"
    );
    assert!(
        line(&report, "A sample written and read back").starts_with("[ OK ]"),
        "{report}"
    );
}

#[tokio::test]
async fn the_mirror_is_exact_over_tls_and_a_wrong_authority_or_host_name_is_refused_writing_nothing(
) {
    let pki = pki();
    let flags = pki.tls_flags("vm");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let servers = Servers::start_with_victoria(common::SCHEMA, Victoria::start_with(&flags)).await;
    assert!(servers.vm.url.starts_with("https://127.0.0.1:"));
    let base = vec![
        ("DATABASE_URL", servers.pg.url("med")),
        ("VICTORIAMETRICS_URL", servers.vm.url.clone()),
        ("VICTORIAMETRICS_POLL_INTERVAL", "1s".to_string()),
    ];

    // The public roots alone, or another authority: the certificate is refused.
    once_refused(&base, &["certificate", "UnknownIssuer"]);
    let mut other = base.clone();
    other.push(("VICTORIAMETRICS_TLS_CA_FILE", pki.path("other.pem")));
    once_refused(&other, &["certificate", "UnknownIssuer"]);
    let report = check_report(&other, false);
    let tls = line(&report, "TLS to VictoriaMetrics");
    assert!(
        tls.starts_with("[FAIL]") && tls.contains("the server's certificate was refused"),
        "{report}"
    );
    assert!(
        report.contains("what to do: check that VICTORIAMETRICS_TLS_CA_FILE holds the authority"),
        "{report}"
    );
    nothing_written(&servers.vm, "with another authority").await;

    // The right authority, but a certificate for another name.
    let flags = pki.tls_flags("elsewhere");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let elsewhere = Victoria::start_with(&flags);
    let mut wrong_name = vec![
        ("DATABASE_URL", servers.pg.url("med")),
        ("VICTORIAMETRICS_URL", elsewhere.url.clone()),
        ("VICTORIAMETRICS_POLL_INTERVAL", "1s".to_string()),
    ];
    wrong_name.push(("VICTORIAMETRICS_TLS_CA_FILE", pki.path("home.pem")));
    once_refused(
        &wrong_name,
        &["certificate not valid for name \"127.0.0.1\""],
    );
    nothing_written(&elsewhere, "with a certificate for another name").await;
    drop(elsewhere);

    let mut good = base.clone();
    good.push(("VICTORIAMETRICS_TLS_CA_FILE", pki.path("home.pem")));
    mirror_through(&servers, &good, "over TLS with the home authority").await;
    let report = check_report(&good, true);
    assert!(
        line(&report, "TLS to VictoriaMetrics")
            .contains("verified against the public roots and the CA file"),
        "{report}"
    );
    assert!(
        line(&report, "Credentials accepted").contains("none set, none asked for"),
        "{report}"
    );
}

/// `openssl s_server` demanding a client certificate from `home`: what it
/// printed about the one connection `check` made, and `check`'s report.
fn client_certificate_seen(pki: &Pki, env: &[(&str, String)]) -> (String, String) {
    let port = free_port();
    let log = pki.path(&format!("s_server-{port}.log"));
    // One handle for both streams: two would write over each other.
    let file = std::fs::File::create(&log).unwrap();
    let mut server = Command::new("openssl")
        .args(["s_server", "-naccept", "1", "-www", "-Verify", "1"])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .args(["-CAfile", &pki.path("home.pem")])
        .args(["-cert", &pki.path("vm.pem"), "-key", &pki.path("vm.key")])
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start openssl s_server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&log).map_or(true, |l| !l.contains("ACCEPT")) {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut env = env.to_vec();
    env.push(("VICTORIAMETRICS_URL", format!("https://127.0.0.1:{port}")));
    env.push(("VICTORIAMETRICS_TIMEOUT", "2s".into()));
    let out = exporter(&["check"], &env);
    let _ = server.kill();
    let _ = server.wait();
    (
        std::fs::read_to_string(&log).unwrap_or_default(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_the_server_asks_for_one() {
    let pki = pki();
    let pg = common::Postgres::start();
    let base = vec![
        ("DATABASE_URL", pg.url("postgres")),
        ("VICTORIAMETRICS_TLS_CA_FILE", pki.path("home.pem")),
    ];
    let mut with_cert = base.clone();
    with_cert.push(("VICTORIAMETRICS_TLS_CERT_FILE", pki.path("client.pem")));
    with_cert.push(("VICTORIAMETRICS_TLS_KEY_FILE", pki.path("client.key")));
    // s_server answers no POST: the handshake is what is looked at.
    let (seen, _) = client_certificate_seen(&pki, &with_cert);
    assert!(
        seen.contains("CN = client") && !seen.contains("did not return a certificate"),
        "{seen}"
    );
    let (seen, _) = client_certificate_seen(&pki, &base);
    assert!(
        !seen.contains("CN = client") && seen.contains("did not return a certificate"),
        "{seen}"
    );
}

/// Every command's output, stdout and stderr, with `env` (at trace level):
/// `once`, `check`, the daemon for a few seconds, and `health` against it.
async fn every_output(env: &[(&str, String)], scratch: &Path) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "trace".into()));
    let mut outputs = Vec::new();
    for command in ["once", "check"] {
        let out = exporter(&[command], &env);
        outputs.push((
            command.to_string(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    let log: PathBuf = scratch.join("daemon.log");
    let daemon = spawn_exporter(&["run"], &env, &log);
    let addr = served_addr(&log).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    // A pass done, or (with a wrong token) an error logged.
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("pass::outcome")
        && !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ERROR")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut health_env = env.clone();
    health_env.retain(|(k, _)| *k != "VICTORIAMETRICS_HTTP_LISTEN_ADDR");
    health_env.push(("VICTORIAMETRICS_HTTP_LISTEN_ADDR", addr.to_string()));
    let out = exporter(&["health"], &health_env);
    outputs.push((
        "health".into(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ));
    common::signal(&daemon, "-TERM");
    drop(daemon);
    outputs.push((
        "run".into(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    ));
    outputs
}

#[tokio::test]
async fn no_token_password_or_key_reaches_any_commands_output() {
    let pki = pki();
    let servers = Servers::start().await;
    let vmauth = VmAuth::start(&servers.vm.url, Some(pki.tls_flags("vm")));
    let key = std::fs::read_to_string(pki.path("client.key")).unwrap();
    let key_body: Vec<&str> = key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 8)
        .collect();
    assert!(!key_body.is_empty());
    let tls = [
        ("DATABASE_URL", servers.pg.url("med")),
        ("VICTORIAMETRICS_URL", vmauth.url.clone()),
        ("VICTORIAMETRICS_TLS_CA_FILE", pki.path("home.pem")),
        ("VICTORIAMETRICS_TLS_CERT_FILE", pki.path("client.pem")),
        ("VICTORIAMETRICS_TLS_KEY_FILE", pki.path("client.key")),
    ];
    let basic_header = common::http::basic_auth(USER, PASSWORD);
    let basic_b64 = basic_header.trim_start_matches("Basic ");
    let mut secrets: Vec<&str> = vec![TOKEN, PASSWORD, basic_b64];
    secrets.extend(key_body.iter().copied());

    let scratch = tempfile::tempdir().unwrap();
    let mut bearer = tls.to_vec();
    bearer.push(("VICTORIAMETRICS_BEARER_TOKEN", TOKEN.into()));
    let mut basic = tls.to_vec();
    basic.push(("VICTORIAMETRICS_USERNAME", USER.into()));
    basic.push(("VICTORIAMETRICS_PASSWORD", PASSWORD.into()));
    // And refused: a wrong token's answer quotes the header it received.
    let mut wrong = tls.to_vec();
    wrong.push(("VICTORIAMETRICS_BEARER_TOKEN", format!("{TOKEN}-old")));
    for (variant, env) in [("bearer", bearer), ("basic", basic), ("wrong token", wrong)] {
        let dir = scratch.path().join(variant.replace(' ', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        let outputs = every_output(&env, &dir).await;
        for (command, output) in &outputs {
            assert!(!output.is_empty(), "{variant} {command}: no output");
            for secret in &secrets {
                assert!(
                    !output.contains(secret),
                    "{variant} {command} printed a secret ({} chars):\n{output}",
                    secret.len()
                );
            }
        }
        if variant != "wrong token" {
            let check = &outputs[1].1;
            assert!(check.contains("all is well"), "{variant}: {check}");
            assert!(
                line(check, "TLS to VictoriaMetrics").contains(&format!(
                    "https: the server's certificate verified against the public roots and the CA file {} (VICTORIAMETRICS_TLS_CA_FILE); client certificate {} presented when asked for",
                    pki.path("home.pem"),
                    pki.path("client.pem")
                )),
                "{check}"
            );
        }
    }
}
