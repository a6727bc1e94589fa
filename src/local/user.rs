//! The image's `User` (`name`, `uid`, `name:group`, `uid:gid`) resolved to numbers against the
//! image's own /etc/passwd and /etc/group, as a container runtime does.

use std::fs;
use std::path::Path;

use super::LocalError;

/// A numeric user for the runtime spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

pub fn resolve(user: &str, rootfs: &Path) -> Result<Ids, LocalError> {
    if user.is_empty() {
        return Ok(Ids::default());
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = rootfs.join("etc/passwd");
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => (
            uid,
            lookup(&passwd, 2, uid.to_string().as_str()).and_then(|f| f[3].parse().ok()),
        ),
        Err(_) => {
            let fields = lookup(&passwd, 0, u).ok_or_else(|| LocalError::UnknownUser {
                user: u.into(),
                file: passwd.clone(),
            })?;
            let uid = fields[2].parse().map_err(|_| LocalError::UnknownUser {
                user: u.into(),
                file: passwd.clone(),
            })?;
            (uid, fields[3].parse().ok())
        }
    };
    let gid = match g {
        None => primary_gid.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = rootfs.join("etc/group");
                lookup(&group, 0, g).and_then(|f| f[2].parse().ok()).ok_or(
                    LocalError::UnknownUser {
                        user: g.into(),
                        file: group,
                    },
                )?
            }
        },
    };
    Ok(Ids { uid, gid })
}

/// The fields of the first line of a colon-separated database whose field `key` equals `value`.
fn lookup(file: &Path, key: usize, value: &str) -> Option<Vec<String>> {
    let text = fs::read_to_string(file).ok()?;
    text.lines()
        .map(|l| l.split(':').map(String::from).collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[key] == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwww-data:x:33:\nstaff:x:50:\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn resolves_names_numbers_and_groups() {
        let r = rootfs();
        assert_eq!(resolve("", r.path()).unwrap(), Ids { uid: 0, gid: 0 });
        assert_eq!(
            resolve("www-data", r.path()).unwrap(),
            Ids { uid: 33, gid: 33 }
        );
        assert_eq!(resolve("33", r.path()).unwrap(), Ids { uid: 33, gid: 33 });
        assert_eq!(
            resolve("www-data:staff", r.path()).unwrap(),
            Ids { uid: 33, gid: 50 }
        );
        assert_eq!(
            resolve("1000:1000", r.path()).unwrap(),
            Ids {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(
            resolve("4242", r.path()).unwrap(),
            Ids { uid: 4242, gid: 0 }
        );
    }

    #[test]
    fn unknown_names_are_errors_that_name_the_file() {
        let r = rootfs();
        let e = resolve("nobody-here", r.path()).unwrap_err().to_string();
        assert!(e.contains("nobody-here") && e.contains("etc/passwd"), "{e}");
        let e = resolve("www-data:nogroup", r.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("etc/group"), "{e}");
    }
}
