//! The embedding model: a BERT sentence encoder (safetensors + tokenizer.json), mean-pooled
//! over real tokens and L2-normalised, as sentence-transformers does.

use std::path::Path;

use anyhow::Context as _;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Texts encoded in one forward pass.
pub const BATCH: usize = 32;

/// Longest input in tokens (longer ones are truncated, as sentence-transformers does).
pub const MAX_TOKENS: usize = 256;

/// A loaded embedding model.
pub struct EmbeddingModel {
    name: String,
    model: BertModel,
    tokenizer: Tokenizer,
    dimensions: usize,
    device: Device,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("name", &self.name)
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

/// Vectors and the tokens they took.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// One unit vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of all inputs (special tokens included, padding not).
    pub prompt_tokens: usize,
}

impl EmbeddingModel {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from a directory.
    ///
    /// # Errors
    /// A file is missing or does not describe a BERT model.
    pub fn load(dir: &Path, name: String) -> anyhow::Result<Self> {
        let device = Device::Cpu;
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let config: Config =
            serde_json::from_slice(&read("config.json")?).context("parsing config.json")?;
        let vb =
            VarBuilder::from_buffered_safetensors(read("model.safetensors")?, DType::F32, &device)?;
        let model = BertModel::load(vb, &config)?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(anyhow::Error::msg)
            .context("parsing tokenizer.json")?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS.min(config.max_position_embeddings),
                ..TruncationParams::default()
            }))
            .map_err(anyhow::Error::msg)?;
        Ok(Self {
            name,
            model,
            tokenizer,
            dimensions: config.hidden_size,
            device,
        })
    }

    /// The name it is served under.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Length of its vectors.
    #[must_use]
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Embeds texts, [`BATCH`] at a time. Blocking.
    ///
    /// # Errors
    /// Tokenizer or tensor failures.
    pub fn embed(&self, texts: &[String]) -> anyhow::Result<Embedded> {
        let mut vectors = Vec::with_capacity(texts.len());
        let mut prompt_tokens = 0;
        for batch in texts.chunks(BATCH) {
            let encodings = self
                .tokenizer
                .encode_batch(batch.to_vec(), true)
                .map_err(anyhow::Error::msg)?;
            let mut ids = Vec::with_capacity(encodings.len());
            let mut masks = Vec::with_capacity(encodings.len());
            for encoding in &encodings {
                prompt_tokens += encoding
                    .get_attention_mask()
                    .iter()
                    .filter(|&&m| m == 1)
                    .count();
                ids.push(Tensor::new(encoding.get_ids(), &self.device)?);
                masks.push(Tensor::new(encoding.get_attention_mask(), &self.device)?);
            }
            let ids = Tensor::stack(&ids, 0)?;
            let mask = Tensor::stack(&masks, 0)?;
            let hidden = self.model.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
            // Mean over real tokens: (b, seq, h) * (b, seq, 1), summed over seq, / count.
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?;
            let mean = summed.broadcast_div(&counts)?;
            let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
            let unit = mean.broadcast_div(&norms.clamp(1e-12, f64::MAX)?)?;
            vectors.extend(unit.to_vec2::<f32>()?);
        }
        Ok(Embedded {
            vectors,
            prompt_tokens,
        })
    }
}
