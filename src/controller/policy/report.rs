//! Report mode's I/O: each selected workload's image, read from its registry with the
//! workload's pull secrets (or the template's `registry.credentialsSecret`), and what a
//! hardening would remove from it at most. A prediction is kept while the workload runs the
//! same image reference; a few images are read per reconcile, so a large selection fills in
//! over several.

use std::collections::BTreeMap;

use super::Policy;
use super::plan::{Candidate, Inspected, Key};
use crate::controller::Context;
use crate::controller::engine;
use crate::image::distribution::location::Location;
use crate::image::predict::{Overrides, predict_for};

/// Images read per reconcile; the rest wait for the next one (20 s later).
const PER_RECONCILE: usize = 3;

pub async fn inspect_all(
    policy: &Policy,
    ctx: &Context,
    candidates: &[Candidate],
) -> BTreeMap<Key, Inspected> {
    let before = policy.status.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut budget = PER_RECONCILE;
    for c in candidates.iter().filter(|c| !c.skip) {
        let key = (c.namespace.clone(), c.kind, c.name.clone());
        let known = before.workloads.iter().find(|r| {
            r.namespace == c.namespace && r.kind == c.kind && r.name == c.name && r.image == c.image
        });
        if let Some(row) = known {
            if let Some(prediction) = &row.prediction {
                out.insert(
                    key,
                    Inspected::Predicted {
                        prediction: prediction.clone(),
                        source_bytes: row.source_bytes.unwrap_or_default(),
                        kept_bytes: row.hardened_bytes.unwrap_or_default(),
                    },
                );
                continue;
            }
            if row.state == "InspectionFailed" {
                out.insert(
                    key,
                    Inspected::Failed(row.message.clone().unwrap_or_default()),
                );
                continue;
            }
        }
        if budget == 0 {
            continue;
        }
        budget -= 1;
        out.insert(key, inspect(policy, ctx, c).await);
    }
    out
}

async fn inspect(policy: &Policy, ctx: &Context, c: &Candidate) -> Inspected {
    match predict(policy, ctx, c).await {
        Ok(i) => i,
        Err(e) => Inspected::Failed(e),
    }
}

async fn predict(policy: &Policy, ctx: &Context, c: &Candidate) -> Result<Inspected, String> {
    let workload = crate::controller::workload::get(&ctx.client, &c.namespace, c.kind, &c.name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} {}/{} is gone", c.kind.as_str(), c.namespace, c.name))?;
    let spec = crate::controller::template::pod_spec(&workload);
    let container = spec.and_then(|s| match &c.container {
        Some(name) => crate::api::pod::container(s, name),
        None => s.containers.first(),
    });
    let image = container
        .and_then(|c| c.image.clone())
        .ok_or_else(|| "the pod template names no image".to_string())?;
    let location = Location::parse(&image).map_err(|e| e.to_string())?;
    let registry = &policy.spec.template.spec.registry;
    let pull: Vec<String> = spec
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect();
    let secrets = match &registry.credentials_secret {
        Some(name) => vec![name.clone()],
        None => pull,
    };
    let insecure = if registry.insecure {
        location
            .registry_host()
            .map(str::to_string)
            .into_iter()
            .collect()
    } else {
        Vec::new()
    };
    let store = engine::store(&ctx.client, &c.namespace, &secrets, insecure)
        .await
        .map_err(|e| e.to_string())?
        .with_limits(ctx.limits);
    // The container's own command line decides what its entrypoint needs, as Kubernetes runs it.
    let overrides = Overrides {
        command: container.and_then(|c| c.command.clone()),
        args: container.and_then(|c| c.args.clone()),
    };
    let mut predicted = predict_for(&store, &location, &overrides, None)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(name) = &policy.spec.template.spec.vulnerabilities.db {
        let db = ctx.vuln_dbs.get(name).await.map_err(|e| e.to_string())?;
        predicted.match_vulnerabilities(&db);
    }
    Ok(Inspected::Predicted {
        prediction: predicted.prediction,
        source_bytes: predicted.source_bytes,
        kept_bytes: predicted.kept_bytes_at_least,
    })
}
