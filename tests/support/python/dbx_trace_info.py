"""The trace info MLflow's client would send to Databricks for a trace, computed
by the client's own code, for llmtap's tests of its Databricks sink.

Usage: dbx_trace_info.py < {"document": {"spans": [...]}, "experiment_id": "1"}
       dbx_trace_info.py < {"document": {...}, "uc_schema": "catalog.schema"}

The input is the span document llmtap uploads (Span.to_dict() form). The
script rebuilds the spans with TraceData.from_dict (so the document must be
one the client can read back), then runs the steps the client runs when a
trace ends and is exported with MLFLOW_TRACKING_URI=databricks:
BaseMlflowSpanProcessor._update_trace_info (time, duration, state, inputs /
outputs metadata, aggregated token usage and cost), set_request_response_preview,
add_size_stats_to_trace_metadata, then prints the StartTraceV3 request body
(message_to_json), one per line; with "uc_schema", the v4 CreateTraceInfo body
the client sends for a Unity Catalog schema destination instead. user.id / session.id on the root span stand
for what an application sets with update_current_trace(metadata=...), and
mlflow.traceTag.* attributes for its tags.
"""

import json
import logging
import os
import sys
import warnings

os.environ["MLFLOW_TRACKING_URI"] = "databricks"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main():
    warnings.simplefilter("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    from mlflow.entities import Trace, TraceData, TraceInfo
    from mlflow.entities.trace_location import TraceLocation
    from mlflow.entities.trace_state import TraceState
    from mlflow.protos.service_pb2 import StartTraceV3
    from mlflow.tracing.constant import SpanAttributeKey, TraceMetadataKey
    from mlflow.tracing.processor.base_mlflow import BaseMlflowSpanProcessor
    from mlflow.tracing.utils import (
        add_size_stats_to_trace_metadata,
        construct_trace_id_v4,
        aggregate_cost_from_spans,
        aggregate_usage_from_spans,
        update_trace_state_from_span_conditionally,
    )
    from mlflow.tracing.utils.truncation import set_request_response_preview
    from mlflow.utils.proto_json_utils import message_to_json

    for line in sys.stdin:
        if not line.strip():
            continue
        inp = json.loads(line)
        data = TraceData.from_dict(inp["document"])
        root = data._get_root_span()
        attrs = root.attributes
        uc = inp.get("uc_schema")
        metadata = {"mlflow.trace_schema.version": "4" if uc else "3"}
        for key, attr in (
            (TraceMetadataKey.TRACE_USER, "user.id"),
            (TraceMetadataKey.TRACE_SESSION, "session.id"),
        ):
            if attrs.get(attr):
                metadata[key] = attrs[attr]
        tags = {
            k[len(SpanAttributeKey.TRACE_TAG_PREFIX):]: v
            for k, v in attrs.items()
            if k.startswith(SpanAttributeKey.TRACE_TAG_PREFIX)
        }
        tags["mlflow.traceName"] = root.name
        if uc:
            catalog, schema = uc.split(".")
            location = TraceLocation.from_databricks_uc_schema(catalog, schema)
        else:
            location = TraceLocation.from_experiment_id(inp["experiment_id"])
        # The document's mlflow.traceRequestId: tr-<hex>, or trace:/<uc>/<hex>.
        trace_id = root.trace_id
        if uc and trace_id != construct_trace_id_v4(uc, root._trace_id):
            raise SystemExit(f"span document names trace {trace_id}, not a v4 id in {uc}")
        info = TraceInfo(
            trace_id=trace_id,
            trace_location=location,
            request_time=root.start_time_ns // 1_000_000,
            state=TraceState.IN_PROGRESS,
            trace_metadata=metadata,
            tags=tags,
        )
        # BaseMlflowSpanProcessor._update_trace_info
        info.request_time = root.start_time_ns // 1_000_000
        info.execution_duration = (root.end_time_ns - root.start_time_ns) // 1_000_000

        class _T:
            pass

        holder = _T()
        holder.info = info
        update_trace_state_from_span_conditionally(holder, root._span)
        raw = root._span.attributes
        info.trace_metadata[TraceMetadataKey.INPUTS] = BaseMlflowSpanProcessor._truncate_metadata(
            None, raw.get(SpanAttributeKey.INPUTS)
        )
        info.trace_metadata[TraceMetadataKey.OUTPUTS] = BaseMlflowSpanProcessor._truncate_metadata(
            None, raw.get(SpanAttributeKey.OUTPUTS)
        )
        if usage := aggregate_usage_from_spans(data.spans):
            info.trace_metadata[TraceMetadataKey.TOKEN_USAGE] = json.dumps(usage)
        if cost := aggregate_cost_from_spans(data.spans):
            info.trace_metadata[TraceMetadataKey.COST] = json.dumps(cost)
        set_request_response_preview(info, data)
        trace = Trace(info, data)
        add_size_stats_to_trace_metadata(trace)
        if uc:
            body = message_to_json(info.to_proto())
        else:
            body = message_to_json(StartTraceV3(trace=Trace(info, TraceData(spans=[])).to_proto()))
        sys.stdout.write(json.dumps(json.loads(body)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
