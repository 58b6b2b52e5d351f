-- What a pass's read of a PDL skipped and held back, recorded with its
-- digests (`vm_export_read`), so that a PDL with a few bad rows is not read
-- again at every pass only to report them: an unchanged PDL is reported
-- from this record, and read again when a sample it held back as too far
-- ahead comes within reach. `skips` is the exporter's JSON summary (rows
-- skipped by table, the first few by name and why, samples held back and
-- the earliest). No row: nothing skipped or held back.
CREATE TABLE IF NOT EXISTS vm_export_read_skips (
    family TEXT NOT NULL,
    pdl    TEXT NOT NULL,
    skips  TEXT NOT NULL,
    PRIMARY KEY (family, pdl)
);
