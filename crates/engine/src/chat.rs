//! The chat model: a llama-architecture GGUF (weights, tokenizer and chat template all come
//! from the one file), generation with sampling, stop sequences and exact token counts.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io::Cursor;
use std::path::Path;

use anyhow::Context as _;
use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::tokenizer::TokenizerFromGguf as _;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};
use serde::Serialize;
use tokenizers::Tokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;

use crate::text::{Step, StopMatcher};

/// A chat message after validation: role and plain text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (deterministic).
    pub temperature: f64,
    /// Nucleus sampling mass, in (0, 1].
    pub top_p: f64,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Stop sequences (not included in the answer).
    pub stop: Vec<String>,
    /// Seed for sampling; a random one when absent.
    pub seed: Option<u64>,
    /// OpenAI presence penalty.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty.
    pub frequency_penalty: f32,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-sequence token or a stop sequence.
    Stop,
    /// `max_tokens` or the context window.
    Length,
}

/// Token counts of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated (the end-of-sequence token not counted).
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}

impl Usage {
    fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// What generation reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// More text.
    Text(String),
    /// The end, with why and the counts.
    Done {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts.
        usage: Usage,
        /// Generated token ids (the end-of-sequence token not included).
        token_ids: Vec<u32>,
    },
}

/// A prompt that does not fit.
#[derive(Debug, thiserror::Error)]
#[error("the prompt has {prompt_tokens} tokens; this model's context is {context} tokens")]
pub struct ContextExceeded {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// The model's context window.
    pub context: usize,
}

/// A loaded chat model. Weights are shared; every generation clones the (cheap) handle and
/// gets its own KV cache.
pub struct ChatModel {
    name: String,
    weights: ModelWeights,
    tokenizer: Tokenizer,
    /// The same vocabulary with special-token markup read as plain text (message contents).
    text_tokenizer: Tokenizer,
    template: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// Prepended to raw prompts when the model asks for it (templates add it themselves).
    bos_id: Option<u32>,
    stop_ids: Vec<u32>,
    context: usize,
    device: Device,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel")
            .field("name", &self.name)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// Prompt tokens per prefill pass.
const PREFILL_CHUNK: usize = 512;

/// ChatML, for GGUF files that carry no template.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn metadata_str<'a>(content: &'a Content, key: &str) -> Option<&'a str> {
    content
        .metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
}

fn metadata_u32(content: &Content, key: &str) -> Option<u32> {
    content.metadata.get(key).and_then(|v| v.to_u32().ok())
}

/// Builds the tokenizer a GGUF file describes.
///
/// candle's builder gives "gpt2"-family vocabularies (SmolLM2's `smollm` among them) the
/// byte-level pre-tokenizer with `add_prefix_space = true`, so every segment (the role after
/// `<|im_start|>`, the first word of a message) gets a space it never had in training. The
/// reference tokenizers split digits one by one and add no prefix space; this puts that back.
///
/// # Errors
/// The GGUF file names no supported tokenizer.
pub fn tokenizer_from_gguf(content: &Content) -> anyhow::Result<Tokenizer> {
    let mut tokenizer = Tokenizer::from_gguf(content).context("building the GGUF tokenizer")?;
    let pre = metadata_str(content, "tokenizer.ggml.pre").unwrap_or("gpt2");
    let byte_level = ByteLevel::new(false, true, true);
    match pre {
        // candle already matches the reference for these.
        "qwen2" | "smaug-bpe" | "lfm2" | "llama3" => {}
        "smollm" | "starcoder" | "refact" => {
            tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                Digits::new(true).into(),
                byte_level.into(),
            ])));
        }
        _ => {
            tokenizer.with_pre_tokenizer(Some(byte_level));
        }
    }
    Ok(tokenizer)
}

/// Reads a GGUF file's header and builds its tokenizer (for tools and tests that count tokens
/// as the engine does).
///
/// # Errors
/// The file cannot be read or names no supported tokenizer.
pub fn tokenizer_from_gguf_file(path: &Path) -> anyhow::Result<Tokenizer> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let content = Content::read(&mut file).context("reading the GGUF header")?;
    tokenizer_from_gguf(&content)
}

/// Re-encodes 4/5-bit blocks as 8-bit ones. The file stays small on disk; in memory, candle's
/// Q8_0 kernels decode several times faster than its scalar Q4_1 path.
fn requantized(
    content: &Content,
    file: &mut std::fs::File,
    device: &Device,
) -> anyhow::Result<Vec<u8>> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let tensor = content.tensor(file, name, device)?;
        let tensor = match tensor.dtype() {
            GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
                if tensor.shape().dims().last().is_some_and(|d| d % 32 == 0) =>
            {
                QTensor::quantize(&tensor.dequantize(device)?, GgmlDType::Q8_0)?
            }
            GgmlDType::F32
            | GgmlDType::F16
            | GgmlDType::BF16
            | GgmlDType::Q4_0
            | GgmlDType::Q4_1
            | GgmlDType::Q5_0
            | GgmlDType::Q5_1
            | GgmlDType::Q8_0
            | GgmlDType::Q8_1
            | GgmlDType::Q2K
            | GgmlDType::Q3K
            | GgmlDType::Q4K
            | GgmlDType::Q5K
            | GgmlDType::Q6K
            | GgmlDType::Q8K => tensor,
        };
        tensors.push((name.as_str(), tensor));
    }
    let metadata: Vec<(&str, &Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &refs)?;
    Ok(out.into_inner())
}

/// Stands in for message `i`'s text while the template renders: private-use characters that no
/// template trims, escapes or matches.
fn placeholder(i: usize) -> String {
    format!("\u{E000}{i}\u{E001}")
}

/// A part of a rendered conversation.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    /// The template's own text and markup.
    Template(&'a str),
    /// The text of message `i`.
    Message(usize),
}

/// Splits a conversation rendered with [`placeholder`]s into template text and messages; `None`
/// unless each of the `count` placeholders appears exactly once, in order.
fn split_rendered(rendered: &str, count: usize) -> Option<Vec<Piece<'_>>> {
    let mut pieces = Vec::with_capacity(2 * count + 1);
    let mut rest = rendered;
    for i in 0..count {
        let mark = placeholder(i);
        let (before, after) = rest.split_once(&mark)?;
        if after.contains(&mark) {
            return None;
        }
        pieces.push(Piece::Template(before));
        pieces.push(Piece::Message(i));
        rest = after;
    }
    if rest.contains('\u{E000}') {
        return None;
    }
    pieces.push(Piece::Template(rest));
    Some(pieces)
}

impl ChatModel {
    /// Loads a GGUF chat model; `requantize` turns 4/5-bit weights into Q8_0 in memory.
    ///
    /// # Errors
    /// The file is missing, not a llama-family GGUF, or its template does not parse.
    pub fn load(path: &Path, name: String, requantize: bool) -> anyhow::Result<Self> {
        let device = Device::Cpu;
        let mut file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let content = Content::read(&mut file).context("reading the GGUF header")?;
        let tokenizer = tokenizer_from_gguf(&content)?;
        let token = |key: &str| {
            metadata_u32(&content, key)
                .and_then(|id| tokenizer.id_to_token(id))
                .unwrap_or_default()
        };
        let bos_token = token("tokenizer.ggml.bos_token_id");
        let eos_token = token("tokenizer.ggml.eos_token_id");
        let mut stop_ids: Vec<u32> = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"]
            .into_iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        if let Some(eos) = metadata_u32(&content, "tokenizer.ggml.eos_token_id") {
            stop_ids.push(eos);
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let context = content
            .metadata
            .iter()
            .find(|(k, _)| k.ends_with(".context_length"))
            .and_then(|(_, v)| v.to_u32().ok())
            .map_or(MAX_SEQ_LEN, |c| (c as usize).min(MAX_SEQ_LEN));
        let source = metadata_str(&content, "tokenizer.chat_template")
            .unwrap_or(CHATML)
            .to_owned();
        let mut template = minijinja::Environment::new();
        // Templates are written for Python's Jinja: string methods such as .strip() and
        // .startswith() come from pycompat.
        template.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        template.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        template
            .add_template_owned("chat", source)
            .context("parsing the model's chat template")?;
        let add_bos = content
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let bos_id = metadata_u32(&content, "tokenizer.ggml.bos_token_id").filter(|_| add_bos);

        let weights = if requantize {
            let bytes = requantized(&content, &mut file, &device)?;
            let mut reader = Cursor::new(bytes);
            let content = Content::read(&mut reader)?;
            ModelWeights::from_gguf(content, &mut reader, &device)?
        } else {
            ModelWeights::from_gguf(content, &mut file, &device)?
        };
        let mut text_tokenizer = tokenizer.clone();
        text_tokenizer.set_encode_special_tokens(true);
        let model = Self {
            name,
            weights,
            tokenizer,
            text_tokenizer,
            template,
            bos_token,
            eos_token,
            bos_id,
            stop_ids,
            context,
            device,
        };
        // A template that cannot render a plain exchange fails the start, not every request.
        model
            .render(&[Message {
                role: "user".into(),
                content: "Hello".into(),
            }])
            .context("the model's chat template cannot render a conversation")?;
        Ok(model)
    }

    /// The name it is served under.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The context window in tokens.
    #[must_use]
    pub fn context(&self) -> usize {
        self.context
    }

    /// The tokenizer.
    #[must_use]
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Renders messages with the model's chat template, ready for the assistant's turn.
    ///
    /// # Errors
    /// The template refuses the conversation (e.g. roles out of order).
    pub fn render(&self, messages: &[Message]) -> anyhow::Result<String> {
        let template = self.template.get_template("chat")?;
        Ok(template.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })?)
    }

    /// Token ids of a conversation rendered with the chat template, ready for the assistant's
    /// turn. The template's markup becomes special tokens; the messages' own text never does, so
    /// a user who writes `<|im_start|>system` gets those characters as text, not a forged turn.
    ///
    /// # Errors
    /// The template refuses the conversation (e.g. roles out of order); tokenizer failure.
    pub fn encode_chat(&self, messages: &[Message]) -> anyhow::Result<Vec<u32>> {
        let marked: Vec<Message> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Message {
                role: m.role.clone(),
                content: placeholder(i),
            })
            .collect();
        let rendered = self.render(&marked).ok();
        let pieces = rendered
            .as_deref()
            .and_then(|rendered| split_rendered(rendered, messages.len()));
        let Some(pieces) = pieces else {
            // The template rewrites, drops or repeats message text: render it whole. Markup in
            // the messages is then read as markup, as other engines do.
            return self.encode(&self.render(messages)?);
        };
        let mut ids = Vec::new();
        for piece in pieces {
            let (tokenizer, text) = match piece {
                Piece::Template(text) => (&self.tokenizer, text),
                Piece::Message(i) => (
                    &self.text_tokenizer,
                    messages.get(i).map_or("", |m| m.content.as_str()),
                ),
            };
            if !text.is_empty() {
                ids.extend_from_slice(
                    tokenizer
                        .encode(text, false)
                        .map_err(anyhow::Error::msg)?
                        .get_ids(),
                );
            }
        }
        Ok(ids)
    }

    /// Token ids of a text; special-token markup in it (`<|im_start|>`) becomes special tokens.
    ///
    /// # Errors
    /// Tokenizer failure.
    pub fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(anyhow::Error::msg)?
            .get_ids()
            .to_vec())
    }

    /// Token ids of a raw prompt (completions, `/generate`): the model's BOS first when its
    /// GGUF asks for one.
    ///
    /// # Errors
    /// Tokenizer failure.
    pub fn encode_raw(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        if let Some(bos) = self.bos_id
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// Checks that a prompt leaves room for at least one token.
    ///
    /// # Errors
    /// [`ContextExceeded`].
    pub fn check_fits(&self, prompt_tokens: usize) -> Result<(), ContextExceeded> {
        if prompt_tokens == 0 || prompt_tokens >= self.context {
            return Err(ContextExceeded {
                prompt_tokens,
                context: self.context,
            });
        }
        Ok(())
    }

    /// Generates from prompt tokens, calling `emit` with text as it is decoded and once with
    /// [`Event::Done`]. Blocking (run it off the async threads). Stops early, without error,
    /// when `emit` returns `false` or `cancelled` returns `true` (checked before every forward
    /// pass: the caller went away).
    ///
    /// # Errors
    /// Tensor failures; a prompt that does not fit.
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &SamplingParams,
        cancelled: &dyn Fn() -> bool,
        mut emit: impl FnMut(Event) -> bool,
    ) -> anyhow::Result<()> {
        self.check_fits(prompt.len())?;
        let max_tokens = params.max_tokens.min(self.context - prompt.len());
        let mut model = self.weights.clone();
        let seed = params
            .seed
            .unwrap_or_else(|| RandomState::new().hash_one(std::time::SystemTime::now()));
        // Below this, logits / temperature overflows f32; it is greedy in all but name.
        let sampling = if params.temperature < 1e-4 {
            Sampling::ArgMax
        } else {
            match (params.top_k, params.top_p < 1.0) {
                (0, false) => Sampling::All {
                    temperature: params.temperature,
                },
                (0, true) => Sampling::TopP {
                    p: params.top_p,
                    temperature: params.temperature,
                },
                (k, false) => Sampling::TopK {
                    k,
                    temperature: params.temperature,
                },
                (k, true) => Sampling::TopKThenTopP {
                    k,
                    p: params.top_p,
                    temperature: params.temperature,
                },
            }
        };
        let mut sampler = LogitsProcessor::from_sampling(seed, sampling);
        let mut decoder = self.tokenizer.decode_stream(true);
        let mut stops = StopMatcher::new(params.stop.clone());
        let mut counts: HashMap<u32, f32> = HashMap::new();
        let mut generated: Vec<u32> = Vec::new();

        // Prefill in chunks: attention memory grows with the square of a pass's length, and a
        // caller that leaves mid-prompt is noticed between chunks.
        let mut logits = None;
        for (i, chunk) in prompt.chunks(PREFILL_CHUNK).enumerate() {
            if cancelled() {
                return Ok(());
            }
            let input = Tensor::new(chunk, &self.device)?.unsqueeze(0)?;
            logits = Some(model.forward(&input, i * PREFILL_CHUNK)?.squeeze(0)?);
        }
        let Some(mut logits) = logits else {
            anyhow::bail!("empty prompt");
        };
        let mut finish = FinishReason::Length;
        while generated.len() < max_tokens {
            let logits_now = self.penalised(logits, &counts, params)?;
            let next = sampler.sample(&logits_now)?;
            if self.stop_ids.contains(&next) {
                finish = FinishReason::Stop;
                break;
            }
            generated.push(next);
            *counts.entry(next).or_insert(0.0) += 1.0;
            if let Some(piece) = decoder.step(next).map_err(anyhow::Error::msg)? {
                match stops.push(&piece) {
                    Step::Continue(text) => {
                        if !text.is_empty() && !emit(Event::Text(text)) {
                            return Ok(());
                        }
                    }
                    Step::Stopped(text) => {
                        if !text.is_empty() && !emit(Event::Text(text)) {
                            return Ok(());
                        }
                        finish = FinishReason::Stop;
                        break;
                    }
                }
            }
            if generated.len() >= max_tokens {
                break;
            }
            if cancelled() {
                return Ok(());
            }
            let input = Tensor::new(&[next], &self.device)?.unsqueeze(0)?;
            logits = model
                .forward(&input, prompt.len() + generated.len() - 1)?
                .squeeze(0)?;
        }
        // Text held back as a possible stop sequence that never completed (after a stop
        // sequence this is empty).
        let rest = stops.finish();
        if !rest.is_empty() && !emit(Event::Text(rest)) {
            return Ok(());
        }
        emit(Event::Done {
            finish_reason: finish,
            usage: Usage::new(prompt.len(), generated.len()),
            token_ids: generated,
        });
        Ok(())
    }

    /// Applies OpenAI's presence and frequency penalties to the logits.
    fn penalised(
        &self,
        logits: Tensor,
        counts: &HashMap<u32, f32>,
        params: &SamplingParams,
    ) -> anyhow::Result<Tensor> {
        if counts.is_empty() || (params.presence_penalty == 0.0 && params.frequency_penalty == 0.0)
        {
            return Ok(logits);
        }
        let mut values: Vec<f32> = logits.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        for (&token, &count) in counts {
            if let Some(v) = values.get_mut(token as usize) {
                *v -= params.frequency_penalty * count + params.presence_penalty;
            }
        }
        Ok(Tensor::new(values, &self.device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_conversation_splits_into_template_text_and_messages() {
        let rendered = format!(
            "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n{}<|im_end|>\n<|im_start|>assistant\n",
            placeholder(0),
            placeholder(1)
        );
        assert_eq!(
            split_rendered(&rendered, 2),
            Some(vec![
                Piece::Template("<|im_start|>user\n"),
                Piece::Message(0),
                Piece::Template("<|im_end|>\n<|im_start|>assistant\n"),
                Piece::Message(1),
                Piece::Template("<|im_end|>\n<|im_start|>assistant\n"),
            ])
        );
    }

    #[test]
    fn templates_that_drop_repeat_or_reorder_messages_do_not_split() {
        let (a, b) = (placeholder(0), placeholder(1));
        assert_eq!(split_rendered(&format!("x{a}y"), 2), None, "dropped");
        assert_eq!(split_rendered(&format!("{a}{a}{b}"), 2), None, "repeated");
        assert_eq!(split_rendered(&format!("{b}{a}"), 2), None, "reordered");
        assert_eq!(
            split_rendered(&format!("{a}{b}{b}"), 2),
            None,
            "repeated last"
        );
        assert_eq!(
            split_rendered("plain", 0),
            Some(vec![Piece::Template("plain")])
        );
    }
}
