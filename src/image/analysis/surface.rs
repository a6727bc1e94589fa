//! The parts of an image an attacker reaches for once inside: shells, package managers,
//! setuid/setgid programs. `inspect` lists them; `harden` reports which it removed.

use crate::image::reading::tree::{Kind, Node, Tree, parent};

const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "csh", "tcsh", "fish", "busybox",
];
const PACKAGE_MANAGERS: &[&str] = &[
    "dpkg",
    "dpkg-deb",
    "apt",
    "apt-get",
    "apt-cache",
    "aptitude",
    "apk",
    "rpm",
    "yum",
    "dnf",
    "microdnf",
    "zypper",
    "pip",
    "pip3",
    "gem",
    "npm",
];

fn program_named(path: &str, node: &Node, names: &[&str]) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    !node.is_dir() && names.contains(&name) && parent(path).ends_with("bin")
}

pub fn is_shell(path: &str, node: &Node) -> bool {
    program_named(path, node, SHELLS)
}

pub fn is_package_manager(path: &str, node: &Node) -> bool {
    program_named(path, node, PACKAGE_MANAGERS)
}

pub fn is_setuid(node: &Node) -> bool {
    node.kind == Kind::File && node.mode & 0o6000 != 0
}

/// `/`-prefixed paths of `tree` for which `pick` holds, in order.
pub fn list(tree: &Tree, pick: impl Fn(&str, &Node) -> bool) -> Vec<String> {
    tree.iter()
        .filter(|(p, n)| pick(p, n))
        .map(|(p, _)| format!("/{p}"))
        .collect()
}
