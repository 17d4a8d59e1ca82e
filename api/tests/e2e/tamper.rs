//! The tamper matrix: real generated logs attacked as an auditor would, each attack
//! caught by `refledger verify` (the real binary) and by the script of `docs/FORMAT.md`,
//! with the place named; the data directory's bytes are the same after every `verify`.
//!
//! Attacks that leave a sound chain (truncations, a forged append, a full re-chain) are
//! caught by a head recorded outside the records: the checkpoint's, the server's signed
//! heads, and, against an attacker who also deletes those, a trusted head the auditor
//! kept.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use crate::audit::{snapshot, text_of};
use crate::binary::{start, terminate};

const BINARY: &str = env!("CARGO_BIN_EXE_refledger");
const CORRUPT: i32 = 1;
/// Bytes of a format-2 frame before its body: length, CRC, position, append slot.
const BODY_AT: usize = 24;

/// One segment file: its header and its frames, each a whole record.
struct Segment {
    path: PathBuf,
    header: Vec<u8>,
    frames: Vec<Vec<u8>>,
}

fn read_log(data: &Path) -> Vec<Segment> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(data.join("log/log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let mut frames = Vec::new();
            let mut at = 32;
            while at + 4 <= bytes.len() {
                let size = 4 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
                if size == 4 {
                    break;
                }
                frames.push(bytes[at..at + size].to_vec());
                at += size;
            }
            Segment {
                path,
                header: bytes[..32].to_vec(),
                frames,
            }
        })
        .collect()
}

fn write_log(segments: &[Segment]) {
    for segment in segments {
        let mut bytes = segment.header.clone();
        for frame in &segment.frames {
            bytes.extend_from_slice(frame);
        }
        std::fs::write(&segment.path, bytes).unwrap();
    }
}

/// Byte offset of frame `index` in its segment.
fn offset_of(segment: &Segment, index: usize) -> usize {
    32 + segment.frames[..index].iter().map(Vec::len).sum::<usize>()
}

fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
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

fn fix_crc(frame: &mut [u8]) {
    let crc = crc32c(&frame[8..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn position_of(frame: &[u8]) -> u64 {
    u64::from_le_bytes(frame[8..16].try_into().unwrap())
}

fn set_position(frame: &mut [u8], position: u64) {
    frame[8..16].copy_from_slice(&position.to_le_bytes());
}

fn is_whole_append(frame: &[u8]) -> bool {
    frame[16..24] == [0, 0, 0, 0, 1, 0, 0, 0]
}

/// Positions 0, 1, 2, ... again from the segment's first, and CRCs recomputed: what an
/// attacker does after removing or inserting a record, short of recomputing hashes.
fn renumber(segment: &mut Segment) {
    let first = u64::from_le_bytes(segment.header[16..24].try_into().unwrap());
    for (index, frame) in segment.frames.iter_mut().enumerate() {
        set_position(frame, first + index as u64);
        fix_crc(frame);
    }
}

/// Every `previous` and `hash` recomputed from the record at `(segment, frame)` on, and
/// every CRC: a full re-chain.
fn rechain(segments: &mut [Segment], from: (usize, usize)) {
    let mut previous: Option<[u8; 32]> = None;
    for (number, segment) in segments.iter_mut().enumerate().skip(from.0) {
        let start = if number == from.0 { from.1 } else { 0 };
        for frame in &mut segment.frames[start..] {
            let end = frame.len();
            if let Some(previous) = previous {
                frame[end - 64..end - 32].copy_from_slice(&previous);
            }
            let mut hasher = Sha256::new();
            hasher.update(&frame[end - 64..end - 32]);
            hasher.update(&frame[BODY_AT..end - 64]);
            let hash: [u8; 32] = hasher.finalize().into();
            frame[end - 32..].copy_from_slice(&hash);
            fix_crc(frame);
            previous = Some(hash);
        }
    }
}

pub(crate) fn script_from_format_doc() -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/FORMAT.md"))
            .unwrap();
    let section = doc.split("## Verifying a log with Python").nth(1).unwrap();
    let start = section.find("```python\n").unwrap() + "```python\n".len();
    let end = section[start..].find("\n```").unwrap();
    section[start..start + end].to_owned()
}

pub(crate) fn python_can_check_signatures() -> bool {
    Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// What the auditor holds: a data directory the server ran on and stopped, and the
/// last head it signed, kept outside.
struct Evidence {
    _temp: tempfile::TempDir,
    data: PathBuf,
    trusted: PathBuf,
    script: PathBuf,
}

fn evidence() -> Evidence {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let output = Command::new(BINARY)
        .args([
            "simulate",
            "--accounts",
            "400",
            "--months",
            "4",
            "--seed",
            "7",
        ])
        .args(["--segment-size-max", "1100000", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let mut running = start(&data, &[]);
    let (exit, stderr) = terminate(&mut running);
    assert!(exit.success(), "{stderr}");
    let heads = std::fs::read_to_string(data.join("heads.jsonl")).unwrap();
    let trusted = temp.path().join("trusted-head.json");
    std::fs::write(&trusted, heads.lines().last().unwrap()).unwrap();
    let script = temp.path().join("verify_log.py");
    std::fs::write(&script, script_from_format_doc()).unwrap();
    Evidence {
        _temp: temp,
        data,
        trusted,
        script,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Where an attack must be reported: the file, and the offset when the attack fixes it.
struct Place {
    file: PathBuf,
    offset: Option<usize>,
    /// Words the report must hold.
    says: &'static str,
}

struct Attack {
    name: &'static str,
    /// The attacker also deletes the checkpoint and the server's heads, so only the
    /// auditor's trusted head is left to catch it.
    strong: bool,
    /// The auditor asks that a signed head covers every record.
    signed_to_end: bool,
    tamper: fn(&Path) -> Place,
}

fn run_attack(evidence: &Evidence, attack: &Attack, python: bool) {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    copy_dir(&evidence.data, &data);
    let place = (attack.tamper)(&data);
    if attack.strong {
        std::fs::remove_file(data.join("log/index.ckpt")).unwrap();
        std::fs::remove_file(data.join("heads.jsonl")).unwrap();
    }
    let before = snapshot(&data);
    let mut verify = Command::new(BINARY);
    verify.arg("verify").arg("--data").arg(&data);
    if attack.strong || attack.signed_to_end {
        verify.arg("--trusted-head").arg(&evidence.trusted);
    }
    if attack.signed_to_end {
        verify.arg("--signed-to-end");
    }
    let output = verify.output().unwrap();
    let report = text_of(&output);
    let name = attack.name;
    assert_eq!(output.status.code(), Some(CORRUPT), "{name}: {report}");
    assert!(
        snapshot(&data) == before,
        "{name}: verify changed the data directory"
    );
    let file = place.file.display().to_string();
    assert!(
        report.contains(&format!("CORRUPT {file}")),
        "{name}: not {file}: {report}"
    );
    if let Some(offset) = place.offset {
        assert!(
            report.contains(&format!("offset {offset}:")),
            "{name}: not {offset}: {report}"
        );
    }
    assert!(
        report.contains(place.says),
        "{name}: not {:?}: {report}",
        place.says
    );

    if python {
        let mut script = Command::new("python3");
        script.arg(&evidence.script).arg(data.join("log"));
        if attack.signed_to_end {
            script.arg("--signed-to-end");
        }
        if attack.strong || attack.signed_to_end {
            script.arg(&evidence.trusted);
        }
        let output = script.output().unwrap();
        let report = text_of(&output);
        assert_eq!(output.status.code(), Some(1), "script, {name}: {report}");
        assert!(report.contains("CORRUPT"), "script, {name}: {report}");
    }
}

fn middle_single(segment: &Segment) -> usize {
    let half = segment.frames.len() / 2;
    (half..segment.frames.len() - 2)
        .find(|&index| (index..index + 3).all(|at| is_whole_append(&segment.frames[at])))
        .expect("three appends of one record each")
}

fn flip_payload_bit(data: &Path) -> Place {
    let mut log = read_log(data);
    let index = log[0].frames.len() / 2;
    let frame = &mut log[0].frames[index];
    let at = frame.len() - 64 - 10;
    frame[at] ^= 0x01;
    write_log(&log);
    Place {
        file: log[0].path.clone(),
        offset: Some(offset_of(&log[0], index)),
        says: "checksum mismatch",
    }
}

fn flip_header_bit(data: &Path) -> Place {
    let mut log = read_log(data);
    let index = log[1].frames.len() / 3;
    log[1].frames[index][9] ^= 0x20;
    write_log(&log);
    Place {
        file: log[1].path.clone(),
        offset: Some(offset_of(&log[1], index)),
        says: "checksum mismatch",
    }
}

fn change_stored_hash(data: &Path) -> Place {
    let mut log = read_log(data);
    let index = log[0].frames.len() / 3;
    let frame = &mut log[0].frames[index];
    let end = frame.len();
    frame[end - 1] ^= 0x80;
    fix_crc(frame);
    write_log(&log);
    Place {
        file: log[0].path.clone(),
        offset: Some(offset_of(&log[0], index)),
        says: "hash",
    }
}

fn remove_record(data: &Path, renumbered: bool) -> Place {
    let mut log = read_log(data);
    let last = log.len() - 1;
    let index = middle_single(&log[last]);
    log[last].frames.remove(index);
    if renumbered {
        renumber(&mut log[last]);
    }
    write_log(&log);
    let says = if renumbered {
        "does not link"
    } else {
        "expected"
    };
    Place {
        file: log[last].path.clone(),
        offset: Some(offset_of(&log[last], index)),
        says,
    }
}

fn insert_record(data: &Path, renumbered: bool) -> Place {
    let mut log = read_log(data);
    let last = log.len() - 1;
    let index = middle_single(&log[last]);
    let copy = log[last].frames[index].clone();
    log[last].frames.insert(index + 1, copy);
    if renumbered {
        renumber(&mut log[last]);
    }
    write_log(&log);
    let says = if renumbered {
        "does not link"
    } else {
        "expected"
    };
    Place {
        file: log[last].path.clone(),
        offset: Some(offset_of(&log[last], index + 1)),
        says,
    }
}

fn swap_records(data: &Path, renumbered: bool) -> Place {
    let mut log = read_log(data);
    let last = log.len() - 1;
    let index = middle_single(&log[last]);
    log[last].frames.swap(index, index + 1);
    if renumbered {
        renumber(&mut log[last]);
    }
    write_log(&log);
    let says = if renumbered {
        "does not link"
    } else {
        "expected"
    };
    Place {
        file: log[last].path.clone(),
        offset: Some(offset_of(&log[last], index)),
        says,
    }
}

fn truncate_middle_segment(data: &Path) -> Place {
    let mut log = read_log(data);
    let half = log[1].frames.len() / 2;
    log[1].frames.truncate(half);
    write_log(&log);
    Place {
        file: log[1].path.clone(),
        offset: Some(offset_of(&log[1], half)),
        says: "missing",
    }
}

fn remove_last(data: &Path, count: usize) -> Place {
    let mut log = read_log(data);
    let last = log.len() - 1;
    let keep = log[last].frames.len() - count;
    log[last].frames.truncate(keep);
    // Cut at an append's boundary, as a careful attacker would: no torn tail to see.
    while !log[last].frames.is_empty()
        && log[last].frames.last().is_some_and(|frame| {
            let index = u32::from_le_bytes(frame[16..20].try_into().unwrap());
            let count = u32::from_le_bytes(frame[20..24].try_into().unwrap());
            index + 1 != count
        })
    {
        log[last].frames.pop();
    }
    write_log(&log);
    Place {
        file: log[last].path.clone(),
        offset: None,
        says: "truncated",
    }
}

fn remove_last_segment(data: &Path) -> Place {
    let log = read_log(data);
    std::fs::remove_file(&log[log.len() - 1].path).unwrap();
    Place {
        file: log[log.len() - 2].path.clone(),
        offset: None,
        says: "truncated",
    }
}

fn forge_append(data: &Path) -> Place {
    let mut log = read_log(data);
    let last = log.len() - 1;
    let mut forged = log[last].frames.last().unwrap().clone();
    let position = position_of(&forged) + 1;
    let end = forged.len();
    let head: [u8; 32] = forged[end - 32..].try_into().unwrap();
    set_position(&mut forged, position);
    forged[16..24].copy_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
    // A new event id, and the next revision of the copied record's stream.
    forged[BODY_AT] ^= 0xff;
    let revision_at = BODY_AT + 16;
    let revision = u64::from_le_bytes(forged[revision_at..revision_at + 8].try_into().unwrap());
    forged[revision_at..revision_at + 8].copy_from_slice(&(revision + 1).to_le_bytes());
    forged[end - 64..end - 32].copy_from_slice(&head);
    log[last].frames.push(forged);
    let index = log[last].frames.len() - 1;
    rechain(&mut log, (last, index));
    // The forged record's `previous` is the real head: rechain starts with it.
    write_log(&log);
    Place {
        file: log[last].path.clone(),
        offset: Some(offset_of(&log[last], index)),
        says: "past every known head",
    }
}

fn rechain_after_changing_an_amount(data: &Path) -> Place {
    let mut log = read_log(data);
    let needle = b"\"amount\":\"";
    let find = |body: &[u8], what: &[u8]| body.windows(what.len()).position(|w| w == what);
    // A commission's amount (2.00 becomes 9.00, say), in the first segment.
    let (index, at) = log[0]
        .frames
        .iter()
        .enumerate()
        .find_map(|(index, frame)| {
            let body = &frame[BODY_AT..frame.len() - 64];
            find(body, b"CommissionEarned")?;
            Some((index, BODY_AT + find(body, needle)? + needle.len()))
        })
        .expect("a commission with an amount");
    let frame = &mut log[0].frames[index];
    assert!(frame[at].is_ascii_digit(), "an amount's first digit");
    frame[at] = if frame[at] == b'9' { b'8' } else { b'9' };
    rechain(&mut log, (0, index));
    write_log(&log);
    let last = log.len() - 1;
    let final_frame = log[last].frames.len() - 1;
    Place {
        file: log[last].path.clone(),
        offset: Some(offset_of(&log[last], final_frame)),
        says: "rewritten",
    }
}

#[test]
fn every_attack_on_a_real_log_is_caught_and_placed() {
    let evidence = evidence();
    let python = python_can_check_signatures();
    if !python {
        println!("SKIPPED the script's half: python3 with `cryptography` is not installed");
    }
    // The untouched evidence verifies, with the trusted head and to the end.
    let output = Command::new(BINARY)
        .args(["verify", "--signed-to-end", "--data"])
        .arg(&evidence.data)
        .arg("--trusted-head")
        .arg(&evidence.trusted)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text_of(&output));
    let attacks: Vec<Attack> = vec![
        Attack {
            name: "flipped payload bit",
            strong: false,
            signed_to_end: false,
            tamper: flip_payload_bit,
        },
        Attack {
            name: "flipped header bit",
            strong: false,
            signed_to_end: false,
            tamper: flip_header_bit,
        },
        Attack {
            name: "changed stored hash",
            strong: false,
            signed_to_end: false,
            tamper: change_stored_hash,
        },
        Attack {
            name: "removed record",
            strong: false,
            signed_to_end: false,
            tamper: |data| remove_record(data, false),
        },
        Attack {
            name: "removed record, renumbered",
            strong: false,
            signed_to_end: false,
            tamper: |data| remove_record(data, true),
        },
        Attack {
            name: "inserted record",
            strong: false,
            signed_to_end: false,
            tamper: |data| insert_record(data, false),
        },
        Attack {
            name: "inserted record, renumbered",
            strong: false,
            signed_to_end: false,
            tamper: |data| insert_record(data, true),
        },
        Attack {
            name: "swapped records",
            strong: false,
            signed_to_end: false,
            tamper: |data| swap_records(data, false),
        },
        Attack {
            name: "swapped records, renumbered",
            strong: false,
            signed_to_end: false,
            tamper: |data| swap_records(data, true),
        },
        Attack {
            name: "truncated middle segment",
            strong: false,
            signed_to_end: false,
            tamper: truncate_middle_segment,
        },
        Attack {
            name: "last record removed",
            strong: false,
            signed_to_end: false,
            tamper: |data| remove_last(data, 1),
        },
        Attack {
            name: "last 1000 records removed",
            strong: false,
            signed_to_end: false,
            tamper: |data| remove_last(data, 1000),
        },
        Attack {
            name: "last segment removed",
            strong: false,
            signed_to_end: false,
            tamper: remove_last_segment,
        },
        Attack {
            name: "last record removed, checkpoint and heads deleted",
            strong: true,
            signed_to_end: false,
            tamper: |data| remove_last(data, 1),
        },
        Attack {
            name: "last 1000 removed, checkpoint and heads deleted",
            strong: true,
            signed_to_end: false,
            tamper: |data| remove_last(data, 1000),
        },
        Attack {
            name: "last segment removed, checkpoint and heads deleted",
            strong: true,
            signed_to_end: false,
            tamper: remove_last_segment,
        },
        Attack {
            name: "forged record appended with a valid chain",
            strong: false,
            signed_to_end: true,
            tamper: forge_append,
        },
        Attack {
            name: "full re-chain after changing an amount",
            strong: false,
            signed_to_end: false,
            tamper: rechain_after_changing_an_amount,
        },
        Attack {
            name: "full re-chain, checkpoint and heads deleted",
            strong: true,
            signed_to_end: false,
            tamper: rechain_after_changing_an_amount,
        },
    ];
    for attack in &attacks {
        run_attack(&evidence, attack, python);
    }
}
