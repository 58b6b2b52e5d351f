//! The rendered text and the health state machine, through the public API.

use super::*;

#[test]
fn metrics_render_as_openmetrics_text_with_every_error_kind() {
    let t = Telemetry::new();
    t.batch_sent(100);
    t.batch_sent(20);
    t.error(ErrorKind::Server);
    let text = t.render(SystemTime::now());
    assert!(text.contains("myelectricaldata_exporter_samples_sent_total 120\n"));
    assert!(text.contains("myelectricaldata_exporter_batches_sent_total 2\n"));
    assert!(text.contains("myelectricaldata_exporter_errors_total{kind=\"server\"} 1\n"));
    assert!(text.contains("myelectricaldata_exporter_errors_total{kind=\"postgres\"} 0\n"));
    assert!(
        text.contains("myelectricaldata_exporter_rows_skipped_total{table=\"consumption_data\"} 0")
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').expect("name value");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[test]
fn skipped_rows_count_under_their_own_table_or_their_familys() {
    let t = Telemetry::new();
    t.rows_skipped(Family::Consumption, "contract_data", 1);
    t.rows_skipped(Family::Consumption, "pdls", 1);
    t.rows_skipped(Family::Consumption, "consumption_data", 1);
    t.rows_skipped(Family::Tempo, "(several rows)", 1);
    let text = t.render(SystemTime::now());
    for (table, n) in [
        ("consumption_data", 1),
        ("contract_data", 1),
        ("pdls", 1),
        ("tempo_days", 1),
        ("production_data", 0),
    ] {
        assert!(
            text.contains(&format!(
                "myelectricaldata_exporter_rows_skipped_total{{table=\"{table}\"}} {n}\n"
            )),
            "{table}: {text}"
        );
    }
}

#[test]
fn lag_is_zero_in_sync_and_grows_from_the_last_sync_otherwise() {
    let t = Telemetry::new();
    let read = SystemTime::now();
    t.cycle_succeeded(read, true);
    assert_eq!(t.lag(read + Duration::from_secs(50)), Duration::ZERO);
    t.cycle_failed(&"VictoriaMetrics: cannot connect");
    assert_eq!(
        t.lag(read + Duration::from_secs(50)),
        Duration::from_secs(50)
    );
    t.cycle_succeeded(read + Duration::from_secs(60), false);
    assert_eq!(
        t.lag(read + Duration::from_secs(70)),
        Duration::from_secs(70)
    );
}

#[test]
fn health_fails_only_after_failing_for_longer_than_the_grace() {
    let t = Telemetry::new();
    t.set_role(Role::Active);
    let now = SystemTime::now();
    assert!(t.health(now, Duration::from_secs(300)).ok);
    t.cycle_failed(&"VictoriaMetrics: HTTP 503");
    assert!(t.health(now, Duration::from_secs(300)).ok);
    let later = t.health(now + Duration::from_secs(301), Duration::from_secs(300));
    assert!(!later.ok);
    assert!(later.text.contains("HTTP 503"), "{}", later.text);
    t.set_role(Role::Disabled);
    assert!(
        t.health(now + Duration::from_secs(301), Duration::from_secs(300))
            .ok
    );
    t.set_role(Role::Active);
    t.cycle_succeeded(now, true);
    assert!(
        t.health(now + Duration::from_secs(301), Duration::from_secs(300))
            .ok
    );
}

/// The families served, each with its type and the sample lines a
/// fresh set serves (the values aside).
const SERVED: &[(&str, &str, &[&str])] = &[
    (
        "myelectricaldata_exporter_up",
        "gauge",
        &["myelectricaldata_exporter_up"],
    ),
    (
        "myelectricaldata_exporter_start_time_seconds",
        "gauge",
        &["myelectricaldata_exporter_start_time_seconds"],
    ),
    (
        "myelectricaldata_exporter_samples_sent",
        "counter",
        &["myelectricaldata_exporter_samples_sent_total"],
    ),
    (
        "myelectricaldata_exporter_batches_sent",
        "counter",
        &["myelectricaldata_exporter_batches_sent_total"],
    ),
    (
        "myelectricaldata_exporter_retries",
        "counter",
        &["myelectricaldata_exporter_retries_total"],
    ),
    (
        "myelectricaldata_exporter_series_rewritten",
        "counter",
        &["myelectricaldata_exporter_series_rewritten_total"],
    ),
    (
        "myelectricaldata_exporter_series_appended",
        "counter",
        &["myelectricaldata_exporter_series_appended_total"],
    ),
    (
        "myelectricaldata_exporter_series_deleted",
        "counter",
        &["myelectricaldata_exporter_series_deleted_total"],
    ),
    (
        "myelectricaldata_exporter_series_rejected",
        "counter",
        &["myelectricaldata_exporter_series_rejected_total"],
    ),
    (
        "myelectricaldata_exporter_verifications",
        "counter",
        &["myelectricaldata_exporter_verifications_total"],
    ),
    (
        "myelectricaldata_exporter_series_verified",
        "counter",
        &["myelectricaldata_exporter_series_verified_total"],
    ),
    (
        "myelectricaldata_exporter_series_repaired",
        "counter",
        &["myelectricaldata_exporter_series_repaired_total"],
    ),
    (
        "myelectricaldata_exporter_samples_missing",
        "counter",
        &["myelectricaldata_exporter_samples_missing_total"],
    ),
    (
        "myelectricaldata_exporter_samples_extra",
        "counter",
        &["myelectricaldata_exporter_samples_extra_total"],
    ),
    (
        "myelectricaldata_exporter_errors",
        "counter",
        &[
            "myelectricaldata_exporter_errors_total{kind=\"timeout\"}",
            "myelectricaldata_exporter_errors_total{kind=\"connect\"}",
            "myelectricaldata_exporter_errors_total{kind=\"connection\"}",
            "myelectricaldata_exporter_errors_total{kind=\"throttled\"}",
            "myelectricaldata_exporter_errors_total{kind=\"server\"}",
            "myelectricaldata_exporter_errors_total{kind=\"auth\"}",
            "myelectricaldata_exporter_errors_total{kind=\"rejected\"}",
            "myelectricaldata_exporter_errors_total{kind=\"postgres\"}",
        ],
    ),
    (
        "myelectricaldata_exporter_rows_skipped",
        "counter",
        &[
            "myelectricaldata_exporter_rows_skipped_total{table=\"consumption_data\"}",
            "myelectricaldata_exporter_rows_skipped_total{table=\"production_data\"}",
            "myelectricaldata_exporter_rows_skipped_total{table=\"tempo_days\"}",
            "myelectricaldata_exporter_rows_skipped_total{table=\"ecowatt\"}",
            "myelectricaldata_exporter_rows_skipped_total{table=\"max_power_data\"}",
            "myelectricaldata_exporter_rows_skipped_total{table=\"zen_flex_days\"}",
            "myelectricaldata_exporter_rows_skipped_total{table=\"contract_data\"}",
            "myelectricaldata_exporter_rows_skipped_total{table=\"pdls\"}",
        ],
    ),
    (
        "myelectricaldata_exporter_cycles",
        "counter",
        &[
            "myelectricaldata_exporter_cycles_total{result=\"success\"}",
            "myelectricaldata_exporter_cycles_total{result=\"failure\"}",
        ],
    ),
    (
        "myelectricaldata_exporter_last_success_timestamp_seconds",
        "gauge",
        &["myelectricaldata_exporter_last_success_timestamp_seconds"],
    ),
    (
        "myelectricaldata_exporter_last_verified_timestamp_seconds",
        "gauge",
        &["myelectricaldata_exporter_last_verified_timestamp_seconds"],
    ),
    (
        "myelectricaldata_exporter_lag_seconds",
        "gauge",
        &["myelectricaldata_exporter_lag_seconds"],
    ),
    (
        "myelectricaldata_exporter_replication_without_dedup",
        "gauge",
        &["myelectricaldata_exporter_replication_without_dedup"],
    ),
    (
        "myelectricaldata_exporter_export_lock_held",
        "gauge",
        &["myelectricaldata_exporter_export_lock_held"],
    ),
    (
        "process_resident_memory_bytes",
        "gauge",
        &["process_resident_memory_bytes"],
    ),
];

/// The value of the sample line `name` (labels included) in `text`.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_metric_is_served_under_its_name_with_its_type_help_and_labels() {
    let text = Telemetry::new().render(SystemTime::now());
    for (family, kind, samples) in SERVED {
        assert!(
            text.contains(&format!("\n# TYPE {family} {kind}\n")),
            "{family} {kind}: {text}"
        );
        let help = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# HELP {family} ")))
            .unwrap_or_else(|| panic!("{family} has no help: {text}"));
        assert!(help.len() > 10 && !help.ends_with(".."), "{family}: {help}");
        for sample in *samples {
            assert!(value(&text, sample).is_some(), "{sample}: {text}");
        }
    }
    let samples: usize = SERVED.iter().map(|(_, _, s)| s.len()).sum();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), samples, "{text}");
    assert!(!text.contains("_total_total"), "{text}");
}

#[test]
fn the_text_is_openmetrics_with_units_declared_and_ends_with_eof() {
    let text = Telemetry::new().render(SystemTime::now());
    assert!(text.ends_with("\n# EOF\n"), "{text}");
    for (family, unit) in [
        ("myelectricaldata_exporter_start_time_seconds", "seconds"),
        (
            "myelectricaldata_exporter_last_success_timestamp_seconds",
            "seconds",
        ),
        (
            "myelectricaldata_exporter_last_verified_timestamp_seconds",
            "seconds",
        ),
        ("myelectricaldata_exporter_lag_seconds", "seconds"),
        ("process_resident_memory_bytes", "bytes"),
    ] {
        assert!(
            text.contains(&format!("\n# UNIT {family} {unit}\n")),
            "{family}: {text}"
        );
    }
    assert!(CONTENT_TYPE.starts_with("application/openmetrics-text; version=1.0.0"));
}

#[test]
fn a_pass_adds_its_counts_to_the_series_counters() {
    let t = Telemetry::new();
    let counts = PassCounts {
        rewritten: 1,
        appended: 2,
        deleted: 3,
        rejected: 4,
        read_back: true,
        verified: 5,
        repaired: 6,
        samples_missing: 7,
        samples_extra: 8,
    };
    t.pass(&counts);
    t.pass(&PassCounts {
        read_back: false,
        ..counts
    });
    let text = t.render(SystemTime::now());
    for (name, n) in [
        ("series_rewritten", 2.0),
        ("series_appended", 4.0),
        ("series_deleted", 6.0),
        ("series_rejected", 8.0),
        ("verifications", 1.0),
        ("series_verified", 10.0),
        ("series_repaired", 12.0),
        ("samples_missing", 14.0),
        ("samples_extra", 16.0),
    ] {
        let sample = format!("myelectricaldata_exporter_{name}_total");
        assert_eq!(value(&text, &sample), Some(n), "{sample}: {text}");
    }
}

#[test]
fn cycles_count_by_result_and_the_gauges_follow_the_state() {
    let t = Telemetry::new();
    let text = t.render(SystemTime::now());
    assert_eq!(value(&text, "myelectricaldata_exporter_up"), Some(1.0));
    assert_eq!(
        value(
            &text,
            "myelectricaldata_exporter_last_success_timestamp_seconds"
        ),
        Some(0.0)
    );
    assert!(value(&text, "myelectricaldata_exporter_start_time_seconds").unwrap() > 1.6e9);

    t.set_role(Role::Active);
    let read = SystemTime::now();
    t.cycle_succeeded(read, true);
    t.cycle_failed(&"VictoriaMetrics: HTTP 503");
    t.cycle_failed(&"VictoriaMetrics: HTTP 503");
    t.verified(UNIX_EPOCH + Duration::from_millis(1_700_000_000_250));
    let text = t.render(read + Duration::from_secs(42));
    let cycles = |result: &str| {
        value(
            &text,
            &format!("myelectricaldata_exporter_cycles_total{{result=\"{result}\"}}"),
        )
    };
    assert_eq!(cycles("success"), Some(1.0));
    assert_eq!(cycles("failure"), Some(2.0));
    assert_eq!(
        value(&text, "myelectricaldata_exporter_export_lock_held"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "myelectricaldata_exporter_lag_seconds"),
        Some(42.0)
    );
    assert_eq!(
        value(
            &text,
            "myelectricaldata_exporter_last_verified_timestamp_seconds"
        ),
        Some(1_700_000_000.25)
    );
    assert!(
        value(
            &text,
            "myelectricaldata_exporter_last_success_timestamp_seconds"
        )
        .unwrap()
            > 1.6e9
    );

    t.set_role(Role::Standby);
    let text = t.render(SystemTime::now());
    assert_eq!(
        value(&text, "myelectricaldata_exporter_export_lock_held"),
        Some(0.0)
    );
}

#[test]
fn doubling_is_news_once_and_served_as_a_gauge_while_it_lasts() {
    let t = Telemetry::new();
    let served = |t: &Telemetry| {
        value(
            &t.render(SystemTime::now()),
            "myelectricaldata_exporter_replication_without_dedup",
        )
    };
    assert_eq!(served(&t), Some(0.0));
    assert!(t.doubled(true));
    assert!(!t.doubled(true));
    assert_eq!(served(&t), Some(1.0));
    assert!(!t.doubled(false));
    assert_eq!(served(&t), Some(0.0));
    assert!(t.doubled(true));
}

#[test]
fn request_failures_count_against_health_until_a_request_succeeds() {
    let t = Telemetry::new();
    t.set_role(Role::Standby);
    let now = SystemTime::now();
    let grace = Duration::from_secs(5);
    t.request_failed(&"VictoriaMetrics: connection refused");
    t.error(ErrorKind::Connect);
    let h = t.health(now + Duration::from_secs(10), grace);
    assert!(!h.ok);
    assert!(
        h.text.starts_with("exports failing for ") && h.text.ends_with("connection refused"),
        "{}",
        h.text
    );
    t.request_succeeded();
    let h = t.health(now + Duration::from_secs(10), grace);
    assert_eq!(
        h.text,
        "ok: standing by (another exporter holds the export lock)"
    );
    assert_eq!(
        value(
            &t.render(now),
            "myelectricaldata_exporter_errors_total{kind=\"connect\"}"
        ),
        Some(1.0)
    );
}
