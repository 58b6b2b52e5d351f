-- The tables newer MyElectricalData releases add (max_power_data in 2.2,
-- zen_flex_days in 2.3), created for standalone use only. A database that
-- MyElectricalData manages (its Alembic bookkeeping, or client mode's
-- sync_status, is there) is left unchanged: the client creates these tables
-- itself when it is upgraded, and the exporter mirrors them once they exist.

DO $$
BEGIN
    IF to_regclass('alembic_version') IS NOT NULL OR to_regclass('sync_status') IS NOT NULL THEN
        RETURN;
    END IF;

    IF to_regclass('max_power_data') IS NULL THEN
        CREATE TABLE max_power_data (
            id             VARCHAR(36) PRIMARY KEY,
            usage_point_id VARCHAR(14) NOT NULL,
            date           DATE NOT NULL,
            interval_start VARCHAR(5),
            value          INTEGER NOT NULL,
            source         VARCHAR(50),
            raw_data       JSONB,
            created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            updated_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            CONSTRAINT uq_max_power_data UNIQUE (usage_point_id, date)
        );
    END IF;

    IF to_regclass('zen_flex_days') IS NULL THEN
        CREATE TABLE zen_flex_days (
            id         VARCHAR PRIMARY KEY,
            date       DATE NOT NULL UNIQUE,
            day_type   VARCHAR(20) NOT NULL,
            raw_value  VARCHAR,
            updated_at TIMESTAMPTZ DEFAULT NOW()
        );
    END IF;
END
$$;
