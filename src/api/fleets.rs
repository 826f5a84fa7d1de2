//! `/v1/envs/{env}/fleets/{fleet}[/nodes/{node}[/assignment]]`: node heartbeats and what
//! each node should run.

use super::auth::{Authorized, Eval, Read};
use super::{ApiError, AppState, resource};
use crate::fleet::Heartbeat;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

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

async fn heartbeat(
    state: web::Data<AppState>,
    auth: Authorized<Eval>,
    path: web::Path<NodePath>,
    body: web::Json<Heartbeat>,
) -> Result<HttpResponse, ApiError> {
    let assignments = state.ramps.fleets().heartbeat(&auth.env, &path.fleet, &path.node, body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(json!({"node": path.node, "assignments": assignments})))
}

async fn assignment(
    state: web::Data<AppState>,
    auth: Authorized<Eval>,
    path: web::Path<NodePath>,
) -> Result<HttpResponse, ApiError> {
    let assignments = state.ramps.fleets().assignments(&auth.env, &path.fleet, &path.node);
    Ok(HttpResponse::Ok().json(json!({"node": path.node, "assignments": assignments})))
}

async fn list(
    state: web::Data<AppState>,
    auth: Authorized<Read>,
    path: web::Path<FleetPath>,
) -> Result<HttpResponse, ApiError> {
    let nodes = state.ramps.fleets().list(&auth.env, &path.fleet).await?;
    Ok(HttpResponse::Ok().json(json!({"fleet": path.fleet, "nodes": nodes})))
}
