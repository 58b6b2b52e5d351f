//! `check`: "test the connection", as a readable checklist.

use std::time::Duration;

use crate::config::Config;
use crate::sink::Sink;
use crate::source::Source;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// All is well.
    Ok,
    /// Works, but something deserves attention.
    Warn,
    /// Does not work.
    Fail,
}

/// One line of the checklist.
#[derive(Debug, Clone)]
pub struct Item {
    /// The outcome.
    pub status: Status,
    /// What was checked and what was found; on failure, what to do.
    pub text: String,
}

fn item(status: Status, text: impl Into<String>) -> Item {
    Item {
        status,
        text: text.into(),
    }
}

/// Runs every check; stops early only where later checks cannot run.
pub async fn run(config: &Config) -> Vec<Item> {
    let mut out = Vec::new();
    let source = match Source::connect_lazy(&config.database_url) {
        Ok(s) => s,
        Err(e) => {
            out.push(item(Status::Fail, format!("{e}; fix DATABASE_URL")));
            return out;
        }
    };
    let mut oldest = None;
    match sqlx::query_scalar::<_, String>("SELECT current_setting('server_version')")
        .fetch_one(source.pool())
        .await
    {
        Ok(v) => {
            out.push(item(
                Status::Ok,
                format!("PostgreSQL reachable (version {v})"),
            ));
            match source.missing_tables().await {
                Ok(missing) if missing.is_empty() => {
                    out.push(item(Status::Ok, "MyElectricalData tables present"));
                    oldest = source.oldest_date().await.ok().flatten();
                }
                Ok(missing) => out.push(item(
                    Status::Fail,
                    format!("tables missing: {}; run `myelectricaldata-vm-exporter migrate`, or point DATABASE_URL at the MyElectricalData database", missing.join(", ")),
                )),
                Err(e) => out.push(item(Status::Fail, e.to_string())),
            }
        }
        Err(e) => out.push(item(
            Status::Fail,
            format!(
                "PostgreSQL unreachable ({e}); check DATABASE_URL and that the server is running"
            ),
        )),
    }

    let sink = Sink::new(&config.vm);
    let now = chrono::Utc::now().timestamp_millis();
    let selector = "{__name__=\"myelectricaldata_exporter_check\"}";
    let line = format!("myelectricaldata_exporter_check 1 {now}\n");
    match sink.import(line.into()).await {
        Ok(()) => {
            out.push(item(Status::Ok, format!("VictoriaMetrics accepted a sample at {}", sink.import_url())));
            let mut found = false;
            // A new series can take several seconds to become searchable.
            for _ in 0..60 {
                // A narrow window: VictoriaMetrics may take a while to show a
                // new series to searches over all time.
                let secs = now / 1000;
                if let Ok(body) = sink.export(selector, secs - 3600, secs + 3600).await {
                    if body.contains(&now.to_string()) {
                        found = true;
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if found {
                out.push(item(Status::Ok, "the sample was read back"));
            } else {
                out.push(item(
                    Status::Fail,
                    "the sample was not read back within 30 s; check VICTORIAMETRICS_SELECT_URL (vmselect's /select/<tenant>/prometheus in a cluster)",
                ));
            }
            if let Err(e) = sink.delete_series(selector).await {
                out.push(item(
                    Status::Fail,
                    format!("cannot delete series ({e}); corrections need delete_series: check VICTORIAMETRICS_DELETE_URL"),
                ));
            }
        }
        Err(e) if e.is_auth() => out.push(item(
            Status::Fail,
            format!("VictoriaMetrics refused the credentials ({e}); check VICTORIAMETRICS_USERNAME and VICTORIAMETRICS_PASSWORD"),
        )),
        Err(e) => out.push(item(Status::Fail, format!("{e}; check VICTORIAMETRICS_URL and that VictoriaMetrics is running"))),
    }

    match sink.get_select("/metrics").await.ok().and_then(|m| retention_from_metrics(&m)) {
        Some(retention) => {
            let age = oldest.map(|d| (chrono::Utc::now().date_naive() - d).num_days());
            match age {
                Some(age) if age > retention => out.push(item(
                    Status::Warn,
                    format!("VictoriaMetrics keeps {retention} days (-retentionPeriod) but the oldest reading is {age} days old: older samples are dropped silently; raise -retentionPeriod (e.g. 100y)"),
                )),
                _ => out.push(item(Status::Ok, format!("VictoriaMetrics retention ({retention} days) covers the data"))),
            }
        }
        None => out.push(item(
            Status::Warn,
            "VictoriaMetrics' retention could not be read (no /metrics at the select URL); make sure -retentionPeriod covers your history",
        )),
    }
    out
}

/// Days of retention from VictoriaMetrics' own `/metrics`
/// (`flag{name="retentionPeriod", value="100y"}`; a bare number is months).
pub fn retention_from_metrics(metrics: &str) -> Option<i64> {
    let line = metrics
        .lines()
        .find(|l| l.starts_with("flag{") && l.contains("name=\"retentionPeriod\""))?;
    let value = line.split("value=\"").nth(1)?.split('"').next()?;
    let split = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let number: f64 = value[..split].parse().ok()?;
    let days = match &value[split..] {
        "" => number * 31.0,
        "h" => number / 24.0,
        "d" => number,
        "w" => number * 7.0,
        "y" => number * 365.0,
        _ => return None,
    };
    Some(days as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_read_from_the_flag_metric() {
        let m = "vm_x 1\nflag{name=\"retentionPeriod\", value=\"100y\", is_set=\"true\"} 1\n";
        assert_eq!(retention_from_metrics(m), Some(36500));
        assert_eq!(
            retention_from_metrics("flag{name=\"retentionPeriod\", value=\"1\"} 1"),
            Some(31)
        );
        assert_eq!(
            retention_from_metrics("flag{name=\"retentionPeriod\", value=\"2w\"} 1"),
            Some(14)
        );
        assert_eq!(retention_from_metrics("nothing"), None);
    }
}
