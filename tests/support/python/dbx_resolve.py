"""Resolve Databricks workspace configs with the real Databricks SDK, for
comparison with llmtap's resolution (tests/databricks_config_sdk.rs).

stdin: a JSON list of cases {"env": {...}, "profile": str|null}. Each case
runs with exactly that environment for DATABRICKS_* and HOME. stdout: a JSON
list of {"host", "auth", "token", "client_id"} or {"error": "..."}.
"""
import json
import os
import sys
import time

from databricks.sdk.config import Config

out = []
base = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_") and k != "HOME"}
for case in json.load(sys.stdin):
    os.environ.clear()
    os.environ.update(base)
    os.environ.update(case["env"])
    started = time.time()
    try:
        # Short network budgets: the SDK fetches host metadata while resolving
        # and would otherwise retry an unreachable host for 300 s.
        kwargs = {"retry_timeout_seconds": 2, "http_timeout_seconds": 2}
        if case.get("profile"):
            kwargs["profile"] = case["profile"]
        cfg = Config(**kwargs)
        out.append({"host": cfg.host, "auth": cfg.auth_type, "token": cfg.token, "client_id": cfg.client_id})
    except Exception as e:  # the SDK raises ValueError subclasses
        out.append({"error": str(e)})
    print(f"case {len(out)}: {time.time() - started:.1f}s {str(out[-1])[:150]}", file=sys.stderr)
print(json.dumps(out))
