//! Generated histories: a reproducible stream of valid domain events for the determinism
//! tests, the report tests and the scale benchmark.
//!
//! The referral forest grows by preferential attachment (a new member picks its referrer
//! with probability proportional to how many people that member already brought in, plus
//! one), with some roots, and one pathological chain in which every member refers the
//! next. Payments and refunds go through the domain's own deciders, so commissions and
//! clawbacks are exactly what production would record. Wallets draw down the grant that
//! expires first; expired remainders are expired; every month ends with a payout run
//! (affiliates whose payable balance reaches the plan's minimum) and a donation.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger::domain::donation::{self, AllocateDonation, DonationState, RevenueBook};
use ledger::domain::events::{
    AccountOpened, CommissionPlanPublished, CreditsExpired, CreditsGranted, CreditsPurchased,
    CreditsSpent, DomainEvent, FraudFlag, GrantDraw, GrantReason, PaymentKind, PersonalData,
};
use ledger::domain::ids::{
    Fingerprint, GrantId, OrganisationId, PaymentId, PayoutReference, PersonaId, RefundId, SpendId,
    SubscriptionId,
};
use ledger::domain::payment::{
    self, PaymentContext, PaymentState, RecordPayment, RefundKind, RefundPayment, ReviewCommission,
    ReviewDecision, UplineMember,
};
use ledger::domain::payout::{
    self, PayableBook, PayoutContext, PayoutsState, RunPayouts, SettlePayout, Settlement,
};
use ledger::domain::plan::CommissionPlan;
use ledger::domain::{streams, AccountId, Credits, Currency, Money, Period, Rate, ReferralCode};
use ledger::store::{
    ChainLink, Digest, EventMetadata, EventType, NewEvent, Position, RecordedEvent, StreamName,
    EVENTS_PER_APPEND_MAX,
};
use rust_decimal::Decimal;

use crate::rng::SplitMix64;

/// The shape of a generated history.
#[derive(Clone, Debug)]
pub struct HistoryConfig {
    pub seed: u64,
    /// Accounts opened in all, the chain included.
    pub accounts: usize,
    /// Length of the one chain in which each member refers the next.
    pub chain_depth: usize,
    /// Roughly how many events to generate.
    pub events: u64,
    pub start: DateTime<Utc>,
    /// How many months the history spans.
    pub months: u32,
}

impl HistoryConfig {
    /// A small history for tests: hundreds of accounts, a few thousand events, 4 months.
    pub fn small(seed: u64) -> HistoryConfig {
        HistoryConfig {
            seed,
            accounts: 300,
            chain_depth: 40,
            events: 4_000,
            start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            months: 4,
        }
    }
}

/// One append's worth of events: all in one stream.
#[derive(Clone, Debug)]
pub struct Batch {
    pub stream: StreamName,
    pub events: Vec<DomainEvent>,
    pub at: DateTime<Utc>,
}

impl Batch {
    /// The events as the store takes them, with ids drawn from `rng`.
    pub fn to_new_events(&self, rng: &mut SplitMix64) -> Vec<NewEvent> {
        self.events
            .iter()
            .map(|event| event.to_new_event(rng.uuid(), EventMetadata::default()))
            .collect()
    }
}

struct Member {
    id: AccountId,
    parent: u32,
    flags: Vec<FraudFlag>,
    /// Open grants: (grant id, remaining, expiry), in the order given.
    grants: Vec<(GrantId, u64, Option<DateTime<Utc>>)>,
    grants_given: u32,
    payments: u32,
}

const NO_PARENT: u32 = u32::MAX;

/// What happens to a payment after it was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FollowUp {
    Refund,
    Review,
}
/// Credits given by a subscription allowance, and bought with a pack.
const ALLOWANCE: u64 = 500;
const PACK: u64 = 1_000;
/// Open grants an account holds at most (the domain limits active grants too).
const GENERATED_GRANTS_MAX: usize = 8;

/// Generates batches until the configured number of events is reached.
pub struct Generator {
    config: HistoryConfig,
    rng: SplitMix64,
    plan: CommissionPlan,
    members: Vec<Member>,
    /// Preferential attachment: each member once, plus once per referral it made.
    tickets: Vec<u32>,
    chain_tip: Option<u32>,
    chain_length: usize,
    emitted: u64,
    pending: VecDeque<Batch>,
    /// Follow-ups of payments: (due, payment key, what). A payment is refunded or has
    /// its held commissions reviewed later, against one shared state.
    followups: BinaryHeap<Reverse<(DateTime<Utc>, u64, FollowUp)>>,
    /// Payments with follow-ups still due: their state and how many are due.
    tracked: BTreeMap<u64, (PaymentState, u32)>,
    tracked_sequence: u64,
    settlements: u64,
    /// Grants to expire: (expiry, member, grant id).
    expiries: BinaryHeap<Reverse<(DateTime<Utc>, u32, String)>>,
    /// The domain's own books: payable balances for payout runs, net revenue for
    /// donations, and the payouts stream's state; so runs are what production decides.
    book: PayableBook,
    revenue: RevenueBook,
    payouts: PayoutsState,
    period: Period,
    payment_sequence: u64,
    finished: bool,
}

impl Generator {
    pub fn new(config: HistoryConfig) -> Generator {
        assert!(
            config.accounts > config.chain_depth,
            "the chain is part of the accounts"
        );
        assert!(config.months > 0, "a history spans at least a month");
        let mut plan = CommissionPlan::default_plan(Currency::EUR);
        plan.effective_from = config.start;
        let mut generator = Generator {
            rng: SplitMix64::new(config.seed),
            period: Period::containing(config.start),
            plan,
            members: Vec::with_capacity(config.accounts),
            tickets: Vec::with_capacity(config.accounts * 2),
            chain_tip: None,
            chain_length: 0,
            emitted: 0,
            pending: VecDeque::new(),
            followups: BinaryHeap::new(),
            tracked: BTreeMap::new(),
            tracked_sequence: 0,
            settlements: 0,
            expiries: BinaryHeap::new(),
            book: PayableBook::new(Currency::EUR),
            revenue: RevenueBook::new(Currency::EUR),
            payouts: PayoutsState::default(),
            payment_sequence: 0,
            finished: false,
            config,
        };
        let published = DomainEvent::CommissionPlanPublished(CommissionPlanPublished {
            version: generator.plan.version,
            level_rates: generator.plan.level_rates.clone(),
            hold_days: generator.plan.hold_days,
            minimum_payout: generator.plan.minimum_payout,
            effective_from: generator.plan.effective_from,
            published_at: generator.config.start,
        });
        generator.emit(streams::plan(), vec![published], generator.config.start);
        generator
    }

    /// Events generated so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// The next append, or `None` when the history is complete.
    pub fn next_batch(&mut self) -> Option<Batch> {
        while self.pending.is_empty() {
            if self.finished {
                return None;
            }
            self.step();
        }
        self.pending.pop_front()
    }

    fn now(&self) -> DateTime<Utc> {
        let span = Duration::days(30 * i64::from(self.config.months));
        let progress = (self.emitted as f64 / self.config.events as f64).min(1.0);
        let offset_ms = (span.num_milliseconds() as f64 * progress) as i64;
        self.config.start + Duration::milliseconds(offset_ms)
    }

    fn emit(&mut self, stream: StreamName, events: Vec<DomainEvent>, at: DateTime<Utc>) {
        if events.is_empty() {
            return;
        }
        for chunk in events.chunks(EVENTS_PER_APPEND_MAX) {
            self.emitted += chunk.len() as u64;
            for event in chunk {
                self.feed_book(event);
            }
            self.pending.push_back(Batch {
                stream: stream.clone(),
                events: chunk.to_vec(),
                at,
            });
        }
    }

    fn feed_book(&mut self, event: &DomainEvent) {
        self.book.apply(event);
        self.revenue.apply(event);
        if matches!(
            event,
            DomainEvent::PayoutScheduled(_)
                | DomainEvent::PayoutRunCompleted(_)
                | DomainEvent::PayoutSent(_)
                | DomainEvent::PayoutFailed(_)
        ) {
            self.payouts = payout::evolve(std::mem::take(&mut self.payouts), event);
        }
    }

    fn step(&mut self) {
        if self.emitted >= self.config.events {
            self.close_month(self.period);
            self.finished = true;
            return;
        }
        let now = self.now();
        let period = Period::containing(now);
        if period != self.period {
            let closed = self.period;
            self.period = period;
            self.close_month(closed);
            return;
        }
        if let Some(Reverse((due, _, _))) = self.expiries.peek() {
            if *due <= now {
                let Reverse((due, member, grant)) = self.expiries.pop().expect("peeked");
                self.expire(member, &grant, due);
                return;
            }
        }
        if let Some(Reverse((due, _, _))) = self.followups.peek() {
            if *due <= now {
                let Reverse((_, key, followup)) = self.followups.pop().expect("peeked");
                self.follow_up(key, followup, now);
                return;
            }
        }
        // Open accounts a little ahead of the clock so every account exists by 80% of the
        // history, leaving time for the late ones to pay.
        let progress = self.emitted as f64 / self.config.events as f64;
        let due_accounts = ((progress / 0.8).min(1.0) * self.config.accounts as f64) as usize;
        if self.members.len() < due_accounts.max(1) {
            self.open(now);
            return;
        }
        match self.rng.below(100) {
            0..=34 => self.pay(now),
            35..=49 => self.grant(now),
            _ => self.spend(now),
        }
    }

    fn open(&mut self, now: DateTime<Utc>) {
        let index = self.members.len() as u32;
        let remaining_chain = self.config.chain_depth - self.chain_length;
        let remaining_accounts = self.config.accounts - self.members.len();
        let in_chain = remaining_chain > 0
            && (self.rng.below(remaining_accounts as u64) < remaining_chain as u64);
        let parent = if in_chain {
            self.chain_length += 1;
            let parent = self.chain_tip.unwrap_or(NO_PARENT);
            self.chain_tip = Some(index);
            parent
        } else if self.tickets.is_empty() || self.rng.chance(1, 10) {
            NO_PARENT
        } else {
            self.tickets[self.rng.below(self.tickets.len() as u64) as usize]
        };
        let id = AccountId::new(self.rng.uuid()).expect("random ids are valid");
        let flags = if parent != NO_PARENT && self.rng.chance(1, 100) {
            vec![FraudFlag::SelfReferralIp]
        } else {
            Vec::new()
        };
        let referrer = (parent != NO_PARENT).then(|| self.members[parent as usize].id);
        let fingerprint = |kind: &str| {
            Fingerprint::parse(&format!("{kind}-{index}")).expect("fingerprints are tokens")
        };
        let opened = AccountOpened {
            account_id: id,
            referral_code: ReferralCode::for_account(id),
            referrer,
            referred_with_code: referrer.map(ReferralCode::for_account),
            fraud_flags: flags.clone(),
            personal_data: PersonalData::parse(
                &format!("Member {index}"),
                &format!("member{index}@example.org"),
                "192.0.2.1",
            )
            .expect("generated personal data is valid"),
            email_fingerprint: fingerprint("email"),
            ip_fingerprint: fingerprint("ip"),
            payment_fingerprint: None,
            opened_at: now,
        };
        self.members.push(Member {
            id,
            parent,
            flags,
            grants: Vec::new(),
            grants_given: 0,
            payments: 0,
        });
        self.tickets.push(index);
        if parent != NO_PARENT {
            self.tickets.push(parent);
        }
        self.emit(
            streams::account(id),
            vec![DomainEvent::AccountOpened(opened)],
            now,
        );
    }

    fn random_member(&mut self) -> u32 {
        self.rng.below(self.members.len() as u64) as u32
    }

    fn pay(&mut self, now: DateTime<Utc>) {
        let payer = self.random_member();
        let member = &mut self.members[payer as usize];
        member.payments += 1;
        let sequence = self.payment_sequence;
        self.payment_sequence += 1;
        let payment_id = PaymentId::parse(&format!("pi_{sequence}")).expect("token");
        let pack = self.rng.chance(1, 3);
        let (kind, cents) = if pack {
            (
                PaymentKind::CreditPack {
                    credits: Credits::new(PACK).expect("credits"),
                },
                999,
            )
        } else {
            let subscription = SubscriptionId::parse(&format!("sub_{payer}")).expect("token");
            let cents = [999, 1999, 4900][self.rng.below(3) as usize];
            (
                PaymentKind::Subscription {
                    subscription_id: subscription,
                },
                cents,
            )
        };
        let amount = Money::new(Decimal::new(cents, 2), Currency::EUR).expect("money");
        let mut upline = Vec::new();
        let mut node = self.members[payer as usize].parent;
        while node != NO_PARENT && upline.len() < self.plan.levels() {
            let member = &self.members[node as usize];
            upline.push(UplineMember {
                account_id: member.id,
                referral_flags: member.flags.clone(),
                payment_fingerprint: None,
            });
            node = member.parent;
        }
        let payer_member = &self.members[payer as usize];
        let context = PaymentContext {
            payer: Some(UplineMember {
                account_id: payer_member.id,
                referral_flags: payer_member.flags.clone(),
                payment_fingerprint: None,
            }),
            upline,
            plan: self.plan.clone(),
        };
        let command = RecordPayment {
            payment_id: payment_id.clone(),
            account_id: payer_member.id,
            kind,
            amount,
            payment_fingerprint: None,
            received_at: now,
        };
        let events = payment::decide_payment(&PaymentState::default(), &context, &command)
            .expect("generated payments are valid");
        // A few payments are refunded (some in part, some charged back) within 40 days;
        // commissions held for review are released or forfeited within 45.
        let refund = self.rng.chance(3, 100);
        let review = events.iter().any(|event| {
            matches!(event, DomainEvent::CommissionEarned(earned) if earned.held_for_review)
        });
        if refund || review {
            let state = events.iter().fold(PaymentState::default(), |state, event| {
                payment::evolve(state, event)
            });
            let key = self.tracked_sequence;
            self.tracked_sequence += 1;
            let mut due = 0;
            if refund {
                let at = now + Duration::days(1 + self.rng.below(40) as i64);
                self.followups.push(Reverse((at, key, FollowUp::Refund)));
                due += 1;
            }
            if review {
                let at = now + Duration::days(5 + self.rng.below(40) as i64);
                self.followups.push(Reverse((at, key, FollowUp::Review)));
                due += 1;
            }
            self.tracked.insert(key, (state, due));
        }
        let account = self.members[payer as usize].id;
        self.emit(streams::payment(&payment_id), events, now);
        if pack {
            let grant_id = self.next_grant_id(payer);
            let expires_at = Some(now + Duration::days(90));
            self.open_grant(payer, grant_id.clone(), PACK, expires_at);
            self.emit(
                streams::account(account),
                vec![DomainEvent::CreditsPurchased(CreditsPurchased {
                    account_id: account,
                    grant_id,
                    payment_id,
                    credits: Credits::new(PACK).expect("credits"),
                    expires_at,
                    purchased_at: now,
                })],
                now,
            );
        }
    }

    fn follow_up(&mut self, key: u64, followup: FollowUp, now: DateTime<Utc>) {
        let (state, due) = self.tracked.remove(&key).expect("tracked payment");
        let payment = state.payment.as_ref().expect("a received payment");
        let payment_id = payment.received.payment_id.clone();
        let events = match followup {
            FollowUp::Refund => {
                let refundable = payment.refundable();
                if !refundable.is_positive() {
                    Vec::new()
                } else {
                    let amount = if self.rng.chance(1, 2) {
                        Money::new(
                            (refundable.amount() / Decimal::from(3))
                                .round_dp(2)
                                .max(Decimal::new(1, 2)),
                            refundable.currency(),
                        )
                        .expect("money")
                    } else {
                        refundable
                    };
                    let kind = if self.rng.chance(1, 4) {
                        RefundKind::Chargeback
                    } else {
                        RefundKind::Refund
                    };
                    let command = RefundPayment {
                        payment_id: payment_id.clone(),
                        refund_id: RefundId::parse(&format!("re_{key}")).expect("token"),
                        kind,
                        amount,
                        refunded_at: now,
                    };
                    payment::decide_refund(&state, &command).expect("generated refunds are valid")
                }
            }
            FollowUp::Review => {
                let held: Vec<u8> = payment
                    .commissions
                    .iter()
                    .filter(|commission| commission.earned.held_for_review)
                    .map(|commission| commission.earned.level)
                    .collect();
                let mut events = Vec::new();
                let mut reviewed = state.clone();
                for level in held {
                    let decision = if self.rng.chance(1, 2) {
                        ReviewDecision::Release
                    } else {
                        ReviewDecision::Forfeit
                    };
                    let command = ReviewCommission {
                        payment_id: payment_id.clone(),
                        level,
                        decision,
                        reviewed_at: now,
                    };
                    let decided = payment::decide_review(&reviewed, &command)
                        .expect("generated reviews are valid");
                    reviewed = decided.iter().fold(reviewed, payment::evolve);
                    events.extend(decided);
                }
                events
            }
        };
        let state = events.iter().fold(state, payment::evolve);
        if due > 1 {
            self.tracked.insert(key, (state, due - 1));
        }
        self.emit(streams::payment(&payment_id), events, now);
    }

    fn next_grant_id(&mut self, member: u32) -> GrantId {
        let given = &mut self.members[member as usize].grants_given;
        *given += 1;
        GrantId::parse(&format!("g-{member}-{given}")).expect("token")
    }

    fn open_grant(
        &mut self,
        member: u32,
        grant: GrantId,
        credits: u64,
        expires_at: Option<DateTime<Utc>>,
    ) {
        if let Some(expiry) = expires_at {
            self.expiries
                .push(Reverse((expiry, member, grant.as_str().to_owned())));
        }
        self.members[member as usize]
            .grants
            .push((grant, credits, expires_at));
    }

    fn grant(&mut self, now: DateTime<Utc>) {
        let member = self.random_member();
        if self.members[member as usize].grants.len() >= GENERATED_GRANTS_MAX {
            return self.spend(now);
        }
        let promotion = self.rng.chance(1, 4);
        let (reason, expires_at) = if promotion {
            (GrantReason::Promotion, None)
        } else {
            (
                GrantReason::SubscriptionAllowance,
                Some(now + Duration::days(30)),
            )
        };
        let grant_id = self.next_grant_id(member);
        self.open_grant(member, grant_id.clone(), ALLOWANCE, expires_at);
        let account = self.members[member as usize].id;
        self.emit(
            streams::account(account),
            vec![DomainEvent::CreditsGranted(CreditsGranted {
                account_id: account,
                grant_id,
                credits: Credits::new(ALLOWANCE).expect("credits"),
                reason,
                expires_at,
                granted_at: now,
            })],
            now,
        );
    }

    fn spend(&mut self, now: DateTime<Utc>) {
        let index = self.random_member();
        let member = &mut self.members[index as usize];
        // Expired grants are not spendable even before their expiry event is generated.
        let usable = |grant: &(GrantId, u64, Option<DateTime<Utc>>)| {
            grant.1 > 0 && grant.2.is_none_or(|expiry| expiry > now)
        };
        let balance: u64 = member
            .grants
            .iter()
            .filter(|g| usable(g))
            .map(|g| g.1)
            .sum();
        if balance == 0 {
            return self.grant(now);
        }
        let wanted = (1 + self.rng.below(60)).min(balance);
        // Earliest expiry first (no expiry last), then oldest.
        let mut order: Vec<usize> = (0..member.grants.len())
            .filter(|grant| usable(&member.grants[*grant]))
            .collect();
        order.sort_by_key(|grant| {
            (
                member.grants[*grant].2.is_none(),
                member.grants[*grant].2,
                *grant,
            )
        });
        let mut left = wanted;
        let mut drawn = Vec::new();
        for grant in order {
            if left == 0 {
                break;
            }
            let take = left.min(member.grants[grant].1);
            member.grants[grant].1 -= take;
            left -= take;
            drawn.push(GrantDraw {
                grant_id: member.grants[grant].0.clone(),
                credits: Credits::new(take).expect("credits"),
            });
        }
        member.grants.retain(|grant| grant.1 > 0);
        let account = member.id;
        let spend_id = SpendId::parse(&format!("sp-{}", self.emitted)).expect("token");
        self.emit(
            streams::account(account),
            vec![DomainEvent::CreditsSpent(CreditsSpent {
                account_id: account,
                spend_id,
                persona: PersonaId::parse("oceanographer").expect("token"),
                credits: Credits::new(wanted).expect("credits"),
                drawn,
                spent_at: now,
            })],
            now,
        );
    }

    fn expire(&mut self, member: u32, grant: &str, due: DateTime<Utc>) {
        let now = self.now().max(due);
        let holder = &mut self.members[member as usize];
        let Some(index) = holder
            .grants
            .iter()
            .position(|open| open.0.as_str() == grant)
        else {
            return; // used up before it expired
        };
        let (grant_id, remaining, _) = holder.grants.remove(index);
        let account = holder.id;
        self.emit(
            streams::account(account),
            vec![DomainEvent::CreditsExpired(CreditsExpired {
                account_id: account,
                grant_id,
                credits: Credits::new(remaining).expect("credits"),
                expired_at: now,
            })],
            now,
        );
    }

    /// The payout run and the donation of a month that just ended, decided by the
    /// domain's deciders from its own books.
    fn close_month(&mut self, period: Period) {
        let now = self.now().max(period.end());
        let balances = self.book.balances_at(period.end());
        let mut minimum_payout = self.plan.minimum_payout;
        // One run is one append, so it pays at most PAYOUTS_PER_RUN_MAX affiliates. A large
        // generated network can exceed that; the generator then raises the minimum for
        // that run (recorded in PayoutRunCompleted), as an operator would have to.
        let run = loop {
            let context = PayoutContext {
                balances: balances.clone(),
                minimum_payout,
            };
            let command = RunPayouts {
                period,
                as_of: period.end(),
                run_at: now,
            };
            match payout::decide_run(&self.payouts, &context, &command) {
                Ok(run) => break run,
                Err(ledger::domain::Rejection::TooManyPayouts { .. }) => {
                    minimum_payout =
                        Money::new(minimum_payout.amount() * Decimal::TWO, Currency::EUR)
                            .expect("a doubled minimum stays in range");
                }
                Err(rejection) => panic!("generated payout runs are valid: {rejection}"),
            }
        };
        let scheduled: Vec<AccountId> = run
            .iter()
            .filter_map(|event| match event {
                DomainEvent::PayoutScheduled(payout) => Some(payout.affiliate),
                _ => None,
            })
            .collect();
        self.emit(streams::payouts(), run, now);
        for affiliate in scheduled {
            // Every tenth payout fails (the second, the twelfth, ...), so even a small
            // history has a failure.
            self.settlements += 1;
            let settlement = if self.settlements % 10 == 2 {
                Settlement::Failed {
                    reason: "the bank account is closed".to_owned(),
                }
            } else {
                Settlement::Sent {
                    reference: PayoutReference::parse(&format!("po_{period}_{affiliate}"))
                        .expect("token"),
                }
            };
            let settled = payout::decide_settle(
                &self.payouts,
                &SettlePayout {
                    period,
                    affiliate,
                    settlement,
                    settled_at: now,
                },
            )
            .expect("generated settlements are valid");
            self.emit(streams::payouts(), settled, now);
        }
        let donation = donation::decide(
            &DonationState::default(),
            self.revenue.net_revenue(period),
            &AllocateDonation {
                period,
                organisation: OrganisationId::parse("ocean-cleanup").expect("token"),
                share: Rate::parse("0.05").expect("rate"),
                allocated_at: now,
            },
        )
        .expect("generated donations are valid");
        self.emit(streams::donation(period), donation, now);
    }
}

/// Wraps generated batches as recorded events at consecutive positions, without a store:
/// for the benchmark, which measures projections, not appends. The chain links are left
/// zero (nothing here checks them).
pub struct Recorder {
    next: u64,
    revisions: std::collections::HashMap<StreamName, u64>,
    rng: SplitMix64,
}

impl Recorder {
    pub fn new(seed: u64) -> Recorder {
        Recorder {
            next: 0,
            revisions: std::collections::HashMap::new(),
            rng: SplitMix64::new(seed),
        }
    }

    pub fn record(&mut self, batch: &Batch, out: &mut Vec<RecordedEvent>) {
        let revision = self.revisions.entry(batch.stream.clone()).or_insert(0);
        for event in &batch.events {
            let new = event.to_new_event(self.rng.uuid(), EventMetadata::default());
            out.push(RecordedEvent {
                id: new.id,
                stream: batch.stream.clone(),
                revision: *revision,
                position: Position::sequence(self.next),
                event_type: EventType::parse(event.event_type()).expect("domain types are valid"),
                schema_version: new.schema_version,
                recorded_at: batch.at,
                metadata: new.metadata,
                payload: new.payload,
                chain: ChainLink {
                    previous: Digest::GENESIS,
                    current: Digest::GENESIS,
                },
            });
            *revision += 1;
            self.next += 1;
        }
    }
}
