//! The image configs and manifests whittle writes: the source's config with only what the stage
//! changes (entrypoint, layers, history) and provenance labels added; every other field, known
//! to whittle or not, kept as it was.

use serde_json::{Value, json};

use super::distribution::location::Image;
use super::error::{ImageError, Result};

/// Where the sensor sits in an instrumented image.
pub const SENSOR_PATH: &str = "/.whittle/sensor";

pub const LABEL_SOURCE_IMAGE: &str = "dev.whittle.source-image";
pub const LABEL_SOURCE_DIGEST: &str = "dev.whittle.source-digest";
pub const LABEL_VERSION: &str = "dev.whittle.version";
pub const LABEL_STAGE: &str = "dev.whittle.stage";

/// A list of strings of the image config's `config` object (`Entrypoint`, `Cmd`, `Env`).
pub fn strings(config: &Value, key: &str) -> Vec<String> {
    config["config"][key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The app's command line: Entrypoint followed by Cmd, as a runtime starts it.
pub fn argv(config: &Value) -> Vec<String> {
    let mut argv = strings(config, "Entrypoint");
    argv.extend(strings(config, "Cmd"));
    argv
}

fn labelled(src: &Image, stage: &str) -> Value {
    let mut config = src.config.clone();
    if !config["config"].is_object() {
        config["config"] = json!({});
    }
    let labels = &mut config["config"]["Labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[LABEL_SOURCE_IMAGE] = json!(src.pinned.to_string());
    labels[LABEL_SOURCE_DIGEST] = json!(src.manifest_digest);
    labels[LABEL_VERSION] = json!(crate::VERSION);
    labels[LABEL_STAGE] = json!(stage);
    config
}

/// A history entry dated like the source, so the same inputs give the same config digest.
fn history(src: &Image, created_by: String, comment: String) -> Value {
    let created = src.config["created"]
        .as_str()
        .unwrap_or("1970-01-01T00:00:00Z");
    json!({"created": created, "created_by": created_by, "comment": comment})
}

/// The instrumented config: the sensor runs first and starts the original command.
pub fn instrumented(src: &Image, sensor_diff_id: &str) -> Result<Value> {
    let original = argv(&src.config);
    if original.is_empty() {
        return Err(ImageError::Manifest {
            reference: src.reference.to_string(),
            detail:
                "the image has neither Entrypoint nor Cmd: there is no app for the sensor to start"
                    .into(),
        });
    }
    let mut config = labelled(src, "instrumented");
    // Cmd stays apart: a pod's `args` replace Cmd and keep the entrypoint, and the sensor
    // must wrap what the original would have run.
    let mut entrypoint = vec![SENSOR_PATH.to_string(), "--".to_string()];
    entrypoint.extend(strings(&src.config, "Entrypoint"));
    config["config"]["Entrypoint"] = json!(entrypoint);
    let diff_ids = &mut config["rootfs"]["diff_ids"];
    match diff_ids.as_array_mut() {
        Some(ids) => ids.push(json!(sensor_diff_id)),
        None => *diff_ids = json!([sensor_diff_id]),
    }
    config["rootfs"]["type"] = json!("layers");
    let entry = history(
        src,
        format!("whittle instrument: sensor at {SENSOR_PATH}"),
        format!("whittle {}", crate::VERSION),
    );
    match config["history"].as_array_mut() {
        Some(h) => h.push(entry),
        None => config["history"] = json!([entry]),
    }
    Ok(config)
}

/// The hardened config: one layer, the original process settings, provenance.
pub fn hardened(src: &Image, diff_id: &str, comment: String) -> Value {
    let mut config = labelled(src, "hardened");
    config["rootfs"] = json!({"type": "layers", "diff_ids": [diff_id]});
    config["history"] = json!([history(
        src,
        format!("whittle harden {}", src.pinned),
        comment
    )]);
    config
}
