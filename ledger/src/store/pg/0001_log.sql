-- refledger event store, schema version 1.
--
-- Every position is assigned while holding the lock on the single row of
-- refledger_log_head, and that lock is held until the append commits: positions are
-- handed out in commit order, so no reader ever sees position n + 1 before position n.
CREATE TABLE refledger_log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- The position the next event receives: the number of events in the log.
    next_position bigint NOT NULL CHECK (next_position >= 0),
    -- The hash of the last record (32 zero bytes for an empty log).
    head_hash bytea NOT NULL CHECK (length(head_hash) = 32),
    -- recorded_at of the last record, microseconds since the Unix epoch; a new record
    -- never goes below it, whatever the clock does.
    head_recorded_at_us bigint NOT NULL
);
INSERT INTO refledger_log_head (next_position, head_hash, head_recorded_at_us)
VALUES (0, decode(repeat('00', 32), 'hex'), 0);

CREATE TABLE refledger_events (
    position bigint PRIMARY KEY CHECK (position >= 0),
    event_id uuid NOT NULL UNIQUE,
    stream text NOT NULL,
    revision bigint NOT NULL CHECK (revision >= 0),
    event_type text NOT NULL,
    schema_version integer NOT NULL CHECK (schema_version BETWEEN 0 AND 65535),
    recorded_at_us bigint NOT NULL,
    correlation_id uuid,
    causation_id uuid,
    payload bytea NOT NULL,
    hash_previous bytea NOT NULL CHECK (length(hash_previous) = 32),
    hash_current bytea NOT NULL CHECK (length(hash_current) = 32),
    UNIQUE (stream, revision)
);
