//! The small commands that work on the store alone: `export`, `append` and `read`.
//! `export` and `read` open the log read-only; `append` is the one that writes.

use std::io::{Read as _, Write};

use ledger::store::{
    Direction, EventMetadata, EventStore, EventType, ExpectedRevision, NewEvent, Position,
    RecordedEvent, StoreError, StreamFrom, StreamName, PAGE_SIZE_MAX,
};
use uuid::Uuid;

use crate::cli::{AppendArgs, ExportArgs, ReadArgs};
use crate::heads::SignedHead;
use crate::http::events::{EventView, PayloadForm};

/// Why a store command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CommandError {
    let context = context.into();
    move |source| CommandError::Io { context, source }
}

/// The `format` of an export's trailer.
pub const EXPORT_FORMAT: &str = "refledger.export.v1";

/// The last line of an export, `{"trailer": {...}}`: how many events it holds and the
/// hash of the last, so a cut or an extended export is seen, and the latest head the
/// server signed that the export extends, so it is anchored outside the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportTrailer {
    pub format: String,
    pub events: u64,
    /// `chain_current` of the last event (null for an empty log).
    pub head: Option<String>,
    /// The latest signed head with at most `events` records (null if none).
    pub signed_head: Option<SignedHead>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrailerLine {
    trailer: ExportTrailer,
}

/// Writes every event of the log, in global order, one JSON object per line, with the
/// payload's exact bytes in base64 and the chain hashes, then the trailer: an auditor
/// recomputes the chain from this file alone (`docs/FORMAT.md`, "The export"). `heads`
/// are the server's signed heads, oldest first. Returns the number of events written.
pub async fn export(
    store: &dyn EventStore,
    heads: &[SignedHead],
    out: &mut dyn Write,
) -> Result<u64, CommandError> {
    let mut from = Position::START;
    let mut count = 0u64;
    let mut head = None;
    loop {
        let page = store.read_all(from, PAGE_SIZE_MAX).await?;
        let Some(last) = page.last() else {
            break;
        };
        from = Position::sequence(last.position.commit + 1);
        for event in &page {
            let view = EventView::new(event, PayloadForm::Exact);
            serde_json::to_writer(&mut *out, &view)
                .map_err(|error| io("cannot write the export")(error.into()))?;
            out.write_all(b"\n")
                .map_err(io("cannot write the export"))?;
            count += 1;
            head = Some(view.chain_current);
        }
    }
    let trailer = TrailerLine {
        trailer: ExportTrailer {
            format: EXPORT_FORMAT.to_owned(),
            events: count,
            head,
            signed_head: heads
                .iter()
                .rev()
                .find(|signed| signed.events <= count)
                .cloned(),
        },
    };
    serde_json::to_writer(&mut *out, &trailer)
        .map_err(|error| io("cannot write the export")(error.into()))?;
    out.write_all(b"\n")
        .map_err(io("cannot write the export"))?;
    out.flush().map_err(io("cannot write the export"))?;
    Ok(count)
}

/// What [`verify_export`] found in a sound export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportCheck {
    pub events: u64,
    pub head: Option<String>,
    pub signed_head: Option<SignedHead>,
}

/// Where an export is wrong: its line (from 1) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportProblem {
    pub line: u64,
    pub reason: String,
}

/// Checks an export line by line, as an auditor's own tool would: every event's body
/// rebuilt from its fields and `payload_base64` hashes to its `chain_current` and links
/// to the line before; positions run 0, 1, 2, ...; revisions run per stream; ids are
/// unique; `payload`, when present, is the JSON of the exact bytes; the trailer closes
/// the file with the count and head it holds; and the export extends the trailer's
/// signed head (its signature checked) and every head in `trusted`.
pub fn verify_export(
    input: impl std::io::BufRead,
    trusted: &[ledger::store::file::KnownHead],
) -> Result<Result<ExportCheck, ExportProblem>, CommandError> {
    use std::collections::{HashMap, HashSet};
    let mut previous = ledger::store::Digest::GENESIS;
    let mut revisions: HashMap<String, u64> = HashMap::new();
    let mut ids: HashSet<Uuid> = HashSet::new();
    let mut hashes: Vec<ledger::store::Digest> = Vec::new();
    let mut trailer = None;
    let mut line_number = 0u64;
    for line in input.lines() {
        let line = line.map_err(io("cannot read the export"))?;
        line_number += 1;
        let problem = |reason: String| {
            Ok(Err(ExportProblem {
                line: line_number,
                reason,
            }))
        };
        if trailer.is_some() {
            return problem("a line after the trailer".to_owned());
        }
        if line.starts_with("{\"trailer\"") {
            match serde_json::from_str::<TrailerLine>(&line) {
                Ok(parsed) => trailer = Some(parsed.trailer),
                Err(error) => return problem(format!("not a trailer: {error}")),
            }
            continue;
        }
        let view: EventView = match serde_json::from_str(&line) {
            Ok(view) => view,
            Err(error) => return problem(format!("not an event: {error}")),
        };
        let event = match recorded_of(&view) {
            Ok(event) => event,
            Err(reason) => return problem(reason),
        };
        let position = hashes.len() as u64;
        if event.position != Position::sequence(position) {
            return problem(format!("position {}, expected {position}", view.position));
        }
        if event.chain.previous != previous {
            return problem("chain_previous does not link to the event before".to_owned());
        }
        if !event
            .chain
            .holds_for(&ledger::store::codec::body_of(&event))
        {
            return problem("the event's fields do not hash to its chain_current".to_owned());
        }
        let next = revisions.entry(view.stream.clone()).or_insert(0);
        if event.revision != *next {
            return problem(format!(
                "revision {} of {}, expected {next}",
                event.revision, view.stream
            ));
        }
        *next += 1;
        if !ids.insert(event.id) {
            return problem(format!("event id {} appears twice", event.id));
        }
        if let Some(payload) = &view.payload {
            if serde_json::from_slice::<serde_json::Value>(&event.payload)
                .ok()
                .as_ref()
                != Some(payload)
            {
                return problem("payload is not the JSON of payload_base64".to_owned());
            }
        }
        previous = event.chain.current;
        hashes.push(event.chain.current);
    }
    let Some(trailer) = trailer else {
        return Ok(Err(ExportProblem {
            line: line_number,
            reason: "the export ends without its trailer: it was cut".to_owned(),
        }));
    };
    let at_trailer = |reason: String| {
        Ok(Err(ExportProblem {
            line: line_number,
            reason,
        }))
    };
    let events = hashes.len() as u64;
    let head = hashes.last().map(ledger::store::Digest::to_hex);
    if trailer.format != EXPORT_FORMAT {
        return at_trailer(format!("unknown format {:?}", trailer.format));
    }
    if trailer.events != events || trailer.head != head {
        return at_trailer(format!(
            "the trailer says {} events with head {:?}, the export holds {events} with head {head:?}",
            trailer.events, trailer.head
        ));
    }
    let mut known: Vec<ledger::store::file::KnownHead> = trusted.to_vec();
    if let Some(signed) = &trailer.signed_head {
        match signed.check(format!(
            "the signed head of {} in the trailer",
            signed.signed_at
        )) {
            Ok(head) => known.push(head),
            Err(reason) => return at_trailer(reason),
        }
    }
    for head in &known {
        let Some(index) = head.events.checked_sub(1) else {
            continue;
        };
        match hashes.get(index as usize) {
            None => {
                return at_trailer(format!(
                    "the export is truncated: it holds {events} events, {} recorded {}",
                    head.source, head.events
                ))
            }
            Some(hash) if *hash != head.head => {
                return at_trailer(format!(
                    "event {index} is not the head {} recorded: the export was rewritten",
                    head.source
                ))
            }
            Some(_) => {}
        }
    }
    Ok(Ok(ExportCheck {
        events,
        head,
        signed_head: trailer.signed_head,
    }))
}

/// The recorded event an export line stands for, its payload the exact bytes.
fn recorded_of(view: &EventView) -> Result<RecordedEvent, String> {
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(view.payload_base64.as_deref().ok_or("no payload_base64")?)
        .map_err(|error| format!("payload_base64: {error}"))?;
    let digest = |text: &str, name: &str| {
        ledger::store::Digest::from_hex(text).ok_or(format!("{name} is not 64 hex digits"))
    };
    Ok(RecordedEvent {
        id: view.id,
        stream: StreamName::parse(view.stream.clone())
            .map_err(|error| format!("stream: {error}"))?,
        revision: view.revision,
        position: crate::http::events::parse_position(&view.position)
            .ok_or(format!("position {:?} is not a position", view.position))?,
        event_type: EventType::parse(view.event_type.clone())
            .map_err(|error| format!("event_type: {error}"))?,
        schema_version: view.schema_version,
        recorded_at: chrono::DateTime::parse_from_rfc3339(&view.recorded_at)
            .map_err(|error| format!("recorded_at: {error}"))?
            .to_utc(),
        metadata: EventMetadata {
            correlation_id: view.correlation_id,
            causation_id: view.causation_id,
        },
        payload,
        chain: ledger::store::ChainLink {
            previous: digest(&view.chain_previous, "chain_previous")?,
            current: digest(&view.chain_current, "chain_current")?,
        },
    })
}

/// Whether `error` is the reader of standard output having gone away (`export | head`):
/// the command then stops quietly, as the tools of a pipeline do.
pub fn is_closed_pipe(error: &CommandError) -> bool {
    matches!(error, CommandError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// `export`: opens the log read-only, so it takes no lock, writes nothing in the data
/// directory and runs beside a server (exporting the log as it stood when opened).
pub async fn run_export(args: ExportArgs) -> Result<(), CommandError> {
    // Read before the log, so every head is one the exported log extends.
    let heads = crate::offline::stored_heads(&args.data).map_err(CommandError::Invalid)?;
    let store = crate::store::open_read_only(&args.data)?;
    let count = match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(io(format!("cannot create {}", path.display())))?;
            let mut writer = std::io::BufWriter::new(file);
            let count = export(&store, &heads, &mut writer).await?;
            let file = writer
                .into_inner()
                .map_err(|error| io("cannot write the export")(error.into_error()))?;
            file.sync_all()
                .map_err(io(format!("cannot sync {}", path.display())))?;
            count
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = std::io::BufWriter::new(stdout.lock());
            match export(&store, &heads, &mut lock).await {
                Err(error) if is_closed_pipe(&error) => return Ok(()),
                other => other?,
            }
        }
    };
    eprintln!("exported {count} events");
    Ok(())
}

pub async fn run_append(args: AppendArgs) -> Result<(), CommandError> {
    let stream = StreamName::parse(args.stream)?;
    let event_type = EventType::parse(args.event_type)?;
    let payload = match args.payload {
        Some(payload) => payload.into_bytes(),
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .take(ledger::store::EVENT_SIZE_MAX as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(io("cannot read the payload from standard input"))?;
            bytes
        }
    };
    // Everything in the log must stay readable by the ledger, or every command that folds
    // the log would fail: only well-formed ledger events are appended.
    ledger::domain::events::upcast(event_type.as_str(), 1, &payload).map_err(|error| {
        CommandError::Invalid(format!(
            "{event_type} with this payload is not an event the ledger reads: {error}"
        ))
    })?;
    let expected = args
        .expected_revision
        .map_or(ExpectedRevision::Any, ExpectedRevision::Exact);
    let opened = crate::store::open(&args.data).await?;
    let outcome = opened
        .store
        .append(
            &stream,
            expected,
            vec![NewEvent {
                id: Uuid::new_v4(),
                event_type,
                schema_version: 1,
                metadata: EventMetadata::default(),
                payload,
            }],
        )
        .await?;
    opened.close().await?;
    println!(
        "{}",
        serde_json::json!({ "revision": outcome.revision, "position": outcome.position.to_string() })
    );
    Ok(())
}

/// `read`: opens the log read-only, as `export` does.
pub async fn run_read(args: ReadArgs) -> Result<(), CommandError> {
    if args.limit == 0 || args.limit > PAGE_SIZE_MAX {
        return Err(CommandError::Invalid(format!(
            "--limit must be 1 to {PAGE_SIZE_MAX}"
        )));
    }
    let store = crate::store::open_read_only(&args.data)?;
    let events = match args.stream {
        Some(stream) => {
            let stream = StreamName::parse(stream)?;
            store
                .read_stream(
                    &stream,
                    StreamFrom::Revision(args.from),
                    Direction::Forward,
                    args.limit,
                )
                .await?
        }
        None => {
            store
                .read_all(Position::sequence(args.from), args.limit)
                .await?
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for event in &events {
        let view = EventView::new(event, PayloadForm::Readable);
        let line = serde_json::to_string(&view).expect("an event view serializes");
        match writeln!(out, "{line}") {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.map_err(io("cannot write to standard output"))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ledger::store::memory::MemoryStore;

    use super::*;

    #[tokio::test]
    async fn export_writes_every_event_with_exact_payload_and_chain() {
        let store = MemoryStore::new();
        let stream = StreamName::parse("account-1").unwrap();
        let payloads: [&[u8]; 2] = [br#"{"credits":"5"}"#, &[0xff, 0x00, 0x10]];
        for payload in payloads {
            store
                .append(
                    &stream,
                    ExpectedRevision::Any,
                    vec![NewEvent {
                        id: Uuid::new_v4(),
                        event_type: EventType::parse("Noted").unwrap(),
                        schema_version: 1,
                        metadata: EventMetadata::default(),
                        payload: payload.to_vec(),
                    }],
                )
                .await
                .unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(export(&store, &[], &mut out).await.unwrap(), 2);
        let check = verify_export(&out[..], &[]).unwrap().unwrap();
        assert_eq!(check.events, 2);
        let text = String::from_utf8(out).unwrap();
        let (events, trailer) = text.trim_end().rsplit_once('\n').unwrap();
        assert!(trailer.starts_with("{\"trailer\":"), "{trailer}");
        let lines: Vec<EventView> = events
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        use base64::Engine as _;
        for (line, payload) in lines.iter().zip(payloads) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(line.payload_base64.as_ref().unwrap())
                .unwrap();
            assert_eq!(bytes, payload);
        }
        assert!(lines[0].payload.is_some());
        assert!(lines[1].payload.is_none());
        assert_eq!(lines[1].chain_previous, lines[0].chain_current);
    }
}
