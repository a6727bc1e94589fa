//! What an ELF program needs from the filesystem before it runs: its interpreter and the shared
//! libraries the dynamic loader will look for, and where the loader looks.
//!
//! Only the parts of the file that hold this are read (headers, `.dynamic`, `.dynstr`), through
//! `object`'s read cache, so a 200 MB binary costs a few kilobytes.

use std::io::{Read, Seek};

use object::elf::{self, FileHeader64};
use object::read::ReadCache;
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endianness, FileKind};

/// The dynamic-linking facts of one ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfDeps {
    /// `PT_INTERP`: the dynamic loader, e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` names, in order.
    pub needed: Vec<String>,
    /// `DT_RPATH` entries (only honoured by the loader when there is no `DT_RUNPATH`).
    pub rpath: Vec<String>,
    /// `DT_RUNPATH` entries.
    pub runpath: Vec<String>,
}

/// True when `head` (the first bytes of a file) starts like an ELF file.
pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

/// Checks that `bytes` is a program that runs in any image, even one without a libc: a static
/// 64-bit ELF file. The error says what it needs instead.
pub fn static_program(bytes: &[u8]) -> Result<(), String> {
    let deps = read_deps(std::io::Cursor::new(bytes))
        .ok_or_else(|| "not a 64-bit ELF program".to_string())?;
    match deps.interpreter {
        Some(loader) => Err(format!("it is dynamically linked (needs {loader})")),
        None if !deps.needed.is_empty() => Err(format!(
            "it is dynamically linked (needs {})",
            deps.needed.join(", ")
        )),
        None => Ok(()),
    }
}

/// Reads the dynamic-linking facts of an ELF file. `None` when it is not a 64-bit ELF file
/// whittle can read (a 32-bit or corrupt file keeps only what the reports name).
pub fn read_deps<R: Read + Seek>(file: R) -> Option<ElfDeps> {
    let cache = ReadCache::new(file);
    let data = &cache;
    if FileKind::parse(data).ok()? != FileKind::Elf64 {
        return None;
    }
    let header = FileHeader64::<Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let mut deps = ElfDeps::default();
    for segment in header.program_headers(endian, data).ok()? {
        if let Ok(Some(interp)) = segment.interpreter(endian, data) {
            deps.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let sections = header.sections(endian, data).ok()?;
    let table = sections.dynamic_table(endian, data).ok()?;
    for entry in table.iter() {
        let list = match entry.tag {
            elf::DT_NEEDED => &mut deps.needed,
            elf::DT_RPATH => &mut deps.rpath,
            elf::DT_RUNPATH => &mut deps.runpath,
            _ => continue,
        };
        let Ok(value) = table.string(entry) else {
            continue;
        };
        let value = String::from_utf8_lossy(value);
        if entry.tag == elf::DT_NEEDED {
            list.push(value.into_owned());
        } else {
            list.extend(
                value
                    .split(':')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
    }
    Some(deps)
}

/// The directories the loader searches for `deps.needed` of the file at `path` (absolute), in
/// its order: RPATH (without RUNPATH), `LD_LIBRARY_PATH`, RUNPATH, then `system` (from
/// ld.so.conf and the built-in defaults). `$ORIGIN` is the file's directory.
pub fn search_dirs(
    deps: &ElfDeps,
    path: &str,
    ld_library_path: &[String],
    system: &[String],
) -> Vec<String> {
    let origin = match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((dir, _)) => dir.to_string(),
    };
    let expand = |d: &String| {
        d.replace("${ORIGIN}", &origin)
            .replace("$ORIGIN", &origin)
            .replace("${LIB}", "lib64")
            .replace("$LIB", "lib64")
            .replace("${PLATFORM}", "x86_64")
            .replace("$PLATFORM", "x86_64")
    };
    let mut dirs = Vec::new();
    if deps.runpath.is_empty() {
        dirs.extend(deps.rpath.iter().map(expand));
    }
    dirs.extend(ld_library_path.iter().cloned());
    dirs.extend(deps.runpath.iter().map(expand));
    dirs.extend(system.iter().cloned());
    dirs
}

/// Directories glibc's and musl's loaders search on x86_64 after ld.so.conf.
pub const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/local/lib",
    "/usr/lib",
];

/// The directories an ld.so.conf names, in order; `include` lines are handed to `include`,
/// which returns the contents of every file the glob matches (sorted, as ldconfig reads them).
pub fn parse_ld_so_conf(
    text: &str,
    include: &mut dyn FnMut(&str) -> Vec<String>,
    depth: usize,
) -> Vec<String> {
    let mut dirs = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(pattern) = line.strip_prefix("include").map(str::trim) {
            if depth < 8 {
                for pattern in pattern.split_whitespace() {
                    for content in include(pattern) {
                        dirs.extend(parse_ld_so_conf(&content, include, depth + 1));
                    }
                }
            }
            continue;
        }
        if line.starts_with("hwcap") {
            continue;
        }
        // Old-style `dir=TYPE` entries and separators ldconfig accepts.
        for dir in line.split([':', ',', ' ', '\t']) {
            let dir = dir.split('=').next().unwrap_or("");
            if dir.starts_with('/') {
                dirs.push(dir.trim_end_matches('/').to_string());
            }
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_dynamic_program() {
        let ls = std::fs::File::open("/bin/ls").expect("/bin/ls on the build machine");
        let deps = read_deps(ls).expect("ls is a 64-bit ELF program");
        assert_eq!(
            deps.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(deps.needed.iter().any(|n| n == "libc.so.6"), "{deps:?}");
        let text = std::io::Cursor::new(b"#!/bin/sh\necho hi\n".to_vec());
        assert_eq!(read_deps(text), None);
    }

    #[test]
    fn search_order_follows_the_loader() {
        let deps = ElfDeps {
            rpath: vec!["/r".into()],
            runpath: vec!["$ORIGIN/../lib".into()],
            ..Default::default()
        };
        let dirs = search_dirs(&deps, "/opt/app/bin/app", &["/ld".into()], &["/sys".into()]);
        assert_eq!(dirs, ["/ld", "/opt/app/bin/../lib", "/sys"]);
        let deps = ElfDeps {
            rpath: vec!["${ORIGIN}".into()],
            ..Default::default()
        };
        assert_eq!(search_dirs(&deps, "/app", &[], &[]), ["/"]);
    }

    #[test]
    fn ld_so_conf_with_includes() {
        let mut include = |pattern: &str| {
            assert_eq!(pattern, "/etc/ld.so.conf.d/*.conf");
            vec!["# multiarch\n/usr/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/\n".to_string()]
        };
        let dirs = parse_ld_so_conf(
            "include /etc/ld.so.conf.d/*.conf\n/opt/lib # local\nhwcap 0 nosegneg\n",
            &mut include,
            0,
        );
        assert_eq!(
            dirs,
            [
                "/usr/lib/x86_64-linux-gnu",
                "/lib/x86_64-linux-gnu",
                "/opt/lib"
            ]
        );
    }
}
