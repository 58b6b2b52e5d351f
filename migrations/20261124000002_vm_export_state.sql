-- The exporter's own bookkeeping: what each series holds in VictoriaMetrics.

-- One row per series the exporter has written (or begun to write).
-- `pending` is set before any write to VictoriaMetrics and cleared once every
-- line of the series is acknowledged: a series left pending (crash, failed
-- batch) is deleted and rewritten whole at the next cycle.
-- Selectors can be long (extra labels, quality strings): unique by their md5,
-- as a btree index entry is limited to about 2.7 kB.
CREATE TABLE IF NOT EXISTS vm_export_series (
    id         BIGSERIAL PRIMARY KEY,
    family     TEXT NOT NULL,
    selector   TEXT NOT NULL,
    pending    BOOLEAN NOT NULL DEFAULT TRUE,
    -- VictoriaMetrics' answer when it refused the series' lines for good
    -- (a 4xx other than 401/403/408/429): not retried until its rows change.
    rejected   TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE UNIQUE INDEX IF NOT EXISTS vm_export_series_selector ON vm_export_series (md5(selector));
CREATE INDEX IF NOT EXISTS vm_export_series_family ON vm_export_series (family);

-- The samples a series holds, summarised per local day of their timestamps
-- (days from the common era): how many, an order-independent digest of the
-- (timestamp, value) pairs, and the latest timestamp.
CREATE TABLE IF NOT EXISTS vm_export_chunk (
    series_id BIGINT NOT NULL REFERENCES vm_export_series (id) ON DELETE CASCADE,
    bucket    INTEGER NOT NULL,
    samples   INTEGER NOT NULL,
    digest    BIGINT NOT NULL,
    max_ts    BIGINT NOT NULL,
    PRIMARY KEY (series_id, bucket)
);

-- Settings the state depends on (the extra labels).
CREATE TABLE IF NOT EXISTS vm_export_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
