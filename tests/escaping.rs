//! Label values as the exporter escapes them, read back by another parser
//! of the Prometheus text format: VictoriaMetrics itself. A few hundred
//! generated values (arbitrary Unicode, and the characters that need
//! escaping or could end a label early) go in one import; each comes back
//! from `/api/v1/export` byte for byte.

mod common;

use std::collections::BTreeMap;

use myelectricaldata_vm_exporter::model::render::{series_head, write_line};
use myelectricaldata_vm_exporter::model::Scale;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};

use common::Victoria;

/// How many values go in the one import.
const VALUES: usize = 400;

#[tokio::test]
async fn generated_label_values_come_back_from_victoriametrics_byte_for_byte() {
    let strategy = proptest::prop_oneof![
        proptest::prelude::any::<String>(),
        "[\\\\\"\n\r\t{}=, #a-z\u{e9}\u{2028}]{0,20}",
    ];
    // The same values on every run: a failure is one to look at again.
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let mut values: Vec<String> = (0..VALUES)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    // The characters one at a time too, and the empty value (left out).
    values.extend(["\\", "\"", "\n", "\r", "\\n", "\\\"", "}", "\"}", ""].map(String::from));

    let ts = 1_700_000_000_000;
    let mut body = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let i = i.to_string();
        let head = series_head("escaping_test", &[("i", &i), ("v", v)]);
        write_line(&mut body, &head, 1, Scale::Milli, ts);
    }

    let vm = Victoria::start();
    let client = reqwest::Client::new();
    let status = client
        .post(format!("{}/api/v1/import/prometheus", vm.url))
        .body(body)
        .send()
        .await
        .expect("import")
        .status();
    assert!(status.is_success(), "import answered {status}");
    client
        .get(format!("{}/internal/force_flush", vm.url))
        .send()
        .await
        .expect("force_flush");
    let export = client
        .post(format!("{}/api/v1/export", vm.url))
        .form(&[("match[]", "{__name__=\"escaping_test\"}"), ("start", "0")])
        .send()
        .await
        .expect("export")
        .text()
        .await
        .unwrap();
    let got: BTreeMap<usize, String> = export
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("an export line is JSON");
            let metric = &v["metric"];
            let i = metric["i"].as_str().expect("the i label").parse().unwrap();
            let value = metric["v"].as_str().unwrap_or_default().to_string();
            (i, value)
        })
        .collect();
    assert_eq!(got.len(), values.len(), "one series a value");
    let mut wrong = Vec::new();
    for (i, want) in values.iter().enumerate() {
        match got.get(&i) {
            Some(v) if v == want => {}
            other => wrong.push(format!("{i}: wrote {want:?}, read {other:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} values did not come back:\n{}",
        wrong.len(),
        values.len(),
        wrong.join("\n")
    );
}
