//! Idempotent commands: the same command id with the same request returns the first
//! result; the same id with a different request is refused with `idempotency_conflict`.
//!
//! # Why a table in a file of its own
//!
//! Stripe delivers a webhook more than once, and a client that lost a response retries. A
//! retry must return the original response, even after a restart, even if the state it
//! was decided on has changed since (a spend retried after later spends must still answer
//! with the balance it produced, not be re-decided). So the response itself is kept,
//! keyed by `(command kind, command id)`, with a fingerprint of the request.
//!
//! The record is appended to `<data>/idempotency.jsonl` and fsynced *after* the command's
//! events are durable and *before* the response is sent: an acknowledged command always
//! has its record. A crash between the two leaves events without a record; the client saw
//! no acknowledgement and retries, and the retry is caught one level down: the command id
//! is derived from the key ([`CommandKey::command_id`]) and the ledger derives event ids
//! from it, so the store treats a repeated append as an idempotent repeat, and the
//! deciders answer a repeated command (same natural id, same content) with no new events.
//! Keeping the table outside the event log keeps the log a record of business facts
//! only, and lets concurrent appends share one fsync of the table (group commit below).
//!
//! The fingerprint is a SHA-256 of the parsed, typed request, salted with a random key
//! kept in `<data>/idempotency.salt`: a request can hold personal data (a name, an
//! email), and an unsalted hash of it could be tested against guesses. Responses are kept
//! as they were sent, so no response of an idempotent command may hold personal data.
//!
//! Spends, payments and refunds do not use the table (`http::command::answered_from_log`):
//! their ids live in the log (a spend's in its account's wallet, a payment's as its
//! stream, a refund's in its payment's stream), the ledger refuses an id reused with other
//! details, and the handler rebuilds the answer from the log. Billing's hot path thus waits
//! for one fsync, the log's.
//!
//! Only successes are recorded. A rejected command (not enough credits, a bad field)
//! wrote nothing, so its retry is decided again, which is what a client that fixed the
//! cause expects.
//!
//! Concurrent requests with the same key are serialised by a per-key lock, so a second
//! one waits for the first and then replays its result instead of deciding again.
//!
//! # Compaction
//!
//! Each record carries the time it was recorded. Records older than [`RETRY_HORIZON`]
//! (longer than any caller retries: Stripe retries a webhook for three days) are dropped
//! when the table is opened and once a day while the server runs ([`Idempotency::compact`]):
//! the kept records are written to a new file, fsynced, and renamed over the table, so a
//! crash leaves either the old table or the new one. Memory and disk stay bounded by the
//! commands of one horizon. A retry that arrives after its record expired is still not
//! doubled: it is caught one level down, as in the crash window above. Records written
//! before records carried a time count as recorded when the table is opened.
//!
//! A record that cannot be made durable (a full disk) does not fail its command: the
//! events are durable already, so the success is answered, the record kept in memory for
//! this process, and the error logged; after a restart the retry is caught one level down,
//! as in the crash window. A write whose events are durable is never answered 500.
//!
//! Limits, known: in the crash window above, the retry's response is rebuilt from the
//! state now (a spend answers the balance now, with 200), not the response never sent.
//! A compaction holds the table's writer while it rewrites the file, so commands that
//! finish meanwhile wait for it (a table of 1 million records is about 300 MB).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::keys::{random_key, read_or_create_key};
use crate::locks::KeyedLocks;

/// Longest command id or `Idempotency-Key`, in bytes.
pub const KEY_LENGTH_MAX: usize = 200;
/// Largest response kept for replay, in bytes of JSON.
pub const RESPONSE_SIZE_MAX: usize = 64 * 1024;
/// Longest line accepted when the table is read back (a record plus its framing).
const LINE_LENGTH_MAX: usize = RESPONSE_SIZE_MAX + 2 * KEY_LENGTH_MAX + 1024;

pub const TABLE_FILE_NAME: &str = "idempotency.jsonl";
/// Where a compaction writes the kept records before renaming them over the table.
const COMPACTING_FILE_NAME: &str = "idempotency.jsonl.compacting";
/// How long a command's response is kept for replay.
pub const RETRY_HORIZON: chrono::TimeDelta = chrono::TimeDelta::days(7);
pub const SALT_FILE_NAME: &str = "idempotency.salt";

/// The namespace of command ids derived from command keys (UUID v5).
const COMMAND_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1e_d9a2_4b7f_4e0c_9a51_3f2d_8e6b_7c10);

/// What identifies a command: its kind (`spend`, `payment`, ...) and its id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommandKey {
    kind: String,
    id: String,
}

impl CommandKey {
    /// `field` names where the id came from, for the error message.
    pub fn new(kind: &'static str, id: &str, field: &str) -> Result<CommandKey, ApiError> {
        let printable = id.chars().all(|c| !c.is_control());
        if id.is_empty() || id.len() > KEY_LENGTH_MAX || !printable {
            return Err(ApiError::validation(format!(
                "{field}: must be 1 to {KEY_LENGTH_MAX} bytes without control characters"
            )));
        }
        Ok(CommandKey {
            kind: kind.to_owned(),
            id: id.to_owned(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The command id the ledger derives event ids from: the same on every retry of the
    /// command, different for every other command.
    pub fn command_id(&self) -> Uuid {
        let name = format!("{}\u{0}{}", self.kind, self.id);
        Uuid::new_v5(&COMMAND_ID_NAMESPACE, name.as_bytes())
    }
}

/// The response of a command, fresh or replayed.
#[derive(Clone, Debug, PartialEq)]
pub struct Completed {
    pub status: StatusCode,
    pub body: serde_json::Value,
    pub replayed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    key: CommandKey,
    fingerprint: String,
    status: u16,
    body: serde_json::Value,
    /// When the command completed; `None` in records written before records were dated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<DateTime<Utc>>,
}

/// The table of completed commands.
pub struct Idempotency {
    salt: [u8; 32],
    records: Mutex<HashMap<CommandKey, Record>>,
    key_locks: KeyedLocks,
    log: Option<Log>,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("durable", &self.log.is_some())
            .finish_non_exhaustive()
    }
}

/// The append-only file with group commit: each writer appends its line, then makes sure
/// an fsync that started after its write has finished; one fsync serves every line
/// written before it.
struct Log {
    path: PathBuf,
    file: Mutex<Writer>,
    sync: tokio::sync::Mutex<u64>,
}

struct Writer {
    file: File,
    /// Lines written since open (the group commit's tickets).
    written: u64,
    /// The file's length after the last complete line.
    length: u64,
    /// A failed write left a partial line that could not be cut off.
    stuck: bool,
}

impl Idempotency {
    /// A table that lives as long as the process (tests, and the in-memory store).
    pub fn in_memory() -> Idempotency {
        Idempotency {
            salt: random_key(),
            records: Mutex::default(),
            key_locks: KeyedLocks::default(),
            log: None,
        }
    }

    /// Opens (or creates) the table of the data directory `data`. A torn last line, left
    /// by a crash during a write that was never acknowledged, is cut off; a bad line
    /// before the last is corruption and an error.
    /// Opens (or creates) the table in `data`, dropping the records older than
    /// [`RETRY_HORIZON`].
    pub fn open(data: &Path) -> std::io::Result<Idempotency> {
        let table = Idempotency::open_unpruned(data)?;
        // On a full disk the rewrite fails and the old table stays: a larger table, not
        // a server that cannot start.
        if let Err(error) = table.compact_blocking(Utc::now()) {
            tracing::warn!(%error, "the idempotency table was not compacted at open");
        }
        Ok(table)
    }

    fn open_unpruned(data: &Path) -> std::io::Result<Idempotency> {
        let salt = read_or_create_key(&data.join(SALT_FILE_NAME))?;
        let path = data.join(TABLE_FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut records = HashMap::new();
        let mut good_length = 0u64;
        let mut reader = BufReader::new(&mut file);
        let mut line = Vec::new();
        let mut line_number = 0usize;
        loop {
            line.clear();
            let read = std::io::Read::take(&mut reader, LINE_LENGTH_MAX as u64)
                .read_until(b'\n', &mut line)?;
            if read == 0 {
                break;
            }
            line_number += 1;
            let complete = line.last() == Some(&b'\n');
            match serde_json::from_slice::<Record>(&line) {
                Ok(record) if complete => {
                    good_length += read as u64;
                    records.insert(record.key.clone(), record);
                }
                _ => {
                    let at_end = reader.fill_buf()?.is_empty();
                    if !at_end {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "{}: line {line_number} (byte {good_length}) is not a record",
                                path.display()
                            ),
                        ));
                    }
                    tracing::warn!(
                        path = %path.display(),
                        offset = good_length,
                        "cutting off a torn last record"
                    );
                    break;
                }
            }
        }
        drop(reader);
        file.set_len(good_length)?;
        file.seek(SeekFrom::End(0))?;
        file.sync_all()?;
        Ok(Idempotency {
            salt,
            records: Mutex::new(records),
            key_locks: KeyedLocks::default(),
            log: Some(Log {
                path,
                file: Mutex::new(Writer {
                    file,
                    written: 0,
                    length: good_length,
                    stuck: false,
                }),
                sync: tokio::sync::Mutex::new(0),
            }),
        })
    }

    /// Runs `command` once per `key`: a repeat with the same `request` replays the first
    /// success (as 200), a repeat with another request is an `idempotency_conflict`.
    pub async fn run<R, F, Fut>(
        &self,
        key: CommandKey,
        request: &R,
        command: F,
    ) -> Result<Completed, ApiError>
    where
        R: Serialize,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
    {
        let fingerprint = self.fingerprint(&key, request)?;
        let _guard = self
            .key_locks
            .lock([format!("{}\u{0}{}", key.kind, key.id)])
            .await;
        self.run_locked(&key, fingerprint, command).await
    }

    async fn run_locked<F, Fut>(
        &self,
        key: &CommandKey,
        fingerprint: String,
        command: F,
    ) -> Result<Completed, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
    {
        if let Some(record) = self.lookup(key) {
            if record.fingerprint != fingerprint {
                return Err(ApiError::IdempotencyConflict {
                    key: key.id.clone(),
                });
            }
            return Ok(Completed {
                status: StatusCode::OK,
                body: record.body,
                replayed: true,
            });
        }
        let (status, body) = command().await?;
        assert!(status.is_success(), "only successes are recorded");
        let record = Record {
            key: key.clone(),
            fingerprint,
            status: status.as_u16(),
            body,
            at: Some(Utc::now()),
        };
        let body = record.body.clone();
        if let Err(error) = self.persist(record).await {
            // The command's events are durable: a 500 would send the client to retry a
            // success. This process replays it from memory; after a restart its retry is
            // caught one level down, as in the crash window (see the module's comment).
            tracing::error!(
                kind = %key.kind, key = %key.id, %error,
                "the idempotency record was not made durable; the command stands"
            );
        }
        Ok(Completed {
            status,
            body,
            replayed: false,
        })
    }

    /// Drops the records older than [`RETRY_HORIZON`] at `now`, from memory and from the
    /// file (rewritten and renamed over the table; see the module's "Compaction"). Returns
    /// how many records it dropped. Blocks: call it from a blocking thread.
    pub fn compact_blocking(&self, now: DateTime<Utc>) -> std::io::Result<usize> {
        let cutoff = now - RETRY_HORIZON;
        let Some(log) = &self.log else {
            let mut records = self.records.lock().expect("idempotency lock poisoned");
            let before = records.len();
            records.retain(|_, record| record.at.is_none_or(|at| at >= cutoff));
            return Ok(before - records.len());
        };
        // The writer's lock first: no record is appended while the file is rewritten.
        let mut writer = log.file.lock().expect("idempotency lock poisoned");
        let mut records = self.records.lock().expect("idempotency lock poisoned");
        let before = records.len();
        let undated = records
            .values()
            .filter(|record| record.at.is_none())
            .count();
        records.retain(|_, record| record.at.is_none_or(|at| at >= cutoff));
        let dropped = before - records.len();
        if dropped == 0 && undated == 0 {
            return Ok(0);
        }
        let dir = log.path.parent().unwrap_or(Path::new("."));
        let mut length = 0u64;
        // In recording order is not needed (keys are unique); sorted, so that the same
        // table always compacts to the same bytes.
        let mut kept: Vec<&mut Record> = records.values_mut().collect();
        kept.sort_by(|a, b| (a.at, &a.key.kind, &a.key.id).cmp(&(b.at, &b.key.kind, &b.key.id)));
        ledger::durable::replace_file(&log.path, &dir.join(COMPACTING_FILE_NAME), |out| {
            for record in kept {
                record.at.get_or_insert(now);
                let mut line = serde_json::to_vec(&*record).map_err(std::io::Error::other)?;
                line.push(b'\n');
                out.write_all(&line)?;
                length += line.len() as u64;
            }
            Ok(())
        })?;
        let mut reopened = OpenOptions::new().read(true).append(true).open(&log.path)?;
        reopened.seek(SeekFrom::End(0))?;
        writer.file = reopened;
        writer.length = length;
        tracing::info!(
            dropped,
            kept = records.len(),
            "compacted the idempotency table"
        );
        Ok(dropped)
    }

    /// [`Idempotency::compact_blocking`] on a blocking thread.
    pub async fn compact(
        self: &std::sync::Arc<Self>,
        now: DateTime<Utc>,
    ) -> std::io::Result<usize> {
        let table = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || table.compact_blocking(now))
            .await
            .map_err(std::io::Error::other)?
    }

    fn lookup(&self, key: &CommandKey) -> Option<Record> {
        self.records
            .lock()
            .expect("idempotency lock poisoned")
            .get(key)
            .cloned()
    }

    fn fingerprint<R: Serialize>(&self, key: &CommandKey, request: &R) -> Result<String, ApiError> {
        // The typed request serialises its fields in declaration order, so key order
        // and whitespace in the client's JSON do not change the fingerprint.
        let canonical = serde_json::to_vec(request).map_err(ApiError::internal)?;
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(key.kind.as_bytes());
        hasher.update([0]);
        hasher.update(&canonical);
        let digest = hasher.finalize();
        Ok(ledger::hex::encode(&digest))
    }

    /// Keeps `record` in memory and appends it to the table, durably when it returns. The
    /// record enters memory in the same critical section as its line enters the file, so a
    /// compaction in between (which rewrites the file from memory) cannot lose it; nobody
    /// reads it before it is durable, because its key's lock is held until then. On an
    /// error (a full disk) the record stays in memory: the command it answers stands.
    async fn persist(&self, record: Record) -> Result<(), ApiError> {
        let Some(log) = &self.log else {
            self.records
                .lock()
                .expect("idempotency lock poisoned")
                .insert(record.key.clone(), record);
            return Ok(());
        };
        let mut line = serde_json::to_vec(&record).map_err(ApiError::internal)?;
        if line.len() > RESPONSE_SIZE_MAX + 2 * KEY_LENGTH_MAX + 512 {
            return Err(ApiError::internal(format!(
                "a response of {} bytes is too large to keep for replay",
                line.len()
            )));
        }
        line.push(b'\n');
        let failed = |error: std::io::Error| {
            ApiError::internal(format!("idempotency table {}: {error}", log.path.display()))
        };
        let ticket = {
            let mut writer = log.file.lock().expect("idempotency lock poisoned");
            self.records
                .lock()
                .expect("idempotency lock poisoned")
                .insert(record.key.clone(), record);
            if writer.stuck {
                return Err(failed(std::io::Error::other(
                    "a partial record could not be cut off earlier; the table takes no \
                     more lines until the server restarts",
                )));
            }
            if let Err(error) = writer.file.write_all(&line) {
                // Cut a partial line off, so the next record does not follow garbage
                // (which the next open would take for corruption). If even that fails,
                // write nothing more: the garbage then stays the last line, which the
                // next open cuts as a torn tail.
                let length = writer.length;
                if let Err(cut) = writer.file.set_len(length) {
                    tracing::error!(%cut, "cannot cut a partial idempotency record");
                    writer.stuck = true;
                }
                return Err(failed(error));
            }
            writer.length += line.len() as u64;
            writer.written += 1;
            writer.written
        };
        let mut synced = log.sync.lock().await;
        if *synced >= ticket {
            return Ok(());
        }
        let (file, target) = {
            let writer = log.file.lock().expect("idempotency lock poisoned");
            (writer.file.try_clone().map_err(failed)?, writer.written)
        };
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(ApiError::internal)?
            .map_err(failed)?;
        *synced = target;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn record_line(id: &str, at: Option<&str>) -> String {
        let mut record = serde_json::json!({
            "key": {"kind": "spend", "id": id},
            "fingerprint": "f",
            "status": 200,
            "body": {"id": id},
        });
        if let Some(at) = at {
            record["at"] = serde_json::json!(at);
        }
        format!("{record}\n")
    }

    #[test]
    fn opening_drops_records_past_the_retry_horizon_and_dates_undated_ones() {
        let dir = tempfile::tempdir().unwrap();
        let now: DateTime<Utc> = "2026-11-29T12:00:00Z".parse().unwrap();
        let old = (now - RETRY_HORIZON - chrono::TimeDelta::seconds(1)).to_rfc3339();
        let recent = (now - RETRY_HORIZON + chrono::TimeDelta::seconds(1)).to_rfc3339();
        let table_text = [
            record_line("expired", Some(&old)),
            record_line("recent", Some(&recent)),
            record_line("undated", None),
        ]
        .concat();
        std::fs::write(dir.path().join(TABLE_FILE_NAME), table_text).unwrap();
        let table = Idempotency::open_unpruned(dir.path()).unwrap();
        assert_eq!(table.compact_blocking(now).unwrap(), 1);
        assert!(table.lookup(&key("expired")).is_none());
        assert!(table.lookup(&key("recent")).is_some());
        assert_eq!(table.lookup(&key("undated")).unwrap().at, Some(now));
        assert!(!dir.path().join(COMPACTING_FILE_NAME).exists());
        drop(table);
        // The file holds what memory held, and the undated record now expires one horizon
        // after this compaction.
        let reopened = Idempotency::open_unpruned(dir.path()).unwrap();
        assert!(reopened.lookup(&key("expired")).is_none());
        assert_eq!(reopened.lookup(&key("undated")).unwrap().at, Some(now));
        assert_eq!(reopened.compact_blocking(now).unwrap(), 0);
        let later = now + RETRY_HORIZON + chrono::TimeDelta::seconds(2);
        assert_eq!(reopened.compact_blocking(later).unwrap(), 2);
        drop(reopened);
        let text = std::fs::read_to_string(dir.path().join(TABLE_FILE_NAME)).unwrap();
        assert_eq!(text, "");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compaction_during_commands_loses_no_acknowledged_record() {
        let dir = tempfile::tempdir().unwrap();
        let table = Arc::new(Idempotency::open(dir.path()).unwrap());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut commands = Vec::new();
        for n in 0..200 {
            let (table, runs) = (table.clone(), runs.clone());
            commands.push(tokio::spawn(async move {
                spend(&table, &format!("c-{n}"), 1, &runs).await.unwrap()
            }));
        }
        // Compactions at a time far enough ahead to expire the records written before
        // them would drop acknowledged records on purpose; at "now" they must keep all.
        for _ in 0..20 {
            table.compact(Utc::now()).await.unwrap();
            tokio::task::yield_now().await;
        }
        for command in commands {
            command.await.unwrap();
        }
        table.compact(Utc::now()).await.unwrap();
        drop(table);
        let reopened = Idempotency::open(dir.path()).unwrap();
        for n in 0..200 {
            assert!(reopened.lookup(&key(&format!("c-{n}"))).is_some(), "c-{n}");
        }
    }

    fn key(id: &str) -> CommandKey {
        CommandKey::new("spend", id, "spend_id").unwrap()
    }

    async fn spend(
        table: &Idempotency,
        id: &str,
        credits: u32,
        runs: &AtomicUsize,
    ) -> Result<Completed, ApiError> {
        table
            .run(
                key(id),
                &serde_json::json!({ "credits": credits }),
                || async {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    Ok((StatusCode::CREATED, serde_json::json!({ "run": run })))
                },
            )
            .await
    }

    #[tokio::test]
    async fn a_repeat_replays_and_a_different_body_conflicts() {
        let table = Idempotency::in_memory();
        let runs = AtomicUsize::new(0);
        let first = spend(&table, "s-1", 5, &runs).await.unwrap();
        assert_eq!(first.status, StatusCode::CREATED);
        assert!(!first.replayed);
        let again = spend(&table, "s-1", 5, &runs).await.unwrap();
        assert_eq!(again.status, StatusCode::OK);
        assert!(again.replayed);
        assert_eq!(again.body, first.body);
        assert!(matches!(
            spend(&table, "s-1", 6, &runs).await,
            Err(ApiError::IdempotencyConflict { .. })
        ));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failures_are_not_recorded() {
        let table = Idempotency::in_memory();
        let failed = table
            .run(key("s-2"), &1, || async {
                Err::<(StatusCode, serde_json::Value), _>(ApiError::validation("no"))
            })
            .await;
        assert!(matches!(failed, Err(ApiError::Validation { .. })));
        let runs = AtomicUsize::new(0);
        let retried = spend(&table, "s-2", 1, &runs).await.unwrap();
        assert!(!retried.replayed);
    }

    #[tokio::test]
    async fn concurrent_repeats_run_the_command_once() {
        let table = Arc::new(Idempotency::in_memory());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (table, runs) = (table.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                spend(&table, "s-3", 1, &runs).await.unwrap()
            }));
        }
        let mut fresh = 0;
        for task in tasks {
            fresh += usize::from(!task.await.unwrap().replayed);
        }
        assert_eq!(fresh, 1);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(table.key_locks.is_empty());
    }

    #[tokio::test]
    async fn records_survive_a_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let runs = AtomicUsize::new(0);
        {
            let table = Idempotency::open(dir.path()).unwrap();
            spend(&table, "s-4", 3, &runs).await.unwrap();
            spend(&table, "s-5", 4, &runs).await.unwrap();
        }
        // A crash in the middle of writing a third record.
        let path = dir.path().join(TABLE_FILE_NAME);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"key\":{\"kind\":\"sp").unwrap();
        drop(file);

        let table = Idempotency::open(dir.path()).unwrap();
        let replay = spend(&table, "s-4", 3, &runs).await.unwrap();
        assert!(replay.replayed);
        assert_eq!(replay.body, serde_json::json!({ "run": 0 }));
        assert!(matches!(
            spend(&table, "s-5", 9, &runs).await,
            Err(ApiError::IdempotencyConflict { .. })
        ));
        spend(&table, "s-6", 1, &runs).await.unwrap();
        drop(table);
        let table = Idempotency::open(dir.path()).unwrap();
        assert!(spend(&table, "s-6", 1, &runs).await.unwrap().replayed);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_bad_record_before_the_last_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(Idempotency::open(dir.path()).unwrap());
        let path = dir.path().join(TABLE_FILE_NAME);
        std::fs::write(&path, b"garbage\n{\"also\":\"garbage\"}\n").unwrap();
        let error = Idempotency::open(dir.path()).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn command_ids_are_derived_from_the_key() {
        assert_eq!(key("a").command_id(), key("a").command_id());
        assert_ne!(key("a").command_id(), key("b").command_id());
        let other_kind = CommandKey::new("grant", "a", "grant_id").unwrap();
        assert_ne!(key("a").command_id(), other_kind.command_id());
    }
}

/// The optional `Idempotency-Key` header, for commands whose body has no id of its own.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKeyHeader(pub Option<String>);

/// The header's name.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY_HEADER) else {
            return Ok(IdempotencyKeyHeader(None));
        };
        let text = value.to_str().map_err(|_| {
            ApiError::validation("Idempotency-Key: must be visible ASCII characters")
        })?;
        let text = text.trim();
        if text.is_empty() || text.len() > KEY_LENGTH_MAX {
            return Err(ApiError::validation(format!(
                "Idempotency-Key: must be 1 to {KEY_LENGTH_MAX} characters"
            )));
        }
        Ok(IdempotencyKeyHeader(Some(text.to_owned())))
    }
}
