#!/usr/bin/env python3
"""Helpers for tests/bench/run.sh (standard library only).

Subcommands:
  freeports N BASE            print N free TCP ports on 127.0.0.1, the first ones >= BASE
  stat PID                    "TICKS HWM_KB RSS_KB NPROC" summed over PID and its descendants
  parse-wrk FILE              wrk --latency output as one JSON object
  record --raw F ...          append one measured run (JSON line) to F
  report --raw F --meta F --md F --json F
                              medians per scenario/target, ratios, markdown + JSON
"""
import argparse
import datetime
import json
import os
import re
import socket
import statistics

import openloop
import sys

# ---------------------------------------------------------------- /proc


def _children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        ppid = int(rest[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def process_tree(pid):
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def proc_stat(pid):
    """(utime+stime ticks, VmHWM kB, VmRSS kB, nproc) over the process tree.

    /proc/PID/stat fields 14 (utime) and 15 (stime) already cover every thread
    of the process, including threads that have exited."""
    ticks = hwm = rss = n = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            with open(f"/proc/{p}/status") as f:
                st = f.read()
        except OSError:
            continue
        # field 2 (comm) may contain spaces: split after the last ')'
        rest = s[s.rindex(")") + 2:].split()
        # rest[0] is field 3, so field 14 is rest[11], field 15 rest[12]
        ticks += int(rest[11]) + int(rest[12])
        m = re.search(r"^VmHWM:\s+(\d+) kB", st, re.M)
        hwm += int(m.group(1)) if m else 0
        m = re.search(r"^VmRSS:\s+(\d+) kB", st, re.M)
        rss += int(m.group(1)) if m else 0
        n += 1
    return ticks, hwm, rss, n


def core_jiffies():
    """[(busy, total)] per CPU from /proc/stat: busy = everything but idle
    and iowait. irq/softirq time is included: loopback packets are processed
    on the sending CPU, and this kernel charges that time to the sending
    process's stime too (the proxy's CPU % and core 0's busy % agree when the
    machine is otherwise idle)."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = (list(map(int, line.split()[1:])) + [0] * 8)[:8]
                out.append((sum(v) - v[3] - v[4], sum(v)))
    return out


def free_ports(n, base):
    ports, p = [], base
    while len(ports) < n and p < 32000:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", p))
            ports.append(p)
        except OSError:
            pass
        finally:
            s.close()
        p += 1
    if len(ports) < n:
        sys.exit(f"not enough free ports from {base}")
    return ports


# ---------------------------------------------------------------- wrk

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", v)
    if not m:
        raise ValueError(f"bad wrk time {v!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_wrk(text):
    r = {"requests": None, "seconds": None, "rps": None, "p50_ms": None,
         "p75_ms": None, "p90_ms": None, "p99_ms": None, "non2xx": 0,
         "sock_connect": 0, "sock_read": 0, "sock_write": 0, "sock_timeout": 0}
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        if m:
            r[f"p{pct}_ms"] = _ms(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text, re.M)
    if m:
        r["requests"] = int(m.group(1))
        r["seconds"] = _ms(m.group(2) + m.group(3)) / 1000.0
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        (r["sock_connect"], r["sock_read"], r["sock_write"],
         r["sock_timeout"]) = map(int, m.groups())
    return r


def parse_h2load(text):
    """h2load output in parse_wrk's shape (h2load reports no percentiles)."""
    r = {"requests": None, "seconds": None, "rps": None, "p50_ms": None,
         "p75_ms": None, "p90_ms": None, "p99_ms": None, "non2xx": 0,
         "sock_connect": 0, "sock_read": 0, "sock_write": 0, "sock_timeout": 0}
    m = re.search(r"^finished in ([\d.]+)(us|ms|s|m|h), ([\d.]+) req/s", text, re.M)
    if m:
        r["seconds"] = _ms(m.group(1) + m.group(2)) / 1000.0
        r["rps"] = float(m.group(3))
    m = re.search(r"^requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text, re.M)
    if m:
        done, _ok, _failed, errored, timeout = map(int, m.groups())
        r["requests"] = done
        r["sock_read"] = errored
        r["sock_timeout"] = timeout
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if m:
        r["non2xx"] = int(m.group(3)) + int(m.group(4))
    return r


# ---------------------------------------------------------------- report

TARGET_LABEL = {
    "direct": "direct to backend",
    "nginx": "nginx (1 worker, keepalive 64)",
    "haproxy": "HAProxy (nbthread 1, http-reuse always)",
    "pingora": "pingora floor (examples/pingora_floor.rs, 1 thread)",
    "pingora_spec": "pingora floor --spec-work (+ forwarding fields, peer timeouts)",
    "switchyard": "switchyard (threads: 1)",
    "switchyard_nocache": "switchyard, pool without cache (same object proxied)",
}
TARGET_ORDER = ["direct", "nginx", "haproxy", "pingora", "pingora_spec", "switchyard_nocache", "switchyard", "switchyard_nows"]
# the threads scenario: 2 threads/workers per proxy, proxy unpinned
THREADS_LABEL = {
    "nginx": "nginx (worker_processes 2)",
    "haproxy": "HAProxy (nbthread 2)",
    "switchyard": "switchyard (threads: 2, work_stealing: true)",
    "switchyard_nows": "switchyard (threads: 2, work_stealing: false)",
}
# how the ratio lines name the targets switchyard is compared with
RATIO_NAME = {"haproxy": "HAProxy", "nginx": "nginx", "pingora": "pingora-floor",
              "pingora_spec": "pingora-floor-spec-work",
              "switchyard_nocache": "switchyard-uncached"}
SCEN_TITLE = {
    "rr": "rr — round robin over 3 backends, 3-byte body (headline)",
    "least_conn": "least_conn — least connections over 3 backends, 3-byte body",
    "1k": "1k — round robin, 1 KiB body",
    "64k": "64k — round robin, 64 KiB body",
    "race": "race — switchyard pool with `race: {}` over 3 backends (every request fans out to all 3)",
    "https": "https — HTTP/1.1 keep-alive over TLS (wrk), round robin, 3-byte body",
    "https_new": "https_new — a new TLS connection per request (wrk, `Connection: close`): "
                 "req/s = handshakes/s, µs/req = CPU per handshake and request",
    "cache": "cache — a cache hit of a 1 KiB object: switchyard pool with `cache:` and nginx "
             "`proxy_cache` (64 MiB, 60 s, lock on) serve it from their cache; *switchyard, pool without "
             "cache* proxies the same object to the backends",
    "h2": "h2 — HTTP/2 over TLS (`h2load -t1 -c64 -m1 -D`), round robin, 3-byte body; "
          "h2load gives no percentiles",
    "threads": "threads — 2 threads (workers) per proxy, proxy not pinned (both cores, shared with wrk "
               "and the backends), round robin, 3-byte body",
}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, nd=2, thousands=False):
    if v is None:
        return "–"
    if thousands:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{nd}f}"


def summarize(runs):
    """runs of one scenario/target -> medians."""
    s = {
        "rounds": len(runs),
        "rps": med([r["rps"] for r in runs]),
        "p50_ms": med([r["p50_ms"] for r in runs]),
        "p99_ms": med([r["p99_ms"] for r in runs]),
        "cpu_us_per_req": med([r["cpu_us_per_req"] for r in runs]),
        "cpu_pct": med([r["cpu_pct"] for r in runs]),
        "peak_rss_mib": med([r["hwm_kb"] / 1024.0 for r in runs]),
        "non2xx": sum(r["non2xx"] for r in runs),
        "socket_errors": sum(r["sock_connect"] + r["sock_read"] + r["sock_write"]
                             + r["sock_timeout"] for r in runs),
        "requests": sum(r["requests"] or 0 for r in runs),
        "backend_req_per_req": med([r.get("backend_req_per_req") for r in runs]),
        "upstream_conns_opened": med([sum(r["backend_conns"]) if r.get("backend_conns") else None
                                      for r in runs]),
        "core0_other_pct": med([r.get("core0_other_pct") for r in runs]),
    }
    tot = [0, 0, 0]
    for r in runs:
        for i, v in enumerate(r.get("backend_requests") or []):
            tot[i] += v
    s["backend_split_pct"] = [round(100.0 * v / sum(tot)) for v in tot] if sum(tot) else None
    # race: answers (won races) per backend, losers pooled or cut
    won, reused, cut = [0, 0, 0], 0, 0
    for r in runs:
        for i, v in enumerate(r.get("race_winners") or []):
            won[i] += v
        reused += r.get("race_losers_reused") or 0
        cut += r.get("race_losers_cut") or 0
    if sum(won):
        s["race_winner_split_pct"] = [round(100.0 * v / sum(won), 1) for v in won]
        s["race_losers_reused"], s["race_losers_cut"] = reused, cut
    return s


def round_ratios(runs, a, b, key):
    """Per-round ratio a/b for the same round (same conditions)."""
    by = {}
    for r in runs:
        by.setdefault(r["round"], {})[r["target"]] = r
    out = []
    for rnd in sorted(by):
        x, y = by[rnd].get(a), by[rnd].get(b)
        if x and y and x.get(key) and y.get(key):
            out.append(x[key] / y[key])
    return out


def extra_ratios(sc, scenarios, runs):
    """Ratio lines beyond switchyard/other of the same scenario: race against
    a plain request (rr) of the same run, and work stealing off/on."""
    lines = []
    tg = scenarios[sc]["targets"]
    if sc == "race" and "switchyard" in tg and "switchyard" in scenarios.get("rr", {}).get("targets", {}):
        a = tg["switchyard"]["cpu_us_per_req"]
        b = scenarios["rr"]["targets"]["switchyard"]["cpu_us_per_req"]
        if a and b:
            scenarios[sc]["ratios"]["race/rr switchyard cpu_us_per_req"] = {"ratio_of_medians": a / b}
            lines.append(f"switchyard race/plain request (rr) CPU µs/req: **{fmt(a / b)}×** (target ≤ 3.0)")
    if sc == "threads" and "switchyard_nows" in tg:
        for other, name in (("switchyard", "work stealing on"), ("haproxy", "HAProxy"), ("nginx", "nginx")):
            if other not in tg:
                continue
            for key, label in (("cpu_us_per_req", "CPU µs/req"), ("rps", "req/s")):
                a, b = tg["switchyard_nows"][key], tg[other][key]
                if a and b:
                    scenarios[sc]["ratios"][f"switchyard_nows/{other} {key}"] = {"ratio_of_medians": a / b}
                    lines.append(f"work stealing off/{name} {label}: **{fmt(a / b)}×**")
    return lines


def report(args):
    runs = []
    if os.path.exists(args.raw):
        with open(args.raw) as f:
            runs = [json.loads(l) for l in f if l.strip()]
    with open(args.meta) as f:
        meta = json.load(f)
    idle = []
    if args.idle and os.path.exists(args.idle):
        with open(args.idle) as f:
            idle = [json.loads(l) for l in f if l.strip()]
    notes = []
    if args.notes and os.path.exists(args.notes):
        with open(args.notes) as f:
            notes = [l.rstrip("\n") for l in f if l.strip()]

    scenarios = []
    for r in runs:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])

    out = {"meta": meta, "scenarios": {}, "idle": idle, "notes": notes, "runs": runs}
    md = []
    md.append("# switchyard benchmark results")
    md.append("")
    md.append(f"- date: {meta['date']}")
    md.append(f"- machine: {meta['nproc']} CPUs, {meta['cpu_model']}, kernel {meta['kernel']}")
    md.append(f"- command: `{meta['command']}`")
    md.append(f"- switchyard: {meta['switchyard_rev']}; {meta['versions']}")
    if meta.get("pingora_floor"):
        md.append(f"- pingora floor: {meta['pingora_floor']}")
    md.append(f"- method: proxy pinned to core 0, wrk and the 3 nginx backends on core 1; "
              f"`wrk -t1 -c64 -d{meta['duration']}s --latency` after a {meta['warmup']} s warm-up; "
              f"{meta['rounds']} round(s), target order rotated each round, medians shown; "
              f"each proxy freshly started for every run")
    md.append("- CPU µs/req = proxy utime+stime (all processes and threads) during the measured run ÷ "
              "completed requests; for *direct* it is the backend's own cost. CPU % = the same time ÷ "
              "wall time (100 % = one core saturated). Peak RSS = VmHWM summed over the proxy's processes.")
    md.append("")
    for sc in scenarios:
        srun = [r for r in runs if r["scenario"] == sc]
        targets = [t for t in TARGET_ORDER if any(r["target"] == t for r in srun)]
        out["scenarios"][sc] = {"targets": {}, "ratios": {}}
        md.append(f"## {SCEN_TITLE.get(sc, sc)}")
        md.append("")
        md.append("| target | req/s | p50 ms | p99 ms | CPU µs/req | CPU % | peak RSS MiB | backend req/req (split %) | upstream conns opened | non-2xx | socket errors |")
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in targets:
            s = summarize([r for r in srun if r["target"] == t])
            out["scenarios"][sc]["targets"][t] = s
            cpu = fmt(s["cpu_us_per_req"], 1)
            if t == "direct" and s["cpu_us_per_req"] is not None:
                cpu = f"(backend {cpu})"
            split = fmt(s["backend_req_per_req"])
            if s["backend_split_pct"] and t != "direct":
                split += " (" + "/".join(map(str, s["backend_split_pct"])) + ")"
            label = (THREADS_LABEL if sc == "threads" else TARGET_LABEL).get(t, t)
            md.append(f"| {label} | {fmt(s['rps'], thousands=True)} | "
                      f"{fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} | {cpu} | {fmt(s['cpu_pct'], 0)} | "
                      f"{fmt(s['peak_rss_mib'], 1)} | {split} | {fmt(s['upstream_conns_opened'], thousands=True)} | "
                      f"{s['non2xx']} | {s['socket_errors']} |")
        md.append("")
        tg = out["scenarios"][sc]["targets"]
        lines = []
        if "switchyard" in tg:
            for other in ("haproxy", "nginx", "pingora", "pingora_spec", "switchyard_nocache"):
                if other not in tg:
                    continue
                for key, label in (("cpu_us_per_req", "CPU µs/req"), ("rps", "req/s")):
                    a, b = tg["switchyard"][key], tg[other][key]
                    ratio = a / b if a and b else None
                    per = round_ratios(srun, "switchyard", other, key)
                    out["scenarios"][sc]["ratios"][f"switchyard/{other} {key}"] = {
                        "ratio_of_medians": ratio, "per_round": per}
                    rng = ""
                    if len(per) > 1:
                        rng = f" (per round {min(per):.2f}–{max(per):.2f})"
                    lines.append(f"switchyard/{RATIO_NAME[other]} {label}: **{fmt(ratio)}×**{rng}")
        lines += extra_ratios(sc, out["scenarios"], runs)
        if lines:
            md.append("Ratios: " + "; ".join(lines) + ".")
            md.append("")
        if sc == "race" and tg.get("switchyard", {}).get("race_winner_split_pct"):
            w = tg["switchyard"]
            md.append("Winners (answers served, from `switchyard_requests_total{pool=\"race\"}`) per backend: "
                      + " / ".join(f"{v:.1f} %" for v in w["race_winner_split_pct"])
                      + f" (fair: 33.3 % each); losers pooled: {w['race_losers_reused']}, cut: {w['race_losers_cut']} "
                      "(`switchyard_race_losers_total`).")
            md.append("")
    rate_md, rate_out = openloop.report(args.rate)
    if rate_md:
        md += rate_md
        out["rate"] = rate_out
    if idle:
        md.append(f"## idle — {idle[0].get('target_conns', '?')} idle keep-alive client connections "
                  "(one request each, then held open)")
        md.append("")
        md.append("| target | RSS before MiB | RSS with conns open MiB | KiB per conn | peak RSS MiB | "
                  "conns opened | still open after hold | failed |")
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in idle:
            per = None
            if r.get("opened"):
                per = (r["rss_open_kb"] - r["rss_before_kb"]) / r["opened"]
            md.append(f"| {TARGET_LABEL.get(r['target'], r['target'])} | {fmt(r['rss_before_kb'] / 1024, 1)} | "
                      f"{fmt(r['rss_open_kb'] / 1024, 1)} | {fmt(per, 1)} | {fmt(r['hwm_kb'] / 1024, 1)} | "
                      f"{r['opened']} | {r['still_open']} | {r['failed']} |")
        md.append("")
    if notes:
        md.append("## Notes")
        md.append("")
        for n in notes:
            md.append(f"- {n}")
        md.append("")
    text = "\n".join(md)
    with open(args.md, "w") as f:
        f.write(text)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print(text)


def record(args):
    with open(args.wrk) as f:
        text = f.read()
    w = parse_h2load(text) if re.search(r"^finished in ", text, re.M) else parse_wrk(text)
    tck = os.sysconf("SC_CLK_TCK")
    dt = (args.ticks_after - args.ticks_before) / tck
    w.update({
        "scenario": args.scenario, "target": args.target, "round": args.round,
        "cpu_seconds": dt,
        "cpu_us_per_req": dt * 1e6 / w["requests"] if w["requests"] else None,
        "cpu_pct": 100.0 * dt / w["seconds"] if w["seconds"] else None,
        "hwm_kb": args.hwm_kb, "clk_tck": tck,
    })
    # how busy core 0 (proxy) and core 1 (wrk + backends) were, from /proc/stat
    try:
        cb = [int(x) for x in args.cores_before.split()]
        ca = [int(x) for x in args.cores_after.split()]
        w["core0_busy_pct"] = 100.0 * (ca[0] - cb[0]) / max(1, ca[1] - cb[1])
        w["core1_busy_pct"] = 100.0 * (ca[2] - cb[2]) / max(1, ca[3] - cb[3])
    except (ValueError, IndexError):
        w["core0_busy_pct"] = w["core1_busy_pct"] = None
    # requests each backend served and connections it accepted during the
    # run (nginx stub_status: "req0 req1 req2 acc0 acc1 acc2"; the status
    # request counts once per backend in each, so minus 1)
    try:
        b0 = [int(x) for x in args.backends_before.split()]
        b1 = [int(x) for x in args.backends_after.split()]
        d = [max(0, y - x - 1) for x, y in zip(b0, b1)]
        w["backend_requests"] = d[:3]
        w["backend_conns"] = d[3:6]
        w["backend_req_per_req"] = sum(d[:3]) / w["requests"] if w["requests"] else None
    except ValueError:
        w["backend_requests"] = w["backend_conns"] = w["backend_req_per_req"] = None
    # race: "w0 w1 w2 reused cut" from the admin API before and after
    try:
        r0 = [int(x) for x in args.race_before.split()]
        r1 = [int(x) for x in args.race_after.split()]
        if len(r0) == len(r1) == 5:
            d = [y - x for x, y in zip(r0, r1)]
            w["race_winners"], w["race_losers_reused"], w["race_losers_cut"] = d[:3], d[3], d[4]
    except ValueError:
        pass
    # other work on core 0 (the proxy's core) during the run, in % of the
    # core. Not for direct: nothing of the benchmark runs on core 0 then, and
    # the scheduler moves other work there, which does not disturb the run.
    c0 = w.get("core0_busy_pct")
    own = w["cpu_pct"]
    w["core0_other_pct"] = (max(0.0, c0 - own) if c0 is not None and own is not None
                            and args.target != "direct" else None)
    if args.noise_out:
        with open(args.noise_out, "w") as f:
            f.write("" if w["core0_other_pct"] is None else f"{w['core0_other_pct']:.0f}")
    with open(args.raw, "a") as f:
        f.write(json.dumps(w) + "\n")
    errs = w["non2xx"] + w["sock_connect"] + w["sock_read"] + w["sock_write"] + w["sock_timeout"]
    print(f"    {args.scenario:10s} {args.target:10s} round {args.round}: "
          f"{fmt(w['rps'], 0)} req/s  p50 {fmt(w['p50_ms'])} ms  p99 {fmt(w['p99_ms'])} ms  "
          f"{fmt(w['cpu_us_per_req'], 1)} µs/req  CPU {fmt(w['cpu_pct'], 0)}%  "
          f"HWM {args.hwm_kb // 1024} MiB  cores {fmt(w['core0_busy_pct'], 0)}/{fmt(w['core1_busy_pct'], 0)}%"
          f"  backend conns +{sum(w['backend_conns']) if w.get('backend_conns') else '?'}"
          + (f"  ERRORS non2xx={w['non2xx']} connect={w['sock_connect']} read={w['sock_read']} "
             f"write={w['sock_write']} timeout={w['sock_timeout']}" if errs else ""),
          flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("freeports"); p.add_argument("n", type=int); p.add_argument("base", type=int)
    p = sub.add_parser("stat"); p.add_argument("pid", type=int)
    p = sub.add_parser("parse-wrk"); p.add_argument("file")
    p = sub.add_parser("record")
    for a in ("raw", "wrk", "scenario", "target"):
        p.add_argument("--" + a, required=True)
    for a in ("round", "ticks-before", "ticks-after", "hwm-kb"):
        p.add_argument("--" + a, type=int, required=True)
    p.add_argument("--cores-before", default="")
    p.add_argument("--cores-after", default="")
    p.add_argument("--noise-out")
    p.add_argument("--backends-before", default="")
    p.add_argument("--backends-after", default="")
    p.add_argument("--race-before", default="")
    p.add_argument("--race-after", default="")
    p = sub.add_parser("drop-last"); p.add_argument("raw")
    p = sub.add_parser("report")
    for a in ("raw", "meta", "md", "json"):
        p.add_argument("--" + a, required=True)
    p.add_argument("--idle"); p.add_argument("--notes"); p.add_argument("--rate")
    a = ap.parse_args()
    if a.cmd == "freeports":
        print(" ".join(map(str, free_ports(a.n, a.base))))
    elif a.cmd == "stat":
        cj = core_jiffies()
        print(*proc_stat(a.pid), *cj[0], *cj[1])
    elif a.cmd == "parse-wrk":
        with open(a.file) as f:
            print(json.dumps(parse_wrk(f.read())))
    elif a.cmd == "record":
        record(a)
    elif a.cmd == "drop-last":
        with open(a.raw) as f:
            lines = [l for l in f if l.strip()]
        with open(a.raw, "w") as f:
            f.writelines(lines[:-1])
    elif a.cmd == "report":
        report(a)


if __name__ == "__main__":
    main()
