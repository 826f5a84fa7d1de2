//! Polling `GET /v1/envs/{env}/snapshot` with `If-None-Match`: an unchanged
//! configuration costs a 304 and no body.

use super::sync::{SyncError, SyncTask};
use reqwest::StatusCode;
use reqwest::header::IF_NONE_MATCH;

impl SyncTask {
    /// Fetches the snapshot if it changed; tells whether a new one is in use.
    pub(super) async fn poll_once(&mut self) -> Result<bool, SyncError> {
        let mut request = self.http.get(self.urls.snapshot.clone()).timeout(self.settings.request_timeout);
        if let Some(revision) = self.served {
            request = request.header(IF_NONE_MATCH, format!("\"{revision}\""));
        }
        let response = request.send().await?;
        match response.status() {
            StatusCode::NOT_MODIFIED => {
                self.shared.freshness().heard();
                Ok(false)
            }
            StatusCode::OK => {
                let body = response.bytes().await?;
                let data =
                    serde_json::from_slice(&body).map_err(|source| SyncError::Json { what: "snapshot", source })?;
                self.install(data);
                self.shared.freshness().heard();
                Ok(true)
            }
            status => Err(SyncError::Status(status)),
        }
    }
}
