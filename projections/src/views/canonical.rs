//! The most frequent events read straight from the JSON the domain writes, without a
//! general parser.
//!
//! The domain writes every payload the same way: keys in alphabetical order, no
//! whitespace, strings without escapes for every value these events hold. Reading that
//! exact layout is a walk over literals and values; parsing it as general JSON was the
//! largest single cost of a rebuild. Each reader here returns `None` at the first byte
//! that is not the expected layout (another key order, whitespace, an escape, a number
//! with a sign, fraction or exponent, a value out of range, anything it does not know),
//! and the caller then reads the payload the general way. So the fast path never
//! decides what is accepted: it accepts a subset of what the general path accepts, and
//! every value goes through the same constructor the general path uses (a test compares
//! the two on generated histories and on payloads mutated at random).

use chrono::{DateTime, Utc};
use ledger::domain::events::{
    CommissionEarned, CreditsExpired, CreditsGranted, CreditsPurchased, CreditsSpent, GrantDraw,
    GrantReason, PaymentKind, PaymentReceived,
};
use ledger::domain::plan::PlanVersion;
use ledger::domain::{AccountId, Credits, Money, Rate};
use rust_decimal::Decimal;

use super::decode::{time, Opened};

/// Most grants one spend may draw from on the fast path; a longer list goes the general
/// way (the domain draws from few).
const DRAWS_FAST_MAX: usize = 16;

/// A position in a payload, moving forward only.
struct Cursor<'a> {
    rest: &'a [u8],
    /// Whether a key of the top-level object has been read (the next one follows a comma).
    inside: bool,
}

impl<'a> Cursor<'a> {
    fn new(payload: &'a [u8]) -> Cursor<'a> {
        Cursor {
            rest: payload,
            inside: false,
        }
    }

    /// The next key of the top-level object, `name`, with what comes before it (`{` for
    /// the first, `,` for the others) and the colon after it.
    fn field(&mut self, name: &str) -> Option<&mut Cursor<'a>> {
        self.literal(if self.inside { b",\"" } else { b"{\"" })?;
        self.literal(name.as_bytes())?;
        self.literal(b"\":")?;
        self.inside = true;
        Some(self)
    }

    /// The end of the top-level object, and of the payload.
    fn close(mut self) -> Option<()> {
        self.literal(b"}")?;
        self.rest.is_empty().then_some(())
    }

    /// Consumes `expected` exactly.
    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        self.rest = self.rest.strip_prefix(expected)?;
        Some(())
    }

    /// Consumes `expected` if it comes next.
    fn accept(&mut self, expected: &[u8]) -> bool {
        self.literal(expected).is_some()
    }

    /// A string without escapes or control characters (both go the general way).
    fn string(&mut self) -> Option<&'a str> {
        let body = self.rest.strip_prefix(b"\"")?;
        let end = body
            .iter()
            .position(|byte| *byte == b'"' || *byte == b'\\' || *byte < 0x20)?;
        if body[end] != b'"' {
            return None;
        }
        let text = std::str::from_utf8(&body[..end]).ok()?;
        self.rest = &body[end + 1..];
        Some(text)
    }

    /// A non-negative integer as JSON writes it: no sign, no leading zero, no fraction
    /// or exponent (whatever follows must be the next literal, or the caller gives up).
    fn unsigned(&mut self) -> Option<u64> {
        let digits = self
            .rest
            .iter()
            .position(|byte| !byte.is_ascii_digit())
            .unwrap_or(self.rest.len());
        if digits == 0 || (digits > 1 && self.rest[0] == b'0') {
            return None;
        }
        let value = self.rest[..digits].iter().try_fold(0u64, |value, digit| {
            value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })?;
        self.rest = &self.rest[digits..];
        Some(value)
    }

    fn boolean(&mut self) -> Option<bool> {
        if self.accept(b"true") {
            Some(true)
        } else if self.accept(b"false") {
            Some(false)
        } else {
            None
        }
    }

    /// A string as above, or `null`.
    fn string_or_null(&mut self) -> Option<Option<&'a str>> {
        if self.accept(b"null") {
            Some(None)
        } else {
            self.string().map(Some)
        }
    }

    fn account(&mut self) -> Option<AccountId> {
        AccountId::new(self.string()?.parse().ok()?).ok()
    }

    /// An id held as a string token (payment, grant, spend, persona, subscription).
    fn token<T: TryFrom<String>>(&mut self) -> Option<T> {
        T::try_from(self.string()?.to_owned()).ok()
    }

    fn credits(&mut self) -> Option<Credits> {
        Credits::try_from(self.unsigned()?).ok()
    }

    fn instant(&mut self) -> Option<DateTime<Utc>> {
        time::parse(self.string()?).ok()
    }

    fn optional_instant(&mut self) -> Option<Option<DateTime<Utc>>> {
        if self.accept(b"null") {
            Some(None)
        } else {
            self.instant().map(Some)
        }
    }

    /// `{"amount":"12.30","currency":"EUR"}`
    fn money(&mut self) -> Option<Money> {
        self.literal(b"{\"amount\":")?;
        let amount = self.string()?;
        self.literal(b",\"currency\":")?;
        let currency = self.string()?;
        self.literal(b"}")?;
        Money::parse(amount, currency).ok()
    }
}

/// A signup whose personal data and fingerprints are stored plain (sealed ones, which
/// are objects, go the general way). The views read four fields; the rest are checked
/// to be plain strings and skipped.
pub fn opened(payload: &[u8]) -> Option<Opened> {
    let mut at = Cursor::new(payload);
    let account_id = at.field("account_id")?.account()?;
    at.field("email_fingerprint")?.string_or_null()?;
    // Fraud flags are rare: any go the general way.
    at.field("fraud_flags")?.literal(b"[]")?;
    at.field("ip_fingerprint")?.string_or_null()?;
    let opened_at = at.field("opened_at")?.instant()?;
    at.field("payment_fingerprint")?.string_or_null()?;
    at.field("personal_data")?.literal(b"{\"email\":")?;
    at.string()?;
    at.literal(b",\"name\":")?;
    at.string()?;
    at.literal(b",\"signup_ip\":")?;
    at.string()?;
    at.literal(b"}")?;
    at.field("referral_code")?.string()?;
    at.field("referred_with_code")?.string_or_null()?;
    let referrer = if at.field("referrer")?.accept(b"null") {
        None
    } else {
        Some(at.account()?)
    };
    at.close()?;
    Some(Opened {
        account_id,
        referrer,
        fraud_flags: Vec::new(),
        opened_at,
    })
}

pub fn earned(payload: &[u8]) -> Option<CommissionEarned> {
    let mut at = Cursor::new(payload);
    let amount = at.field("amount")?.money()?;
    let base_amount = at.field("base_amount")?.money()?;
    let beneficiary = at.field("beneficiary")?.account()?;
    let earned_at = at.field("earned_at")?.instant()?;
    let held_for_review = at.field("held_for_review")?.boolean()?;
    let hold_until = at.field("hold_until")?.instant()?;
    let level = u8::try_from(at.field("level")?.unsigned()?).ok()?;
    let payer = at.field("payer")?.account()?;
    let payment_id = at.field("payment_id")?.token()?;
    let plan_version = u32::try_from(at.field("plan_version")?.unsigned()?).ok()?;
    let plan_version = PlanVersion::try_from(plan_version).ok()?;
    let rate = Rate::parse(at.field("rate")?.string()?).ok()?;
    // Review reasons are rare: any go the general way.
    at.field("review_reasons")?.literal(b"[]")?;
    let rounding = at.field("rounding")?.string()?.parse::<Decimal>().ok()?;
    at.close()?;
    Some(CommissionEarned {
        payment_id,
        beneficiary,
        payer,
        level,
        rate,
        plan_version,
        base_amount,
        amount,
        rounding,
        earned_at,
        hold_until,
        held_for_review,
        review_reasons: Vec::new(),
    })
}

/// A payment without a card fingerprint (a fingerprint, sealed or not, goes the general
/// way; the views do not read it).
pub fn payment(payload: &[u8]) -> Option<PaymentReceived> {
    let mut at = Cursor::new(payload);
    let account_id = at.field("account_id")?.account()?;
    let amount = at.field("amount")?.money()?;
    let kind = if at.field("kind")?.accept(b"{\"credits\":") {
        let credits = at.credits()?;
        at.literal(b",\"type\":\"credit_pack\"}")?;
        PaymentKind::CreditPack { credits }
    } else {
        at.literal(b"{\"subscription_id\":")?;
        let subscription_id = at.token()?;
        at.literal(b",\"type\":\"subscription\"}")?;
        PaymentKind::Subscription { subscription_id }
    };
    at.field("payment_fingerprint")?.literal(b"null")?;
    let payment_id = at.field("payment_id")?.token()?;
    let received_at = at.field("received_at")?.instant()?;
    at.close()?;
    Some(PaymentReceived {
        payment_id,
        account_id,
        kind,
        amount,
        payment_fingerprint: None,
        received_at,
    })
}

pub fn granted(payload: &[u8]) -> Option<CreditsGranted> {
    let mut at = Cursor::new(payload);
    let account_id = at.field("account_id")?.account()?;
    let credits = at.field("credits")?.credits()?;
    let expires_at = at.field("expires_at")?.optional_instant()?;
    let grant_id = at.field("grant_id")?.token()?;
    let granted_at = at.field("granted_at")?.instant()?;
    let reason = match at.field("reason")?.string()? {
        "subscription_allowance" => GrantReason::SubscriptionAllowance,
        "promotion" => GrantReason::Promotion,
        "referral_bonus" => GrantReason::ReferralBonus,
        "goodwill" => GrantReason::Goodwill,
        _ => return None,
    };
    at.close()?;
    Some(CreditsGranted {
        account_id,
        grant_id,
        credits,
        reason,
        expires_at,
        granted_at,
    })
}

pub fn purchased(payload: &[u8]) -> Option<CreditsPurchased> {
    let mut at = Cursor::new(payload);
    let account_id = at.field("account_id")?.account()?;
    let credits = at.field("credits")?.credits()?;
    let expires_at = at.field("expires_at")?.optional_instant()?;
    let grant_id = at.field("grant_id")?.token()?;
    let payment_id = at.field("payment_id")?.token()?;
    let purchased_at = at.field("purchased_at")?.instant()?;
    at.close()?;
    Some(CreditsPurchased {
        account_id,
        grant_id,
        payment_id,
        credits,
        expires_at,
        purchased_at,
    })
}

pub fn spent(payload: &[u8]) -> Option<CreditsSpent> {
    let mut at = Cursor::new(payload);
    let account_id = at.field("account_id")?.account()?;
    let credits = at.field("credits")?.credits()?;
    at.field("drawn")?.literal(b"[")?;
    let mut drawn = Vec::new();
    if !at.accept(b"]") {
        loop {
            if drawn.len() == DRAWS_FAST_MAX {
                return None;
            }
            at.literal(b"{\"credits\":")?;
            let credits = at.credits()?;
            at.literal(b",\"grant_id\":")?;
            let grant_id = at.token()?;
            at.literal(b"}")?;
            drawn.push(GrantDraw { grant_id, credits });
            if at.accept(b"]") {
                break;
            }
            at.literal(b",")?;
        }
    }
    let persona = at.field("persona")?.token()?;
    let spend_id = at.field("spend_id")?.token()?;
    let spent_at = at.field("spent_at")?.instant()?;
    at.close()?;
    Some(CreditsSpent {
        account_id,
        spend_id,
        persona,
        credits,
        drawn,
        spent_at,
    })
}

pub fn expired(payload: &[u8]) -> Option<CreditsExpired> {
    let mut at = Cursor::new(payload);
    let account_id = at.field("account_id")?.account()?;
    let credits = at.field("credits")?.credits()?;
    let expired_at = at.field("expired_at")?.instant()?;
    let grant_id = at.field("grant_id")?.token()?;
    at.close()?;
    Some(CreditsExpired {
        account_id,
        grant_id,
        credits,
        expired_at,
    })
}

#[cfg(test)]
mod tests {
    use ledger::domain::events::{upcast, DomainEvent};
    use ledger::store::RecordedEvent;
    use proptest::prelude::*;

    use super::*;
    use crate::history::{Generator, HistoryConfig, Recorder};

    /// What a payload reads as: a domain event, or the views' narrow signup.
    #[derive(Debug, PartialEq)]
    enum Read {
        Domain(DomainEvent),
        Opened(Opened),
    }

    /// The fast reading of `event_type`.
    fn fast(event_type: &str, payload: &[u8]) -> Option<Read> {
        let domain = match event_type {
            "AccountOpened" => return opened(payload).map(Read::Opened),
            "CommissionEarned" => earned(payload).map(DomainEvent::CommissionEarned),
            "PaymentReceived" => payment(payload).map(DomainEvent::PaymentReceived),
            "CreditsGranted" => granted(payload).map(DomainEvent::CreditsGranted),
            "CreditsPurchased" => purchased(payload).map(DomainEvent::CreditsPurchased),
            "CreditsSpent" => spent(payload).map(DomainEvent::CreditsSpent),
            "CreditsExpired" => expired(payload).map(DomainEvent::CreditsExpired),
            _ => None,
        };
        domain.map(Read::Domain)
    }

    /// The general reading the fast path stands in for: the views' narrow signup
    /// (which ignores the fields it does not need), the domain's own reading otherwise.
    fn general(event_type: &str, payload: &[u8]) -> Result<Read, String> {
        if event_type == "AccountOpened" {
            serde_json::from_slice(payload)
                .map(Read::Opened)
                .map_err(|error| error.to_string())
        } else {
            upcast(event_type, 1, payload)
                .map(Read::Domain)
                .map_err(|error| error.to_string())
        }
    }

    const FAST_TYPES: [&str; 7] = [
        "AccountOpened",
        "CommissionEarned",
        "PaymentReceived",
        "CreditsGranted",
        "CreditsPurchased",
        "CreditsSpent",
        "CreditsExpired",
    ];

    fn generated(seed: u64) -> Vec<RecordedEvent> {
        let mut generator = Generator::new(HistoryConfig::small(seed));
        let mut recorder = Recorder::new(seed);
        let mut events = Vec::new();
        while let Some(batch) = generator.next_batch() {
            recorder.record(&batch, &mut events);
        }
        events
    }

    #[test]
    fn what_the_domain_writes_is_read_fast_and_exactly_as_the_general_way() {
        // Per type: read fast, and left to the general way.
        let mut counts = std::collections::BTreeMap::<&str, (usize, usize)>::new();
        for seed in [21, 22] {
            for event in generated(seed) {
                let event_type = event.event_type.as_str();
                let Some(name) = FAST_TYPES.iter().find(|name| **name == event_type) else {
                    continue;
                };
                let general = general(event_type, &event.payload).expect("read the general way");
                let count = counts.entry(name).or_default();
                match fast(event_type, &event.payload) {
                    Some(quick) => {
                        assert_eq!(quick, general);
                        count.0 += 1;
                    }
                    None => {
                        // Only what the fast path leaves out by design: review reasons,
                        // fraud flags.
                        let by_design = match &general {
                            Read::Domain(DomainEvent::CommissionEarned(earned)) => {
                                !earned.review_reasons.is_empty()
                            }
                            Read::Opened(opened) => !opened.fraud_flags.is_empty(),
                            _ => false,
                        };
                        assert!(
                            by_design,
                            "not read fast: {}",
                            String::from_utf8_lossy(&event.payload)
                        );
                        count.1 += 1;
                    }
                }
            }
        }
        for name in FAST_TYPES {
            let (fast, general) = counts.get(name).copied().unwrap_or_default();
            assert!(
                fast > 0 && fast >= 10 * general,
                "{name}: {fast} fast, {general} not"
            );
        }
    }

    /// A few payloads of each fast type, as the generator writes them.
    fn samples() -> &'static [(String, Vec<u8>)] {
        static SAMPLES: std::sync::OnceLock<Vec<(String, Vec<u8>)>> = std::sync::OnceLock::new();
        SAMPLES.get_or_init(|| {
            let mut samples: Vec<(String, Vec<u8>)> = Vec::new();
            for event in generated(23) {
                let event_type = event.event_type.as_str();
                let known = samples
                    .iter()
                    .filter(|(known, _)| known == event_type)
                    .count();
                if FAST_TYPES.contains(&event_type) && known < 3 {
                    samples.push((event_type.to_owned(), event.payload));
                }
            }
            samples
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Whatever the fast path accepts, the general way accepts and reads the same:
        /// payloads with a byte replaced, removed or inserted, or cut short.
        #[test]
        fn the_fast_path_never_accepts_what_the_general_way_reads_otherwise(
            sample in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            mutation in 0u8..4,
        ) {
            let samples = samples();
            let (event_type, payload) = &samples[sample.index(samples.len())];
            let mut mutated = payload.clone();
            let index = at.index(mutated.len());
            match mutation {
                0 => mutated[index] = byte,
                1 => {
                    mutated.remove(index);
                }
                2 => mutated.insert(index, byte),
                _ => mutated.truncate(index),
            }
            if let Some(quick) = fast(event_type, &mutated) {
                prop_assert_eq!(Some(quick), general(event_type, &mutated).ok());
            }
        }
    }

    #[test]
    fn what_is_not_the_exact_layout_goes_the_general_way() {
        let granted_payload = br#"{"account_id":"529f0f13-5767-4247-83f1-66b233e3ef28","credits":500,"expires_at":null,"grant_id":"g-1","granted_at":"2026-01-01T00:00:06.220Z","reason":"promotion"}"#;
        assert!(granted(granted_payload).is_some());
        for (from, to) in [
            (r#""credits":500"#, r#""credits": 500"#),
            (r#""credits":500"#, r#""credits":0500"#),
            (r#""credits":500"#, r#""credits":500.0"#),
            (r#""credits":500"#, r#""credits":-500"#),
            (r#""grant_id":"g-1""#, r#""grant_id":"g-\u0031""#),
            (r#""reason":"promotion""#, r#""reason":"bribe""#),
        ] {
            let text = String::from_utf8(granted_payload.to_vec()).unwrap();
            let changed = text.replace(from, to);
            assert_ne!(changed, text);
            assert!(granted(changed.as_bytes()).is_none(), "{changed}");
        }
        let trailing = [granted_payload.as_slice(), b" "].concat();
        assert!(granted(&trailing).is_none());
    }
}
