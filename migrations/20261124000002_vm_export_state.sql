-- The exporter's own bookkeeping: what each series holds in VictoriaMetrics.

-- One row per series the exporter has written (or begun to write).
-- `pending` is set before any write to VictoriaMetrics and cleared once every
-- line of the series is acknowledged: a series left pending (crash, failed
-- batch) is deleted and rewritten whole at the next cycle.
CREATE TABLE IF NOT EXISTS vm_export_series (
    id         BIGSERIAL PRIMARY KEY,
    family     TEXT NOT NULL,
    selector   TEXT NOT NULL UNIQUE,
    pending    BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS vm_export_series_family ON vm_export_series (family);

-- The samples a series holds, summarised per UTC day of their timestamps:
-- how many and an order-independent digest of (timestamp, value) pairs.
CREATE TABLE IF NOT EXISTS vm_export_chunk (
    series_id BIGINT NOT NULL REFERENCES vm_export_series (id) ON DELETE CASCADE,
    bucket    INTEGER NOT NULL,
    samples   INTEGER NOT NULL,
    digest    BIGINT NOT NULL,
    PRIMARY KEY (series_id, bucket)
);

-- Settings the state depends on (the extra labels).
CREATE TABLE IF NOT EXISTS vm_export_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
