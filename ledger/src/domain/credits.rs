//! Credits: whole, non-negative units that users spend per message.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ValueError;

/// Most credits one amount (a grant, a spend, a balance) may hold.
pub const CREDITS_MAX: u64 = 1_000_000_000_000;

/// A whole, non-negative number of credits, at most [`CREDITS_MAX`]. JSON: a number.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Credits(u64);

impl Credits {
    pub const ZERO: Credits = Credits(0);

    pub fn new(units: u64) -> Result<Credits, ValueError> {
        if units > CREDITS_MAX {
            return Err(ValueError::new(
                "credits",
                format!("{units} exceeds the most credits one amount holds, {CREDITS_MAX}"),
            ));
        }
        Ok(Credits(units))
    }

    pub fn units(self) -> u64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `None` when the result would go below zero: a balance never does.
    pub fn checked_sub(self, other: Credits) -> Option<Credits> {
        self.0.checked_sub(other.0).map(Credits)
    }

    /// `None` when the result would exceed [`CREDITS_MAX`].
    pub fn checked_add(self, other: Credits) -> Option<Credits> {
        self.0
            .checked_add(other.0)
            .filter(|&sum| sum <= CREDITS_MAX)
            .map(Credits)
    }

    pub fn min(self, other: Credits) -> Credits {
        Credits(self.0.min(other.0))
    }
}

impl TryFrom<u64> for Credits {
    type Error = ValueError;
    fn try_from(units: u64) -> Result<Self, Self::Error> {
        Credits::new(units)
    }
}

impl From<Credits> for u64 {
    fn from(credits: Credits) -> u64 {
        credits.0
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} credits", self.0)
    }
}

impl fmt::Debug for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credits({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_never_go_negative_or_past_the_maximum() {
        let five = Credits::new(5).unwrap();
        let three = Credits::new(3).unwrap();
        assert_eq!(five.checked_sub(three), Some(Credits::new(2).unwrap()));
        assert_eq!(three.checked_sub(five), None);
        assert_eq!(
            Credits::new(CREDITS_MAX)
                .unwrap()
                .checked_add(Credits::new(1).unwrap()),
            None
        );
        assert_eq!(Credits::new(CREDITS_MAX + 1).unwrap_err().field, "credits");
        assert!(serde_json::from_str::<Credits>("-1").is_err());
        assert!(serde_json::from_str::<Credits>("1.5").is_err());
        assert_eq!(
            serde_json::from_str::<Credits>("7").unwrap(),
            Credits::new(7).unwrap()
        );
    }
}
