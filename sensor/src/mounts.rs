//! Which mounts belong to the image's root filesystem: the root mount, and mounts of the same
//! filesystem tree below it. Pseudo filesystems and volumes (other devices, or other trees of
//! the same device) are not the image and are never watched.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    /// The path of the mounted tree inside its filesystem.
    pub root: String,
    pub mount_point: String,
}

pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5).then(|| Mount {
                device: f[2].to_string(),
                root: unescape(f[3]),
                mount_point: unescape(f[4]),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points to watch: `/` and same-device mounts whose tree lies inside the root's.
pub fn image_mounts(mounts: &[Mount]) -> Vec<String> {
    let Some(root) = mounts.iter().rev().find(|m| m.mount_point == "/") else {
        return vec!["/".into()];
    };
    let mut out = vec!["/".to_string()];
    for m in mounts {
        if m.mount_point != "/"
            && m.device == root.device
            && !crate::paths::ignored(&m.mount_point)
            && (m.root == root.root
                || m.root
                    .starts_with(&format!("{}/", root.root.trim_end_matches('/'))))
            && !out.contains(&m.mount_point)
        {
            out.push(m.mount_point.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
600 500 0:77 / / rw,relatime - overlay overlay rw,lowerdir=/l
601 600 0:80 / /proc rw - proc proc rw
602 600 0:81 / /dev rw - tmpfs tmpfs rw
603 600 8:1 /var/lib/kubelet/pods/x/etc-hosts /etc/hosts rw - ext4 /dev/sda1 rw
604 600 0:77 /usr/share /opt/share\\040x rw - overlay overlay rw
";

    #[test]
    fn watches_the_root_tree_only() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m[4].mount_point, "/opt/share x");
        assert_eq!(
            image_mounts(&m),
            vec!["/".to_string(), "/opt/share x".to_string()]
        );
    }
}
