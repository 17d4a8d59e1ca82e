//! Rough throughput of the command service over the in-memory store: signups in a chain,
//! payments with three commission levels, and spends on one account (whose whole stream
//! every spend rereads). Run: `cargo run --release -p ledger --example domain_throughput`.

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use ledger::domain::account::{AccountCommand, ForAccount, OpenAccount};
use ledger::domain::events::{GrantReason, PaymentKind, PersonalData};
use ledger::domain::ids::{Fingerprint, GrantId, PaymentId, PersonaId, SpendId, SubscriptionId};
use ledger::domain::payment::RecordPayment;
use ledger::domain::{AccountId, Credits, Money, ReferralCode};
use ledger::service::{CommandMeta, Ledger, LedgerConfig};
use ledger::store::memory::MemoryStore;
use uuid::Uuid;

fn account(n: u64) -> AccountId {
    AccountId::parse(&format!("00000000-0000-4000-8000-{n:012x}")).unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let start_time: DateTime<Utc> = "2026-09-01T00:00:00Z".parse().unwrap();
    let ledger = Ledger::new(
        MemoryStore::new(),
        LedgerConfig::default(),
        std::sync::Arc::new(ledger::privacy::vault::memory::MemoryVault::new().unwrap()),
    );
    let meta = || CommandMeta::new(Uuid::new_v4());

    let accounts = 1_000u64;
    let started = Instant::now();
    for n in 1..=accounts {
        let command = OpenAccount {
            account_id: account(n),
            referral_code: ReferralCode::for_account(account(n)),
            referred_with_code: (n > 1).then(|| ReferralCode::for_account(account(n - 1))),
            personal_data: PersonalData::parse("Someone", "someone@example.org", "192.0.2.1")
                .unwrap(),
            email_fingerprint: Fingerprint::parse(&format!("e{n}")).unwrap(),
            ip_fingerprint: Fingerprint::parse(&format!("i{n}")).unwrap(),
            payment_fingerprint: None,
            opened_at: start_time + Duration::minutes(n as i64),
        };
        ledger.open_account(meta(), &command).await.unwrap();
    }
    report("signups (chain)", accounts, started);

    let payments = 5_000u64;
    let started = Instant::now();
    for n in 0..payments {
        let command = RecordPayment {
            payment_id: PaymentId::parse(&format!("pi_{n}")).unwrap(),
            account_id: account(accounts - n % 100),
            kind: PaymentKind::Subscription {
                subscription_id: SubscriptionId::parse("sub").unwrap(),
            },
            amount: Money::parse("19.99", "EUR").unwrap(),
            payment_fingerprint: None,
            received_at: start_time + Duration::days(1),
        };
        ledger.record_payment(meta(), &command).await.unwrap();
    }
    report("payments (3 commissions each)", payments, started);

    let grant = ForAccount {
        account_id: account(1),
        command: AccountCommand::GrantCredits {
            grant_id: GrantId::parse("g").unwrap(),
            credits: Credits::new(1_000_000).unwrap(),
            reason: GrantReason::Promotion,
            expires_at: None,
            granted_at: start_time,
        },
    };
    ledger.account_command(meta(), &grant).await.unwrap();
    for batch in 0..3 {
        let spends = 1_000u64;
        let started = Instant::now();
        for n in 0..spends {
            let spend = ForAccount {
                account_id: account(1),
                command: AccountCommand::SpendCredits {
                    spend_id: SpendId::parse(&format!("s{batch}-{n}")).unwrap(),
                    persona: PersonaId::parse("p").unwrap(),
                    credits: Credits::new(1).unwrap(),
                    spent_at: start_time + Duration::days(2),
                },
            };
            ledger.account_command(meta(), &spend).await.unwrap();
        }
        report(
            &format!(
                "spends on one account, events {}..{}",
                batch * spends,
                (batch + 1) * spends
            ),
            spends,
            started,
        );
    }
}

fn report(what: &str, count: u64, started: Instant) {
    let elapsed = started.elapsed();
    println!(
        "{what}: {count} in {:.3} s, {:.0} per second",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
}
