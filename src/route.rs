//! Pure routing: which LLM API a request speaks, and which provider serves it.
//!
//! The API is recognised from the path's tail, so any prefix works
//! (`/v1/chat/completions`, `/openai/deployments/gpt4o/chat/completions`,
//! `/serving-endpoints/chat/completions`, `/vllm/v1/completions`). Databricks'
//! `/serving-endpoints/{name}/invocations` carries any payload: its API is
//! decided from the request body once it has been read ([`Api::resolve`]).
//! Paths that are not an LLM API are forwarded untraced.

use http::Method;
use serde_json::Value;

/// An LLM API llmtap knows how to trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI Chat Completions (`POST .../chat/completions`).
    ChatCompletions,
    /// OpenAI Responses (`POST .../responses`).
    Responses,
    /// Anthropic Messages (`POST .../messages`).
    Messages,
    /// OpenAI legacy Completions (`POST .../completions`).
    Completions,
    /// OpenAI Embeddings (`POST .../embeddings`).
    Embeddings,
    /// Databricks serving endpoint (`POST .../serving-endpoints/{name}/invocations`),
    /// until the body says which API it is.
    Invocations,
}

impl Api {
    /// Every API.
    pub const ALL: [Api; 6] = [
        Api::ChatCompletions,
        Api::Responses,
        Api::Messages,
        Api::Completions,
        Api::Embeddings,
        Api::Invocations,
    ];

    /// The API a [`Api::label`] names.
    pub fn from_label(label: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|a| a.label() == label)
    }

    /// Label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
            Api::Responses => "responses",
            Api::Messages => "messages",
            Api::Completions => "completions",
            Api::Embeddings => "embeddings",
            Api::Invocations => "invocations",
        }
    }

    /// Root span name, as MLflow's autologging names it.
    pub fn span_name(self) -> &'static str {
        match self {
            Api::ChatCompletions | Api::Completions | Api::Invocations => "Completions",
            Api::Responses => "Responses",
            Api::Messages => "Messages.create",
            Api::Embeddings => "Embeddings",
        }
    }

    /// `mlflow.spanType`.
    pub fn span_type(self) -> &'static str {
        match self {
            Api::ChatCompletions | Api::Responses | Api::Messages | Api::Invocations => {
                "CHAT_MODEL"
            }
            Api::Completions => "LLM",
            Api::Embeddings => "EMBEDDING",
        }
    }

    /// `gen_ai.operation.name`.
    pub fn operation(self) -> &'static str {
        match self {
            Api::ChatCompletions | Api::Responses | Api::Messages | Api::Invocations => "chat",
            Api::Completions => "text_completion",
            Api::Embeddings => "embeddings",
        }
    }

    /// `mlflow.message.format`.
    pub fn message_format(self) -> &'static str {
        match self {
            Api::Messages => "anthropic",
            _ => "openai",
        }
    }

    /// What ends a complete stream of this API.
    pub fn stream_end_marker(self) -> &'static str {
        match self {
            Api::Responses => "a response.completed/failed/incomplete event",
            Api::Messages => "message_stop",
            _ => "[DONE]",
        }
    }

    /// True for APIs whose stream can be asked for usage with
    /// `stream_options.include_usage`.
    pub fn has_stream_usage_option(self) -> bool {
        matches!(self, Api::ChatCompletions | Api::Completions)
    }

    /// The concrete API of a request, given its JSON body: settles
    /// [`Api::Invocations`] by the payload's shape; others are unchanged.
    pub fn resolve(self, request: Option<&Value>) -> Api {
        if self != Api::Invocations {
            return self;
        }
        let has = |k: &str| request.and_then(|r| r.get(k)).is_some();
        if has("messages") {
            Api::ChatCompletions
        } else if has("prompt") {
            Api::Completions
        } else if has("input") {
            Api::Embeddings
        } else {
            // dataframe_split / instances / inputs: a custom model; traced as a chat-shaped call.
            Api::Invocations
        }
    }
}

/// Classifies a request by method and path (without query).
pub fn classify(method: &Method, path: &str) -> Option<Api> {
    if method != Method::POST {
        return None;
    }
    let path = path.trim_end_matches('/');
    let mut rev = path.rsplit('/');
    let last = rev.next().unwrap_or("");
    let before = rev.next().unwrap_or("");
    match (before, last) {
        ("chat", "completions") => Some(Api::ChatCompletions),
        (_, "completions") => Some(Api::Completions),
        (_, "responses") => Some(Api::Responses),
        (_, "messages") if !path.contains("/threads/") => Some(Api::Messages),
        (_, "embeddings") => Some(Api::Embeddings),
        (_, "invocations") if path.contains("/serving-endpoints/") => Some(Api::Invocations),
        _ => None,
    }
}

/// The Azure OpenAI deployment named in the path, if any
/// (`/openai/deployments/{name}/...`).
pub fn azure_deployment(path: &str) -> Option<&str> {
    segment_after(path, "deployments").filter(|_| path.contains("/openai/deployments/"))
}

/// The Databricks serving endpoint named in the path, if any
/// (`/serving-endpoints/{name}/invocations`).
pub fn serving_endpoint(path: &str) -> Option<&str> {
    segment_after(path, "serving-endpoints")
        .filter(|name| *name != "chat" && *name != "completions" && *name != "embeddings")
}

fn segment_after<'a>(path: &'a str, marker: &str) -> Option<&'a str> {
    let mut parts = path.split('/');
    parts.find(|p| *p == marker)?;
    parts.next().filter(|s| !s.is_empty())
}

/// Every name [`provider`] returns.
const PROVIDERS: [&str; 4] = ["azure.ai.openai", "databricks", "anthropic", "openai"];

/// The provider name [`provider`] would return, if `name` is one.
pub fn known_provider(name: &str) -> Option<&'static str> {
    PROVIDERS.into_iter().find(|p| *p == name)
}

/// The provider name (`gen_ai.provider.name`, `mlflow.llm.provider`) of a call.
pub fn provider(host: &str, path: &str, api: Api) -> &'static str {
    let host = host.to_ascii_lowercase();
    if host.ends_with(".openai.azure.com")
        || host.ends_with(".azure.com")
        || azure_deployment(path).is_some()
    {
        "azure.ai.openai"
    } else if host.contains("databricks") || path.contains("/serving-endpoints/") {
        "databricks"
    } else if host.ends_with("anthropic.com") || api == Api::Messages {
        "anthropic"
    } else {
        // api.openai.com and every OpenAI-compatible server (vLLM, Ollama, ...).
        "openai"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(p: &str) -> Option<Api> {
        classify(&Method::POST, p)
    }

    #[test]
    fn apis_under_any_prefix() {
        for (p, api) in [
            ("/v1/chat/completions", Api::ChatCompletions),
            ("/v1/chat/completions/", Api::ChatCompletions),
            ("/openai/v1/chat/completions", Api::ChatCompletions),
            (
                "/openai/deployments/gpt4o/chat/completions",
                Api::ChatCompletions,
            ),
            ("/serving-endpoints/chat/completions", Api::ChatCompletions),
            ("/chat/completions", Api::ChatCompletions),
            ("/v1/completions", Api::Completions),
            ("/openai/deployments/instruct/completions", Api::Completions),
            ("/v1/responses", Api::Responses),
            ("/openai/v1/responses", Api::Responses),
            ("/v1/messages", Api::Messages),
            ("/anthropic/v1/messages", Api::Messages),
            ("/v1/embeddings", Api::Embeddings),
            ("/openai/deployments/emb/embeddings", Api::Embeddings),
            ("/serving-endpoints/my-llm/invocations", Api::Invocations),
        ] {
            assert_eq!(post(p), Some(api), "{p}");
        }
    }

    #[test]
    fn other_paths_and_methods_are_untraced() {
        assert_eq!(classify(&Method::GET, "/v1/chat/completions"), None);
        assert_eq!(classify(&Method::GET, "/v1/models"), None);
        assert_eq!(post("/v1/files"), None);
        assert_eq!(post("/v1/chat/completionsx"), None);
        assert_eq!(post("/v1/messages/count_tokens"), None);
        assert_eq!(post("/v1/messages/batches"), None);
        assert_eq!(post("/v1/threads/t1/messages"), None);
        assert_eq!(post("/v1/responses/resp_1/cancel"), None);
        assert_eq!(post("/model/invocations"), None);
    }

    #[test]
    fn invocations_resolve_by_payload() {
        let chat = serde_json::json!({"messages": []});
        let prompt = serde_json::json!({"prompt": "x"});
        let emb = serde_json::json!({"input": ["x"]});
        let df = serde_json::json!({"dataframe_split": {}});
        assert_eq!(Api::Invocations.resolve(Some(&chat)), Api::ChatCompletions);
        assert_eq!(Api::Invocations.resolve(Some(&prompt)), Api::Completions);
        assert_eq!(Api::Invocations.resolve(Some(&emb)), Api::Embeddings);
        assert_eq!(Api::Invocations.resolve(Some(&df)), Api::Invocations);
        assert_eq!(Api::Invocations.resolve(None), Api::Invocations);
        assert_eq!(Api::Messages.resolve(Some(&chat)), Api::Messages);
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(
            azure_deployment("/openai/deployments/gpt4o/chat/completions"),
            Some("gpt4o")
        );
        assert_eq!(azure_deployment("/v1/chat/completions"), None);
        assert_eq!(
            serving_endpoint("/serving-endpoints/my-llm/invocations"),
            Some("my-llm")
        );
        assert_eq!(
            serving_endpoint("/serving-endpoints/chat/completions"),
            None
        );
    }

    #[test]
    fn providers() {
        assert_eq!(
            provider(
                "api.openai.com",
                "/v1/chat/completions",
                Api::ChatCompletions
            ),
            "openai"
        );
        assert_eq!(
            provider(
                "myres.openai.azure.com",
                "/openai/deployments/x/chat/completions",
                Api::ChatCompletions
            ),
            "azure.ai.openai"
        );
        assert_eq!(
            provider(
                "127.0.0.1",
                "/openai/deployments/x/chat/completions",
                Api::ChatCompletions
            ),
            "azure.ai.openai"
        );
        assert_eq!(
            provider(
                "adb-1.azuredatabricks.net",
                "/serving-endpoints/x/invocations",
                Api::Invocations
            ),
            "databricks"
        );
        assert_eq!(
            provider("api.anthropic.com", "/v1/messages", Api::Messages),
            "anthropic"
        );
        assert_eq!(
            provider("127.0.0.1", "/v1/messages", Api::Messages),
            "anthropic"
        );
        assert_eq!(
            provider("127.0.0.1", "/v1/chat/completions", Api::ChatCompletions),
            "openai"
        );
    }
}
