//! The registry: accelerator brands, their cards, and the models the platform can deploy.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::errors::InvalidValue;
use super::values::{collect, positive, text, token};

maas_shared::define_id!(
    /// Identifies an accelerator brand.
    BrandId
);
maas_shared::define_id!(
    /// Identifies an accelerator card.
    CardId
);
maas_shared::define_id!(
    /// Identifies a registered model.
    ModelId
);

/// What an admin gives for a brand (create, or the merged state of an update).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BrandDraft {
    /// Display name, unique.
    pub name: String,
    /// Free text.
    pub description: String,
}

/// A brand's validated description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrandSpec {
    pub(crate) name: String,
    pub(crate) description: String,
}

impl BrandDraft {
    /// Validates every field.
    ///
    /// # Errors
    /// Every bad field.
    pub fn parse(&self) -> Result<BrandSpec, Vec<InvalidValue>> {
        let mut errors = Vec::new();
        let name = collect(
            text(
                &self.name,
                1,
                64,
                "name",
                "1 to 64 characters, no control characters",
            ),
            &mut errors,
        );
        let description = collect(
            text(
                &self.description,
                0,
                500,
                "description",
                "at most 500 characters, no control characters",
            ),
            &mut errors,
        );
        match (name, description) {
            (Some(name), Some(description)) if errors.is_empty() => {
                Ok(BrandSpec { name, description })
            }
            _ => Err(errors),
        }
    }
}

/// An accelerator vendor (NVIDIA, AMD, Huawei Ascend, ...), shown in `sort_order`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Brand {
    pub(crate) id: BrandId,
    pub(crate) spec: BrandSpec,
    pub(crate) logo: Option<String>,
    pub(crate) sort_order: i32,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl Brand {
    /// A new brand, placed at `sort_order`.
    #[must_use]
    pub fn create(spec: BrandSpec, sort_order: i32, at: DateTime<Utc>) -> Self {
        Self {
            id: BrandId::new(),
            spec,
            logo: None,
            sort_order,
            created_at: at,
            updated_at: at,
        }
    }

    /// Id.
    #[must_use]
    pub fn id(&self) -> BrandId {
        self.id
    }
    /// Name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.spec.name
    }
    /// Description.
    #[must_use]
    pub fn description(&self) -> &str {
        &self.spec.description
    }
    /// The stored logo's name.
    #[must_use]
    pub fn logo(&self) -> Option<&str> {
        self.logo.as_deref()
    }
    /// Position in lists.
    #[must_use]
    pub fn sort_order(&self) -> i32 {
        self.sort_order
    }
    /// Created.
    #[must_use]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// Last changed.
    #[must_use]
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }

    /// The draft an update starts from.
    #[must_use]
    pub fn draft(&self) -> BrandDraft {
        BrandDraft {
            name: self.spec.name.clone(),
            description: self.spec.description.clone(),
        }
    }

    /// Replaces the description.
    pub fn revise(&mut self, spec: BrandSpec, at: DateTime<Utc>) {
        self.spec = spec;
        self.updated_at = at;
    }
}

/// What an admin gives for an accelerator card.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CardDraft {
    /// The card's model name (`H100 SXM5 80GB`), unique within its brand.
    pub model: String,
    /// Memory in GiB.
    pub memory_gib: i64,
    /// Dense FP8 TFLOPS.
    pub fp8_tflops: Option<f64>,
    /// Dense INT8 TOPS.
    pub int8_tops: Option<f64>,
    /// Dense BF16 TFLOPS.
    pub bf16_tflops: Option<f64>,
    /// Dense FP16 TFLOPS.
    pub fp16_tflops: Option<f64>,
    /// FP32 TFLOPS.
    pub fp32_tflops: Option<f64>,
    /// Card-to-card interconnect bandwidth, GB/s.
    pub interconnect_gbps: Option<f64>,
}

/// A card's validated figures.
#[derive(Clone, Debug, PartialEq)]
pub struct CardSpec {
    pub(crate) model: String,
    pub(crate) memory_gib: i32,
    pub(crate) fp8_tflops: Option<f64>,
    pub(crate) int8_tops: Option<f64>,
    pub(crate) bf16_tflops: Option<f64>,
    pub(crate) fp16_tflops: Option<f64>,
    pub(crate) fp32_tflops: Option<f64>,
    pub(crate) interconnect_gbps: Option<f64>,
}

const TFLOPS: &str = "a number above 0 and at most 100000";

impl CardDraft {
    /// Validates every field.
    ///
    /// # Errors
    /// Every bad field.
    pub fn parse(&self) -> Result<CardSpec, Vec<InvalidValue>> {
        let mut errors = Vec::new();
        let model = collect(
            text(
                &self.model,
                1,
                100,
                "model",
                "1 to 100 characters, no control characters",
            ),
            &mut errors,
        );
        let memory_gib = collect(
            i32::try_from(self.memory_gib)
                .ok()
                .filter(|m| (1..=4096).contains(m))
                .ok_or(InvalidValue::new(
                    "memory_gib",
                    "a whole number of GiB from 1 to 4096",
                )),
            &mut errors,
        );
        let mut figure =
            |v, field| collect(positive(v, 100_000.0, field, TFLOPS), &mut errors).flatten();
        let fp8_tflops = figure(self.fp8_tflops, "fp8_tflops");
        let int8_tops = figure(self.int8_tops, "int8_tops");
        let bf16_tflops = figure(self.bf16_tflops, "bf16_tflops");
        let fp16_tflops = figure(self.fp16_tflops, "fp16_tflops");
        let fp32_tflops = figure(self.fp32_tflops, "fp32_tflops");
        let interconnect_gbps = figure(self.interconnect_gbps, "interconnect_gbps");
        match (model, memory_gib) {
            (Some(model), Some(memory_gib)) if errors.is_empty() => Ok(CardSpec {
                model,
                memory_gib,
                fp8_tflops,
                int8_tops,
                bf16_tflops,
                fp16_tflops,
                fp32_tflops,
                interconnect_gbps,
            }),
            _ => Err(errors),
        }
    }
}

/// One accelerator card model of a brand.
#[derive(Clone, Debug, PartialEq)]
pub struct Card {
    pub(crate) id: CardId,
    pub(crate) brand_id: BrandId,
    pub(crate) spec: CardSpec,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl Card {
    /// A new card of `brand_id`.
    #[must_use]
    pub fn create(brand_id: BrandId, spec: CardSpec, at: DateTime<Utc>) -> Self {
        Self {
            id: CardId::new(),
            brand_id,
            spec,
            created_at: at,
            updated_at: at,
        }
    }
    /// Id.
    #[must_use]
    pub fn id(&self) -> CardId {
        self.id
    }
    /// Its brand.
    #[must_use]
    pub fn brand_id(&self) -> BrandId {
        self.brand_id
    }
    /// Figures.
    #[must_use]
    pub fn spec(&self) -> &CardSpec {
        &self.spec
    }
    /// Created.
    #[must_use]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// Last changed.
    #[must_use]
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    /// The draft an update starts from.
    #[must_use]
    pub fn draft(&self) -> CardDraft {
        let s = &self.spec;
        CardDraft {
            model: s.model.clone(),
            memory_gib: i64::from(s.memory_gib),
            fp8_tflops: s.fp8_tflops,
            int8_tops: s.int8_tops,
            bf16_tflops: s.bf16_tflops,
            fp16_tflops: s.fp16_tflops,
            fp32_tflops: s.fp32_tflops,
            interconnect_gbps: s.interconnect_gbps,
        }
    }
    /// Replaces the figures.
    pub fn revise(&mut self, spec: CardSpec, at: DateTime<Utc>) {
        self.spec = spec;
        self.updated_at = at;
    }
}

impl CardSpec {
    /// Model name.
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }
    /// Memory in GiB.
    #[must_use]
    pub fn memory_gib(&self) -> i32 {
        self.memory_gib
    }
    /// FP8, INT8, BF16, FP16, FP32 and interconnect figures, in that order.
    #[must_use]
    pub fn figures(&self) -> [Option<f64>; 6] {
        [
            self.fp8_tflops,
            self.int8_tops,
            self.bf16_tflops,
            self.fp16_tflops,
            self.fp32_tflops,
            self.interconnect_gbps,
        ]
    }
}

/// What a model can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
    /// `/v1/embeddings`.
    Embedding,
    /// Reranking.
    Rerank,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Self; 4] = [Self::Chat, Self::Completion, Self::Embedding, Self::Rerank];

    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completion => "completion",
            Self::Embedding => "embedding",
            Self::Rerank => "rerank",
        }
    }

    /// From the stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// The inference engine a model runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Engine {
    /// `maas-engine`, the built-in CPU engine.
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

impl Engine {
    /// Every engine.
    pub const ALL: [Self; 5] = [
        Self::Builtin,
        Self::LlamaCpp,
        Self::Vllm,
        Self::Sglang,
        Self::Custom,
    ];

    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Builtin => "builtin",
            Self::LlamaCpp => "llama.cpp",
            Self::Vllm => "vllm",
            Self::Sglang => "sglang",
            Self::Custom => "custom",
        }
    }

    /// From the stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// Where a model's weights come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSource {
    /// A path on the servers (absolute, no `..`).
    Local {
        /// The path.
        path: String,
    },
    /// A file downloaded over HTTP(S), checked against its SHA-256.
    Url {
        /// `http(s)://` URL.
        url: String,
        /// 64 hex digits.
        sha256: String,
    },
    /// A Hugging Face repository (`owner/name`).
    HuggingFace {
        /// Repository id.
        repo: String,
    },
    /// A ModelScope repository (`owner/name`).
    ModelScope {
        /// Repository id.
        repo: String,
    },
}

impl ModelSource {
    /// Validates the source's fields (`source.*`).
    ///
    /// # Errors
    /// Every bad field.
    pub fn validate(self) -> Result<Self, Vec<InvalidValue>> {
        let mut errors = Vec::new();
        let source = match self {
            Self::Local { path } => {
                let path = path.trim().to_owned();
                let ok = path.starts_with('/')
                    && path.chars().count() <= 1024
                    && !path.chars().any(char::is_control)
                    && !path.split('/').any(|part| part == "..");
                if !ok {
                    errors.push(InvalidValue::new(
                        "source.path",
                        "an absolute path of at most 1024 characters, without `..`",
                    ));
                }
                Self::Local { path }
            }
            Self::Url { url, sha256 } => {
                let url = url.trim().to_owned();
                match maas_shared::net::outbound_url(&url, 2048) {
                    Ok(_) => {}
                    Err(maas_shared::net::OutboundUrlError::Malformed) => errors.push(InvalidValue::new(
                        "source.url",
                        "an http(s) URL with a host and without credentials, at most 2048 characters",
                    )),
                    Err(maas_shared::net::OutboundUrlError::Forbidden) => errors.push(InvalidValue::new(
                        "source.url",
                        "must not be a link-local or cloud-metadata address",
                    )),
                }
                let sha256 = sha256.trim().to_ascii_lowercase();
                if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    errors.push(InvalidValue::new(
                        "source.sha256",
                        "the file's SHA-256: 64 hex digits",
                    ));
                }
                Self::Url { url, sha256 }
            }
            Self::HuggingFace { repo } => Self::HuggingFace {
                repo: repo_id(&repo, &mut errors),
            },
            Self::ModelScope { repo } => Self::ModelScope {
                repo: repo_id(&repo, &mut errors),
            },
        };
        if errors.is_empty() {
            Ok(source)
        } else {
            Err(errors)
        }
    }
}

/// `owner/name`: each part 1–96 characters of letters, digits, `-`, `_`, `.`.
fn repo_id(raw: &str, errors: &mut Vec<InvalidValue>) -> String {
    let repo = raw.trim().to_owned();
    let part = |p: &str| {
        (1..=96).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && !p.starts_with('.')
    };
    let ok = repo
        .split_once('/')
        .is_some_and(|(owner, name)| part(owner) && part(name));
    if !ok {
        errors.push(InvalidValue::new(
            "source.repo",
            "a repository id `owner/name` (letters, digits, '-', '_', '.')",
        ));
    }
    repo
}

/// What an admin gives for a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDraft {
    /// Unique name, as clients will send it in `model`.
    pub name: String,
    /// Family (`qwen2.5`, `llama-3`, ...).
    pub family: String,
    /// Parameters, in billions.
    pub parameters_b: Option<f64>,
    /// Context length in tokens.
    pub context_length: i64,
    /// What it serves.
    pub capabilities: Vec<Capability>,
    /// Quantization (`q4_k_m`, `awq`, `fp16`, ...).
    pub quantization: Option<String>,
    /// Where its weights come from.
    pub source: ModelSource,
    /// The engine it runs on unless a deployment says otherwise.
    pub default_engine: Engine,
    /// Licence (`apache-2.0`, ...).
    pub licence: Option<String>,
}

/// A model's validated description.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub(crate) name: String,
    pub(crate) family: String,
    pub(crate) parameters_b: Option<f64>,
    pub(crate) context_length: i32,
    pub(crate) capabilities: BTreeSet<Capability>,
    pub(crate) quantization: Option<String>,
    pub(crate) source: ModelSource,
    pub(crate) default_engine: Engine,
    pub(crate) licence: Option<String>,
}

impl ModelDraft {
    /// Validates every field.
    ///
    /// # Errors
    /// Every bad field.
    pub fn parse(&self) -> Result<ModelSpec, Vec<InvalidValue>> {
        let mut errors = Vec::new();
        let name = collect(
            token(
                &self.name,
                128,
                b"-_.:/",
                "name",
                "1 to 128 characters of letters, digits, '-', '_', '.', ':' or '/'",
            ),
            &mut errors,
        );
        let family = collect(
            token(
                &self.family,
                64,
                b"-_.",
                "family",
                "1 to 64 characters of letters, digits, '-', '_' or '.'",
            ),
            &mut errors,
        );
        let parameters_b = collect(
            positive(
                self.parameters_b,
                100_000.0,
                "parameters_b",
                "billions of parameters: above 0, at most 100000",
            ),
            &mut errors,
        )
        .flatten();
        let context_length = collect(
            i32::try_from(self.context_length)
                .ok()
                .filter(|c| (1..=10_000_000).contains(c))
                .ok_or(InvalidValue::new(
                    "context_length",
                    "tokens: a whole number from 1 to 10000000",
                )),
            &mut errors,
        );
        let capabilities: BTreeSet<Capability> = self.capabilities.iter().copied().collect();
        if capabilities.is_empty() {
            errors.push(InvalidValue::new(
                "capabilities",
                "at least one of chat, completion, embedding, rerank",
            ));
        }
        let quantization = self
            .quantization
            .as_deref()
            .map(|q| {
                token(
                    &q.to_ascii_lowercase(),
                    32,
                    b"-_.",
                    "quantization",
                    "1 to 32 characters of a-z, 0-9, '-', '_' or '.'",
                )
            })
            .transpose();
        let quantization = collect(quantization, &mut errors).flatten();
        let licence = self
            .licence
            .as_deref()
            .map(|l| {
                token(
                    l,
                    64,
                    b"-_.+",
                    "licence",
                    "an SPDX-like id: 1 to 64 characters of letters, digits, '-', '_', '.', '+'",
                )
            })
            .transpose();
        let licence = collect(licence, &mut errors).flatten();
        let source = self
            .source
            .clone()
            .validate()
            .map_err(|e| errors.extend(e))
            .ok();
        match (name, family, context_length, source) {
            (Some(name), Some(family), Some(context_length), Some(source)) if errors.is_empty() => {
                Ok(ModelSpec {
                    name,
                    family,
                    parameters_b,
                    context_length,
                    capabilities,
                    quantization,
                    source,
                    default_engine: self.default_engine,
                    licence,
                })
            }
            _ => Err(errors),
        }
    }
}

impl ModelSpec {
    /// Name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Family.
    #[must_use]
    pub fn family(&self) -> &str {
        &self.family
    }
    /// Billions of parameters.
    #[must_use]
    pub fn parameters_b(&self) -> Option<f64> {
        self.parameters_b
    }
    /// Context length.
    #[must_use]
    pub fn context_length(&self) -> i32 {
        self.context_length
    }
    /// Capabilities.
    #[must_use]
    pub fn capabilities(&self) -> &BTreeSet<Capability> {
        &self.capabilities
    }
    /// Quantization.
    #[must_use]
    pub fn quantization(&self) -> Option<&str> {
        self.quantization.as_deref()
    }
    /// Source.
    #[must_use]
    pub fn source(&self) -> &ModelSource {
        &self.source
    }
    /// Default engine.
    #[must_use]
    pub fn default_engine(&self) -> Engine {
        self.default_engine
    }
    /// Licence.
    #[must_use]
    pub fn licence(&self) -> Option<&str> {
        self.licence.as_deref()
    }
}

/// A model in the registry.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub(crate) id: ModelId,
    pub(crate) spec: ModelSpec,
    pub(crate) logo: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl Model {
    /// A new registration.
    #[must_use]
    pub fn create(spec: ModelSpec, at: DateTime<Utc>) -> Self {
        Self {
            id: ModelId::new(),
            spec,
            logo: None,
            created_at: at,
            updated_at: at,
        }
    }
    /// Id.
    #[must_use]
    pub fn id(&self) -> ModelId {
        self.id
    }
    /// Description.
    #[must_use]
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    /// The stored logo's name.
    #[must_use]
    pub fn logo(&self) -> Option<&str> {
        self.logo.as_deref()
    }
    /// Created.
    #[must_use]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// Last changed.
    #[must_use]
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    /// The draft an update starts from.
    #[must_use]
    pub fn draft(&self) -> ModelDraft {
        let s = &self.spec;
        ModelDraft {
            name: s.name.clone(),
            family: s.family.clone(),
            parameters_b: s.parameters_b,
            context_length: i64::from(s.context_length),
            capabilities: s.capabilities.iter().copied().collect(),
            quantization: s.quantization.clone(),
            source: s.source.clone(),
            default_engine: s.default_engine,
            licence: s.licence.clone(),
        }
    }
    /// Replaces the description.
    pub fn revise(&mut self, spec: ModelSpec, at: DateTime<Utc>) {
        self.spec = spec;
        self.updated_at = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> ModelDraft {
        ModelDraft {
            name: "qwen2.5-0.5b-instruct".into(),
            family: "qwen2.5".into(),
            parameters_b: Some(0.5),
            context_length: 32_768,
            capabilities: vec![Capability::Chat, Capability::Chat],
            quantization: Some("Q4_K_M".into()),
            source: ModelSource::HuggingFace {
                repo: "Qwen/Qwen2.5-0.5B-Instruct".into(),
            },
            default_engine: Engine::LlamaCpp,
            licence: Some("apache-2.0".into()),
        }
    }

    #[test]
    fn a_good_model_parses_with_its_values_normalised() {
        let spec = draft().parse().unwrap();
        assert_eq!(spec.quantization(), Some("q4_k_m"));
        assert_eq!(spec.capabilities().len(), 1);
    }

    #[test]
    fn every_bad_field_is_listed() {
        let bad = ModelDraft {
            name: "has space".into(),
            family: String::new(),
            parameters_b: Some(-1.0),
            context_length: 0,
            capabilities: vec![],
            quantization: Some("x".repeat(40)),
            source: ModelSource::Url {
                url: "http://169.254.169.254/m.gguf".into(),
                sha256: "abc".into(),
            },
            default_engine: Engine::Builtin,
            licence: Some(String::new()),
        };
        let fields: Vec<&str> = bad.parse().unwrap_err().iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "name",
                "family",
                "parameters_b",
                "context_length",
                "capabilities",
                "quantization",
                "licence",
                "source.url",
                "source.sha256"
            ]
        );
    }

    #[test]
    fn local_paths_must_be_absolute_without_parent_steps() {
        for bad in ["models/x", "/models/../etc/passwd", ""] {
            assert!(
                ModelSource::Local { path: bad.into() }.validate().is_err(),
                "{bad}"
            );
        }
        assert!(
            ModelSource::Local {
                path: "/models/x.gguf".into()
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn repository_ids_have_an_owner_and_a_name() {
        for bad in ["qwen", "a/b/c", "/x", "a/.git"] {
            assert!(
                ModelSource::ModelScope { repo: bad.into() }
                    .validate()
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn card_figures_must_be_positive_and_finite() {
        let card = CardDraft {
            model: "H100".into(),
            memory_gib: 0,
            fp16_tflops: Some(f64::NAN),
            bf16_tflops: Some(989.0),
            ..CardDraft::default()
        };
        let fields: Vec<&str> = card.parse().unwrap_err().iter().map(|e| e.field).collect();
        assert_eq!(fields, ["memory_gib", "fp16_tflops"]);
    }
}
