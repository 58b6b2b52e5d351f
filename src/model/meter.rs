//! `myelectricaldata_pdl_info` (SPEC §3, "The meter"): what MyElectricalData
//! records of each meter now, one sample per PDL at its latest reading's
//! day, so that dashboards name a PDL and highlight its own option.

use chrono::NaiveDate;

use super::costs::KvaBook;
use super::metric::PDL_INFO;
use super::{is_pdl, Contract, Report, Sample, Scale, Series};
use crate::model::calendar::day_millis;

/// A PDL with rows in `consumption_data` or `production_data`, and what
/// `pdls` records of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterRecord {
    /// `usage_point_id`.
    pub pdl: String,
    /// The latest `date` among its rows that are not placeholders.
    pub latest: Option<NaiveDate>,
    /// `pdls.name`.
    pub name: Option<String>,
    /// `pdls.pricing_option`, as the client writes it.
    pub option: Option<String>,
    /// The `usage_point_id` of the `pdls` row `linked_production_pdl_id`
    /// names.
    pub production_pdl: Option<String>,
}

/// The labels that some `pdl_info` series lack (left out when empty):
/// their selectors pin them to empty.
const PINS: [&str; 2] = ["option", "production_pdl"];

/// One series per PDL with a reading: 1 at 00:00 of its latest reading's
/// day, labelled with its name (its number when none is recorded), its
/// option, the power its costs are priced at and its production meter.
pub fn meter_series(
    contract: &Contract,
    records: &[MeterRecord],
    kva: &KvaBook,
    report: &mut Report,
) -> Vec<Series> {
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        // A PDL that is no PDL is reported by its energy family.
        let (Some(latest), true) = (record.latest, is_pdl(&record.pdl)) else {
            continue;
        };
        let text = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let name = text(&record.name).unwrap_or_else(|| record.pdl.clone());
        let power = kva.for_pdl(&record.pdl).0.to_string();
        let mut labels = vec![("pdl", record.pdl.as_str()), ("name", name.as_str())];
        let option = text(&record.option);
        if let Some(o) = &option {
            labels.push(("option", o));
        }
        labels.push(("kva", &power));
        let production = text(&record.production_pdl);
        if let Some(p) = &production {
            labels.push(("production_pdl", p));
        }
        let sample = Sample::whole(day_millis(contract.tz, latest), 1);
        out.extend(contract.series_in(
            PDL_INFO,
            &labels,
            &PINS,
            Scale::Milli,
            vec![sample],
            report,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> Contract {
        Contract::new(chrono_tz::Europe::Paris, &Default::default(), i64::MAX / 2)
    }

    fn record(pdl: &str) -> MeterRecord {
        MeterRecord {
            pdl: pdl.into(),
            latest: NaiveDate::from_ymd_opt(2024, 11, 9),
            ..Default::default()
        }
    }

    #[test]
    fn a_meter_is_named_by_pdls_and_dated_by_its_latest_reading() {
        let records = [
            MeterRecord {
                name: Some("Maison".into()),
                option: Some("TEMPO".into()),
                production_pdl: Some("98765432109876".into()),
                ..record("12345678901234")
            },
            // No pdls row: its number for a name, no option, no
            // production meter, the default power.
            record("98765432109876"),
        ];
        let kva = KvaBook::new(
            None,
            &[("12345678901234".into(), 9)],
            &mut Report::default(),
        );
        let series = meter_series(&contract(), &records, &kva, &mut Report::default());
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].head,
            r#"myelectricaldata_pdl_info{pdl="12345678901234",name="Maison",option="TEMPO",kva="9",production_pdl="98765432109876"}"#
        );
        // 9 November 2024, 00:00 in Paris.
        assert_eq!(series[0].samples, [Sample::whole(1_731_106_800_000, 1)]);
        assert_eq!(
            series[1].head,
            r#"myelectricaldata_pdl_info{pdl="98765432109876",name="98765432109876",kva="6"}"#
        );
        assert!(
            series[1].selector.contains(r#"option="""#),
            "{}",
            series[1].selector
        );
    }

    #[test]
    fn a_meter_without_a_reading_or_a_pdl_that_is_none_has_no_series() {
        let records = [
            MeterRecord {
                latest: None,
                ..record("12345678901234")
            },
            record("1234"),
            MeterRecord {
                name: Some("  ".into()),
                option: Some(String::new()),
                ..record("12345678901235")
            },
        ];
        let series = meter_series(
            &contract(),
            &records,
            &KvaBook::default(),
            &mut Report::default(),
        );
        assert_eq!(series.len(), 1);
        assert_eq!(
            series[0].head,
            r#"myelectricaldata_pdl_info{pdl="12345678901235",name="12345678901235",kva="6"}"#
        );
    }
}
