//! Token counting with embedding models' own tokenizers (`tokenizer.json`, the `tokenizers`
//! crate), configured per model; the 4-characters estimate for the others.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::domain::ports::Tokenizers;
use crate::domain::text::{CharEstimate, TokenCounter};

struct Hf(tokenizers::Tokenizer);

impl TokenCounter for Hf {
    fn count(&self, text: &str) -> usize {
        match self.0.encode_fast(text, false) {
            Ok(encoding) => encoding.len(),
            Err(_) => CharEstimate.count(text),
        }
    }
}

/// The tokenizers of the models named in `knowledge.tokenizers`.
pub struct ModelTokenizers {
    by_model: HashMap<String, Arc<dyn TokenCounter>>,
}

impl ModelTokenizers {
    /// Loads every `tokenizer.json` of `paths` (model name → file).
    ///
    /// # Errors
    /// When a file cannot be read as a tokenizer.
    pub fn load(paths: &HashMap<String, PathBuf>) -> anyhow::Result<Self> {
        let mut by_model: HashMap<String, Arc<dyn TokenCounter>> = HashMap::new();
        for (model, path) in paths {
            let mut tokenizer = tokenizers::Tokenizer::from_file(path).map_err(|e| {
                anyhow::anyhow!(
                    "knowledge.tokenizers.{model}: {} is not a tokenizer: {e}",
                    path.display()
                )
            })?;
            // Chunks are measured, not cut, by the tokenizer: no truncation, no padding.
            let _ = tokenizer.with_truncation(None);
            tokenizer.with_padding(None);
            by_model.insert(model.clone(), Arc::new(Hf(tokenizer)));
        }
        Ok(Self { by_model })
    }
}

impl Tokenizers for ModelTokenizers {
    fn counter(&self, model: &str) -> Arc<dyn TokenCounter> {
        self.by_model
            .get(model)
            .cloned()
            .unwrap_or_else(|| Arc::new(CharEstimate))
    }
}
