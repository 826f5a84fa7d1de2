//! The configuration to start from when the service cannot be reached: a
//! [`SnapshotData`] saved earlier (e.g. `curl …/snapshot > cohort-bootstrap.json`, or
//! shipped with the application).

use super::builder::BuildError;
use crate::snapshot::{Snapshot, SnapshotData};
use std::path::PathBuf;

/// Where the bootstrap snapshot comes from.
#[derive(Debug, Clone)]
pub(crate) enum Bootstrap {
    /// A JSON file, read once when the client is built.
    File(PathBuf),
    /// JSON text.
    Json(String),
}

impl Bootstrap {
    /// Reads and compiles the bootstrap. Releases that do not compile are left out
    /// (logged) and evaluate as unknown; unreadable or malformed JSON is an error, as
    /// the application asked for this file explicitly.
    pub(crate) fn load(&self) -> Result<Snapshot, BuildError> {
        let data: SnapshotData = match self {
            Bootstrap::File(path) => {
                let text =
                    std::fs::read(path).map_err(|source| BuildError::BootstrapRead { path: path.clone(), source })?;
                serde_json::from_slice(&text)
                    .map_err(|source| BuildError::BootstrapParse { origin: path.display().to_string(), source })?
            }
            Bootstrap::Json(text) => serde_json::from_str(text)
                .map_err(|source| BuildError::BootstrapParse { origin: "bootstrap JSON".into(), source })?,
        };
        let (snapshot, rejected) = Snapshot::compile_lenient(data);
        for (release, error) in rejected {
            tracing::warn!(%release, %error, "bootstrap release does not compile; it evaluates as unknown");
        }
        Ok(snapshot)
    }
}
