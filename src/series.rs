//! A family's series, read from the source and computed by the contract,
//! in groups small enough to hold in memory.

use crate::config::Config;
use crate::model::costs::{price_series, KvaBook};
use crate::model::ecowatt::ecowatt_series;
use crate::model::energy::EnergyRow;
use crate::model::energy::PdlEnergy;
use crate::model::max_power::max_power_series;
use crate::model::meter::meter_series;
use crate::model::render::write_line;
use crate::model::tariff::{OffPeakBook, PdlTariff, TariffInputs};
use crate::model::tempo::{tempo_days, tempo_series, TempoRow};
use crate::model::zen_flex::zen_flex_series;
use crate::model::{is_pdl, Contract, Family, Report, Series, Skips};
use crate::source::{EnergyDecoder, EnergyRows, Source, SourceError};

/// A group of series the reader yields.
#[derive(Debug, Default)]
pub struct Group {
    /// The series.
    pub series: Vec<Series>,
    /// The PDL whose rows of an energy table gave them all, every row of it
    /// read, with what its rows skipped and held back: what the state may
    /// record as read (`state::reads`). `None` for other groups.
    pub settled: Option<(String, Skips)>,
}

impl From<Vec<Series>> for Group {
    fn from(series: Vec<Series>) -> Self {
        Group {
            series,
            settled: None,
        }
    }
}

/// Yields a family's series: one PDL's energy or Tempo series at a time, or
/// all series of a smaller family at once (a few thousand samples).
pub struct SeriesReader<'s> {
    source: &'s Source,
    family: Family,
    /// For an energy family, read only these PDLs' rows.
    only: Option<Vec<String>>,
    rows: Option<EnergyRows>,
    decoder: EnergyDecoder,
    current: Option<PdlRows>,
    /// The colours and off-peak hours the consumption family's tariff
    /// periods need, read before its rows (`None` for production).
    tariff: Option<TariffInputs>,
    /// The Tempo calendar and the PDLs still to give its series.
    tempo: Option<(Vec<TempoRow>, std::vec::IntoIter<String>)>,
    done: bool,
    rows_read: u64,
}

/// One PDL's rows being collected: its energy series, and for consumption
/// the tariff periods of its load curve, from the same rows (one read of
/// the table for both).
struct PdlRows {
    energy: PdlEnergy,
    tariff: Option<PdlTariff>,
    /// What this PDL's rows skipped and held back, apart from the others'
    /// so that its record says what is its own.
    report: Report,
}

impl PdlRows {
    fn new(family: Family, pdl: &str) -> Self {
        Self {
            energy: PdlEnergy::new(family, pdl),
            tariff: (family == Family::Consumption).then(|| PdlTariff::new(pdl)),
            report: Report::default(),
        }
    }

    /// Adds a row; the load-curve intervals the energy series accept feed
    /// the tariff periods, so that both judge a row alike.
    fn push(&mut self, contract: &Contract, inputs: Option<&TariffInputs>, row: EnergyRow<'_>) {
        let interval = self.energy.push(contract, row, &mut self.report);
        if let (Some(t), Some(inputs), Some(interval)) = (self.tariff.as_mut(), inputs, interval) {
            t.push(contract, inputs, &interval);
        }
    }

    /// The PDL's series; what it skipped and held back goes to `report`
    /// too.
    fn finish(
        mut self,
        contract: &Contract,
        inputs: Option<&TariffInputs>,
        report: &mut Report,
    ) -> Group {
        let pdl = self.energy.pdl().to_string();
        let mut series = self.energy.finish(contract, &mut self.report);
        if let (Some(t), Some(inputs)) = (self.tariff, inputs) {
            series.extend(t.finish(contract, inputs, &mut self.report));
        }
        let skips = self.report.skips();
        report.absorb(self.report);
        Group {
            series,
            settled: Some((pdl, skips)),
        }
    }
}

impl<'s> SeriesReader<'s> {
    /// A reader of `family`'s series.
    pub fn new(source: &'s Source, family: Family) -> Self {
        Self {
            source,
            family,
            only: None,
            rows: None,
            decoder: EnergyDecoder::default(),
            current: None,
            tariff: None,
            tempo: None,
            done: false,
            rows_read: 0,
        }
    }

    /// Reads only these PDLs' rows of an energy family (none when empty).
    pub fn only(mut self, pdls: Option<Vec<String>>) -> Self {
        self.only = pdls;
        self
    }

    /// Rows read so far.
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// The next group of series, or `None` at the end.
    pub async fn next(
        &mut self,
        contract: &Contract,
        report: &mut Report,
    ) -> Result<Option<Group>, SourceError> {
        if self.done {
            return Ok(None);
        }
        match self.family {
            Family::Consumption | Family::Production => {
                let (family, source) = (self.family, self.source);
                if family == Family::Consumption && self.tariff.is_none() {
                    self.tariff = Some(self.tariff_inputs(contract, report).await?);
                }
                let tariff = self.tariff.as_ref();
                let only = self.only.as_deref();
                let rows = match only {
                    // Nothing to read: no query.
                    Some([]) => None,
                    _ => Some(
                        self.rows
                            .get_or_insert_with(|| source.energy_rows(family, only)),
                    ),
                };
                if let Some(rows) = rows {
                    while let Some(line) = rows.next().await? {
                        self.rows_read += 1;
                        let row = self.decoder.energy_row(&line, family)?;
                        // The previous PDL is finished before this row is
                        // looked at, so that what it reports is its own.
                        let finished = match &self.current {
                            Some(p) if p.energy.pdl() != row.pdl => self
                                .current
                                .take()
                                .map(|done| done.finish(contract, tariff, report)),
                            _ => None,
                        };
                        self.current
                            .get_or_insert_with(|| PdlRows::new(family, row.pdl))
                            .push(contract, tariff, row);
                        if finished.is_some() {
                            return Ok(finished);
                        }
                    }
                }
                if let Some(last) = self.current.take() {
                    return Ok(Some(last.finish(contract, tariff, report)));
                }
                self.done = true;
                // The grid the costs were priced with, after the last PDL.
                Ok((family == Family::Consumption)
                    .then(|| price_series(contract, &contract.prices, report).into()))
            }
            Family::Tempo => {
                // One PDL's series at a time: the same calendar for each,
                // so that a thousand meters' years are never held at once.
                // A bad row is reported with the first PDL only.
                let mut scratch = Report::default();
                let report = match self.tempo {
                    Some(_) => &mut scratch,
                    None => report,
                };
                if self.tempo.is_none() {
                    let rows = self.source.tempo_rows().await?;
                    self.rows_read = rows.len() as u64;
                    let pdls: Vec<String> = self
                        .source
                        .consumption_pdls()
                        .await?
                        .into_iter()
                        .filter(|p| is_pdl(p))
                        .collect();
                    if pdls.is_empty() {
                        // No PDL to give series to: its bad rows are still told.
                        tempo_days(&rows, report);
                    }
                    self.tempo = Some((rows, pdls.into_iter()));
                }
                let Some((rows, pdls)) = self.tempo.as_mut() else {
                    return Ok(None);
                };
                match pdls.next() {
                    Some(pdl) => Ok(Some(tempo_series(contract, rows, &[pdl], report).into())),
                    None => {
                        self.done = true;
                        Ok(None)
                    }
                }
            }
            Family::Ecowatt => {
                self.done = true;
                let rows = self.source.ecowatt_rows().await?;
                self.rows_read = rows.len() as u64;
                Ok(Some(ecowatt_series(contract, &rows, report).into()))
            }
            Family::MaxPower => {
                self.done = true;
                let rows = self.source.max_power_rows().await?;
                self.rows_read = rows.len() as u64;
                Ok(Some(max_power_series(contract, &rows, report).into()))
            }
            Family::ZenFlex => {
                self.done = true;
                let rows = self.source.zen_flex_rows().await?;
                self.rows_read = rows.len() as u64;
                Ok(Some(zen_flex_series(contract, &rows, report).into()))
            }
            Family::Meter => {
                self.done = true;
                let records = self.source.meter_records().await?;
                self.rows_read = records.len() as u64;
                // A bad power is reported by the consumption family.
                let powers = self.source.subscribed_powers().await?;
                let kva = KvaBook::new(contract.subscribed_kva, &powers, &mut Report::default());
                Ok(Some(meter_series(contract, &records, &kva, report).into()))
            }
        }
    }
}

impl SeriesReader<'_> {
    /// The colours and off-peak hours a tariff pass needs; what cannot be
    /// read from them is reported here (the Tempo family reports bad
    /// colours itself).
    async fn tariff_inputs(
        &self,
        contract: &Contract,
        report: &mut Report,
    ) -> Result<TariffInputs, SourceError> {
        let colours = tempo_days(&self.source.tempo_rows().await?, &mut Report::default());
        let records = self.source.offpeak_records().await?;
        let powers = self.source.subscribed_powers().await?;
        Ok(TariffInputs {
            offpeak: OffPeakBook::new(contract.offpeak_hours.clone(), &records, report),
            kva: KvaBook::new(contract.subscribed_kva, &powers, report),
            colours,
        })
    }
}

/// Logs each row a family's computation skipped, and returns how many.
pub fn warn_skipped(report: &Report) -> u64 {
    for skip in &report.skipped {
        tracing::warn!(table = skip.table, row = %skip.row, reason = %skip.reason, "row skipped");
    }
    report.skipped.len() as u64
}

/// Writes every line a full export would send (the `render` command).
pub async fn render_all(
    source: &Source,
    config: &Config,
    out: &mut (impl std::io::Write + Send),
) -> Result<Report, RenderError> {
    let contract = config.contract(chrono::Utc::now().timestamp_millis());
    let mut report = Report::default();
    let mut buf = Vec::with_capacity(64 * 1024);
    for family in Family::ALL {
        let mut reader = SeriesReader::new(source, family);
        while let Some(group) = reader.next(&contract, &mut report).await? {
            for series in group.series {
                for s in &series.samples {
                    write_line(&mut buf, &series.head, s.value, series.scale, s.ts);
                }
                if buf.len() >= 60 * 1024 {
                    out.write_all(&buf)?;
                    buf.clear();
                }
            }
        }
    }
    out.write_all(&buf)?;
    out.flush()?;
    Ok(report)
}

/// Why `render` failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// PostgreSQL failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Standard output failed.
    #[error("writing the lines: {0}")]
    Output(#[from] std::io::Error),
}
