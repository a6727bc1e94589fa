//! `whittle crdgen`: the HardeningWorkflow CRD as YAML, for `kubectl apply -f -`, Helm charts
//! and the checked-in `crds/hardeningworkflow.yaml`.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::CliResult;

#[derive(Args, Debug)]
pub struct CrdgenArgs {}

pub fn crdgen(_: CrdgenArgs) -> CliResult {
    let yaml = whittle::api::crd_yaml()?;
    std::io::stdout().lock().write_all(yaml.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
