//! What the parse stage learns about a call while building its span, handed
//! on (in [`super::Built`]) to the steps after the build that need state
//! across calls or settings: the session recogniser and the price table
//! (`crate::pipeline::enrich`).

use serde_json::Value;

use crate::parse::outcome::Outcome;
use crate::parse::usage::Usage;
use crate::route::Api;

/// One call's facts for sessions and cost.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CallFacts {
    /// The API, as resolved from the request body.
    pub api: Option<Api>,
    /// The request body as JSON (when it was parsed: within the budget).
    pub request: Option<Value>,
    /// The provider's token usage.
    pub usage: Option<Usage>,
    /// The model to price: the response's (dated) id, else the request's,
    /// else the deployment / serving endpoint named in the path.
    pub model: Option<String>,
    /// The service tier the response reports (OpenAI `service_tier`,
    /// Anthropic `usage.service_tier`).
    pub service_tier: Option<String>,
    /// The response's id (Responses API: what `previous_response_id` names).
    pub response_id: Option<String>,
}

impl CallFacts {
    /// The facts of a parsed call.
    pub fn of(
        api: Api,
        request: Option<Value>,
        outcome: &Outcome,
        deployment: Option<&str>,
    ) -> CallFacts {
        let request_model = request
            .as_ref()
            .and_then(|r| r.get("model"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let model = outcome
            .model
            .clone()
            .or(request_model)
            .or_else(|| deployment.map(str::to_owned));
        CallFacts {
            api: Some(api),
            request,
            usage: outcome.usage,
            model,
            service_tier: outcome.response.as_ref().and_then(service_tier),
            response_id: outcome.response_id.clone(),
        }
    }
}

/// `service_tier` at the top (OpenAI chat and Responses) or in `usage`
/// (Anthropic).
fn service_tier(response: &Value) -> Option<String> {
    let top = response.get("service_tier").and_then(Value::as_str);
    let usage = || response.get("usage")?.get("service_tier")?.as_str();
    top.or_else(usage).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_response_model_and_tier_come_first() {
        let outcome = Outcome {
            model: Some("gpt-4o-2024-08-06".into()),
            response: Some(json!({"service_tier": "priority"})),
            ..Outcome::default()
        };
        let req = json!({"model": "gpt-4o"});
        let f = CallFacts::of(Api::ChatCompletions, Some(req.clone()), &outcome, None);
        assert_eq!(f.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(f.service_tier.as_deref(), Some("priority"));
        let anthropic = Outcome {
            response: Some(json!({"usage": {"service_tier": "batch"}})),
            ..Outcome::default()
        };
        let f = CallFacts::of(Api::Messages, Some(req), &anthropic, Some("ep"));
        assert_eq!(f.model.as_deref(), Some("gpt-4o"));
        assert_eq!(f.service_tier.as_deref(), Some("batch"));
        let f = CallFacts::of(Api::Messages, None, &Outcome::default(), Some("ep"));
        assert_eq!(f.model.as_deref(), Some("ep"));
    }
}
