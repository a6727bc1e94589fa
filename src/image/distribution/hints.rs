//! Where error messages send the user to change how whittle reaches registries: the command
//! line's flags, or a workflow's fields.

/// Where the user tells whittle how to reach registries, so that error messages point there:
/// the command line's flags, or a workflow's fields when the operator drives the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Hints {
    #[default]
    CommandLine,
    Workflow,
}

impl Hints {
    /// After "refused credentials …": no credentials were found for the registry.
    pub fn no_credentials(self) -> &'static str {
        match self {
            Hints::CommandLine => {
                " (no credentials were found for it: pass --registry-config, set DOCKER_CONFIG, or log in)"
            }
            Hints::Workflow => {
                " (no credentials were found for it: set spec.registry.credentialsSecret, or add a Secret with an auths entry for this registry to the pod template's imagePullSecrets)"
            }
        }
    }

    /// After "refused credentials …": the credentials found were refused.
    pub fn wrong_credentials(self) -> &'static str {
        match self {
            Hints::CommandLine => " (check the user and password in the docker config)",
            Hints::Workflow => {
                " (check the user and password in the Secret's .dockerconfigjson: spec.registry.credentialsSecret, else the pod template's imagePullSecrets; pushing needs write access)"
            }
        }
    }

    /// After "could not be reached …", for a registry not declared insecure.
    pub fn plain_http(self) -> &'static str {
        match self {
            Hints::CommandLine => "; if it serves plain HTTP, pass --insecure",
            Hints::Workflow => "; if it serves plain HTTP, set spec.registry.insecure",
        }
    }

    /// After "an image index with no … image".
    pub fn platform(self) -> &'static str {
        match self {
            Hints::CommandLine => "; pick one with --platform",
            Hints::Workflow => "; the operator hardens images of that platform only",
        }
    }
}
