"""Log one chat trace (user, session, token usage, a tag) and one feedback
with the real MLflow client, to wherever the environment points it
(MLFLOW_TRACKING_URI=databricks, DATABRICKS_* ...). Prints `TRACE_ID <id>`
and `DONE`. Used by record_databricks.py and tests/databricks_standin.rs.

    python dbx_client.py [experiment|uc]

`uc` sends the trace to the Unity Catalog schema main.llmtap instead of the
experiment (and logs no feedback).
"""
import os, sys, time, mlflow
from mlflow.entities import AssessmentSource
scenario = sys.argv[1] if len(sys.argv) > 1 else "experiment"
if scenario == "uc":
    from mlflow.entities.trace_location import UCSchemaLocation
    mlflow.tracing.set_destination(UCSchemaLocation(catalog_name="main", schema_name="llmtap"))

@mlflow.trace(span_type="CHAT_MODEL", name="chat")
def chat(messages, model="gpt-4o-mini"):
    mlflow.update_current_trace(
        metadata={"mlflow.trace.user": "alice", "mlflow.trace.session": "sess-1"},
        tags={"team": "search"},
    )
    span = mlflow.get_current_active_span()
    span.set_attribute("mlflow.chat.tokenUsage",
                       {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17})
    return {"choices": [{"message": {"role": "assistant", "content": "hi there"}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}

chat([{"role": "user", "content": "hello"}])
trace_id = mlflow.get_last_active_trace_id()
print("TRACE_ID", trace_id, flush=True)
if scenario != "uc":
    mlflow.log_feedback(trace_id=trace_id, name="helpful", value=True,
                        source=AssessmentSource(source_type="HUMAN", source_id="alice"),
                        rationale="answered")
print("DONE", flush=True)
