//! An upgrade over a mirror that an older release made: before the
//! daylight-saving fix (SPEC §2), load-curve rows were stamped at their
//! label read with `fold=0`, an hour off on the days the clocks change. The
//! first pass of the new release moves exactly those series, and nothing
//! else; the next writes nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::model::{
    assert_exported, assert_same, expected, expected_legacy, from_export, released,
};
use common::Servers;
use myelectricaldata_vm_exporter::model::LEGACY_LABEL_TIMES_VAR;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn an_upgrade_moves_the_daylight_saving_days_in_place_and_writes_nothing_else() {
    let servers = Servers::start().await;
    let (vm, pool) = (&servers.vm, &servers.pool);
    let none = BTreeMap::new();

    // The mirror an older release left: the exporter's tables and
    // VictoriaMetrics agree on the old instants.
    let old_env = servers.env(&[(LEGACY_LABEL_TIMES_VAR, "1")]);
    let before = now_ms();
    common::run_ok(&["once"], &old_env);
    let old = expected_legacy(pool, &none, before).await;
    assert_same(
        &from_export(vm.export_all().await),
        &old,
        "the mirror of the older release",
    );

    // What moves: the series whose samples differ under the two rules.
    let new = expected(pool, &none, before).await;
    let moved: BTreeSet<_> = new
        .iter()
        .filter(|(labels, samples)| old.get(*labels) != Some(*samples))
        .map(|(labels, _)| labels.clone())
        .collect();
    let names: BTreeSet<&str> = moved.iter().map(|l| l["__name__"].as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "myelectricaldata_consumption_power_w",
            "myelectricaldata_consumption_wh",
            "myelectricaldata_production_power_w",
            "myelectricaldata_production_wh",
        ]),
        "only the load curves move"
    );
    assert!(moved.iter().all(|l| l["type"] == "detailed"));
    let moved_samples: usize = moved.iter().map(|l| new[l].len()).sum();

    // The upgrade's first pass rewrites those series, whole, and nothing else.
    let e = servers.env(&[]);
    let inserted = vm.rows_inserted().await;
    let from = now_ms();
    let out = common::run_ok(&["once"], &e);
    let written = (vm.rows_inserted().await - inserted) as usize;
    let allowed = released(pool, &none, before, now_ms()).await as usize;
    assert!(
        (moved_samples..=moved_samples + allowed).contains(&written),
        "the upgrade wrote {written} samples; the {} series that move hold {moved_samples} \
         ({allowed} EcoWatt samples released meanwhile)\n{out}",
        moved.len()
    );
    assert_exported(
        pool,
        &none,
        from,
        &from_export(vm.export_all().await),
        "after the upgrade's first pass",
    )
    .await;

    // The next pass writes nothing.
    let inserted = vm.rows_inserted().await;
    common::run_ok(&["once"], &e);
    let written = vm.rows_inserted().await - inserted;
    let allowed = released(pool, &none, from, now_ms()).await;
    assert!(
        written <= allowed,
        "the pass after the upgrade wrote {written} rows ({allowed} released)"
    );
}
