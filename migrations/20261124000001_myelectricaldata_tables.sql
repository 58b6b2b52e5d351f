-- The MyElectricalData client's own tables, created only where they are
-- missing, exactly as that project creates them (indexes included), so that
-- the exporter can run standalone. An existing database is left unchanged:
-- nothing here alters a table that already exists.

DO $$
BEGIN
    CREATE TYPE datagranularity AS ENUM ('daily', 'detailed');
EXCEPTION
    WHEN duplicate_object THEN NULL;
END
$$;

DO $$
BEGIN
    IF to_regclass('consumption_data') IS NULL THEN
        CREATE TABLE consumption_data (
            id             VARCHAR(36) PRIMARY KEY,
            usage_point_id VARCHAR(14) NOT NULL,
            date           DATE NOT NULL,
            granularity    datagranularity NOT NULL,
            interval_start VARCHAR(5),
            value          INTEGER NOT NULL,
            source         VARCHAR(50) DEFAULT 'myelectricaldata',
            raw_data       JSONB,
            created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            updated_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            CONSTRAINT uq_consumption_data UNIQUE (usage_point_id, date, granularity, interval_start)
        );
        CREATE INDEX ix_consumption_usage_point_date ON consumption_data (usage_point_id, date);
        CREATE INDEX ix_consumption_granularity_date ON consumption_data (granularity, date);
    END IF;

    IF to_regclass('production_data') IS NULL THEN
        CREATE TABLE production_data (
            id             VARCHAR(36) PRIMARY KEY,
            usage_point_id VARCHAR(14) NOT NULL,
            date           DATE NOT NULL,
            granularity    datagranularity NOT NULL,
            interval_start VARCHAR(5),
            value          INTEGER NOT NULL,
            source         VARCHAR(50) DEFAULT 'myelectricaldata',
            raw_data       JSONB,
            created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            updated_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            CONSTRAINT uq_production_data UNIQUE (usage_point_id, date, granularity, interval_start)
        );
        CREATE INDEX ix_production_usage_point_date ON production_data (usage_point_id, date);
        CREATE INDEX ix_production_granularity_date ON production_data (granularity, date);
    END IF;

    IF to_regclass('tempo_days') IS NULL THEN
        CREATE TABLE tempo_days (
            id               VARCHAR PRIMARY KEY,
            date             TIMESTAMPTZ NOT NULL UNIQUE,
            color            VARCHAR(10) NOT NULL,
            updated_at       TIMESTAMPTZ DEFAULT NOW(),
            rte_updated_date TIMESTAMPTZ
        );
        CREATE INDEX ix_tempo_days_date ON tempo_days (date);
    END IF;

    IF to_regclass('ecowatt') IS NULL THEN
        CREATE TABLE ecowatt (
            id                  SERIAL PRIMARY KEY,
            generation_datetime TIMESTAMP NOT NULL,
            periode             TIMESTAMP NOT NULL,
            hdebut              INTEGER NOT NULL,
            hfin                INTEGER NOT NULL,
            pas                 INTEGER DEFAULT 60,
            dvalue              INTEGER NOT NULL,
            message             VARCHAR,
            "values"            JSONB NOT NULL,
            created_at          TIMESTAMP NOT NULL DEFAULT NOW(),
            updated_at          TIMESTAMP NOT NULL DEFAULT NOW(),
            CONSTRAINT unique_ecowatt_periode UNIQUE (periode)
        );
        CREATE INDEX idx_ecowatt_periode ON ecowatt (periode);
    END IF;
END
$$;
