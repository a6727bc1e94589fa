//! Every reason a workflow can carry: the `reason` of its conditions (above all `Ready`), of
//! its Events and of the `whittle_rollbacks_total{reason}` label. They are the operator's
//! user-facing API, so each one is a variant here with a doc line, and a row in
//! docs/troubleshooting.md (a test below fails otherwise). The string is the variant's name.
//!
//! Phase changes are announced with the phase's name (`Phase::as_str`), which is also the
//! `Ready` reason while a phase runs; those are not repeated here.

macro_rules! reasons {
    ($($(#[doc = $doc:literal])+ $variant:ident,)+) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &[Reason] = &[$(Reason::$variant,)+];

            /// The reason as conditions, Events and metrics carry it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => stringify!($variant),)+
                }
            }
        }
    };
}

reasons! {
    // Pending: the workflow waits (`Ready` False) and its spec is still editable.
    /// Pending: the target Deployment does not exist (yet).
    TargetNotFound,
    /// Pending, or Failed: the target has no container of `spec.target.container`'s name (or
    /// several containers and no name), or lost it while the workflow ran.
    ContainerNotFound,
    /// Pending: another workflow holds the target; Failed: another workflow took it meanwhile.
    TargetBusy,
    /// Pending: Argo CD or Flux owns the target's pod template and `spec.target.gitOps` is
    /// `Wait`: the tool would revert the instrumented template mid-run. Stalled until a person
    /// configures the tool and sets `gitOps: Proceed`.
    GitOpsManaged,

    // Failed: a failure retrying cannot fix. The Deployment gets its original template back.
    /// The target Deployment was deleted while the workflow ran.
    TargetDeleted,
    /// The `whittle.dev/original` annotation on the target is not whittle's.
    AnnotationCorrupt,
    /// `status.sourceImage` or `status.hardenedImage` is missing: the status was edited.
    StatusIncomplete,
    /// The status no longer matches what harden produced (`status.seal`), so it is not signed.
    StatusTampered,
    /// An image name in the spec or on the container does not parse, the three images are not
    /// distinct, or a registry serves something whittle cannot read as an image.
    InvalidImage,
    /// `spec.instrumentedImage` or `spec.hardenedImage` leaves the source's repository without
    /// `spec.registry.credentialsSecret`.
    DestinationNotAllowed,
    /// A registry credentials Secret (`spec.registry.credentialsSecret` or an imagePullSecret)
    /// does not exist.
    CredentialsNotFound,
    /// A registry credentials Secret is not a readable `kubernetes.io/dockerconfigjson`.
    CredentialsInvalid,
    /// A registry refused the credentials (or their absence) with 401 or 403.
    RegistryUnauthorized,
    /// A registry has no such image, manifest or blob.
    ImageNotFound,
    /// A registry would be sent credentials in cleartext to a host not declared insecure.
    CleartextCredentials,
    /// The operator's sensor binary is missing or unusable.
    SensorMissing,
    /// A pattern in `spec.harden.include` or `exclude` does not parse.
    InvalidPattern,
    /// A stored report cannot be read.
    InvalidReport,
    /// An image or report is over one of the budgets the operator's admin sets.
    LimitExceeded,
    /// The operator's ServiceAccount may not do what the workflow needs (HTTP 403).
    Forbidden,
    /// The instrumented or the hardened pods did not roll out within `spec.verify.timeout`.
    RolloutFailed,
    /// A hardened pod keeps crashing (CrashLoopBackOff or restarts).
    CrashLooping,
    /// A hardened pod ran but did not become ready within `spec.verify.timeout`.
    ReadinessFailed,
    /// An exec probe of a hardened pod runs a command the hardened image does not have (kubelet
    /// says "executable file not found", "no such file or directory" or a shell's "not found").
    ProbeCommandMissing,
    /// The exercise Job failed, against the original workload or the hardened image.
    ExerciseFailed,
    /// A Job of the exercise Job's name exists that this workflow did not make.
    ExerciseJobConflict,
    /// The API server refused the exercise Job made from `spec.exercise`.
    InvalidExercise,
    /// An exercise run was asked for and `spec.exercise` is not set.
    NoExercise,
    /// No Service selects the target's pods (or not the one `spec.exercise.service` names).
    ServiceNotFound,
    /// The exercise's Service did not route to the pods under test alone in time.
    ServiceNotRouting,
    /// Fewer than `spec.observe.minReports` reports within `collectTimeout` (as a Warning
    /// Event: hardening goes on without the silent pods' reports).
    ReportsMissing,
    /// A phase or a registry operation did not finish within its timeout.
    Timeout,
    /// `spec.sign.keySecret` does not exist or has no `cosign.key`.
    SigningKeyMissing,
    /// `spec.sign.keySecret` holds a key whittle cannot use.
    InvalidSigningKey,
    /// Signing the hardened image or its provenance failed.
    SigningFailed,
    /// `spec.vulnerabilities.db` names no database the operator's admin configured.
    VulnerabilityDatabaseUnknown,
    /// The configured vulnerability database cannot be fetched or is not OSV.
    InvalidVulnerabilityDatabase,
    /// The vulnerability database is over a size or memory limit the admin sets.
    VulnerabilityDatabaseTooLarge,
    /// The hardened image keeps a vulnerability `spec.vulnerabilities.failOn` refuses; it is
    /// not verified, signed or promoted.
    VulnerabilityGate,

    // Progress: the reasons of the Instrumented, Observed, Hardened and Verified conditions.
    /// Instrumented is False: the instrumented image is being pushed (`Instrumenting`).
    Instrumenting,
    /// Instrumented is False: the instrumented image was pushed (also an Event).
    ImagePushed,
    /// Instrumented or Verified is False: a pod template was applied, its pods are awaited.
    RollingOut,
    /// Instrumented is True: the instrumented pods run.
    RolledOut,
    /// Observed is True: observation ended and the original pod template is back.
    ObservationEnded,
    /// Hardened is True: the hardened image was pushed.
    Pushed,
    /// Verified is False: the hardened image is about to be rolled out.
    Verifying,
    /// Verified is True (and `status.verification.reason`): the hardened pods passed.
    Passed,

    // Events only.
    /// Warning Event: a failure retrying may fix; the reconcile is retried with backoff.
    Retrying,
    /// Event: the workflow was deleted and the original pod template put back.
    Restored,
    /// Event: others changed the Deployment while whittle held it; their changes were kept.
    UserChangesKept,
    /// Event: the instrumented pod template was applied.
    Instrumented,
    /// Event: an exercise Job was started.
    ExerciseStarted,
    /// Event: the hardened pod template was applied for verification.
    RolledOutHardened,
    /// Event: verification passed.
    Verified,

    // Continuous hardening (`spec.continuous`): the UpToDate condition and its Events.
    /// UpToDate is True: the hardened image is built from the source's current digest.
    Current,
    /// Event, and the new run's trigger: the source reference names a new digest.
    NewDigest,
    /// Event, and the new run's trigger: the spec of a Succeeded continuous workflow changed.
    SpecChanged,
    /// UpToDate is False, Warning Event: a run to refresh the result failed; the last good
    /// hardened image stays in place and in status.
    RefreshFailed,
    /// UpToDate is False, Warning Event: a continuous run's image, hardened from the stored
    /// profile, failed verification; the new source is observed once, then hardened again.
    ObservingAgain,
    /// UpToDate is Unknown, Warning Event: the registry could not be asked for the source's
    /// digest (it is asked again after `checkInterval`).
    CheckFailed,
    /// UpToDate is Unknown: the workflow has no `status.sourceReference` (it succeeded before
    /// continuous hardening existed); recreate it to keep its result current.
    SourceUnknown,
    /// UpToDate is False, Warning Event (once per new set): the hardened image keeps a
    /// vulnerability at or above the threshold with a fix, and the source names no new digest:
    /// the source image must be rebuilt with the fix.
    RebuildNeeded,
    /// Warning Event: the hardened image's packages could not be matched again against the
    /// vulnerability database; tried again at the next check.
    RematchFailed,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tests and callers compare with the string users see.
impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;
    use std::collections::BTreeSet;

    const TROUBLESHOOTING: &str = include_str!("../../docs/troubleshooting.md");

    #[test]
    fn every_reason_has_a_row_in_troubleshooting_md() {
        let undocumented: Vec<&str> = Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .filter(|r| {
                !TROUBLESHOOTING
                    .lines()
                    .any(|l| l.starts_with(&format!("| `{r}` |")))
            })
            .collect();
        assert!(
            undocumented.is_empty(),
            "docs/troubleshooting.md has no row for {undocumented:?} in its Reasons table"
        );
    }

    #[test]
    fn every_row_of_the_reasons_table_names_a_reason() {
        let section = TROUBLESHOOTING
            .split_once("\n## Reasons\n")
            .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
            .expect("docs/troubleshooting.md has a \"## Reasons\" section");
        let known: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let name = row
                .trim_start_matches("| `")
                .split('`')
                .next()
                .unwrap_or("");
            assert!(
                known.contains(name),
                "{name} in the Reasons table is no Reason"
            );
        }
    }

    #[test]
    fn reasons_are_unique_and_read_as_their_names() {
        let strings: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(strings.len(), Reason::ALL.len());
        assert_eq!(Reason::TargetNotFound.to_string(), "TargetNotFound");
        assert_eq!(Reason::ExerciseJobConflict.as_str(), "ExerciseJobConflict");
        assert!(Reason::ALL.iter().all(|r| {
            let s = r.as_str();
            s.chars().all(|c| c.is_ascii_alphanumeric())
                && s.starts_with(|c: char| c.is_ascii_uppercase())
        }));
    }
}
