//! Brands, cards and models in PostgreSQL; every write commits with its audit event.

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_shared::audit::NewAuditEvent;
use maas_shared::clock::Clock;
use maas_shared::paging::{Page, PageRequest};
use sea_orm::{ConnectionTrait as _, DatabaseConnection, FromQueryResult, TransactionTrait as _};
use std::sync::Arc;
use uuid::Uuid;

use super::pg::{commit, corrupt, exec, page_values, stmt};
use crate::domain::errors::{Entity, InvalidValue, ModelError};
use crate::domain::ports::{LogoOwner, RegistryRepository};
use crate::domain::registry::{
    Brand, BrandId, BrandSpec, Capability, Card, CardId, CardSpec, Engine, Model, ModelId,
    ModelSource, ModelSpec,
};

/// The registry in PostgreSQL.
#[derive(Clone)]
pub struct PgRegistry {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
}

impl PgRegistry {
    /// An adapter over the pool.
    #[must_use]
    pub fn new(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }
}

#[derive(Debug, FromQueryResult)]
struct BrandRow {
    id: Uuid,
    name: String,
    description: String,
    logo: Option<String>,
    sort_order: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<BrandRow> for Brand {
    fn from(r: BrandRow) -> Self {
        Self {
            id: BrandId::from_uuid(r.id),
            spec: BrandSpec {
                name: r.name,
                description: r.description,
            },
            logo: r.logo,
            sort_order: r.sort_order,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, FromQueryResult)]
struct CardRow {
    id: Uuid,
    brand_id: Uuid,
    model: String,
    memory_gib: i32,
    fp8_tflops: Option<f64>,
    int8_tops: Option<f64>,
    bf16_tflops: Option<f64>,
    fp16_tflops: Option<f64>,
    fp32_tflops: Option<f64>,
    interconnect_gbps: Option<f64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<CardRow> for Card {
    fn from(r: CardRow) -> Self {
        Self {
            id: CardId::from_uuid(r.id),
            brand_id: BrandId::from_uuid(r.brand_id),
            spec: CardSpec {
                model: r.model,
                memory_gib: r.memory_gib,
                fp8_tflops: r.fp8_tflops,
                int8_tops: r.int8_tops,
                bf16_tflops: r.bf16_tflops,
                fp16_tflops: r.fp16_tflops,
                fp32_tflops: r.fp32_tflops,
                interconnect_gbps: r.interconnect_gbps,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, FromQueryResult)]
struct ModelRow {
    id: Uuid,
    name: String,
    family: String,
    parameters_b: Option<f64>,
    context_length: i32,
    capabilities: serde_json::Value,
    quantization: Option<String>,
    source: serde_json::Value,
    default_engine: String,
    licence: Option<String>,
    logo: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<ModelRow> for Model {
    type Error = ModelError;

    fn try_from(r: ModelRow) -> Result<Self, ModelError> {
        let names: Vec<String> = serde_json::from_value(r.capabilities)
            .map_err(|_| corrupt("models", r.id, "capability list"))?;
        let capabilities = names
            .iter()
            .map(|n| Capability::from_name(n).ok_or_else(|| corrupt("models", r.id, "capability")))
            .collect::<Result<_, _>>()?;
        let source: ModelSource =
            serde_json::from_value(r.source).map_err(|_| corrupt("models", r.id, "source"))?;
        let default_engine = Engine::from_name(&r.default_engine)
            .ok_or_else(|| corrupt("models", r.id, "engine"))?;
        Ok(Self {
            id: ModelId::from_uuid(r.id),
            spec: ModelSpec {
                name: r.name,
                family: r.family,
                parameters_b: r.parameters_b,
                context_length: r.context_length,
                capabilities,
                quantization: r.quantization,
                source,
                default_engine,
                licence: r.licence,
            },
            logo: r.logo,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const BRAND_COLUMNS: &str = "id, name, description, logo, sort_order, created_at, updated_at";
const CARD_COLUMNS: &str = "id, brand_id, model, memory_gib, fp8_tflops, int8_tops, bf16_tflops, fp16_tflops, fp32_tflops, interconnect_gbps, created_at, updated_at";
const MODEL_COLUMNS: &str = "id, name, family, parameters_b, context_length, capabilities, quantization, source, default_engine, licence, logo, created_at, updated_at";

fn model_values(m: &Model) -> Result<Vec<sea_orm::Value>, ModelError> {
    let s = &m.spec;
    let capabilities: Vec<&str> = s.capabilities.iter().map(|c| c.as_str()).collect();
    let source = serde_json::to_value(&s.source).context("encoding a model source")?;
    Ok(vec![
        m.id.as_uuid().into(),
        s.name.clone().into(),
        s.family.clone().into(),
        s.parameters_b.into(),
        s.context_length.into(),
        serde_json::json!(capabilities).into(),
        s.quantization.clone().into(),
        source.into(),
        s.default_engine.as_str().into(),
        s.licence.clone().into(),
        m.updated_at.into(),
    ])
}

fn card_values(c: &Card) -> Vec<sea_orm::Value> {
    let s = &c.spec;
    vec![
        c.id.as_uuid().into(),
        s.model.clone().into(),
        s.memory_gib.into(),
        s.fp8_tflops.into(),
        s.int8_tops.into(),
        s.bf16_tflops.into(),
        s.fp16_tflops.into(),
        s.fp32_tflops.into(),
        s.interconnect_gbps.into(),
        c.updated_at.into(),
    ]
}

fn not_found_unless(affected: u64, entity: Entity) -> Result<(), ModelError> {
    if affected == 0 {
        Err(ModelError::NotFound(entity))
    } else {
        Ok(())
    }
}

#[async_trait]
impl RegistryRepository for PgRegistry {
    async fn insert_brand(&self, brand: &Brand, audit: NewAuditEvent) -> Result<Brand, ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let row = BrandRow::find_by_statement(stmt(
            &format!(
                "INSERT INTO brands ({BRAND_COLUMNS}) VALUES ($1, $2, $3, NULL, \
                 (SELECT COALESCE(MAX(sort_order) + 1, 0) FROM brands), $4, $4) RETURNING {BRAND_COLUMNS}"
            ),
            [brand.id.as_uuid().into(), brand.spec.name.clone().into(), brand.spec.description.clone().into(), brand.created_at.into()],
        ))
        .one(&txn)
        .await
        .map_err(|e| super::pg::write_error(e, Entity::Brand, Entity::Brand, ""))?
        .context("the inserted brand")?;
        commit(txn, audit, brand.created_at).await?;
        Ok(row.into())
    }

    async fn update_brand(&self, brand: &Brand, audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = exec(
            &txn,
            stmt(
                "UPDATE brands SET name = $2, description = $3, updated_at = $4 WHERE id = $1",
                [
                    brand.id.as_uuid().into(),
                    brand.spec.name.clone().into(),
                    brand.spec.description.clone().into(),
                    brand.updated_at.into(),
                ],
            ),
            Entity::Brand,
            Entity::Brand,
            "",
        )
        .await?;
        not_found_unless(done.rows_affected(), Entity::Brand)?;
        commit(txn, audit, brand.updated_at).await
    }

    async fn delete_brand(&self, id: BrandId, audit: NewAuditEvent) -> Result<Brand, ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let row = BrandRow::find_by_statement(stmt(
            &format!("DELETE FROM brands WHERE id = $1 RETURNING {BRAND_COLUMNS}"),
            [id.as_uuid().into()],
        ))
        .one(&txn)
        .await
        .map_err(|e| {
            super::pg::write_error(
                e,
                Entity::Brand,
                Entity::Brand,
                "delete its cards and detach its servers first",
            )
        })?
        .ok_or(ModelError::NotFound(Entity::Brand))?;
        commit(txn, audit, self.clock.now()).await?;
        Ok(row.into())
    }

    async fn brand(&self, id: BrandId) -> Result<Option<Brand>, ModelError> {
        let row = BrandRow::find_by_statement(stmt(
            &format!("SELECT {BRAND_COLUMNS} FROM brands WHERE id = $1"),
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading a brand")?;
        Ok(row.map(Brand::from))
    }

    async fn brands(&self) -> Result<Vec<Brand>, ModelError> {
        let rows = BrandRow::find_by_statement(stmt(
            &format!("SELECT {BRAND_COLUMNS} FROM brands ORDER BY sort_order, id"),
            [],
        ))
        .all(&self.db)
        .await
        .context("listing brands")?;
        Ok(rows.into_iter().map(Brand::from).collect())
    }

    async fn reorder_brands(
        &self,
        ids: &[BrandId],
        audit: NewAuditEvent,
    ) -> Result<(), ModelError> {
        #[derive(FromQueryResult)]
        struct Id {
            id: Uuid,
        }
        let txn = self.db.begin().await.context("starting a transaction")?;
        let mut stored: Vec<Uuid> =
            Id::find_by_statement(stmt("SELECT id FROM brands ORDER BY id FOR UPDATE", []))
                .all(&txn)
                .await
                .context("locking the brands")?
                .into_iter()
                .map(|r| r.id)
                .collect();
        let mut given: Vec<Uuid> = ids.iter().map(BrandId::as_uuid).collect();
        stored.sort_unstable();
        given.sort_unstable();
        if stored != given {
            return Err(InvalidValue::new("brand_ids", "name every brand exactly once").into());
        }
        let now = self.clock.now();
        for (position, id) in ids.iter().enumerate() {
            txn.execute(stmt(
                "UPDATE brands SET sort_order = $2, updated_at = $3 WHERE id = $1",
                [
                    id.as_uuid().into(),
                    i32::try_from(position).unwrap_or(i32::MAX).into(),
                    now.into(),
                ],
            ))
            .await
            .context("reordering brands")?;
        }
        commit(txn, audit, now).await
    }

    async fn insert_card(&self, card: &Card, audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let mut values = card_values(card);
        values.push(card.brand_id.as_uuid().into());
        exec(
            &txn,
            stmt(
                &format!("INSERT INTO accelerator_cards ({CARD_COLUMNS}) VALUES ($1, $11, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)"),
                values,
            ),
            Entity::Card,
            Entity::Brand,
            "",
        )
        .await?;
        commit(txn, audit, card.created_at).await
    }

    async fn update_card(&self, card: &Card, audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = exec(
            &txn,
            stmt(
                "UPDATE accelerator_cards SET model = $2, memory_gib = $3, fp8_tflops = $4, int8_tops = $5, bf16_tflops = $6, \
                 fp16_tflops = $7, fp32_tflops = $8, interconnect_gbps = $9, updated_at = $10 WHERE id = $1",
                card_values(card),
            ),
            Entity::Card,
            Entity::Brand,
            "",
        )
        .await?;
        not_found_unless(done.rows_affected(), Entity::Card)?;
        commit(txn, audit, card.updated_at).await
    }

    async fn delete_card(&self, id: CardId, audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = exec(
            &txn,
            stmt(
                "DELETE FROM accelerator_cards WHERE id = $1",
                [id.as_uuid().into()],
            ),
            Entity::Card,
            Entity::Card,
            "servers still name this card",
        )
        .await?;
        not_found_unless(done.rows_affected(), Entity::Card)?;
        commit(txn, audit, self.clock.now()).await
    }

    async fn card(&self, id: CardId) -> Result<Option<Card>, ModelError> {
        let row = CardRow::find_by_statement(stmt(
            &format!("SELECT {CARD_COLUMNS} FROM accelerator_cards WHERE id = $1"),
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading a card")?;
        Ok(row.map(Card::from))
    }

    async fn cards(
        &self,
        brand: Option<BrandId>,
        page: &PageRequest,
    ) -> Result<Page<Card>, ModelError> {
        let [after, limit] = page_values(page);
        let rows = CardRow::find_by_statement(stmt(
            &format!(
                "SELECT {CARD_COLUMNS} FROM accelerator_cards WHERE ($1::uuid IS NULL OR id > $1) \
                 AND ($3::uuid IS NULL OR brand_id = $3) ORDER BY id LIMIT $2"
            ),
            [after, limit, brand.map(|b| b.as_uuid()).into()],
        ))
        .all(&self.db)
        .await
        .context("listing cards")?;
        let cards: Vec<Card> = rows.into_iter().map(Card::from).collect();
        Ok(Page::from_overfetch(cards, page, |c| c.id.as_uuid()))
    }

    async fn insert_model(&self, model: &Model, audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        exec(
            &txn,
            stmt(
                &format!("INSERT INTO models ({MODEL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11, $11)"),
                model_values(model)?,
            ),
            Entity::Model,
            Entity::Model,
            "",
        )
        .await?;
        commit(txn, audit, model.created_at).await
    }

    async fn update_model(&self, model: &Model, audit: NewAuditEvent) -> Result<(), ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let done = exec(
            &txn,
            stmt(
                "UPDATE models SET name = $2, family = $3, parameters_b = $4, context_length = $5, capabilities = $6, \
                 quantization = $7, source = $8, default_engine = $9, licence = $10, updated_at = $11 WHERE id = $1",
                model_values(model)?,
            ),
            Entity::Model,
            Entity::Model,
            "",
        )
        .await?;
        not_found_unless(done.rows_affected(), Entity::Model)?;
        commit(txn, audit, model.updated_at).await
    }

    async fn delete_model(&self, id: ModelId, audit: NewAuditEvent) -> Result<Model, ModelError> {
        let txn = self.db.begin().await.context("starting a transaction")?;
        let row = ModelRow::find_by_statement(stmt(
            &format!("DELETE FROM models WHERE id = $1 RETURNING {MODEL_COLUMNS}"),
            [id.as_uuid().into()],
        ))
        .one(&txn)
        .await
        .context("deleting a model")?
        .ok_or(ModelError::NotFound(Entity::Model))?;
        commit(txn, audit, self.clock.now()).await?;
        row.try_into()
    }

    async fn model(&self, id: ModelId) -> Result<Option<Model>, ModelError> {
        let row = ModelRow::find_by_statement(stmt(
            &format!("SELECT {MODEL_COLUMNS} FROM models WHERE id = $1"),
            [id.as_uuid().into()],
        ))
        .one(&self.db)
        .await
        .context("reading a model")?;
        row.map(Model::try_from).transpose()
    }

    async fn models(&self, page: &PageRequest) -> Result<Page<Model>, ModelError> {
        let [after, limit] = page_values(page);
        let rows = ModelRow::find_by_statement(stmt(
            &format!("SELECT {MODEL_COLUMNS} FROM models WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"),
            [after, limit],
        ))
        .all(&self.db)
        .await
        .context("listing models")?;
        let models = rows
            .into_iter()
            .map(Model::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(models, page, |m| m.id.as_uuid()))
    }

    async fn count_models(&self) -> Result<u64, ModelError> {
        #[derive(FromQueryResult)]
        struct Count {
            n: i64,
        }
        let count = Count::find_by_statement(stmt("SELECT count(*) AS n FROM models", []))
            .one(&self.db)
            .await
            .context("counting models")?
            .map_or(0, |c| c.n);
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn set_logo(
        &self,
        owner: LogoOwner,
        name: Option<&str>,
        audit: NewAuditEvent,
    ) -> Result<Option<String>, ModelError> {
        #[derive(FromQueryResult)]
        struct Previous {
            logo: Option<String>,
        }
        let (table, id, entity) = match owner {
            LogoOwner::Brand(id) => ("brands", id.as_uuid(), Entity::Brand),
            LogoOwner::Model(id) => ("models", id.as_uuid(), Entity::Model),
        };
        let txn = self.db.begin().await.context("starting a transaction")?;
        let now = self.clock.now();
        // The old value is read under the row lock the update takes.
        let previous = Previous::find_by_statement(stmt(
            &format!(
                "UPDATE {table} t SET logo = $2, updated_at = $3 FROM (SELECT id, logo FROM {table} WHERE id = $1 FOR UPDATE) old \
                 WHERE t.id = old.id RETURNING old.logo"
            ),
            [id.into(), name.map(str::to_owned).into(), now.into()],
        ))
        .one(&txn)
        .await
        .context("setting a logo")?
        .ok_or(ModelError::NotFound(entity))?;
        commit(txn, audit, now).await?;
        Ok(previous.logo)
    }

    async fn logo_in_use(&self, name: &str) -> Result<bool, ModelError> {
        #[derive(FromQueryResult)]
        struct Used {
            used: bool,
        }
        let used = Used::find_by_statement(stmt(
            "SELECT EXISTS (SELECT 1 FROM brands WHERE logo = $1) OR EXISTS (SELECT 1 FROM models WHERE logo = $1) AS used",
            [name.into()],
        ))
        .one(&self.db)
        .await
        .context("checking a logo")?
        .is_some_and(|u| u.used);
        Ok(used)
    }
}
