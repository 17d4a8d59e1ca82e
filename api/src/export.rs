//! The small commands that work on the store alone: `export`, `append` and `read`.
//! `export` and `read` open the log read-only; `append` is the one that writes.

use std::io::{Read as _, Write};

use ledger::store::{
    Direction, EventMetadata, EventStore, EventType, ExpectedRevision, NewEvent, Position,
    StoreError, StreamFrom, StreamName, PAGE_SIZE_MAX,
};
use uuid::Uuid;

use crate::cli::{AppendArgs, ExportArgs, ReadArgs};
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

/// Writes every event of the log, in global order, one JSON object per line, with the
/// payload's exact bytes in base64 and the chain hashes: an auditor recomputes the chain
/// from this file alone. Returns the number of events written.
pub async fn export(store: &dyn EventStore, out: &mut dyn Write) -> Result<u64, CommandError> {
    let mut from = Position::START;
    let mut count = 0u64;
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
        }
    }
    out.flush().map_err(io("cannot write the export"))?;
    Ok(count)
}

/// Whether `error` is the reader of standard output having gone away (`export | head`):
/// the command then stops quietly, as the tools of a pipeline do.
pub fn is_closed_pipe(error: &CommandError) -> bool {
    matches!(error, CommandError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// `export`: opens the log read-only, so it takes no lock, writes nothing in the data
/// directory and runs beside a server (exporting the log as it stood when opened).
pub async fn run_export(args: ExportArgs) -> Result<(), CommandError> {
    let store = crate::store::open_read_only(&args.data)?;
    let count = match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(io(format!("cannot create {}", path.display())))?;
            let mut writer = std::io::BufWriter::new(file);
            let count = export(&store, &mut writer).await?;
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
            match export(&store, &mut lock).await {
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
        assert_eq!(export(&store, &mut out).await.unwrap(), 2);
        let lines: Vec<EventView> = String::from_utf8(out)
            .unwrap()
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
