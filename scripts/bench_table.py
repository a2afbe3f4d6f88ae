#!/usr/bin/env python3
"""Renders the benchmark's markdown table from its results.json (stdlib only).

    python3 scripts/bench_table.py /tmp/llmtap-bench-.../results.json

Every figure of a proxy is shown against the same run's direct baseline:
the difference ("+45 µs") and the ratio ("1.2×"); with several repeats, the
median over repeats of the per-repeat difference. The target column holds
issue 11's targets; "met?" judges them on the two tracing-on columns.
"""
import json
import statistics
import sys

COLS = ["direct", "nginx", "llmtap-off", "llmtap-files", "llmtap-mlflow"]
HEAD = ["direct", "nginx", "llmtap, tracing off", "llmtap, tracing on (files)",
        "llmtap, tracing on (MLflow)"]
TRACED = ["llmtap-files", "llmtap-mlflow"]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def us(v):
    if v is None:
        return "—"
    a = abs(v)
    if a >= 10000:
        return f"{v / 1000:.1f} ms"
    if a >= 1000:
        return f"{v / 1000:.2f} ms"
    return f"{v:.0f} µs"


def plus(v):
    if v is None:
        return "—"
    return ("+" if v >= 0 else "−") + us(abs(v))


def kilo(v):
    return "—" if v is None else (f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}")


def runs(res, phase, target):
    return res.get("runs", {}).get(phase, {}).get(target, [])


def added(res, phase, target, get):
    """Median over repeats of (target - direct) and of target / direct."""
    base, mine = runs(res, phase, "direct"), runs(res, phase, target)
    diffs, ratios = [], []
    for b, m in zip(base, mine):
        vb, vm = get(b), get(m)
        if vb is None or vm is None:
            continue
        diffs.append(vm - vb)
        if vb:
            ratios.append(vm / vb)
    return med(diffs), med(ratios)


def latency_cells(res, phase, get):
    cells, diffs = [], {}
    for c in COLS:
        if c == "direct":
            cells.append(us(med([get(r) for r in runs(res, phase, c)])))
            continue
        d, r = added(res, phase, c, get)
        diffs[c] = d
        cells.append("—" if d is None else f"{plus(d)} ({r:.2f}×)")
    return cells, diffs


def judge(values, ok):
    """'met' / 'missed' over the tracing-on columns that have a value."""
    parts = [(c, ok(values[c])) for c in TRACED if values.get(c) is not None]
    if not parts:
        return "—"
    if all(p for _, p in parts):
        return "met"
    if not any(p for _, p in parts):
        return "missed"
    return ", ".join(f"{c.split('-')[1]} {'met' if p else 'missed'}" for c, p in parts)


def row(cells, name, target="", met=""):
    return f"| {name} | " + " | ".join(cells) + f" | {target} | {met} |"


def latency_rows(res):
    out = []
    for rate in res["config"]["rates"]:
        phase = f"rate{rate}"
        for key, label in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
            cells, diffs = latency_cells(res, phase, lambda r, k=key: r.get(k))
            target = met = ""
            if rate == 2000 and key == "p50":
                target, met = "≤ +50 µs", judge(diffs, lambda d: d <= 50)
            if rate == 2000 and key == "p99":
                target, met = "≤ +500 µs", judge(diffs, lambda d: d <= 500)
            out.append(row(cells, f"latency {label} at {rate:,} calls/s", target, met))
    return out


def throughput_rows(res):
    rps = {c: med([r["rps"] for r in runs(res, "max", c)]) for c in COLS}
    cells = [kilo(rps["direct"])]
    for c in COLS[1:]:
        _, ratio = added(res, "max", c, lambda r: r["rps"])
        cells.append("—" if ratio is None else f"{kilo(rps[c])} ({ratio:.2f}×)")
    out = [row(cells, "max throughput, calls/s")]
    rel = {}
    if rps["nginx"] and rps["llmtap-off"]:
        rel["llmtap-off"] = rps["llmtap-off"] / rps["nginx"]
    for c in TRACED:
        if rps["llmtap-off"] and rps[c]:
            rel[c] = rps[c] / rps["llmtap-off"]
    cells = ["", ""] + [f"{rel[c]:.2f}×" if c in rel else "—" for c in COLS[2:]]
    off_ok = rel.get("llmtap-off", 0) >= 0.9
    met = f"off {'met' if off_ok else 'missed'}; on: " + judge(rel, lambda v: v >= 0.8)
    out.append(row(cells, "throughput ratio (off ÷ nginx; on ÷ off)",
                   "≥ 0.9 (off), ≥ 0.8 (on)", met))
    cpu = {c: med([r.get("cpu_us_per_call") for r in runs(res, "max", c)]) for c in COLS}
    cells = []
    for c in COLS:
        v = cpu[c]
        if v is None:
            cells.append("—")
        elif c in ("direct", "nginx") or not cpu["nginx"]:
            cells.append(f"{v:.1f} µs")
        else:
            cells.append(f"{v:.1f} µs ({v / cpu['nginx']:.2f}× nginx)")
    ratios = {c: cpu[c] / cpu["nginx"] for c in TRACED if cpu[c] and cpu["nginx"]}
    out.append(row(cells, "CPU per call (max-throughput phase)", "≤ 1.5× nginx (on)",
                   judge(ratios, lambda v: v <= 1.5)))
    return out


def stream_rows(res):
    out = []
    for key, label, tgt in (("ttft_us", "time to first token", 200), ("gap_us", "inter-chunk gap", 100)):
        for p in ("p50", "p99"):
            cells, diffs = latency_cells(res, "streams", lambda r, k=key, q=p: (r.get(k) or {}).get(q))
            target = met = ""
            if p == "p99":
                target, met = f"≤ +{tgt} µs", judge(diffs, lambda d, t=tgt: d <= t)
            out.append(row(cells, f"stream {label} {p}", target, met))
    return out


def rss_rows(res):
    rss = res.get("rss", {})
    idle = rss.get("idle", {})
    cells = [f"{idle[c]:.1f} MB" if c in idle else "—" for c in COLS]
    out = [row(cells, "RSS idle (direct: the simulator)", "≤ 20 MB (on)",
               judge(idle, lambda v: v <= 20))]
    for n in res["config"]["holds"]:
        level = rss.get(f"hold{n}", {})
        vals = {c: level[c]["rss_mb"] for c in COLS if c in level}
        cells = [f"{vals[c]:.1f} MB" if c in vals else "—" for c in COLS]
        target = met = ""
        if n == 5000:
            target, met = "≤ 150 MB (on)", judge(vals, lambda v: v <= 150)
        out.append(row(cells, f"RSS with {n:,} open streams", target, met))
    soak = res.get("soak")
    if soak:
        g = soak["rss_end_mb"] - soak["rss_start_mb"]
        cells = ["", "", "", "", f"{soak['rss_start_mb']:.1f} → {soak['rss_end_mb']:.1f} MB "
                 f"({g:+.1f}; max {soak['rss_max_mb']:.1f})"]
        span = f"{soak['secs'] / 60:.0f}-min" if soak["secs"] >= 60 else f"{soak['secs']:.0f}-s"
        out.append(row(cells, f"RSS over a {span} soak at {soak['rate']} calls/s (MLflow)"))
    return out


def delivery_rows(res):
    out = []
    d = res.get("delivery")
    if d:
        cells = ["", "", "", "", f"{d['traces_per_s']:.0f} traces/s"
                 + ("" if d["drained"] else " (not drained)")]
        out.append(row(cells, f"MLflow sink delivery ({d['burst_calls']:,}-call burst)"))
        lost = d["requests_seen"] - d["traces_in_mlflow"]
        cells = ["", "", "", "", f"{max(0, lost):.0f} of {d['requests_seen']:.0f}"
                 f" ({d['traces_in_mlflow']} in MLflow)"]
        out.append(row(cells, "traces lost (soak + burst, counted in MLflow)", "0",
                       "met" if lost <= 0 else "missed"))
    f = res.get("files_loss")
    if f:
        lost = f["requests_seen"] - f["spans_in_files"]
        dropped = f.get("dropped", final(res, "llmtap-files").get("llmtap_traces_dropped_total", 0))
        cells = ["", "", "", f"{max(0, lost):.0f} of {f['requests_seen']:.0f}: {dropped:.0f} counted"
                 f" as dropped, {max(0, lost - dropped):.0f} missing", ""]
        out.append(row(cells, "traces lost (all phases, spans counted in files)", "0",
                       "met" if lost <= 0 else "missed"))
    cells = ["", "", ""]
    for c in TRACED:
        fm = final(res, c)
        if not fm:
            cells.append("—")
            continue
        reasons = fm.get("dropped_by_reason") or {}
        why = ", ".join(f"{k} {v:.0f}" for k, v in sorted(reasons.items()))
        cells.append(f"{fm.get('llmtap_traces_dropped_total', 0):.0f} of "
                     f"{fm.get('llmtap_requests_total', 0):.0f}" + (f" ({why})" if why else ""))
    out.append(row(cells, "traces dropped by llmtap (its counter, all phases but the soak)"))
    return out


def final(res, target):
    return (res.get("final_metrics") or {}).get(target) or {}


def error_row(res):
    cells = []
    for c in COLS:
        n = 0
        for phase in res.get("runs", {}).values():
            for r in phase.get(c, []):
                n += r.get("non200", 0) + r.get("errors", 0)
        cells.append(str(n))
    return row(cells, "failed calls (non-200 or errors, all phases)")


def render(res):
    m, cfg = res["machine"], res["config"]
    lines = [
        f"Run {m['date']} at {m['commit']}: {m['nproc']} × {m['cpu']}, {m['ram_gb']} GB RAM, "
        f"Linux {m['kernel']}; load average {m['loadavg_start'][0]:.1f} at start, "
        f"{m.get('loadavg_end', [0])[0]:.1f} at end. {cfg['repeats']} repeat(s) of "
        f"{cfg['duration']:.0f} s per measurement, {cfg['connections']} connections; streams: "
        f"{cfg['streams']} at once, {cfg['chunks']} chunks {cfg['chunk_delay_ms']:g} ms apart. "
        f"{m['oha']}, {m['nginx']}.",
        "",
        "| figure | " + " | ".join(HEAD) + " | target | met? |",
        "|---|" + "---|" * (len(HEAD) + 2),
    ]
    lines += latency_rows(res) + throughput_rows(res) + stream_rows(res)
    lines += rss_rows(res) + delivery_rows(res) + [error_row(res)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        print(render(json.load(fh)), end="")
