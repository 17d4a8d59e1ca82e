//! The domain through the command service over a real store: concurrent commands, and
//! the log read back as an auditor would (every event decodes, postings balance at every
//! position, states refold to what the service sees).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ledger::domain::account::{AccountCommand, ForAccount, OpenAccount};
use ledger::domain::events::{DomainEvent, GrantReason, PaymentKind, PersonalData};
use ledger::domain::ids::{
    Fingerprint, GrantId, PaymentId, PersonaId, RefundId, SpendId, SubscriptionId,
};
use ledger::domain::payment::{RecordPayment, RefundKind, RefundPayment};
use ledger::domain::payout::RunPayouts;
use ledger::domain::postings::{postings, Side};
use ledger::domain::{AccountId, Credits, Currency, Money, Period, ReferralCode};
use ledger::privacy::vault::memory::MemoryVault;
use ledger::privacy::KeyVault;
use ledger::service::{CommandMeta, Ledger, LedgerConfig};
use ledger::store::memory::MemoryStore;
use ledger::store::{EventStore, Position, PAGE_SIZE_MAX};
use uuid::Uuid;

fn vault() -> Arc<dyn KeyVault> {
    Arc::new(MemoryVault::new().unwrap())
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn eur(amount: &str) -> Money {
    Money::parse(amount, "EUR").unwrap()
}

fn account(n: u8) -> AccountId {
    AccountId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02x}")).unwrap()
}

fn meta() -> CommandMeta {
    CommandMeta::new(Uuid::new_v4())
}

fn open(n: u8, referrer: Option<u8>) -> OpenAccount {
    OpenAccount {
        account_id: account(n),
        referral_code: ReferralCode::for_account(account(n)),
        referred_with_code: referrer.map(|r| ReferralCode::for_account(account(r))),
        personal_data: PersonalData::parse("Someone", "someone@example.org", "198.51.100.4")
            .unwrap(),
        email_fingerprint: Fingerprint::parse(&format!("email-{n}")).unwrap(),
        ip_fingerprint: Fingerprint::parse(&format!("ip-{n}")).unwrap(),
        payment_fingerprint: None,
        opened_at: at("2026-09-01T00:00:00Z"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spends_never_overdraw_a_wallet() {
    let ledger = Arc::new(Ledger::new(
        MemoryStore::new(),
        LedgerConfig::default(),
        vault(),
    ));
    ledger.open_account(meta(), &open(1, None)).await.unwrap();
    let grant = ForAccount {
        account_id: account(1),
        command: AccountCommand::GrantCredits {
            grant_id: GrantId::parse("g").unwrap(),
            credits: Credits::new(100).unwrap(),
            reason: GrantReason::Promotion,
            expires_at: None,
            granted_at: at("2026-09-01T00:00:00Z"),
        },
    };
    ledger.account_command(meta(), &grant).await.unwrap();
    // 16 concurrent spends of 7 credits: exactly 14 fit in 100.
    let mut tasks = Vec::new();
    for n in 0..16 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let spend = ForAccount {
                account_id: account(1),
                command: AccountCommand::SpendCredits {
                    spend_id: SpendId::parse(&format!("s{n}")).unwrap(),
                    persona: PersonaId::parse("p").unwrap(),
                    credits: Credits::new(7).unwrap(),
                    spent_at: at("2026-09-02T00:00:00Z"),
                },
            };
            ledger.account_command(meta(), &spend).await
        }));
    }
    let (mut accepted, mut contended) = (0u64, 0u64);
    for task in tasks {
        match task.await.unwrap() {
            Ok(outcome) => {
                assert_eq!(outcome.events.len(), 1);
                accepted += 1;
            }
            Err(error) if error.code() == "contention" => contended += 1,
            Err(error) => assert_eq!(error.code(), "insufficient_credits", "{error}"),
        }
    }
    let wallet = ledger.account(account(1)).await.unwrap().unwrap().wallet;
    let left = wallet.balance_at(at("2026-09-03T00:00:00Z")).units();
    assert_eq!(left, 100 - 7 * accepted);
    // Every spend refused for want of credits was refused because fewer than 7 were left.
    if contended == 0 {
        assert_eq!(accepted, 14);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signups_under_one_referrer_are_all_recorded() {
    let ledger = Arc::new(Ledger::new(
        MemoryStore::new(),
        LedgerConfig::default(),
        vault(),
    ));
    ledger.open_account(meta(), &open(1, None)).await.unwrap();
    let mut tasks = Vec::new();
    for n in 2..12u8 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            // A caller retries on contention, with the same command id.
            let command_meta = meta();
            loop {
                match ledger.open_account(command_meta, &open(n, Some(1))).await {
                    Err(error) if error.code() == "contention" => continue,
                    other => return other,
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let referrer = ledger.account(account(1)).await.unwrap().unwrap();
    assert_eq!(referrer.referrals.len(), 10);
    for n in 2..12u8 {
        let referee = ledger.account(account(n)).await.unwrap().unwrap();
        assert_eq!(referee.referrer(), Some(account(1)));
    }
}

#[tokio::test]
async fn the_log_reads_back_as_balanced_books() {
    let store = MemoryStore::new();
    let ledger = Ledger::new(store.clone(), LedgerConfig::default(), vault());
    for n in 1..=6 {
        ledger
            .open_account(meta(), &open(n, (n > 1).then(|| n - 1)))
            .await
            .unwrap();
    }
    for (n, (payer, amount)) in [(6, "120.00"), (5, "33.33"), (4, "0.07"), (6, "999.99")]
        .into_iter()
        .enumerate()
    {
        let payment = RecordPayment {
            payment_id: PaymentId::parse(&format!("pi_{n}")).unwrap(),
            account_id: account(payer),
            kind: if n % 2 == 0 {
                PaymentKind::CreditPack {
                    credits: Credits::new(50).unwrap(),
                }
            } else {
                PaymentKind::Subscription {
                    subscription_id: SubscriptionId::parse("sub").unwrap(),
                }
            },
            amount: eur(amount),
            payment_fingerprint: None,
            received_at: at("2026-09-10T00:00:00Z"),
        };
        ledger.record_payment(meta(), &payment).await.unwrap();
    }
    let refund = RefundPayment {
        payment_id: PaymentId::parse("pi_3").unwrap(),
        refund_id: RefundId::parse("dp_1").unwrap(),
        kind: RefundKind::Chargeback,
        amount: eur("999.99"),
        refunded_at: at("2026-10-12T00:00:00Z"),
    };
    ledger.refund_payment(meta(), &refund).await.unwrap();
    let run = RunPayouts {
        period: Period::parse("2026-10").unwrap(),
        as_of: at("2026-11-01T00:00:00Z"),
        run_at: at("2026-11-01T00:00:00Z"),
    };
    ledger.run_payouts(meta(), &run).await.unwrap();

    let recorded = store
        .read_all(Position::START, PAGE_SIZE_MAX)
        .await
        .unwrap();
    assert!(recorded.len() > 20);
    let mut trial = Money::zero(Currency::EUR);
    let mut payouts = 0;
    for event in &recorded {
        // The books need no personal data: decode without keys.
        let decoded = ledger::privacy::domain::decode_redacted(event).unwrap();
        assert_eq!(decoded.event_type(), event.event_type.as_str());
        for posting in postings(&decoded) {
            trial = match posting.side {
                Side::Debit => trial.checked_add(&posting.amount).unwrap(),
                Side::Credit => trial.checked_sub(&posting.amount).unwrap(),
            };
        }
        assert!(trial.is_zero(), "trial balance is zero at every position");
        if let DomainEvent::PayoutScheduled(payout) = &decoded {
            payouts += 1;
            assert!(!payout.amount.is_negative());
        }
    }
    // Account 5 earned 24.00 on 120.00 (level 1) and 200.00 on 999.99, all charged back;
    // account 4 earned 12.00 (level 2 of 120.00) and 6.67 (level 1 of 33.33). Nobody
    // reaches 50.00, so the run paid nobody and everything carries over.
    assert_eq!(payouts, 0);
    let balances = ledger
        .balances_at(at("2026-11-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(balances[&account(5)].payable, eur("24.00"));
    assert_eq!(balances[&account(4)].payable, eur("18.67"));
}
