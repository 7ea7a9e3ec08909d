"""Load on the reward server: 1, 8 and 32 concurrent `remote` clients x 200 requests each, over loopback.

The server (slas.rewards.server.make_server, the machinery of `slas reward-server`) runs in a child process and
serves a counting wrapper of ShapesWorld's ``toy_score`` (the verifier, about 1 ms per 32 x 32 image): it tallies
every batch it scores by the batch's own id, carried in its metadata, so "answered once" is counted on the server
side: a batch the client sent several times (a timeout, a 503) must still be scored exactly once. Each client is a
thread of this process with its own `remote` reward, sending ``--images`` ShapesWorld images per request (raw
encoding, as for loopback) one request after another. Every answer is checked against the scores of a local
``toy_score``.

Prints one row per client count: throughput (requests/s over the row's wall time), p50/p99 latency of a request as
the client sees it (retries and their waits included), the 503 answers the clients received (each then retried),
the requests scored exactly once, and the server's RSS (/proc VmRSS, so Linux only) at the start and end of the
row; the last line is ``load: C clients, N/N answered once, p99 X ms, RSS +Y%`` for the last row. The run stops
issuing requests at ``--max-seconds`` (the rows say so). Loopback only; nothing is written.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reward_server_load.py                  # the full run
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reward_server_load.py --requests 20    # a quick look
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reward_server_load.py --queue-size 8   # overload: 503s, retries
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from slas.rewards.server import DEFAULT_QUEUE_SIZE, DEFAULT_TIME_LIMIT

REWARD = "bench_counted_toy_score"
POOL = 32  # distinct batches the requests cycle through
# The clients: patient (a 503 is retried until the queue has room), with short waits, as a trainer on the same
# host would set them.
CLIENT = {"encoding": "raw", "timeout": 60.0, "retries": 20, "backoff": 0.05, "backoff_max": 1.0}


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# ----------------------------------------------------------------------------
# The server (child process)
# ----------------------------------------------------------------------------


def serve_child(queue_size: int, time_limit: float) -> None:
    """Serve the counting reward on a free loopback port; print its URL, then answer ``stats`` lines on stdin with
    one JSON line: {"counts": {batch id: times scored}, "server": the server's own tallies}."""
    from slas import rewards
    from slas.rewards.server import make_server
    from slas.toyworld.rewards import prepare_meta

    counts: Counter[str] = Counter()

    @rewards.register(REWARD, prepare=prepare_meta)
    def _factory():
        inner = rewards.build({"toy_score": 1.0})

        def fn(images, prompts, metas):
            counts[metas[0]["bench_id"]] += 1  # the one worker thread calls this: no race
            return inner(images, prompts, metas)["toy_score"]

        return fn

    server = make_server(REWARD, port=0, queue_size=queue_size, time_limit=time_limit)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.url, flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            with server.jobs.lock:
                tallies = dict(server.jobs.counts)
            print(json.dumps({"counts": dict(counts), "server": tallies}), flush=True)
    server.shutdown()
    server.server_close()


# ----------------------------------------------------------------------------
# The clients (this process)
# ----------------------------------------------------------------------------


class _Seen503(logging.Handler):
    """Counts the `remote` client's retry lines that report a 503 (one per 503 answer)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def emit(self, record):
        if "HTTP 503" in record.getMessage():
            self.n += 1


def _pool(n_images: int):
    """POOL batches: (images uint8 [n, 32, 32, 3], prompts [n], metas [n], toy_score [n] computed here)."""
    from slas import rewards
    from slas.toyworld import all_prompts, parse
    from slas.toyworld.renderer import render

    prompts = [e["prompt"] if isinstance(e, dict) else e for e in all_prompts()]
    local = rewards.build({"toy_score": 1.0})
    out = []
    for b in range(POOL):
        metas = [parse(prompts[(b * n_images + i) % len(prompts)]) for i in range(n_images)]
        images = np.stack([render(m, seed=b * n_images + i) for i, m in enumerate(metas)])
        images[::3] = 255 - images[::3]  # some wrong images, so the scores differ
        texts = [m["prompt"] for m in metas]
        out.append((images, texts, metas, local(images, texts, metas)["toy_score"]))
    return out


def run_row(url: str, clients: int, requests: int, pool, deadline: float, seen: _Seen503, tag: str) -> dict:
    """``clients`` threads x ``requests`` requests; batch ids are ``tag-client-request``."""
    from slas import rewards

    fns = [rewards.build({"remote": 1.0}, options={"remote": {"url": url, **CLIENT}}) for _ in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    ids: list[list[str]] = [[] for _ in range(clients)]
    errors: list[str] = []
    go = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        go.wait()
        for i in range(requests):
            if time.monotonic() > deadline:
                return
            images, prompts, metas, expected = pool[(c * requests + i) % POOL]
            bid = f"{tag}-{c}-{i}"
            t0 = time.perf_counter()
            try:
                got = fns[c](images, prompts, [m | {"bench_id": bid} for m in metas])["remote"]
            except Exception as e:  # a failed request is reported, and not counted as answered
                errors.append(f"{type(e).__name__}: {e}")
                continue
            latencies[c].append(time.perf_counter() - t0)
            ids[c].append(bid)
            if not np.array_equal(got, expected):
                errors.append(f"request {bid}: wrong scores {got} != {expected}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    before = seen.n
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array([x for per in latencies for x in per]) * 1e3  # ms
    answered = [b for per in ids for b in per]
    return {"clients": clients, "planned": clients * requests, "issued": len(answered) + len(errors),
            "answered": answered,
            "wall": wall, "errors": errors, "seen_503": seen.n - before,
            "p50": float(np.percentile(lat, 50)) if lat.size else math.nan,
            "p99": float(np.percentile(lat, 99)) if lat.size else math.nan}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,8,32", help="comma-separated client counts, one row each")
    ap.add_argument("--requests", type=int, default=200, help="requests per client")
    ap.add_argument("--images", type=int, default=4, help="ShapesWorld images per request")
    ap.add_argument("--queue-size", type=int, default=DEFAULT_QUEUE_SIZE, help="the server's --queue-size")
    ap.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, help="the server's --time-limit")
    ap.add_argument("--max-seconds", type=float, default=170.0,
                    help="stop issuing requests after this many seconds in all (the rows then say so)")
    ap.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_child:
        serve_child(args.queue_size, args.time_limit)
        return 0
    counts = [int(c) for c in args.clients.split(",")]
    if not counts or min(counts) < 1 or args.requests < 1 or args.images < 1:
        ap.error("--clients, --requests and --images must be >= 1")

    seen = _Seen503()
    log = logging.getLogger("slas.rewards.remote")
    log.addHandler(seen)
    log.propagate = False  # retry lines are counted, not printed
    pool = _pool(args.images)
    child = subprocess.Popen([sys.executable, __file__, "--serve-child", "--queue-size", str(args.queue_size),
                              "--time-limit", str(args.time_limit)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        url = child.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise SystemExit(f"error: the server child did not start (it printed {url!r})")

        def stats() -> dict:
            child.stdin.write("stats\n")
            child.stdin.flush()
            return json.loads(child.stdout.readline())

        t_start = time.monotonic()
        deadline = t_start + args.max_seconds
        run_row(url, 2, 10, pool, deadline, seen, "warm-up")  # imports, allocator pools, first connections
        print(f"reward server load: loopback, {args.images} ShapesWorld images per request (toy_score), server "
              f"--queue-size {args.queue_size} --time-limit {args.time_limit:g}; clients retry up to "
              f"{CLIENT['retries']} times (backoff {CLIENT['backoff']} s, at most {CLIENT['backoff_max']} s)\n")
        print("| clients | requests | throughput (req/s) | p50 ms | p99 ms | 503s seen | answered exactly once | "
              "server RSS start -> end (MiB) |")
        print("|---|---|---|---|---|---|---|---|")
        rows = []
        for n in counts:
            rss0 = _rss_mib(child.pid)
            row = run_row(url, n, args.requests, pool, deadline, seen, str(n))
            row["rss"] = (rss0, _rss_mib(child.pid))
            scored = stats()["counts"]
            mine = [b for b in scored if b.startswith(f"{n}-")]
            row["once"] = sum(1 for b in row["answered"] if scored.get(b) == 1)
            row["twice"] = sum(1 for b in mine if scored[b] > 1)
            rows.append(row)
            stopped = f" of {row['planned']} (--max-seconds)" if row["issued"] < row["planned"] else ""
            print(f"| {n} | {row['issued']}{stopped} | {len(row['answered']) / row['wall']:.0f} | {row['p50']:.1f} | "
                  f"{row['p99']:.1f} | {row['seen_503']} | {row['once']}/{row['issued']} | "
                  f"{row['rss'][0]:.1f} -> {row['rss'][1]:.1f} |")
            for e in row["errors"][:3]:
                print(f"  {n} clients: {e}")
            if row["twice"]:
                print(f"  {n} clients: {row['twice']} batches were scored more than once")
        tallies = stats()["server"]
        print(f"\nserver tallies: {json.dumps(tallies, sort_keys=True)}; {time.monotonic() - t_start:.0f} s in all")
        last = rows[-1]
        growth = 100.0 * (last["rss"][1] / last["rss"][0] - 1.0)
        print(f"load: {last['clients']} clients, {last['once']}/{last['issued']} answered once, p99 {last['p99']:.0f} ms, "
              f"RSS {growth:+.1f}%")
        return 0 if all(r["once"] == r["issued"] and not r["errors"] for r in rows) else 1
    finally:
        child.stdin.close()  # the child's stdin loop ends: it shuts the server down
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()


if __name__ == "__main__":
    sys.exit(main())
