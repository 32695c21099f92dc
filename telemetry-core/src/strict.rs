//! A strict reader of log lines, for tests and tools: one JSON object whose top-level keys are unique,
//! returned in the order written. Parsers disagree on duplicate keys (first wins, last wins, error), so
//! a line that has one is wrong whatever reads it.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, Error, MapAccess, Visitor};
use serde_json::Value;

/// The members of the object on `line`, in order; an error names a duplicate key or bad JSON.
pub fn parse_object(line: &str) -> Result<Vec<(String, Value)>, String> {
    serde_json::from_str::<Members>(line)
        .map(|m| m.0)
        .map_err(|e| format!("{e}: {line}"))
}

struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Unique;
        impl<'de> Visitor<'de> for Unique {
            type Value = Members;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members: Vec<(String, Value)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if members.iter().any(|(k, _)| *k == key) {
                        return Err(A::Error::custom(format!("duplicate key `{key}`")));
                    }
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_and_order_is_kept() {
        let members = parse_object(r#"{"b":1,"a":"x"}"#).unwrap_or_default();
        let keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a"]);
        let error = parse_object(r#"{"a":1,"b":2,"a":3}"#)
            .err()
            .unwrap_or_default();
        assert!(error.contains("duplicate key `a`"), "{error}");
        assert!(parse_object("[1]").is_err());
        assert!(parse_object("{").is_err());
    }
}
