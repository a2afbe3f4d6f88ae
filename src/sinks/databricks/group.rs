//! One batch, many traces: the spans of an `ExportTraceServiceRequest`
//! grouped by trace id, in the order each trace first appears. Databricks
//! takes traces one at a time (a trace info, then its span document).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

/// The spans of one trace in a batch.
#[derive(Debug)]
pub struct TraceSpans<'a> {
    /// The OTLP trace id (16 bytes in a well-formed span).
    pub trace_id: &'a [u8],
    pub spans: Vec<&'a Span>,
    /// The resource attributes its first span came with (environment,
    /// `service.name` when asked for): trace tags, as MLflow makes them.
    pub resource: &'a [KeyValue],
}

impl TraceSpans<'_> {
    /// The trace id as 32 lowercase hex digits.
    pub fn hex_id(&self) -> String {
        hex(self.trace_id)
    }

    /// MLflow's v3 trace id: `tr-` + the hex id.
    pub fn mlflow_id(&self) -> String {
        format!("tr-{}", self.hex_id())
    }

    /// The root span (no parent); a trace whose root is not in the batch
    /// uses its first span, as MLflow does for a trace it only partly holds.
    pub fn root(&self) -> &Span {
        self.spans
            .iter()
            .find(|s| s.parent_span_id.is_empty())
            .or(self.spans.first())
            .expect("a group holds at least one span")
    }
}

/// Groups the batch's spans by trace id.
pub fn by_trace(batch: &ExportTraceServiceRequest) -> Vec<TraceSpans<'_>> {
    let mut out: Vec<TraceSpans<'_>> = Vec::new();
    let spans = batch.resource_spans.iter().flat_map(|r| {
        let resource = r.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        r.scope_spans
            .iter()
            .flat_map(|s| &s.spans)
            .map(move |span| (resource, span))
    });
    for (resource, span) in spans {
        match out
            .iter_mut()
            .find(|t| t.trace_id == span.trace_id.as_slice())
        {
            Some(t) => t.spans.push(span),
            None => out.push(TraceSpans {
                trace_id: &span.trace_id,
                spans: vec![span],
                resource,
            }),
        }
    }
    out
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::databricks::fixtures::{batch, chat_span, child_span};

    #[test]
    fn spans_are_grouped_by_trace_in_first_seen_order() {
        let a = chat_span([0xaa; 16], [1; 8]);
        let b = chat_span([0xbb; 16], [2; 8]);
        let a_child = child_span([0xaa; 16], [3; 8], [1; 8]);
        let req = batch(vec![a_child, b, a]);
        let groups = by_trace(&req);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].hex_id(), "aa".repeat(16));
        assert_eq!(groups[0].spans.len(), 2);
        assert_eq!(
            groups[0].root().span_id,
            vec![1; 8],
            "the root, not the first"
        );
        assert_eq!(groups[1].mlflow_id(), format!("tr-{}", "bb".repeat(16)));
    }
}
