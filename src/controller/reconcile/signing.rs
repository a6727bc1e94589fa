//! Signing: the hardened image and its provenance are signed with `spec.sign.keySecret` once
//! they are trusted (verified, or verification is off), and only when the status still holds
//! what this workflow's harden produced (the seal).

use super::step::Step;
use crate::controller::error::{Error, Result};
use crate::controller::reason::Reason;
use crate::controller::signing_key::signing_key;
use crate::evidence::produce::{self, HardenInputs};
use crate::image::distribution::store::Store;

impl Step<'_> {
    /// Signs the hardened image and its provenance with `spec.sign.keySecret`, once it is
    /// trusted (verified, or verification is off). Signing again after a restart replaces the
    /// signature with an equivalent one.
    pub(super) async fn sign(&mut self, store: &Store) -> Result<()> {
        let Some(secret) = &self.workflow.spec.sign.key_secret else {
            return Ok(());
        };
        let (Some(hardened), Some(source)) = (
            self.status.hardened_image.clone(),
            self.status.source_image.clone(),
        ) else {
            return Ok(());
        };
        let seal = self.status.seal.as_deref().unwrap_or_default();
        if !self
            .ctx
            .report_key
            .opens(&self.sealed(&source, &hardened), seal)
        {
            return Err(Error::Failed {
                reason: Reason::StatusTampered,
                message: format!(
                    "status.hardenedImage {hardened} (or status.sourceImage or the report materials) is not what this workflow's harden produced: it was edited, so it is not signed"
                ),
            });
        }
        let key = signing_key(&self.ctx.client, &self.namespace(), secret).await?;
        let materials = self.materials();
        let spec = &self.workflow.spec.harden;
        let packs: Vec<String> = spec
            .packs
            .iter()
            .map(|p| crate::controller::engine::pack(*p).name().to_string())
            .collect();
        let inputs = HardenInputs {
            materials: &materials,
            include: &spec.include,
            exclude: &spec.exclude,
            packs: &packs,
            started_on: self.status.started_at.as_ref().map(|t| t.0),
        };
        let (signature, provenance) =
            produce::sign(store, &hardened, &source, &inputs, &key).await?;
        self.status.signature = Some(signature);
        self.status.provenance = Some(provenance);
        Ok(())
    }

    /// The report materials recorded when hardening started.
    fn materials(&self) -> Vec<(String, String)> {
        self.status
            .reports
            .as_ref()
            .map(|r| {
                r.materials
                    .iter()
                    .map(|m| (m.name.clone(), m.sha256.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What the seal covers: this workflow, the images harden read and wrote, and the reports
    /// it used.
    pub(super) fn sealed<'s>(&'s self, source: &'s str, hardened: &'s str) -> Vec<&'s str> {
        let mut parts = vec![
            self.workflow.metadata.uid.as_deref().unwrap_or_default(),
            source,
            hardened,
        ];
        if let Some(r) = &self.status.reports {
            for m in &r.materials {
                parts.push(&m.name);
                parts.push(&m.sha256);
            }
        }
        parts
    }
}
