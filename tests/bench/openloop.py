#!/usr/bin/env python3
"""Open-loop latency at a fixed rate (the `rate` scenario of run.sh).

`oha -q RATE --latency-correction` sends RATE requests per second whatever
the proxy's pace, and measures each request from when it was due, not from
when it was sent (correcting coordinated omission: a stalled proxy shows up
as latency, not as fewer requests). Subcommands:

  max RAW TARGET               the median rr req/s of TARGET in this run (or nothing)
  record --oha FILE ...        one run: oha's JSON + CPU ticks -> a line of RATE_RAW
  report RATE_RAW              the Markdown section (also used by bench.py report)
"""

import argparse
import json
import os
import statistics

TARGET_ORDER = ["direct", "nginx", "haproxy", "pingora", "switchyard"]
TARGET_LABEL = {
    "direct": "direct to one backend (no proxy: the method's own tail)",
    "nginx": "nginx (1 worker)",
    "haproxy": "HAProxy (nbthread 1)",
    "pingora": "pingora floor (1 thread)",
    "switchyard": "switchyard (threads: 1)",
}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


def rr_max(raw, target):
    """Median req/s of `target` in the rr scenario of this run, or None."""
    if not os.path.exists(raw):
        return None
    with open(raw) as f:
        runs = [json.loads(l) for l in f if l.strip()]
    return med([r.get("rps") for r in runs if r.get("scenario") == "rr" and r.get("target") == target])


# levels: "50" and "80" are % of HAProxy's maximum; "own50" is 50 % of each
# target's own maximum (the same relative load for every proxy)
def level_key(level):
    return (1, int(level[3:])) if str(level).startswith("own") else (0, int(level))


def level_label(level):
    return f"{level[3:]} % of own max" if str(level).startswith("own") else f"{level} %"


def parse_oha(text):
    """oha --output-format json -> the numbers we keep (latencies in ms)."""
    d = json.loads(text)
    s = d.get("summary", {})
    pct = d.get("latencyPercentiles", {}) or {}
    codes = d.get("statusCodeDistribution", {}) or {}
    errors = d.get("errorDistribution", {}) or {}
    ms = lambda v: None if v is None else v * 1000.0
    ok = sum(n for c, n in codes.items() if str(c).startswith(("2", "3")))
    return {
        "rps": s.get("requestsPerSec"),
        "p50_ms": ms(pct.get("p50")),
        "p99_ms": ms(pct.get("p99")),
        "p999_ms": ms(pct.get("p99.9")),
        "max_ms": ms(s.get("slowest")),
        "ok": ok,
        "non2xx": sum(codes.values()) - ok,
        "errors": sum(errors.values()),
        "error_kinds": sorted(errors)[:3],
    }


def record(a):
    with open(a.oha) as f:
        text = f.read()
    try:
        r = parse_oha(text)
    except (ValueError, AttributeError) as e:
        print(f"    rate {a.target}: oha output unreadable ({e}): {text[:200]!r}", flush=True)
        return
    tck = os.sysconf("SC_CLK_TCK")
    dt = (a.ticks_after - a.ticks_before) / tck
    done = r["ok"] + r["non2xx"]
    r.update({"target": a.target, "level_pct": a.level, "rate": a.rate, "round": a.round,
              "cpu_us_per_req": dt * 1e6 / done if done else None})
    with open(a.raw, "a") as f:
        f.write(json.dumps(r) + "\n")
    print(f"    rate {level_label(a.level)} {a.target:10s} round {a.round}: {fmt(r['rps'], 0)}/{a.rate} req/s  "
          f"p50 {fmt(r['p50_ms'])} p99 {fmt(r['p99_ms'])} p99.9 {fmt(r['p999_ms'])} ms  "
          f"{fmt(r['cpu_us_per_req'], 1)} µs/req  errors {r['errors']} non-2xx {r['non2xx']}", flush=True)


def report(raw):
    """Markdown lines and a JSON summary of the rate scenario."""
    if not raw or not os.path.exists(raw):
        return [], {}
    with open(raw) as f:
        runs = [json.loads(l) for l in f if l.strip()]
    if not runs:
        return [], {}
    md = ["## rate — open loop at a fixed rate (`oha -q RATE --latency-correction -c 64`), "
          "50 % and 80 % of HAProxy's rr req/s in this run, and 50 % of each proxy's own", "",
          "Latency counted from when each request was due (coordinated omission corrected): "
          "a proxy that falls behind shows it in p99/p99.9, not as fewer requests. "
          "\"50 % of own max\" asks each proxy for half of its own rr req/s of this run: "
          "the same relative load for all, so the tail there shows scheduling, not throughput. "
          "*direct* sends the same rate to one backend without a proxy: oha and the backends share "
          "core 1, so that row is what the method itself adds to every proxy's figures "
          "(its \"own max\" is the backend's rr req/s direct).", "",
          "| load | target | rate req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | CPU µs/req | non-2xx | errors |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    out, ratio_lines = {}, []
    for level in sorted({str(r["level_pct"]) for r in runs}, key=level_key):
        lv = [r for r in runs if str(r["level_pct"]) == level]
        out[str(level)] = {}
        for t in [t for t in TARGET_ORDER if any(r["target"] == t for r in lv)]:
            rs = [r for r in lv if r["target"] == t]
            s = {k: med([r.get(k) for r in rs]) for k in
                 ("rate", "rps", "p50_ms", "p99_ms", "p999_ms", "max_ms", "cpu_us_per_req")}
            s["non2xx"] = sum(r["non2xx"] for r in rs)
            s["errors"] = sum(r["errors"] for r in rs)
            out[str(level)][t] = s
            md.append(f"| {level_label(level)} | {TARGET_LABEL.get(t, t)} | {fmt(s['rate'], 0)} | {fmt(s['rps'], 0)} | "
                      f"{fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} | {fmt(s['p999_ms'])} | {fmt(s['max_ms'])} | "
                      f"{fmt(s['cpu_us_per_req'], 1)} | {s['non2xx']} | {s['errors']} |")
        sy = out[str(level)].get("switchyard")
        ratios = []
        for other, name in (("haproxy", "HAProxy"), ("nginx", "nginx"), ("pingora", "pingora-floor")):
            o = out[str(level)].get(other)
            for k, label in (("p99_ms", "p99"), ("p999_ms", "p99.9")):
                if sy and o and sy[k] and o[k]:
                    r = sy[k] / o[k]
                    out[str(level)].setdefault("ratios", {})[f"switchyard/{other} {k}"] = r
                    ratios.append(f"switchyard/{name} {label}: **{r:.2f}×**")
        if ratios:
            ratio_lines.append(f"Ratios at {level_label(level)}: " + "; ".join(ratios) + ".")
    for line in ratio_lines:
        md += ["", line]
    md.append("")
    return md, out


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("max"); p.add_argument("raw"); p.add_argument("target")
    p = sub.add_parser("record")
    for x in ("raw", "oha", "target", "level"):
        p.add_argument("--" + x, required=True)
    for x in ("rate", "round", "ticks-before", "ticks-after"):
        p.add_argument("--" + x, type=int, required=True)
    p = sub.add_parser("report"); p.add_argument("raw")
    a = ap.parse_args()
    if a.cmd == "max":
        m = rr_max(a.raw, a.target)
        if m:
            print(int(m))
    elif a.cmd == "record":
        record(a)
    elif a.cmd == "report":
        print("\n".join(report(a.raw)[0]))


if __name__ == "__main__":
    main()
