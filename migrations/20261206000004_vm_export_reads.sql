-- What the source held when a pass last read a PDL in full, so that a full
-- reconciliation re-reads only the PDLs whose rows changed since.

-- Per family, PDL and month of `date`: how many rows, and the sum of a hash
-- of each row's inserting transaction (`xmin`). Any insert, update or
-- delete changes the row count or brings a transaction id no row had, so
-- either moves; a transaction that commits late is seen when it commits,
-- whatever `updated_at` it stamped. Recorded from `vm_export_read_next`
-- (computed before the rows are read) once the pass that read the PDL
-- completed, with how many series the PDL's rows gave (on each of its
-- months): a PDL whose series the state no longer knows is read again.
CREATE TABLE IF NOT EXISTS vm_export_read (
    family TEXT NOT NULL,
    pdl    TEXT NOT NULL,
    month  DATE NOT NULL,
    rows   BIGINT NOT NULL,
    digest NUMERIC NOT NULL,
    series INTEGER NOT NULL,
    PRIMARY KEY (family, pdl, month)
);

-- The same, as the current pass found it before reading any row.
CREATE TABLE IF NOT EXISTS vm_export_read_next (
    family TEXT NOT NULL,
    pdl    TEXT NOT NULL,
    month  DATE NOT NULL,
    rows   BIGINT NOT NULL,
    digest NUMERIC NOT NULL,
    PRIMARY KEY (family, pdl, month)
);

-- The sum of each bucket's values (in the series' units: thousandths, or
-- millionths of a euro), so that a series the pass does not re-read can
-- still be compared with what VictoriaMetrics holds. NULL where an older
-- release recorded the bucket: filled in when the series is next read.
ALTER TABLE vm_export_chunk ADD COLUMN IF NOT EXISTS total BIGINT;
