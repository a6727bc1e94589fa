//! `whittle crdgen`: the HardeningWorkflow CRD as YAML, for `kubectl apply -f -`, Helm charts
//! and the checked-in `crds/hardeningworkflow.yaml`; with `--reference`, the Markdown reference
//! generated from the same schema (`docs/reference.md`).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use super::CliResult;

#[derive(Args, Debug)]
pub struct CrdgenArgs {
    /// Print the HardeningWorkflow reference (Markdown: every field's path, type, default,
    /// validation and description, then the example workflows) instead of the CRD, as
    /// docs/reference.md holds it.
    #[arg(long)]
    reference: bool,
    /// Print the HardeningPolicy and ClusterHardeningPolicy CRDs instead, as
    /// crds/hardeningpolicies.yaml holds them (with --reference: their reference, as
    /// docs/policy-reference.md holds it).
    #[arg(long)]
    policies: bool,
}

pub fn crdgen(args: CrdgenArgs) -> CliResult {
    let text = if args.reference && args.policies {
        whittle::api::reference::policy_markdown()?
    } else if args.reference {
        whittle::api::reference::markdown()?
    } else if args.policies {
        whittle::api::crd::policy_crds_yaml()?
    } else {
        whittle::api::crd_yaml()?
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
