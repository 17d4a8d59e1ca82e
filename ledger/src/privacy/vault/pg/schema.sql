-- The shared key vault (refledger, feature pg-vault). Idempotent: run on every connect.
-- No personal data: subjects are random account ids; keys are wrapped by a
-- key-encryption key that is never stored here.
CREATE TABLE IF NOT EXISTS refledger_vault_meta (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    format          integer NOT NULL,
    kek_id          text NOT NULL,          -- public id of the KEK (HMAC of a label)
    fingerprint_key bytea NOT NULL          -- the fingerprint HMAC key, wrapped by the KEK
);
CREATE TABLE IF NOT EXISTS refledger_vault_keys (
    subject_id      uuid NOT NULL,
    erasure_group   text NOT NULL CHECK (erasure_group IN ('profile', 'payout')),
    key_id          uuid NOT NULL UNIQUE,   -- names the key in sealed values
    key_version     integer NOT NULL CHECK (key_version > 0),
    wrapped_key     bytea NOT NULL,         -- nonce, AES-256-GCM ciphertext and tag
    kek_id          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_id, erasure_group)
);
CREATE TABLE IF NOT EXISTS refledger_vault_tombstones (
    subject_id      uuid NOT NULL,
    erasure_group   text NOT NULL CHECK (erasure_group IN ('profile', 'payout')),
    erased_at       timestamptz NOT NULL,
    PRIMARY KEY (subject_id, erasure_group)
);
CREATE TABLE IF NOT EXISTS refledger_vault_fingerprints (
    subject_id      uuid NOT NULL,
    erasure_group   text NOT NULL CHECK (erasure_group IN ('profile', 'payout')),
    kind            text NOT NULL CHECK (kind IN ('email', 'ip', 'payment')),
    mac             bytea NOT NULL CHECK (length(mac) = 32),
    PRIMARY KEY (kind, mac, subject_id)
);
CREATE INDEX IF NOT EXISTS refledger_vault_fingerprints_subject
    ON refledger_vault_fingerprints (subject_id, erasure_group);
