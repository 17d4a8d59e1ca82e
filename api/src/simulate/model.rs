//! The seeded behaviour model: who signs up when and under whom, what they buy, spend,
//! refund and dispute, and what finance does at each month's end. It is pure and
//! synchronous: [`Model::next_step`] hands out the next command with its simulated time,
//! and [`Model::observe`] takes back the events the ledger recorded for it (a spend's
//! draw-down, a payment's held commissions, a payout run's payouts), so later decisions
//! follow what really happened. Same seed, same parameters: the same commands, in the
//! same order, with the same ids.
//!
//! The rates below are plausible for a consumer subscription product with an affiliate
//! programme, not measured ones; they are named constants so a reader can see and change
//! the shape of the history in one place.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use ledger::domain::account::{AccountCommand, ForAccount, OpenAccount};
use ledger::domain::donation::AllocateDonation;
use ledger::domain::events::{DomainEvent, FraudFlag, GrantReason, PaymentKind, PersonalData};
use ledger::domain::ids::{
    Fingerprint, GrantId, OrganisationId, PaymentId, PayoutReference, PersonaId, ProductId,
    RefundId, SpendId, SubscriptionId,
};
use ledger::domain::payment::ReviewDecision;
use ledger::domain::payment::{RecordPayment, RefundKind, RefundPayment, ReviewCommission};
use ledger::domain::payout::{RunPayouts, SettlePayout, Settlement};
use ledger::domain::plan::PublishPlan;
use ledger::domain::{
    AccountId, Credits, Currency, Money, Period, PlanVersion, Rate, ReferralCode,
};

/// Most accounts one simulation creates (the model keeps every member in memory).
pub const ACCOUNTS_MAX: u32 = 10_000_000;
/// Most simulated months.
pub const MONTHS_MAX: u32 = 120;

/// Share of signups that come without a referral code, in per mille.
const ORGANIC_SIGNUP_PERMILLE: u64 = 450;
/// Share of members willing to refer others (they enter the attachment pool), per mille.
const AFFILIATE_PERMILLE: u64 = 300;
/// Share of referred signups that extend the one deep chain, per mille.
const CHAIN_PERMILLE: u64 = 60;
/// Share of referred signups by the referrer themselves (self-referral), per mille.
const SELF_REFERRAL_PERMILLE: u64 = 15;
/// One velocity ring (many signups under one code within an hour) per this many accounts.
const ACCOUNTS_PER_RING: u32 = 5_000;
/// Signups in a ring: above the default velocity limit of 20 per day.
const RING_SIZE: u32 = 24;
/// Share of members who subscribe in their first days, per mille.
const SUBSCRIBE_PERMILLE: u64 = 350;
/// Monthly churn of subscribers, per mille.
const CHURN_PERMILLE: u64 = 70;
/// Share of renewals that change plan instead, per mille.
const PLAN_CHANGE_PERMILLE: u64 = 40;
/// Share of members who buy credit packs when they run out, per mille.
const BUYER_PERMILLE: u64 = 300;
/// Share of payments refunded (within two weeks), per mille; a third of them in part.
const REFUND_PERMILLE: u64 = 25;
/// Share of payments charged back (within two months), per mille.
const CHARGEBACK_PERMILLE: u64 = 5;
/// Share of held commissions forfeited on review when the path is a self-referral.
const FORFEIT_SELF_REFERRAL_PERMILLE: u64 = 850;
/// ... and when it is only a velocity flag.
const FORFEIT_VELOCITY_PERMILLE: u64 = 400;
/// Share of payouts that fail (bounced bank details), per mille.
const PAYOUT_FAILURE_PERMILLE: u64 = 30;
/// Share of members correcting their personal data once, per mille.
const CORRECTION_PERMILLE: u64 = 10;
/// Share of churned subscribers who ask to be erased, per mille.
const ERASURE_PERMILLE: u64 = 100;
/// Most erasure requests per month. The cap dates from when each erasure folded the
/// whole log (the simulator now keeps its own books, see `writer::LedgerTarget`); it is
/// kept so that histories stay comparable with the recorded summaries and benchmarks.
const ERASURES_PER_MONTH_MAX: u32 = 5;
/// The donated share of each month's net revenue.
const DONATION_SHARE: &str = "0.02";
const DONATION_ORGANISATION: &str = "ocean-cleanup";
/// Credits of the welcome promotion and the referee's bonus, and their lifetimes.
const WELCOME_CREDITS: u64 = 100;
const WELCOME_DAYS: i64 = 14;
const REFERRAL_BONUS_CREDITS: u64 = 200;
const REFERRAL_BONUS_DAYS: i64 = 30;
/// A session spends between these many credits.
const SESSION_CREDITS_MIN: u64 = 5;
const SESSION_CREDITS_MAX: u64 = 80;

/// Subscription products: name, monthly price in minor units, monthly allowance.
const PRODUCTS: [(&str, i64, u64); 3] = [
    ("basic", 999, 500),
    ("pro", 1999, 2_000),
    ("team", 4999, 6_000),
];
/// Credit packs: price in minor units, credits.
const PACKS: [(i64, u64); 3] = [(499, 250), (1999, 1_200), (4999, 3_500)];
/// The AI specialists members talk to.
const PERSONAS: [&str; 6] = [
    "persona-coach",
    "persona-lawyer",
    "persona-doctor",
    "persona-tutor",
    "persona-chef",
    "persona-travel",
];

/// A small seeded generator (SplitMix64): reproducible on every platform, and enough for
/// a simulation; nothing here needs cryptographic randomness.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0). The modulo bias (< 2^-40 here) is irrelevant.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "bound must be positive");
        self.next_u64() % bound
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `permille / 1000`.
    pub fn permille(&mut self, permille: u64) -> bool {
        self.below(1000) < permille
    }

    /// A version-4 UUID from 128 generated bits.
    pub fn uuid(&mut self) -> Uuid {
        let bits = u128::from(self.next_u64()) << 64 | u128::from(self.next_u64());
        uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid()
    }
}

/// What to simulate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    pub accounts: u32,
    pub months: u32,
    pub seed: u64,
    /// The first instant of the history (the start of its first month).
    pub start: DateTime<Utc>,
    pub currency: Currency,
}

impl ModelConfig {
    /// The first day of 2026, in EUR.
    pub fn new(accounts: u32, months: u32, seed: u64) -> ModelConfig {
        ModelConfig {
            accounts,
            months,
            seed,
            start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            currency: Currency::EUR,
        }
    }

    /// The end of the simulated history.
    pub fn end(&self) -> DateTime<Utc> {
        let mut period = Period::containing(self.start);
        for _ in 0..self.months {
            period = period.next();
        }
        period.start()
    }
}

/// One command of the simulation, as the ledger service takes it.
#[derive(Clone, Debug)]
pub enum SimCommand {
    OpenAccount(OpenAccount),
    Account(ForAccount),
    RecordPayment(RecordPayment),
    RefundPayment(RefundPayment),
    ReviewCommission(ReviewCommission),
    PublishPlan(PublishPlan),
    RunPayouts(RunPayouts),
    SettlePayout(SettlePayout),
    AllocateDonation(AllocateDonation),
    /// A data subject asks to be erased (the 30-day deadline starts).
    RequestErasure {
        subject: AccountId,
        request_id: Uuid,
    },
    /// The privacy officer carries out the request: keys destroyed, proof recorded.
    EraseSubject {
        subject: AccountId,
        request_id: Uuid,
    },
}

impl SimCommand {
    /// A short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            SimCommand::OpenAccount(_) => "open_account",
            SimCommand::Account(_) => "account_command",
            SimCommand::RecordPayment(_) => "record_payment",
            SimCommand::RefundPayment(_) => "refund_payment",
            SimCommand::ReviewCommission(_) => "review_commission",
            SimCommand::PublishPlan(_) => "publish_plan",
            SimCommand::RunPayouts(_) => "run_payouts",
            SimCommand::SettlePayout(_) => "settle_payout",
            SimCommand::AllocateDonation(_) => "allocate_donation",
            SimCommand::RequestErasure { .. } => "request_erasure",
            SimCommand::EraseSubject { .. } => "erase_subject",
        }
    }
}

/// A command at its simulated instant, with its command id.
#[derive(Clone, Debug)]
pub struct Step {
    pub at: DateTime<Utc>,
    pub command_id: Uuid,
    pub command: SimCommand,
}

/// What the model did besides commands: counts a reader of the summary wants to see.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ModelStats {
    /// Signups that reused their referrer's email, IP or card.
    pub self_referral_attempts: u64,
    /// Signups in velocity rings.
    pub velocity_ring_signups: u64,
    /// Deepest referral chain, in levels below its root.
    pub chain_depth_max: u64,
    /// Churned subscribers who wished to be erased beyond the monthly cap (not sent).
    pub erasure_wishes_over_cap: u64,
    /// Payout runs the ledger refused because more affiliates were due than one run may
    /// pay (`too_many_payouts`, a documented limit).
    pub payout_runs_refused: u64,
}

/// How a member uses the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Activity {
    /// Tries it in the first week, then stops.
    Dormant,
    Casual,
    Regular,
    Power,
}

impl Activity {
    /// Mean hours between sessions.
    fn session_gap_hours(self) -> u64 {
        match self {
            Activity::Dormant => 48,
            Activity::Casual => 24 * 7,
            Activity::Regular => 56,
            Activity::Power => 17,
        }
    }
}

/// A credit grant as the member's wallet holds it, mirrored from the ledger's events.
#[derive(Clone, Debug)]
struct MirrorGrant {
    id: GrantId,
    remaining: u64,
    granted_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
struct Member {
    id: AccountId,
    code: ReferralCode,
    signup_at: DateTime<Utc>,
    /// The member whose email address and signup IP this one used: itself, or its
    /// referrer's (or further up) in a self-referral. Addresses and fingerprints both
    /// derive from these numbers, so two members share a fingerprint exactly when they
    /// share the address, as they would through the API (which fingerprints the address).
    email_owner: u32,
    ip_owner: u32,
    card_fingerprint: Fingerprint,
    activity: Activity,
    buyer: bool,
    persona: usize,
    depth: u64,
    /// The active subscription: its id and product index.
    subscription: Option<(SubscriptionId, usize)>,
    subscriptions_started: u32,
    grants: Vec<MirrorGrant>,
    /// Asked to be erased: acts no more.
    erased: bool,
}

impl Member {
    fn usable_at(&self, at: DateTime<Utc>) -> u64 {
        self.grants
            .iter()
            .filter(|grant| {
                grant.granted_at <= at && grant.expires_at.is_none_or(|expiry| at < expiry)
            })
            .map(|grant| grant.remaining)
            .sum()
    }
}

/// A payment the model may later refund or dispute.
#[derive(Clone, Debug)]
struct PaymentRecord {
    id: PaymentId,
    amount_minor: i64,
    refunded_minor: i64,
    received_at: DateTime<Utc>,
}

/// Something that happens at a simulated instant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Signup(u32),
    Subscribe(u32),
    Renew(u32),
    Session(u32),
    Correct(u32),
    Refund {
        payment: usize,
        chargeback: bool,
    },
    Review {
        payment: usize,
        level: u8,
        forfeit: bool,
    },
    PublishPlan,
    MonthEnd(Period),
    Settle {
        period: Period,
        affiliate: AccountId,
        failed: bool,
    },
    Erase {
        subject: AccountId,
        request_id: Uuid,
    },
}

/// The behaviour model. See the module docs.
pub struct Model {
    config: ModelConfig,
    rng: Rng,
    end: DateTime<Utc>,
    /// Members by number (signup order of the schedule), `None` until they sign up.
    members: Vec<Option<Member>>,
    index: std::collections::HashMap<AccountId, u32>,
    /// Preferential attachment: an affiliate appears once on joining and once more per
    /// referral made, so a uniform pick favours those who already refer many.
    attachment: Vec<u32>,
    codes: HashSet<ReferralCode>,
    /// Ring signups: member number to the member whose code the ring uses.
    ring_referrer: std::collections::HashMap<u32, u32>,
    chain_tip: Option<u32>,
    payments: Vec<PaymentRecord>,
    /// Payments by id, to find a held commission's payment without a scan.
    payment_numbers: std::collections::HashMap<PaymentId, usize>,
    /// Actions by (instant, sequence): the sequence keeps equal instants in a fixed order.
    agenda: BinaryHeap<Reverse<(i64, u64, Action)>>,
    sequence: u64,
    pending: VecDeque<Step>,
    /// Erasure requests per month, capped.
    erasures: std::collections::BTreeMap<Period, u32>,
    counter: u64,
    stats: ModelStats,
}

impl Model {
    pub fn new(config: ModelConfig) -> Model {
        assert!(
            config.accounts <= ACCOUNTS_MAX,
            "at most {ACCOUNTS_MAX} accounts"
        );
        assert!(
            (1..=MONTHS_MAX).contains(&config.months),
            "1 to {MONTHS_MAX} months"
        );
        let mut rng = Rng::new(config.seed);
        let end = config.end();
        let mut model = Model {
            end,
            members: vec![None; config.accounts as usize],
            index: Default::default(),
            attachment: Vec::new(),
            codes: HashSet::new(),
            ring_referrer: Default::default(),
            chain_tip: None,
            payments: Vec::new(),
            payment_numbers: Default::default(),
            agenda: BinaryHeap::new(),
            sequence: 0,
            pending: VecDeque::new(),
            erasures: Default::default(),
            counter: 0,
            stats: ModelStats::default(),
            rng: Rng::new(0),
            config: config.clone(),
        };
        // Signup times: the density grows linearly over the history (a growing platform),
        // so the cumulative share by time t is (t / span)^2.
        let span = (end - config.start).num_seconds().max(1) as f64;
        let mut times: Vec<i64> = (0..config.accounts)
            .map(|_| {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                (span * u.sqrt()) as i64
            })
            .collect();
        times.sort_unstable();
        // Velocity rings: a block of signups under one earlier member's code, two minutes
        // apart, more than the daily limit.
        let rings = if config.accounts > RING_SIZE * 2 {
            config.accounts / ACCOUNTS_PER_RING + 1
        } else {
            0
        };
        for _ in 0..rings {
            let first = rng.between(1, u64::from(config.accounts - RING_SIZE)) as u32;
            let referrer = first - 1;
            if model.ring_referrer.contains_key(&referrer) {
                continue;
            }
            for k in 0..RING_SIZE {
                let number = first + k;
                if model.ring_referrer.contains_key(&number) {
                    break;
                }
                times[number as usize] = times[first as usize] + i64::from(k) * 120;
                model.ring_referrer.insert(number, referrer);
            }
        }
        for (number, offset) in times.iter().enumerate() {
            let at = config.start + Duration::seconds(*offset);
            model.schedule(at, Action::Signup(number as u32));
        }
        let mut period = Period::containing(config.start);
        while period.start() < end {
            model.schedule(period.end() + Duration::hours(1), Action::MonthEnd(period));
            period = period.next();
        }
        if config.months >= 3 {
            // A plan change announced ten days before the third month starts.
            let mut third = Period::containing(config.start);
            for _ in 0..2 {
                third = third.next();
            }
            model.schedule(third.start() - Duration::days(10), Action::PublishPlan);
        }
        model.rng = rng;
        model
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    /// Accounts signed up so far.
    pub fn accounts_opened(&self) -> u64 {
        self.index.len() as u64
    }

    /// The next command, or `None` when the history is complete.
    pub fn next_step(&mut self) -> Option<Step> {
        loop {
            if let Some(step) = self.pending.pop_front() {
                return Some(step);
            }
            let Reverse((micros, _, action)) = self.agenda.pop()?;
            let at = Utc.timestamp_micros(micros).unwrap();
            self.act(at, action);
        }
    }

    /// Takes the events the ledger recorded for `step`, to follow what happened.
    pub fn observe(&mut self, step: &Step, events: &[DomainEvent]) {
        for event in events {
            match event {
                DomainEvent::CreditsGranted(granted) => {
                    self.add_grant(
                        granted.account_id,
                        MirrorGrant {
                            id: granted.grant_id.clone(),
                            remaining: granted.credits.units(),
                            granted_at: granted.granted_at,
                            expires_at: granted.expires_at,
                        },
                    );
                }
                DomainEvent::CreditsPurchased(purchased) => {
                    self.add_grant(
                        purchased.account_id,
                        MirrorGrant {
                            id: purchased.grant_id.clone(),
                            remaining: purchased.credits.units(),
                            granted_at: purchased.purchased_at,
                            expires_at: purchased.expires_at,
                        },
                    );
                }
                DomainEvent::CreditsSpent(spent) => {
                    let member = self.member_mut(spent.account_id);
                    for draw in &spent.drawn {
                        let grant = member
                            .grants
                            .iter_mut()
                            .find(|grant| grant.id == draw.grant_id)
                            .expect("a spend draws from grants the model mirrors");
                        grant.remaining -= draw.credits.units();
                    }
                    member.grants.retain(|grant| grant.remaining > 0);
                }
                DomainEvent::CreditsExpired(expired) => {
                    let member = self.member_mut(expired.account_id);
                    member.grants.retain(|grant| grant.id != expired.grant_id);
                }
                DomainEvent::CommissionEarned(earned) if earned.held_for_review => {
                    let payment = *self
                        .payment_numbers
                        .get(&earned.payment_id)
                        .expect("a commission's payment was recorded by the model");
                    let self_referral = earned
                        .review_reasons
                        .iter()
                        .any(|reason| !matches!(reason, FraudFlag::ReferralVelocity));
                    let forfeit = self.rng.permille(if self_referral {
                        FORFEIT_SELF_REFERRAL_PERMILLE
                    } else {
                        FORFEIT_VELOCITY_PERMILLE
                    });
                    let at = step.at + Duration::days(self.rng.between(5, 12) as i64);
                    self.schedule(
                        at,
                        Action::Review {
                            payment,
                            level: earned.level,
                            forfeit,
                        },
                    );
                }
                DomainEvent::PayoutScheduled(scheduled) => {
                    let failed = self.rng.permille(PAYOUT_FAILURE_PERMILLE);
                    let at = step.at + Duration::days(2);
                    self.schedule(
                        at,
                        Action::Settle {
                            period: scheduled.period,
                            affiliate: scheduled.affiliate,
                            failed,
                        },
                    );
                }
                _ => {}
            }
        }
    }

    /// The ledger refused a payout run for having more payouts than one run may hold.
    pub fn payout_run_refused(&mut self) {
        self.stats.payout_runs_refused += 1;
    }

    fn add_grant(&mut self, account: AccountId, grant: MirrorGrant) {
        self.member_mut(account).grants.push(grant);
    }

    fn member_mut(&mut self, account: AccountId) -> &mut Member {
        let number = *self
            .index
            .get(&account)
            .expect("the model knows every account it opened");
        self.members[number as usize]
            .as_mut()
            .expect("an indexed member has signed up")
    }
}

impl Model {
    fn schedule(&mut self, at: DateTime<Utc>, action: Action) {
        // Members stop acting when the history ends; finance (month ends, reviews,
        // settlements) finishes its work.
        let member_action = matches!(
            action,
            Action::Subscribe(_)
                | Action::Renew(_)
                | Action::Session(_)
                | Action::Correct(_)
                | Action::Refund { .. }
        );
        if member_action && at >= self.end {
            return;
        }
        self.sequence += 1;
        self.agenda
            .push(Reverse((at.timestamp_micros(), self.sequence, action)));
    }

    fn emit(&mut self, at: DateTime<Utc>, command: SimCommand) {
        let command_id = self.rng.uuid();
        self.pending.push_back(Step {
            at,
            command_id,
            command,
        });
    }

    fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn money(&self, minor: i64) -> Money {
        let currency = self.config.currency;
        Money::new(Decimal::new(minor, currency.minor_unit()), currency)
            .expect("simulated prices are valid amounts")
    }

    fn member(&self, number: u32) -> &Member {
        self.members[number as usize]
            .as_ref()
            .expect("actions are scheduled for members who signed up")
    }

    fn act(&mut self, at: DateTime<Utc>, action: Action) {
        if let Action::Subscribe(number)
        | Action::Renew(number)
        | Action::Session(number)
        | Action::Correct(number) = action
        {
            if self.member(number).erased {
                return;
            }
        }
        match action {
            Action::Signup(number) => self.signup(at, number),
            Action::Subscribe(number) => self.subscribe(at, number),
            Action::Renew(number) => self.renew(at, number),
            Action::Session(number) => self.session(at, number),
            Action::Correct(number) => self.correct(at, number),
            Action::Refund {
                payment,
                chargeback,
            } => self.refund(at, payment, chargeback),
            Action::Review {
                payment,
                level,
                forfeit,
            } => {
                let command = ReviewCommission {
                    payment_id: self.payments[payment].id.clone(),
                    level,
                    decision: if forfeit {
                        ReviewDecision::Forfeit
                    } else {
                        ReviewDecision::Release
                    },
                    reviewed_at: at,
                };
                self.emit(at, SimCommand::ReviewCommission(command));
            }
            Action::PublishPlan => {
                let rates = ["0.2", "0.1", "0.05", "0.02"];
                let command = PublishPlan {
                    version: PlanVersion::new(2).expect("2 is a plan version"),
                    level_rates: rates
                        .iter()
                        .map(|rate| Rate::parse(rate).expect("valid rate"))
                        .collect(),
                    hold_days: 30,
                    minimum_payout: self.money(5000),
                    effective_from: at + Duration::days(10),
                    published_at: at,
                };
                self.emit(at, SimCommand::PublishPlan(command));
            }
            Action::MonthEnd(period) => self.month_end(at, period),
            Action::Erase {
                subject,
                request_id,
            } => self.emit(
                at,
                SimCommand::EraseSubject {
                    subject,
                    request_id,
                },
            ),
            Action::Settle {
                period,
                affiliate,
                failed,
            } => {
                let settlement = if failed {
                    Settlement::Failed {
                        reason: "the bank refused the transfer: account closed".to_owned(),
                    }
                } else {
                    let reference = format!("po-{period}-{}", self.next_counter());
                    Settlement::Sent {
                        reference: PayoutReference::parse(&reference).expect("valid token"),
                    }
                };
                let command = SettlePayout {
                    period,
                    affiliate,
                    settlement,
                    settled_at: at,
                };
                self.emit(at, SimCommand::SettlePayout(command));
            }
        }
    }

    fn signup(&mut self, at: DateTime<Utc>, number: u32) {
        let id = loop {
            let id = AccountId::new(self.rng.uuid()).expect("the generator makes v4 UUIDs");
            if !self.index.contains_key(&id) {
                break id;
            }
        };
        // Codes carry 40 bits: at a million accounts two may collide; draw another.
        let mut code = ReferralCode::for_account(id);
        while self.codes.contains(&code) {
            code = ReferralCode::from_random_bytes(self.rng.uuid().as_bytes());
        }
        self.codes.insert(code);

        let signed_up = |model: &Model, referrer: u32| model.members[referrer as usize].is_some();
        let ring = self.ring_referrer.get(&number).copied();
        let referrer = if let Some(referrer) = ring.filter(|&r| signed_up(self, r)) {
            self.stats.velocity_ring_signups += 1;
            Some(referrer)
        } else if self.attachment.is_empty() || self.rng.permille(ORGANIC_SIGNUP_PERMILLE) {
            None
        } else if self.rng.permille(CHAIN_PERMILLE) {
            let tip = match self.chain_tip {
                Some(tip) => tip,
                None => self.attachment[self.rng.below(self.attachment.len() as u64) as usize],
            };
            self.chain_tip = Some(number);
            Some(tip)
        } else {
            Some(self.attachment[self.rng.below(self.attachment.len() as u64) as usize])
        };

        let mut email_owner = number;
        let mut ip_owner = number;
        let mut card_fingerprint = token::<Fingerprint>(&format!("card-{number}"));
        let mut signup_card = None;
        let mut depth = 0;
        let mut referred_with_code = None;
        if let Some(referrer) = referrer {
            let upline = self.member(referrer).clone();
            depth = upline.depth + 1;
            referred_with_code = Some(upline.code);
            if ring.is_none() && self.rng.permille(SELF_REFERRAL_PERMILLE) {
                self.stats.self_referral_attempts += 1;
                match self.rng.below(3) {
                    0 => email_owner = upline.email_owner,
                    1 => ip_owner = upline.ip_owner,
                    _ => {
                        card_fingerprint = upline.card_fingerprint.clone();
                        signup_card = Some(upline.card_fingerprint);
                    }
                }
            }
            self.attachment.push(referrer);
        }
        self.stats.chain_depth_max = self.stats.chain_depth_max.max(depth);
        if self.rng.permille(AFFILIATE_PERMILLE) {
            self.attachment.push(number);
        }
        let activity = match self.rng.below(100) {
            0..35 => Activity::Dormant,
            35..75 => Activity::Casual,
            75..95 => Activity::Regular,
            _ => Activity::Power,
        };
        let personal_data = PersonalData::parse(
            &format!("Member {number}"),
            &format!("member{email_owner}@example.org"),
            &signup_ip(ip_owner),
        )
        .expect("simulated personal data is valid");
        let command = OpenAccount {
            account_id: id,
            referral_code: code,
            referred_with_code,
            personal_data,
            email_fingerprint: token::<Fingerprint>(&format!("em-{email_owner}")),
            ip_fingerprint: token::<Fingerprint>(&format!("ip-{ip_owner}")),
            payment_fingerprint: signup_card,
            opened_at: at,
        };
        let member = Member {
            id,
            code,
            signup_at: at,
            email_owner,
            ip_owner,
            card_fingerprint,
            activity,
            buyer: self.rng.permille(BUYER_PERMILLE),
            persona: self.rng.below(PERSONAS.len() as u64) as usize,
            depth,
            subscription: None,
            subscriptions_started: 0,
            grants: Vec::new(),
            erased: false,
        };
        self.members[number as usize] = Some(member);
        self.index.insert(id, number);
        self.emit(at, SimCommand::OpenAccount(command));

        self.grant(
            at,
            id,
            format!("welcome-{number}"),
            WELCOME_CREDITS,
            GrantReason::Promotion,
            WELCOME_DAYS,
        );
        if referrer.is_some() {
            self.grant(
                at,
                id,
                format!("bonus-{number}"),
                REFERRAL_BONUS_CREDITS,
                GrantReason::ReferralBonus,
                REFERRAL_BONUS_DAYS,
            );
        }
        if self.rng.permille(SUBSCRIBE_PERMILLE) {
            let after = Duration::minutes(self.rng.between(5, 72 * 60) as i64);
            self.schedule(at + after, Action::Subscribe(number));
        }
        if self.rng.permille(CORRECTION_PERMILLE) {
            let after = Duration::days(self.rng.between(1, 60) as i64);
            self.schedule(at + after, Action::Correct(number));
        }
        let first_session = at + Duration::minutes(self.rng.between(1, 120) as i64);
        self.schedule(first_session, Action::Session(number));
    }

    fn grant(
        &mut self,
        at: DateTime<Utc>,
        account_id: AccountId,
        grant_id: String,
        credits: u64,
        reason: GrantReason,
        days: i64,
    ) {
        let command = ForAccount {
            account_id,
            command: AccountCommand::GrantCredits {
                grant_id: token(&grant_id),
                credits: Credits::new(credits).expect("simulated grants are valid"),
                reason,
                expires_at: Some(at + Duration::days(days)),
                granted_at: at,
            },
        };
        self.emit(at, SimCommand::Account(command));
    }

    fn subscribe(&mut self, at: DateTime<Utc>, number: u32) {
        if self.member(number).subscription.is_some() {
            return;
        }
        let product = match self.rng.below(10) {
            0..6 => 0,
            6..9 => 1,
            _ => 2,
        };
        self.start_subscription(at, number, product);
        self.charge(at, number);
        self.schedule(at + Duration::days(30), Action::Renew(number));
    }

    fn start_subscription(&mut self, at: DateTime<Utc>, number: u32, product: usize) {
        let member = self.members[number as usize].as_mut().expect("signed up");
        member.subscriptions_started += 1;
        let subscription_id: SubscriptionId =
            token(&format!("sub-{number}-{}", member.subscriptions_started));
        member.subscription = Some((subscription_id.clone(), product));
        let command = ForAccount {
            account_id: member.id,
            command: AccountCommand::StartSubscription {
                subscription_id,
                product: token::<ProductId>(PRODUCTS[product].0),
                started_at: at,
            },
        };
        self.emit(at, SimCommand::Account(command));
    }

    fn cancel_subscription(&mut self, at: DateTime<Utc>, number: u32) {
        let member = self.members[number as usize].as_mut().expect("signed up");
        let (subscription_id, _) = member.subscription.take().expect("an active subscription");
        let command = ForAccount {
            account_id: member.id,
            command: AccountCommand::CancelSubscription {
                subscription_id,
                cancelled_at: at,
            },
        };
        self.emit(at, SimCommand::Account(command));
    }

    fn renew(&mut self, at: DateTime<Utc>, number: u32) {
        let Some((_, product)) = self.member(number).subscription.clone() else {
            return;
        };
        if self.rng.permille(CHURN_PERMILLE) {
            self.cancel_subscription(at, number);
            if self.rng.permille(ERASURE_PERMILLE) {
                self.request_erasure(at, number);
            }
            return;
        }
        if self.rng.permille(PLAN_CHANGE_PERMILLE) {
            // Up or down one product, as the price list allows.
            let other = match product {
                0 => 1,
                2 => 1,
                _ if self.rng.permille(500) => 0,
                _ => 2,
            };
            self.cancel_subscription(at, number);
            self.start_subscription(at, number, other);
        }
        self.charge(at, number);
        self.schedule(at + Duration::days(30), Action::Renew(number));
    }

    /// The member asks to be erased; the privacy officer carries it out within the
    /// 30-day deadline. The member does nothing more.
    fn request_erasure(&mut self, at: DateTime<Utc>, number: u32) {
        let period = Period::containing(at);
        let count = self.erasures.entry(period).or_default();
        if *count >= ERASURES_PER_MONTH_MAX {
            self.stats.erasure_wishes_over_cap += 1;
            return;
        }
        *count += 1;
        let member = self.members[number as usize].as_mut().expect("signed up");
        member.erased = true;
        let subject = member.id;
        let request_id = self.rng.uuid();
        self.emit(
            at,
            SimCommand::RequestErasure {
                subject,
                request_id,
            },
        );
        let after = Duration::days(self.rng.between(2, 25) as i64);
        self.schedule(
            at + after,
            Action::Erase {
                subject,
                request_id,
            },
        );
    }

    /// A subscription payment and its month's allowance.
    fn charge(&mut self, at: DateTime<Utc>, number: u32) {
        let member = self.member(number);
        let (subscription_id, product) = member.subscription.clone().expect("subscribed");
        let (account_id, card) = (member.id, member.card_fingerprint.clone());
        let (_, price_minor, allowance) = PRODUCTS[product];
        let payment_id = self.record_payment(
            at,
            account_id,
            card,
            PaymentKind::Subscription { subscription_id },
            price_minor,
        );
        self.grant(
            at,
            account_id,
            format!("allowance-{}", payment_id.as_str()),
            allowance,
            GrantReason::SubscriptionAllowance,
            30,
        );
    }

    fn record_payment(
        &mut self,
        at: DateTime<Utc>,
        account_id: AccountId,
        card: Fingerprint,
        kind: PaymentKind,
        amount_minor: i64,
    ) -> PaymentId {
        let payment_id: PaymentId = token(&format!("pi-{}", self.next_counter()));
        let command = RecordPayment {
            payment_id: payment_id.clone(),
            account_id,
            kind,
            amount: self.money(amount_minor),
            payment_fingerprint: Some(card),
            received_at: at,
        };
        self.emit(at, SimCommand::RecordPayment(command));
        let payment = self.payments.len();
        self.payment_numbers.insert(payment_id.clone(), payment);
        self.payments.push(PaymentRecord {
            id: payment_id.clone(),
            amount_minor,
            refunded_minor: 0,
            received_at: at,
        });
        if self.rng.permille(REFUND_PERMILLE) {
            let after = Duration::hours(self.rng.between(2, 14 * 24) as i64);
            self.schedule(
                at + after,
                Action::Refund {
                    payment,
                    chargeback: false,
                },
            );
        } else if self.rng.permille(CHARGEBACK_PERMILLE) {
            let after = Duration::days(self.rng.between(20, 60) as i64);
            self.schedule(
                at + after,
                Action::Refund {
                    payment,
                    chargeback: true,
                },
            );
        }
        payment_id
    }

    fn session(&mut self, at: DateTime<Utc>, number: u32) {
        let member = self.member(number);
        let activity = member.activity;
        if activity == Activity::Dormant && at - member.signup_at > Duration::days(7) {
            return;
        }
        let usable = member.usable_at(at);
        let (account_id, persona, buyer) = (member.id, member.persona, member.buyer);
        let card = member.card_fingerprint.clone();
        let wanted = self.rng.between(SESSION_CREDITS_MIN, SESSION_CREDITS_MAX);
        if usable < wanted && buyer {
            // Out of credits: buy a pack, and talk again in a minute.
            let (price_minor, credits) = PACKS[match self.rng.below(20) {
                0..10 => 0,
                10..17 => 1,
                _ => 2,
            }];
            let kind = PaymentKind::CreditPack {
                credits: Credits::new(credits).expect("valid pack"),
            };
            self.record_payment(at, account_id, card, kind, price_minor);
            self.schedule(at + Duration::minutes(1), Action::Session(number));
            return;
        }
        let credits = wanted.min(usable);
        if credits > 0 {
            // One in ten sessions goes to another specialist than the favourite.
            let persona = if self.rng.permille(100) {
                self.rng.below(PERSONAS.len() as u64) as usize
            } else {
                persona
            };
            let command = ForAccount {
                account_id,
                command: AccountCommand::SpendCredits {
                    spend_id: token(&format!("sp-{}", self.next_counter())),
                    persona: token::<PersonaId>(PERSONAS[persona]),
                    credits: Credits::new(credits).expect("positive"),
                    spent_at: at,
                },
            };
            self.emit(at, SimCommand::Account(command));
        }
        // Gaps between sessions are exponential around the member's mean.
        let mean = activity.session_gap_hours() as f64;
        let u = ((self.rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let gap_minutes = (-u.ln() * mean * 60.0).clamp(30.0, 60.0 * 24.0 * 60.0) as i64;
        self.schedule(at + Duration::minutes(gap_minutes), Action::Session(number));
    }

    fn correct(&mut self, at: DateTime<Utc>, number: u32) {
        let member = self.member(number);
        let personal_data = PersonalData::parse(
            &format!("Member {number}"),
            &format!("member{number}.new@example.org"),
            &signup_ip(member.ip_owner),
        )
        .expect("simulated personal data is valid");
        let command = ForAccount {
            account_id: member.id,
            command: AccountCommand::CorrectPersonalData {
                personal_data,
                email_fingerprint: token(&format!("em-{number}-2")),
                corrected_at: at,
            },
        };
        self.emit(at, SimCommand::Account(command));
    }

    fn refund(&mut self, at: DateTime<Utc>, payment: usize, chargeback: bool) {
        let record = &self.payments[payment];
        let left_minor = record.amount_minor - record.refunded_minor;
        if left_minor <= 0 || at < record.received_at {
            return;
        }
        // A chargeback disputes everything left; a refund is whole, or half in a third
        // of cases (a goodwill partial refund).
        let amount_minor = if !chargeback && self.rng.permille(333) {
            (record.amount_minor / 2).clamp(1, left_minor)
        } else {
            left_minor
        };
        let payment_id = record.id.clone();
        self.payments[payment].refunded_minor += amount_minor;
        let (prefix, kind) = if chargeback {
            ("cb", RefundKind::Chargeback)
        } else {
            ("re", RefundKind::Refund)
        };
        let command = RefundPayment {
            payment_id,
            refund_id: token::<RefundId>(&format!("{prefix}-{}", self.next_counter())),
            kind,
            amount: self.money(amount_minor),
            refunded_at: at,
        };
        self.emit(at, SimCommand::RefundPayment(command));
    }

    fn month_end(&mut self, at: DateTime<Utc>, period: Period) {
        let expiring: Vec<AccountId> = self
            .members
            .iter()
            .flatten()
            .filter(|member| {
                member.grants.iter().any(|grant| {
                    grant.remaining > 0 && grant.expires_at.is_some_and(|expiry| expiry <= at)
                })
            })
            .map(|member| member.id)
            .collect();
        for account_id in expiring {
            let command = ForAccount {
                account_id,
                command: AccountCommand::ExpireCredits { expired_at: at },
            };
            self.emit(at, SimCommand::Account(command));
        }
        let run = RunPayouts {
            period,
            as_of: period.end(),
            run_at: at,
        };
        self.emit(at, SimCommand::RunPayouts(run));
        let donation = AllocateDonation {
            period,
            organisation: token::<OrganisationId>(DONATION_ORGANISATION),
            share: Rate::parse(DONATION_SHARE).expect("valid share"),
            allocated_at: at,
        };
        self.emit(at, SimCommand::AllocateDonation(donation));
    }
}

/// The signup IP address of member `number` (a documentation prefix, RFC 3849).
fn signup_ip(number: u32) -> String {
    format!("2001:db8::{:x}:{:x}", number >> 16, number & 0xffff)
}

/// A token value the model made up; they are valid by construction.
fn token<T: TokenParse>(text: &str) -> T {
    T::parse_token(text)
}

/// The token types' shared constructor, so `token` can make any of them.
trait TokenParse: Sized {
    fn parse_token(text: &str) -> Self;
}

macro_rules! token_parse {
    ($($name:ty),*) => {
        $(impl TokenParse for $name {
            fn parse_token(text: &str) -> Self {
                <$name>::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"))
            }
        })*
    };
}

token_parse!(
    Fingerprint,
    GrantId,
    PaymentId,
    PersonaId,
    ProductId,
    RefundId,
    SpendId,
    SubscriptionId,
    OrganisationId
);
