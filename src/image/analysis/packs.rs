//! Named include packs: files an app loads on a path the exercise may never take (the first
//! TLS handshake to an outside host, a DNS lookup, a time formatted in a zone, a locale set by
//! the user), so no report names them. Each pack is a list of `--include` patterns, resolved
//! against what the image holds; a pack whose files the image lacks adds nothing.

use std::collections::BTreeSet;

use serde::Serialize;

use super::select::{Patterns, Wanted, select};
use crate::image::error::Result;
use crate::image::reading::spool::Spool;
use crate::image::reading::tree::{Kind, Tree};

/// A named pack. Opt-in: each costs bytes (tzdata alone is over a megabyte) for a code path
/// the app may not have, and the verification only proves what the exercise ran.
#[derive(
    Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
)]
#[serde(rename_all = "kebab-case")]
pub enum Pack {
    /// The CA bundle and the certificates it is made from (Debian's, Alpine's, Fedora's and
    /// openSUSE's places, and OpenSSL's links to them).
    CaCertificates,
    /// Name resolution: nsswitch.conf, hosts, resolv.conf, host.conf, gai.conf, services,
    /// protocols, glibc's files and dns NSS modules and libresolv.
    Nss,
    /// The zoneinfo database, /etc/localtime, /etc/timezone.
    Tzdata,
    /// Compiled locales (/usr/lib/locale), locale sources (/usr/share/i18n), /etc/locale.*.
    Locale,
}

/// Every pack, in the order summaries list them.
pub const ALL: [Pack; 4] = [Pack::CaCertificates, Pack::Nss, Pack::Tzdata, Pack::Locale];

/// The system library directories glibc's modules live in (any multiarch directory below).
const LIBS: &str = "{lib,lib64,lib32,usr/lib,usr/lib64,usr/lib32}";

impl Pack {
    pub fn name(self) -> &'static str {
        match self {
            Pack::CaCertificates => "ca-certificates",
            Pack::Nss => "nss",
            Pack::Tzdata => "tzdata",
            Pack::Locale => "locale",
        }
    }

    /// The pack as `--include` patterns: a path keeps what is below it and the symlinks that
    /// lead to it; a glob matches paths as the image stores them.
    pub fn patterns(self) -> Vec<String> {
        let paths: &[&str] = match self {
            Pack::CaCertificates => &[
                "/etc/ssl/certs",
                "/usr/share/ca-certificates",
                "/usr/local/share/ca-certificates",
                "/etc/ca-certificates.conf",
                // Alpine (and LibreSSL's default).
                "/etc/ssl/cert.pem",
                // Fedora, RHEL and their derivatives.
                "/etc/pki/tls/certs",
                "/etc/pki/tls/cert.pem",
                "/etc/pki/ca-trust/extracted",
                // openSUSE.
                "/etc/ssl/ca-bundle.pem",
                "/var/lib/ca-certificates",
                // Debian's OpenSSL directory links into /etc/ssl.
                "/usr/lib/ssl/certs",
                "/usr/lib/ssl/cert.pem",
            ],
            Pack::Nss => &[
                "/etc/nsswitch.conf",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/etc/host.conf",
                "/etc/gai.conf",
                "/etc/services",
                "/etc/protocols",
            ],
            Pack::Tzdata => &["/usr/share/zoneinfo", "/etc/localtime", "/etc/timezone"],
            Pack::Locale => &[
                "/usr/lib/locale",
                "/usr/share/i18n",
                "/etc/locale.*",
                "/etc/default/locale",
            ],
        };
        let mut patterns: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        if self == Pack::Nss {
            patterns.push(format!("/{LIBS}/**/libnss_{{files,dns}}.so*"));
            patterns.push(format!("/{LIBS}/**/libresolv.so*"));
        }
        patterns
    }
}

/// What a pack did to one harden.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PackSummary {
    pub name: String,
    /// Files (every path but directories) of the image the pack names; 0 when the image has
    /// none of them, and the pack added nothing.
    pub found: u64,
    /// Files kept only because of the pack (with what they need: libraries, link targets).
    pub files: u64,
    /// Their uncompressed size.
    pub bytes: u64,
}

impl PackSummary {
    /// One line for a person: what the pack cost, or why it cost nothing.
    pub fn line(&self) -> String {
        if self.found == 0 {
            return "the image has none of its files; added nothing".to_string();
        }
        if self.files == 0 {
            return format!(
                "{} files in the image, all kept anyway; added nothing",
                self.found
            );
        }
        format!(
            "added {} files, {:.2} MB uncompressed ({} of its files in the image)",
            self.files,
            self.bytes as f64 / 1e6,
            self.found
        )
    }
}

/// The packs in `packs`, each once, in [`ALL`]'s order.
pub fn distinct(packs: &[Pack]) -> Vec<Pack> {
    let set: BTreeSet<Pack> = packs.iter().copied().collect();
    set.into_iter().collect()
}

/// `include` with every pack's patterns added.
pub fn with_packs(include: &[String], packs: &[Pack]) -> Vec<String> {
    let mut all = include.to_vec();
    for pack in distinct(packs) {
        all.extend(pack.patterns());
    }
    all
}

/// What each pack adds over `wanted` without packs (`include` and `exclude` as the user gave
/// them): the selection with that pack alone, minus the selection with none. Run after the
/// full selection has all contents, so no selection here misses any.
pub fn account(
    tree: &Tree,
    spool: &Spool,
    wanted: &Wanted,
    include: &[String],
    exclude: &[String],
    packs: &[Pack],
) -> Result<Vec<PackSummary>> {
    let packs = distinct(packs);
    if packs.is_empty() {
        return Ok(Vec::new());
    }
    let with = |patterns: Patterns| Wanted {
        patterns,
        ..wanted.clone()
    };
    let base = select(tree, spool, &with(Patterns::new(include, exclude)?)).keep;
    let mut summaries = Vec::new();
    for pack in packs {
        let own = Patterns::new(&pack.patterns(), &[])?;
        let found = tree
            .iter()
            .filter(|(p, n)| !n.is_dir() && own.included(p))
            .count() as u64;
        let patterns = Patterns::new(&with_packs(include, &[pack]), exclude)?;
        let keep = select(tree, spool, &with(patterns)).keep;
        let (mut files, mut bytes) = (0, 0);
        for path in keep.difference(&base) {
            let Some(node) = tree.get(path) else {
                continue;
            };
            if node.is_dir() {
                continue;
            }
            files += 1;
            if node.kind == Kind::File {
                bytes += node.size;
            }
        }
        summaries.push(PackSummary {
            name: pack.name().to_string(),
            found,
            files,
            bytes,
        });
    }
    Ok(summaries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reading::tree::Node;

    fn file(size: u64) -> Node {
        Node {
            kind: Kind::File,
            size,
            ..Node::implicit_dir()
        }
    }

    fn link(target: &str) -> Node {
        Node {
            kind: Kind::Symlink(target.to_string()),
            ..Node::implicit_dir()
        }
    }

    /// A Debian-like image: the app, a CA bundle with one certificate linked into
    /// /etc/ssl/certs, zoneinfo with /etc/localtime, glibc's NSS modules, one locale.
    fn debian() -> Tree {
        let mut tree = Tree::new();
        for (path, node) in [
            ("app", file(1000)),
            ("usr/share/ca-certificates/mozilla/A.crt", file(2000)),
            ("etc/ssl/certs/ca-certificates.crt", file(200_000)),
            (
                "etc/ssl/certs/A.pem",
                link("/usr/share/ca-certificates/mozilla/A.crt"),
            ),
            ("etc/ca-certificates.conf", file(100)),
            ("usr/lib/ssl/certs", link("/etc/ssl/certs")),
            ("usr/share/zoneinfo/Etc/UTC", file(114)),
            ("usr/share/zoneinfo/Europe/Berlin", file(2298)),
            ("etc/localtime", link("/usr/share/zoneinfo/Etc/UTC")),
            ("etc/timezone", file(8)),
            ("etc/nsswitch.conf", file(494)),
            ("etc/host.conf", file(9)),
            ("etc/resolv.conf", file(25)),
            ("usr/lib/x86_64-linux-gnu/libnss_files.so.2", file(14400)),
            ("usr/lib/x86_64-linux-gnu/libnss_dns.so.2", file(14400)),
            ("usr/lib/x86_64-linux-gnu/libnss_hesiod.so.2", file(27136)),
            ("usr/lib/locale/C.utf8/LC_CTYPE", file(353_616)),
            ("usr/share/doc/tzdata/copyright", file(50)),
        ] {
            tree.apply(path, node);
        }
        tree
    }

    /// Only the app.
    fn bare() -> Tree {
        let mut tree = Tree::new();
        tree.apply("app", file(1000));
        tree
    }

    fn account_of(tree: &Tree, seen: &[&str], packs: &[Pack]) -> Vec<PackSummary> {
        let spool = Spool::new().expect("spool");
        let wanted = Wanted {
            seen: seen.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        account(tree, &spool, &wanted, &[], &[], packs).expect("account")
    }

    fn kept(tree: &Tree, packs: &[Pack]) -> BTreeSet<String> {
        let spool = Spool::new().expect("spool");
        let wanted = Wanted {
            seen: ["/app".to_string()].into(),
            patterns: Patterns::new(&with_packs(&[], packs), &[]).expect("patterns"),
            ..Default::default()
        };
        select(tree, &spool, &wanted).keep
    }

    fn summary(name: &str, found: u64, files: u64, bytes: u64) -> PackSummary {
        PackSummary {
            name: name.into(),
            found,
            files,
            bytes,
        }
    }

    #[test]
    fn each_pack_keeps_its_files_and_counts_what_it_added() {
        let cases: &[(Pack, &[&str], &[&str], PackSummary)] = &[
            (
                Pack::CaCertificates,
                &[
                    "etc/ssl/certs/ca-certificates.crt",
                    "etc/ssl/certs/A.pem",
                    "usr/share/ca-certificates/mozilla/A.crt",
                    "etc/ca-certificates.conf",
                    "usr/lib/ssl/certs",
                ],
                &["usr/share/zoneinfo/Etc/UTC"],
                summary("ca-certificates", 5, 5, 202_100),
            ),
            (
                Pack::Tzdata,
                &[
                    "usr/share/zoneinfo/Etc/UTC",
                    "usr/share/zoneinfo/Europe/Berlin",
                    "etc/localtime",
                    "etc/timezone",
                ],
                &["usr/share/doc/tzdata/copyright", "etc/ssl/certs/A.pem"],
                summary("tzdata", 4, 4, 114 + 2298 + 8),
            ),
            (
                Pack::Nss,
                &[
                    "etc/nsswitch.conf",
                    "etc/host.conf",
                    "etc/resolv.conf",
                    "usr/lib/x86_64-linux-gnu/libnss_files.so.2",
                    "usr/lib/x86_64-linux-gnu/libnss_dns.so.2",
                ],
                &["usr/lib/x86_64-linux-gnu/libnss_hesiod.so.2"],
                summary("nss", 5, 5, 494 + 9 + 25 + 14400 * 2),
            ),
            (
                Pack::Locale,
                &["usr/lib/locale/C.utf8/LC_CTYPE"],
                &["etc/timezone"],
                summary("locale", 1, 1, 353_616),
            ),
        ];
        let tree = debian();
        for (pack, has, lacks, want) in cases {
            let keep = kept(&tree, &[*pack]);
            for p in *has {
                assert!(keep.contains(*p), "{pack:?} keeps {p}: {keep:?}");
            }
            for p in *lacks {
                assert!(!keep.contains(*p), "{pack:?} does not keep {p}: {keep:?}");
            }
            assert_eq!(
                account_of(&tree, &["/app"], &[*pack]),
                std::slice::from_ref(want)
            );
            let without = kept(&tree, &[]);
            for p in *has {
                assert!(
                    !without.contains(*p),
                    "without a pack, {p} goes: {without:?}"
                );
            }
        }
    }

    #[test]
    fn a_pack_the_image_lacks_adds_nothing_and_says_so() {
        let tree = bare();
        assert_eq!(
            account_of(&tree, &["/app"], &ALL),
            ALL.iter()
                .map(|p| summary(p.name(), 0, 0, 0))
                .collect::<Vec<_>>()
        );
        assert_eq!(kept(&tree, &ALL), kept(&tree, &[]));
    }

    #[test]
    fn what_the_reports_kept_anyway_is_not_the_packs_cost() {
        // The app read /etc/localtime (its target comes along); the pack adds the rest.
        let got = account_of(&debian(), &["/app", "/etc/localtime"], &[Pack::Tzdata]);
        assert_eq!(got, [summary("tzdata", 4, 2, 2298 + 8)]);
    }

    #[test]
    fn the_line_says_why_a_pack_added_nothing() {
        assert_eq!(
            summary("tzdata", 0, 0, 0).line(),
            "the image has none of its files; added nothing"
        );
        assert_eq!(
            summary("nss", 5, 0, 0).line(),
            "5 files in the image, all kept anyway; added nothing"
        );
        assert_eq!(
            summary("ca-certificates", 290, 288, 421_000).line(),
            "added 288 files, 0.42 MB uncompressed (290 of its files in the image)"
        );
    }

    #[test]
    fn packs_are_named_once_in_a_fixed_order() {
        assert_eq!(
            distinct(&[Pack::Tzdata, Pack::CaCertificates, Pack::Tzdata]),
            [Pack::CaCertificates, Pack::Tzdata]
        );
        assert_eq!(
            ALL.map(Pack::name),
            ["ca-certificates", "nss", "tzdata", "locale"]
        );
        for pack in ALL {
            Patterns::new(&pack.patterns(), &[]).expect("a pack's patterns compile");
        }
    }
}
