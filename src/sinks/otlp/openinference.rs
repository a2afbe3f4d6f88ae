//! The OpenInference attributes (Arize Phoenix's vocabulary) added to a
//! GenAI span when `semconv = "genai+openinference"`.
//!
//! Phoenix (checked against arize-phoenix 20.26, `phoenix/trace/gen_ai/
//! conversion.py`) derives OpenInference from `gen_ai.*` by itself — kind,
//! model, provider, token counts, invocation parameters and the flattened
//! `llm.input_messages` / `llm.output_messages` — and never overrides an
//! attribute the span carries. So this layer adds what that derivation
//! cannot know, and leaves the message namespaces alone (writing any key
//! there would switch Phoenix's own, schema-checked derivation off):
//!
//! - `openinference.span.kind` (`LLM`, or `EMBEDDING`);
//! - `input.value` / `output.value`: the request and response JSON (streams
//!   rebuilt), with `input.mime_type` / `output.mime_type` `application/json`
//!   — Phoenix shows these as the span's input and output;
//! - `llm.model_name` (the model that answered, else the one asked for),
//!   `llm.provider`, `llm.system`;
//! - `llm.token_count.{prompt,completion,total}`,
//!   `llm.token_count.prompt_details.{cache_read,cache_write}`,
//!   `llm.token_count.completion_details.reasoning`.
//!
//! Pure.

use opentelemetry_proto::tonic::trace::v1::Span;

use super::genai::{Attrs, Out};
use super::messages::Family;

const JSON: &str = "application/json";

/// `llm.provider` and `llm.system` for a `gen_ai.provider.name`.
fn provider_and_system(provider: &str) -> (&str, Option<&str>) {
    match provider {
        "openai" => ("openai", Some("openai")),
        "anthropic" => ("anthropic", Some("anthropic")),
        "azure.ai.openai" => ("azure", Some("openai")),
        other => (other, None),
    }
}

/// Adds the OpenInference attributes to `genai` (the span [`super::genai::to_genai`]
/// made from `canonical`).
pub fn add(genai: &mut Span, canonical: &Span, family: Family) {
    let src = Attrs(&canonical.attributes);
    let mut out = Out(std::mem::take(&mut genai.attributes));
    let kind = if family == Family::Embeddings {
        "EMBEDDING"
    } else {
        "LLM"
    };
    out.str("openinference.span.kind", kind);
    for (from, value, mime) in [
        ("mlflow.spanInputs", "input.value", "input.mime_type"),
        ("mlflow.spanOutputs", "output.value", "output.mime_type"),
    ] {
        if let Some(text) = src.str(from) {
            out.str(value, text);
            let is_json = serde_json::from_str::<serde_json::Value>(text).is_ok();
            out.str(mime, if is_json { JSON } else { "text/plain" });
        }
    }
    let model = src
        .str("gen_ai.response.model")
        .or(src.str("mlflow.llm.model"))
        .or(src.str("gen_ai.request.model"));
    if let Some(m) = model {
        let key = if family == Family::Embeddings {
            "embedding.model_name"
        } else {
            "llm.model_name"
        };
        out.str(key, m);
    }
    if let Some(p) = src.str("gen_ai.provider.name") {
        let (provider, system) = provider_and_system(p);
        out.str("llm.provider", provider);
        if let Some(s) = system {
            out.str("llm.system", s);
        }
    }
    tokens(&mut out, &src);
    genai.attributes = out.0;
}

fn tokens(out: &mut Out, src: &Attrs<'_>) {
    let input = src.int("gen_ai.usage.input_tokens");
    let output = src.int("gen_ai.usage.output_tokens");
    if let Some(n) = input {
        out.int("llm.token_count.prompt", n);
    }
    if let Some(n) = output {
        out.int("llm.token_count.completion", n);
    }
    let usage = src.json("mlflow.chat.tokenUsage");
    let total = usage
        .as_ref()
        .and_then(|u| u.get("total_tokens"))
        .and_then(serde_json::Value::as_i64)
        .or(input.zip(output).map(|(i, o)| i + o));
    if let Some(n) = total {
        out.int("llm.token_count.total", n);
    }
    for (k, attr) in [
        (
            "cache_read_input_tokens",
            "llm.token_count.prompt_details.cache_read",
        ),
        (
            "cache_creation_input_tokens",
            "llm.token_count.prompt_details.cache_write",
        ),
    ] {
        let n = usage
            .as_ref()
            .and_then(|u| u.get(k))
            .and_then(serde_json::Value::as_i64);
        if let Some(n) = n {
            out.int(attr, n);
        }
    }
    if let Some(n) = src.int("llmtap.usage.reasoning_tokens") {
        out.int("llm.token_count.completion_details.reasoning", n);
    }
}
