#!/usr/bin/env python3
"""Helper for benches/loadtest/run (stdlib only).

  record  parse one wrk / h2load / idle-connection run, compute the metrics, append a JSON line
  table   print the side-by-side table from those lines and write the results JSON

Metrics per (scenario, target):
  rps          good responses (2xx/3xx) per second of the measured run
  p50/p99      wrk --latency percentiles; for h2load computed here from --log-file
  cpu_us_req   (utime+stime of the target's processes after - before) / good responses,
               in microseconds (for nginx: master + worker)
  user_us_req  utime alone per response (sys_us_req: the rest, the kernel's share)
  cpu_pct      the same CPU time / wall time of the run (100 = one core busy)
  rss_peak_mib VmHWM after the run; the harness resets it (clear_refs 5) before each run
               (for nginx: the worker)
"""
import argparse
import json
import math
import os
import re
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------- parsing


def _dur_to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _size_to_mib(text):
    m = re.fullmatch(r"([\d.]+)([KMGT]?B)", text.strip())
    if not m:
        return None
    return float(m.group(1)) * {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 2**20}[m.group(2)]


def parse_wrk(text):
    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+[KMGT]?B) read", text)
    if not m:
        return None
    total = int(m.group(1))
    dur_s = _dur_to_ms(m.group(2) + m.group(3)) / 1000.0
    bad = 0
    mb = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if mb:
        bad = int(mb.group(1))
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = sum(int(x) for x in se.groups()) if se else 0
    r["requests"] = total - bad
    r["non2xx"] = bad
    r["socket_errors"] = errors
    r["duration_s"] = dur_s
    r["rps"] = (total - bad) / dur_s if dur_s > 0 else 0.0
    mib = _size_to_mib(m.group(4))
    r["mib_per_s"] = mib / dur_s if (mib is not None and dur_s > 0) else None
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        mp = re.search(r"^\s+%s%%\s+(\S+)" % pct, text, re.M)
        r[key] = _dur_to_ms(mp.group(1)) if mp else None
    return r


def _percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(math.ceil(p / 100.0 * len(sorted_vals))) - 1))
    return sorted_vals[k]


def parse_h2load(text, log_path):
    r = {}
    m = re.search(r"finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s, ([\d.]+[KMGT]?B)/s", text)
    mr = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                   r"(\d+) errored, (\d+) timeout", text)
    ms = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not (m and mr and ms):
        return None
    good = int(ms.group(1)) + int(ms.group(2))
    # "finished in" includes --warm-up-time, but the counts and req/s cover the main phase only
    reported = float(m.group(3))
    dur_s = (int(mr.group(1)) / reported) if reported > 0 else _dur_to_ms(m.group(1) + m.group(2)) / 1000.0
    r["requests"] = good
    r["non2xx"] = int(ms.group(3)) + int(ms.group(4))
    r["socket_errors"] = int(mr.group(6)) + int(mr.group(7))
    r["failed"] = int(mr.group(5))
    r["duration_s"] = dur_s
    r["rps"] = good / dur_s if dur_s > 0 else 0.0
    r["mib_per_s"] = _size_to_mib(m.group(4))
    ap = re.search(r"Application protocol: (\S+)", text)
    r["proto"] = ap.group(1) if ap else None
    tp = re.search(r"TLS Protocol: (\S+)", text)
    cp = re.search(r"Cipher: (\S+)", text)
    kx = re.search(r"Server Temp Key: (.+)", text)
    if tp:
        r["tls"] = tp.group(1) + ((" " + cp.group(1)) if cp else "") + ((" " + kx.group(1).strip()) if kx else "")
    lat = []
    if log_path and os.path.exists(log_path):
        with open(log_path) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1].startswith(("2", "3")):
                    try:
                        lat.append(int(parts[2]))
                    except ValueError:
                        pass
    lat.sort()
    r["p50_ms"] = _percentile(lat, 50) / 1000.0 if lat else None
    r["p99_ms"] = _percentile(lat, 99) / 1000.0 if lat else None
    r["latency_samples"] = len(lat)
    return r


def parse_curl(text, duration_s):
    """curl -Z -w '%{http_code} %{time_total}\\n' output: one line per transfer."""
    good, bad, lat = 0, 0, []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        if parts[0][0] in "23":
            good += 1
            lat.append(float(parts[1]) * 1000.0)
        else:
            bad += 1
    if good == 0 and bad == 0:
        return None
    lat.sort()
    return {"requests": good, "non2xx": bad, "socket_errors": 0, "duration_s": duration_s,
            "rps": good / duration_s if duration_s else 0.0, "mib_per_s": None,
            "p50_ms": _percentile(lat, 50), "p99_ms": _percentile(lat, 99)}


def _first_error_line(text):
    for line in text.splitlines():
        l = line.lower()
        if any(w in l for w in ("error", "unable", "refused", "fail", "cannot", "invalid")):
            return line.strip()[:120]
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1][:120] if lines else "no output"


def cmd_record(a):
    rec = {"scenario": a.scenario, "target": a.target, "status": a.status, "note": a.note or None,
           "tool": a.tool, "conns": a.conns, "round": a.round, "t": time.time()}
    if a.status == "ok" and a.tool in ("wrk", "h2load", "curl"):
        text = open(a.out, errors="replace").read() if a.out and os.path.exists(a.out) else ""
        if a.tool == "wrk":
            parsed = parse_wrk(text)
        elif a.tool == "curl":
            parsed = parse_curl(text, a.tool_duration)
        else:
            parsed = parse_h2load(text, a.log)
        if parsed is None:
            rec["status"], rec["note"] = "err", (rec["note"] or _first_error_line(text))
        else:
            rec.update(parsed)
            good = parsed["requests"]
            rec["tool_requests"], rec["tool_rps"] = good, parsed["rps"]
            # requests inside the measured window: the origin's counter, else the tool's count
            # scaled from its own duration to the window
            if a.window_requests is not None and a.window_requests > 0:
                n, rec["count_source"] = a.window_requests, "origin"
            else:
                n = int(round(good * a.wall / parsed["duration_s"])) if (a.wall and parsed["duration_s"]) else good
                rec["count_source"] = "tool"
            rec["requests"] = n
            if good <= 0:
                rec["status"] = "err"
                rec["note"] = rec["note"] or ("no 2xx responses (%s non-2xx, %s socket errors)"
                                              % (parsed["non2xx"], parsed["socket_errors"]))
                n = 0
            elif parsed.get("non2xx", 0) > 0.01 * good:
                rec["note"] = "%d non-2xx" % parsed["non2xx"]
            if n > 0:
                rec["rps"] = n / a.wall if a.wall else parsed["rps"]
                rec["cpu_us_req"] = a.cpu_ticks / CLK_TCK * 1e6 / n
                if a.user_ticks is not None:
                    rec["user_us_req"] = a.user_ticks / CLK_TCK * 1e6 / n
                    rec["sys_us_req"] = (a.cpu_ticks - a.user_ticks) / CLK_TCK * 1e6 / n
                rec["origin_cpu_us_req"] = a.origin_ticks / CLK_TCK * 1e6 / n
                # sanity: the origin must not see more than the client got (h2load counts the
                # main phase only, like the window; wrk counts its whole run incl. warm-up)
                if rec["count_source"] == "origin":
                    expect = parsed["rps"] * a.wall if a.tool == "h2load" else good
                    if n > 1.25 * expect + 50 or (a.tool == "h2load" and n < 0.75 * expect):
                        rec["note"] = ((rec["note"] + "; ") if rec["note"] else "") + \
                            "origin counted %d in the window, %s ~%d" % (n, a.tool, expect)
            if a.wall:
                rec["cpu_pct"] = 100.0 * a.cpu_ticks / CLK_TCK / a.wall
        if a.log and os.path.exists(a.log):
            os.unlink(a.log)
    elif a.status == "ok" and a.tool == "idle":
        try:
            res = json.load(open(a.out))
        except Exception as e:  # noqa: BLE001
            res = None
            rec["status"], rec["note"] = "err", "idle client: %s" % e
        if res is not None:
            rec.update({"opened": res.get("opened"), "alive": res.get("alive"), "wanted": res.get("wanted"),
                        "open_s": res.get("open_s")})
            if not res.get("opened"):
                rec["status"], rec["note"] = "err", res.get("error") or "no connection opened"
            elif res.get("alive", 0) < res.get("wanted", 0):
                rec["note"] = "%s/%s alive" % (res.get("alive"), res.get("wanted"))
    if a.rss_kb is not None:
        rec["rss_mib"] = a.rss_kb / 1024.0
    if a.hwm_kb is not None:
        rec["rss_peak_mib"] = a.hwm_kb / 1024.0
    if a.rss_before_kb is not None:
        rec["rss_before_mib"] = a.rss_before_kb / 1024.0
        if a.rss_kb is not None and rec.get("opened"):
            rec["kib_per_conn"] = (a.rss_kb - a.rss_before_kb) / rec["opened"]
    rec["wall_s"] = a.wall
    with open(a.file, "a") as f:
        f.write(json.dumps(rec) + "\n")
    sys.stderr.write("  %-14s %-9s %s\n" % (a.scenario, a.target, _short(rec)))
    return 0


def _short(r):
    if r["status"] != "ok":
        return "%s: %s" % (r["status"], r.get("note") or "")
    if r["tool"] in ("wrk", "h2load", "curl"):
        return "%s req/s  p50 %s  p99 %s ms  %s us/req  cpu %s%%  peak %s MiB%s" % (
            _k(r.get("rps")), _f(r.get("p50_ms")), _f(r.get("p99_ms")), _f(r.get("cpu_us_req")),
            _i(r.get("cpu_pct")), _i(r.get("rss_peak_mib")), ("  (%s)" % r["note"]) if r.get("note") else "")
    per = (", %.1f KiB/conn over %s MiB before" % (r["kib_per_conn"], _f(r.get("rss_before_mib")))) \
        if r.get("kib_per_conn") is not None else ""
    return "rss %s MiB%s%s" % (_f(r.get("rss_mib")), per, ("  (%s)" % r["note"]) if r.get("note") else "")


# --------------------------------------------------------------------------- formatting


def _k(v):
    if v is None:
        return "-"
    if v >= 100000:
        return "%.0fk" % (v / 1000)
    if v >= 10000:
        return "%.1fk" % (v / 1000)
    return "%.0f" % v


def _f(v):
    if v is None:
        return "-"
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


def _i(v):
    return "-" if v is None else "%.0f" % v


PEER_ORDER = ["gatehouse", "nginx", "haproxy", "origin"]

# (scenario, what it compares, ratio kind, limit)  — the floor targets of project issue 8
# (the request path's issue: <= 1.0x the peer's CPU per request in every row; 0.6x nginx is
# where the design should get)
TARGETS = [
    ("h1-64", "HTTP/1.1 keep-alive CPU/req <= nginx", "cpu_vs_nginx", 1.0),
    ("h1-1024", "HTTP/1.1 keep-alive CPU/req <= nginx", "cpu_vs_nginx", 1.0),
    ("https-64", "HTTPS keep-alive CPU/req <= nginx", "cpu_vs_nginx", 1.0),
    ("https-1024", "HTTPS keep-alive CPU/req <= nginx", "cpu_vs_nginx", 1.0),
    ("h2c-64", "h2c CPU/req <= haproxy", "cpu_vs_haproxy", 1.0),
    ("h2c-1024", "h2c CPU/req <= haproxy", "cpu_vs_haproxy", 1.0),
    ("h2tls-64", "h2 (TLS) CPU/req <= haproxy", "cpu_vs_haproxy", 1.0),
    ("h2tls-1024", "h2 (TLS) CPU/req <= haproxy", "cpu_vs_haproxy", 1.0),
    ("tls-handshake", "new (full) TLS handshakes CPU/req <= 0.8x nginx", "cpu_vs_nginx", 0.8),
    ("static-4k", "static 4 KiB CPU/req <= nginx", "cpu_vs_nginx", 1.0),
    ("static-1m", "static 1 MiB throughput >= nginx", "rps_vs_nginx_min", 1.0),
    ("idle", "idle RSS <= 20 MiB", "rss_abs", 20.0),
    ("idle-10k", "10,000 idle HTTP/1.1 keep-alive conns <= 4 KiB each over idle RSS", "kib_per_conn", 4.0),
]


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def _median(values):
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def _representative(rs):
    """A target's record for a row measured in several rounds: the round of its median CPU per
    request (an odd number of rounds gives a real round; an even one the upper middle)."""
    ok = sorted((r for r in rs if r["status"] == "ok" and r.get("cpu_us_req") is not None),
                key=lambda r: r["cpu_us_req"])
    return ok[len(ok) // 2] if ok else rs[0]


def _round_ratios(rounds, metric, peer):
    """Gatehouse's `metric` over the peer's, for each round both were measured in."""
    out = []
    for rnd in sorted(rounds):
        gh, p = rounds[rnd].get("gatehouse"), rounds[rnd].get(peer)
        if gh and p and gh["status"] == "ok" and p["status"] == "ok":
            out.append(_ratio(gh.get(metric), p.get(metric)))
    return [v for v in out if v is not None]


def cmd_table(a):
    recs = [json.loads(l) for l in open(a.file) if l.strip()]
    meta = json.load(open(a.meta)) if a.meta and os.path.exists(a.meta) else {}
    scen_order, all_by, rounds = [], {}, {}
    for r in recs:
        if r["scenario"] not in scen_order:
            scen_order.append(r["scenario"])
        all_by.setdefault((r["scenario"], r["target"]), []).append(r)
        rounds.setdefault(r["scenario"], {}).setdefault(r.get("round", 1), {})[r["target"]] = r
    by = {k: _representative(v) for k, v in all_by.items()}
    targets = [t for t in PEER_ORDER if any(k[1] == t for k in by)]
    descr = meta.get("scenarios", {})

    def cell(r, metric_kind):
        """One peer's cells for one row: list of strings."""
        if metric_kind == "load":
            if r is None:
                return ["", "", "", "", "", ""]
            if r["status"] != "ok":
                return [r["status"], "", "", "", "", ""]
            flag = "!" if (r.get("cpu_pct") or 0) < 80 and r["scenario"] != "fixed-10k" else ""
            return [_k(r.get("rps")) + flag, _f(r.get("p50_ms")), _f(r.get("p99_ms")),
                    _f(r.get("cpu_us_req")), _i(r.get("cpu_pct")), _f(r.get("rss_peak_mib"))]
        else:  # memory rows: only the RSS column
            if r is None:
                return ["", "", "", "", "", ""]
            if r["status"] != "ok":
                return [r["status"], "", "", "", "", ""]
            extra = ""
            if r.get("wanted"):
                extra = "%s/%s" % (_conn(r.get("alive")), _conn(r.get("wanted")))
            return [extra, "", "", "", "", _f(r.get("rss_mib"))]

    sub = ["req/s", "p50ms", "p99ms", "us/req", "cpu%", "MiB"]
    head1 = ["scenario", "conns"]
    head2 = ["", ""]
    rows = []
    for t in targets:
        head1 += [t] + [""] * (len(sub) - 1)
        head2 += sub
    head1 += ["GH ratio", ""]
    head2 += ["nginx", "haproxy"]
    ratios = {}
    for s in scen_order:
        kind = "mem" if s.startswith("idle") else "load"
        any_rec = next((by[(s, t)] for t in targets if (s, t) in by), {})
        row = [s, str(any_rec.get("conns") or "")]
        for t in targets:
            row += cell(by.get((s, t)), kind)
        gh, ng, hp = by.get((s, "gatehouse")), by.get((s, "nginx")), by.get((s, "haproxy"))

        def ok(r):
            return r is not None and r["status"] == "ok"
        if kind == "load" and len(rounds[s]) > 1:
            # several rounds: the median of each round's ratio (peers measured minutes apart
            # in one round compare better than medians taken apart)
            rn = _median(_round_ratios(rounds[s], "cpu_us_req", "nginx"))
            rh = _median(_round_ratios(rounds[s], "cpu_us_req", "haproxy"))
            ratios[s] = {"cpu_vs_nginx": rn, "cpu_vs_haproxy": rh,
                         "rps_vs_nginx": _median(_round_ratios(rounds[s], "rps", "nginx")),
                         "rounds_cpu_vs_nginx": _round_ratios(rounds[s], "cpu_us_req", "nginx"),
                         "rounds_cpu_vs_haproxy": _round_ratios(rounds[s], "cpu_us_req", "haproxy")}
        elif kind == "load":
            rn = _ratio(gh.get("cpu_us_req"), ng.get("cpu_us_req")) if ok(gh) and ok(ng) else None
            rh = _ratio(gh.get("cpu_us_req"), hp.get("cpu_us_req")) if ok(gh) and ok(hp) else None
            ratios[s] = {"cpu_vs_nginx": rn, "cpu_vs_haproxy": rh,
                         "rps_vs_nginx": _ratio(gh.get("rps"), ng.get("rps")) if ok(gh) and ok(ng) else None}
        else:
            rn = _ratio(gh.get("rss_mib"), ng.get("rss_mib")) if ok(gh) and ok(ng) else None
            rh = _ratio(gh.get("rss_mib"), hp.get("rss_mib")) if ok(gh) and ok(hp) else None
            ratios[s] = {"rss_vs_nginx": rn, "rss_vs_haproxy": rh,
                         "rss_abs": gh.get("rss_mib") if ok(gh) else None,
                         "kib_per_conn": gh.get("kib_per_conn") if ok(gh) else None}
        row += [("%.2fx" % rn) if rn is not None else "-", ("%.2fx" % rh) if rh is not None else "-"]
        rows.append(row)

    # column widths; the peer groups are separated by " | "
    ncols = len(head2)
    widths = [max(len(str(x[i])) for x in [head2] + rows + ([head1] if i < 2 else [])) for i in range(ncols)]
    group_start = {2 + j * len(sub) for j in range(len(targets) + 1)}
    # make the group headers fit
    for j, t in enumerate(targets + ["GH ratio"]):
        start = 2 + j * len(sub)
        span = len(sub) if j < len(targets) else 2
        need = len(t)
        have = sum(widths[start:start + span]) + (span - 1)
        if need > have:
            widths[start + span - 1] += need - have

    def fmt(row, header=False):
        out = []
        i = 0
        while i < ncols:
            if i in group_start:
                out.append("|")
            if header and row is head1 and i >= 2 and row[i]:
                j = (i - 2) // len(sub)
                span = len(sub) if j < len(targets) else 2
                w = sum(widths[i:i + span]) + (span - 1)
                out.append(row[i].center(w))
                i += span
                continue
            v = str(row[i])
            out.append(v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]))
            i += 1
        return " ".join(out)

    lines = []
    lines.append("Gatehouse load benchmark %s  mode=%s  run=%ss (+%ss warm-up)  proxy core 0, load+origin core 1"
                 % (meta.get("timestamp", ""), meta.get("mode", ""), meta.get("duration_s", ""), meta.get("warmup_s", "")))
    if meta.get("loadavg_before") is not None:
        lines.append("machine busy before/after the run: %s%% / %s%% (idle machine: ~0%%; other work skews every number)"
                     "   loadavg %s / %s   compare ratios; +-15%% between runs is normal"
                     % (meta.get("machine_busy_pct_before", "?"), meta.get("machine_busy_pct_after", "?"),
                        meta.get("loadavg_before"), meta.get("loadavg_after", "?")))
    if meta.get("versions"):
        lines.append(meta["versions"])
    lines.append(fmt(head1, header=True))
    lines.append(fmt(head2))
    lines.append("-" * len(lines[-1]))
    for row in rows:
        lines.append(fmt(row))
    lines.append("req/s! = target used <80% of its core (load generator or origin bound: compare us/req, not req/s).")
    lines.append("us/req = target CPU (utime+stime) / requests in the window; MiB = peak RSS in the run (nginx: worker); "
                 "idle rows: current RSS, alive/wanted connections.")
    lines.append("GH ratio = Gatehouse us/req / the peer's us/req (idle rows: RSS / RSS); < 1 is better.")
    if any(len(v) > 1 for v in rounds.values()):
        lines.append("Rows measured in several rounds show each peer's median round (by us/req); their "
                     "GH ratio is the median of the rounds' ratios:")
        for s_ in scen_order:
            rr = ratios.get(s_, {})
            per = ["vs %s %s" % (peer, " ".join("%.2f" % v for v in rr[key]))
                   for peer, key in (("nginx", "rounds_cpu_vs_nginx"), ("haproxy", "rounds_cpu_vs_haproxy"))
                   if rr.get(key)]
            if per:
                lines.append("  %-14s %s" % (s_, "; ".join(per)))
    for s_ in scen_order:
        per = ["%s %.1f" % (t, by[(s_, t)]["kib_per_conn"]) for t in targets
               if (s_, t) in by and by[(s_, t)].get("kib_per_conn") is not None]
        if per:
            lines.append("%s: KiB per connection (RSS growth / connections opened): %s" % (s_, ", ".join(per)))
    # Where the CPU goes: the kernel's share (sockets, loopback TCP, epoll) is much the same for
    # every peer doing the same syscalls; user space is what a design changes.
    split_rows = []
    for s_ in scen_order:
        per = ["%s %.1f+%.1f" % (t, by[(s_, t)]["user_us_req"], by[(s_, t)]["sys_us_req"]) for t in targets
               if (s_, t) in by and by[(s_, t)]["status"] == "ok" and by[(s_, t)].get("user_us_req") is not None]
        if per:
            split_rows.append("  %-14s %s" % (s_, ", ".join(per)))
    if split_rows:
        lines.append("us/req split, user + system:")
        lines.extend(split_rows)
    tls = sorted({r.get("tls") for r in recs if r.get("tls")})
    if tls:
        lines.append("TLS seen by h2load: " + "; ".join(tls))
    bad_proto = ["%s/%s=%s" % (r["scenario"], r["target"], r.get("proto")) for r in recs
                 if r.get("tool") == "h2load" and r["status"] == "ok" and r["scenario"].startswith("h2")
                 and r.get("proto") not in ("h2", "h2c")]
    if bad_proto:
        lines.append("WARNING: not h2: " + ", ".join(bad_proto))
    state = {k: v for k, v in (meta.get("peer_state") or {}).items() if v != "ok"}
    if state:
        lines.append("unusable: " + "; ".join("%s: %s" % kv for kv in state.items()))
    notes = ["%s/%s: %s" % (r["scenario"], r["target"], r["note"]) for r in recs
             if r.get("note") and r["status"] != "na" and r["note"] != state.get(r["target"])]
    if notes:
        lines.append("notes: " + "; ".join(notes))

    # targets of the issue
    verdicts = []
    lines.append("")
    lines.append("Targets (project issue 8), Gatehouse:")
    for scen, what, kind, limit in TARGETS:
        if scen not in ratios:
            continue
        rr = ratios[scen]
        if kind == "cpu_vs_nginx":
            v, txt = rr.get("cpu_vs_nginx"), "%.2fx nginx"
            passed = v is not None and v <= limit
        elif kind == "cpu_vs_haproxy":
            v, txt = rr.get("cpu_vs_haproxy"), "%.2fx haproxy"
            passed = v is not None and v <= limit
        elif kind == "rps_vs_nginx_min":
            v, txt = rr.get("rps_vs_nginx"), "%.2fx nginx"
            passed = v is not None and v >= limit
        elif kind == "kib_per_conn":
            v, txt = rr.get("kib_per_conn"), "%.1f KiB/conn"
            passed = v is not None and v <= limit
        else:
            v, txt = rr.get("rss_abs"), "%.1f MiB"
            passed = v is not None and v <= limit
        verdict = "n/a" if v is None else ("PASS" if passed else "FAIL")
        verdicts.append({"scenario": scen, "target": what, "value": v, "limit": limit, "verdict": verdict})
        lines.append("  %-4s %-13s %-48s %s" % (verdict, scen, what, (txt % v) if v is not None else "-"))

    text = "\n".join(lines)
    print(text)
    if a.json:
        os.makedirs(os.path.dirname(a.json), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "results": recs, "ratios": ratios, "targets": verdicts, "table": text},
                      f, indent=1)
    return 0


def _conn(v):
    if v is None:
        return "?"
    return ("%.0fk" % (v / 1000)) if v >= 1000 and v % 1000 == 0 else str(v)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = p.add_subparsers(dest="cmd", required=True)
    r = sp.add_parser("record")
    r.add_argument("--file", required=True)
    r.add_argument("--scenario", required=True)
    r.add_argument("--target", required=True)
    r.add_argument("--status", default="ok", choices=["ok", "err", "na"])
    r.add_argument("--note", default="")
    r.add_argument("--tool", default="")
    r.add_argument("--conns", type=int)
    r.add_argument("--round", type=int, default=1)
    r.add_argument("--out")
    r.add_argument("--log")
    r.add_argument("--cpu-ticks", type=int, default=0)
    r.add_argument("--user-ticks", type=int)
    r.add_argument("--origin-ticks", type=int, default=0)
    r.add_argument("--wall", type=float)
    r.add_argument("--window", type=float)
    r.add_argument("--window-requests", type=int)
    r.add_argument("--tool-duration", type=float)
    r.add_argument("--hwm-kb", type=int)
    r.add_argument("--rss-kb", type=int)
    r.add_argument("--rss-before-kb", type=int)
    t = sp.add_parser("table")
    t.add_argument("--file", required=True)
    t.add_argument("--meta")
    t.add_argument("--json")
    a = p.parse_args()
    return cmd_record(a) if a.cmd == "record" else cmd_table(a)


if __name__ == "__main__":
    sys.exit(main())
