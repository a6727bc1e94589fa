//! Pure: from the workloads a policy selects and the workflows that exist, what the policy does
//! now (create, update, delete workflows) and what its status says. The I/O around it lists and
//! applies; everything decided here is table-tested.

use std::collections::BTreeMap;

use crate::api::policy::{PolicyCounts, PolicyMode, PolicyTotals, Prediction, WorkloadRow};
use crate::api::status::HardenResult;
use crate::api::{Phase, TargetKind};

/// A workload the selectors pick.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub namespace: String,
    pub kind: TargetKind,
    pub name: String,
    /// Annotated `whittle.dev/skip: "true"`.
    pub skip: bool,
    /// The first container the policy hardens (None: the pod's first), and its image as the
    /// pod template names it.
    pub container: Option<String>,
    pub image: Option<String>,
}

impl Candidate {
    fn key(&self) -> Key {
        (self.namespace.clone(), self.kind, self.name.clone())
    }
}

/// Namespace, kind and name of a workload.
pub type Key = (String, TargetKind, String);

/// A HardeningWorkflow in a selected namespace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Existing {
    pub namespace: String,
    pub name: String,
    pub target_kind: TargetKind,
    pub target_name: String,
    /// Made by this policy (its label and its owner reference).
    pub ours: bool,
    pub phase: Option<Phase>,
    /// The template hash it was made from (ours only).
    pub template_hash: Option<String>,
    /// Its spec has `continuous`: a Succeeded one takes a spec change as its next run.
    pub continuous: bool,
    /// Being deleted (its finalizer restores the workload).
    pub deleting: bool,
    /// Pending and waiting for something outside it (its target, a person's `gitOps:
    /// Proceed`): it holds no slot, or one such workflow could stall the policy.
    pub waiting: bool,
    pub result: Option<HardenResult>,
    pub vulnerabilities_removed: Option<u64>,
    pub image: Option<String>,
}

impl Existing {
    fn targets(&self) -> Key {
        (
            self.namespace.clone(),
            self.target_kind,
            self.target_name.clone(),
        )
    }

    fn finished(&self) -> bool {
        matches!(self.phase, Some(Phase::Succeeded | Phase::Failed))
    }

    /// Takes a spec change in place: not started yet, or between the runs of a continuous one.
    fn takes_update(&self) -> bool {
        matches!(self.phase, None | Some(Phase::Pending))
            || (self.phase == Some(Phase::Succeeded) && self.continuous)
    }
}

/// Report mode: what inspecting a workload's image gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Inspected {
    Predicted {
        prediction: Prediction,
        source_bytes: u64,
        kept_bytes: u64,
    },
    Failed(String),
}

/// What the policy wants, and the state around it.
pub struct Inputs<'a> {
    pub mode: PolicyMode,
    pub max_concurrent: u32,
    pub window_open: bool,
    /// The hash of the workflow a template change would make now.
    pub template_hash: &'a str,
    pub candidates: &'a [Candidate],
    pub workflows: &'a [Existing],
    /// Report mode: each inspected workload's verdict.
    pub inspected: &'a BTreeMap<Key, Inspected>,
    /// The row limit of the status.
    pub row_limit: usize,
}

/// What to do, and the status that follows.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Workloads that get their workflow now.
    pub create: Vec<Candidate>,
    /// Workflows of ours to apply the new template to (namespace, name, the workload).
    pub update: Vec<(String, String, Candidate)>,
    /// Workflows of ours to delete (namespace, name): their workload left the selection, or
    /// they finished on an old template and are made again.
    pub delete: Vec<(String, String)>,
    pub selected: u32,
    pub skipped: u32,
    pub counts: PolicyCounts,
    pub totals: PolicyTotals,
    pub rows: Vec<WorkloadRow>,
    pub truncated: bool,
}

/// The workflow a policy stamps out for a workload: `<policy>-<kind>-<workload>`, lower case,
/// predictable so that a restarted operator finds what it made; cut and suffixed with a hash
/// when longer than a name may be.
pub fn workflow_name(policy: &str, kind: TargetKind, workload: &str) -> String {
    let name = format!("{policy}-{}-{workload}", kind.as_str().to_ascii_lowercase());
    if name.len() <= 253 {
        return name;
    }
    let hash = crate::api::names::label_value(&format!("{name}!"));
    let suffix = &hash[hash.len() - 10..];
    format!("{}-{suffix}", &name[..242])
}

pub fn plan(inputs: &Inputs<'_>) -> Plan {
    let mut plan = Plan::default();
    let mut candidates: Vec<&Candidate> = inputs.candidates.iter().collect();
    candidates.sort_by_key(|c| c.key());
    let index = Index::of(inputs, &candidates);
    // Ours whose workload is gone from the selection (or now skipped) go first: deleting one
    // restores its workload.
    for w in inputs.workflows.iter().filter(|w| w.ours && !w.deleting) {
        if !index.wanted.contains_key(&w.targets()) {
            plan.delete.push((w.namespace.clone(), w.name.clone()));
        }
    }
    let mut active = index
        .ours
        .values()
        .filter(|w| index.wanted.contains_key(&w.targets()) && !w.finished() && !w.waiting)
        .count() as u32;
    for c in candidates {
        plan.selected += 1;
        let row = decide(&mut plan, &index, inputs, c, &mut active);
        if plan.rows.len() < inputs.row_limit {
            plan.rows.push(row);
        } else {
            plan.truncated = true;
        }
    }
    plan
}

/// The workflows by the workload they target: this policy's, and others' (not being
/// deleted); and the workloads the policy wants a workflow for.
struct Index<'a> {
    ours: BTreeMap<Key, &'a Existing>,
    others: BTreeMap<Key, &'a Existing>,
    wanted: BTreeMap<Key, &'a Candidate>,
}

impl<'a> Index<'a> {
    fn of(inputs: &Inputs<'a>, candidates: &[&'a Candidate]) -> Index<'a> {
        let by_target = |ours: bool| {
            inputs
                .workflows
                .iter()
                .filter(move |w| w.ours == ours && (ours || !w.deleting))
                .map(|w| (w.targets(), w))
                .collect()
        };
        Index {
            ours: by_target(true),
            others: by_target(false),
            wanted: candidates
                .iter()
                .filter(|c| !c.skip)
                .map(|c| (c.key(), *c))
                .collect(),
        }
    }
}

/// One selected workload's row, and what to do about it.
fn decide(
    plan: &mut Plan,
    index: &Index<'_>,
    inputs: &Inputs<'_>,
    c: &Candidate,
    active: &mut u32,
) -> WorkloadRow {
    let mut row = WorkloadRow {
        namespace: c.namespace.clone(),
        kind: c.kind,
        name: c.name.clone(),
        image: c.image.clone(),
        ..Default::default()
    };
    let key = c.key();
    let foreign = index
        .others
        .get(&key)
        .filter(|_| !index.ours.contains_key(&key));
    if c.skip {
        plan.skipped += 1;
        row.state = "Skipped".into();
        row.message = Some(format!(
            "annotated {}: \"true\"",
            crate::api::policy::SKIP_ANNOTATION
        ));
    } else if let Some(other) = foreign {
        plan.skipped += 1;
        row.state = "Skipped".into();
        row.message = Some(format!("already targeted by workflow {}", other.name));
        row.workflow = Some(other.name.clone());
    } else if inputs.mode == PolicyMode::Report {
        report_row(plan, &mut row, inputs.inspected.get(&key));
    } else if let Some(w) = index.ours.get(&key) {
        harden_row(plan, &mut row, w, c, inputs.template_hash);
    } else if *active < inputs.max_concurrent && inputs.window_open {
        *active += 1;
        plan.counts.pending += 1;
        plan.create.push(c.clone());
        row.state = "Pending".into();
    } else {
        plan.counts.queued += 1;
        row.state = "Queued".into();
        row.message = Some(if inputs.window_open {
            format!("waiting for one of {} slots", inputs.max_concurrent)
        } else {
            "waiting for the window".into()
        });
    }
    row
}

fn report_row(plan: &mut Plan, row: &mut WorkloadRow, inspected: Option<&Inspected>) {
    match inspected {
        Some(Inspected::Predicted {
            prediction,
            source_bytes,
            kept_bytes,
        }) => {
            plan.counts.reported += 1;
            row.state = "Reported".into();
            row.source_bytes = Some(*source_bytes);
            row.hardened_bytes = Some(*kept_bytes);
            let t = &mut plan.totals;
            t.source_bytes += source_bytes;
            t.hardened_bytes += kept_bytes;
            t.shells_removed += prediction.shells.len() as u32;
            t.package_managers_removed += prediction.package_managers.len() as u32;
            t.vulnerabilities_removed += prediction.vulnerabilities_removable.unwrap_or(0);
            row.prediction = Some(prediction.clone());
        }
        Some(Inspected::Failed(why)) => {
            row.state = "InspectionFailed".into();
            row.message = Some(why.clone());
        }
        None => {
            plan.counts.queued += 1;
            row.state = "Queued".into();
            row.message = Some("not inspected yet".into());
        }
    }
}

fn harden_row(plan: &mut Plan, row: &mut WorkloadRow, w: &Existing, c: &Candidate, hash: &str) {
    row.workflow = Some(w.name.clone());
    row.state = w.phase.unwrap_or_default().as_str().to_string();
    if w.image.is_some() {
        row.image = w.image.clone();
    }
    crate::api::policy::count(&mut plan.counts, w.phase);
    if w.phase == Some(Phase::Succeeded)
        && let Some(r) = &w.result
    {
        row.source_bytes = Some(r.source_bytes);
        row.hardened_bytes = Some(r.hardened_bytes);
        let t = &mut plan.totals;
        t.source_bytes += r.source_bytes;
        t.hardened_bytes += r.hardened_bytes;
        t.shells_removed += r.removed_shells as u32;
        t.package_managers_removed += r.removed_package_managers as u32;
        t.vulnerabilities_removed += w.vulnerabilities_removed.unwrap_or(0) as u32;
    }
    if w.deleting || w.template_hash.as_deref() == Some(hash) {
        return;
    }
    if w.takes_update() {
        plan.update
            .push((w.namespace.clone(), w.name.clone(), c.clone()));
    } else if w.finished() {
        plan.delete.push((w.namespace.clone(), w.name.clone()));
        row.message = Some("made again from the changed template".into());
    } else {
        row.message = Some("takes the changed template when this run ends".into());
    }
}

/// The policy's `Ready` condition: status, reason, message.
pub fn readiness(plan: &Plan, mode: PolicyMode, window_open: bool) -> (bool, &'static str, String) {
    let c = &plan.counts;
    let considered = plan.selected - plan.skipped;
    let unfinished = c.queued + c.pending + c.running;
    if mode == PolicyMode::Report {
        let failed = considered - c.reported - c.queued;
        return match (c.queued, failed) {
            (0, 0) => (
                true,
                "Reported",
                format!("{} workloads inspected", c.reported),
            ),
            (0, f) => (
                false,
                "InspectionFailed",
                format!("{f} images could not be inspected"),
            ),
            (q, _) => (false, "InProgress", format!("{q} images left to inspect")),
        };
    }
    if unfinished == 0 && c.failed == 0 {
        return (
            true,
            "Succeeded",
            format!("{} workflows Succeeded", c.succeeded),
        );
    }
    if c.queued > 0 && c.pending + c.running == 0 && !window_open {
        return (
            false,
            "WindowClosed",
            format!("{} workloads wait for the window", c.queued),
        );
    }
    if unfinished == 0 {
        return (
            false,
            "WorkflowsFailed",
            format!("{} of {considered} workflows Failed", c.failed),
        );
    }
    (
        false,
        "InProgress",
        format!(
            "{} queued, {} running, {} Succeeded, {} Failed",
            c.queued,
            c.pending + c.running,
            c.succeeded,
            c.failed
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str) -> Candidate {
        Candidate {
            namespace: "shop".into(),
            kind: TargetKind::Deployment,
            name: name.into(),
            skip: false,
            container: None,
            image: Some(format!("r/{name}:1")),
        }
    }

    fn ours(name: &str, phase: Option<Phase>, hash: &str) -> Existing {
        Existing {
            namespace: "shop".into(),
            name: workflow_name("p", TargetKind::Deployment, name),
            target_kind: TargetKind::Deployment,
            target_name: name.into(),
            ours: true,
            phase,
            template_hash: Some(hash.into()),
            ..Default::default()
        }
    }

    fn inputs<'a>(
        candidates: &'a [Candidate],
        workflows: &'a [Existing],
        inspected: &'a BTreeMap<Key, Inspected>,
    ) -> Inputs<'a> {
        Inputs {
            mode: PolicyMode::Harden,
            max_concurrent: 2,
            window_open: true,
            template_hash: "h1",
            candidates,
            workflows,
            inspected,
            row_limit: 100,
        }
    }

    fn names(list: &[Candidate]) -> Vec<&str> {
        list.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn at_most_max_concurrent_run_and_the_rest_queue() {
        let none = BTreeMap::new();
        let cs: Vec<Candidate> = ["a", "b", "c", "d"].map(candidate).to_vec();
        let p = plan(&inputs(&cs, &[], &none));
        assert_eq!(names(&p.create), ["a", "b"]);
        assert_eq!((p.counts.pending, p.counts.queued), (2, 2));

        // a is running, b Succeeded: one slot left, for c.
        let ws = [
            ours("a", Some(Phase::Observing), "h1"),
            ours("b", Some(Phase::Succeeded), "h1"),
        ];
        let p = plan(&inputs(&cs, &ws, &none));
        assert_eq!(names(&p.create), ["c"]);
        assert_eq!(
            (p.counts.running, p.counts.succeeded, p.counts.queued),
            (1, 1, 1)
        );
        let states: Vec<&str> = p.rows.iter().map(|r| r.state.as_str()).collect();
        assert_eq!(states, ["Observing", "Succeeded", "Pending", "Queued"]);

        // The window closed: nothing new starts.
        let p = plan(&Inputs {
            window_open: false,
            ..inputs(&cs, &ws, &none)
        });
        assert!(p.create.is_empty());
        assert_eq!(readiness(&p, PolicyMode::Harden, false).1, "InProgress");
    }

    #[test]
    fn a_workflow_waiting_in_pending_holds_no_slot() {
        let none = BTreeMap::new();
        let cs: Vec<Candidate> = ["a", "b"].map(candidate).to_vec();
        let mut stuck = ours("a", Some(Phase::Pending), "h1");
        stuck.waiting = true;
        let p = plan(&Inputs {
            max_concurrent: 1,
            ..inputs(&cs, std::slice::from_ref(&stuck), &none)
        });
        assert_eq!(names(&p.create), ["b"]);
        let fresh = ours("a", Some(Phase::Pending), "h1");
        let p = plan(&Inputs {
            max_concurrent: 1,
            ..inputs(&cs, std::slice::from_ref(&fresh), &none)
        });
        assert!(
            p.create.is_empty(),
            "a Pending workflow about to start holds its slot"
        );
    }

    #[test]
    fn skipped_and_foreign_targets_get_no_workflow_and_leavers_are_deleted() {
        let none = BTreeMap::new();
        let mut skipped = candidate("b");
        skipped.skip = true;
        let cs = [candidate("a"), skipped, candidate("c")];
        let foreign = Existing {
            namespace: "shop".into(),
            name: "by-hand".into(),
            target_kind: TargetKind::Deployment,
            target_name: "c".into(),
            ..Default::default()
        };
        // b was ours before it was annotated; gone is ours and no longer selected.
        let ws = [
            foreign,
            ours("b", Some(Phase::Observing), "h1"),
            ours("gone", Some(Phase::Succeeded), "h1"),
        ];
        let p = plan(&inputs(&cs, &ws, &none));
        assert_eq!(names(&p.create), ["a"]);
        let deleted: Vec<&str> = p.delete.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(deleted, ["p-deployment-b", "p-deployment-gone"]);
        assert_eq!((p.selected, p.skipped), (3, 2));
        assert_eq!(
            p.rows[2].message.as_deref(),
            Some("already targeted by workflow by-hand")
        );
    }

    #[test]
    fn a_template_change_updates_restarts_or_waits_by_phase() {
        let none = BTreeMap::new();
        let cs: Vec<Candidate> = ["a", "b", "c", "d"].map(candidate).to_vec();
        let mut continuous = ours("d", Some(Phase::Succeeded), "old");
        continuous.continuous = true;
        let ws = [
            ours("a", Some(Phase::Pending), "old"),
            ours("b", Some(Phase::Failed), "old"),
            ours("c", Some(Phase::Hardening), "old"),
            continuous,
        ];
        let p = plan(&Inputs {
            max_concurrent: 10,
            ..inputs(&cs, &ws, &none)
        });
        let updated: Vec<&str> = p.update.iter().map(|(_, n, _)| n.as_str()).collect();
        assert_eq!(updated, ["p-deployment-a", "p-deployment-d"]);
        let deleted: Vec<&str> = p.delete.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(deleted, ["p-deployment-b"], "finished on the old template");
        assert_eq!(
            p.rows[2].message.as_deref(),
            Some("takes the changed template when this run ends")
        );
        assert!(
            p.create.is_empty(),
            "b is made again once its deletion is done"
        );
    }

    #[test]
    fn report_mode_creates_nothing_and_sums_the_predictions() {
        let cs = [candidate("a"), candidate("b"), candidate("c")];
        let prediction = Prediction {
            shells: vec!["bin/sh".into(), "bin/bash".into()],
            package_managers: vec!["usr/bin/dpkg".into()],
            vulnerabilities: Some(9),
            vulnerabilities_removable: Some(7),
            removable_percent: 80,
            ..Default::default()
        };
        let inspected = BTreeMap::from([
            (
                cs[0].key(),
                Inspected::Predicted {
                    prediction,
                    source_bytes: 1000,
                    kept_bytes: 200,
                },
            ),
            (cs[1].key(), Inspected::Failed("registry said 401".into())),
        ]);
        let p = plan(&Inputs {
            mode: PolicyMode::Report,
            ..inputs(&cs, &[], &inspected)
        });
        assert!(p.create.is_empty() && p.update.is_empty() && p.delete.is_empty());
        assert_eq!((p.counts.reported, p.counts.queued), (1, 1));
        assert_eq!(p.totals.source_bytes, 1000);
        assert_eq!(p.totals.hardened_bytes, 200);
        assert_eq!(p.totals.shells_removed, 2);
        assert_eq!(p.totals.vulnerabilities_removed, 7);
        assert_eq!(p.rows[1].state, "InspectionFailed");
        assert_eq!(readiness(&p, PolicyMode::Report, true).1, "InProgress");
    }

    #[test]
    fn readiness_follows_the_counts() {
        let none = BTreeMap::new();
        let cs = [candidate("a"), candidate("b")];
        let done = [
            ours("a", Some(Phase::Succeeded), "h1"),
            ours("b", Some(Phase::Succeeded), "h1"),
        ];
        let p = plan(&inputs(&cs, &done, &none));
        assert!(readiness(&p, PolicyMode::Harden, true).0);
        let failed = [
            ours("a", Some(Phase::Succeeded), "h1"),
            ours("b", Some(Phase::Failed), "h1"),
        ];
        let p = plan(&inputs(&cs, &failed, &none));
        assert_eq!(readiness(&p, PolicyMode::Harden, true).1, "WorkflowsFailed");
        let p = plan(&Inputs {
            window_open: false,
            ..inputs(&cs, &[], &none)
        });
        assert_eq!(readiness(&p, PolicyMode::Harden, false).1, "WindowClosed");
    }

    #[test]
    fn rows_are_bounded_and_names_predictable() {
        let none = BTreeMap::new();
        let cs: Vec<Candidate> = (0..5).map(|i| candidate(&format!("w{i}"))).collect();
        let p = plan(&Inputs {
            row_limit: 3,
            ..inputs(&cs, &[], &none)
        });
        assert_eq!(p.rows.len(), 3);
        assert!(p.truncated);
        assert_eq!(p.selected, 5);
        assert_eq!(
            workflow_name("shop", TargetKind::StatefulSet, "db"),
            "shop-statefulset-db"
        );
        let long = workflow_name("p", TargetKind::Deployment, &"x".repeat(300));
        assert_eq!(long.len(), 253);
        assert_ne!(
            long,
            workflow_name("p", TargetKind::Deployment, &"x".repeat(301))
        );
    }
}
