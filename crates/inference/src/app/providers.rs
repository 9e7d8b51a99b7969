//! Provider administration (admins with `ManageModels`).

use std::sync::Arc;

use maas_shared::audit::{ActionContext, AuditLog, NewAuditEvent};
use maas_shared::clock::Clock;
use maas_user::contract::{Permission, Principal};
use serde_json::json;

use crate::domain::errors::{InferenceError, InvalidValue};
use crate::domain::ports::{KeySealer, ProviderRepository};
use crate::domain::provider::{BaseUrl, ModelRoute, Provider, ProviderId, ProviderName};

/// A provider to register.
#[derive(Clone, Debug, Default)]
pub struct NewProvider {
    /// Slug.
    pub name: String,
    /// OpenAI-compatible base URL.
    pub base_url: String,
    /// Upstream key (sealed before storage, never returned).
    pub api_key: Option<String>,
    /// (public name, upstream name) pairs.
    pub models: Vec<(String, Option<String>)>,
}

/// Provider use cases.
#[derive(Clone)]
pub struct ProviderService {
    repo: Arc<dyn ProviderRepository>,
    sealer: Arc<dyn KeySealer>,
    audit: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
    on_change: Arc<dyn Fn() + Send + Sync>,
}

impl ProviderService {
    /// The service; `on_change` runs after every change (to drop route caches).
    #[must_use]
    pub fn new(
        repo: Arc<dyn ProviderRepository>,
        sealer: Arc<dyn KeySealer>,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
        on_change: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            repo,
            sealer,
            audit,
            clock,
            on_change,
        }
    }

    async fn audit(
        &self,
        principal: &Principal,
        ctx: &ActionContext,
        action: &str,
        id: ProviderId,
        details: serde_json::Value,
    ) -> Result<(), InferenceError> {
        let context = ActionContext {
            actor: Some(principal.user_id().as_uuid()),
            ..ctx.clone()
        };
        self.audit
            .record(NewAuditEvent {
                context,
                action: action.to_owned(),
                target_type: "provider".into(),
                target_id: Some(id.to_string()),
                details,
            })
            .await
            .map_err(|e| InferenceError::Unexpected(e.0))?;
        Ok(())
    }

    /// Registers a provider.
    ///
    /// # Errors
    /// Forbidden; invalid input; [`InferenceError::ProviderNameTaken`].
    #[tracing::instrument(name = "providers.create", skip_all, fields(user.id = %principal.user_id()))]
    pub async fn create(
        &self,
        principal: &Principal,
        ctx: &ActionContext,
        req: NewProvider,
    ) -> Result<Provider, InferenceError> {
        principal.require(Permission::ManageModels)?;
        let mut errors = Vec::new();
        let name = ProviderName::parse(&req.name)
            .map_err(|e| errors.push(e))
            .ok();
        let base_url = BaseUrl::parse(&req.base_url)
            .map_err(|e| errors.push(e))
            .ok();
        let mut models = Vec::new();
        for (model, upstream) in &req.models {
            match ModelRoute::parse(model, upstream.as_deref()) {
                Ok(route) if !models.iter().any(|m: &ModelRoute| m.model == route.model) => {
                    models.push(route);
                }
                // The same route twice says nothing more: it is kept once.
                Ok(route) if models.contains(&route) => {}
                Ok(_) => errors.push(InvalidValue::new(
                    "models",
                    "each public model name may appear once (with one upstream model)",
                )),
                Err(e) => errors.push(e),
            }
        }
        if models.is_empty() {
            errors.push(InvalidValue::new(
                "models",
                "at least one model is required",
            ));
        }
        if req.api_key.as_ref().is_some_and(|k| k.len() > 4096) {
            errors.push(InvalidValue::new("api_key", "at most 4096 characters"));
        }
        let (Some(name), Some(base_url)) = (name, base_url) else {
            return Err(InferenceError::Invalid(errors));
        };
        if !errors.is_empty() {
            return Err(InferenceError::Invalid(errors));
        }
        let provider = Provider::register(
            name,
            base_url,
            req.api_key
                .filter(|k| !k.is_empty())
                .map(|k| self.sealer.seal(&k)),
            models,
            self.clock.now(),
        );
        self.repo.insert(&provider).await?;
        (self.on_change)();
        let models: Vec<&str> = provider.models().iter().map(|m| m.model.as_str()).collect();
        self.audit(principal, ctx, "provider.create", provider.id(), json!({"name": provider.name().as_str(), "base_url": provider.base_url().as_str(), "models": models})).await?;
        Ok(provider)
    }

    /// Every provider.
    ///
    /// # Errors
    /// Forbidden.
    pub async fn list(&self, principal: &Principal) -> Result<Vec<Provider>, InferenceError> {
        principal.require(Permission::ManageModels)?;
        self.repo.list().await
    }

    /// Removes a provider; its models stop being served at once on this replica and within
    /// seconds on the others.
    ///
    /// # Errors
    /// Forbidden; [`InferenceError::ProviderNotFound`].
    #[tracing::instrument(name = "providers.delete", skip_all, fields(user.id = %principal.user_id(), provider.id = %id))]
    pub async fn delete(
        &self,
        principal: &Principal,
        ctx: &ActionContext,
        id: ProviderId,
    ) -> Result<(), InferenceError> {
        principal.require(Permission::ManageModels)?;
        if !self.repo.delete(id).await? {
            return Err(InferenceError::ProviderNotFound);
        }
        (self.on_change)();
        self.audit(principal, ctx, "provider.delete", id, json!({}))
            .await
    }
}
