//! What an auditor relies on, through the real binary: the read-only tools change no byte
//! of the data directory, run beside a server, end with distinct exit codes, and stop
//! quietly when their reader goes away.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::binary::{start, terminate};

const BINARY: &str = env!("CARGO_BIN_EXE_refledger");

/// Exit statuses of `verify`.
const INTACT: i32 = 0;
const CORRUPT: i32 = 1;
const UNREADABLE: i32 = 2;
const TORN_TAIL: i32 = 3;

/// A real log: a simulated history written by the domain's deciders.
pub(crate) fn simulated(accounts: u32, months: u32) -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args(["simulate", "--accounts", &accounts.to_string()])
        .args(["--months", &months.to_string(), "--seed", "7", "--data"])
        .arg(temp.path().join("data"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    temp
}

/// Every file under `dir` and its bytes.
pub(crate) fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

pub(crate) fn refledger(args: &[&str], data: &Path) -> Output {
    Command::new(BINARY)
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("REFLEDGER_DATA")
        .output()
        .unwrap()
}

pub(crate) fn text_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

fn last_segment(data: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data.join("log/log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    segments.pop().unwrap()
}

#[test]
fn read_only_tools_change_no_byte_and_end_with_distinct_codes() {
    let temp = simulated(40, 2);
    let data = temp.path().join("data");
    let before = snapshot(&data);
    for args in [
        &["verify"][..],
        &["export"],
        &["read", "--limit", "5"],
        &["report", "trial-balance"],
    ] {
        let output = refledger(args, &data);
        assert_eq!(
            output.status.code(),
            Some(INTACT),
            "{args:?}: {}",
            text_of(&output)
        );
        assert!(
            snapshot(&data) == before,
            "{args:?} changed the data directory"
        );
    }

    // A reader that goes away is no panic, and does not change the verdict.
    for args in [&["verify"][..], &["export"], &["read"]] {
        let mut child = Command::new(BINARY)
            .args(args)
            .arg("--data")
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(INTACT), "{args:?}: {stderr}");
    }

    let missing = refledger(&["verify"], &temp.path().join("no-such-dir"));
    assert_eq!(
        missing.status.code(),
        Some(UNREADABLE),
        "{}",
        text_of(&missing)
    );
    let missing = refledger(&["export"], &temp.path().join("no-such-dir"));
    assert_eq!(
        missing.status.code(),
        Some(UNREADABLE),
        "{}",
        text_of(&missing)
    );

    // Bytes that are no record yet at the very end: a torn tail, reported and left.
    let segment = last_segment(&data);
    let mut bytes = std::fs::read(&segment).unwrap();
    let sound_len = bytes.len();
    bytes.extend_from_slice(&[0x55; 40]);
    std::fs::write(&segment, &bytes).unwrap();
    let torn = snapshot(&data);
    let output = refledger(&["verify"], &data);
    assert_eq!(
        output.status.code(),
        Some(TORN_TAIL),
        "{}",
        text_of(&output)
    );
    assert!(
        text_of(&output).contains(&format!("offset {sound_len}")),
        "{}",
        text_of(&output)
    );
    assert!(snapshot(&data) == torn, "verify cut the torn tail");

    // A flipped bit in the middle: corruption, named by file and offset.
    bytes.truncate(sound_len);
    bytes[sound_len / 2] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    let output = refledger(&["verify"], &data);
    assert_eq!(output.status.code(), Some(CORRUPT), "{}", text_of(&output));
    assert!(text_of(&output).contains("CORRUPT"), "{}", text_of(&output));
    let export = refledger(&["export"], &data);
    assert_eq!(export.status.code(), Some(CORRUPT), "{}", text_of(&export));
}

/// `verify`, `export` and `read` work while a server holds the data directory, and leave
/// its log as they found it.
#[test]
fn read_only_tools_run_beside_a_server() {
    let temp = simulated(20, 1);
    let data = temp.path().join("data");
    let mut running = start(&data, &[]);
    let log = data.join("log");
    let before = snapshot(&log);
    for args in [&["verify"][..], &["export"], &["read", "--limit", "3"]] {
        let output = refledger(args, &data);
        assert_eq!(
            output.status.code(),
            Some(INTACT),
            "{args:?}: {}",
            text_of(&output)
        );
    }
    assert!(snapshot(&log) == before, "a read-only tool changed the log");
    let (exit, stderr) = terminate(&mut running);
    assert!(exit.success(), "{stderr}");
}

/// The export is an audit artefact: it ends with a trailer (count, head, the latest signed
/// head), and `verify --export` finds a changed, cut or extended export, naming the line.
#[test]
fn verify_export_checks_every_line_and_the_trailer() {
    let temp = simulated(20, 1);
    let data = temp.path().join("data");
    let mut running = start(&data, &[]);
    let (exit, stderr) = terminate(&mut running);
    assert!(exit.success(), "{stderr}");
    let export = temp.path().join("export.jsonl");
    let output = Command::new(BINARY)
        .args(["export", "--data"])
        .arg(&data)
        .arg("--output")
        .arg(&export)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(INTACT), "{}", text_of(&output));
    let check = |path: &Path| {
        Command::new(BINARY)
            .arg("verify")
            .arg("--export")
            .arg(path)
            .output()
            .unwrap()
    };
    let output = check(&export);
    assert_eq!(output.status.code(), Some(INTACT), "{}", text_of(&output));
    assert!(
        text_of(&output).contains("extends the head signed at"),
        "{}",
        text_of(&output)
    );
    let text = std::fs::read_to_string(&export).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let trailer: serde_json::Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
    assert_eq!(
        trailer["trailer"]["events"].as_u64(),
        Some(lines.len() as u64 - 1)
    );
    assert_eq!(
        trailer["trailer"]["signed_head"]["events"],
        trailer["trailer"]["events"]
    );

    let tampered = temp.path().join("tampered.jsonl");
    let attempt = |lines: Vec<String>, line: usize, says: &str| {
        std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
        let output = check(&tampered);
        let report = text_of(&output);
        assert_eq!(output.status.code(), Some(CORRUPT), "{says}: {report}");
        assert!(
            report.contains(&format!("line {line}: ")),
            "{says}: {report}"
        );
        assert!(report.contains(says), "{says}: {report}");
    };
    let owned: Vec<String> = lines.iter().map(|line| (*line).to_owned()).collect();
    // One character of the hashed bytes changed.
    let mut changed = owned.clone();
    let mut event: serde_json::Value = serde_json::from_str(&changed[5]).unwrap();
    let base64 = event["payload_base64"].as_str().unwrap().to_owned();
    let flipped = if base64.starts_with('e') { "f" } else { "e" };
    event["payload_base64"] = serde_json::Value::String(flipped.to_owned() + &base64[1..]);
    changed[5] = event.to_string();
    attempt(changed, 6, "hash");
    // The readable copy changed, the hashed bytes not.
    let mut changed = owned.clone();
    let mut event: serde_json::Value = serde_json::from_str(&changed[3]).unwrap();
    event["payload"] = serde_json::json!({"forged": true});
    changed[3] = event.to_string();
    attempt(changed, 4, "payload is not the JSON of payload_base64");
    // Cut: the trailer gone, or the last event gone.
    attempt(
        owned[..owned.len() - 1].to_vec(),
        owned.len() - 1,
        "trailer",
    );
    let mut cut = owned.clone();
    cut.remove(owned.len() - 2);
    attempt(cut, owned.len() - 1, "the trailer says");
}

fn prove(args: &[&str], data: &Path) -> serde_json::Value {
    let mut all = vec!["prove"];
    all.extend_from_slice(args);
    let output = refledger(&all, data);
    assert_eq!(output.status.code(), Some(INTACT), "{}", text_of(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Merkle proofs of a real log hold, and stay valid after a subject is erased: the tree
/// covers ciphertext, and erasure destroys keys, not records.
#[test]
fn merkle_proofs_hold_and_survive_an_erasure() {
    let temp = simulated(30, 1);
    let data = temp.path().join("data");
    // The subject to erase, and the record that opened their account.
    let first = refledger(&["read", "--limit", "100"], &data);
    let (account, position) = String::from_utf8(first.stdout)
        .unwrap()
        .lines()
        .find_map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            let account = event["stream"]
                .as_str()?
                .strip_prefix("account-")?
                .to_owned();
            Some((account, event["position"].as_str()?.to_owned()))
        })
        .expect("an account among the first events");
    let size = refledger(&["verify"], &data);
    let size: u64 = text_of(&size)
        .strip_prefix("files: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap();
    let before: api::proofs::InclusionProof =
        serde_json::from_value(prove(&["inclusion", "--position", &position], &data)).unwrap();
    assert!(before.holds(), "{before:?}");
    assert_eq!(before.size, size);
    assert!(before.proof.len() <= 64 - size.leading_zeros() as usize);
    let mut forged = before.clone();
    forged.record_hash = "00".repeat(32);
    assert!(!forged.holds());

    let erased = Command::new(BINARY)
        .args(["erase", "--account", &account, "--request-id"])
        .arg(uuid::Uuid::new_v4().to_string())
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(erased.status.success(), "{}", text_of(&erased));
    let size_text = size.to_string();
    let after: api::proofs::InclusionProof = serde_json::from_value(prove(
        &["inclusion", "--position", &position, "--size", &size_text],
        &data,
    ))
    .unwrap();
    assert_eq!(after, before, "the erasure changed no record hash");
    let grown: api::proofs::ConsistencyProof =
        serde_json::from_value(prove(&["consistency", "--from", &size_text], &data)).unwrap();
    assert!(
        grown.to > size,
        "the erasure is recorded by events of its own"
    );
    assert!(grown.holds(), "{grown:?}");
    assert_eq!(grown.from_root, before.root);

    // The FORMAT.md script checks both proofs, and refuses them changed.
    if Command::new("python3").arg("--version").output().is_err() {
        println!("SKIPPED the script's half: python3 is not installed");
        return;
    }
    let script = temp.path().join("verify_log.py");
    std::fs::write(&script, crate::tamper::script_from_format_doc()).unwrap();
    let check = |proof: &serde_json::Value| {
        let path = temp.path().join("proof.json");
        std::fs::write(&path, proof.to_string()).unwrap();
        let output = Command::new("python3")
            .arg(&script)
            .arg("--proof")
            .arg(&path)
            .output()
            .unwrap();
        (output.status.code(), text_of(&output))
    };
    let mut bad_inclusion = serde_json::to_value(&after).unwrap();
    let mut bad_consistency = serde_json::to_value(&grown).unwrap();
    for proof in [&bad_inclusion, &bad_consistency] {
        let (code, output) = check(proof);
        assert_eq!(code, Some(0), "{output}");
        assert!(output.contains("proof holds"), "{output}");
    }
    bad_inclusion["position"] = serde_json::json!(after.position + 1);
    bad_consistency["from_root"] = serde_json::Value::String("00".repeat(32));
    for proof in [&bad_inclusion, &bad_consistency] {
        let (code, output) = check(proof);
        assert_eq!(code, Some(1), "{output}");
        assert!(output.contains("does not hold"), "{output}");
    }
}
