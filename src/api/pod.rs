//! A pod's containers by name, init containers included: a workflow may name an init container
//! in `target.containers`, so the controller and the report server look in both lists (names are
//! unique across them).

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec};

/// Every container of the pod spec: the app containers, then the init containers.
pub fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
}

/// The container called `name`, app or init.
pub fn container<'s>(spec: &'s PodSpec, name: &str) -> Option<&'s Container> {
    containers(spec).find(|c| c.name == name)
}

/// Whether `name` is one of the spec's init containers.
pub fn is_init(spec: &PodSpec, name: &str) -> bool {
    spec.init_containers
        .iter()
        .flatten()
        .any(|c| c.name == name)
}

/// Whether the pod's container `name` runs `image`.
pub fn runs(pod: &Pod, name: &str, image: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| container(s, name))
        .is_some_and(|c| c.image.as_deref() == Some(image))
}

/// Every container status of the pod: the init containers' first, as they run first (a pod
/// stuck in `Init:` is explained by them).
pub fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    let init = status.and_then(|s| s.init_container_statuses.as_ref());
    let app = status.and_then(|s| s.container_statuses.as_ref());
    init.into_iter().flatten().chain(app.into_iter().flatten())
}

/// The status of the pod's container `name`, app or init.
pub fn status<'p>(pod: &'p Pod, name: &str) -> Option<&'p ContainerStatus> {
    statuses(pod).find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn init_containers_are_found_by_name_beside_the_app_containers() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "web", "image": "w"}],
                     "initContainers": [{"name": "setup", "image": "s"}]},
            "status": {
                "containerStatuses": [{"name": "web", "image": "w", "imageID": "", "ready": false, "restartCount": 0}],
                "initContainerStatuses": [{"name": "setup", "image": "s", "imageID": "", "ready": true, "restartCount": 0}]}
        }))
        .unwrap();
        let spec = pod.spec.as_ref().unwrap();
        let names: Vec<&str> = containers(spec).map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["web", "setup"]);
        assert!(is_init(spec, "setup") && !is_init(spec, "web"));
        assert!(runs(&pod, "setup", "s") && !runs(&pod, "setup", "w"));
        assert!(status(&pod, "setup").is_some_and(|s| s.ready));
        assert!(status(&pod, "web").is_some_and(|s| !s.ready));
        let order: Vec<&str> = statuses(&pod).map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["setup", "web"]);
    }
}
