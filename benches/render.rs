//! Micro-benchmarks of rendering: Prometheus text lines, series heads with
//! escaping, and one PDL's three years of 30-minute rows turned into series
//! and lines. `cargo bench --bench render` prints the figures; the README
//! quotes them.

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use myelectricaldata_vm_exporter::model::energy::{EnergyRow, PdlEnergy};
use myelectricaldata_vm_exporter::model::render::{series_head, write_line};
use myelectricaldata_vm_exporter::model::{Contract, Family, Report, Scale};
use std::hint::black_box;

const HEAD: &str =
    r#"myelectricaldata_consumption_wh{pdl="12345678901234",type="detailed",quality="BRUT"}"#;

fn lines(c: &mut Criterion) {
    let mut g = c.benchmark_group("write_line");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000 lines into a reused buffer", |b| {
        let mut buf = Vec::with_capacity(128 * 1000);
        b.iter(|| {
            buf.clear();
            for i in 0..1000i64 {
                write_line(
                    &mut buf,
                    black_box(HEAD),
                    100 + i % 900,
                    Scale::Milli,
                    1_705_273_200_000 + i * 1_800_000,
                );
            }
            black_box(buf.len())
        })
    });
    g.finish();
}

fn heads(c: &mut Criterion) {
    let mut g = c.benchmark_group("series_head");
    g.bench_function("plain labels", |b| {
        b.iter(|| {
            series_head(
                black_box("myelectricaldata_consumption_wh"),
                &[
                    ("pdl", "12345678901234"),
                    ("type", "detailed"),
                    ("quality", "BRUT"),
                ],
            )
        })
    });
    g.bench_function("labels needing escapes", |b| {
        b.iter(|| {
            series_head(
                black_box("myelectricaldata_consumption_wh"),
                &[
                    ("pdl", "12345678901234"),
                    ("home", "la \"maison\"\\\nà Paris"),
                ],
            )
        })
    });
    g.finish();
}

/// One PDL's three years of 30-minute rows: pushed, turned into series
/// (daylight saving, dedup, monthly sums) and rendered as lines.
fn pdl_years(c: &mut Criterion) {
    let times: Vec<String> = (0..48)
        .map(|i| format!("{:02}:{:02}", i / 2, (i % 2) * 30))
        .collect();
    let dates: Vec<chrono::NaiveDate> = chrono::NaiveDate::from_ymd_opt(2023, 1, 1)
        .expect("a date")
        .iter_days()
        .take(3 * 365)
        .collect();
    let rows = (dates.len() * times.len()) as u64;
    let contract = Contract::new(
        chrono_tz::Europe::Paris,
        &BTreeMap::new(),
        1_800_000_000_000,
    );
    let mut g = c.benchmark_group("one PDL, 3 years of 30-minute rows");
    g.throughput(Throughput::Elements(rows));
    g.sample_size(20);
    g.bench_function("rows to series to lines", |b| {
        b.iter_batched(
            Vec::<u8>::new,
            |mut buf| {
                let mut report = Report::default();
                let mut pdl = PdlEnergy::new(Family::Consumption, "12345678901234");
                for (d, date) in dates.iter().enumerate() {
                    for (t, time) in times.iter().enumerate() {
                        let row = EnergyRow {
                            id: "row",
                            pdl: "12345678901234",
                            date: Some(*date),
                            granularity: "detailed",
                            interval_start: Some(time),
                            value: ((d * 13 + t * 7) % 900) as i64,
                            quality: None,
                            updated_at: None,
                            interval: Some("PT30M"),
                            placeholder: false,
                        };
                        pdl.push(&contract, row, &mut report);
                    }
                }
                for series in pdl.finish(&contract, &mut report) {
                    for s in &series.samples {
                        write_line(&mut buf, &series.head, s.value, series.scale, s.ts);
                    }
                }
                black_box(buf.len())
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, lines, heads, pdl_years);
criterion_main!(benches);
