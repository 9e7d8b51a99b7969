//! Embeddings for other contexts (a knowledge base's ingestion and search): the same metered
//! call as `/v1/embeddings`, answered as vectors.

use std::sync::Arc;

use async_trait::async_trait;
use maas_user::contract::Principal;
use serde::Deserialize;
use serde_json::json;

use super::gateway::{Call, Endpoint, GatewayService, ProxiedBody};
use crate::domain::errors::InferenceError;

/// Vectors of one call, in the order of its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    /// One per input.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the model counted (charged to the principal).
    pub tokens: u64,
}

/// Embeds text through the gateway, metered to the principal and under its limits. The
/// contract other contexts depend on.
#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// Embeds `inputs` (at least one) with `model`.
    ///
    /// # Errors
    /// [`InferenceError::ModelNotFound`]; rate limit and quota refusals (with their retry
    /// time); [`InferenceError::UpstreamUnavailable`] when no upstream answered or one answered
    /// an error or malformed vectors.
    async fn embed(
        &self,
        principal: Arc<Principal>,
        model: &str,
        inputs: Vec<String>,
    ) -> Result<Embeddings, InferenceError>;

    /// Whether `model` is served to `principal`.
    ///
    /// # Errors
    /// Storage failures.
    async fn serves(&self, principal: &Principal, model: &str) -> Result<bool, InferenceError>;
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Item>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
}

#[async_trait]
impl Embedder for GatewayService {
    async fn embed(
        &self,
        principal: Arc<Principal>,
        model: &str,
        inputs: Vec<String>,
    ) -> Result<Embeddings, InferenceError> {
        let n = inputs.len();
        let call = Call::parse(
            Endpoint::Embeddings,
            json!({"model": model, "input": inputs, "encoding_format": "float"}),
        )?;
        let proxied = self.proxy(principal, call).await?;
        let ProxiedBody::Full(body) = proxied.body else {
            return Err(InferenceError::UpstreamUnavailable(
                "the embedding upstream answered a stream".into(),
            ));
        };
        if !(200..300).contains(&proxied.status) {
            let detail: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            return Err(InferenceError::UpstreamUnavailable(format!(
                "the embedding upstream answered {}: {detail}",
                proxied.status
            )));
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            InferenceError::UpstreamUnavailable(format!("malformed embeddings answer: {e}"))
        })?;
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; n];
        for item in answer.data {
            if let Some(slot) = vectors.get_mut(item.index) {
                *slot = Some(item.embedding);
            }
        }
        let vectors: Option<Vec<Vec<f32>>> = vectors.into_iter().collect();
        let vectors = vectors.filter(|v| {
            let dims = v.first().map_or(0, Vec::len);
            dims > 0
                && v.iter()
                    .all(|x| x.len() == dims && x.iter().all(|f| f.is_finite()))
        });
        let Some(vectors) = vectors else {
            return Err(InferenceError::UpstreamUnavailable(format!(
                "the embedding upstream did not answer {n} vectors of one dimension"
            )));
        };
        Ok(Embeddings {
            vectors,
            tokens: answer.usage.map_or(0, |u| u.prompt_tokens),
        })
    }

    async fn serves(&self, principal: &Principal, model: &str) -> Result<bool, InferenceError> {
        Ok(self.models(principal).await?.iter().any(|m| m.id == model))
    }
}
