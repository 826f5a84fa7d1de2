//! `cohort export [--env E]`: the environments the token can see (or one), their
//! releases and the plans of their active ramps, as a [`config_file`](super::config_file)
//! document on stdout.

use serde::Deserialize as _;

use super::client::{ClientError, CohortClient};
use super::config_file::{self, ConfigFile, EnvSpec, ServerEnv};

/// Whether the operator named an environment (`--env`, `--env=…` or `COHORT_ENV`).
/// `--env` is a global option with a default, so its value alone cannot tell "all
/// environments" from "production"; export and apply need to.
pub(super) fn env_given() -> bool {
    std::env::var_os("COHORT_ENV").is_some_and(|v| !v.is_empty())
        || std::env::args_os().any(|a| a.to_str().is_some_and(|a| a == "--env" || a.starts_with("--env=")))
}

/// Every environment the token may see, in name order.
pub(super) async fn visible_environments(client: &CohortClient) -> Result<Vec<String>, ClientError> {
    let body = client.list_environments().await?;
    let mut names: Vec<String> = body["environments"]
        .as_array()
        .map(|list| list.iter().filter_map(|e| e["environment"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    names.sort();
    Ok(names)
}

/// `GET /v1/envs/{env}/releases`, read as the file's comparable types.
pub(super) async fn read_environment(client: &CohortClient, env: &str) -> Result<ServerEnv, ClientError> {
    let reply = client.for_env(env).list_releases().await?;
    ServerEnv::deserialize(&reply.body).map_err(|e| ClientError::BadResponse {
        url: client.base().to_owned(),
        status: reqwest::StatusCode::OK,
        cause: e.to_string(),
    })
}

/// Builds the document for `only` (one environment) or every visible one.
pub(super) async fn export(client: &CohortClient, only: Option<&str>) -> Result<String, ClientError> {
    let names = match only {
        Some(env) => vec![env.to_owned()],
        None => visible_environments(client).await?,
    };
    let mut file = ConfigFile {
        format: config_file::FORMAT.to_owned(),
        version: config_file::VERSION,
        environments: Default::default(),
    };
    for name in names {
        let env = read_environment(client, &name).await?;
        let spec = EnvSpec {
            kill_all: env.kill_all,
            kill_reason: if env.kill_all { env.kill_reason.clone() } else { None },
            releases: env.releases.iter().map(|r| (r.key.clone(), r.to_spec())).collect(),
        };
        file.environments.insert(env.environment, spec);
    }
    Ok(config_file::render(&file))
}
