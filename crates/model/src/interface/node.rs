//! The agents' API: join with a token, then heartbeat and report with the node credential.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use maas_shared::http::{ApiError, ValidatedJson};
use uuid::Uuid;

use super::dto::{HeartbeatResponse, JoinRequest, JoinResponse, ReportRequest};
use crate::app::nodes::{Beat, NodeService};
use crate::domain::errors::ModelError;
use crate::domain::ports::NodeSession;
use crate::domain::server::{AgentInfo, ServerId};

/// A node agent authenticated by its credential (`Authorization: Bearer mnc_…`).
#[derive(Clone, Copy, Debug)]
pub struct Node(pub NodeSession);

impl FromRequest for Node {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let credential = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|v| v.trim().to_owned());
        let nodes = req.app_data::<web::Data<NodeService>>().cloned();
        Box::pin(async move {
            let nodes = nodes.ok_or_else(|| {
                reject(ModelError::Unexpected(anyhow::anyhow!(
                    "node service not configured"
                )))
            })?;
            let credential = credential.ok_or_else(|| reject(ModelError::InvalidNodeCredential))?;
            let session = nodes.authenticate(&credential).await.map_err(reject)?;
            Ok(Self(session))
        })
    }
}

fn reject(err: ModelError) -> actix_web::Error {
    let err: ApiError = err.into();
    err.into()
}

fn beat(b: Beat) -> HeartbeatResponse {
    HeartbeatResponse {
        status: b.status.into(),
        heartbeat_interval_secs: b.liveness.heartbeat.as_secs(),
        report_interval_secs: b.liveness.report.as_secs(),
    }
}

/// Join (agents)
///
/// `maas-agent` spends its server's one-time join token and receives its node credential,
/// which it keeps and sends on every later call. Unknown, expired and spent tokens are refused.
#[utoipa::path(post, path = "/agents/join", tag = "agents", request_body = JoinRequest,
    responses((status = 201, body = JoinResponse), (status = 401, description = "`invalid_join_token`"), (status = 422, description = "`validation_failed`")))]
pub async fn join(
    nodes: web::Data<NodeService>,
    body: ValidatedJson<JoinRequest>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let info = AgentInfo::parse(&b.hostname, &b.agent_version, &b.agent_url)
        .map_err(ModelError::Invalid)?;
    let joined = nodes.join(&b.join_token, info).await?;
    Ok(HttpResponse::Created().json(JoinResponse {
        server_id: joined.server.as_uuid(),
        node_credential: joined.credential,
        heartbeat_interval_secs: joined.liveness.heartbeat.as_secs(),
        report_interval_secs: joined.liveness.report.as_secs(),
    }))
}

/// Heartbeat (agents)
///
/// Writes no PostgreSQL row unless the node's status changes (a node that was not ready is
/// ready again). A node may only speak for itself: another server's id is `server_not_found`.
#[utoipa::path(post, path = "/nodes/{server_id}/heartbeat", tag = "agents", params(("server_id" = Uuid, Path)),
    responses((status = 200, body = HeartbeatResponse), (status = 401, description = "`invalid_node_credential`"), (status = 404, description = "`server_not_found`")),
    security(("node_credential" = [])))]
pub async fn heartbeat(
    node: Node,
    nodes: web::Data<NodeService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let answer = nodes
        .heartbeat(node.0, ServerId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(beat(answer)))
}

/// Report resources (agents)
///
/// CPU, memory, disks and GPUs of the node; counts as a heartbeat.
#[utoipa::path(put, path = "/nodes/{server_id}/report", tag = "agents", params(("server_id" = Uuid, Path)), request_body = ReportRequest,
    responses((status = 200, body = HeartbeatResponse), (status = 401, description = "`invalid_node_credential`"), (status = 404, description = "`server_not_found`"), (status = 422, description = "`validation_failed`")),
    security(("node_credential" = [])))]
pub async fn report(
    node: Node,
    nodes: web::Data<NodeService>,
    path: web::Path<Uuid>,
    body: ValidatedJson<ReportRequest>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let info = AgentInfo::parse(&b.hostname, &b.agent_version, &b.agent_url)
        .map_err(ModelError::Invalid)?;
    let answer = nodes
        .report(
            node.0,
            ServerId::from_uuid(path.into_inner()),
            info,
            b.resources.into(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(beat(answer)))
}
