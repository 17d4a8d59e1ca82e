//! The demo data set of `serve --demo`: a three-level referral chain, a wallet and a
//! payment with its commissions, with fixed ids so the README's `curl` calls work as
//! written. Loaded through the same command service as any request, so it obeys every
//! rule; loaded only into an empty log.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use ledger::domain::account::{AccountCommand, ForAccount, OpenAccount};
use ledger::domain::events::{GrantReason, PaymentKind, PersonalData};
use ledger::domain::ids::{Fingerprint, GrantId, PaymentId, SubscriptionId};
use ledger::domain::payment::RecordPayment;
use ledger::domain::{AccountId, Credits, Money, ReferralCode};
use ledger::service::{CommandMeta, LedgerError};

use ledger::privacy::domain::fingerprint_token;
use ledger::privacy::fingerprint::FingerprintKind;

use crate::http::AppState;
use crate::idempotency::CommandKey;

/// Ada referred Bob, who referred Carla.
pub const ADA: &str = "00000000-0000-4000-8000-00000000000a";
pub const BOB: &str = "00000000-0000-4000-8000-00000000000b";
pub const CARLA: &str = "00000000-0000-4000-8000-00000000000c";
/// Carla's subscription payment, which pays Bob and Ada commissions.
pub const PAYMENT: &str = "pi_demo_1";

/// Why the demo data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo data set goes into an empty log only; this one holds events")]
    NotEmpty,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] ledger::store::StoreError),
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("demo times are valid")
        .with_timezone(&Utc)
}

fn meta(name: &str) -> CommandMeta {
    let key = CommandKey::new("demo", name, "demo").expect("demo keys are valid");
    CommandMeta::new(key.command_id())
}

/// Loads the demo data set into the (empty) log of `state`.
pub async fn load(state: &AppState) -> Result<(), DemoError> {
    if state.store.head().await?.is_some() {
        return Err(DemoError::NotEmpty);
    }
    load_people(state).await
}

/// Loads Ada, Bob and Carla whatever the log holds (the server loads them after the
/// simulated demo history, `crate::simulate::demo`, whose accounts they cannot collide
/// with: those ids are random).
pub async fn load_people(state: &AppState) -> Result<(), DemoError> {
    let ledger = &state.ledger;
    let people = [
        (ADA, "Ada Demo", "ada@demo.example", "192.0.2.10", None),
        (BOB, "Bob Demo", "bob@demo.example", "192.0.2.11", Some(ADA)),
        (
            CARLA,
            "Carla Demo",
            "carla@demo.example",
            "192.0.2.12",
            Some(BOB),
        ),
    ];
    for (id, name, email, ip, referrer) in people {
        let account_id = demo_account(id);
        let command = OpenAccount {
            account_id,
            referral_code: ReferralCode::for_account(account_id),
            referred_with_code: referrer
                .map(|referrer| ReferralCode::for_account(demo_account(referrer))),
            personal_data: PersonalData::parse(name, email, ip).expect("demo data is valid"),
            email_fingerprint: fingerprint(state, FingerprintKind::Email, email),
            ip_fingerprint: fingerprint(state, FingerprintKind::Ip, ip),
            payment_fingerprint: None,
            opened_at: at("2026-01-02T09:00:00Z"),
        };
        ledger.open_account(meta(id), &command).await?;
    }
    let carla = demo_account(CARLA);
    ledger
        .account_command(
            meta("grant"),
            &ForAccount {
                account_id: carla,
                command: AccountCommand::GrantCredits {
                    grant_id: GrantId::parse("demo-welcome").expect("valid"),
                    credits: Credits::new(100).expect("valid"),
                    reason: GrantReason::Promotion,
                    expires_at: None,
                    granted_at: at("2026-01-02T09:05:00Z"),
                },
            },
        )
        .await?;
    ledger
        .record_payment(
            meta("payment"),
            &RecordPayment {
                payment_id: PaymentId::parse(PAYMENT).expect("valid"),
                account_id: carla,
                kind: PaymentKind::Subscription {
                    subscription_id: SubscriptionId::parse("sub_demo").expect("valid"),
                },
                amount: Money::parse("29.99", ledger.config().currency.code()).expect("valid"),
                payment_fingerprint: None,
                received_at: at("2026-01-05T12:00:00Z"),
            },
        )
        .await?;
    Ok(())
}

fn demo_account(id: &str) -> AccountId {
    AccountId::new(Uuid::parse_str(id).expect("demo ids are UUIDs")).expect("version 4")
}

fn fingerprint(state: &AppState, kind: FingerprintKind, value: &str) -> Fingerprint {
    fingerprint_token(state.ledger.vault(), kind, value).expect("the vault answers")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ledger::store::memory::MemoryStore;

    use super::*;
    use crate::idempotency::Idempotency;
    use crate::tokens::Tokens;

    #[tokio::test]
    async fn the_demo_chain_earns_commissions_and_loads_only_once() {
        let state = AppState::new(
            Arc::new(MemoryStore::new()),
            Tokens::new(&[]).unwrap(),
            Idempotency::in_memory(),
        );
        load(&state).await.unwrap();
        let carla = state
            .ledger
            .account(demo_account(CARLA))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(carla.referrer(), Some(demo_account(BOB)));
        assert_eq!(carla.wallet.balance_at(Utc::now()).units(), 100);
        let payment = state
            .ledger
            .payment(&PaymentId::parse(PAYMENT).unwrap())
            .await
            .unwrap()
            .unwrap();
        let paid: Vec<(AccountId, String)> = payment
            .commissions
            .iter()
            .map(|c| (c.earned.beneficiary, c.earned.amount.amount().to_string()))
            .collect();
        assert_eq!(
            paid,
            [
                (demo_account(BOB), "6.00".to_owned()),
                (demo_account(ADA), "3.00".to_owned())
            ]
        );
        assert!(matches!(load(&state).await, Err(DemoError::NotEmpty)));
    }
}
