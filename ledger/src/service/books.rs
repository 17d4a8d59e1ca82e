//! Books kept by the caller and caught up incrementally, for a single long-lived writer
//! (the simulator, a batch import) that runs payouts, donations and erasures again and
//! again over a growing log.
//!
//! [`Ledger::run_payouts`], [`Ledger::allocate_donation`] and [`Ledger::erase_subject`]
//! fold the whole log each time they run: right for a server that runs them once a month,
//! quadratic for a writer that appends millions of events between runs. The `*_with`
//! variants here take a [`LogBooks`] instead, which remembers the position it has folded
//! up to and reads only what was appended since. Each variant catches the books up at
//! the same point of the command where the plain one folds the log (after the stream it
//! appends to was read), so they decide on the same facts and race the same way.

use super::{decode_payload, AppendFailure, CommandMeta, Ledger, LedgerError, Outcome};
use super::{ATTEMPTS_MAX, PAGE_SIZE_MAX};
use crate::domain::donation::{self, AllocateDonation, DonationState, RevenueBook};
use crate::domain::payout::{self, PayableBook, PayoutContext, PayoutsState, RunPayouts};
use crate::domain::{streams, AccountId, Currency};
use crate::privacy::payload::redact_payload;
use crate::privacy::retention::PrivacyState;
use crate::store::{EventStore, Position};

/// The payable book, the revenue book and the privacy state of a log, folded up to a
/// position.
pub struct LogBooks {
    /// The last event folded, `None` before the first.
    folded: Option<Position>,
    payable: PayableBook,
    revenue: RevenueBook,
    privacy: PrivacyState,
}

impl LogBooks {
    /// Books of an empty log, in the ledger's currency.
    pub fn new(currency: Currency) -> LogBooks {
        LogBooks {
            folded: None,
            payable: PayableBook::new(currency),
            revenue: RevenueBook::new(currency),
            privacy: PrivacyState::default(),
        }
    }

    /// The last event folded into the books.
    pub fn folded(&self) -> Option<Position> {
        self.folded
    }

    /// The privacy facts of the log as folded.
    pub fn privacy(&self) -> &PrivacyState {
        &self.privacy
    }

    /// Folds every event appended since the last catch-up, in global order.
    pub async fn catch_up<S: EventStore + ?Sized>(&mut self, store: &S) -> Result<(), LedgerError> {
        let mut from = self.folded.unwrap_or(Position::START);
        loop {
            let page = store.read_all(from, PAGE_SIZE_MAX).await?;
            let mut progressed = false;
            for recorded in &page {
                // `from` is inclusive: the first event of a page may be one already folded.
                if self.folded.is_some_and(|seen| recorded.position <= seen) {
                    continue;
                }
                self.privacy
                    .apply_recorded(recorded)
                    .map_err(LedgerError::Privacy)?;
                // The books need no personal data: read without keys, as the service's
                // own fold does.
                let payload = redact_payload(recorded).map_err(LedgerError::Privacy)?;
                let event = decode_payload(recorded, &payload)?;
                self.payable.apply(&event);
                self.revenue.apply(&event);
                self.folded = Some(recorded.position);
                from = recorded.position;
                progressed = true;
            }
            if !progressed {
                return Ok(());
            }
        }
    }
}

impl<S: EventStore> Ledger<S> {
    /// [`Ledger::run_payouts`] on books caught up from where they stood.
    pub async fn run_payouts_with(
        &self,
        meta: CommandMeta,
        command: &RunPayouts,
        books: &mut LogBooks,
    ) -> Result<Outcome, LedgerError> {
        let stream = streams::payouts();
        for _ in 0..ATTEMPTS_MAX {
            let payouts = self
                .load(&stream, PayoutsState::default(), payout::evolve)
                .await?;
            // Caught up after the payouts stream was read, so the book holds every run
            // that stream holds; the append fails if another run lands in between.
            books.catch_up(&self.store).await?;
            let plans = self.plan_state().await?;
            let context = PayoutContext {
                balances: books.payable.balances_at(command.as_of),
                minimum_payout: plans.in_force_at(command.as_of).minimum_payout,
            };
            let events = payout::decide_run(&payouts.state, &context, command)?;
            let revision = payouts.revision;
            self.keep(payouts);
            match self
                .append_or_recall(meta, &stream, revision, &events)
                .await
            {
                Ok(appended) => return Ok(appended.outcome),
                Err(AppendFailure::Moved) => continue,
                Err(AppendFailure::Failed(error)) => return Err(error),
            }
        }
        Err(LedgerError::Contention { stream })
    }

    /// [`Ledger::allocate_donation`] on books caught up from where they stood.
    pub async fn allocate_donation_with(
        &self,
        meta: CommandMeta,
        command: &AllocateDonation,
        books: &mut LogBooks,
    ) -> Result<Outcome, LedgerError> {
        books.catch_up(&self.store).await?;
        let net_revenue = books.revenue.net_revenue(command.period);
        self.decide_and_append(
            meta,
            &streams::donation(command.period),
            DonationState::default,
            donation::evolve,
            |state| donation::decide(state, net_revenue, command),
        )
        .await
    }
}

impl<S> Ledger<S> {
    /// Drops the cached states an erasure of `subject` can have left holding its
    /// destroyed data in clear: its account, the payments it made, and the single-stream
    /// states (payouts hold a failure reason, which may quote an affiliate). Other
    /// accounts' states hold only their own personal data and ids of others. The whole
    /// cache is not emptied, as [`Ledger::forget_personal_data`] does, because a writer
    /// that erases every month would then refold every account after each erasure.
    pub(crate) fn forget_subject(&self, subject: AccountId) {
        let caches = &self.caches;
        // States loaded before this point are not put back (see `keep`).
        caches
            .erasures
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        caches.accounts.forget(&streams::account(subject));
        caches.payments.lock().retain(|_, (state, _)| {
            state
                .payment
                .as_ref()
                .is_none_or(|payment| payment.received.account_id != subject)
        });
        caches.payouts.lock().clear();
        caches.plans.lock().clear();
        caches.donations.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uuid::Uuid;

    use super::*;
    use crate::domain::account::OpenAccount;
    use crate::domain::events::{PaymentKind, PersonalData};
    use crate::domain::ids::{Fingerprint, OrganisationId, PaymentId, SubscriptionId};
    use crate::domain::payment::RecordPayment;
    use crate::domain::scenario::account_id as id;
    use crate::domain::scenario::{at, eur};
    use crate::domain::{Period, Rate, ReferralCode};
    use crate::privacy::retention::RetentionPolicy;
    use crate::privacy::vault::memory::MemoryVault;
    use crate::service::LedgerConfig;
    use crate::store::memory::MemoryStore;

    fn meta(n: u128) -> CommandMeta {
        CommandMeta::new(Uuid::from_u128(n))
    }

    /// Two referred accounts and a payment in September; two identical ledgers, so one
    /// runs the plain commands and the other the `*_with` ones.
    async fn history() -> Ledger<MemoryStore> {
        let vault = Arc::new(MemoryVault::new().unwrap());
        let ledger = Ledger::new(MemoryStore::new(), LedgerConfig::default(), vault);
        for n in 1..=2u8 {
            let open = OpenAccount {
                account_id: id(n),
                referral_code: ReferralCode::for_account(id(n)),
                referred_with_code: (n > 1).then(|| ReferralCode::for_account(id(n - 1))),
                personal_data: PersonalData::parse("Person", "p@example.org", "192.0.2.1").unwrap(),
                email_fingerprint: Fingerprint::parse(&format!("email-{n}")).unwrap(),
                ip_fingerprint: Fingerprint::parse(&format!("ip-{n}")).unwrap(),
                payment_fingerprint: None,
                opened_at: at("2026-09-01T00:00:00Z"),
            };
            ledger
                .open_account(meta(u128::from(n)), &open)
                .await
                .unwrap();
        }
        let payment = RecordPayment {
            payment_id: PaymentId::parse("pi_1").unwrap(),
            account_id: id(2),
            kind: PaymentKind::Subscription {
                subscription_id: SubscriptionId::parse("sub_1").unwrap(),
            },
            amount: eur("400.00"),
            payment_fingerprint: None,
            received_at: at("2026-09-10T00:00:00Z"),
        };
        ledger.record_payment(meta(10), &payment).await.unwrap();
        ledger
    }

    #[tokio::test]
    async fn the_with_variants_decide_as_the_whole_log_folds_do() {
        let (plain, kept) = (history().await, history().await);
        let mut books = LogBooks::new(Currency::EUR);
        let run = RunPayouts {
            period: Period::parse("2026-10").unwrap(),
            as_of: at("2026-11-01T00:00:00Z"),
            run_at: at("2026-11-01T01:00:00Z"),
        };
        let expected = plain.run_payouts(meta(20), &run).await.unwrap();
        let got = kept
            .run_payouts_with(meta(20), &run, &mut books)
            .await
            .unwrap();
        assert_eq!(got.events, expected.events);
        assert_eq!(got.events.len(), 2, "a payout and the run: {got:?}");

        let allocate = AllocateDonation {
            period: Period::parse("2026-09").unwrap(),
            organisation: OrganisationId::parse("ocean-cleanup").unwrap(),
            share: Rate::parse("0.01").unwrap(),
            allocated_at: at("2026-10-01T00:00:00Z"),
        };
        let expected = plain.allocate_donation(meta(21), &allocate).await.unwrap();
        let got = kept
            .allocate_donation_with(meta(21), &allocate, &mut books)
            .await
            .unwrap();
        assert_eq!(got.events, expected.events);
        assert_eq!(got.events.len(), 1);

        let policy = RetentionPolicy::default();
        let now = at("2026-11-02T00:00:00Z");
        let request = Uuid::from_u128(7);
        let expected = plain
            .erase_subject(meta(22), id(2), request, now, &policy)
            .await
            .unwrap();
        let got = kept
            .erase_subject_with(meta(22), id(2), request, now, &policy, &mut books)
            .await
            .unwrap();
        assert_eq!(got.events, expected.events);
        assert_eq!(got.events.len(), 1, "the proof: {got:?}");
        // The subject's cached state (loaded in clear by the payment) is gone; the
        // referrer's, cached too, still reads.
        let erased = kept.account(id(2)).await.unwrap().unwrap();
        assert_ne!(erased.personal_data.name(), "Person", "read again, erased");
        let other = kept.account(id(1)).await.unwrap().unwrap();
        assert_eq!(other.personal_data.name(), "Person");
        // The second run of the period pays nobody twice: the books saw the first.
        let again = kept
            .run_payouts_with(meta(23), &run, &mut books)
            .await
            .unwrap();
        assert!(again.events.is_empty(), "{again:?}");
        assert_eq!(books.folded(), kept.store().head().await.unwrap());
    }
}
