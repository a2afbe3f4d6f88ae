//! Pure routing: which LLM API a request speaks, and which provider serves it.
//!
//! The API is recognised from the path's tail, so any prefix works
//! (`/v1/chat/completions`, `/openai/v1/chat/completions`, `/chat/completions`).
//! Paths that are not an LLM API are forwarded untraced.

use http::Method;

/// An LLM API llmtap knows how to trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI Chat Completions (`POST .../chat/completions`).
    ChatCompletions,
}

impl Api {
    /// Label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
        }
    }

    /// Root span name, as MLflow's autologging names it.
    pub fn span_name(self) -> &'static str {
        match self {
            Api::ChatCompletions => "Completions",
        }
    }

    /// `mlflow.spanType`.
    pub fn span_type(self) -> &'static str {
        match self {
            Api::ChatCompletions => "CHAT_MODEL",
        }
    }

    /// `gen_ai.operation.name`.
    pub fn operation(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat",
        }
    }

    /// `mlflow.message.format`.
    pub fn message_format(self) -> &'static str {
        match self {
            Api::ChatCompletions => "openai",
        }
    }
}

/// Classifies a request by method and path (without query).
pub fn classify(method: &Method, path: &str) -> Option<Api> {
    if method != Method::POST {
        return None;
    }
    let path = path.trim_end_matches('/');
    if path.ends_with("/chat/completions") || path == "chat/completions" {
        return Some(Api::ChatCompletions);
    }
    None
}

/// The provider name (`gen_ai.provider.name`, `mlflow.llm.provider`) for an upstream host.
pub fn provider_for_host(host: &str) -> &'static str {
    let host = host.to_ascii_lowercase();
    if host.ends_with(".openai.azure.com") || host.ends_with(".azure.com") {
        "azure.ai.openai"
    } else if host.contains("databricks") {
        "databricks"
    } else if host.ends_with("anthropic.com") {
        "anthropic"
    } else {
        // api.openai.com and every OpenAI-compatible server (vLLM, Ollama, ...).
        "openai"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_completions_under_any_prefix() {
        for p in [
            "/v1/chat/completions",
            "/v1/chat/completions/",
            "/openai/v1/chat/completions",
            "/serving-endpoints/chat/completions",
            "/chat/completions",
        ] {
            assert_eq!(
                classify(&Method::POST, p),
                Some(Api::ChatCompletions),
                "{p}"
            );
        }
    }

    #[test]
    fn other_paths_and_methods_are_untraced() {
        assert_eq!(classify(&Method::GET, "/v1/chat/completions"), None);
        assert_eq!(classify(&Method::GET, "/v1/models"), None);
        assert_eq!(classify(&Method::POST, "/v1/files"), None);
        assert_eq!(classify(&Method::POST, "/v1/chat/completionsx"), None);
    }

    #[test]
    fn providers_by_host() {
        assert_eq!(provider_for_host("api.openai.com"), "openai");
        assert_eq!(
            provider_for_host("myres.openai.azure.com"),
            "azure.ai.openai"
        );
        assert_eq!(provider_for_host("adb-1.azuredatabricks.net"), "databricks");
        assert_eq!(provider_for_host("127.0.0.1"), "openai");
    }
}
