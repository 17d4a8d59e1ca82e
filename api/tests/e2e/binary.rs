//! The real binary: first start, token generation, SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

const BINARY: &str = env!("CARGO_BIN_EXE_refledger");

struct Running {
    child: Child,
    base: String,
}

/// Starts `refledger serve` on a free port and waits for its address line.
fn start(data: &std::path::Path, extra: &[&str]) -> Running {
    let mut child = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .env_remove("REFLEDGER_TOKEN")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Running { child, base }
}

fn terminate(running: &mut Running) -> (std::process::ExitStatus, String) {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = running.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server stops on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(running.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (exit, stderr)
}

#[tokio::test]
async fn first_start_generates_private_tokens_and_sigterm_stops_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("ledger-data");
    let mut running = start(&data_dir, &[]);

    let tokens_path = data_dir.join("tokens");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&tokens_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the tokens file is private");
    }
    let text = std::fs::read_to_string(&tokens_path).unwrap();
    let secret_of = |role: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{role}:")))
            .unwrap_or_else(|| panic!("no {role} token in {text}"))
            .to_owned()
    };
    for role in ["billing", "finance", "auditor", "privacy", "admin"] {
        assert_eq!(secret_of(role).len(), 64, "32 random bytes in hex");
    }
    let client = reqwest::Client::new();
    let events = format!("{}/v1/events", running.base);
    let response = client
        .get(&events)
        .bearer_auth(secret_of("auditor"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = client
        .get(&events)
        .bearer_auth(secret_of("billing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let (exit, stderr) = terminate(&mut running);
    assert!(exit.success(), "{exit:?}: {stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(stderr.contains("the store is flushed"), "{stderr}");
    assert!(
        stderr.contains(&tokens_path.display().to_string()),
        "prints where: {stderr}"
    );
    for role in ["billing", "auditor"] {
        assert!(!stderr.contains(&secret_of(role)), "secrets never printed");
    }

    // A second start reuses the tokens instead of generating new ones.
    let mut running = start(&data_dir, &[]);
    assert_eq!(std::fs::read_to_string(&tokens_path).unwrap(), text);
    let response = client
        .get(format!("{}/v1/events", running.base))
        .bearer_auth(secret_of("auditor"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (exit, _) = terminate(&mut running);
    assert!(exit.success());
}

#[tokio::test]
async fn tokens_given_on_the_command_line_replace_generation() {
    let data = tempfile::tempdir().unwrap();
    let mut running = start(data.path(), &["--token", "auditor:given-auditor-secret-01"]);
    assert!(!data.path().join("tokens").exists());
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/v1/events", running.base))
        .bearer_auth("given-auditor-secret-01")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (exit, _) = terminate(&mut running);
    assert!(exit.success());
}

#[test]
fn a_bad_token_flag_is_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            "boss:whatever-long-secret",
        ])
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown role"), "{stderr}");
}

#[test]
fn commands_not_built_yet_say_so_and_fail() {
    let data = tempfile::tempdir().unwrap();
    for command in ["report", "erase"] {
        let output = Command::new(BINARY)
            .args([command, "--data"])
            .arg(data.path())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("not yet available"), "{command}: {stderr}");
    }
}

#[tokio::test]
async fn serve_demo_loads_the_demo_data_on_first_run() {
    let data = tempfile::tempdir().unwrap();
    let mut running = start(
        data.path(),
        &["--demo", "--token", "billing:demo-billing-secret-01"],
    );
    let client = reqwest::Client::new();
    let wallet: serde_json::Value = client
        .get(format!(
            "{}/v1/accounts/{}/credits",
            running.base,
            api::demo::CARLA
        ))
        .bearer_auth("demo-billing-secret-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wallet["balance"], 100);
    let upline: serde_json::Value = client
        .get(format!(
            "{}/v1/accounts/{}/upline",
            running.base,
            api::demo::CARLA
        ))
        .bearer_auth("demo-billing-secret-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(upline["upline"][0]["account_id"], api::demo::BOB);
    assert_eq!(upline["upline"][1]["account_id"], api::demo::ADA);
    let (exit, stderr) = terminate(&mut running);
    assert!(exit.success(), "{stderr}");
    assert!(stderr.contains("loaded the demo data set"), "{stderr}");
}

#[test]
fn append_refuses_what_the_ledger_could_not_read() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args(["append", "--stream", "notes", "--event-type", "NoteTaken"])
        .args(["--payload", "{}", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not an event the ledger reads"), "{stderr}");
}
