#!/usr/bin/env python3
"""The benchmark's driver (stdlib only); scripts/bench.sh installs the tools,
builds the binaries and runs this. It starts the targets, runs every phase
round-robin over them, writes results.json and table.md to the work dir and
prints the table (scripts/bench_table.py renders it, also from a saved
results.json).

Targets: direct (llmtap-sim serve), nginx, llmtap-off, llmtap-files,
llmtap-mlflow. While another target is measured, the llmtap that feeds
MLflow and the MLflow server are paused (SIGSTOP), so that their export
backlog does not take CPU from the target under test; they resume for their
own measurements.
"""
import json
import os
import platform
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_table  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BODY = json.dumps({
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "What is the capital of France? Answer in one paragraph."}],
})
TARGETS = ["direct", "nginx", "llmtap-off", "llmtap-files", "llmtap-mlflow"]


def log(msg):
    print(f"bench [{time.strftime('%H:%M:%S')}]: {msg}", file=sys.stderr, flush=True)


def env_secs(name, default):
    raw = os.environ.get(name, "").strip().rstrip("s")
    return float(raw) if raw else float(default)


def env_int(name, default):
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else int(default)


class Cfg:
    def __init__(self):
        q = os.environ.get("BENCH_QUICK", "0") == "1"
        self.quick = q
        self.duration = env_secs("BENCH_DURATION", 2 if q else 10)
        self.repeats = env_int("BENCH_REPEATS", 1 if q else 3)
        self.soak_secs = env_secs("BENCH_SOAK_SECS", 15 if q else 600)
        self.soak_rate = env_int("BENCH_SOAK_RATE", 60)
        self.rates = [60, 500, 2000]
        self.connections = env_int("BENCH_CONNECTIONS", 64)
        self.streams = env_int("BENCH_STREAMS", 20 if q else 100)
        self.chunks = env_int("BENCH_CHUNKS", 50 if q else 200)
        self.chunk_delay_ms = env_secs("BENCH_CHUNK_DELAY_MS", 20)
        self.stream_secs = env_secs("BENCH_STREAM_SECS", 3 if q else max(self.duration, 10))
        holds = os.environ.get("BENCH_HOLDS", "100 500" if q else "1000 5000")
        self.holds = [int(h) for h in holds.split()]
        self.hold_secs = env_secs("BENCH_HOLD_SECS", 2 if q else 5)
        self.burst_calls = env_int("BENCH_BURST_CALLS", 300 if q else 3000)
        self.drain_secs = env_secs("BENCH_DRAIN_SECS", 30 if q else 120)
        self.sim_threads = env_int("BENCH_SIM_THREADS", 1)

    def as_dict(self):
        return dict(self.__dict__)


# ---------- processes ----------

class Procs:
    """Every process the benchmark starts, stopped (by pid) at exit."""

    def __init__(self):
        self.popens = []
        self.frozen_groups = set()

    def spawn(self, cmd, **kw):
        p = subprocess.Popen(cmd, start_new_session=True, **kw)
        self.popens.append(p)
        return p

    def stop_all(self):
        for pgid in list(self.frozen_groups):
            signal_group(pgid, signal.SIGCONT)
        for p in self.popens:
            if p.poll() is None:
                signal_group(p.pid, signal.SIGTERM)
        deadline = time.time() + 10
        for p in self.popens:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                signal_group(p.pid, signal.SIGKILL)


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def nofile():
    """The open-file limit the benchmark's processes inherit."""
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bench: {what} does not listen on 127.0.0.1:{port} after {timeout}s")


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def http_post_json(url, body, timeout=30):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def read_line(proc, timeout, what):
    """The next stdout line of proc, or exit with a message after timeout."""
    deadline = time.time() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
        if not ready:
            break
        chunk = os.read(fd, 1)
        if not chunk:
            raise SystemExit(f"bench: {what} exited (status {proc.wait()}) before printing a line")
        if chunk == b"\n":
            return buf.decode()
        buf += chunk
    raise SystemExit(f"bench: {what} printed no line within {timeout}s (got {buf!r})")


# ---------- /proc ----------

def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def cpu_secs(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK


def rss_mb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


# ---------- targets ----------

class Target:
    def __init__(self, name, url, pids_fn, admin=None, proc=None):
        self.name, self.url, self.pids_fn, self.admin, self.proc = name, url, pids_fn, admin, proc
        self.frozen = False

    def pids(self):
        return self.pids_fn()

    def metrics(self):
        if not self.admin:
            return {}
        return parse_metrics(http_get(f"http://127.0.0.1:{self.admin}/metrics"))


def parse_metrics(text):
    """Prometheus text -> {name: sum over its series}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            try:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
            except ValueError:
                pass
    return out


def dropped_by_reason(t):
    """{reason: n} of llmtap_traces_dropped_total, from the admin /metrics."""
    out = {}
    text = http_get(f"http://127.0.0.1:{t.admin}/metrics")
    for m in re.finditer(r'^llmtap_traces_dropped_total\{reason="([^"]*)"\}\s+(\S+)', text, re.M):
        if float(m.group(2)):
            out[m.group(1)] = float(m.group(2))
    return out


def accounted(m):
    """Calls whose trace has an outcome: exported, dropped, dead-lettered,
    sampled out or not captured."""
    return sum(m.get(k, 0.0) for k in (
        "llmtap_traces_exported_total", "llmtap_traces_dropped_total",
        "llmtap_traces_dead_lettered_total", "llmtap_traces_unsampled_total",
        "llmtap_traces_not_captured_total"))


def start_sim(procs, cfg, work):
    sim = os.environ["BENCH_SIM"]
    p = procs.spawn([sim, "serve", "--listen", "127.0.0.1:0", "--threads", str(cfg.sim_threads)],
                    stdout=subprocess.PIPE, stderr=open(f"{work}/logs/sim.log", "w"))
    line = read_line(p, 30, "llmtap-sim serve")
    m = re.search(r"listening on (http://\S+)", line)
    if not m:
        raise SystemExit(f"bench: llmtap-sim serve printed {line!r}, not 'listening on http://ADDR'")
    return Target("direct", m.group(1), lambda: [p.pid], proc=p)


def start_nginx(procs, sim_url, work):
    port = free_port()
    upstream = sim_url.split("//", 1)[1]
    conf = f"{work}/nginx.conf"
    with open(conf, "w") as f:
        f.write(f"""daemon off;
worker_processes auto;
worker_rlimit_nofile {nofile()};
pid {work}/nginx.pid;
error_log {work}/logs/nginx.err warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    upstream provider {{ server {upstream}; keepalive 1024; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://provider;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 1h;
        }}
    }}
}}
""")
    p = procs.spawn(["nginx", "-c", conf, "-p", work], stdout=subprocess.DEVNULL,
                    stderr=open(f"{work}/logs/nginx.log", "w"))
    wait_port(port, "nginx")
    return Target("nginx", f"http://127.0.0.1:{port}", lambda: [p.pid] + children(p.pid), proc=p)


def start_llmtap(procs, name, sim_url, work, extra_env):
    port, admin = free_port(), free_port()
    d = f"{work}/{name}"
    os.makedirs(d, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "LLMTAP_LISTEN": f"127.0.0.1:{port}", "LLMTAP_ADMIN_LISTEN": f"127.0.0.1:{admin}",
        "LLMTAP_UPSTREAM": sim_url, "LLMTAP_MAX_CONNECTIONS": str(max(1024, (nofile() - 200) // 2)),
        "LLMTAP_SPOOL_DIR": f"{d}/spool", "LLMTAP_DEAD_LETTER_DIR": f"{d}/deadletter",
        "LLMTAP_LOG_FORMAT": "json",
    })
    env.update(extra_env)
    p = procs.spawn([os.environ["BENCH_LLMTAP"]], cwd=d, env=env, stdout=subprocess.DEVNULL,
                    stderr=open(f"{work}/logs/{name}.log", "w"))
    wait_port(port, name)
    wait_port(admin, f"{name} (admin)")
    return Target(name, f"http://127.0.0.1:{port}", lambda: [p.pid], admin=admin, proc=p)


def files_env(work):
    d = f"{work}/llmtap-files"
    os.makedirs(d, exist_ok=True)
    conf = f"{d}/llmtap.toml"
    with open(conf, "w") as f:
        # Keep every file: the loss check counts the spans in all of them.
        f.write(f'[file_sink]\ndir = "{d}/traces"\nmax_files = 10000\nmax_file_bytes = "1GiB"\n')
    return {"LLMTAP_CONFIG": conf}


def start_mlflow(procs, work):
    py = os.environ["BENCH_MLFLOW_PYTHON"]
    d = f"{work}/mlflow"
    os.makedirs(f"{d}/artifacts", exist_ok=True)
    port = free_port()
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    p = procs.spawn([py, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                     "--backend-store-uri", f"sqlite:///{d}/mlflow.db",
                     "--default-artifact-root", f"{d}/artifacts", "--workers", "1"],
                    cwd=d, env=env, stdout=subprocess.DEVNULL,
                    stderr=open(f"{work}/logs/mlflow.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"bench: mlflow server exited ({p.returncode}); see {work}/logs/mlflow.log")
        try:
            http_get(f"{url}/health", timeout=2)
            return url, p
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"bench: mlflow server not healthy after 180s; see {work}/logs/mlflow.log")


class MlflowPair:
    """The llmtap that exports to MLflow and the MLflow server: paused while
    other targets are measured."""

    def __init__(self, procs, target, server):
        self.procs, self.target, self.server = procs, target, server

    def freeze(self):
        for pg in (self.target.proc.pid, self.server.pid):
            signal_group(pg, signal.SIGSTOP)
            self.procs.frozen_groups.add(pg)

    def thaw(self):
        for pg in (self.server.pid, self.target.proc.pid):
            signal_group(pg, signal.SIGCONT)
            self.procs.frozen_groups.discard(pg)


# ---------- load ----------

def oha(cfg, url, secs=None, rate=None, n=None, conns=None):
    cmd = [os.environ["BENCH_OHA"], "--no-tui", "--output-format", "json",
           "-c", str(conns or cfg.connections), "-m", "POST",
           "-H", "content-type: application/json", "-H", "authorization: Bearer sk-bench",
           "-d", BODY]
    cmd += ["-n", str(n)] if n else ["-z", f"{secs}s", "-w"]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    cmd.append(url + "/v1/chat/completions")
    timeout = (secs or 0) + 600
    r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"bench: oha failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    j = json.loads(r.stdout)
    codes = {k: int(v) for k, v in (j.get("statusCodeDistribution") or {}).items()}
    lp = j.get("latencyPercentiles") or {}

    def us(key):
        v = lp.get(key)
        return None if v is None else v * 1e6

    ok = codes.get("200", 0)
    return {"p50": us("p50"), "p99": us("p99"), "p999": us("p99.9"),
            "rps": j["summary"]["requestsPerSec"], "ok": ok, "non200": sum(codes.values()) - ok,
            "errors": sum((j.get("errorDistribution") or {}).values()),
            "secs": j["summary"]["total"]}


def streams(cfg, url, concurrency, secs=None, hold=None):
    cmd = [os.environ["BENCH_SIM"], "streams", "--url", url, "--provider", "openai",
           "--concurrency", str(concurrency)]
    if hold is None:
        cmd += ["--duration", str(secs), "--connections", "--chunks", str(cfg.chunks),
                "--chunk-delay-ms", str(cfg.chunk_delay_ms), "--ttft-ms", "0"]
        r = subprocess.run(cmd, capture_output=True, timeout=secs + 300)
        if r.returncode != 0:
            raise SystemExit(f"bench: llmtap-sim streams failed: {r.stderr.decode()[-2000:]}")
        return json.loads(r.stdout)
    return cmd + ["--hold", str(hold), "--chunks", "100000", "--chunk-delay-ms", "1000"]


def wait_drained(t, cap):
    """Wait until every call llmtap saw has a trace outcome (or cap secs)."""
    deadline = time.time() + cap
    while True:
        m = t.metrics()
        if accounted(m) >= m.get("llmtap_requests_total", 0.0):
            return True
        if time.time() >= deadline:
            return False
        time.sleep(0.2)


class Runner:
    def __init__(self, cfg, targets, pair):
        self.cfg, self.targets, self.pair = cfg, targets, pair

    def around(self, t, fn):
        if t.name == "llmtap-mlflow":
            self.pair.thaw()
        try:
            return fn()
        finally:
            if t.name == "llmtap-mlflow":
                wait_drained(t, 3)
                self.pair.freeze()

    def warmup(self):
        for t in self.targets:
            self.around(t, lambda: oha(self.cfg, t.url, secs=1, rate=500))

    def rate(self, t, rate):
        return self.around(t, lambda: oha(self.cfg, t.url, secs=self.cfg.duration, rate=rate))

    def max(self, t):
        def run():
            pids = t.pids()
            c0, w0 = cpu_secs(pids), time.time()
            r = oha(self.cfg, t.url, secs=self.cfg.duration)
            # Files: wait for the phase's traces, so their CPU is counted.
            # MLflow: its backlog takes minutes; it is paused after 3 s.
            cap = 3 if t.name == "llmtap-mlflow" else self.cfg.drain_secs
            r["drained"] = wait_drained(t, cap) if t.admin else True
            pids = t.pids()
            r["cpu_s"] = cpu_secs(pids) - c0
            r["cpu_wall_s"] = time.time() - w0
            r["cpu_us_per_call"] = r["cpu_s"] * 1e6 / max(1, r["ok"])
            return r
        return self.around(t, run)

    def streams(self, t):
        return self.around(t, lambda: streams(self.cfg, t.url, self.cfg.streams, secs=self.cfg.stream_secs))

    def hold(self, t, n):
        def run():
            cmd = streams(self.cfg, t.url, n, hold=self.cfg.hold_secs)
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            try:
                line = read_line(p, 180, f"llmtap-sim streams --hold ({t.name}, {n})")
                if not line.startswith("holding"):
                    raise SystemExit(f"bench: expected 'holding N', got {line!r}")
                rss = rss_mb(t.pids())
                out, err = p.communicate(timeout=self.cfg.hold_secs + 120)
                res = json.loads(out) if out.strip() else {}
                return {"rss_mb": rss, "holding": line, "errors": res.get("errors"),
                        "streams": res.get("streams")}
            finally:
                if p.poll() is None:
                    signal_group(p.pid, signal.SIGKILL)
                    p.wait()
        return self.around(t, run)


# ---------- phases ----------

def round_robin(runner, cfg, results):
    for rep in range(cfg.repeats):
        plan = [(f"rate{r}", lambda t, r=r: runner.rate(t, r)) for r in cfg.rates]
        plan += [("max", runner.max), ("streams", runner.streams)]
        for phase, fn in plan:
            for t in runner.targets:
                log(f"repeat {rep + 1}/{cfg.repeats}: {phase} -> {t.name}")
                r = fn(t)
                results["runs"].setdefault(phase, {}).setdefault(t.name, []).append(r)


def holds(runner, cfg, results):
    for n in cfg.holds:
        for t in runner.targets:
            log(f"{n} open streams -> {t.name}")
            results["rss"].setdefault(f"hold{n}", {})[t.name] = runner.hold(t, n)


def soak_and_delivery(procs, cfg, work, sim_url, mlflow_url, results):
    """A fresh llmtap exporting to MLflow: RSS over a steady-rate soak, then
    a burst whose delivery is timed, then the traces counted in MLflow."""
    exp = f"bench-soak-{int(time.time())}"
    t = start_llmtap(procs, "llmtap-mlflow-soak", sim_url, work,
                     {"MLFLOW_TRACKING_URI": mlflow_url, "MLFLOW_EXPERIMENT_NAME": exp})
    # One call, then wait for its trace: the sink has resolved (created)
    # the experiment before the soak starts.
    first = oha(cfg, t.url, n=1, conns=1)["ok"]
    wait_drained(t, cfg.drain_secs)
    pids = t.pids()
    samples = [(0.0, rss_mb(pids))]
    log(f"soak: {cfg.soak_rate} calls/s for {cfg.soak_secs:.0f}s -> llmtap-mlflow (fresh instance)")
    p = subprocess.Popen([os.environ["BENCH_OHA"], "--no-tui", "--output-format", "json",
                          "-c", "8", "-m", "POST", "-H", "content-type: application/json",
                          "-d", BODY, "-z", f"{cfg.soak_secs}s", "-w", "-q", str(cfg.soak_rate),
                          "--latency-correction", t.url + "/v1/chat/completions"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    start = time.time()
    step = max(1.0, cfg.soak_secs / 60)
    while p.poll() is None:
        time.sleep(step)
        samples.append((time.time() - start, rss_mb(pids)))
    soak_out = json.loads(p.stdout.read())
    m_soak = t.metrics()
    soak_ok = int((soak_out.get("statusCodeDistribution") or {}).get("200", 0))
    log(f"burst: {cfg.burst_calls} calls as fast as possible, then wait for delivery")
    e0, t0 = m_soak.get("llmtap_traces_exported_total", 0.0), time.time()
    burst = oha(cfg, t.url, n=cfg.burst_calls)
    drained = wait_drained(t, cfg.drain_secs)
    t1 = time.time()
    m_end = t.metrics()
    delivered = m_end.get("llmtap_traces_exported_total", 0.0) - e0
    found = count_mlflow_traces(mlflow_url, exp)
    results["soak"] = {
        "rate": cfg.soak_rate, "secs": cfg.soak_secs, "rss_samples": samples,
        "rss_start_mb": samples[0][1], "rss_end_mb": samples[-1][1],
        "rss_max_mb": max(s[1] for s in samples), "ok": soak_ok,
        "exported_during_soak": m_soak.get("llmtap_traces_exported_total", 0.0),
    }
    results["delivery"] = {
        "burst_calls": cfg.burst_calls, "burst_ok": burst["ok"], "burst_rps": burst["rps"],
        "delivered": delivered, "secs": t1 - t0, "traces_per_s": delivered / max(1e-9, t1 - t0),
        "drained": drained, "calls_completed": first + soak_ok + burst["ok"],
        "requests_seen": m_end.get("llmtap_requests_total", 0.0),
        "exported": m_end.get("llmtap_traces_exported_total", 0.0),
        "dropped": m_end.get("llmtap_traces_dropped_total", 0.0),
        "dead_lettered": m_end.get("llmtap_traces_dead_lettered_total", 0.0),
        "traces_in_mlflow": found,
    }


def count_mlflow_traces(url, experiment_name):
    exp = http_get(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment_name}")
    exp_id = json.loads(exp)["experiment"]["experiment_id"]
    n, token = 0, None
    while True:
        body = {"locations": [{"type": "MLFLOW_EXPERIMENT",
                               "mlflow_experiment": {"experiment_id": exp_id}}],
                "max_results": 500}
        if token:
            body["page_token"] = token
        resp = http_post_json(f"{url}/api/3.0/mlflow/traces/search", body, timeout=120)
        n += len(resp.get("traces") or [])
        token = resp.get("next_page_token")
        if not token:
            return n


def count_file_spans(d):
    n = 0
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if not (name.startswith("traces-") and name.endswith(".jsonl")):
            continue
        with open(os.path.join(d, name)) as f:
            for line in f:
                if line.strip():
                    for rs in json.loads(line).get("resourceSpans", []):
                        for ss in rs.get("scopeSpans", []):
                            n += len(ss.get("spans", []))
    return n


def machine():
    def first(path, key):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return line.split(":", 1)[1].strip()
        except OSError:
            return None
    root = os.environ.get("BENCH_ROOT", ".")
    rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    mem = first("/proc/meminfo", "MemTotal")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": rev + ("+dirty" if dirty else ""),
        "nproc": os.cpu_count(), "cpu": first("/proc/cpuinfo", "model name"),
        "kernel": platform.release(),
        "ram_gb": round(int(mem.split()[0]) / 1024 / 1024, 1) if mem else None,
        "loadavg_start": os.getloadavg(),
        "oha": subprocess.run([os.environ["BENCH_OHA"], "--version"], capture_output=True,
                              text=True).stdout.strip(),
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
    }


def main():
    cfg = Cfg()
    work = os.environ["BENCH_WORK_DIR"]
    os.makedirs(f"{work}/logs", exist_ok=True)
    procs = Procs()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = {"config": cfg.as_dict(), "machine": machine(), "runs": {}, "rss": {"idle": {}}}
    began = time.time()
    try:
        direct = start_sim(procs, cfg, work)
        log(f"simulator at {direct.url}")
        nginx = start_nginx(procs, direct.url, work)
        off = start_llmtap(procs, "llmtap-off", direct.url, work, {"ENABLE_MLFLOW_TRACING": "false"})
        files = start_llmtap(procs, "llmtap-files", direct.url, work, files_env(work))
        mlflow_url, server = start_mlflow(procs, work)
        log(f"mlflow server at {mlflow_url}")
        ml = start_llmtap(procs, "llmtap-mlflow", direct.url, work,
                          {"MLFLOW_TRACKING_URI": mlflow_url, "MLFLOW_EXPERIMENT_NAME": "bench-main"})
        targets = [direct, nginx, off, files, ml]
        time.sleep(1)
        for t in targets:
            results["rss"]["idle"][t.name] = rss_mb(t.pids())
        pair = MlflowPair(procs, ml, server)
        pair.freeze()
        runner = Runner(cfg, targets, pair)
        runner.warmup()
        round_robin(runner, cfg, results)
        holds(runner, cfg, results)
        log("files: waiting for the last traces, then counting spans")
        drained = wait_drained(files, cfg.drain_secs)
        fm = files.metrics()
        results["files_loss"] = {
            "drained": drained, "requests_seen": fm.get("llmtap_requests_total", 0.0),
            "exported": fm.get("llmtap_traces_exported_total", 0.0),
            "dropped": fm.get("llmtap_traces_dropped_total", 0.0),
            "spans_in_files": count_file_spans(f"{work}/llmtap-files/traces"),
        }
        results["final_metrics"] = {
            t.name: {k: v for k, v in t.metrics().items()
                     if k.startswith(("llmtap_requests", "llmtap_traces", "llmtap_trace_export",
                                      "llmtap_spool_records", "llmtap_journal_records"))}
            for t in (off, files)}
        for t in (off, files):
            results["final_metrics"][t.name]["dropped_by_reason"] = dropped_by_reason(t)
        pair.thaw()
        results["final_metrics"][ml.name] = {
            k: v for k, v in ml.metrics().items()
            if k.startswith(("llmtap_requests", "llmtap_traces", "llmtap_trace_export"))}
        results["final_metrics"][ml.name]["dropped_by_reason"] = dropped_by_reason(ml)
        # The main MLflow-fed instance has served its phases; its backlog is
        # not counted. Stop it so the soak instance has the server alone.
        signal_group(ml.proc.pid, signal.SIGKILL)
        ml.proc.wait()
        soak_and_delivery(procs, cfg, work, direct.url, mlflow_url, results)
    finally:
        procs.stop_all()
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["elapsed_s"] = time.time() - began
    with open(f"{work}/results.json", "w") as f:
        json.dump(results, f, indent=1)
    table = bench_table.render(results)
    with open(f"{work}/table.md", "w") as f:
        f.write(table)
    print(table)
    log(f"results: {work}/results.json, table: {work}/table.md ({results['elapsed_s']:.0f}s)")


if __name__ == "__main__":
    main()
