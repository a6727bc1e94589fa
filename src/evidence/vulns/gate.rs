//! What a hardened image still carries, worst first, and the gate (`vulnerabilities.failOn`)
//! that refuses to sign or promote an image keeping a vulnerability at or above a severity.

use super::matching::Finding;
use super::severity::Severity;

/// How many kept findings the status lists; the counts cover all of them.
pub const KEPT_LIST_LIMIT: usize = 20;

/// How many of the blocking findings a gate's message names; the count covers all of them.
const NAMED_IN_MESSAGE: usize = 3;

/// Refuse an image that keeps a vulnerability this severe or worse; with `fixable`, only one
/// whose record names a fixed version (a rebuild can remove it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    pub severity: Severity,
    pub fixable: bool,
}

impl Gate {
    /// Does this finding trip the gate? A record that rates no severity never does: "not yet
    /// assigned" says nothing about impact, and gating on it would block every image.
    pub fn trips(&self, finding: &Finding) -> bool {
        finding.severity != Severity::Unknown
            && finding.severity <= self.severity
            && (!self.fixable || finding.fixed.is_some())
    }

    /// The kept findings that trip the gate, worst first; empty when the image may go on.
    pub fn blocking<'a>(&self, kept: &'a [Finding]) -> Vec<&'a Finding> {
        worst_first(kept)
            .into_iter()
            .filter(|f| self.trips(f))
            .collect()
    }
}

/// Most severe first and, within a severity, those with a fix first (a rebuild removes them),
/// then by id and package so that the order is stable.
pub fn worst_first(findings: &[Finding]) -> Vec<&Finding> {
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by(|a, b| {
        (a.severity, a.fixed.is_none(), &a.id, &a.package).cmp(&(
            b.severity,
            b.fixed.is_none(),
            &b.id,
            &b.package,
        ))
    });
    sorted
}

/// What the gate refused, for a message: how many, under which `setting`, and the worst few
/// as `id in package installed → fixed (severity)`.
pub fn refusal(image: &str, setting: &str, gate: &Gate, blocking: &[&Finding]) -> String {
    let named: Vec<String> = blocking
        .iter()
        .take(NAMED_IN_MESSAGE)
        .map(|f| {
            let fixed = f.fixed.as_deref().unwrap_or("no fix yet");
            format!(
                "{} in {} {} → {fixed} ({})",
                f.id,
                f.package,
                f.version,
                severity_word(f.severity)
            )
        })
        .collect();
    let more = blocking.len().saturating_sub(NAMED_IN_MESSAGE);
    let rest = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    let which = if gate.fixable { " with a fix" } else { "" };
    format!(
        "{image} keeps {} vulnerabilit{} of severity {} or worse{which} ({setting}): {}{rest}",
        blocking.len(),
        if blocking.len() == 1 { "y" } else { "ies" },
        severity_word(gate.severity),
        named.join(", "),
    )
}

fn severity_word(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "Critical",
        Severity::High => "High",
        Severity::Medium => "Medium",
        Severity::Low => "Low",
        Severity::Unknown => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: &str, severity: Severity, fixed: Option<&str>) -> Finding {
        Finding {
            id: id.into(),
            aliases: Vec::new(),
            package: format!("{}-pkg", id.to_ascii_lowercase()),
            source: "src".into(),
            version: "1.0-1".into(),
            severity,
            fixed: fixed.map(Into::into),
            summary: None,
        }
    }

    #[test]
    fn the_gate_trips_at_or_above_its_severity_and_with_a_fix_when_fixable() {
        use Severity::*;
        // (gate severity, gate fixable, finding severity, finding has a fix, trips)
        let table = [
            (High, true, Critical, true, true),
            (High, true, High, true, true),
            (High, true, High, false, false),
            (High, true, Medium, true, false),
            (High, false, High, false, true),
            (High, false, Critical, false, true),
            (High, false, Medium, false, false),
            (Critical, true, High, true, false),
            (Critical, false, Critical, false, true),
            (Low, false, Low, false, true),
            (Low, true, Low, true, true),
            (Low, false, Medium, true, true),
            // A record that rates no severity never trips it.
            (Low, false, Unknown, true, false),
            (Low, false, Unknown, false, false),
        ];
        for (severity, fixable, found, has_fix, trips) in table {
            let gate = Gate { severity, fixable };
            let f = finding("X", found, has_fix.then_some("2.0-1"));
            assert_eq!(
                gate.trips(&f),
                trips,
                "{gate:?} on {found:?} (fix: {has_fix})"
            );
        }
    }

    #[test]
    fn kept_findings_are_listed_worst_and_fixable_first() {
        let kept = [
            finding("A", Severity::Medium, Some("2")),
            finding("B", Severity::High, None),
            finding("C", Severity::Unknown, Some("2")),
            finding("D", Severity::High, Some("2")),
            finding("E", Severity::Critical, None),
            finding("F", Severity::High, Some("2")),
        ];
        let ids: Vec<&str> = worst_first(&kept).iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["E", "D", "F", "B", "A", "C"]);

        let gate = Gate {
            severity: Severity::High,
            fixable: true,
        };
        let blocking: Vec<&str> = gate.blocking(&kept).iter().map(|f| f.id.as_str()).collect();
        assert_eq!(blocking, ["D", "F"]);
        let none = Gate {
            severity: Severity::Critical,
            fixable: true,
        };
        assert!(none.blocking(&kept).is_empty());
    }

    #[test]
    fn the_refusal_names_the_worst_few_with_installed_and_fixed_versions() {
        let kept = [
            finding("A", Severity::Critical, Some("1.0-2")),
            finding("B", Severity::High, None),
            finding("C", Severity::High, Some("1.0-3")),
            finding("D", Severity::Low, Some("1.0-4")),
            finding("E", Severity::Medium, Some("1.0-5")),
        ];
        let gate = Gate {
            severity: Severity::Low,
            fixable: false,
        };
        let blocking = gate.blocking(&kept);
        assert_eq!(
            refusal("reg/web@sha256:cc", "failOn", &gate, &blocking),
            "reg/web@sha256:cc keeps 5 vulnerabilities of severity Low or worse (failOn): A in a-pkg 1.0-1 → 1.0-2 (Critical), C in c-pkg 1.0-1 → 1.0-3 (High), B in b-pkg 1.0-1 → no fix yet (High) and 2 more"
        );
        let fixable = Gate {
            severity: Severity::Critical,
            fixable: true,
        };
        let one = fixable.blocking(&kept);
        assert_eq!(
            refusal("img", "failOn", &fixable, &one),
            "img keeps 1 vulnerability of severity Critical or worse with a fix (failOn): A in a-pkg 1.0-1 → 1.0-2 (Critical)"
        );
    }
}
