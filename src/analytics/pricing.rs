//! The price table and exact money. Costs are summed as integers: prices in
//! micro-dollars per million tokens, so `tokens × price` is in pico-dollars
//! (1e-12 $) and never drifts like floats do.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::config::{PriceEntry, parse_instant};

pub const PICO_PER_NANO: i128 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Input,
    Output,
}

impl TokenType {
    /// A `tokens_used` metric's `token_type` label: output, else input.
    pub fn from_label(label: Option<&str>) -> Self {
        match label {
            Some("output") => TokenType::Output,
            _ => TokenType::Input,
        }
    }
}

#[derive(Debug, Clone)]
struct Price {
    from: NaiveDateTime,
    input_micro: i128,
    output_micro: i128,
}

/// Prices per model, each sorted by `effective_from`.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    models: HashMap<String, Vec<Price>>,
}

fn micro(dollars: f64) -> i128 {
    (dollars * 1e6).round() as i128
}

impl PriceTable {
    pub fn new(entries: &[PriceEntry]) -> Self {
        let mut models: HashMap<String, Vec<Price>> = HashMap::new();
        for e in entries {
            let from: DateTime<Utc> = parse_instant(&e.effective_from).unwrap_or_default();
            models.entry(e.model.clone()).or_default().push(Price {
                from: from.naive_utc(),
                input_micro: micro(e.input_per_million),
                output_micro: micro(e.output_per_million),
            });
        }
        for list in models.values_mut() {
            list.sort_by_key(|p| p.from);
        }
        PriceTable { models }
    }

    /// The instants in (`from`, `to`) at which some model's price changes:
    /// between two of them every model has one price.
    pub fn changes_within(&self, from: NaiveDateTime, to: NaiveDateTime) -> Vec<NaiveDateTime> {
        let mut at: Vec<NaiveDateTime> = self
            .models
            .values()
            .flatten()
            .map(|p| p.from)
            .filter(|&t| from < t && t < to)
            .collect();
        at.sort();
        at.dedup();
        at
    }

    /// Cost in pico-dollars of `tokens` at the price in force at `at`, or
    /// `None` when the model has no price then.
    pub fn cost_pico(
        &self,
        model: &str,
        kind: TokenType,
        tokens: i64,
        at: NaiveDateTime,
    ) -> Option<i128> {
        let price = self
            .models
            .get(model)?
            .iter()
            .rev()
            .find(|p| p.from <= at)?;
        let per_million = match kind {
            TokenType::Input => price.input_micro,
            TokenType::Output => price.output_micro,
        };
        Some(i128::from(tokens) * per_million)
    }
}

/// Dollars (a `cost_usd` metric) to pico-dollars.
pub fn dollars_to_pico(value: f64) -> i128 {
    (value * 1e12).round() as i128
}

/// Pico- to nano-dollars, rounding half away from zero.
pub fn pico_to_nano(pico: i128) -> i64 {
    let half = PICO_PER_NANO / 2;
    let n = if pico >= 0 {
        (pico + half) / PICO_PER_NANO
    } else {
        (pico - half) / PICO_PER_NANO
    };
    n.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Splits pico-dollars into rounded nano-dollars and the pico remainder
/// (-500..=500), which together keep a stored sum exact.
pub fn split_pico(pico: i128) -> (i64, i16) {
    let nano = pico_to_nano(pico);
    let rem = pico - i128::from(nano) * PICO_PER_NANO;
    (nano, rem.clamp(-500, 500) as i16)
}

/// The exact pico-dollars of a stored (nano, remainder) pair.
pub fn join_pico(nano: i64, rem: i16) -> i128 {
    i128::from(nano) * PICO_PER_NANO + i128::from(rem)
}

pub fn nano_to_dollars(nano: i64) -> f64 {
    nano as f64 / 1e9
}

/// Usage totals: of a bucket, a slice of one, or a report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub calls: i64,
    pub tokens: i64,
    pub pico: i128,
}

impl Totals {
    /// What a stored usage or breakdown row holds.
    pub fn stored(calls: i64, tokens: i64, nano: i64, rem: i16) -> Self {
        Totals {
            calls,
            tokens,
            pico: join_pico(nano, rem),
        }
    }

    // Saturating: a counter pinned at its limit beats a wrapped one.
    pub fn add(&mut self, o: &Totals) {
        self.calls = self.calls.saturating_add(o.calls);
        self.tokens = self.tokens.saturating_add(o.tokens);
        self.pico = self.pico.saturating_add(o.pico);
    }

    pub fn dollars(&self) -> f64 {
        nano_to_dollars(pico_to_nano(self.pico))
    }
}

/// The totals a stored usage or breakdown row holds (same columns in both).
macro_rules! stored_totals {
    ($($model:ty),*) => {$(
        impl From<&$model> for Totals {
            fn from(r: &$model) -> Self {
                Totals::stored(r.api_calls_count, r.tokens_used, r.cost_nano_usd, r.cost_pico_rem)
            }
        }
    )*};
}
stored_totals!(
    crate::entity::usage::Model,
    crate::entity::usage_breakdown::Model
);

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        parse_instant(s).unwrap().naive_utc()
    }

    #[test]
    fn the_price_in_force_at_the_metric_time_applies() {
        let table = PriceTable::new(&[
            PriceEntry {
                model: "m".into(),
                input_per_million: 2.5,
                output_per_million: 10.0,
                effective_from: "2025-01-01".into(),
            },
            PriceEntry {
                model: "m".into(),
                input_per_million: 1.0,
                output_per_million: 4.0,
                effective_from: "2025-06-01".into(),
            },
        ]);
        // 1,000,000 input tokens at $2.50 = $2.50 = 2.5e12 pico.
        assert_eq!(
            table.cost_pico("m", TokenType::Input, 1_000_000, at("2025-03-01")),
            Some(2_500_000_000_000)
        );
        assert_eq!(
            table.cost_pico("m", TokenType::Output, 1_000, at("2025-07-01")),
            Some(4_000_000_000)
        );
        assert_eq!(
            table.cost_pico("m", TokenType::Input, 1, at("2024-12-31")),
            None
        );
        assert_eq!(
            table.cost_pico("other", TokenType::Input, 1, at("2025-07-01")),
            None
        );
    }

    #[test]
    fn money_is_exact() {
        // Ten thousand cents in floats drift; in integers they do not.
        let total: i128 = (0..10_000).map(|_| dollars_to_pico(0.01)).sum();
        assert_eq!(pico_to_nano(total), 100_000_000_000);
        assert_eq!(nano_to_dollars(pico_to_nano(total)), 100.0);
        assert_eq!(pico_to_nano(1_499), 1);
        assert_eq!(pico_to_nano(1_500), 2);
        for pico in [0, 1_499, 1_500, -1_500, -1, 123_456_789_012_345] {
            let (nano, rem) = split_pico(pico);
            assert_eq!(join_pico(nano, rem), pico);
            assert_eq!(nano, pico_to_nano(pico));
        }
    }
}
