//! How serious a vulnerability is, from the record's CVSS vectors or the distribution's words.

use serde::Serialize;
use serde_json::Value;

use super::osv::RawSeverity;

/// How serious a vulnerability is, worst first (a sort puts critical findings at the top).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    /// CVSS "low" and also CVSS "none" (0.0). Debian's urgency "unimportant" counts here too: the
    /// security team judged the issue not worth fixing in a release, a judgement of low impact
    /// rather than of none, and a reader should still find it when auditing the image.
    Low,
    /// Neither a CVSS vector we can score nor a severity or urgency we recognise; Debian's "not yet
    /// assigned" and "end-of-life" land here, since they say nothing about impact.
    Unknown,
}

/// The severity of the newest CVSS version the list has a vector we can score for.
pub(super) fn cvss_severity(list: &[RawSeverity]) -> Option<Severity> {
    ["CVSS_V4", "CVSS_V3"].iter().find_map(|kind| {
        list.iter()
            .filter(|s| s.kind == *kind)
            .find_map(|s| match s.score.parse::<cvss::Cvss>() {
                Ok(vector) => Some(match vector.severity() {
                    cvss::Severity::Critical => Severity::Critical,
                    cvss::Severity::High => Severity::High,
                    cvss::Severity::Medium => Severity::Medium,
                    cvss::Severity::Low | cvss::Severity::None => Severity::Low,
                }),
                Err(err) => {
                    tracing::debug!(vector = %s.score, "unscorable CVSS vector: {err}");
                    None
                }
            })
    })
}

pub(super) fn named_field(object: Option<&Value>, field: &str) -> Option<Severity> {
    named_severity(object?.get(field)?.as_str()?)
}

/// GHSA's, Alpine's, Ubuntu's severity words and Debian's urgencies (which may carry the
/// tracker's `*`/`**` marks).
fn named_severity(word: &str) -> Option<Severity> {
    match word
        .trim()
        .trim_end_matches('*')
        .to_ascii_lowercase()
        .as_str()
    {
        "critical" => Some(Severity::Critical),
        "high" | "important" => Some(Severity::High),
        "medium" | "moderate" => Some(Severity::Medium),
        "low" | "negligible" | "unimportant" => Some(Severity::Low),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::vulns::matching::scan;
    use crate::evidence::vulns::testing::{db_of, deb, inventory, os};

    #[test]
    fn severity_from_cvss_then_distribution_words() {
        let record = |id: &str, top: &str, affected: &str| {
            format!(
                r#"{{"id": "{id}", {top} "affected": [{{
                    "package": {{"ecosystem": "Debian:12", "name": "pkg"}},
                    "ranges": [{{"type": "ECOSYSTEM", "events": [{{"introduced": "0"}}]}}]
                    {affected}}}]}}"#
            )
        };
        let v3_critical =
            r#"{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}"#;
        let v3_medium =
            r#"{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"}"#;
        let v4_high = r#"{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:N/VA:N/SC:N/SI:N/SA:N"}"#;
        let db = db_of(&[
            &record("A-V3", &format!(r#""severity": [{v3_critical}],"#), ""),
            // The newest CVSS version wins.
            &record(
                "B-V4",
                &format!(r#""severity": [{v3_critical}, {v4_high}],"#),
                "",
            ),
            // This package's own vector wins over the record's.
            &record(
                "C-OWN",
                &format!(r#""severity": [{v3_critical}],"#),
                &format!(r#", "severity": [{v3_medium}]"#),
            ),
            &record(
                "D-URG",
                "",
                r#", "ecosystem_specific": {"urgency": "unimportant"}"#,
            ),
            &record(
                "E-URG",
                "",
                r#", "ecosystem_specific": {"urgency": "medium**"}"#,
            ),
            &record(
                "F-URG",
                "",
                r#", "ecosystem_specific": {"urgency": "not yet assigned"}"#,
            ),
            &record(
                "G-DB",
                r#""database_specific": {"severity": "MODERATE"},"#,
                "",
            ),
            &record("H-NONE", "", ""),
            // A vector that does not parse falls through to the next source of severity.
            &record(
                "I-BAD",
                r#""severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/garbage"}],"#,
                r#", "ecosystem_specific": {"urgency": "high"}"#,
            ),
        ]);
        let inv = inventory(
            os("debian", Some("12")),
            vec![deb("pkg", "1.0-1", "pkg", "1.0-1")],
        );
        let got: Vec<(String, Severity)> = scan(&db, &inv)
            .into_iter()
            .map(|f| (f.id, f.severity))
            .collect();
        let want: Vec<(String, Severity)> = [
            ("A-V3", Severity::Critical),
            ("B-V4", Severity::High),
            ("I-BAD", Severity::High),
            ("C-OWN", Severity::Medium),
            ("E-URG", Severity::Medium),
            ("G-DB", Severity::Medium),
            ("D-URG", Severity::Low),
            ("F-URG", Severity::Unknown),
            ("H-NONE", Severity::Unknown),
        ]
        .into_iter()
        .map(|(id, s)| (id.to_string(), s))
        .collect();
        assert_eq!(got, want);
    }
}
