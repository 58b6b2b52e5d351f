//! A VictoriaMetrics cluster's URLs: the exporter writes through vminsert's
//! `/insert/<tenant>/prometheus`, reads and deletes through vmselect's
//! `/select/<tenant>/prometheus` and `/delete/<tenant>/prometheus`, and the
//! mirror stays exact. Debian ships no cluster binaries (and its vmauth 1.79
//! cannot strip a path prefix), so a small routing proxy below stands in for
//! the cluster: two ports like vminsert and vmselect, serving only the
//! cluster paths of one tenant, with basic authentication like vmauth, onto
//! a single-node server. Anything else is answered 400 (an unsupported
//! path, as vminsert and vmselect answer), 404 (another tenant) or 401, so
//! the test passes only if the exporter uses the cluster paths.
//!
//! When VictoriaMetrics' cluster binaries (`vmstorage`, `vminsert`,
//! `vmselect`) are on PATH, the same scenarios also run against a real
//! cluster: two vmstorage nodes, vminsert and vmselect replicating twice;
//! and once more with vmselect not deduplicating, so that it shows every
//! sample twice.
//!
//! The tests come first; below them, the stand-in cluster, reading through
//! the cluster's paths, and the real cluster.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http::{self, basic_auth, Request, Response};
use common::model::{assert_exported, assert_same, from_export, Mirror};
use common::promql::{parse_export, sum_metric, Export};
use common::{Postgres, Servers};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The tenant (accountID) the cluster serves: not 0, so that a tenant
/// dropped or replaced on the way shows.
const TENANT: &str = "42";
const USER: &str = "exporter";
const PASSWORD: &str = "s3cret:with colon";

/// MyElectricalData's changes that force rewrites: a correction in the
/// middle of a day's 30-minute history and of a daily value, a quality
/// flip, deleted rows, new days, a Tempo colour changed.
const CHANGES: &str = r#"
UPDATE consumption_data SET value = value - 50, updated_at = now()
 WHERE usage_point_id = '98765432109876' AND granularity = 'detailed' AND date = '2024-10-27' AND interval_start = '12:30';
UPDATE consumption_data SET value = value + 111, updated_at = now()
 WHERE usage_point_id = '12345678901234' AND granularity = 'daily' AND date = '2024-02-10';
UPDATE consumption_data SET raw_data = '{"quality": "CORRIGE"}', updated_at = now()
 WHERE usage_point_id = '12345678901234' AND granularity = 'daily' AND date BETWEEN '2024-11-02' AND '2024-11-04';
DELETE FROM consumption_data WHERE usage_point_id = '98765432109876' AND granularity = 'detailed'
 AND date = '2024-11-05' AND interval_start = '08:00';
DELETE FROM production_data WHERE granularity = 'detailed';
INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data, updated_at)
SELECT md5(p || d::text || 'new'), p, d, 'daily', NULL, 9999, '{"quality": "BRUT"}', now()
  FROM unnest(ARRAY['12345678901234', '98765432109876']) AS p, generate_series('2024-11-11'::date, '2024-11-12', '1 day') AS d;
UPDATE tempo_days SET color = 'WHITE' WHERE id = '2024-09-02';
"#;

/// New readings after the last ones: a day of the first meter's load
/// curve and a Tempo day, appended to their series.
const APPENDS: &str = r#"
INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data, updated_at)
SELECT md5('append' || t), '12345678901234', '2024-11-06', 'detailed', t, w,
       jsonb_build_object('v', w::text, 'd', '2024-11-06 ' || t || ':00', 'p', 'PT30M', 'n', 'B', 'iv', '0', 'ec', '0'), now()
  FROM (SELECT to_char(x, 'HH24:MI') AS t, 500 + extract(hour FROM x)::int * 10 AS w
          FROM generate_series('2000-01-01 00:00'::timestamp, '2000-01-01 23:30', '30 minutes') AS x) AS times;
INSERT INTO tempo_days (id, date, color) VALUES ('2024-11-11', '2024-11-11 00:00+00', 'RED');
"#;

#[test]
fn cluster_paths_map_onto_the_single_node_and_nothing_else_does() {
    let r = |role, target: &str| route(role, "42", target);
    assert_eq!(
        r(
            Role::Insert,
            "/insert/42/prometheus/api/v1/import/prometheus"
        ),
        Ok("/api/v1/import/prometheus".into())
    );
    assert_eq!(
        r(
            Role::Select,
            "/select/42/prometheus/api/v1/export?match[]=x&end=1"
        ),
        Ok("/api/v1/export?match[]=x&end=1".into())
    );
    assert_eq!(
        r(
            Role::Select,
            "/delete/42/prometheus/api/v1/admin/tsdb/delete_series"
        ),
        Ok("/api/v1/admin/tsdb/delete_series".into())
    );
    for (role, target, status) in [
        (Role::Insert, "/api/v1/import/prometheus", 400),
        (
            Role::Insert,
            "/insert/0/prometheus/api/v1/import/prometheus",
            404,
        ),
        (Role::Insert, "/insert/42/api/v1/import/prometheus", 400),
        (Role::Insert, "/select/42/prometheus/api/v1/export", 400),
        (
            Role::Select,
            "/insert/42/prometheus/api/v1/import/prometheus",
            400,
        ),
        (Role::Select, "/api/v1/export", 400),
        (
            Role::Select,
            "/select/42/prometheus/api/v1/admin/tsdb/delete_series",
            400,
        ),
        (Role::Select, "/delete/42/prometheus/api/v1/export", 400),
        (
            Role::Select,
            "/delete/7/prometheus/api/v1/admin/tsdb/delete_series",
            404,
        ),
        (Role::Select, "/select/42/prometheus/metrics", 400),
        (Role::Select, "/metrics", 400),
    ] {
        assert_eq!(r(role, target).map_err(|e| e.0), Err(status), "{target}");
    }
}

#[tokio::test]
async fn the_mirror_stays_exact_through_vminsert_and_vmselect_tenant_paths() {
    let servers = Servers::start().await;
    let cluster = Cluster::start(&servers.vm.url, TENANT, (USER, PASSWORD));
    let paths = TenantPaths::new();

    // The stand-in refuses what a cluster behind vmauth refuses, and
    // forwards a chunked body (the exporter's have a Content-Length).
    assert_stand_in_refuses_what_a_cluster_refuses(&cluster, &paths).await;
    cluster.clear();

    // First export, in big batches (bodies of hundreds of kilobytes).
    let env = cluster_env(servers.pg.url("med"), &cluster.insert, &cluster.select);
    let mut batch = env.clone();
    batch.push(("VICTORIAMETRICS_BATCH_SIZE", "100000".into()));
    let before = chrono::Utc::now().timestamp_millis();
    common::run_ok(&["once"], &batch);
    let seen = cluster.seen();
    let when = "after the first export through the cluster paths";
    assert_mirror(&servers, &cluster, before, when).await;
    let imports: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.role == Role::Insert && s.path() == paths.import)
        .collect();
    assert!(!imports.is_empty(), "no import seen: {seen:?}");
    assert!(
        imports
            .iter()
            .all(|s| s.method == "POST" && s.status == 204),
        "{imports:?}"
    );
    assert!(
        imports.iter().any(|s| s.body_len > 100_000),
        "no big body: {imports:?}"
    );
    assert_only_the_exporters_paths(&seen, &paths);
    // The chunked probe landed whole (VictoriaMetrics shows a new series
    // to searches a moment after it was written).
    assert_chunked_probe_stored(&cluster, &paths).await;
    cluster.clear();

    // Changes that force deletes and rewrites, then the mirror again.
    sqlx::raw_sql(CHANGES).execute(&servers.pool).await.unwrap();
    let before = chrono::Utc::now().timestamp_millis();
    common::run_ok(&["once"], &env);
    // What the exporter sent, before the test's own reads through the proxy.
    let seen = cluster.seen();
    let when = "after the changes, through the cluster paths";
    assert_mirror(&servers, &cluster, before, when).await;
    let deletes = count_in(&seen, Role::Select, &paths.delete, 204);
    let imports = count_in(&seen, Role::Insert, &paths.import, 204);
    assert!(deletes > 0, "no delete_series seen: {seen:?}");
    assert!(imports > 0, "no import seen: {seen:?}");
    assert_only_the_exporters_paths(&seen, &paths);
    cluster.clear();

    // `check` writes, reads back and deletes a sample through the cluster;
    // the mirror is left as it was.
    let out = common::exporter(&["check"], &env);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "check failed: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = cluster.seen();
    for (role, path, status) in [
        (Role::Insert, &paths.import, 204),
        (Role::Select, &paths.export, 200),
        (Role::Select, &paths.delete, 204),
    ] {
        assert!(count_in(&seen, role, path, status) > 0, "{path}: {seen:?}");
    }
    // Besides those and the mirror's read-back, only the retention probe of `check` (a GET of
    // `/metrics` below the select base, which a real vmselect refuses with
    // 400 as this stand-in does, so that `check` warns).
    let off = off_paths(
        &seen,
        &[&paths.import, &paths.export, &paths.delete, &paths.query],
    );
    assert!(
        off.iter()
            .all(|s| s.method == "GET" && s.path().ends_with("/metrics")),
        "requests off the cluster paths: {off:?}"
    );
    assert!(
        seen.iter().all(|s| s.status != 401),
        "credentials missing: {seen:?}"
    );
    assert_mirror(&servers, &cluster, before, "after check").await;
}

#[tokio::test]
async fn the_mirror_stays_exact_in_a_real_cluster() {
    let Some(bins) = cluster_binaries("the_mirror_stays_exact_in_a_real_cluster") else {
        return;
    };
    let (pg, pool) = loaded_postgres().await;
    let cluster = RealCluster::start(&bins, true);
    let env = cluster.env(pg.url("med"));
    let none = BTreeMap::new();

    // First export, in big batches.
    let mut batch = env.clone();
    batch.push(("VICTORIAMETRICS_BATCH_SIZE", "100000".into()));
    let first = once_then_mirror(&pool, &cluster, &batch, "after the first export").await;
    // (A series the exporter does not know yet is deleted before its first
    // write: the first export deletes too.)
    assert!(first.now.imports > 0.0, "no import reached vminsert");
    let model = common::model::expected(&pool, &none, first.before).await;
    let samples = model.values().map(Vec::len).sum::<usize>() as f64;
    let rows = first.now.rows;
    assert!(
        rows >= samples,
        "{rows} rows inserted for {samples} samples"
    );

    // Changes that force deletes and rewrites.
    sqlx::raw_sql(CHANGES).execute(&pool).await.unwrap();
    let changes = once_then_mirror(&pool, &cluster, &env, "after the changes").await;
    let (was, now) = (changes.was, changes.now);
    assert!(
        now.deletes > was.deletes,
        "no delete_series reached vmselect"
    );
    assert!(
        now.imports > was.imports && now.rows > was.rows,
        "no import reached vminsert"
    );

    // New readings appended.
    sqlx::raw_sql(APPENDS).execute(&pool).await.unwrap();
    let appends = once_then_mirror(&pool, &cluster, &env, "after the appends").await;
    let (was, now) = (appends.was, appends.now);
    assert!(
        now.rows > was.rows,
        "the appended readings were not written"
    );
    assert_eq!(
        now.deletes, was.deletes,
        "appended readings were written with a delete_series"
    );

    // Nothing changed: nothing written but the EcoWatt forecast hours that
    // entered VictoriaMetrics' future window meanwhile, nothing deleted.
    let idle = once_then_mirror(&pool, &cluster, &env, "after a once with nothing changed").await;
    let (was, now) = (idle.was, idle.now);
    let released = common::model::released(&pool, &none, idle.before, idle.after).await;
    assert!(
        now.rows - was.rows <= released,
        "a once with nothing changed wrote {} rows ({released} came into the window)",
        now.rows - was.rows
    );
    assert_eq!(
        now.deletes, was.deletes,
        "a once with nothing changed deleted"
    );

    // `check` writes, reads back and deletes a sample through the cluster,
    // and audits the mirror; the mirror is left as it was.
    let out = common::exporter(&["check"], &env);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "check failed: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "[ OK ] A sample written and read back",
        "[ OK ] Series deletion allowed",
        "[ OK ] Mirror verified",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    assert!(!report.contains("[FAIL]"), "{report}");
    assert_cluster_mirror(&pool, &cluster, idle.before, "after check").await;
}

/// vmselect without `-dedup.minScrapeInterval` in front of two replicas
/// shows every sample twice: `check` names it with the flag to set, a
/// `once` with nothing changed writes and deletes nothing, a change is
/// still written, and each vmstorage holds the model once.
#[tokio::test]
async fn a_replicated_cluster_without_dedup_is_named_and_nothing_is_rewritten() {
    let Some(bins) =
        cluster_binaries("a_replicated_cluster_without_dedup_is_named_and_nothing_is_rewritten")
    else {
        return;
    };
    let (pg, pool) = loaded_postgres().await;
    let cluster = RealCluster::start(&bins, false);
    let env = cluster.env(pg.url("med"));
    let none = BTreeMap::new();

    let before = chrono::Utc::now().timestamp_millis();
    common::run_ok(&["once"], &env);
    assert_cluster_mirror(&pool, &cluster, before, "after the first export").await;

    // check warns in its mirror item, with what to set where.
    let out = common::exporter(&["check"], &env);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "check failed: {report}");
    let lines: Vec<&str> = report.lines().collect();
    let warn = lines
        .iter()
        .position(|l| l.starts_with("[WARN] Mirror verified"))
        .unwrap_or_else(|| panic!("no mirror warning: {report}"));
    assert!(
        lines[warn].contains("shows every sample twice")
            && lines[warn + 1].contains("set -dedup.minScrapeInterval=1ms on vmselect"),
        "{report}"
    );

    // A once with nothing changed writes nothing but the EcoWatt hours that
    // entered the window, and deletes nothing.
    let before = chrono::Utc::now().timestamp_millis();
    let was = traffic(&cluster).await;
    let log = common::run_ok(&["once"], &env);
    let after = chrono::Utc::now().timestamp_millis();
    let now = traffic(&cluster).await;
    let released = common::model::released(&pool, &none, before, after).await;
    assert!(
        now.rows - was.rows <= released,
        "the doubled read-back caused {} rows to be written\n{log}",
        now.rows - was.rows
    );
    assert_eq!(
        now.deletes, was.deletes,
        "the doubled read-back caused deletes\n{log}"
    );
    assert!(log.contains("shows every sample twice"), "{log}");
    assert!(!log.contains("repairing"), "{log}");
    assert_cluster_mirror(&pool, &cluster, before, "after a once with nothing changed").await;

    // A change is written, and the mirror is still exact.
    sqlx::raw_sql(
        "UPDATE consumption_data SET value = value + 1, updated_at = now() \
         WHERE granularity = 'daily' AND date = '2024-11-01'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = chrono::Utc::now().timestamp_millis();
    let log = common::run_ok(&["once"], &env);
    assert!(
        traffic(&cluster).await.rows > now.rows,
        "the change was not written"
    );
    assert!(!log.contains("repairing"), "{log}");
    assert_cluster_mirror(&pool, &cluster, before, "after a change").await;
}

/// Measures, on a real cluster, how long after a write of a new series a
/// delete_series still misses it (vmselect finds the series to delete in
/// vmstorage's index). Prints a table; run with
/// `cargo test --test cluster -- --ignored --nocapture`
/// (`MED_DELETE_TRIES`, 5 by default, and `MED_DELETE_DELAYS_MS`, a comma
/// list, change the trials).
#[tokio::test]
#[ignore = "a measurement of several minutes"]
async fn delete_series_right_after_a_write_on_a_real_cluster() {
    let Some(bins) = cluster_binaries("delete_series_right_after_a_write_on_a_real_cluster") else {
        return;
    };
    let cluster = RealCluster::start(&bins, true);
    let tries: usize = std::env::var("MED_DELETE_TRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let delays: Vec<u64> = std::env::var("MED_DELETE_DELAYS_MS")
        .ok()
        .map(|v| v.split(',').filter_map(|d| d.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 500, 1000, 1500, 2000, 3000, 5000]);
    let mut table = Vec::new();
    for delay in delays {
        let mut left = 0;
        for n in 0..tries {
            let still =
                write_then_delete(&cluster, &format!("delete_probe_{delay}_{n}"), delay).await;
            println!("delay {delay} ms, try {n}: still there (vmselect, replica 0, replica 1): {still:?}");
            if still[0] {
                left += 1;
            }
        }
        table.push((delay, left));
    }
    println!("delay after the write (ms) | series left 10 s after delete_series");
    for (delay, left) in table {
        println!("{delay:>26} | {left} of {tries}");
    }
}

// The stand-in cluster: a vminsert port and a vmselect port in front of a
// single node.

/// Which cluster component a port plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// vminsert (8480): `/insert/<tenant>/prometheus/...`.
    Insert,
    /// vmselect (8481): `/select/<tenant>/prometheus/...` and `/delete/<tenant>/prometheus/...`.
    Select,
}

/// Suffixes after `/insert/<tenant>/prometheus/` this vminsert serves.
const INSERT_PATHS: &[&str] = &["api/v1/import/prometheus", "api/v1/import", "api/v1/write"];
/// Suffixes after `/select/<tenant>/prometheus/` this vmselect serves.
const SELECT_PATHS: &[&str] = &[
    "api/v1/export",
    "api/v1/query",
    "api/v1/query_range",
    "api/v1/series",
    "api/v1/labels",
];
/// The query cache reset, which the exporter asks for after a pass that wrote.
const RESET_PATH: &str = "/internal/resetRollupResultCache";
/// The one suffix after `/delete/<tenant>/prometheus/` vmselect serves.
const DELETE_PATHS: &[&str] = &["api/v1/admin/tsdb/delete_series"];

/// Maps a cluster request target (path and query) onto the single node's,
/// or gives the status and message a cluster would answer.
fn route(role: Role, tenant: &str, target: &str) -> Result<String, (u16, String)> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let unsupported = || (400, format!("unsupported path requested: {path:?}"));
    // vmselect serves its cache reset at its root, for every tenant.
    if role == Role::Select && path == RESET_PATH {
        return Ok(target.to_string());
    }
    let mut parts = path
        .strip_prefix('/')
        .ok_or_else(unsupported)?
        .splitn(4, '/');
    let (prefix, account, api, rest) = (parts.next(), parts.next(), parts.next(), parts.next());
    let allowed = match (role, prefix) {
        (Role::Insert, Some("insert")) => INSERT_PATHS,
        (Role::Select, Some("select")) => SELECT_PATHS,
        (Role::Select, Some("delete")) => DELETE_PATHS,
        _ => return Err(unsupported()),
    };
    let rest = match (api, rest) {
        (Some("prometheus"), Some(rest)) if allowed.contains(&rest) => rest,
        _ => return Err(unsupported()),
    };
    if account != Some(tenant) {
        return Err((
            404,
            format!("tenant {account:?} is not served here (only {tenant})"),
        ));
    }
    Ok(match query {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    })
}

/// One request the stand-in answered.
#[derive(Debug, Clone)]
struct Seen {
    role: Role,
    method: String,
    /// Path and query as received.
    target: String,
    status: u16,
    body_len: usize,
}

impl Seen {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// What both ports share.
struct Shared {
    upstream: String,
    tenant: String,
    authorization: String,
    seen: Mutex<Vec<Seen>>,
}

/// The stand-in cluster: a vminsert port and a vmselect port.
struct Cluster {
    /// vminsert's base URL (`http://127.0.0.1:port`).
    insert: String,
    /// vmselect's base URL.
    select: String,
    shared: Arc<Shared>,
    _ports: [http::Server; 2],
}

impl Cluster {
    /// Starts both ports in front of the single node at `upstream`.
    fn start(upstream: &str, tenant: &str, (user, password): (&str, &str)) -> Self {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            tenant: tenant.to_string(),
            authorization: basic_auth(user, password),
            seen: Mutex::new(Vec::new()),
        });
        let port = |role: Role| {
            let (shared, client) = (shared.clone(), client());
            http::serve(move |req| {
                let (shared, client) = (shared.clone(), client.clone());
                async move { shared.answer(&client, role, req).await }
            })
        };
        let (insert, select) = (port(Role::Insert), port(Role::Select));
        Cluster {
            insert: insert.url.clone(),
            select: select.url.clone(),
            shared,
            _ports: [insert, select],
        }
    }

    /// Every request answered so far.
    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far.
    fn clear(&self) {
        self.shared.seen.lock().unwrap().clear();
    }
}

impl Shared {
    /// Answers a request on `role`'s port and notes it.
    async fn answer(&self, client: &reqwest::Client, role: Role, req: Request) -> Response {
        let response = self.forward(client, role, &req).await;
        self.seen.lock().unwrap().push(Seen {
            role,
            method: req.method,
            target: req.target,
            status: response.status,
            body_len: req.body.len(),
        });
        response
    }

    /// Checks the credentials like vmauth, routes like vminsert/vmselect and
    /// forwards to the single node.
    async fn forward(&self, client: &reqwest::Client, role: Role, req: &Request) -> Response {
        if req.header("authorization") != Some(self.authorization.as_str()) {
            return Response::text(401, "Unauthorized");
        }
        let path = match route(role, &self.tenant, &req.target) {
            Ok(p) => p,
            Err((status, msg)) => return Response::text(status, msg),
        };
        let Ok(method) = reqwest::Method::from_bytes(req.method.as_bytes()) else {
            return Response::text(405, format!("method {:?}", req.method));
        };
        let mut rb = client
            .request(method, format!("{}{path}", self.upstream))
            .body(req.body.clone());
        for (k, v) in &req.headers {
            let hop = [
                "host",
                "connection",
                "keep-alive",
                "content-length",
                "transfer-encoding",
                "te",
                "upgrade",
                "expect",
                "authorization",
            ];
            if !hop.contains(&k.as_str()) {
                rb = rb.header(k.as_str(), v.as_str());
            }
        }
        match rb.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let content_type = resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("text/plain")
                    .to_string();
                match resp.bytes().await {
                    Ok(body) => Response {
                        status,
                        content_type,
                        body: body.to_vec(),
                    },
                    Err(e) => Response::text(502, format!("upstream body: {e}")),
                }
            }
            Err(e) => Response::text(502, format!("upstream: {e}")),
        }
    }
}

/// The paths of tenant 42 the exporter uses.
struct TenantPaths {
    import: String,
    export: String,
    query: String,
    delete: String,
}

impl TenantPaths {
    fn new() -> Self {
        TenantPaths {
            import: format!("/insert/{TENANT}/prometheus/api/v1/import/prometheus"),
            export: format!("/select/{TENANT}/prometheus/api/v1/export"),
            // The read-backs: count and sum per series, and a series' samples.
            query: format!("/select/{TENANT}/prometheus/api/v1/query"),
            delete: format!("/delete/{TENANT}/prometheus/api/v1/admin/tsdb/delete_series"),
        }
    }
}

/// The stand-in answers 400 off the cluster paths, 404 for another tenant
/// and 401 without the credentials; and 204 to a chunked import with them.
async fn assert_stand_in_refuses_what_a_cluster_refuses(cluster: &Cluster, paths: &TenantPaths) {
    let auth = basic_auth(USER, PASSWORD);
    for (base, path, auth, want) in [
        (
            &cluster.insert,
            "/api/v1/import/prometheus",
            auth.as_str(),
            400,
        ),
        (
            &cluster.insert,
            "/insert/0/prometheus/api/v1/import/prometheus",
            &auth,
            404,
        ),
        (&cluster.select, &paths.import, &auth, 400),
        (
            &cluster.insert,
            &paths.import,
            "Basic d3Jvbmc6d3Jvbmc=",
            401,
        ),
        (&cluster.insert, &paths.import, &auth, 204),
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\
             Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
             8\r\ncluster_\r\n8\r\nprobe 1\n\r\n0\r\n\r\n"
        );
        assert_eq!(raw_status(base, &request).await, want, "{path}");
    }
}

/// Sends a raw HTTP/1.1 request and returns the status of the answer.
async fn raw_status(base: &str, request: &str) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// Waits until the chunked probe's sample reads back whole through
/// vmselect's tenant path.
async fn assert_chunked_probe_stored(cluster: &Cluster, paths: &TenantPaths) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let probe = client()
            .get(format!("{}{}", cluster.select, paths.export))
            .basic_auth(USER, Some(PASSWORD))
            .query(&[("match[]", "cluster_probe")])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if probe.contains(r#""__name__":"cluster_probe""#) {
            assert!(probe.contains(r#""values":[1]"#), "{probe}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the chunked probe was not stored: {probe:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every request an export made went to the cluster path of the right
/// component and succeeded: imports, deletes, the cache reset and the
/// read-backs.
fn assert_only_the_exporters_paths(seen: &[Seen], paths: &TenantPaths) {
    let off = off_paths(
        seen,
        &[
            &paths.import,
            &paths.delete,
            RESET_PATH,
            &paths.query,
            &paths.export,
        ],
    );
    assert!(off.is_empty(), "requests off the cluster paths: {off:?}");
}

/// Requests seen that were not answered with success on one of `paths`
/// (each on its own component's port).
fn off_paths<'a>(seen: &'a [Seen], paths: &[&str]) -> Vec<&'a Seen> {
    seen.iter()
        .filter(|s| {
            let role = if s.path().starts_with("/insert/") {
                Role::Insert
            } else {
                Role::Select
            };
            !(s.role == role
                && (200..300).contains(&s.status)
                && paths.iter().any(|p| s.path() == *p))
        })
        .collect()
}

/// Requests seen on `role`'s port at `path` answered `status`, all POSTs.
fn count_in(seen: &[Seen], role: Role, path: &str, status: u16) -> usize {
    seen.iter()
        .filter(|s| s.role == role && s.path() == path && s.status == status)
        .inspect(|s| assert_eq!(s.method, "POST", "{s:?}"))
        .count()
}

// Reading through a cluster's paths.

/// The exporter's settings for tenant 42 of the cluster whose vminsert and
/// vmselect are at `insert` and `select`, on the PostgreSQL database at
/// `database_url`.
fn cluster_env(database_url: String, insert: &str, select: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url),
        (
            "VICTORIAMETRICS_URL",
            format!("{insert}/insert/{TENANT}/prometheus"),
        ),
        (
            "VICTORIAMETRICS_SELECT_URL",
            format!("{select}/select/{TENANT}/prometheus"),
        ),
        (
            "VICTORIAMETRICS_DELETE_URL",
            format!("{select}/delete/{TENANT}/prometheus"),
        ),
        ("VICTORIAMETRICS_USERNAME", USER.into()),
        ("VICTORIAMETRICS_PASSWORD", PASSWORD.into()),
    ]
}

/// The mirror is exact in the single node, and reading the tenant through
/// vmselect's path (a GET with a query string, as Grafana would) gives the
/// same.
async fn assert_mirror(servers: &Servers, cluster: &Cluster, before: i64, when: &str) {
    let direct = servers.vm.export_all().await;
    assert_exported(
        &servers.pool,
        &BTreeMap::new(),
        before,
        &from_export(direct.clone()),
        when,
    )
    .await;
    assert_eq!(
        from_export(export_through(&cluster.select).await),
        from_export(direct),
        "{when}: vmselect's tenant path reads what the single node holds"
    );
}

/// Every raw sample of the exporter's series, read from the vmselect at
/// `select` (its base URL) through tenant 42's path.
async fn export_through(select: &str) -> Export {
    let end = (chrono::Utc::now().timestamp() + 4 * 86400).to_string();
    let response = client()
        .get(format!("{select}/select/{TENANT}/prometheus/api/v1/export"))
        .basic_auth(USER, Some(PASSWORD))
        .query(&[
            ("match[]", "{__name__=~\"myelectricaldata_.*\"}"),
            ("end", end.as_str()),
        ])
        .send()
        .await
        .expect("export through vmselect");
    assert_eq!(response.status(), 200, "export through vmselect");
    parse_export(&response.text().await.unwrap())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

// A real cluster: VictoriaMetrics' own vmstorage, vminsert and vmselect.

/// The cluster binaries the real-cluster tests need on PATH.
const CLUSTER_BINARIES: [&str; 3] = ["vmstorage", "vminsert", "vmselect"];

/// The cluster binaries (vmstorage, vminsert, vmselect), or `None` after
/// printing one line saying that `test` is skipped and what it needs.
fn cluster_binaries(test: &str) -> Option<[PathBuf; 3]> {
    let found = CLUSTER_BINARIES.map(common::which);
    let missing: Vec<&str> = CLUSTER_BINARIES
        .iter()
        .zip(&found)
        .filter(|(_, path)| path.is_none())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        println!(
            "{test}: skipped: a real VictoriaMetrics cluster needs vmstorage, vminsert and vmselect on PATH (missing: {}; Debian packages none)",
            missing.join(", ")
        );
        return None;
    }
    Some(found.map(Option::unwrap))
}

/// A PostgreSQL with database `med` loaded with MyElectricalData's schema
/// and data, and a pool on it.
async fn loaded_postgres() -> (Postgres, PgPool) {
    let pg = Postgres::start();
    let pool = pg.create_db("med").await;
    sqlx::raw_sql(common::SCHEMA).execute(&pool).await.unwrap();
    sqlx::raw_sql(common::DATA).execute(&pool).await.unwrap();
    (pg, pool)
}

/// A process of the real cluster, killed when dropped.
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a log shows its process listening on `port` of 127.0.0.1 (the
/// HTTP server, vmstorage's vminsert and vmselect ports).
fn listening(log: &str, port: u16) -> bool {
    let addr = format!("127.0.0.1:{port}");
    log.lines().any(|l| {
        (l.contains("started") || l.contains("accepting"))
            && l.match_indices(&addr).any(|(i, _)| {
                !l[i + addr.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            })
    })
}

/// Starts `bin` with the flags `flags` gives for `ports` free ports (the
/// first its HTTP port), logging into `dir`, and waits until its log shows
/// it listening on each. Another test's server may take a port in between:
/// the process then exits, and starts again on other ports.
fn start_process(
    bin: &Path,
    dir: &Path,
    name: &str,
    ports: usize,
    flags: impl Fn(&[u16]) -> Vec<String>,
) -> (Process, Vec<u16>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    'start: loop {
        let mut p: Vec<u16> = Vec::new();
        while p.len() < ports {
            let port = common::free_port();
            if !p.contains(&port) {
                p.push(port);
            }
        }
        let log = dir.join(format!("{name}-{}.log", p[0]));
        let child = Command::new(bin)
            .args(flags(&p))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut process = Process { child };
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Ok(Some(status)) = process.child.try_wait() {
                assert!(
                    Instant::now() < deadline,
                    "{name} exited ({status}): {text}"
                );
                continue 'start;
            }
            if p.iter().all(|&port| listening(&text, port)) {
                return (process, p);
            }
            assert!(Instant::now() < deadline, "{name} did not start: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// vmselect's flags, on `nodes`, with `extra` ones.
fn select_flags(
    dir: &Path,
    name: &str,
    nodes: &[String],
    extra: &[&str],
) -> impl Fn(&[u16]) -> Vec<String> {
    let cache = dir.join(format!("{name}-cache"));
    let nodes = nodes.join(",");
    let extra: Vec<String> = extra.iter().map(|f| f.to_string()).collect();
    move |p: &[u16]| {
        let mut f = vec![
            format!("-httpListenAddr=127.0.0.1:{}", p[0]),
            format!("-storageNode={nodes}"),
            format!("-cacheDataPath={}", cache.display()),
            "-search.latencyOffset=0s".into(),
            format!("-httpAuth.username={USER}"),
            format!("-httpAuth.password={PASSWORD}"),
        ];
        f.extend(extra.iter().cloned());
        f
    }
}

/// Two vmstorage nodes keeping 100 years, a vminsert and a vmselect
/// replicating twice (vmselect deduplicating the replicas, or not: then it
/// shows every sample twice), behind basic authentication; and a vmselect
/// per vmstorage, without replication or deduplication, to read each
/// replica's raw samples.
struct RealCluster {
    /// vmstorage's HTTP base URLs.
    storages: Vec<String>,
    /// vminsert's base URL.
    insert: String,
    /// vmselect's base URL.
    select: String,
    /// A vmselect's base URL per vmstorage, in the same order.
    replicas: Vec<String>,
    /// Whether vmselect deduplicates (`-dedup.minScrapeInterval=1ms`).
    dedup: bool,
    /// Dropped before the directory: killed first.
    _processes: Vec<Process>,
    dir: tempfile::TempDir,
}

impl RealCluster {
    fn start([vmstorage, vminsert, vmselect]: &[PathBuf; 3], dedup: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("med-cluster-")
            .tempdir()
            .expect("temp dir");
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let mut processes = Vec::new();
        let (mut storages, mut insert_nodes, mut select_nodes) = (vec![], vec![], vec![]);
        for i in 0..2 {
            let data = dir.path().join(format!("vmstorage-{i}"));
            let (process, p) =
                start_process(vmstorage, dir.path(), &format!("vmstorage-{i}"), 3, |p| {
                    vec![
                        format!("-storageDataPath={}", data.display()),
                        format!("-httpListenAddr=127.0.0.1:{}", p[0]),
                        format!("-vminsertAddr=127.0.0.1:{}", p[1]),
                        format!("-vmselectAddr=127.0.0.1:{}", p[2]),
                        "-retentionPeriod=100y".into(),
                    ]
                });
            processes.push(process);
            storages.push(url(p[0]));
            insert_nodes.push(format!("127.0.0.1:{}", p[1]));
            select_nodes.push(format!("127.0.0.1:{}", p[2]));
        }
        let (process, p) = start_process(vminsert, dir.path(), "vminsert", 1, |p| {
            vec![
                format!("-httpListenAddr=127.0.0.1:{}", p[0]),
                format!("-storageNode={}", insert_nodes.join(",")),
                "-replicationFactor=2".into(),
                format!("-httpAuth.username={USER}"),
                format!("-httpAuth.password={PASSWORD}"),
            ]
        });
        processes.push(process);
        let insert = url(p[0]);
        let mut replicated = vec!["-replicationFactor=2"];
        if dedup {
            replicated.push("-dedup.minScrapeInterval=1ms");
        }
        let (process, p) = start_process(
            vmselect,
            dir.path(),
            "vmselect",
            1,
            select_flags(dir.path(), "vmselect", &select_nodes, &replicated),
        );
        processes.push(process);
        let select = url(p[0]);
        let mut replicas = Vec::new();
        for (i, node) in select_nodes.iter().enumerate() {
            let name = format!("vmselect-replica-{i}");
            let (process, p) = start_process(
                vmselect,
                dir.path(),
                &name,
                1,
                select_flags(dir.path(), &name, std::slice::from_ref(node), &[]),
            );
            processes.push(process);
            replicas.push(url(p[0]));
        }
        RealCluster {
            storages,
            insert,
            select,
            replicas,
            dedup,
            _processes: processes,
            dir,
        }
    }

    /// The exporter's settings for tenant 42 of this cluster, on the
    /// PostgreSQL database at `database_url`.
    fn env(&self, database_url: String) -> Vec<(&'static str, String)> {
        cluster_env(database_url, &self.insert, &self.select)
    }

    /// The end of every component's log, for failure messages.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                out.push_str(&format!("--- {name}\n"));
                for l in &lines[lines.len().saturating_sub(20)..] {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Makes what each vmstorage received searchable.
    async fn flush(&self) {
        for s in &self.storages {
            let status = client()
                .get(format!("{s}/internal/force_flush"))
                .send()
                .await
                .expect("force_flush")
                .status();
            assert!(status.is_success(), "force_flush on {s}: {status}");
        }
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the cluster's logs:\n{}", self.log_tails());
        }
    }
}

/// A component's own `/metrics` counter `name`, summed over the lines
/// containing `filter`.
async fn counter(base: &str, name: &str, filter: &str) -> f64 {
    let body = client()
        .get(format!("{base}/metrics"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .unwrap();
    sum_metric(&body, name, filter)
}

/// What vminsert and vmselect served so far, from their `/metrics`.
#[derive(Debug, Clone, Copy)]
struct Traffic {
    /// The import requests vminsert served.
    imports: f64,
    /// The rows vminsert took.
    rows: f64,
    /// The delete_series requests vmselect served.
    deletes: f64,
}

async fn traffic(cluster: &RealCluster) -> Traffic {
    Traffic {
        imports: counter(
            &cluster.insert,
            "vm_http_requests_total",
            "/insert/{}/prometheus/api/v1/import/prometheus",
        )
        .await,
        rows: counter(&cluster.insert, "vm_rows_inserted_total", "").await,
        deletes: counter(
            &cluster.select,
            "vm_http_requests_total",
            "/delete/{}/prometheus/api/v1/admin/tsdb/delete_series",
        )
        .await,
    }
}

/// A `once` through the real cluster, the mirror checked after it.
struct Pass {
    /// Just before and just after the `once`, Unix ms.
    before: i64,
    after: i64,
    /// The cluster's traffic before the `once`, and after the check.
    was: Traffic,
    now: Traffic,
}

/// Runs `once` with `env`, then asserts the cluster's mirror `when`.
async fn once_then_mirror(
    pool: &PgPool,
    cluster: &RealCluster,
    env: &[(&str, String)],
    when: &str,
) -> Pass {
    let before = chrono::Utc::now().timestamp_millis();
    let was = traffic(cluster).await;
    common::run_ok(&["once"], env);
    let after = chrono::Utc::now().timestamp_millis();
    assert_cluster_mirror(pool, cluster, before, when).await;
    let now = traffic(cluster).await;
    Pass {
        before,
        after,
        was,
        now,
    }
}

/// The mirror through vmselect is the spec's model as soon as the
/// exporter is done (every sample twice when vmselect does not
/// deduplicate); and each vmstorage holds exactly the model (vmselect's
/// deduplication would hide a duplicate sample), once vminsert has passed
/// on what it buffers.
async fn assert_cluster_mirror(pool: &PgPool, cluster: &RealCluster, before: i64, when: &str) {
    cluster.flush().await;
    let mut got = from_export(export_through(&cluster.select).await);
    if !cluster.dedup {
        got = halved(got, when);
    }
    assert_exported(pool, &BTreeMap::new(), before, &got, when).await;
    for (i, replica) in cluster.replicas.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            cluster.flush().await;
            let raw = from_export(export_through(replica).await);
            if raw == got {
                break;
            }
            if Instant::now() > deadline {
                assert_same(&raw, &got, &format!("{when}: vmstorage {i}'s raw samples"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// A mirror read through a vmselect that does not deduplicate two
/// replicas, with each sample once; panics unless every sample shows
/// exactly twice.
fn halved(mirror: Mirror, when: &str) -> Mirror {
    mirror
        .into_iter()
        .map(|(labels, samples)| {
            assert!(
                samples.len() % 2 == 0 && samples.chunks(2).all(|c| c[0] == c[1]),
                "{when}: vmselect without dedup shows {labels:?} other than twice: {samples:?}"
            );
            (labels, samples.into_iter().step_by(2).collect())
        })
        .collect()
}

/// Writes a sample of the new series `name` through vminsert, waits
/// `delay` ms, deletes the series through vmselect, and says 10 s later
/// whether it still shows through vmselect and each replica.
async fn write_then_delete(cluster: &RealCluster, name: &str, delay: u64) -> Vec<bool> {
    let http = client();
    let now = chrono::Utc::now().timestamp_millis();
    let status = http
        .post(format!(
            "{}/insert/{TENANT}/prometheus/api/v1/import/prometheus",
            cluster.insert
        ))
        .basic_auth(USER, Some(PASSWORD))
        .body(format!("{name}{{pdl=\"1\"}} 1 {now}\n"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204, "import");
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let status = http
        .post(format!(
            "{}/delete/{TENANT}/prometheus/api/v1/admin/tsdb/delete_series",
            cluster.select
        ))
        .basic_auth(USER, Some(PASSWORD))
        .form(&[("match[]", name)])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204, "delete_series");
    tokio::time::sleep(Duration::from_secs(10)).await;
    cluster.flush().await;
    let mut still = Vec::new();
    for base in std::iter::once(&cluster.select).chain(&cluster.replicas) {
        let body = http
            .get(format!("{base}/select/{TENANT}/prometheus/api/v1/export"))
            .basic_auth(USER, Some(PASSWORD))
            .query(&[("match[]", name)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        still.push(!body.trim().is_empty());
    }
    still
}
