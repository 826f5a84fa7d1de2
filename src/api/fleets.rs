//! `/v1/envs/{env}/fleets/{fleet}[/nodes/{node}[/assignment]]`: node heartbeats and what
//! each node should run.

use super::auth::{Authorized, Eval, Read};
use super::openapi::ErrorBody;
use super::{ApiError, AppState, resource};
use crate::fleet::{Heartbeat, NodeView};
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/fleets/{fleet}").get(list))
        .service(resource("/fleets/{fleet}/nodes/{node}").put(heartbeat))
        .service(resource("/fleets/{fleet}/nodes/{node}/assignment").get(assignment));
}

#[derive(Deserialize)]
struct FleetPath {
    fleet: String,
}

#[derive(Deserialize)]
struct NodePath {
    fleet: String,
    node: String,
}

/// What a node should run: release → version.
#[derive(Serialize, utoipa::ToSchema)]
struct Assignments {
    node: String,
    assignments: BTreeMap<String, String>,
}

/// A fleet's nodes.
#[derive(Serialize, utoipa::ToSchema)]
struct FleetNodes {
    fleet: String,
    nodes: Vec<NodeView>,
}

/// A node's heartbeat; answers what it should run.
#[utoipa::path(put, path = "/v1/envs/{env}/fleets/{fleet}/nodes/{node}", tag = "fleets", params(("env" = String, Path, description = "Environment name", example = "production"), ("fleet" = String, Path, description = "Fleet name"), ("node" = String, Path, description = "Node id")),
    request_body = Heartbeat,
    responses(
        (status = 200, description = "The node's assignments", body = Assignments),
        (status = 409, description = "The fleet's state does not allow this now", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody),
    ))]
async fn heartbeat(
    state: web::Data<AppState>,
    auth: Authorized<Eval>,
    path: web::Path<NodePath>,
    body: web::Json<Heartbeat>,
) -> Result<HttpResponse, ApiError> {
    let assignments = state.ramps.fleets().heartbeat(&auth.env, &path.fleet, &path.node, body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(Assignments { node: path.into_inner().node, assignments }))
}

/// What a node should run, without a heartbeat.
#[utoipa::path(get, path = "/v1/envs/{env}/fleets/{fleet}/nodes/{node}/assignment", tag = "fleets",
    params(("env" = String, Path, description = "Environment name", example = "production"), ("fleet" = String, Path, description = "Fleet name"), ("node" = String, Path, description = "Node id")),
    responses((status = 200, description = "The node's assignments", body = Assignments)))]
async fn assignment(
    state: web::Data<AppState>,
    auth: Authorized<Eval>,
    path: web::Path<NodePath>,
) -> Result<HttpResponse, ApiError> {
    let assignments = state.ramps.fleets().assignments(&auth.env, &path.fleet, &path.node);
    Ok(HttpResponse::Ok().json(Assignments { node: path.into_inner().node, assignments }))
}

/// A fleet's nodes and what each should run.
#[utoipa::path(get, path = "/v1/envs/{env}/fleets/{fleet}", tag = "fleets", params(("env" = String, Path, description = "Environment name", example = "production"), ("fleet" = String, Path, description = "Fleet name")),
    responses((status = 200, description = "The nodes", body = FleetNodes)))]
async fn list(
    state: web::Data<AppState>,
    auth: Authorized<Read>,
    path: web::Path<FleetPath>,
) -> Result<HttpResponse, ApiError> {
    let nodes = state.ramps.fleets().list(&auth.env, &path.fleet).await?;
    Ok(HttpResponse::Ok().json(FleetNodes { fleet: path.into_inner().fleet, nodes }))
}
