//! Alpine's package version ordering, as apk-tools defines it.
//!
//! No maintained Rust crate implements it (searched crates.io and docs.rs: the `alpm*` crates
//! are Arch's pacman, `apk-tools-sys` binds the C library, `alpkit` reads APKBUILDs and does not
//! order versions), so this follows apk-package(5)'s grammar,
//! `number{.number}...{letter}{_suffix{number}}...{~hash}{-r#}`, with apk-tools' tokenising
//! rules for the corner cases (leading zeros in later components, a letter after a number).
//! Versions apk itself calls invalid (an upper-case letter, an unknown suffix, a trailing
//! separator) are refused rather than ordered.

use std::cmp::Ordering;

/// Token kinds in apk's order: when two versions agree up to a point and then continue
/// with different kinds, the lower kind is the greater version (more components beat a
/// letter, anything beats the end), except that a pre-release suffix is always less.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A `.`-separated component after the first.
    Component,
    /// The first component, or digits following a letter or a run of leading zeros.
    Digits,
    Letter,
    Suffix,
    SuffixNumber,
    Hash,
    Revision,
    End,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// A component's run of leading zeros: more zeros is less (`1.01` > `1.001`), and any
    /// run is less than a component without one (`1.01` < `1.1`).
    Zeros(usize),
    /// Digits without leading zeros ("" is 0), compared as an unbounded number.
    Number(String),
    Letter(u8),
    /// alpha, beta, pre, rc sort below no suffix (-4..-1); cvs, svn, git, hg, p above (0..4).
    Suffix(i8),
    /// A commit hash orders nothing.
    Hash,
}

impl Value {
    fn order(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Zeros(a), Value::Zeros(b)) => b.cmp(a),
            (Value::Zeros(_), _) => Ordering::Less,
            (_, Value::Zeros(_)) => Ordering::Greater,
            (Value::Number(a), Value::Number(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
            (Value::Letter(a), Value::Letter(b)) => a.cmp(b),
            (Value::Suffix(a), Value::Suffix(b)) => a.cmp(b),
            _ => Ordering::Equal,
        }
    }
}

const PRE: [&str; 4] = ["alpha", "beta", "pre", "rc"];
const POST: [&str; 5] = ["cvs", "svn", "git", "hg", "p"];

#[derive(Debug, Clone)]
pub struct Version {
    tokens: Vec<(Kind, Value)>,
}

impl Version {
    pub fn parse(text: &str) -> Result<Version, String> {
        let b = text.as_bytes();
        if !b.first().is_some_and(u8::is_ascii_digit) {
            return Err("does not start with a digit".into());
        }
        let mut tokens = Vec::new();
        let mut kind = Kind::Digits;
        let mut pos = 0;
        loop {
            let mut forced = None;
            let value = match kind {
                Kind::Component if b[pos] == b'0' => {
                    let zeros = b[pos..].iter().take_while(|&&c| c == b'0').count();
                    pos += zeros;
                    forced = Some(Kind::Digits);
                    Value::Zeros(zeros)
                }
                Kind::Component | Kind::Digits | Kind::SuffixNumber | Kind::Revision => {
                    let digits = b[pos..].iter().take_while(|c| c.is_ascii_digit()).count();
                    if digits == 0 && kind == Kind::Component {
                        return Err(format!("empty component at byte {pos}"));
                    }
                    let number = text[pos..pos + digits].trim_start_matches('0').to_string();
                    pos += digits;
                    Value::Number(number)
                }
                Kind::Letter => {
                    pos += 1;
                    Value::Letter(b[pos - 1])
                }
                Kind::Suffix => {
                    let rest = &text[pos..];
                    let (rank, name) = PRE
                        .iter()
                        .enumerate()
                        .map(|(i, name)| (i as i8 - PRE.len() as i8, name))
                        .chain(POST.iter().enumerate().map(|(i, name)| (i as i8, name)))
                        .find(|(_, name)| rest.starts_with(*name))
                        .ok_or_else(|| format!("unknown suffix at {rest:?}"))?;
                    pos += name.len();
                    Value::Suffix(rank)
                }
                Kind::Hash => {
                    let hex = b[pos..]
                        .iter()
                        .take_while(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
                        .count();
                    if hex == 0 {
                        return Err("empty commit hash".into());
                    }
                    pos += hex;
                    Value::Hash
                }
                Kind::End => unreachable!("the loop stops at the end"),
            };
            tokens.push((kind, value));
            if pos == b.len() {
                return Ok(Version { tokens });
            }
            kind = match forced {
                Some(next) => next,
                None => next_kind(kind, b, &mut pos)?,
            };
            if pos == b.len() {
                return Err("ends with a separator".into());
            }
        }
    }
}

/// The kind of the next token, consuming its separator.
fn next_kind(prev: Kind, b: &[u8], pos: &mut usize) -> Result<Kind, String> {
    let c = b[*pos];
    let next = if matches!(prev, Kind::Digits | Kind::Component) && c.is_ascii_lowercase() {
        Kind::Letter
    } else if prev == Kind::Letter && c.is_ascii_digit() {
        Kind::Digits
    } else if prev == Kind::Suffix && c.is_ascii_digit() {
        Kind::SuffixNumber
    } else {
        *pos += 1;
        match c {
            b'.' => Kind::Component,
            b'_' => Kind::Suffix,
            b'-' if b.get(*pos) == Some(&b'r') => {
                *pos += 1;
                Kind::Revision
            }
            b'~' => Kind::Hash,
            _ => return Err(format!("unexpected {:?} at byte {}", c as char, *pos - 1)),
        }
    };
    // Components come in grammar order; going back is only allowed where apk allows it.
    let allowed = next >= prev
        || matches!(
            (prev, next),
            (Kind::Digits, Kind::Component)
                | (Kind::SuffixNumber, Kind::Suffix)
                | (Kind::Letter, Kind::Digits)
        );
    if allowed {
        Ok(next)
    } else {
        Err(format!("{next:?} after {prev:?} at byte {}", *pos))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        let end = (Kind::End, Value::Hash);
        let mut i = 0;
        loop {
            let (ka, va) = self.tokens.get(i).unwrap_or(&end);
            let (kb, vb) = other.tokens.get(i).unwrap_or(&end);
            i += 1;
            if ka == kb {
                if *ka == Kind::End {
                    return Ordering::Equal;
                }
                match va.order(vb) {
                    Ordering::Equal => continue,
                    order => return order,
                }
            }
            let pre = |k: &Kind, v: &Value| {
                *k == Kind::Suffix && matches!(v, Value::Suffix(rank) if *rank < 0)
            };
            if pre(ka, va) {
                return Ordering::Less;
            }
            if pre(kb, vb) {
                return Ordering::Greater;
            }
            return kb.cmp(ka);
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

#[cfg(test)]
mod tests {
    use crate::evidence::vulns::versions::apk;

    #[test]
    fn apk_version_ordering() {
        let v = |s: &str| apk::Version::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let ascending = [
            "0.9.13",
            "1.01",
            "1.1",
            "1.2_alpha",
            "1.2_beta2",
            "1.2_rc1",
            "1.2",
            "1.2-r1",
            "1.2-r10",
            "1.2_p1",
            "1.2a",
            "1.2b",
            "1.2.0",
            "1.2.9",
            "1.2.10",
            "1.2.10_git20230717",
            "1.2.10_git20230717-r5",
            "2",
        ];
        for pair in ascending.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
            assert!(v(pair[1]) > v(pair[0]), "{} > {}", pair[1], pair[0]);
        }
        assert_eq!(v("1.2-r01"), v("1.2-r1"));
        assert_eq!(v("1.2~abc123-r1"), v("1.2~def456-r1"));
        for invalid in [
            "", "r1", "1.2A", "1.2_foo", "1.2-", "1..2", "1.2-r1.3", "1.2a.3", "1.2é",
        ] {
            assert!(apk::Version::parse(invalid).is_err(), "{invalid:?} parsed");
        }
    }
}
