//! The server's edges (issue #18, defects 5 and 7): errors raised below the handlers are
//! problem+json too, and no slow, silent or half-sent client holds a connection for good;
//! and what the server logs on the way (plain off a terminal, JSON on request).

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::idempotency::Idempotency;
use api::server::Edges;
use api::tokens::Role;
use ledger::store::memory::MemoryStore;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{new_vault, problem, secret, TestServer};

const EDGE: Duration = Duration::from_millis(800);

async fn edged() -> TestServer {
    TestServer::start_edged(
        Arc::new(MemoryStore::new()),
        Idempotency::in_memory(),
        new_vault(),
        Edges {
            header_read: EDGE,
            body_read_idle: EDGE,
        },
    )
    .await
}

fn address(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `within` passes), returning what
/// it sent.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut answer = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut answer)).await {
        Ok(_) => Some(answer),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_long_target_and_too_many_headers_are_problems() {
    let server = TestServer::start().await;
    let long = format!("/v1/events?from={}", "9".repeat(10 * 1024));
    let response = server.get(&long, Some(Role::Auditor)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::URI_TOO_LONG);
    assert_eq!(problem(response).await["type"], "uri_too_long");

    let mut request = server.get("/v1/events", Some(Role::Auditor));
    for index in 0..150 {
        request = request.header(format!("x-filler-{index}"), "1");
    }
    let response = request.send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(problem(response).await["type"], "headers_too_large");

    let response = server
        .get("/v1/events", Some(Role::Auditor))
        .header("x-filler", "a".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(problem(response).await["type"], "headers_too_large");
    server.stop().await;
}

#[tokio::test]
async fn a_body_shorter_than_its_length_is_answered_408_and_let_go() {
    let server = edged().await;
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    let head = format!(
        "POST /v1/payments HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"payment_id\"",
        secret(Role::Billing)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut stream, EDGE * 6)
        .await
        .expect("the server lets the connection go");
    assert!(started.elapsed() < EDGE * 6);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert_eq!(server.event_count().await, 0);
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_never_stop_the_server_accepting() {
    // More idle connections than the common soft limit of 1,024 descriptors allows.
    api::server::raise_open_files_limit();
    let server = edged().await;
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        idle.push(TcpStream::connect(address(&server)).await.unwrap());
    }
    let response = server.get("/healthz", None).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "still accepting");
    // Silent connections, and one that sent half a head, are closed at the edge.
    let mut half = TcpStream::connect(address(&server)).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nhost: te")
        .await
        .unwrap();
    idle.push(half);
    for stream in &mut idle {
        assert!(
            read_to_close(stream, EDGE * 6).await.is_some(),
            "an idle connection is closed"
        );
    }
    server.stop().await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn serve_raises_its_open_files_limit_to_the_hard_limit() {
    let hard = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(4).map(str::to_owned))
        .unwrap();
    let Ok(hard) = hard.parse::<u64>() else {
        return; // Unlimited: nothing to raise.
    };
    if hard <= 256 {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 256 && exec {} serve --listen 127.0.0.1:0 --data {} --token billing:{}",
            crate::privacy::BINARY,
            data.path().display(),
            secret(Role::Billing)
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3).map(str::to_owned))
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        soft,
        hard.to_string(),
        "the soft limit was raised: {limits}"
    );
}

/// Starts `serve` with `flags`, stops it with SIGTERM, and returns what it wrote to its
/// standard error (a pipe, not a terminal).
#[cfg(unix)]
fn serve_logs(flags: &[&str]) -> String {
    use std::io::{BufRead as _, Read as _};
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(crate::privacy::BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .args(["--token", &format!("billing:{}", secret(Role::Billing))])
        .args(flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on"), "{line}");
    let terminated = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    assert!(child.wait().unwrap().success());
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    logs
}

#[cfg(unix)]
#[test]
fn logs_are_plain_off_a_terminal_and_json_on_request() {
    let text = serve_logs(&[]);
    assert!(text.contains("INFO"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes in a pipe: {text:?}"
    );
    let json = serve_logs(&["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        lines.iter().any(|line| line["level"] == "INFO"),
        "JSON log lines: {json}"
    );
    assert!(!json.contains('\u{1b}'), "{json:?}");
    assert!(
        lines.iter().any(|line| line["fields"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("stopped"))),
        "{json}"
    );
}
