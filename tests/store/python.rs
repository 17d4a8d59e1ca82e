//! The auditor's Python script in `docs/FORMAT.md` is run against a real log: it must
//! agree with `file::verify` on a sound log and catch a forged record (whose CRC was
//! recomputed, so only the hash chain can tell).

use std::path::Path;
use std::process::Command;

use ledger::store::conformance::{event, stream};
use ledger::store::file::{self, FileStore, FileStoreOptions};
use ledger::store::{EventStore, ExpectedRevision};
use tempfile::TempDir;

use crate::support::{frame_offsets, segment_paths};

fn script_from_format_doc() -> String {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/FORMAT.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/FORMAT.md");
    let section = doc
        .split("## Verifying a log with Python")
        .nth(1)
        .expect("the Python section of FORMAT.md");
    let start = section.find("```python\n").expect("a python block") + "```python\n".len();
    let end = section[start..]
        .find("\n```")
        .expect("end of the python block");
    section[start..start + end].to_owned()
}

fn run_script(script: &Path, dir: &Path) -> (bool, String) {
    let output = Command::new("python3")
        .arg(script)
        .arg(dir)
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_verifier_in_format_doc_checks_the_chain() {
    if Command::new("python3").arg("--version").output().is_err() {
        println!("SKIPPED: python3 is not installed, the FORMAT.md script was not run");
        return;
    }
    let dir = TempDir::new().unwrap();
    let store = FileStore::open(
        dir.path(),
        FileStoreOptions {
            segment_size_max: file::format::SEGMENT_SIZE_MAX_MIN,
            ..FileStoreOptions::default()
        },
    )
    .unwrap();
    let streams = [stream("a"), stream("b")];
    for n in 0..120 {
        let mut proposed = event(&n.to_string());
        proposed.payload.resize(10_000, b' ');
        store
            .append(&streams[n % 2], ExpectedRevision::Any, vec![proposed])
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    drop(store);
    let segments = segment_paths(dir.path());
    assert!(
        segments.len() >= 2,
        "the script must cross a segment boundary"
    );

    let scripts = TempDir::new().unwrap();
    let script = scripts.path().join("verify_log.py");
    std::fs::write(&script, script_from_format_doc()).unwrap();
    let (ok, output) = run_script(&script, dir.path());
    assert!(ok, "the script rejected a sound log:\n{output}");
    let report = file::verify(dir.path()).unwrap();
    assert!(
        output.contains(&format!("records {}\n", report.events)),
        "{output}"
    );
    assert!(
        output.contains(&format!("streams {}\n", report.streams)),
        "{output}"
    );
    assert!(
        output.contains(&format!("chain_head {}\n", report.chain_head.to_hex())),
        "{output}"
    );

    // Forge a record: change a payload byte and recompute its CRC, as a tamperer would.
    let target = &segments[0];
    let (offset, size) = frame_offsets(target)[7];
    let (offset, size) = (offset as usize, size as usize);
    let mut bytes = std::fs::read(target).unwrap();
    bytes[offset + size - 64 - 10] ^= 0x01;
    let crc = crc32c_of(&bytes[offset + 8..offset + size]);
    bytes[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(target, bytes).unwrap();
    let (ok, output) = run_script(&script, dir.path());
    assert!(!ok, "the script accepted a forged record:\n{output}");
    let name = target.file_name().unwrap().to_str().unwrap();
    assert!(
        output.contains(name) && output.contains(&format!("offset {offset}:")),
        "the script did not name the forged record:\n{output}"
    );
    let problem = file::verify(dir.path())
        .unwrap()
        .problem
        .expect("verify caught it");
    assert_eq!(
        (problem.file, problem.offset),
        (target.clone(), offset as u64)
    );
}

/// CRC32C, bit by bit: slow, independent of the crate the store uses.
fn crc32c_of(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The script keeps appends whole, as recovery does: an append cut short at the end of the
/// log is a torn tail whose records are not counted; one cut short anywhere else is
/// corruption at its first record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_verifier_checks_append_boundaries() {
    if Command::new("python3").arg("--version").output().is_err() {
        println!("SKIPPED: python3 is not installed, the FORMAT.md script was not run");
        return;
    }
    let dir = TempDir::new().unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    for n in 0..12usize {
        let events = (0..1 + n % 4).map(|k| event(&format!("{n}-{k}"))).collect();
        store
            .append(&stream("s"), ExpectedRevision::NoStream, events)
            .await
            .unwrap();
    }
    let scripts = TempDir::new().unwrap();
    let script = scripts.path().join("verify_log.py");
    std::fs::write(&script, script_from_format_doc()).unwrap();
    // While the writer runs, its preallocated zeros follow the last append: the end of
    // the records, not a torn tail.
    let running = TempDir::new().unwrap();
    std::fs::create_dir_all(running.path().join("log")).unwrap();
    for segment in segment_paths(dir.path()) {
        std::fs::copy(
            &segment,
            running
                .path()
                .join("log")
                .join(segment.file_name().unwrap()),
        )
        .unwrap();
    }
    let (ok, output) = run_script(&script, running.path());
    assert!(ok && !output.contains("torn"), "{output}");
    store.close().await.unwrap();
    drop(store);
    let (ok, output) = run_script(&script, dir.path());
    assert!(ok, "{output}");
    let events = file::verify(dir.path()).unwrap().events;
    assert!(output.contains(&format!("records {events}\n")), "{output}");
    // What follows fakes crashes during the last appends, which no checkpoint can cover
    // (a writer checkpoints only what is on disk): the clean close's checkpoint goes, or
    // the cut below would rightly read as a truncation.
    std::fs::remove_file(dir.path().join(file::format::CHECKPOINT_FILE)).unwrap();

    // The last append (four records) cut after its second record.
    let segment = &segment_paths(dir.path())[0];
    let frames = frame_offsets(segment);
    let last_append = &frames[frames.len() - 4..];
    let pristine = std::fs::read(segment).unwrap();
    std::fs::write(segment, &pristine[..last_append[2].0 as usize]).unwrap();
    let (ok, output) = run_script(&script, dir.path());
    assert!(ok, "a torn tail is not corruption:\n{output}");
    assert!(
        output.contains(&format!("offset {}\n", last_append[0].0))
            && output.contains(&format!("records {}\n", events - 4)),
        "the torn tail starts at the append's first record:\n{output}"
    );

    // The first append of two claims to be of three: the next append interrupts it.
    let mut bytes = pristine.clone();
    let second_append = frames[1].0;
    let at = second_append as usize;
    assert_eq!(&bytes[at + 16..at + 24], &[0, 0, 0, 0, 2, 0, 0, 0]);
    for &(offset, size) in &frames[1..3] {
        let at = offset as usize;
        bytes[at + 20] = 3;
        let end = at + size as usize;
        let crc = crc32c_of(&bytes[at + 8..end]);
        bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(segment, &bytes).unwrap();
    let (ok, output) = run_script(&script, dir.path());
    assert!(!ok, "an interrupted append passed:\n{output}");
    assert!(
        output.contains(&format!("offset {second_append}:"))
            && output.contains("incomplete append"),
        "{output}"
    );
    let problem = file::verify(dir.path())
        .unwrap()
        .problem
        .expect("verify caught it");
    assert_eq!(problem.offset, second_append);
}
