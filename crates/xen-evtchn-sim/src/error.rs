//! The simulator's error type.

/// Why a simulation could not run to the end. (Lost events are not errors: they are counted
/// in the report, which says whether the run passed.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The scenario cannot be run.
    #[error("invalid scenario: {0}")]
    Scenario(String),
    /// The hypervisor refused an operation the simulation needed.
    #[error("{context}: {source}")]
    Hypervisor {
        /// What the simulation was doing.
        context: String,
        /// The library's error.
        source: xen_evtchn::Error,
    },
    /// Writing an output file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl SimError {
    /// A hypervisor error while doing `context`.
    pub fn hypervisor(context: impl Into<String>, source: xen_evtchn::Error) -> Self {
        SimError::Hypervisor {
            context: context.into(),
            source,
        }
    }
}
