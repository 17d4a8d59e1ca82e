//! The shared key vault through the real binary: a data directory's vault copied into
//! PostgreSQL with `vault-migrate`, then `serve --key-vault` reading and erasing through
//! it. Runs against the test PostgreSQL of `ledger::pg::testing`; skipped,
//! saying why, when there is none.

use std::ffi::OsStr;
use std::process::Command;

use ledger::pg::testing;
use ledger::privacy::MasterKey;
use reqwest::StatusCode;
use serde_json::json;

use crate::privacy::{bearer, spawn, spawn_with, stop, BILLING, BINARY, PRIVACY};

fn database() -> Option<String> {
    match testing::database() {
        Ok(url) => Some(url),
        Err(why) if std::env::var_os("REFLEDGER_TEST_PG_REQUIRED").is_some() => {
            panic!("REFLEDGER_TEST_PG_REQUIRED is set but there is no PostgreSQL: {why}")
        }
        Err(why) => {
            println!("skipped: no PostgreSQL for the vault tests: {why}");
            None
        }
    }
}

const PERSON: &str = "6a7e0000-0000-4000-8000-0000000000b1";
const EMAIL: &str = "Shared.Vault@Example.org";

async fn export_of(base: &str) -> String {
    let response = reqwest::Client::new()
        .get(format!("{base}/v1/privacy/exports/{PERSON}"))
        .header("authorization", bearer(PRIVACY))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

#[tokio::test]
async fn a_data_directory_vault_moves_into_postgres_and_serve_erases_through_it() {
    let Some(url) = database() else { return };
    let data = tempfile::tempdir().unwrap();
    let kek_file = data.path().join("kek");
    std::fs::write(
        &kek_file,
        MasterKey::generate().unwrap().to_base64().as_bytes(),
    )
    .unwrap();
    let ledger_data = data.path().join("ledger");

    // One instance on its own vault, as before the cluster.
    let mut process = spawn(&ledger_data);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/accounts", process.base))
        .header("authorization", bearer(BILLING))
        .json(&json!({"account_id": PERSON, "name": "Shared Person", "email": EMAIL}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(export_of(&process.base).await.contains(EMAIL));
    stop(&mut process);

    let migrate = || {
        Command::new(BINARY)
            .args(["vault-migrate", "--data"])
            .arg(&ledger_data)
            .args(["--to", &url, "--key-vault-kek-file"])
            .arg(&kek_file)
            .env_remove("REFLEDGER_MASTER_KEY_FILE")
            .output()
            .unwrap()
    };
    let first = migrate();
    let said = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(said.contains("copied 1 keys (0 already there)"), "{said}");
    let again = migrate();
    let said = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.status.success());
    assert!(said.contains("copied 0 keys (1 already there)"), "{said}");

    // The directory vault moved aside: whatever the server reads now comes from PostgreSQL.
    std::fs::rename(ledger_data.join("vault"), data.path().join("old-vault")).unwrap();
    let shared: [&OsStr; 4] = [
        "--key-vault".as_ref(),
        url.as_ref(),
        "--key-vault-kek-file".as_ref(),
        kek_file.as_ref(),
    ];
    let mut process = spawn_with(&ledger_data, &shared);
    assert!(export_of(&process.base).await.contains(EMAIL));
    let person = uuid::Uuid::parse_str(PERSON).unwrap();
    assert_eq!(
        testing::rows_of(&url, "refledger_vault_keys", person, "profile").unwrap(),
        1
    );

    let response = reqwest::Client::new()
        .post(format!("{}/v1/privacy/erasures", process.base))
        .header("authorization", bearer(PRIVACY))
        .json(&json!({"account_id": PERSON, "request_id": "6a7e0000-0000-4000-8000-0000000000e9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        testing::rows_of(&url, "refledger_vault_keys", person, "profile").unwrap(),
        0
    );
    assert_eq!(
        testing::rows_of(&url, "refledger_vault_tombstones", person, "profile").unwrap(),
        1
    );
    assert!(!export_of(&process.base).await.contains(EMAIL));
    stop(&mut process);
    assert!(
        !ledger_data.join("vault").exists(),
        "no directory vault was made"
    );

    // A shared vault without its key-encryption key does not start.
    let refused = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&ledger_data)
        .args(["--key-vault", &url])
        .env_remove("REFLEDGER_KEY_VAULT_KEK_FILE")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--key-vault-kek-file"));

    // A new key-encryption key: the old one opens nothing any more.
    let new_kek_file = data.path().join("kek-2");
    std::fs::write(
        &new_kek_file,
        MasterKey::generate().unwrap().to_base64().as_bytes(),
    )
    .unwrap();
    let rotated = Command::new(BINARY)
        .args([
            "vault-rotate-kek",
            "--key-vault",
            &url,
            "--key-vault-kek-file",
        ])
        .arg(&kek_file)
        .arg("--new-kek-file")
        .arg(&new_kek_file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&rotated.stdout).into_owned();
    assert!(
        rotated.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(said.contains("re-wrapped 0 keys"), "{said}");
    let old_kek = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&ledger_data)
        .args(["--key-vault", &url, "--key-vault-kek-file"])
        .arg(&kek_file)
        .output()
        .unwrap();
    assert!(!old_kek.status.success());
    assert!(
        String::from_utf8_lossy(&old_kek.stderr).contains("does not open this vault"),
        "{}",
        String::from_utf8_lossy(&old_kek.stderr)
    );
    let rotated_flags: [&OsStr; 4] = [
        "--key-vault".as_ref(),
        url.as_ref(),
        "--key-vault-kek-file".as_ref(),
        new_kek_file.as_ref(),
    ];
    let mut process = spawn_with(&ledger_data, &rotated_flags);
    assert!(!export_of(&process.base).await.contains(EMAIL));
    stop(&mut process);
}

#[tokio::test]
async fn serve_reaches_the_shared_vault_over_tls_with_the_operators_ca() {
    let (url, ca_file) = match testing::tls_database() {
        Ok(found) => found,
        Err(why) if std::env::var_os("REFLEDGER_TEST_PG_REQUIRED").is_some() => {
            panic!("REFLEDGER_TEST_PG_REQUIRED is set but there is no TLS PostgreSQL: {why}")
        }
        Err(why) => {
            println!("skipped: no PostgreSQL with TLS: {why}");
            return;
        }
    };
    let data = tempfile::tempdir().unwrap();
    let kek_file = data.path().join("kek");
    std::fs::write(
        &kek_file,
        MasterKey::generate().unwrap().to_base64().as_bytes(),
    )
    .unwrap();
    let flags: [&OsStr; 6] = [
        "--key-vault".as_ref(),
        url.as_ref(),
        "--key-vault-kek-file".as_ref(),
        kek_file.as_ref(),
        "--key-vault-ca-file".as_ref(),
        ca_file.as_ref(),
    ];
    let ledger_data = data.path().join("ledger");
    let mut process = spawn_with(&ledger_data, &flags);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/accounts", process.base))
        .header("authorization", bearer(BILLING))
        .json(&json!({"account_id": PERSON, "name": "Shared Person", "email": EMAIL}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(export_of(&process.base).await.contains(EMAIL));
    stop(&mut process);
    assert!(
        !ledger_data.join("vault").exists(),
        "no directory vault was made"
    );

    // Without the CA, the database's certificate is not trusted: no start.
    let refused = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&ledger_data)
        .args(["--key-vault", &url, "--key-vault-kek-file"])
        .arg(&kek_file)
        .env_remove("REFLEDGER_KEY_VAULT_CA_FILE")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("key vault is unavailable"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
