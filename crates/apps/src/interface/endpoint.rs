//! An app's OpenAI-shaped endpoint, called with one of its keys: chat completions (streamed
//! and not) with citations, the app's public face, and end users' feedback.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt as _};
use maas_inference::contract::ProxiedBody;
use maas_shared::http::OpenAiError;
use maas_user::contract::{AppKeyCaller, limit_headers};
use serde_json::{Value, json};
use uuid::Uuid;

use super::dto::{AppInfo, CitationView, FeedbackRequest, VariableView};
use crate::app::endpoint::{EndpointAnswer, EndpointService};
use crate::domain::app::AppId;

/// Create a chat completion with the app
///
/// OpenAI's chat request and answer (any OpenAI SDK works with `base_url` =
/// `…/v1/apps/{app_id}`). The app's published version answers: its system prompt with the
/// call's `variables`, the passages its knowledge bases hold for the question, the end user's
/// conversation when `user` names one (send only the new message then), and the caller's
/// `user`/`assistant` messages. `model` is ignored (the app's model answers). The answer
/// carries `citations` and `app_message_id` (also in the `x-app-message-id` header); a stream
/// sends them as a final `event: citations` before `data: [DONE]`: a chunk with no `choices`
/// (as the usage chunk), which OpenAI SDKs skip or hand over as an empty chunk.
#[utoipa::path(post, path = "/apps/{app_id}/chat/completions", tag = "apps-endpoint", params(("app_id" = Uuid, Path)), request_body = Object,
    responses((status = 200, description = "OpenAI chat completion with `citations` (JSON or text/event-stream)"),
        (status = 400, description = "`unsupported_parameter` (tools, functions, … are not taken)"),
        (status = 403, description = "`app_key_required`: call with one of the app's keys"),
        (status = 404, description = "`app_not_found`: another app's key, or the app is not published"),
        (status = 422, description = "`validation_failed` (messages), `invalid_variables` (each missing or mistyped variable)"),
        (status = 429, description = "`rate_limited` (the key's or the owner's limits) or `quota_exceeded` (the owner's)"),
        (status = 503, description = "`upstream_unavailable`")),
    security(("api_key" = [])))]
pub async fn chat_completions(
    key: AppKeyCaller,
    service: web::Data<EndpointService>,
    path: web::Path<Uuid>,
    body: web::Json<Value>,
) -> Result<HttpResponse, OpenAiError> {
    let answer = service
        .chat(
            key.0,
            AppId::from_uuid(path.into_inner()),
            body.into_inner(),
        )
        .await?;
    Ok(respond(answer))
}

fn respond(answer: EndpointAnswer) -> HttpResponse {
    let EndpointAnswer {
        proxied,
        message_id,
        version,
        citations,
        model,
        created,
    } = answer;
    let citations: Vec<CitationView> = citations.iter().map(CitationView::from).collect();
    let status = StatusCode::from_u16(proxied.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = HttpResponse::build(status);
    builder.insert_header(("x-app-message-id", message_id.to_string()));
    builder.insert_header(("x-app-version", version.to_string()));
    if let Some(limit) = &proxied.limit {
        for (name, value) in limit_headers(limit) {
            builder.insert_header((name, value));
        }
    }
    match proxied.body {
        ProxiedBody::Full(bytes) => {
            builder.insert_header(("content-type", proxied.content_type.as_str()));
            if !status.is_success() {
                return builder.body(bytes);
            }
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(mut answer)) => {
                    answer.insert("citations".into(), json!(citations));
                    answer.insert("app_message_id".into(), json!(message_id));
                    builder.json(Value::Object(answer))
                }
                _ => builder.body(bytes),
            }
        }
        ProxiedBody::Stream(stream) => {
            // Shaped as a chunk without choices (like the usage chunk), so that an SDK that
            // yields every event hands it over as one more chunk to skip.
            let event = json!({"id": format!("app-citations-{message_id}"), "object": "chat.completion.chunk",
                "created": created, "model": model, "choices": [],
                "app_message_id": message_id, "version": version, "citations": citations});
            builder
                .insert_header(("content-type", proxied.content_type.as_str()))
                .insert_header(("cache-control", "no-cache"))
                .insert_header(("x-accel-buffering", "no"));
            builder.streaming(WithCitations {
                inner: stream,
                event: Some(Bytes::from(format!("event: citations\ndata: {event}\n\n"))),
                held: None,
            })
        }
    }
}

/// A passed-through stream with the citations event put in front of its `[DONE]` event.
struct WithCitations {
    inner: BoxStream<'static, Result<Bytes, Infallible>>,
    event: Option<Bytes>,
    held: Option<Bytes>,
}

fn is_done(event: &[u8]) -> bool {
    event.len() <= 64 && event.starts_with(b"data:") && event.windows(6).any(|w| w == b"[DONE]")
}

impl Stream for WithCitations {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(held) = self.held.take() {
            return Poll::Ready(Some(Ok(held)));
        }
        let polled = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(Some(Ok(bytes))) = &polled
            && is_done(bytes)
            && let Some(event) = self.event.take()
        {
            self.held = Some(bytes.clone());
            return Poll::Ready(Some(Ok(event)));
        }
        polled
    }
}

/// The app, for its end users' clients
///
/// Name, description, opening message, suggested questions and the variables a call gives.
#[utoipa::path(get, path = "/apps/{app_id}", tag = "apps-endpoint", params(("app_id" = Uuid, Path)),
    responses((status = 200, body = AppInfo), (status = 403, description = "`app_key_required`"), (status = 404, description = "`app_not_found`")),
    security(("api_key" = [])))]
pub async fn app_info(
    key: AppKeyCaller,
    service: web::Data<EndpointService>,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, OpenAiError> {
    let (app, version, config) = service
        .published(&key.0, AppId::from_uuid(path.into_inner()))
        .await?;
    Ok(HttpResponse::Ok().json(AppInfo {
        id: app.id.as_uuid(),
        name: app.name,
        description: app.description,
        version,
        opening_message: config.opening_message,
        suggested_questions: config.suggested_questions,
        variables: config.variables.iter().map(VariableView::from).collect(),
    }))
}

/// Rate an answer
///
/// An end user's thumbs up or down (and a comment) on one answer, by its `app_message_id`;
/// an answer given to a named end user is rated with that `user` only.
#[utoipa::path(post, path = "/apps/{app_id}/messages/{message_id}/feedback", tag = "apps-endpoint",
    params(("app_id" = Uuid, Path), ("message_id" = Uuid, Path)), request_body = FeedbackRequest,
    responses((status = 204), (status = 403, description = "`app_key_required`"),
        (status = 404, description = "`app_not_found`, `app_message_not_found`"), (status = 422, description = "`validation_failed`")),
    security(("api_key" = [])))]
pub async fn feedback(
    key: AppKeyCaller,
    service: web::Data<EndpointService>,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Json<FeedbackRequest>,
) -> Result<HttpResponse, OpenAiError> {
    let (id, message) = path.into_inner();
    let b = body.into_inner();
    service
        .feedback(
            &key.0,
            AppId::from_uuid(id),
            message,
            &b.rating,
            b.comment.as_deref(),
            b.user.as_deref(),
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
