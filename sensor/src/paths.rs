//! Lexical path handling: what the app named, made absolute against its working directory or
//! dirfd, with `.` and `..` folded. Symlinks are left for the image engine, which follows every
//! chain that leads to a kept file.

/// Joins `path` to `base` (when relative) and normalises the result.
pub fn resolve(base: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{base}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Paths the sensor never reports: its own files and the kernel's pseudo filesystems, which
/// are mounts, never part of an image.
pub fn ignored(path: &str) -> bool {
    ["/.whittle", "/proc", "/sys", "/dev"].iter().any(|p| {
        path == *p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_and_dotted_paths() {
        assert_eq!(
            resolve("/etc", "nginx/../nginx/./nginx.conf"),
            "/etc/nginx/nginx.conf"
        );
        assert_eq!(resolve("/var/www", "/abs//x"), "/abs/x");
        assert_eq!(resolve("/", ".."), "/");
        assert_eq!(resolve("/a", ""), "/a");
    }

    #[test]
    fn ignores_own_files_and_pseudo_filesystems() {
        assert!(ignored("/.whittle/sensor"));
        assert!(ignored("/proc/self/maps"));
        assert!(ignored("/dev"));
        assert!(!ignored("/devices.txt"));
        assert!(!ignored("/etc/passwd"));
    }
}
