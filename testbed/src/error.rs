use std::path::PathBuf;

/// Everything that can go wrong while setting up a test component. Each variant says which
/// component and what to do, because a failing test bed is usually a missing `make setup`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{tool} is not installed at {path}: run `make setup`")]
    ToolMissing { tool: String, path: PathBuf },
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{component} did not become ready within {seconds}s: {detail}")]
    NotReady {
        component: String,
        seconds: u64,
        detail: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a description to an I/O error, so a failure names the file or socket involved.
pub trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
}
