//! Money: a `rust_decimal` amount in an ISO 4217 currency, never floating point.
//!
//! An amount always holds exactly the currency's minor-unit scale (`12.30 EUR`, `5 JPY`),
//! so its JSON form is stable. Arithmetic is only between equal currencies and returns a
//! [`MoneyError`] otherwise. Every multiplication by a rate and every proportional split
//! rounds half-even to the minor unit and reports the rounding, so it can be recorded.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::ValueError;

/// Largest absolute amount a [`Money`] holds, in major units. Keeps every product of an
/// amount's minor units with another's inside `i128`, so proportional splits are exact.
pub const MONEY_AMOUNT_MAX: i64 = 1_000_000_000_000;
/// Most decimal places a [`Rate`] may carry.
pub const RATE_SCALE_MAX: u32 = 6;

// Minor units of the largest amount (scale ≤ 3) squared must fit in an i128.
const _: () = assert!((MONEY_AMOUNT_MAX as i128 * 1000) < (1i128 << 62));

/// ISO 4217 currencies the ledger accepts, with their minor units (decimal places).
const CURRENCIES: &[(&str, u32)] = &[
    ("AUD", 2),
    ("BHD", 3),
    ("CAD", 2),
    ("CHF", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("JPY", 0),
    ("KWD", 3),
    ("NOK", 2),
    ("NZD", 2),
    ("PLN", 2),
    ("SEK", 2),
    ("USD", 2),
];

/// An ISO 4217 currency the ledger knows, with its minor unit.
///
/// Held as its place in [`CURRENCIES`] (one byte): amounts are everywhere, in the millions
/// in a rebuild, and comparing or hashing a byte is cheaper than a code. The table is in
/// code order (a test checks), so the derived order is the order of the codes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency {
    index: u8,
}

/// The place of `code` in [`CURRENCIES`], at compile time.
const fn index_of(code: &str) -> u8 {
    let mut index = 0;
    while index < CURRENCIES.len() {
        let known = CURRENCIES[index].0.as_bytes();
        let wanted = code.as_bytes();
        if known.len() == wanted.len()
            && known[0] == wanted[0]
            && known[1] == wanted[1]
            && known[2] == wanted[2]
        {
            return index as u8;
        }
        index += 1;
    }
    panic!("not a listed currency");
}

impl Currency {
    pub const EUR: Currency = Currency {
        index: index_of("EUR"),
    };
    pub const USD: Currency = Currency {
        index: index_of("USD"),
    };
    pub const JPY: Currency = Currency {
        index: index_of("JPY"),
    };

    /// Parses an upper-case ISO 4217 code the ledger supports.
    pub fn parse(code: &str) -> Result<Currency, ValueError> {
        CURRENCIES
            .iter()
            .position(|(known, _)| *known == code)
            .map(|index| Currency { index: index as u8 })
            .ok_or_else(|| {
                ValueError::new(
                    "currency",
                    format!(
                        "{code:?} is not a supported ISO 4217 code; use one of {}",
                        CURRENCIES
                            .iter()
                            .map(|(code, _)| *code)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }

    /// Every code the ledger accepts, in code order (the API's schema lists them).
    pub fn codes() -> impl Iterator<Item = &'static str> {
        CURRENCIES.iter().map(|(code, _)| *code)
    }

    pub fn code(self) -> &'static str {
        CURRENCIES[usize::from(self.index)].0
    }

    /// Decimal places of the minor unit (2 for EUR, 0 for JPY).
    pub fn minor_unit(self) -> u32 {
        CURRENCIES[usize::from(self.index)].1
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = BorrowedText::deserialize(deserializer)?;
        Currency::parse(&code.0).map_err(serde::de::Error::custom)
    }
}

/// Arithmetic between amounts that cannot be done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency mismatch: {left} and {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount out of range: the largest absolute amount is {MONEY_AMOUNT_MAX}")]
    OutOfRange,
    #[error("division by a zero amount")]
    DivisionByZero,
}

/// An amount of money in one currency, exactly at the currency's minor-unit scale.
/// It may be negative (a balance, a reversal's effect); commands that need a positive
/// amount say so.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

/// The result of a rounded computation: the amount and what rounding removed
/// (`exact - amount`), which events record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rounded {
    pub amount: Money,
    pub rounding: Decimal,
}

impl Money {
    /// An amount that must already be exact to the minor unit: `12.345 EUR` is an error,
    /// not a silent rounding.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Money, ValueError> {
        // Nearly every amount read back arrives at its currency's scale ("12.30"): then
        // normalizing and rescaling would give it back bit for bit (a negative zero aside,
        // which normalizing makes positive), and the range is a bound on the mantissa.
        // A test checks this against the general path.
        if amount.scale() == currency.minor_unit()
            && !(amount.is_zero() && amount.is_sign_negative())
        {
            let limit = i128::from(MONEY_AMOUNT_MAX) * 10i128.pow(currency.minor_unit());
            if amount.mantissa().abs() <= limit {
                return Ok(Money { amount, currency });
            }
        }
        Money::new_general(amount, currency)
    }

    fn new_general(amount: Decimal, currency: Currency) -> Result<Money, ValueError> {
        let normalized = amount.normalize();
        if normalized.scale() > currency.minor_unit() {
            return Err(ValueError::new(
                "amount",
                format!(
                    "{amount} has more decimal places than {currency} allows ({})",
                    currency.minor_unit()
                ),
            ));
        }
        if normalized.abs() > Decimal::from(MONEY_AMOUNT_MAX) {
            return Err(ValueError::new(
                "amount",
                format!("{amount} exceeds the largest amount {MONEY_AMOUNT_MAX}"),
            ));
        }
        let mut amount = normalized;
        amount.rescale(currency.minor_unit());
        Ok(Money { amount, currency })
    }

    /// Parses a decimal string (`"12.30"`) and a currency code (`"EUR"`).
    pub fn parse(amount: &str, currency: &str) -> Result<Money, ValueError> {
        let currency = Currency::parse(currency)?;
        let decimal = Decimal::from_str(amount.trim()).map_err(|_| {
            ValueError::new(
                "amount",
                format!("{amount:?} is not a decimal number like \"12.30\""),
            )
        })?;
        Money::new(decimal, currency)
    }

    pub fn zero(currency: Currency) -> Money {
        let mut amount = Decimal::ZERO;
        amount.rescale(currency.minor_unit());
        Money { amount, currency }
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    pub fn is_positive(&self) -> bool {
        self.amount > Decimal::ZERO
    }

    pub fn is_negative(&self) -> bool {
        self.amount < Decimal::ZERO
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    fn from_decimal(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        Money::new(amount, currency).map_err(|_| MoneyError::OutOfRange)
    }

    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        Money::from_decimal(self.amount + other.amount, self.currency)
    }

    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        Money::from_decimal(self.amount - other.amount, self.currency)
    }

    pub fn negated(&self) -> Money {
        Money {
            amount: -self.amount,
            currency: self.currency,
        }
    }

    /// Compares two amounts of the same currency.
    pub fn checked_cmp(&self, other: &Money) -> Result<std::cmp::Ordering, MoneyError> {
        self.same_currency(other)?;
        Ok(self.amount.cmp(&other.amount))
    }

    /// `self × rate`, rounded half-even to the minor unit.
    pub fn times_rate(&self, rate: Rate) -> Rounded {
        // Both factors are bounded (amount ≤ MONEY_AMOUNT_MAX, rate ≤ 1 with at most
        // RATE_SCALE_MAX places), so the product is exact in a Decimal.
        let exact = self.amount * rate.as_decimal();
        let rounded = exact.round_dp_with_strategy(
            self.currency.minor_unit(),
            RoundingStrategy::MidpointNearestEven,
        );
        let amount = Money::new(rounded, self.currency)
            .expect("a rate of at most 1 keeps the product within range");
        Rounded {
            amount,
            // Normalized, so the recorded JSON does not depend on the factors' scales.
            rounding: (exact - rounded).normalize(),
        }
    }

    /// `self × numerator ÷ denominator`, rounded half-even to the minor unit, computed on
    /// integer minor units so the division is exact before it rounds.
    pub fn times_ratio(
        &self,
        numerator: &Money,
        denominator: &Money,
    ) -> Result<Rounded, MoneyError> {
        numerator.same_currency(denominator)?;
        let minor = |money: &Money| -> i128 { money.amount.mantissa() };
        let denominator_minor = minor(denominator);
        if denominator_minor == 0 {
            return Err(MoneyError::DivisionByZero);
        }
        // Same currency, so numerator and denominator share a scale that cancels.
        let product = minor(self) * minor(numerator);
        let (quotient, remainder) = (product / denominator_minor, product % denominator_minor);
        let twice_remainder = remainder.abs() * 2;
        let away = match twice_remainder.cmp(&denominator_minor.abs()) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => quotient % 2 != 0,
        };
        let negative = (product < 0) != (denominator_minor < 0);
        let rounded_minor = if away {
            if negative {
                quotient - 1
            } else {
                quotient + 1
            }
        } else {
            quotient
        };
        let rounded = Decimal::from_i128_with_scale(rounded_minor, self.currency.minor_unit());
        let amount = Money::from_decimal(rounded, self.currency)?;
        // What was rounded off, as a fraction of the minor unit expressed in the amount's
        // unit: remainder / denominator minor units. Recorded to RATE_SCALE_MAX + minor places.
        let exact_fraction = Decimal::from_i128_with_scale(remainder, 0)
            / Decimal::from_i128_with_scale(denominator_minor, 0);
        let unit = Decimal::new(1, self.currency.minor_unit());
        let exact = Decimal::from_i128_with_scale(quotient, self.currency.minor_unit())
            + exact_fraction * unit;
        let rounding = (exact - rounded).round_dp_with_strategy(
            self.currency.minor_unit() + 10,
            RoundingStrategy::MidpointNearestEven,
        );
        Ok(Rounded {
            amount,
            rounding: rounding.normalize(),
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// The JSON shape of money, a promise: `{"amount": "12.30", "currency": "EUR"}`, the
/// amount a decimal string at the currency's minor-unit scale.
///
/// Reading borrows both strings from the input when it can (no escapes): millions of
/// amounts are read in a rebuild, and two allocations each were a visible share of it.
#[derive(Serialize, Deserialize)]
struct MoneyJson<'a> {
    #[serde(borrow)]
    amount: Cow<'a, str>,
    #[serde(borrow)]
    currency: Cow<'a, str>,
}

impl Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MoneyJson {
            amount: Cow::Owned(self.amount.to_string()),
            currency: Cow::Borrowed(self.currency.code()),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = MoneyJson::deserialize(deserializer)?;
        Money::parse(&json.amount, &json.currency).map_err(serde::de::Error::custom)
    }
}

/// A fraction from 0 to 1 inclusive (a commission rate, a donation share), with at most
/// [`RATE_SCALE_MAX`] decimal places. JSON: a decimal string, `"0.2"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(Decimal);

impl Rate {
    pub fn new(rate: Decimal) -> Result<Rate, ValueError> {
        let rate = rate.normalize();
        if rate < Decimal::ZERO || rate > Decimal::ONE {
            return Err(ValueError::new(
                "rate",
                format!("{rate} must be a fraction from 0 to 1, e.g. \"0.2\" for 20%"),
            ));
        }
        if rate.scale() > RATE_SCALE_MAX {
            return Err(ValueError::new(
                "rate",
                format!("{rate} has more than {RATE_SCALE_MAX} decimal places"),
            ));
        }
        Ok(Rate(rate))
    }

    pub fn parse(rate: &str) -> Result<Rate, ValueError> {
        let decimal = Decimal::from_str(rate.trim()).map_err(|_| {
            ValueError::new(
                "rate",
                format!("{rate:?} is not a decimal fraction like \"0.2\""),
            )
        })?;
        Rate::new(decimal)
    }

    pub fn as_decimal(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_string())
    }
}

/// A string read from serialized input, borrowed from it when it has no escapes: for
/// values parsed from their text (amounts, rates, codes, instants) without allocating.
#[derive(Deserialize)]
pub struct BorrowedText<'a>(#[serde(borrow)] Cow<'a, str>);

impl BorrowedText<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = BorrowedText::deserialize(deserializer)?;
        Rate::parse(&text.0).map_err(serde::de::Error::custom)
    }
}

/// Serializes a bare `Decimal` (a recorded rounding) as a decimal string.
pub(crate) mod decimal_string {
    use std::str::FromStr;

    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        let text = super::BorrowedText::deserialize(deserializer)?;
        Decimal::from_str(&text.0).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur(amount: &str) -> Money {
        Money::parse(amount, "EUR").unwrap()
    }

    proptest! {
        #[test]
        fn amounts_at_their_scale_are_taken_as_the_general_path_takes_them(
            mantissa in prop_oneof![
                -1_000_000i64..1_000_000,
                // Around the largest amount at every scale up to 3.
                -2_000_000_000_000_000i64..2_000_000_000_000_000,
                any::<i64>(),
            ],
            scale in 0u32..6,
            currency in 0usize..CURRENCIES.len(),
            negative_zero in any::<bool>(),
        ) {
            let currency = Currency::parse(CURRENCIES[currency].0).unwrap();
            let mut amount = Decimal::new(mantissa, scale);
            if negative_zero {
                amount = Decimal::new(0, scale);
                amount.set_sign_negative(true);
            }
            let fast = Money::new(amount, currency);
            let general = Money::new_general(amount, currency);
            prop_assert_eq!(fast.is_ok(), general.is_ok());
            if let (Ok(fast), Ok(general)) = (fast, general) {
                prop_assert_eq!(fast.amount().serialize(), general.amount().serialize());
                prop_assert_eq!(fast.currency(), general.currency());
            }
        }
    }

    #[test]
    fn currencies_order_like_their_codes_and_read_back() {
        assert!(CURRENCIES.windows(2).all(|pair| pair[0].0 < pair[1].0));
        let all: Vec<Currency> = CURRENCIES
            .iter()
            .map(|(code, _)| Currency::parse(code).unwrap())
            .collect();
        for pair in all.windows(2) {
            assert!(pair[0] < pair[1], "{} < {}", pair[0], pair[1]);
        }
        for (currency, (code, minor_unit)) in all.iter().zip(CURRENCIES) {
            assert_eq!(currency.code(), *code);
            assert_eq!(currency.minor_unit(), *minor_unit);
        }
        assert_eq!(Currency::EUR.code(), "EUR");
        assert_eq!(Currency::USD.code(), "USD");
        assert_eq!(Currency::JPY.minor_unit(), 0);
        assert_eq!(std::mem::size_of::<Currency>(), 1);
    }

    #[test]
    fn amounts_hold_the_minor_unit_scale() {
        assert_eq!(eur("12.3").amount().to_string(), "12.30");
        assert_eq!(eur("12").amount().to_string(), "12.00");
        assert_eq!(Money::parse("5", "JPY").unwrap().amount().to_string(), "5");
        let error = Money::parse("12.345", "EUR").unwrap_err();
        assert_eq!(error.field, "amount");
        assert_eq!(Money::parse("1.5", "JPY").unwrap_err().field, "amount");
        assert_eq!(Money::parse("abc", "EUR").unwrap_err().field, "amount");
        assert_eq!(Money::parse("1", "XXX").unwrap_err().field, "currency");
        assert_eq!(Money::parse("1", "eur").unwrap_err().field, "currency");
        assert_eq!(
            Money::parse("1000000000001", "EUR").unwrap_err().field,
            "amount"
        );
    }

    #[test]
    fn arithmetic_refuses_mixed_currencies() {
        let usd = Money::parse("1.00", "USD").unwrap();
        assert_eq!(
            eur("1.00").checked_add(&usd),
            Err(MoneyError::CurrencyMismatch {
                left: Currency::EUR,
                right: Currency::USD
            })
        );
        assert!(eur("1.00").checked_sub(&usd).is_err());
        assert!(eur("1.00").checked_cmp(&usd).is_err());
        assert_eq!(eur("1.25").checked_sub(&eur("2.50")).unwrap(), eur("-1.25"));
    }

    #[test]
    fn rates_round_half_even_and_record_the_rounding() {
        let rate = Rate::parse("0.05").unwrap();
        // 16.665 is a tie: half-even keeps the even 6.
        let tie = eur("333.30").times_rate(rate);
        assert_eq!(tie.amount, eur("16.66"));
        assert_eq!(tie.rounding.to_string(), "0.005");
        // 49.995 is a tie: the odd 9 rounds up to 50.00.
        let up = eur("999.90").times_rate(rate);
        assert_eq!(up.amount, eur("50.00"));
        assert_eq!(up.rounding.to_string(), "-0.005");
    }

    #[test]
    fn ratios_divide_exactly_before_rounding() {
        let third = eur("50.00")
            .times_ratio(&eur("333.30"), &eur("999.90"))
            .unwrap();
        assert_eq!(third.amount, eur("16.67"));
        assert_eq!(
            eur("1.00")
                .times_ratio(&eur("1.00"), &eur("0.00"))
                .map(|r| r.amount),
            Err(MoneyError::DivisionByZero)
        );
        // 0.05 × 1 / 2 = 0.025: a tie, half-even gives 0.02.
        assert_eq!(
            eur("0.05")
                .times_ratio(&eur("1.00"), &eur("2.00"))
                .unwrap()
                .amount,
            eur("0.02")
        );
        assert_eq!(
            eur("0.07")
                .times_ratio(&eur("1.00"), &eur("2.00"))
                .unwrap()
                .amount,
            eur("0.04")
        );
        assert_eq!(
            eur("-0.05")
                .times_ratio(&eur("1.00"), &eur("2.00"))
                .unwrap()
                .amount,
            eur("-0.02")
        );
    }

    #[test]
    fn rates_stay_between_zero_and_one() {
        assert!(Rate::parse("0.2").is_ok());
        assert!(Rate::parse("1").is_ok());
        assert_eq!(Rate::parse("1.01").unwrap_err().field, "rate");
        assert_eq!(Rate::parse("-0.1").unwrap_err().field, "rate");
        assert_eq!(Rate::parse("0.1234567").unwrap_err().field, "rate");
    }

    #[test]
    fn json_shape_is_decimal_strings() {
        let json = serde_json::to_string(&eur("12.3")).unwrap();
        assert_eq!(json, r#"{"amount":"12.30","currency":"EUR"}"#);
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back, eur("12.30"));
        assert!(serde_json::from_str::<Money>(r#"{"amount":"1.001","currency":"EUR"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Rate::parse("0.20").unwrap()).unwrap(),
            r#""0.2""#
        );
    }

    proptest! {
        #[test]
        fn ratio_matches_exact_rational_rounding(
            amount in 0i64..10_000_000,
            numerator in 0i64..10_000_000,
            extra in 1i64..10_000_000,
        ) {
            let denominator = numerator + extra;
            let money = |minor: i64| Money::new(Decimal::new(minor, 2), Currency::EUR).unwrap();
            let rounded = money(amount).times_ratio(&money(numerator), &money(denominator)).unwrap();
            // |exact - rounded| ≤ half a cent, and rounded × denominator stays within half
            // a denominator of amount × numerator.
            let product = amount as i128 * numerator as i128;
            let got = rounded.amount.amount().mantissa();
            let error = (product - got * denominator as i128).abs() * 2;
            prop_assert!(error <= denominator as i128);
            prop_assert!(rounded.rounding.abs() <= Decimal::new(5, 3));
        }
    }
}
