//! Free-form JSON objects in request bodies (`event_data`, `labels`) read
//! within bounds: keys per object, items per array, and bytes in all. The
//! bounds are checked while serde walks the input, so a hostile body (a
//! million small keys) is refused after the first few thousand, never built
//! whole. The limits come from settings through the JSON extractor, which
//! sets them for the thread while it deserializes.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::config::AnalyticsSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    pub max_keys: usize,
    pub max_items: usize,
    /// Of one object, as compact JSON (approximately, while reading).
    pub max_bytes: usize,
}

impl JsonLimits {
    pub fn new(settings: &AnalyticsSettings) -> Self {
        JsonLimits {
            max_keys: settings.json_max_keys,
            max_items: settings.json_max_items,
            max_bytes: settings.json_max_bytes,
        }
    }
}

impl Default for JsonLimits {
    fn default() -> Self {
        JsonLimits {
            max_keys: 1000,
            max_items: 10_000,
            max_bytes: 65_536,
        }
    }
}

thread_local! {
    static LIMITS: Cell<Option<JsonLimits>> = const { Cell::new(None) };
}

/// Runs `f` (a deserialization) with `limits` in force on this thread.
pub fn with_limits<R>(limits: JsonLimits, f: impl FnOnce() -> R) -> R {
    let before = LIMITS.with(|l| l.replace(Some(limits)));
    let out = f();
    LIMITS.with(|l| l.set(before));
    out
}

/// `deserialize_with` for an optional object field read within the limits.
pub fn object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Map<String, Value>>, D::Error> {
    let limits = LIMITS.with(Cell::get).unwrap_or_default();
    let budget = Cell::new(limits.max_bytes);
    match (Bounded {
        limits,
        budget: &budget,
    })
    .deserialize(d)?
    {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        _ => Err(de::Error::custom("expected a JSON object")),
    }
}

/// Reads one JSON value, spending `budget` (bytes) as it goes. What it
/// spends never exceeds the value's compact size (separators are not
/// counted), so it refuses nothing the exact check after it would accept.
struct Bounded<'a> {
    limits: JsonLimits,
    budget: &'a Cell<usize>,
}

impl Bounded<'_> {
    fn spend<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        match self.budget.get().checked_sub(bytes) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom(format!(
                "an object is over {} bytes of JSON",
                self.limits.max_bytes
            ))),
        }
    }

    fn nested(&self) -> Bounded<'_> {
        Bounded {
            limits: self.limits,
            budget: self.budget,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.spend(4)?;
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.spend(4)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.spend(v.len() + 2)?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.spend(v.len() + 2)?;
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.spend(2)?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self.nested())? {
            if items.len() == self.limits.max_items {
                return Err(de::Error::custom(format!(
                    "an array has more than {} items",
                    self.limits.max_items
                )));
            }
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.spend(2)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.len() == self.limits.max_keys {
                return Err(de::Error::custom(format!(
                    "an object has more than {} keys",
                    self.limits.max_keys
                )));
            }
            self.spend(key.len() + 3)?;
            let value = map.next_value_seed(self.nested())?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(default, deserialize_with = "object")]
        data: Option<Map<String, Value>>,
    }

    fn read(json: &str, limits: JsonLimits) -> Result<Option<Map<String, Value>>, String> {
        with_limits(limits, || serde_json::from_str::<Doc>(json))
            .map(|d| d.data)
            .map_err(|e| e.to_string())
    }

    const SMALL: JsonLimits = JsonLimits {
        max_keys: 3,
        max_items: 2,
        max_bytes: 100,
    };

    #[test]
    fn objects_within_the_limits_read_as_they_are() {
        let m = read(r#"{"data": {"a": [1, 2], "b": {"c": null}}}"#, SMALL)
            .unwrap()
            .unwrap();
        assert_eq!(
            Value::Object(m),
            serde_json::json!({"a": [1, 2], "b": {"c": null}})
        );
        assert_eq!(read(r#"{"data": null}"#, SMALL).unwrap(), None);
        assert_eq!(read("{}", SMALL).unwrap(), None);
    }

    #[test]
    fn each_limit_refuses_while_reading() {
        let e = read(r#"{"data": {"a":1,"b":2,"c":3,"d":4}}"#, SMALL).unwrap_err();
        assert!(e.contains("more than 3 keys"), "{e}");
        let e = read(r#"{"data": {"a": [1, 2, 3]}}"#, SMALL).unwrap_err();
        assert!(e.contains("more than 2 items"), "{e}");
        let long = format!(r#"{{"data": {{"a": "{}"}}}}"#, "x".repeat(200));
        let e = read(&long, SMALL).unwrap_err();
        assert!(e.contains("over 100 bytes"), "{e}");
        assert!(
            read(r#"{"data": [1]}"#, SMALL)
                .unwrap_err()
                .contains("object")
        );
    }

    #[test]
    fn a_million_keys_are_refused_after_the_limit() {
        let mut body = String::from(r#"{"data": {"#);
        for i in 0..1_000_000 {
            body.push_str(&format!("\"k{i}\":0,"));
        }
        body.push_str("\"end\":0}}");
        let limits = JsonLimits {
            max_bytes: usize::MAX,
            ..JsonLimits::default()
        };
        let e = read(&body, limits).unwrap_err();
        assert!(e.contains("more than 1000 keys"), "{e}");
    }
}
