-- Valid on CockroachDB and PostgreSQL: plain DDL, 64-bit integers (CockroachDB's INT is INT8).
-- IF NOT EXISTS lets two processes that migrate a new database at the same time both succeed.
CREATE TABLE IF NOT EXISTS accounts (
    id BIGINT PRIMARY KEY,
    balance BIGINT NOT NULL CHECK (balance >= 0)
);

CREATE TABLE IF NOT EXISTS points (
    id BIGINT PRIMARY KEY,
    x DOUBLE PRECISION NOT NULL,
    y DOUBLE PRECISION NOT NULL,
    z DOUBLE PRECISION NOT NULL
);
