//! The registry: admins (`ManageModels`) write brands, cards, models and their logos; every
//! signed-in user reads them.

use std::sync::Arc;

use maas_shared::clock::Clock;
use maas_shared::paging::{Page, PageRequest};
use maas_shared::storage::BlobStore;
use maas_user::contract::{Actor, Permission};
use serde_json::json;

use crate::domain::errors::{Entity, InvalidValue, ModelError};
use crate::domain::logo::{ImageKind, LogoName};
use crate::domain::ports::{LogoOwner, RegistryRepository};
use crate::domain::registry::{
    Brand, BrandDraft, BrandId, Card, CardDraft, CardId, Model, ModelDraft, ModelId,
};

/// A stored logo, ready to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logo {
    /// The image.
    pub bytes: Vec<u8>,
    /// Its type, from its bytes.
    pub content_type: &'static str,
}

/// Registry use cases.
#[derive(Clone)]
pub struct RegistryService {
    repo: Arc<dyn RegistryRepository>,
    logos: Arc<dyn BlobStore>,
    clock: Arc<dyn Clock>,
    logo_limit: usize,
}

fn invalid(errors: Vec<InvalidValue>) -> ModelError {
    ModelError::Invalid(errors)
}

impl RegistryService {
    /// The service; logos larger than `logo_limit` bytes are refused.
    #[must_use]
    pub fn new(
        repo: Arc<dyn RegistryRepository>,
        logos: Arc<dyn BlobStore>,
        clock: Arc<dyn Clock>,
        logo_limit: usize,
    ) -> Self {
        Self {
            repo,
            logos,
            clock,
            logo_limit,
        }
    }

    /// The largest logo accepted, in bytes.
    #[must_use]
    pub fn logo_limit(&self) -> usize {
        self.logo_limit
    }

    fn write(actor: &Actor<'_>) -> Result<(), ModelError> {
        Ok(actor.require(Permission::ManageModels)?)
    }

    /// Registers a brand, placed last.
    ///
    /// # Errors
    /// Forbidden; every bad field; [`ModelError::NameTaken`].
    #[tracing::instrument(name = "registry.create_brand", skip_all)]
    pub async fn create_brand(
        &self,
        actor: &Actor<'_>,
        draft: BrandDraft,
    ) -> Result<Brand, ModelError> {
        Self::write(actor)?;
        let spec = draft.parse().map_err(invalid)?;
        let brand = Brand::create(spec, 0, self.clock.now());
        let audit = actor.event(
            "brand.create",
            "brand",
            Some(brand.id().to_string()),
            json!({"name": brand.name()}),
        );
        self.repo.insert_brand(&brand, audit).await
    }

    /// Changes a brand through `change` on its current draft.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`]; every bad field; [`ModelError::NameTaken`].
    pub async fn update_brand(
        &self,
        actor: &Actor<'_>,
        id: BrandId,
        change: impl FnOnce(&mut BrandDraft) + Send,
    ) -> Result<Brand, ModelError> {
        Self::write(actor)?;
        let mut brand = self
            .repo
            .brand(id)
            .await?
            .ok_or(ModelError::NotFound(Entity::Brand))?;
        let mut draft = brand.draft();
        change(&mut draft);
        brand.revise(draft.parse().map_err(invalid)?, self.clock.now());
        let audit = actor.event(
            "brand.update",
            "brand",
            Some(id.to_string()),
            json!({"name": brand.name()}),
        );
        self.repo.update_brand(&brand, audit).await?;
        Ok(brand)
    }

    /// Deletes a brand without cards or servers (and its logo).
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`]; [`ModelError::InUse`].
    pub async fn delete_brand(&self, actor: &Actor<'_>, id: BrandId) -> Result<(), ModelError> {
        Self::write(actor)?;
        let audit = actor.event("brand.delete", "brand", Some(id.to_string()), json!({}));
        let brand = self.repo.delete_brand(id, audit).await?;
        self.drop_logo(brand.logo()).await;
        Ok(())
    }

    /// One brand.
    ///
    /// # Errors
    /// [`ModelError::NotFound`].
    pub async fn brand(&self, id: BrandId) -> Result<Brand, ModelError> {
        self.repo
            .brand(id)
            .await?
            .ok_or(ModelError::NotFound(Entity::Brand))
    }

    /// Every brand, in display order.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn brands(&self) -> Result<Vec<Brand>, ModelError> {
        self.repo.brands().await
    }

    /// Puts the brands in the order of `ids` (each brand exactly once).
    ///
    /// # Errors
    /// Forbidden; [`ModelError::Invalid`] for a repeated, unknown or missing brand.
    pub async fn reorder_brands(
        &self,
        actor: &Actor<'_>,
        ids: &[BrandId],
    ) -> Result<Vec<Brand>, ModelError> {
        Self::write(actor)?;
        let mut seen = std::collections::HashSet::new();
        if !ids.iter().all(|id| seen.insert(*id)) {
            return Err(InvalidValue::new("brand_ids", "each brand may appear once").into());
        }
        let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let audit = actor.event("brand.reorder", "brand", None, json!({"order": list}));
        self.repo.reorder_brands(ids, audit).await?;
        self.repo.brands().await
    }

    /// Registers a card of a brand.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`] for the brand; every bad field;
    /// [`ModelError::NameTaken`].
    pub async fn create_card(
        &self,
        actor: &Actor<'_>,
        brand: BrandId,
        draft: CardDraft,
    ) -> Result<Card, ModelError> {
        Self::write(actor)?;
        let spec = draft.parse().map_err(invalid)?;
        self.brand(brand).await?;
        let card = Card::create(brand, spec, self.clock.now());
        let audit = actor.event(
            "card.create",
            "accelerator_card",
            Some(card.id().to_string()),
            json!({"brand_id": brand, "model": card.spec().model()}),
        );
        self.repo.insert_card(&card, audit).await?;
        Ok(card)
    }

    /// Changes a card through `change` on its current draft.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`]; every bad field; [`ModelError::NameTaken`].
    pub async fn update_card(
        &self,
        actor: &Actor<'_>,
        id: CardId,
        change: impl FnOnce(&mut CardDraft) + Send,
    ) -> Result<Card, ModelError> {
        Self::write(actor)?;
        let mut card = self.card(id).await?;
        let mut draft = card.draft();
        change(&mut draft);
        card.revise(draft.parse().map_err(invalid)?, self.clock.now());
        let audit = actor.event(
            "card.update",
            "accelerator_card",
            Some(id.to_string()),
            json!({"model": card.spec().model()}),
        );
        self.repo.update_card(&card, audit).await?;
        Ok(card)
    }

    /// Deletes a card no server uses.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`]; [`ModelError::InUse`].
    pub async fn delete_card(&self, actor: &Actor<'_>, id: CardId) -> Result<(), ModelError> {
        Self::write(actor)?;
        let audit = actor.event(
            "card.delete",
            "accelerator_card",
            Some(id.to_string()),
            json!({}),
        );
        self.repo.delete_card(id, audit).await
    }

    /// One card.
    ///
    /// # Errors
    /// [`ModelError::NotFound`].
    pub async fn card(&self, id: CardId) -> Result<Card, ModelError> {
        self.repo
            .card(id)
            .await?
            .ok_or(ModelError::NotFound(Entity::Card))
    }

    /// A page of cards, of one brand or all.
    ///
    /// # Errors
    /// [`ModelError::NotFound`] for an unknown brand.
    pub async fn cards(
        &self,
        brand: Option<BrandId>,
        page: &PageRequest,
    ) -> Result<Page<Card>, ModelError> {
        if let Some(brand) = brand {
            self.brand(brand).await?;
        }
        self.repo.cards(brand, page).await
    }

    /// Registers a model.
    ///
    /// # Errors
    /// Forbidden; every bad field; [`ModelError::NameTaken`].
    #[tracing::instrument(name = "registry.create_model", skip_all)]
    pub async fn create_model(
        &self,
        actor: &Actor<'_>,
        draft: ModelDraft,
    ) -> Result<Model, ModelError> {
        Self::write(actor)?;
        let model = Model::create(draft.parse().map_err(invalid)?, self.clock.now());
        let audit = actor.event(
            "model.create",
            "model",
            Some(model.id().to_string()),
            json!({"name": model.spec().name()}),
        );
        self.repo.insert_model(&model, audit).await?;
        Ok(model)
    }

    /// Changes a model through `change` on its current draft.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`]; every bad field; [`ModelError::NameTaken`].
    pub async fn update_model(
        &self,
        actor: &Actor<'_>,
        id: ModelId,
        change: impl FnOnce(&mut ModelDraft) + Send,
    ) -> Result<Model, ModelError> {
        Self::write(actor)?;
        let mut model = self.model(id).await?;
        let mut draft = model.draft();
        change(&mut draft);
        model.revise(draft.parse().map_err(invalid)?, self.clock.now());
        let audit = actor.event(
            "model.update",
            "model",
            Some(id.to_string()),
            json!({"name": model.spec().name()}),
        );
        self.repo.update_model(&model, audit).await?;
        Ok(model)
    }

    /// Deletes a model (and its logo).
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`].
    pub async fn delete_model(&self, actor: &Actor<'_>, id: ModelId) -> Result<(), ModelError> {
        Self::write(actor)?;
        let audit = actor.event("model.delete", "model", Some(id.to_string()), json!({}));
        let model = self.repo.delete_model(id, audit).await?;
        self.drop_logo(model.logo()).await;
        Ok(())
    }

    /// One model.
    ///
    /// # Errors
    /// [`ModelError::NotFound`].
    pub async fn model(&self, id: ModelId) -> Result<Model, ModelError> {
        self.repo
            .model(id)
            .await?
            .ok_or(ModelError::NotFound(Entity::Model))
    }

    /// A page of models.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn models(&self, page: &PageRequest) -> Result<Page<Model>, ModelError> {
        self.repo.models(page).await
    }

    /// How many models are registered.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn count_models(&self) -> Result<u64, ModelError> {
        self.repo.count_models().await
    }

    /// Stores `bytes` as the logo of `owner` (replacing its previous one). The type comes
    /// from the bytes; the stored name is generated.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::TooLarge`]; [`ModelError::UnsupportedType`];
    /// [`ModelError::NotFound`] for the owner.
    #[tracing::instrument(name = "registry.set_logo", skip_all, fields(bytes = bytes.len()))]
    pub async fn set_logo(
        &self,
        actor: &Actor<'_>,
        owner: LogoOwner,
        bytes: &[u8],
    ) -> Result<String, ModelError> {
        Self::write(actor)?;
        if bytes.len() > self.logo_limit {
            return Err(ModelError::TooLarge(self.logo_limit));
        }
        let kind = ImageKind::sniff(bytes)?;
        let name = LogoName::generate(kind);
        self.logos.put(name.as_str(), bytes).await?;
        let audit = logo_event(
            actor,
            owner,
            json!({"logo": name.as_str(), "content_type": kind.content_type(), "bytes": bytes.len()}),
        );
        match self.repo.set_logo(owner, Some(name.as_str()), audit).await {
            Ok(previous) => {
                self.drop_logo(previous.as_deref()).await;
                Ok(name.as_str().to_owned())
            }
            Err(err) => {
                self.drop_logo(Some(name.as_str())).await;
                Err(err)
            }
        }
    }

    /// Removes the logo of `owner`.
    ///
    /// # Errors
    /// Forbidden; [`ModelError::NotFound`] for the owner.
    pub async fn remove_logo(&self, actor: &Actor<'_>, owner: LogoOwner) -> Result<(), ModelError> {
        Self::write(actor)?;
        let audit = logo_event(actor, owner, json!({"logo": null}));
        let previous = self.repo.set_logo(owner, None, audit).await?;
        self.drop_logo(previous.as_deref()).await;
        Ok(())
    }

    /// A stored logo by its name.
    ///
    /// # Errors
    /// [`ModelError::NotFound`] for a name that is not a stored logo.
    pub async fn logo(&self, name: &str) -> Result<Logo, ModelError> {
        let name = LogoName::parse(name).ok_or(ModelError::NotFound(Entity::Logo))?;
        let bytes = self
            .logos
            .get(name.as_str())
            .await?
            .ok_or(ModelError::NotFound(Entity::Logo))?;
        let kind = ImageKind::sniff(&bytes)
            .map_err(|_| anyhow::anyhow!("stored logo {} is not an image", name.as_str()))?;
        Ok(Logo {
            bytes,
            content_type: kind.content_type(),
        })
    }

    /// Deletes a replaced logo's file unless something still shows it; a failure only leaves
    /// an unreferenced file behind.
    async fn drop_logo(&self, name: Option<&str>) {
        let Some(name) = name else { return };
        match self.repo.logo_in_use(name).await {
            Ok(false) => {
                if let Err(err) = self.logos.delete(name).await {
                    tracing::warn!(error = %err, logo = name, "could not delete a replaced logo");
                }
            }
            Ok(true) => {}
            Err(err) => {
                tracing::warn!(error = %err, logo = name, "could not check a replaced logo")
            }
        }
    }
}

fn logo_event(
    actor: &Actor<'_>,
    owner: LogoOwner,
    details: serde_json::Value,
) -> maas_shared::audit::NewAuditEvent {
    match owner {
        LogoOwner::Brand(id) => actor.event("brand.logo", "brand", Some(id.to_string()), details),
        LogoOwner::Model(id) => actor.event("model.logo", "model", Some(id.to_string()), details),
    }
}
