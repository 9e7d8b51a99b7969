//! App management: create and change drafts, publish, roll back, keys, logs and usage.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use maas_inference::contract::ChatPort;
use maas_knowledge::contract::{BaseId, Retriever};
use maas_shared::clock::Clock;
use maas_shared::paging::{Page, PageRequest};
use maas_user::contract::{
    Actor, ApiKey, ApiKeyId, AppKeys, IssuedKey, KeyLimits, Permission, Principal, Principals,
    UserId,
};
use serde_json::json;

use crate::domain::app::{
    App, AppId, AppVersion, parse_description, parse_end_user, parse_name, parse_note,
};
use crate::domain::config::{AppConfig, ConfigDraft};
use crate::domain::errors::{AppsError, bad};
use crate::domain::message::{AppMessage, UsageDay};
use crate::domain::ports::{AppRepository, MessageFilter, MessageLog};

/// A new app.
#[derive(Clone, Debug, Default)]
pub struct NewApp {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Its first draft (a model is required).
    pub config: ConfigDraft,
}

/// A change of an app: each field given replaces the current one.
#[derive(Clone, Debug, Default)]
pub struct AppPatch {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Draft changes.
    pub config: ConfigDraft,
}

/// The ports of app management.
#[derive(Clone)]
pub struct AppServicePorts {
    /// Apps and versions.
    pub apps: Arc<dyn AppRepository>,
    /// The call log (for the owner's views).
    pub messages: Arc<dyn MessageLog>,
    /// Checks that an app's bases are its owner's.
    pub retriever: Arc<dyn Retriever>,
    /// Checks that an app's model is served before it is published.
    pub chat: Arc<dyn ChatPort>,
    /// App keys (the identity context).
    pub keys: Arc<dyn AppKeys>,
    /// The owner's principal, for the checks above.
    pub principals: Arc<dyn Principals>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// App management use cases.
#[derive(Clone)]
pub struct AppService {
    ports: AppServicePorts,
}

/// Days a usage summary may span.
pub const MAX_USAGE_DAYS: i64 = 366;

impl AppService {
    /// The service.
    #[must_use]
    pub fn new(ports: AppServicePorts) -> Self {
        Self { ports }
    }

    /// The app `id` if `actor` may manage it (someone else's is not found).
    ///
    /// # Errors
    /// [`AppsError::NotFound`]; a missing permission.
    pub async fn get(&self, actor: &Actor<'_>, id: AppId) -> Result<App, AppsError> {
        actor.require(Permission::ManageApps)?;
        let app = self.ports.apps.get(id).await?.ok_or(AppsError::NotFound)?;
        match actor.user_id() {
            Some(me) if me != app.owner => Err(AppsError::NotFound),
            Some(_) | None => Ok(app),
        }
    }

    async fn owner_principal(&self, owner: UserId) -> Result<Arc<Principal>, AppsError> {
        self.ports
            .principals
            .of_user(owner)
            .await?
            .ok_or(AppsError::NotFound)
    }

    /// Every base of `config` must be the owner's.
    async fn check_bases(&self, owner: UserId, config: &AppConfig) -> Result<(), AppsError> {
        if config.knowledge.bases.is_empty() {
            return Ok(());
        }
        let principal = self.owner_principal(owner).await?;
        let mut missing = Vec::new();
        for (i, base) in config.knowledge.bases.iter().enumerate() {
            if !self
                .ports
                .retriever
                .has_base(&principal, BaseId::from_uuid(*base))
                .await?
            {
                missing.push(bad(
                    format!("knowledge.bases[{i}]"),
                    "knowledge_base_not_found",
                    "not one of your knowledge bases",
                ));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(AppsError::Invalid(missing))
        }
    }

    /// Creates an app of `owner` as a draft.
    ///
    /// # Errors
    /// Every bad field; [`AppsError::NameTaken`].
    #[tracing::instrument(name = "apps.create", skip_all, fields(user.id = %owner))]
    pub async fn create(
        &self,
        actor: &Actor<'_>,
        owner: UserId,
        new: NewApp,
    ) -> Result<App, AppsError> {
        actor.require(Permission::ManageApps)?;
        if actor.user_id().is_some_and(|me| me != owner) {
            return Err(AppsError::NotFound);
        }
        let mut bad_fields = Vec::new();
        let name = parse_name(&new.name)
            .map_err(|rule| bad_fields.push(bad("name", "invalid", rule)))
            .ok();
        let description = parse_description(new.description.as_deref().unwrap_or(""))
            .map_err(|rule| bad_fields.push(bad("description", "invalid", rule)))
            .ok();
        let config = AppConfig::apply(None, new.config)
            .map_err(|e| bad_fields.extend(e))
            .ok();
        let (Some(name), Some(description), Some(config)) = (name, description, config) else {
            return Err(AppsError::Invalid(bad_fields));
        };
        self.check_bases(owner, &config).await?;
        let now = self.ports.clock.now();
        let app = App {
            id: AppId::new(),
            owner,
            name,
            description,
            draft: config,
            published_version: None,
            created_at: now,
            updated_at: now,
        };
        let audit = actor.event(
            "app.create",
            "app",
            Some(app.id.to_string()),
            json!({"name": app.name, "model": app.draft.model}),
        );
        self.ports.apps.insert(&app, audit).await?;
        Ok(app)
    }

    /// The apps of `owner`.
    ///
    /// # Errors
    /// A missing permission; storage failure.
    pub async fn list(
        &self,
        actor: &Actor<'_>,
        owner: UserId,
        page: &PageRequest,
    ) -> Result<Page<App>, AppsError> {
        actor.require(Permission::ManageApps)?;
        if actor.user_id().is_some_and(|me| me != owner) {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        self.ports.apps.list(owner, page).await
    }

    /// Changes an app's name, description or draft; the published version is untouched.
    ///
    /// # Errors
    /// Not found; every bad field; [`AppsError::NameTaken`].
    #[tracing::instrument(name = "apps.update", skip_all, fields(app.id = %id))]
    pub async fn update(
        &self,
        actor: &Actor<'_>,
        id: AppId,
        patch: AppPatch,
    ) -> Result<App, AppsError> {
        let mut app = self.get(actor, id).await?;
        let mut bad_fields = Vec::new();
        if let Some(name) = &patch.name {
            match parse_name(name) {
                Ok(name) => app.name = name,
                Err(rule) => bad_fields.push(bad("name", "invalid", rule)),
            }
        }
        if let Some(description) = &patch.description {
            match parse_description(description) {
                Ok(d) => app.description = d,
                Err(rule) => bad_fields.push(bad("description", "invalid", rule)),
            }
        }
        let bases_changed = patch
            .config
            .knowledge
            .as_ref()
            .is_some_and(|k| k.bases.is_some());
        match AppConfig::apply(Some(&app.draft), patch.config) {
            Ok(config) => app.draft = config,
            Err(e) => bad_fields.extend(e),
        }
        if !bad_fields.is_empty() {
            return Err(AppsError::Invalid(bad_fields));
        }
        if bases_changed {
            self.check_bases(app.owner, &app.draft).await?;
        }
        app.updated_at = self.ports.clock.now();
        let audit = actor.event(
            "app.update",
            "app",
            Some(id.to_string()),
            json!({"name": app.name}),
        );
        self.ports.apps.update(&app, audit).await?;
        Ok(app)
    }

    /// Deletes an app: its keys stop working, its versions, end users and log go.
    ///
    /// # Errors
    /// Not found.
    #[tracing::instrument(name = "apps.delete", skip_all, fields(app.id = %id))]
    pub async fn delete(&self, actor: &Actor<'_>, id: AppId) -> Result<(), AppsError> {
        let app = self.get(actor, id).await?;
        let revoked = self
            .ports
            .keys
            .revoke_all(*actor, app.owner, id.as_uuid())
            .await?;
        let audit = actor.event(
            "app.delete",
            "app",
            Some(id.to_string()),
            json!({"name": app.name, "keys_revoked": revoked}),
        );
        if self
            .ports
            .apps
            .delete(id, audit, self.ports.clock.now())
            .await?
        {
            Ok(())
        } else {
            Err(AppsError::NotFound)
        }
    }

    async fn check_publishable(&self, app: &App, config: &AppConfig) -> Result<(), AppsError> {
        let principal = self.owner_principal(app.owner).await?;
        if !self
            .ports
            .chat
            .serves_chat(&principal, &config.model)
            .await?
        {
            return Err(AppsError::ModelNotServed(config.model.clone()));
        }
        self.check_bases(app.owner, config).await
    }

    fn published_by(actor: &Actor<'_>) -> Option<UserId> {
        actor.user_id()
    }

    /// Publishes the draft as the next version; the endpoint serves it at once.
    ///
    /// # Errors
    /// Not found; the model is not served or a base is gone (422); a bad note.
    #[tracing::instrument(name = "apps.publish", skip_all, fields(app.id = %id))]
    pub async fn publish(
        &self,
        actor: &Actor<'_>,
        id: AppId,
        note: Option<&str>,
    ) -> Result<AppVersion, AppsError> {
        let app = self.get(actor, id).await?;
        let note = parse_note(note)
            .map_err(|rule| AppsError::Invalid(vec![bad("note", "invalid", rule)]))?;
        self.check_publishable(&app, &app.draft).await?;
        let version = AppVersion {
            app_id: id,
            number: 0,
            config: app.draft.clone(),
            note,
            rollback_of: None,
            published_by: Self::published_by(actor),
            published_at: self.ports.clock.now(),
        };
        let audit = actor.event(
            "app.publish",
            "app",
            Some(id.to_string()),
            json!({"model": app.draft.model}),
        );
        self.ports.apps.publish(version, audit).await
    }

    /// Publishes again the configuration of an earlier version, as a new version that names
    /// it (the history keeps every step); the draft is left as it is.
    ///
    /// # Errors
    /// Not found; [`AppsError::VersionNotFound`]; the model is not served any more.
    #[tracing::instrument(name = "apps.rollback", skip_all, fields(app.id = %id, version = to))]
    pub async fn rollback(
        &self,
        actor: &Actor<'_>,
        id: AppId,
        to: u32,
        note: Option<&str>,
    ) -> Result<AppVersion, AppsError> {
        let app = self.get(actor, id).await?;
        let note = parse_note(note)
            .map_err(|rule| AppsError::Invalid(vec![bad("note", "invalid", rule)]))?;
        let earlier = self
            .ports
            .apps
            .version(id, to)
            .await?
            .ok_or(AppsError::VersionNotFound)?;
        self.check_publishable(&app, &earlier.config).await?;
        let version = AppVersion {
            app_id: id,
            number: 0,
            config: earlier.config,
            note,
            rollback_of: Some(to),
            published_by: Self::published_by(actor),
            published_at: self.ports.clock.now(),
        };
        let audit = actor.event(
            "app.rollback",
            "app",
            Some(id.to_string()),
            json!({"to": to}),
        );
        self.ports.apps.publish(version, audit).await
    }

    /// Takes the app off its endpoint (app keys get 404) until it is published again.
    ///
    /// # Errors
    /// Not found.
    pub async fn unpublish(&self, actor: &Actor<'_>, id: AppId) -> Result<App, AppsError> {
        let mut app = self.get(actor, id).await?;
        app.published_version = None;
        app.updated_at = self.ports.clock.now();
        let audit = actor.event("app.unpublish", "app", Some(id.to_string()), json!({}));
        self.ports.apps.update(&app, audit).await?;
        Ok(app)
    }

    /// The app's versions, newest first.
    ///
    /// # Errors
    /// Not found.
    pub async fn versions(
        &self,
        actor: &Actor<'_>,
        id: AppId,
    ) -> Result<Vec<AppVersion>, AppsError> {
        self.get(actor, id).await?;
        self.ports.apps.versions(id).await
    }

    /// One version.
    ///
    /// # Errors
    /// Not found.
    pub async fn version(
        &self,
        actor: &Actor<'_>,
        id: AppId,
        number: u32,
    ) -> Result<AppVersion, AppsError> {
        self.get(actor, id).await?;
        self.ports
            .apps
            .version(id, number)
            .await?
            .ok_or(AppsError::VersionNotFound)
    }

    /// Issues an app key (its secret is shown once).
    ///
    /// # Errors
    /// Not found; invalid name, limits or expiry.
    pub async fn create_key(
        &self,
        actor: &Actor<'_>,
        id: AppId,
        name: &str,
        limits: KeyLimits,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<IssuedKey, AppsError> {
        let app = self.get(actor, id).await?;
        Ok(self
            .ports
            .keys
            .issue(*actor, app.owner, id.as_uuid(), name, limits, expires_at)
            .await?)
    }

    /// The app's keys (prefix, limits, last use; never secrets).
    ///
    /// # Errors
    /// Not found.
    pub async fn keys(&self, actor: &Actor<'_>, id: AppId) -> Result<Vec<ApiKey>, AppsError> {
        let app = self.get(actor, id).await?;
        Ok(self
            .ports
            .keys
            .list(*actor, app.owner, id.as_uuid())
            .await?)
    }

    /// Revokes one of the app's keys.
    ///
    /// # Errors
    /// Not found (also a key of another app).
    pub async fn revoke_key(
        &self,
        actor: &Actor<'_>,
        id: AppId,
        key: ApiKeyId,
    ) -> Result<ApiKey, AppsError> {
        let app = self.get(actor, id).await?;
        Ok(self
            .ports
            .keys
            .revoke(*actor, app.owner, id.as_uuid(), key)
            .await?)
    }

    /// The app's call log, newest first.
    ///
    /// # Errors
    /// Not found; an end-user filter that no caller could have sent.
    pub async fn messages(
        &self,
        actor: &Actor<'_>,
        id: AppId,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> Result<Page<AppMessage>, AppsError> {
        self.get(actor, id).await?;
        if let Some(user) = &filter.end_user
            && let Err(rule) = parse_end_user(user)
        {
            return Err(AppsError::Invalid(vec![bad("user", "invalid", rule)]));
        }
        self.ports.messages.list(id, filter, page).await
    }

    /// The app's use by day within `[from, to)` (default: the last 30 days).
    ///
    /// # Errors
    /// Not found; a range that is empty or longer than [`MAX_USAGE_DAYS`].
    pub async fn usage(
        &self,
        actor: &Actor<'_>,
        id: AppId,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<UsageDay>, AppsError> {
        self.get(actor, id).await?;
        let to = to.unwrap_or_else(|| self.ports.clock.now());
        let from = from.unwrap_or(to - chrono::Duration::days(30));
        if from >= to {
            return Err(AppsError::Invalid(vec![bad(
                "from",
                "range",
                "must be before `to`",
            )]));
        }
        if to - from > chrono::Duration::days(MAX_USAGE_DAYS) {
            return Err(AppsError::Invalid(vec![bad(
                "from",
                "range",
                format!("at most {MAX_USAGE_DAYS} days before `to`"),
            )]));
        }
        self.ports.messages.usage(id, from, to).await
    }
}
