//! The OSV schema, as far as matching and reporting read it; serde ignores the rest.

use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
pub(super) struct RawRecord {
    pub(super) id: String,
    #[serde(default)]
    pub(super) withdrawn: Option<String>,
    #[serde(default)]
    pub(super) aliases: Option<Vec<String>>,
    #[serde(default)]
    pub(super) upstream: Option<Vec<String>>,
    #[serde(default)]
    pub(super) summary: Option<String>,
    #[serde(default)]
    pub(super) severity: Option<Vec<RawSeverity>>,
    #[serde(default)]
    pub(super) affected: Option<Vec<RawAffected>>,
    #[serde(default)]
    pub(super) database_specific: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct RawSeverity {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) score: String,
}

#[derive(Deserialize)]
pub(super) struct RawAffected {
    #[serde(default)]
    pub(super) package: Option<RawPackage>,
    #[serde(default)]
    pub(super) severity: Option<Vec<RawSeverity>>,
    #[serde(default)]
    pub(super) ranges: Option<Vec<RawRange>>,
    #[serde(default)]
    pub(super) versions: Option<Vec<String>>,
    #[serde(default)]
    pub(super) ecosystem_specific: Option<Value>,
    #[serde(default)]
    pub(super) database_specific: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct RawPackage {
    pub(super) ecosystem: String,
    pub(super) name: String,
}

#[derive(Deserialize)]
pub(super) struct RawRange {
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) events: Vec<RawEvent>,
}

#[derive(Deserialize)]
pub(super) struct RawEvent {
    #[serde(default)]
    pub(super) introduced: Option<String>,
    #[serde(default)]
    pub(super) fixed: Option<String>,
    #[serde(default)]
    pub(super) last_affected: Option<String>,
    #[serde(default)]
    pub(super) limit: Option<String>,
}
