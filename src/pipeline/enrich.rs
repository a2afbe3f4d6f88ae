//! After a span is built, the facts that need state across calls or the
//! configuration: the call's session ([`crate::session::shared`]) and its
//! cost ([`crate::cost`]). Runs in the parse workers, never on the
//! request path.
//!
//! - `session.id` (MLflow: `mlflow.trace.session`) and
//!   `llmtap.session.source` (given, responses_chain, agent_header,
//!   agent_metadata, history_prefix, new) on every span.
//! - `mlflow.llm.cost` (`{"input_cost","output_cost","total_cost"}`, USD) on
//!   every call with usage and a priced model; a call with usage and no
//!   price gets no cost (never 0) and is counted by provider.

use std::sync::Arc;

use crate::config::Config;
use crate::cost::{Cost, Price, PriceTable, Tokens};
use crate::exchange::Exchange;
use crate::metrics::Metrics;
use crate::record::SpanRecord;
use crate::session::shared::{Ask, Shared};
use crate::trace::facts::CallFacts;

/// The span attribute naming how the session was found.
pub const SESSION_SOURCE: &str = "llmtap.session.source";
/// MLflow's span cost attribute (`SpanAttributeKey.LLM_COST`).
pub const LLM_COST: &str = "mlflow.llm.cost";

/// The shared state of the step.
pub struct Enricher {
    sessions: Shared,
    prices: Arc<PriceTable>,
    metrics: Arc<Metrics>,
}

impl Enricher {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Enricher {
        Enricher {
            sessions: Shared::new(cfg.sessions.clone()),
            prices: cfg.cost.prices.clone(),
            metrics,
        }
    }

    /// Adds the session and the cost to `span`.
    pub fn apply(&self, ex: &Exchange, span: &mut SpanRecord, call: &CallFacts) {
        self.session(ex, span, call);
        match call.usage.as_ref().map(|u| priced(&self.prices, call, u)) {
            Some(Some((price, tokens, cost))) => {
                span.set(LLM_COST, cost.to_mlflow_json().to_string());
                self.metrics.cost.priced(&price.model, &tokens, &cost);
            }
            Some(None) => self.metrics.cost.unpriced(ex.provider),
            None => {}
        }
    }

    fn session(&self, ex: &Exchange, span: &mut SpanRecord, call: &CallFacts) {
        let Some(api) = call.api else { return };
        let (found, held) = self.sessions.recognise(Ask {
            api,
            body: call.request.as_ref(),
            agent_session: ex.context.agent_session.as_deref(),
            given: ex.context.session.as_deref(),
            response_id: call.response_id.as_deref(),
        });
        self.metrics.cost.sessions_held(held);
        // The given session may already be there (trace::set_context).
        span.attributes.retain(|(k, _)| k != "session.id");
        span.set("session.id", found.session);
        span.set(SESSION_SOURCE, found.source.as_str());
    }
}

/// The price, token counts and cost of a call with `usage`, or `None` when
/// its model has no price.
pub fn priced<'t>(
    table: &'t PriceTable,
    call: &CallFacts,
    usage: &crate::parse::usage::Usage,
) -> Option<(&'t Price, Tokens, Cost)> {
    let price = table.price(call.model.as_deref()?)?;
    let tokens = Tokens::from(usage);
    let cost = crate::cost::cost(&tokens, price, call.service_tier.as_deref());
    Some((price, tokens, cost))
}
