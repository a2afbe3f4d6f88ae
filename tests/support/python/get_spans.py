"""Print the spans of MLflow traces as JSON, for llmtap's integration tests.

Usage: MLFLOW_TRACKING_URI=http://127.0.0.1:PORT get_spans.py TRACE_ID...

Prints one JSON object {trace_id: [span.to_dict(), ...]} on stdout, with each
span's "attributes" values JSON-decoded (MLflow stores every attribute as a
JSON-encoded string; a value that is not valid JSON is kept as the raw
string). LLMTAP_RAW_ATTRIBUTES=1 leaves them as stored.

Besides to_dict()'s keys (whose ids are base64), each span gets three extra
keys: "span_type" (span.span_type), "span_id_hex" and "parent_span_id_hex"
(16 lowercase hex digits, null for a root span).

A trace the client cannot find maps to null. Anything else that goes wrong is
an exception and a non-zero exit, so the test fails loudly.
"""

import json
import logging
import os
import sys
import warnings


def decode(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def main(trace_ids):
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        sys.stderr.write("get_spans.py: MLFLOW_TRACKING_URI is not set\n")
        return 2
    warnings.simplefilter("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    import mlflow

    raw = os.environ.get("LLMTAP_RAW_ATTRIBUTES") == "1"
    out = {}
    for trace_id in trace_ids:
        trace = mlflow.get_trace(trace_id)
        if trace is None:
            out[trace_id] = None
            continue
        spans = []
        for span in trace.data.spans:
            d = span.to_dict()
            d["span_type"] = span.span_type
            d["span_id_hex"] = span.span_id
            d["parent_span_id_hex"] = span.parent_id
            attrs = d.get("attributes")
            if raw:
                pass
            elif isinstance(attrs, dict):
                d["attributes"] = {k: decode(v) for k, v in attrs.items()}
            spans.append(d)
        out[trace_id] = spans
    json.dump(out, sys.stdout, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
