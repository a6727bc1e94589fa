//! Durations in the spec: strings like `30s`, `10m` or `1h30m`.
//!
//! The accepted syntax is a strict subset of Go's `time.ParseDuration` (whole numbers, units
//! `ms`, `s`, `m`, `h`), so every value the API server lets through means the same to CEL's
//! `duration()`, to kubectl users who know Kubernetes durations, and to [`parse`]. Neither
//! `humantime` (it also takes `10 minutes`, `2d` or `1M` for a month) nor Go's full syntax
//! (`1.5h`, `-1m`, `300us`) matches the schema's pattern, so the parser here is exactly the
//! pattern, no more.

use std::borrow::Cow;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The schema pattern for every duration field; [`parse`] accepts exactly these strings.
pub const PATTERN: &str = "^([0-9]+(ms|s|m|h))+$";

/// Longer strings are refused by the schema: it keeps CEL cost estimates small, and no sane
/// duration needs more.
pub const MAX_LENGTH: u32 = 32;

const HINT: &str =
    "must be a duration such as 30s, 10m or 1h30m (whole numbers; units ms, s, m, h)";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} {HINT}")]
pub struct DurationError {
    pub input: String,
}

/// Parses `30s`, `10m`, `1h30m`, `250ms`; anything [`PATTERN`] refuses is an error, and so is a
/// value too large for [`Duration`].
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        input: input.to_string(),
    };
    if input.is_empty() || input.len() > MAX_LENGTH as usize {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    let mut rest = input;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return Err(err());
        };
        rest = &rest[len..];
        let ms = number.checked_mul(unit_ms).ok_or_else(err)?;
        total = total
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(err)?;
    }
    Ok(total)
}

/// A duration field of the spec, kept as the user wrote it (so `kubectl get -o yaml` shows
/// `10m`, not `600s`) and parsed when used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DurationString(pub String);

impl DurationString {
    pub fn new(s: impl Into<String>) -> Self {
        DurationString(s.into())
    }

    /// The value as a [`Duration`]. Values that came through the API server always parse; the
    /// error is for objects built in code.
    pub fn get(&self) -> Result<Duration, DurationError> {
        parse(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DurationString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for DurationString {
    fn schema_name() -> Cow<'static, str> {
        "DurationString".into()
    }

    fn inline_schema() -> bool {
        true
    }

    // The pattern is what OpenAPI clients and `kubectl explain` see; the CEL rule gives the API
    // server's refusal a sentence instead of only a regular expression.
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "maxLength": MAX_LENGTH,
            "x-kubernetes-validations": [{
                "rule": format!("self.matches('{PATTERN}')"),
                "message": HINT,
            }],
        })
    }
}

/// Schema for a duration that must be longer than zero (timeouts). A string that matches
/// [`PATTERN`] is zero exactly when it has no digit 1-9, since no unit contains a digit.
pub fn positive_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = DurationString::json_schema(generator);
    if let Some(serde_json::Value::Array(rules)) = schema.get_mut("x-kubernetes-validations") {
        rules.push(serde_json::json!({
            "rule": "self.matches('[1-9]')",
            "message": "must be longer than 0s",
        }));
    }
    schema
}

/// Schema for a positive duration of at most `max` (a string [`parse`] accepts, e.g. `2h`).
/// CEL's `duration()` reads the same syntax, so the API server compares the values, not the
/// strings (`1h60m` is `2h`).
pub fn bounded_schema(generator: &mut SchemaGenerator, max: &str) -> Schema {
    let mut schema = positive_schema(generator);
    if let Some(serde_json::Value::Array(rules)) = schema.get_mut("x-kubernetes-validations") {
        rules.push(serde_json::json!({
            "rule": format!("!self.matches('{PATTERN}') || duration(self) <= duration('{max}')"),
            "message": format!("must be at most {max}"),
        }));
    }
    schema
}

/// Schema for a duration of at least `min` (intervals that cost a request each time).
pub fn at_least_schema(generator: &mut SchemaGenerator, min: &str) -> Schema {
    let mut schema = DurationString::json_schema(generator);
    if let Some(serde_json::Value::Array(rules)) = schema.get_mut("x-kubernetes-validations") {
        rules.push(serde_json::json!({
            "rule": format!("!self.matches('{PATTERN}') || duration(self) >= duration('{min}')"),
            "message": format!("must be at least {min}"),
        }));
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_pattern_s_strings() {
        let cases = [
            ("30s", 30_000),
            ("10m", 600_000),
            ("1h30m", 5_400_000),
            ("250ms", 250),
            ("1m30s500ms", 90_500),
            ("0s", 0),
            ("2h2h", 14_400_000),
            ("007s", 7_000),
        ];
        for (input, ms) in cases {
            assert_eq!(parse(input), Ok(Duration::from_millis(ms)), "{input}");
        }
    }

    #[test]
    fn refuses_what_the_pattern_refuses() {
        for bad in [
            "",
            "10",
            "m",
            "10 minutes",
            "1.5h",
            "-1m",
            "10M",
            "1d",
            "300us",
            "1h 30m",
            " 1s",
            "1s ",
            "1hh",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("such as 30s"), "{bad}: {e}");
        }
        assert!(parse("99999999999999999999h").is_err(), "overflow");
        assert!(parse(&"1s".repeat(17)).is_err(), "longer than maxLength");
    }

    #[test]
    fn agrees_with_go_duration_syntax() {
        // kube's Duration implements Go's time.ParseDuration, which is what CEL's duration()
        // and every Kubernetes duration field use: the subset accepted here means the same.
        for input in ["30s", "10m", "1h30m", "250ms", "1m30s500ms", "0s", "2h2h"] {
            let go: kube::core::Duration = input.parse().expect("a Go duration");
            assert_eq!(parse(input).ok(), Some(Duration::from(go)), "{input}");
        }
    }

    #[test]
    fn the_schema_carries_the_pattern_and_a_readable_rule() {
        let mut generator = SchemaGenerator::default();
        let schema = serde_json::to_value(positive_schema(&mut generator)).unwrap();
        assert_eq!(schema["pattern"], PATTERN);
        let rules = schema["x-kubernetes-validations"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert!(rules[0]["rule"].as_str().unwrap().contains(PATTERN));
    }
}
