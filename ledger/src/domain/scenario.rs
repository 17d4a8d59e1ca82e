//! Given / when / then for decider tests: one helper, so every rule's test reads alike.

use chrono::{DateTime, Utc};

use super::events::DomainEvent;
use super::money::Money;
use super::AccountId;
use super::Rejection;

/// A state built by folding `events` with `evolve`.
pub struct Given<S> {
    pub state: S,
}

impl<S> Given<S> {
    pub fn new(initial: S, evolve: fn(S, &DomainEvent) -> S, events: Vec<DomainEvent>) -> Given<S> {
        let state = events.iter().fold(initial, evolve);
        Given { state }
    }

    pub fn when<T>(self, decide: impl FnOnce(&S) -> Result<T, Rejection>) -> Then<T> {
        Then(decide(&self.state))
    }
}

pub struct Then<T>(pub Result<T, Rejection>);

impl<T: std::fmt::Debug + PartialEq> Then<T> {
    pub fn then_ok(self) -> T {
        match self.0 {
            Ok(value) => value,
            Err(rejection) => panic!(
                "expected success, got rejection {}: {rejection}",
                rejection.code()
            ),
        }
    }

    pub fn then_events(self, expected: T) {
        assert_eq!(self.then_ok(), expected);
    }

    pub fn then_rejected(self, code: &str) -> Rejection {
        match self.0 {
            Ok(value) => panic!("expected rejection {code}, got {value:?}"),
            Err(rejection) => {
                assert_eq!(rejection.code(), code, "{rejection}");
                rejection
            }
        }
    }
}

pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test timestamps are RFC 3339")
        .with_timezone(&Utc)
}

/// The test account numbered `n`: `00000000-0000-4000-8000-0000000000nn`.
pub fn account_id(n: u8) -> AccountId {
    AccountId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02x}"))
        .expect("test account ids are valid")
}

pub fn eur(amount: &str) -> Money {
    Money::parse(amount, "EUR").expect("test amounts are valid")
}

/// Keeps only the events of one type, for assertions.
#[allow(dead_code)]
pub fn of_type<'a>(events: &'a [DomainEvent], event_type: &str) -> Vec<&'a DomainEvent> {
    events
        .iter()
        .filter(|event| event.event_type() == event_type)
        .collect()
}
