"""Run a fixed set of SDK calls under MLflow's own autologging and print the traces.

The ground truth for llmtap's autolog fidelity (docs/autolog-fidelity.md):
the same calls made through llmtap are compared with what this prints.

Usage: autolog_traces.py PROVIDER_BASE_URL MLFLOW_TRACKING_URI [CALL...]
       autolog_traces.py --proxied EXPERIMENT LLMTAP_BASE_URL MLFLOW_TRACKING_URI [CALL...]

The second form is the other side of the comparison: no autologging, the
same calls sent through llmtap (whose MLflow sink writes to EXPERIMENT of
the same server); once llmtap has exported them, the experiment's traces are
read back in request order and printed under the same call names.

Starts nothing itself. PROVIDER_BASE_URL is a fake provider answering
OpenAI paths under /v1 and Anthropic's /v1/messages (llmtap's fixtures);
the model name selects an error: "err-429" -> HTTP 429, "err-400" -> HTTP 400
(each in the provider's own error body shape).
MLFLOW_TRACKING_URI is a running MLflow server.

Prints one JSON object {call_name: {"info": trace.info.to_dict(),
"spans": [span.to_dict() + "span_type"], "error": repr or null}} with each
span attribute JSON-decoded (MLflow stores attributes as JSON strings).
Every call uses max_retries=0 so an error is one request and one trace.
"""

import json
import logging
import signal
import sys
import time
import warnings

MESSAGES = [{"role": "user", "content": "Say hello"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def openai_calls(client):
    chat = client.chat.completions
    return {
        "chat_plain": lambda: chat.create(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0.2, max_tokens=50
        ),
        "chat_stream": lambda: list(
            chat.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        ),
        "chat_stream_usage": lambda: list(
            chat.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        ),
        "chat_tools": lambda: chat.create(
            model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS, tool_choice="auto"
        ),
        "responses_plain": lambda: client.responses.create(
            model="gpt-4o-mini", input="Say hello", instructions="Be brief"
        ),
        "embeddings": lambda: client.embeddings.create(
            model="text-embedding-3-small", input="hello"
        ),
        "chat_error_429": lambda: chat.create(model="err-429", messages=MESSAGES),
        "chat_error_400": lambda: chat.create(model="err-400", messages=MESSAGES),
    }


def anthropic_calls(client):
    msgs = client.messages

    def stream():
        with msgs.stream(model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES) as s:
            for _ in s:
                pass

    return {
        "anthropic_plain": lambda: msgs.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES
        ),
        "anthropic_stream_create": lambda: list(
            msgs.create(model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES, stream=True)
        ),
        "anthropic_stream_helper": stream,
        "anthropic_error_429": lambda: msgs.create(
            model="err-429", max_tokens=64, messages=MESSAGES
        ),
        "anthropic_error_400": lambda: msgs.create(
            model="err-400", max_tokens=64, messages=MESSAGES
        ),
    }


def decode(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def trace_dict(mlflow, trace_id):
    trace = mlflow.get_trace(trace_id)
    spans = []
    for span in trace.data.spans:
        d = span.to_dict()
        d["span_type"] = span.span_type
        d["attributes"] = {k: decode(v) for k, v in (d.get("attributes") or {}).items()}
        spans.append(d)
    return {"info": trace.info.to_dict(), "spans": spans}


def run(mlflow, name, call):
    before = mlflow.get_last_active_trace_id()
    error = None
    try:
        call()
    except Exception as e:  # the error traces are part of the ground truth
        error = f"{type(e).__name__}: {e}"
    trace_id = mlflow.get_last_active_trace_id()
    if trace_id is None or trace_id == before:
        return {"info": None, "spans": [], "error": error}
    # Traces are logged asynchronously: wait until this one is stored.
    mlflow.flush_trace_async_logging()
    out = trace_dict(mlflow, trace_id)
    out["error"] = error
    return out


def proxied(mlflow, calls, experiment):
    """Makes the calls (through llmtap), then reads llmtap's traces back."""
    errors = {}
    for name, call in calls.items():
        try:
            call()
            errors[name] = None
        except Exception as e:
            errors[name] = f"{type(e).__name__}: {e}"
        time.sleep(0.3)  # keeps request_time order unambiguous
    exp = mlflow.get_experiment_by_name(experiment)
    deadline = time.time() + 60
    while True:
        found = mlflow.search_traces(
            locations=[exp.experiment_id], return_type="list", order_by=["timestamp_ms ASC"]
        ) if exp else []
        if len(found) >= len(calls) or time.time() > deadline:
            break
        time.sleep(1)
        exp = exp or mlflow.get_experiment_by_name(experiment)
    out = {}
    for name, trace in zip(calls, found):
        out[name] = trace_dict(mlflow, trace.info.trace_id)
        out[name]["error"] = errors[name]
    return out


def main(argv):
    experiment = None
    if len(argv) > 2 and argv[1] == "--proxied":
        experiment, argv = argv[2], argv[:1] + argv[3:]
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    base, tracking, only = argv[1].rstrip("/"), argv[2], set(argv[3:])
    signal.alarm(280)  # never outlive the test that runs this (SIGALRM ends it)
    warnings.simplefilter("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    import anthropic
    import mlflow
    import openai

    mlflow.set_tracking_uri(tracking)
    oai = openai.OpenAI(base_url=base + "/v1", api_key="sk-fake", max_retries=0)
    ant = anthropic.Anthropic(base_url=base, api_key="sk-ant-fake", max_retries=0)
    calls = {**openai_calls(oai), **anthropic_calls(ant)}
    calls = {k: v for k, v in calls.items() if not only or k in only}
    if experiment:
        out = proxied(mlflow, calls, experiment)
    else:
        mlflow.set_experiment("autolog-fidelity")
        mlflow.openai.autolog()
        mlflow.anthropic.autolog()
        out = {name: run(mlflow, name, call) for name, call in calls.items()}
    json.dump(out, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
