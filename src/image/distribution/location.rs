//! Where an image is (a [`Location`]: a registry reference or an OCI layout) and what a
//! reference resolved to there (an [`Image`]): the vocabulary of the store and of the registry
//! client beneath it, apart from both so that neither imports the other.

use std::fmt;

use bytes::Bytes;
use oci_client::manifest::OciDescriptor;
use serde_json::Value;

use super::layout::LayoutRef;
use super::reference::{ImageRef, derived_tag};
use crate::image::error::Result;
use crate::image::media::Flavor;

/// An image's place: `registry/repo:tag`, `registry/repo@sha256:...`, or `oci:DIR[:TAG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Registry(ImageRef),
    Layout(LayoutRef),
}

impl Location {
    pub fn parse(input: &str) -> Result<Location> {
        match input.strip_prefix("oci:") {
            Some(rest) => Ok(Location::Layout(LayoutRef::parse(input, rest)?)),
            None => Ok(Location::Registry(ImageRef::parse(input)?)),
        }
    }

    /// `<repo>:<tag>-<suffix>` in the same registry repository or layout directory.
    pub fn derived(&self, suffix: &str) -> Location {
        match self {
            Location::Registry(r) => Location::Registry(r.derived(suffix)),
            Location::Layout(l) => Location::Layout(l.at_tag(&derived_tag(
                l.tag.as_deref(),
                l.digest.as_deref(),
                suffix,
            ))),
        }
    }

    pub fn at_digest(&self, digest: &str) -> Location {
        match self {
            Location::Registry(r) => Location::Registry(r.at_digest(digest)),
            Location::Layout(l) => Location::Layout(l.at_digest(digest)),
        }
    }

    /// What to print for an image pushed here as `digest`: the name as given, pinned
    /// (`registry/repo:tag@sha256:...`, `oci:DIR:TAG@sha256:...`).
    pub fn pushed(&self, digest: &str) -> String {
        match self {
            Location::Registry(r) if r.digest().is_none() => format!("{r}@{digest}"),
            Location::Layout(l) if l.digest.is_none() => format!("{l}@{digest}"),
            other => other.at_digest(digest).to_string(),
        }
    }

    /// The repository or layout directory, without tag or digest: `registry/repo`, `oci:DIR`.
    pub fn repository(&self) -> String {
        match self {
            Location::Registry(r) => format!("{}/{}", r.registry(), r.repository()),
            Location::Layout(l) => format!("oci:{}", l.dir.display()),
        }
    }

    /// The registry's host (and port) as requests address it (`index.docker.io` for Docker
    /// Hub); None for a layout.
    pub fn registry_host(&self) -> Option<&str> {
        match self {
            Location::Registry(r) => Some(r.oci().resolve_registry()),
            Location::Layout(_) => None,
        }
    }

    /// True when both are the same place (so a layer of one is already in the other).
    pub fn same_place(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::Registry(a), Location::Registry(b)) => a.same_repository(b),
            (Location::Layout(a), Location::Layout(b)) => a.dir == b.dir,
            _ => false,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Registry(r) => r.fmt(f),
            Location::Layout(l) => l.fmt(f),
        }
    }
}

/// One image: the manifest a reference resolved to, and its config.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference as the user gave it.
    pub reference: Location,
    /// The same place at the image manifest's digest.
    pub pinned: Location,
    pub manifest_digest: String,
    /// The index the manifest was chosen from, when the reference named one.
    pub index_digest: Option<String>,
    pub flavor: Flavor,
    pub config_descriptor: OciDescriptor,
    pub layers: Vec<OciDescriptor>,
    /// The config JSON as stored: whittle edits a copy and keeps every field it does not know.
    pub config: Value,
    /// The config's bytes as stored.
    pub config_bytes: Bytes,
}

impl Image {
    /// Sum of the compressed layer sizes, as the manifest states them.
    pub fn compressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.size.max(0) as u64).sum()
    }
}
