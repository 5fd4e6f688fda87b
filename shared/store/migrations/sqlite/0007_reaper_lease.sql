-- One reaper pass at a time across every process on this database: a pass holds this lease while it runs.
CREATE TABLE reaper_lease (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until TEXT NOT NULL
);
