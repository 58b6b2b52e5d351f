//! PostgreSQL on another machine, over TLS: a server with `ssl = on` and a
//! certificate from a home authority made at test time (tests/common/pki),
//! accepting only encrypted connections (`hostssl`). verify-full with
//! `sslrootcert` exports the exact mirror and `check` says encrypted and
//! verified; another authority, another host name, an expired certificate
//! and `sslmode=disable` are refused, each named with what to do, and
//! nothing is written; `sslmode=require` is encrypted, unverified, and
//! `check` says so.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::exporter::{check_report, once_refused};
use common::model::{assert_exported, from_export};
use common::pki::Pki;
use common::{exporter, run_ok, Postgres, Servers, Victoria, DATA, SCHEMA};

/// Only TLS connections over TCP, as a household's server on the network.
const HOSTSSL_ONLY: &str = "local all all trust\n\
                            hostssl all all 127.0.0.1/32 trust\n\
                            hostssl all all ::1/128 trust\n";

/// A PostgreSQL serving certificate `name` of `pki` (TLS only), loaded with
/// the client's data, beside an empty VictoriaMetrics.
async fn servers(pki: &Pki, name: &str) -> Servers {
    let pg = Postgres::start_with_ssl(
        Path::new(&pki.path(&format!("{name}.pem"))),
        Path::new(&pki.path(&format!("{name}.key"))),
        None,
        Some(HOSTSSL_ONLY),
    );
    // The helper's pool uses sqlx's default, prefer: TLS, unverified.
    let pool = pg.create_db("med").await;
    sqlx::raw_sql(SCHEMA).execute(&pool).await.unwrap();
    sqlx::raw_sql(DATA).execute(&pool).await.unwrap();
    Servers {
        pg,
        vm: Victoria::start(),
        pool,
    }
}

/// The exporter's environment with DATABASE_URL `url`.
fn env(servers: &Servers, url: String) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", url),
        ("VICTORIAMETRICS_URL", servers.vm.url.clone()),
    ]
}

/// The `TLS to PostgreSQL` line of `report` and the line after it (what to
/// do, under a failure or a warning).
fn tls_lines(report: &str) -> String {
    let lines: Vec<&str> = report.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.contains("TLS to PostgreSQL"))
        .unwrap_or_else(|| panic!("no TLS to PostgreSQL line in:\n{report}"));
    lines[i..(i + 2).min(lines.len())].join("\n")
}

async fn nothing_written(vm: &Victoria, when: &str) {
    let found = vm.export_all().await;
    assert!(found.is_empty(), "{when}: {} series written", found.len());
}

#[tokio::test]
async fn a_home_authority_verifies_the_server_and_each_refusal_is_named_with_what_to_do() {
    let pki = Pki::new();
    pki.authority("home")
        .authority("other")
        .issue("home", "db", "DNS:localhost");
    let servers = servers(&pki, "db").await;
    let port = servers.pg.port;
    let url = |host: &str, query: &str| {
        format!("postgresql+asyncpg://postgres@{host}:{port}/med?{query}")
    };
    let home = pki.path("home.pem");
    let other = pki.path("other.pem");

    // Another authority: unknown.
    let e = env(
        &servers,
        url("localhost", &format!("ssl=verify-full&sslrootcert={other}")),
    );
    once_refused(&e, &["unknown authority", "sslrootcert="]);
    let tls = tls_lines(&check_report(&e, false));
    assert!(
        tls.starts_with("[FAIL]")
            && tls.contains("unknown authority")
            && tls.contains("sslmode=verify-full"),
        "{tls}"
    );
    assert!(
        tls.contains("what to do") && tls.contains("sslrootcert=/path/to/ca.pem"),
        "{tls}"
    );

    // The right authority, but connected by a name the certificate does not hold.
    let e = env(
        &servers,
        url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={home}"),
        ),
    );
    once_refused(
        &e,
        &["wrong host name (it does not name 127.0.0.1; it names localhost)"],
    );
    let tls = tls_lines(&check_report(&e, false));
    assert!(
        tls.starts_with("[FAIL]") && tls.contains("wrong host name"),
        "{tls}"
    );
    assert!(
        tls.contains("connect by a host name the certificate holds (localhost)"),
        "{tls}"
    );

    // No TLS asked for, to a server that accepts only TLS.
    let e = env(&servers, url("localhost", "sslmode=disable"));
    once_refused(&e, &["refuses unencrypted connections", "hostssl"]);
    let tls = tls_lines(&check_report(&e, false));
    assert!(
        tls.starts_with("[FAIL]") && tls.contains("sslmode=disable"),
        "{tls}"
    );
    nothing_written(&servers.vm, "after every refusal").await;

    // require without a root certificate: encrypted, not verified, a warning.
    let e = env(&servers, url("127.0.0.1", "ssl=require"));
    let tls = tls_lines(&check_report(&e, true));
    assert!(
        tls.starts_with("[WARN]")
            && tls.contains("encrypted, TLSv1.3")
            && tls.contains("not verified"),
        "{tls}"
    );

    // verify-full with the home authority: the exact mirror, and check says so.
    let e = env(
        &servers,
        url("localhost", &format!("ssl=verify-full&sslrootcert={home}")),
    );
    let before = chrono::Utc::now().timestamp_millis();
    run_ok(&["once"], &e);
    assert_exported(
        &servers.pool,
        &BTreeMap::new(),
        before,
        &from_export(servers.vm.export_all().await),
        "over TLS, verify-full",
    )
    .await;
    let tls = tls_lines(&check_report(&e, true));
    assert!(
        tls.starts_with("[ OK ]")
            && tls.contains("encrypted, TLSv1.3")
            && tls.contains(&format!("verified against sslrootcert {home}"))
            && tls.contains("and its host name"),
        "{tls}"
    );
}

#[tokio::test]
async fn an_expired_server_certificate_is_named_as_expired_with_renew_to_do() {
    let pki = Pki::new();
    pki.authority("home")
        .issue_expired("home", "old", "DNS:localhost");
    let servers = servers(&pki, "old").await;
    let home = pki.path("home.pem");
    let e = env(
        &servers,
        format!(
            "postgresql://postgres@localhost:{}/med?sslmode=verify-full&sslrootcert={home}",
            servers.pg.port
        ),
    );
    once_refused(&e, &["expired", "renew the server's certificate"]);
    let tls = tls_lines(&check_report(&e, false));
    assert!(
        tls.starts_with("[FAIL]") && tls.contains("expired") && tls.contains("renew"),
        "{tls}"
    );
    nothing_written(&servers.vm, "with an expired certificate").await;
}

#[tokio::test]
async fn an_unreadable_root_certificate_stops_the_program_at_start_naming_the_file() {
    let out = exporter(
        &["once"],
        &[
            (
                "DATABASE_URL",
                "postgresql://med:S3cret@db.home/med?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem".to_string(),
            ),
            ("VICTORIAMETRICS_URL", "http://127.0.0.1:1".to_string()),
        ],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.contains("DATABASE_URL")
            && log.contains("sslrootcert: cannot read /nonexistent/ca.pem"),
        "{log}"
    );
    assert!(!log.contains("S3cret"), "{log}");
}
