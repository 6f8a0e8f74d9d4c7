//! What a JSON value must be to be stored: checks shared by every service
//! that keeps client JSON (event data, labels, user `meta_data`).

use serde_json::Value;

/// Why a JSON value cannot be stored as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unstorable {
    /// Postgres rejects NUL in text and json; refuse it up front, not at commit.
    Nul,
    /// Found by the spec fuzzer: a number near f64's limit is written out in
    /// full by the database driver and cannot be read back, so every later
    /// read of the row failed. No value of ours comes near 1e100.
    HugeNumber,
}

pub fn check_storable(v: &Value) -> Result<(), Unstorable> {
    if contains_nul(v) {
        Err(Unstorable::Nul)
    } else if has_huge_number(v) {
        Err(Unstorable::HugeNumber)
    } else {
        Ok(())
    }
}

fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(contains_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

fn has_huge_number(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(|x| x.abs() > 1e100),
        Value::Array(a) => a.iter().any(has_huge_number),
        Value::Object(o) => o.values().any(has_huge_number),
        _ => false,
    }
}
