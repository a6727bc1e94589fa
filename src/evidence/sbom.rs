//! CycloneDX 1.6 SBOMs of the source and the hardened image: the OS packages with their purls,
//! and for the hardened one, whittle as the tool and the source image as its ancestor.
//!
//! Written with serde_json rather than the `cyclonedx-bom` crate, whose newest release (0.8)
//! writes specification 1.5 at most; tests validate the output against the official 1.6 schema.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::image::packages::{Inventory, Manager, OsRelease, Package, State};

/// The media type of a CycloneDX JSON document, and the artifactType of its OCI referrer.
pub const MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

/// An image the SBOM describes: `registry/repo` and its manifest digest.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub name: &'a str,
    pub digest: &'a str,
}

/// The purl of an OS package: `pkg:deb/debian/nginx-light@1.22.1-9?arch=amd64&distro=debian-12`,
/// as syft and Trivy write them.
pub fn package_purl(os: Option<&OsRelease>, p: &Package) -> Option<String> {
    let kind = match p.manager {
        Manager::Dpkg => "deb",
        Manager::Apk => "apk",
    };
    let namespace = os.map_or(
        match p.manager {
            Manager::Dpkg => "debian",
            Manager::Apk => "alpine",
        },
        |o| o.id.as_str(),
    );
    let mut purl = packageurl::PackageUrl::new(kind, p.name.as_str()).ok()?;
    purl.with_namespace(namespace).ok()?;
    purl.with_version(p.version.as_str()).ok()?;
    if let Some(arch) = &p.arch {
        purl.add_qualifier("arch", arch.as_str()).ok()?;
    }
    if let Some(distro) = os.and_then(distro) {
        purl.add_qualifier("distro", distro).ok()?;
    }
    if p.source != p.name {
        purl.add_qualifier("upstream", p.source.as_str()).ok()?;
    }
    Some(purl.to_string())
}

/// `debian-12`, `alpine-3.20.3`: the purl `distro` qualifier.
fn distro(os: &OsRelease) -> Option<String> {
    os.version_id.as_ref().map(|v| format!("{}-{v}", os.id))
}

/// `pkg:oci/web@sha256:...?repository_url=registry%2Fshop%2Fweb`.
pub fn image_purl(s: &Subject) -> Option<String> {
    let last = s.name.rsplit('/').next().unwrap_or(s.name);
    let mut purl = packageurl::PackageUrl::new("oci", last).ok()?;
    purl.with_version(s.digest).ok()?;
    purl.add_qualifier("repository_url", s.name).ok()?;
    Some(purl.to_string())
}

fn image_component(s: &Subject) -> Value {
    let mut c = json!({
        "type": "container",
        "bom-ref": s.digest,
        "name": s.name,
        "version": s.digest,
    });
    if let Some(purl) = image_purl(s) {
        c["purl"] = json!(purl);
    }
    c
}

fn package_component(os: Option<&OsRelease>, p: &Package, hardened: bool) -> Value {
    let purl = package_purl(os, p);
    let bom_ref = purl
        .clone()
        .unwrap_or_else(|| format!("{}@{}", p.name, p.version));
    let mut properties = vec![
        json!({"name": "whittle:files", "value": p.files.to_string()}),
        json!({"name": "whittle:sourcePackage", "value": p.source}),
    ];
    if hardened {
        let state = match p.state() {
            State::Kept => "kept",
            State::Partial => "partial",
            State::Removed => "removed",
        };
        properties.push(json!({"name": "whittle:filesKept", "value": p.kept.to_string()}));
        properties.push(json!({"name": "whittle:state", "value": state}));
    }
    let mut c = json!({
        "type": "library",
        "bom-ref": bom_ref,
        "name": p.name,
        "version": p.version,
        "properties": properties,
    });
    if let Some(purl) = purl {
        c["purl"] = json!(purl);
    }
    c
}

fn os_component(os: &OsRelease) -> Value {
    let mut c = json!({
        "type": "operating-system",
        "bom-ref": format!("os:{}", os.id),
        "name": os.id,
    });
    if let Some(v) = &os.version_id {
        c["version"] = json!(v);
    }
    if let Some(p) = &os.pretty_name {
        c["description"] = json!(p);
    }
    c
}

/// A serial number that is the same for the same document content, so re-running a harden
/// writes the same SBOM apart from its timestamp.
fn serial(subject: &Subject, role: &str) -> String {
    let hash = Sha256::digest(format!("{}\n{}\n{role}", subject.name, subject.digest));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    format!(
        "urn:uuid:{}",
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    )
}

/// The SBOM of an image: every package of `inventory` for a source (`ancestor` is `None`); for
/// a hardened image, the packages that still have files, with the source as its ancestor.
pub fn cyclonedx(
    subject: &Subject,
    inventory: &Inventory,
    ancestor: Option<&Subject>,
    timestamp: &str,
) -> Value {
    let os = inventory.os.as_ref();
    let hardened = ancestor.is_some();
    let mut components: Vec<Value> = os.map(os_component).into_iter().collect();
    components.extend(
        inventory
            .packages
            .iter()
            .filter(|p| !hardened || p.state() != State::Removed)
            .map(|p| package_component(os, p, hardened)),
    );
    let mut image = image_component(subject);
    if let Some(a) = ancestor {
        image["pedigree"] = json!({"ancestors": [image_component(a)]});
        image["description"] = json!(format!("{} hardened by whittle", a.name));
    }
    let role = if hardened { "hardened" } else { "source" };
    document(subject, role, image, components, timestamp)
}

/// A file of an image whittle assembles itself, for its SBOM.
#[derive(Debug, Clone)]
pub struct File<'a> {
    /// Its path in the image, without the leading `/`.
    pub path: &'a str,
    /// `application` for a program, `data` for anything else.
    pub kind: &'static str,
    /// The version a program reports, when known.
    pub version: Option<&'a str>,
    pub contents: &'a [u8],
}

/// The SBOM of an image whittle assembled from `files` (the operator's own image): each file
/// with its SHA-256, so a scanner or an auditor can match the programs to a release.
pub fn assembled(subject: &Subject, files: &[File], timestamp: &str) -> Value {
    let components = files
        .iter()
        .map(|f| {
            let name = f.path.rsplit('/').next().unwrap_or(f.path);
            let mut c = json!({
                "type": f.kind,
                "bom-ref": format!("file:/{}", f.path),
                "name": name,
                "hashes": [{"alg": "SHA-256", "content": format!("{:x}", Sha256::digest(f.contents))}],
                "properties": [{"name": "whittle:path", "value": format!("/{}", f.path)}],
            });
            if let Some(v) = f.version {
                c["version"] = json!(v);
            }
            c
        })
        .collect();
    document(
        subject,
        "assembled",
        image_component(subject),
        components,
        timestamp,
    )
}

/// A CycloneDX 1.6 document about `image` (the component `subject` describes) holding
/// `components`, with whittle as its tool.
fn document(
    subject: &Subject,
    role: &str,
    image: Value,
    components: Vec<Value>,
    timestamp: &str,
) -> Value {
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial(subject, role),
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {"components": [{
                "type": "application",
                "author": "whittle",
                "name": "whittle",
                "version": crate::VERSION,
                "externalReferences": [{"type": "vcs", "url": env!("CARGO_PKG_REPOSITORY")}],
            }]},
            "component": image,
        },
        "components": components,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> OsRelease {
        OsRelease {
            id: "debian".into(),
            version_id: Some("12".into()),
            codename: Some("bookworm".into()),
            pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
        }
    }

    fn package(name: &str, version: &str, source: &str, files: u64, kept: u64) -> Package {
        Package {
            manager: Manager::Dpkg,
            name: name.into(),
            version: version.into(),
            arch: Some("amd64".into()),
            source: source.into(),
            source_version: version.into(),
            files,
            kept,
        }
    }

    #[test]
    fn purls_are_what_scanners_write() {
        let os = debian();
        assert_eq!(
            package_purl(
                Some(&os),
                &package("nginx-light", "1.22.1-9", "nginx", 1, 1)
            )
            .as_deref(),
            Some("pkg:deb/debian/nginx-light@1.22.1-9?arch=amd64&distro=debian-12&upstream=nginx")
        );
        assert_eq!(
            package_purl(Some(&os), &package("bash", "5.2.15-2+b7", "bash", 1, 1)).as_deref(),
            Some("pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=amd64&distro=debian-12"),
            "`+` is escaped as the purl specification asks"
        );
        assert_eq!(
            package_purl(Some(&os), &package("perl", "1:5.36", "perl", 1, 1)).as_deref(),
            Some("pkg:deb/debian/perl@1:5.36?arch=amd64&distro=debian-12")
        );
        let image = Subject {
            name: "127.0.0.1:5000/shop/web",
            digest: "sha256:abc",
        };
        assert_eq!(
            image_purl(&image).as_deref(),
            Some("pkg:oci/web@sha256:abc?repository_url=127.0.0.1:5000%2Fshop%2Fweb")
        );
    }

    #[test]
    fn the_hardened_sbom_lists_what_remains_and_names_its_ancestor() {
        let inventory = Inventory {
            os: Some(debian()),
            packages: vec![
                package("libc6", "2.36-9", "glibc", 10, 4),
                package("tar", "1.34", "tar", 5, 0),
            ],
        };
        let source = Subject {
            name: "r/web",
            digest: "sha256:aaa",
        };
        let hardened = Subject {
            name: "r/web",
            digest: "sha256:bbb",
        };
        let before = cyclonedx(&source, &inventory, None, "2026-12-02T00:00:00Z");
        let after = cyclonedx(&hardened, &inventory, Some(&source), "2026-12-02T00:00:00Z");
        let names = |bom: &Value| -> Vec<String> {
            bom["components"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["type"] == "library")
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        };
        assert_eq!(names(&before), ["libc6", "tar"]);
        assert_eq!(names(&after), ["libc6"]);
        assert_eq!(
            after["metadata"]["component"]["pedigree"]["ancestors"][0]["version"],
            "sha256:aaa"
        );
        assert_eq!(
            after["metadata"]["tools"]["components"][0]["name"],
            "whittle"
        );
        assert_ne!(before["serialNumber"], after["serialNumber"]);
        assert_eq!(
            after["serialNumber"],
            cyclonedx(&hardened, &inventory, Some(&source), "later")["serialNumber"]
        );
    }
}
