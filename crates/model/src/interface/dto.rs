//! Bodies of the registry, server and agent APIs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use validator::Validate;

use crate::app::servers::{ServerView, Stats};
use crate::domain::ports::AgentHealth;
use crate::domain::registry::{Brand, Capability, Card, Engine, Model, ModelSource};
use crate::domain::server::{DiskReport, GpuReport, NodeReport};

/// `Some(None)` for an explicit `null`, `None` when absent (PATCH: clear vs keep).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A whole number (`2` or `2.0`), when present.
fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    maas_shared::whole::opt_u64(d)
}

/// The URL a stored logo is served at.
fn logo_url(name: Option<&str>) -> Option<String> {
    name.map(|n| format!("/api/v1/logos/{n}"))
}

fn to_i64(v: Option<u64>) -> i64 {
    v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// A brand to register.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct BrandRequest {
    /// Display name, unique: 1–64 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub name: String,
    /// Free text, at most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub description: String,
}

/// Changes to a brand (absent fields stay).
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct BrandPatch {
    /// Display name, unique: 1–64 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub name: Option<String>,
    /// Free text, at most 500 characters.
    #[schema(max_length = 500, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub description: Option<String>,
}

/// A brand.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrandResponse {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Where its logo is served (signed-in users), when it has one.
    pub logo_url: Option<String>,
    /// Position in lists (0 first).
    pub sort_order: i32,
    /// Registered.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&Brand> for BrandResponse {
    fn from(b: &Brand) -> Self {
        Self {
            id: b.id().as_uuid(),
            name: b.name().to_owned(),
            description: b.description().to_owned(),
            logo_url: logo_url(b.logo()),
            sort_order: b.sort_order(),
            created_at: b.created_at(),
            updated_at: b.updated_at(),
        }
    }
}

/// The new order of the brands.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ReorderBrandsRequest {
    /// Every brand's id exactly once, first shown first.
    #[schema(max_items = 1000)]
    pub brand_ids: Vec<Uuid>,
}

/// An accelerator card to register (figures are dense, per card).
#[derive(Debug, Default, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct CardRequest {
    /// The card's model (`H100 SXM5 80GB`), unique within its brand: 1–100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub model: String,
    /// Memory, GiB: 1 to 4096.
    #[serde(default, deserialize_with = "whole")]
    #[schema(required = true, value_type = u64, minimum = 1, maximum = 4096)]
    pub memory_gib: Option<u64>,
    /// FP8 TFLOPS (0 < x ≤ 100000).
    #[schema(exclusive_minimum = 0, maximum = 100_000)]
    pub fp8_tflops: Option<f64>,
    /// INT8 TOPS (0 < x ≤ 100000).
    #[schema(exclusive_minimum = 0, maximum = 100_000)]
    pub int8_tops: Option<f64>,
    /// BF16 TFLOPS (0 < x ≤ 100000).
    #[schema(exclusive_minimum = 0, maximum = 100_000)]
    pub bf16_tflops: Option<f64>,
    /// FP16 TFLOPS (0 < x ≤ 100000).
    #[schema(exclusive_minimum = 0, maximum = 100_000)]
    pub fp16_tflops: Option<f64>,
    /// FP32 TFLOPS (0 < x ≤ 100000).
    #[schema(exclusive_minimum = 0, maximum = 100_000)]
    pub fp32_tflops: Option<f64>,
    /// Card-to-card interconnect, GB/s (0 < x ≤ 100000).
    #[schema(exclusive_minimum = 0, maximum = 100_000)]
    pub interconnect_gbps: Option<f64>,
}

/// Changes to a card (absent fields stay; `null` clears a figure).
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct CardPatch {
    /// The card's model, unique within its brand: 1–100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub model: Option<String>,
    /// Memory, GiB: 1 to 4096.
    #[serde(default, deserialize_with = "whole")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4096)]
    pub memory_gib: Option<u64>,
    /// FP8 TFLOPS.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 100_000)]
    pub fp8_tflops: Option<Option<f64>>,
    /// INT8 TOPS.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 100_000)]
    pub int8_tops: Option<Option<f64>>,
    /// BF16 TFLOPS.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 100_000)]
    pub bf16_tflops: Option<Option<f64>>,
    /// FP16 TFLOPS.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 100_000)]
    pub fp16_tflops: Option<Option<f64>>,
    /// FP32 TFLOPS.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 100_000)]
    pub fp32_tflops: Option<Option<f64>>,
    /// Interconnect, GB/s.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 100_000)]
    pub interconnect_gbps: Option<Option<f64>>,
}

impl CardRequest {
    pub(crate) fn draft(self) -> crate::domain::registry::CardDraft {
        crate::domain::registry::CardDraft {
            model: self.model,
            memory_gib: to_i64(self.memory_gib),
            fp8_tflops: self.fp8_tflops,
            int8_tops: self.int8_tops,
            bf16_tflops: self.bf16_tflops,
            fp16_tflops: self.fp16_tflops,
            fp32_tflops: self.fp32_tflops,
            interconnect_gbps: self.interconnect_gbps,
        }
    }
}

impl CardPatch {
    pub(crate) fn apply(self, d: &mut crate::domain::registry::CardDraft) {
        if let Some(v) = self.model {
            d.model = v;
        }
        if let Some(v) = self.memory_gib {
            d.memory_gib = to_i64(Some(v));
        }
        let fields = [
            (self.fp8_tflops, &mut d.fp8_tflops),
            (self.int8_tops, &mut d.int8_tops),
            (self.bf16_tflops, &mut d.bf16_tflops),
            (self.fp16_tflops, &mut d.fp16_tflops),
            (self.fp32_tflops, &mut d.fp32_tflops),
            (self.interconnect_gbps, &mut d.interconnect_gbps),
        ];
        for (given, field) in fields {
            if let Some(v) = given {
                *field = v;
            }
        }
    }
}

/// An accelerator card.
#[derive(Debug, Serialize, ToSchema)]
pub struct CardResponse {
    /// Id.
    pub id: Uuid,
    /// Its brand.
    pub brand_id: Uuid,
    /// Model.
    pub model: String,
    /// Memory, GiB.
    pub memory_gib: i32,
    /// FP8 TFLOPS.
    pub fp8_tflops: Option<f64>,
    /// INT8 TOPS.
    pub int8_tops: Option<f64>,
    /// BF16 TFLOPS.
    pub bf16_tflops: Option<f64>,
    /// FP16 TFLOPS.
    pub fp16_tflops: Option<f64>,
    /// FP32 TFLOPS.
    pub fp32_tflops: Option<f64>,
    /// Interconnect, GB/s.
    pub interconnect_gbps: Option<f64>,
    /// Registered.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&Card> for CardResponse {
    fn from(c: &Card) -> Self {
        let s = c.spec();
        let [
            fp8_tflops,
            int8_tops,
            bf16_tflops,
            fp16_tflops,
            fp32_tflops,
            interconnect_gbps,
        ] = s.figures();
        Self {
            id: c.id().as_uuid(),
            brand_id: c.brand_id().as_uuid(),
            model: s.model().to_owned(),
            memory_gib: s.memory_gib(),
            fp8_tflops,
            int8_tops,
            bf16_tflops,
            fp16_tflops,
            fp32_tflops,
            interconnect_gbps,
            created_at: c.created_at(),
            updated_at: c.updated_at(),
        }
    }
}

/// What a model serves.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapabilityDto {
    /// Chat completions.
    Chat,
    /// Text completions.
    Completion,
    /// Embeddings.
    Embedding,
    /// Reranking.
    Rerank,
}

impl From<CapabilityDto> for Capability {
    fn from(c: CapabilityDto) -> Self {
        match c {
            CapabilityDto::Chat => Self::Chat,
            CapabilityDto::Completion => Self::Completion,
            CapabilityDto::Embedding => Self::Embedding,
            CapabilityDto::Rerank => Self::Rerank,
        }
    }
}

impl From<Capability> for CapabilityDto {
    fn from(c: Capability) -> Self {
        match c {
            Capability::Chat => Self::Chat,
            Capability::Completion => Self::Completion,
            Capability::Embedding => Self::Embedding,
            Capability::Rerank => Self::Rerank,
        }
    }
}

/// An inference engine.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, ToSchema)]
pub enum EngineDto {
    /// `maas-engine`, the built-in CPU engine.
    #[default]
    #[serde(rename = "builtin")]
    Builtin,
    /// llama.cpp's server.
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
    /// vLLM.
    #[serde(rename = "vllm")]
    Vllm,
    /// SGLang.
    #[serde(rename = "sglang")]
    Sglang,
    /// An operator's own command.
    #[serde(rename = "custom")]
    Custom,
}

impl From<EngineDto> for Engine {
    fn from(e: EngineDto) -> Self {
        match e {
            EngineDto::Builtin => Self::Builtin,
            EngineDto::LlamaCpp => Self::LlamaCpp,
            EngineDto::Vllm => Self::Vllm,
            EngineDto::Sglang => Self::Sglang,
            EngineDto::Custom => Self::Custom,
        }
    }
}

impl From<Engine> for EngineDto {
    fn from(e: Engine) -> Self {
        match e {
            Engine::Builtin => Self::Builtin,
            Engine::LlamaCpp => Self::LlamaCpp,
            Engine::Vllm => Self::Vllm,
            Engine::Sglang => Self::Sglang,
            Engine::Custom => Self::Custom,
        }
    }
}

/// Where a model's weights come from.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceDto {
    /// A path on the servers.
    Local {
        /// Absolute, without `..`, at most 1024 characters.
        #[schema(max_length = 1024, pattern = "^/[^\\x00-\\x1f\\x7f-\\x9f]*$")]
        path: String,
    },
    /// A file over HTTP(S), checked against its SHA-256.
    Url {
        /// `http(s)://` URL without credentials (not link-local or cloud metadata), at most 2048 characters.
        #[schema(
            max_length = 2048,
            pattern = "^https?://[a-z][a-z0-9-]{0,30}(\\.[a-z][a-z0-9-]{0,30}){0,4}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]+){0,8}$"
        )]
        url: String,
        /// 64 hex digits.
        #[schema(pattern = "^[0-9a-fA-F]{64}$")]
        sha256: String,
    },
    /// A Hugging Face repository.
    HuggingFace {
        /// `owner/name`.
        #[schema(
            pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,95}/[A-Za-z0-9_-][A-Za-z0-9._-]{0,95}$"
        )]
        repo: String,
    },
    /// A ModelScope repository.
    ModelScope {
        /// `owner/name`.
        #[schema(
            pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,95}/[A-Za-z0-9_-][A-Za-z0-9._-]{0,95}$"
        )]
        repo: String,
    },
}

impl From<SourceDto> for ModelSource {
    fn from(s: SourceDto) -> Self {
        match s {
            SourceDto::Local { path } => Self::Local { path },
            SourceDto::Url { url, sha256 } => Self::Url { url, sha256 },
            SourceDto::HuggingFace { repo } => Self::HuggingFace { repo },
            SourceDto::ModelScope { repo } => Self::ModelScope { repo },
        }
    }
}

impl From<&ModelSource> for SourceDto {
    fn from(s: &ModelSource) -> Self {
        match s.clone() {
            ModelSource::Local { path } => Self::Local { path },
            ModelSource::Url { url, sha256 } => Self::Url { url, sha256 },
            ModelSource::HuggingFace { repo } => Self::HuggingFace { repo },
            ModelSource::ModelScope { repo } => Self::ModelScope { repo },
        }
    }
}

/// A model to register.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ModelRequest {
    /// Unique name, as callers will send it in `model`: 1–128 of letters, digits, `.`, `_`, `:`, `/`, `-`.
    #[schema(pattern = "^[A-Za-z0-9._:/-]{1,128}$")]
    pub name: String,
    /// Family: 1–64 of letters, digits, `.`, `_`, `-`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub family: String,
    /// Parameters, billions (0 < x ≤ 100000).
    #[schema(exclusive_minimum = 0, maximum = 100_000)]
    pub parameters_b: Option<f64>,
    /// Context length, tokens: 1 to 10000000.
    #[serde(default, deserialize_with = "whole")]
    #[schema(required = true, value_type = u64, minimum = 1, maximum = 10_000_000)]
    pub context_length: Option<u64>,
    /// What it serves: at least one.
    #[schema(min_items = 1, max_items = 4)]
    pub capabilities: Vec<CapabilityDto>,
    /// Quantization (`q4_k_m`, `awq`, `fp16`): 1–32 of a-z, 0-9, `.`, `_`, `-` (stored lowercase).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,32}$")]
    pub quantization: Option<String>,
    /// Where the weights come from.
    pub source: SourceDto,
    /// The engine it runs on by default (`builtin` when absent).
    #[serde(default)]
    pub default_engine: EngineDto,
    /// Licence, SPDX-like (`apache-2.0`): 1–64 of letters, digits, `.`, `_`, `+`, `-`.
    #[schema(pattern = "^[A-Za-z0-9._+-]{1,64}$")]
    pub licence: Option<String>,
}

impl ModelRequest {
    pub(crate) fn draft(self) -> crate::domain::registry::ModelDraft {
        crate::domain::registry::ModelDraft {
            name: self.name,
            family: self.family,
            parameters_b: self.parameters_b,
            context_length: to_i64(self.context_length),
            capabilities: self
                .capabilities
                .into_iter()
                .map(Capability::from)
                .collect(),
            quantization: self.quantization,
            source: self.source.into(),
            default_engine: self.default_engine.into(),
            licence: self.licence,
        }
    }
}

/// Changes to a model (absent fields stay; `null` clears an optional one).
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ModelPatch {
    /// Unique name.
    #[schema(pattern = "^[A-Za-z0-9._:/-]{1,128}$")]
    pub name: Option<String>,
    /// Family.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub family: Option<String>,
    /// Parameters, billions.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 100_000)]
    pub parameters_b: Option<Option<f64>>,
    /// Context length, tokens.
    #[serde(default, deserialize_with = "whole")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 10_000_000)]
    pub context_length: Option<u64>,
    /// What it serves.
    #[schema(min_items = 1, max_items = 4)]
    pub capabilities: Option<Vec<CapabilityDto>>,
    /// Quantization.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9._-]{1,32}$")]
    pub quantization: Option<Option<String>>,
    /// Where the weights come from.
    pub source: Option<SourceDto>,
    /// Default engine.
    pub default_engine: Option<EngineDto>,
    /// Licence.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9._+-]{1,64}$")]
    pub licence: Option<Option<String>>,
}

impl ModelPatch {
    pub(crate) fn apply(self, d: &mut crate::domain::registry::ModelDraft) {
        if let Some(v) = self.name {
            d.name = v;
        }
        if let Some(v) = self.family {
            d.family = v;
        }
        if let Some(v) = self.parameters_b {
            d.parameters_b = v;
        }
        if let Some(v) = self.context_length {
            d.context_length = to_i64(Some(v));
        }
        if let Some(v) = self.capabilities {
            d.capabilities = v.into_iter().map(Capability::from).collect();
        }
        if let Some(v) = self.quantization {
            d.quantization = v;
        }
        if let Some(v) = self.source {
            d.source = v.into();
        }
        if let Some(v) = self.default_engine {
            d.default_engine = v.into();
        }
        if let Some(v) = self.licence {
            d.licence = v;
        }
    }
}

/// A registered model.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelResponse {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Family.
    pub family: String,
    /// Parameters, billions.
    pub parameters_b: Option<f64>,
    /// Context length, tokens.
    pub context_length: i32,
    /// What it serves.
    pub capabilities: Vec<CapabilityDto>,
    /// Quantization.
    pub quantization: Option<String>,
    /// Where the weights come from.
    pub source: SourceDto,
    /// Default engine.
    pub default_engine: EngineDto,
    /// Licence.
    pub licence: Option<String>,
    /// Where its logo is served, when it has one.
    pub logo_url: Option<String>,
    /// Registered.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&Model> for ModelResponse {
    fn from(m: &Model) -> Self {
        let s = m.spec();
        Self {
            id: m.id().as_uuid(),
            name: s.name().to_owned(),
            family: s.family().to_owned(),
            parameters_b: s.parameters_b(),
            context_length: s.context_length(),
            capabilities: s
                .capabilities()
                .iter()
                .copied()
                .map(CapabilityDto::from)
                .collect(),
            quantization: s.quantization().map(str::to_owned),
            source: s.source().into(),
            default_engine: s.default_engine().into(),
            licence: s.licence().map(str::to_owned),
            logo_url: logo_url(m.logo()),
            created_at: m.created_at(),
            updated_at: m.updated_at(),
        }
    }
}

/// A logo upload: `multipart/form-data` with the image in the field `file` (PNG, JPEG, GIF or
/// WebP, judged by its bytes; at most 2 MB by default).
#[derive(Debug, ToSchema)]
pub struct LogoUpload {
    /// The image.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// A server to register.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ServerRequest {
    /// Unique name: 1–64 of letters, digits, `.`, `_`, `-`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// Host name or IP address (not link-local or cloud metadata).
    #[schema(
        max_length = 253,
        pattern = "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
    )]
    pub address: String,
    /// Placement labels: at most 32; keys 1–63 and values 0–63 of letters, digits, `.`, `_`, `/`, `-`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Accelerator brand (filled in from the card when absent).
    pub brand_id: Option<Uuid>,
    /// Accelerator card.
    pub card_id: Option<Uuid>,
    /// GPUs it should have: 0 to 64 (default 0).
    #[serde(default, deserialize_with = "whole")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 64)]
    pub expected_gpus: Option<u64>,
}

/// Changes to a server (absent fields stay; `null` clears the brand or card).
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    /// Unique name.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: Option<String>,
    /// Host name or IP address.
    #[schema(
        max_length = 253,
        pattern = "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
    )]
    pub address: Option<String>,
    /// Placement labels (replaces them all).
    pub labels: Option<BTreeMap<String, String>>,
    /// Accelerator brand.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub brand_id: Option<Option<Uuid>>,
    /// Accelerator card.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub card_id: Option<Option<Uuid>>,
    /// GPUs it should have: 0 to 64.
    #[serde(default, deserialize_with = "whole")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 64)]
    pub expected_gpus: Option<u64>,
}

impl ServerRequest {
    pub(crate) fn draft(self) -> crate::domain::server::ServerDraft {
        crate::domain::server::ServerDraft {
            name: self.name,
            address: self.address,
            labels: self.labels,
            brand_id: self
                .brand_id
                .map(crate::domain::registry::BrandId::from_uuid),
            card_id: self.card_id.map(crate::domain::registry::CardId::from_uuid),
            expected_gpus: to_i64(Some(self.expected_gpus.unwrap_or(0))),
        }
    }
}

impl ServerPatch {
    pub(crate) fn apply(self, d: &mut crate::domain::server::ServerDraft) {
        if let Some(v) = self.name {
            d.name = v;
        }
        if let Some(v) = self.address {
            d.address = v;
        }
        if let Some(v) = self.labels {
            d.labels = v;
        }
        if let Some(v) = self.brand_id {
            d.brand_id = v.map(crate::domain::registry::BrandId::from_uuid);
        }
        if let Some(v) = self.card_id {
            d.card_id = v.map(crate::domain::registry::CardId::from_uuid);
        }
        if let Some(v) = self.expected_gpus {
            d.expected_gpus = to_i64(Some(v));
        }
    }
}

/// A server's agent, once joined.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentResponse {
    /// The node's host name.
    pub hostname: String,
    /// `maas-agent` version.
    pub version: String,
    /// The address the agent reports.
    pub url: String,
    /// The address an admin approved for calls from the platform.
    pub approved_url: Option<String>,
    /// Whether the platform may call the agent now (approved and still the reported one).
    pub callable: bool,
    /// When it joined.
    pub registered_at: DateTime<Utc>,
}

/// One mounted disk.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskDto {
    /// Mount point (1–1024 characters).
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub mount: String,
    /// Size, bytes.
    pub total_bytes: u64,
    /// Free, bytes (at most `total_bytes`).
    pub available_bytes: u64,
}

/// One GPU.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuDto {
    /// Index on the node.
    pub index: u32,
    /// Vendor UUID (at most 128 characters).
    #[schema(max_length = 128, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub uuid: String,
    /// Product name (1–128 characters).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub name: String,
    /// Memory, MiB.
    pub memory_total_mib: u64,
    /// Memory in use, MiB (at most the total).
    pub memory_used_mib: u64,
    /// Utilisation, percent (0–100).
    #[schema(minimum = 0, maximum = 100)]
    pub utilization_percent: Option<f64>,
    /// Temperature, °C (−50 to 200).
    #[schema(minimum = -50, maximum = 200)]
    pub temperature_c: Option<f64>,
}

/// A node's resources.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesDto {
    /// Logical CPUs.
    pub cpu_cores: u32,
    /// CPU use, percent of all cores (0–100).
    #[schema(minimum = 0, maximum = 100)]
    pub cpu_usage_percent: f64,
    /// Memory, bytes.
    pub memory_total_bytes: u64,
    /// Memory in use, bytes (at most the total).
    pub memory_used_bytes: u64,
    /// Mounted disks (at most 64).
    #[schema(max_items = 64)]
    pub disks: Vec<DiskDto>,
    /// GPUs (at most 64).
    #[schema(max_items = 64)]
    pub gpus: Vec<GpuDto>,
}

impl From<ResourcesDto> for NodeReport {
    fn from(r: ResourcesDto) -> Self {
        Self {
            cpu_cores: r.cpu_cores,
            cpu_usage_percent: r.cpu_usage_percent,
            memory_total_bytes: r.memory_total_bytes,
            memory_used_bytes: r.memory_used_bytes,
            disks: r
                .disks
                .into_iter()
                .map(|d| DiskReport {
                    mount: d.mount,
                    total_bytes: d.total_bytes,
                    available_bytes: d.available_bytes,
                })
                .collect(),
            gpus: r
                .gpus
                .into_iter()
                .map(|g| GpuReport {
                    index: g.index,
                    uuid: g.uuid,
                    name: g.name,
                    memory_total_mib: g.memory_total_mib,
                    memory_used_mib: g.memory_used_mib,
                    utilization_percent: g.utilization_percent,
                    temperature_c: g.temperature_c,
                })
                .collect(),
        }
    }
}

impl From<&NodeReport> for ResourcesDto {
    fn from(r: &NodeReport) -> Self {
        Self {
            cpu_cores: r.cpu_cores,
            cpu_usage_percent: r.cpu_usage_percent,
            memory_total_bytes: r.memory_total_bytes,
            memory_used_bytes: r.memory_used_bytes,
            disks: r
                .disks
                .iter()
                .map(|d| DiskDto {
                    mount: d.mount.clone(),
                    total_bytes: d.total_bytes,
                    available_bytes: d.available_bytes,
                })
                .collect(),
            gpus: r
                .gpus
                .iter()
                .map(|g| GpuDto {
                    index: g.index,
                    uuid: g.uuid.clone(),
                    name: g.name.clone(),
                    memory_total_mib: g.memory_total_mib,
                    memory_used_mib: g.memory_used_mib,
                    utilization_percent: g.utilization_percent,
                    temperature_c: g.temperature_c,
                })
                .collect(),
        }
    }
}

/// A server's last resource report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportedResources {
    /// When it came.
    pub reported_at: DateTime<Utc>,
    /// The figures.
    #[serde(flatten)]
    pub resources: ResourcesDto,
}

/// Node status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatusDto {
    /// Its agent has not joined yet.
    Pending,
    /// Heartbeating.
    Ready,
    /// Missed heartbeats: takes no new work.
    NotReady,
    /// Silent for longer.
    Offline,
}

impl From<crate::domain::server::NodeStatus> for NodeStatusDto {
    fn from(s: crate::domain::server::NodeStatus) -> Self {
        use crate::domain::server::NodeStatus as S;
        match s {
            S::Pending => Self::Pending,
            S::Ready => Self::Ready,
            S::NotReady => Self::NotReady,
            S::Offline => Self::Offline,
        }
    }
}

/// A server (never its join token or node credential).
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerResponse {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Brand.
    pub brand_id: Option<Uuid>,
    /// Card.
    pub card_id: Option<Uuid>,
    /// GPUs it should have.
    pub expected_gpus: i32,
    /// GPUs its agent reports (absent before the first report).
    pub reported_gpus: Option<usize>,
    /// Status now, graded from the agent's heartbeats.
    pub status: NodeStatusDto,
    /// Why it has this status.
    pub status_reason: Option<String>,
    /// Since when the stored status holds.
    pub status_changed_at: DateTime<Utc>,
    /// The agent's last heartbeat.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Until when an unspent join token is valid (absent when none is outstanding).
    pub join_token_expires_at: Option<DateTime<Utc>>,
    /// Its agent, once joined.
    pub agent: Option<AgentResponse>,
    /// The last resource report.
    pub resources: Option<ReportedResources>,
    /// Registered.
    pub created_at: DateTime<Utc>,
    /// Last changed by an admin.
    pub updated_at: DateTime<Utc>,
}

impl From<&ServerView> for ServerResponse {
    fn from(v: &ServerView) -> Self {
        let s = &v.server;
        let spec = s.spec();
        Self {
            id: s.id().as_uuid(),
            name: spec.name().to_owned(),
            address: spec.address().to_owned(),
            labels: spec.labels().clone(),
            brand_id: spec.brand_id().map(|b| b.as_uuid()),
            card_id: spec.card_id().map(|c| c.as_uuid()),
            expected_gpus: spec.expected_gpus(),
            reported_gpus: s.report().map(|(r, _)| r.gpus.len()),
            status: v.grade.status.into(),
            status_reason: v.grade.reason.clone(),
            status_changed_at: s.status_changed_at(),
            last_heartbeat_at: v.last_heartbeat,
            join_token_expires_at: s.join_token_expires_at(),
            agent: s.agent().map(|a| AgentResponse {
                hostname: a.info.hostname.clone(),
                version: a.info.version.clone(),
                url: a.info.url.clone(),
                approved_url: a.approved_url.clone(),
                callable: a.callable_url().is_some(),
                registered_at: a.registered_at,
            }),
            resources: s.report().map(|(r, at)| ReportedResources {
                reported_at: *at,
                resources: r.into(),
            }),
            created_at: s.created_at(),
            updated_at: s.updated_at(),
        }
    }
}

/// A registered server and its agent's one-time join token.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedServerResponse {
    /// The server.
    pub server: ServerResponse,
    /// For `maas-agent --token`: shown once, stored only as a digest.
    pub join_token: String,
    /// Until when it can be used.
    pub join_token_expires_at: DateTime<Utc>,
}

/// A new join token.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinTokenResponse {
    /// For `maas-agent --token`: shown once.
    pub join_token: String,
    /// Until when it can be used.
    pub expires_at: DateTime<Utc>,
}

/// The agent address to approve.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ApproveAgentRequest {
    /// Exactly the address the agent reports (`agent.url`).
    #[schema(
        max_length = 300,
        pattern = "^https?://[A-Za-z0-9.-]{1,253}:[0-9]{1,5}$"
    )]
    pub agent_url: String,
}

/// What the agent's `/health` answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentHealthResponse {
    /// Its status.
    pub status: String,
    /// Its version.
    pub version: String,
    /// Round trip, milliseconds.
    pub latency_ms: u64,
}

impl From<AgentHealth> for AgentHealthResponse {
    fn from(h: AgentHealth) -> Self {
        Self {
            status: h.status,
            version: h.version,
            latency_ms: h.latency_ms,
        }
    }
}

/// Platform figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    /// Registered servers.
    pub servers: u64,
    /// Servers whose agent heartbeats.
    pub online_servers: u64,
    /// Servers per status (`pending`, `ready`, `not_ready`, `offline`).
    pub servers_by_status: BTreeMap<String, u64>,
    /// Deployments per state.
    pub deployments_by_state: BTreeMap<String, u64>,
    /// Model instances ready to serve.
    pub ready_instances: u64,
    /// Registered models.
    pub models: u64,
}

impl From<Stats> for StatsResponse {
    fn from(s: Stats) -> Self {
        Self {
            servers: s.servers,
            online_servers: s.online_servers,
            servers_by_status: s
                .servers_by_status
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            deployments_by_state: s
                .deployments_by_state
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            ready_instances: s.ready_instances,
            models: s.models,
        }
    }
}

/// An agent joining with its server's join token.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The one-time join token (`mjt_…`).
    #[schema(max_length = 256)]
    pub join_token: String,
    /// The node's host name (1–253 characters).
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub hostname: String,
    /// `maas-agent` version (1–64 characters).
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub agent_version: String,
    /// Where the agent listens: `http(s)://host:port` (not link-local or cloud metadata).
    #[schema(
        max_length = 300,
        pattern = "^https?://[A-Za-z0-9.-]{1,253}:[0-9]{1,5}$"
    )]
    pub agent_url: String,
}

/// A joined agent's identity.
#[derive(Debug, Serialize, ToSchema)]
pub struct JoinResponse {
    /// The server this node is.
    pub server_id: Uuid,
    /// Its node credential (`mnc_…`): keep it; shown once, stored only as a digest.
    pub node_credential: String,
    /// Seconds between heartbeats.
    pub heartbeat_interval_secs: u64,
    /// Seconds between resource reports.
    pub report_interval_secs: u64,
}

/// A heartbeat's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatResponse {
    /// The node's status.
    pub status: NodeStatusDto,
    /// Seconds between heartbeats.
    pub heartbeat_interval_secs: u64,
    /// Seconds between resource reports.
    pub report_interval_secs: u64,
}

/// An agent's resource report.
#[derive(Debug, Deserialize, ToSchema, Validate)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// The node's host name.
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub hostname: String,
    /// `maas-agent` version.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub agent_version: String,
    /// Where the agent listens.
    #[schema(
        max_length = 300,
        pattern = "^https?://[A-Za-z0-9.-]{1,253}:[0-9]{1,5}$"
    )]
    pub agent_url: String,
    /// The figures.
    pub resources: ResourcesDto,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_tell_a_null_from_an_absent_field() {
        let patch: ServerPatch = serde_json::from_str(r#"{"card_id": null}"#).unwrap();
        assert_eq!(patch.card_id, Some(None));
        assert_eq!(patch.brand_id, None);
        assert!(serde_json::from_str::<ServerPatch>(r#"{"x": 1}"#).is_err());
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        let card: CardRequest =
            serde_json::from_str(r#"{"model": "H100", "memory_gib": 80.0}"#).unwrap();
        assert_eq!(card.memory_gib, Some(80));
        assert!(
            serde_json::from_str::<CardRequest>(r#"{"model": "H100", "memory_gib": 80.5}"#)
                .is_err()
        );
    }
}
