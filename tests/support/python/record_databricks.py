"""Record what the real MLflow client (and the Databricks SDK under it) sends
to a Databricks workspace.

A loopback HTTP server answers like a workspace would (host metadata, OIDC
discovery, token grant, experiment get, StartTraceV3, upload credentials, the
signed PUT, assessments, the OTLP endpoint, the v4 info call) and records every
request. The script then runs the MLflow client in a child process once per
auth scenario and writes one JSON file per scenario:

    python record_databricks.py OUT_DIR [SCENARIO ...]

Scenarios: pat, oauth, profile, uc. Secrets are fake (`dapi-fake...`,
`fake-client-secret`); the files record them as sent so the wire shape is
exact. Run it with the test venv's python (mlflow 3.17.2 + databricks-sdk).
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

EXPERIMENT_ID = "1234567890"
WORKSPACE_ID = "7474650000000001"
PAT = "dapi-fake0123456789abcdef"
CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"
ISSUED_TOKEN = "fake-issued-token-1"
UPLOAD_HEADER = ("x-amz-server-side-encryption", "AES256")
SIGNATURE = "fake-signature"
UC_SCHEMA = ("main", "llmtap")

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dbx_client.py")


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log = []
    lock = threading.Lock()

    def log_message(self, *args):  # quiet
        pass

    def _record(self, body):
        url = urlsplit(self.path)
        entry = {
            "method": self.command,
            "path": url.path,
            "query": url.query,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("utf-8", "replace") if _is_text(body) else None,
            "body_hex": None if _is_text(body) else body.hex(),
        }
        with self.lock:
            self.log.append(entry)
        return url

    def _reply(self, status, obj, extra=()):
        data = json.dumps(obj).encode() if obj is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self._dispatch(self._record(self._body()), b"")

    def do_POST(self):
        body = self._body()
        self._dispatch(self._record(body), body)

    def do_PUT(self):
        body = self._body()
        self._dispatch(self._record(body), body)

    def do_PATCH(self):
        body = self._body()
        self._dispatch(self._record(body), body)

    def _dispatch(self, url, body):
        host = f"http://{self.headers['Host']}"
        p = url.path
        if p == "/.well-known/databricks-config":
            return self._reply(200, {"oidc_endpoint": f"{host}/oidc", "workspace_id": WORKSPACE_ID})
        if p == "/oidc/.well-known/oauth-authorization-server":
            return self._reply(200, {
                "issuer": f"{host}/oidc",
                "authorization_endpoint": f"{host}/oidc/v1/authorize",
                "token_endpoint": f"{host}/oidc/v1/token",
            })
        if p == "/oidc/v1/token":
            return self._reply(200, {"access_token": ISSUED_TOKEN, "token_type": "Bearer",
                                     "expires_in": 3600, "scope": "all-apis"})
        if p.startswith("/api/2.0/mlflow/experiments/get"):
            return self._reply(200, {"experiment": _experiment()})
        if p == "/api/3.0/mlflow/traces" and self.command == "POST":
            info = json.loads(body)["trace"]["trace_info"]
            info.setdefault("tags", {})["mlflow.artifactLocation"] = (
                f"dbfs:/databricks/mlflow-tracking/{EXPERIMENT_ID}/{info['trace_id']}/artifacts")
            return self._reply(200, {"trace": {"trace_info": info}})
        if p.endswith("/credentials-for-data-upload"):
            tid = p.split("/")[5]
            return self._reply(200, {"credential_info": {
                "request_id": tid,
                "path": "traces.json",
                "signed_uri": f"{host}/signed/{tid}/traces.json?X-Amz-Signature={SIGNATURE}&X-Amz-Expires=900",
                "type": "AWS_PRESIGNED_URL",
                "headers": [{"name": UPLOAD_HEADER[0], "value": UPLOAD_HEADER[1]}],
            }})
        if p.startswith("/signed/"):
            return self._reply(200, None)
        if p.endswith("/assessments") and self.command == "POST":
            a = json.loads(body).get("assessment", {})
            a["assessment_id"] = "a-" + uuid.uuid4().hex
            a.setdefault("create_time", "2026-12-01T00:00:00Z")
            a.setdefault("last_update_time", "2026-12-01T00:00:00Z")
            return self._reply(200, {"assessment": a})
        if p == "/api/2.0/otel/v1/traces":
            return self._reply(200, {})
        if p.startswith("/api/4.0/mlflow/traces/") and p.endswith("/info"):
            return self._reply(200, json.loads(body))
        return self._reply(404, {"error_code": "ENDPOINT_NOT_FOUND",
                                 "message": f"No API found for '{self.command} {p}'"})


def _experiment():
    return {"experiment_id": EXPERIMENT_ID, "name": "/Users/alice@example.com/llmtap",
            "artifact_location": f"dbfs:/databricks/mlflow-tracking/{EXPERIMENT_ID}",
            "lifecycle_stage": "active", "tags": []}


def _is_text(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def scenario_env(name, port, tmp):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "MLFLOW_"))}
    env.update({
        "HOME": tmp,
        "MLFLOW_TRACKING_URI": "databricks",
        "MLFLOW_EXPERIMENT_ID": EXPERIMENT_ID,
        "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
        "PYTHONUNBUFFERED": "1",
    })
    host = f"http://127.0.0.1:{port}"
    if name in ("pat", "uc"):
        env.update({"DATABRICKS_HOST": host, "DATABRICKS_TOKEN": PAT})
    elif name == "oauth":
        env.update({"DATABRICKS_HOST": host, "DATABRICKS_CLIENT_ID": CLIENT_ID,
                    "DATABRICKS_CLIENT_SECRET": CLIENT_SECRET})
    elif name == "profile":
        cfg = os.path.join(tmp, "dbcfg")
        with open(cfg, "w") as f:
            f.write(f"[DEFAULT]\nhost = http://127.0.0.1:1\n\n[llmtap]\nhost = {host}\n"
                    f"client_id = {CLIENT_ID}\nclient_secret = {CLIENT_SECRET}\n")
        env.update({"DATABRICKS_CONFIG_FILE": cfg, "DATABRICKS_CONFIG_PROFILE": "llmtap"})
    else:
        raise SystemExit(f"unknown scenario {name}")
    return env


def run(name, out_dir):
    Recorder.log = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        env = scenario_env(name, port, tmp)
        proc = subprocess.run([sys.executable, CLIENT, name], env=env,
                              capture_output=True, text=True, timeout=180)
    srv.shutdown()
    log = [dict(e, path=e["path"]) for e in Recorder.log]
    text = json.dumps({"scenario": name, "port": port, "client_stdout": proc.stdout,
                       "client_stderr_tail": proc.stderr[-4000:], "exit": proc.returncode,
                       "requests": log}, indent=2)
    # The port is random; write it as a placeholder so re-recordings diff cleanly.
    text = text.replace(f"127.0.0.1:{port}", "127.0.0.1:PORT")
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        f.write(text + "\n")
    print(f"{name}: exit {proc.returncode}, {len(log)} requests", file=sys.stderr)
    for e in log:
        print(f"  {e['method']} {e['path']}{'?' + e['query'] if e['query'] else ''}", file=sys.stderr)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
    return proc.returncode


def main():
    out = sys.argv[1]
    names = sys.argv[2:] or ["pat", "oauth", "profile", "uc"]
    os.makedirs(out, exist_ok=True)
    rc = 0
    for n in names:
        rc |= run(n, out)
    time.sleep(0)
    sys.exit(rc)


if __name__ == "__main__":
    main()
