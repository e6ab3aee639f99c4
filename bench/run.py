"""One command, one run: in-process engine, normalization, step scaling, and HTTP against an echo baseline.

    .venv/bin/python bench/run.py            # full run (about a minute)
    .venv/bin/python bench/run.py --quick    # fewer iterations

Medians and p99 in milliseconds; ratios are computed within this run, because these 2-core machines are
noisy. Targets (issue 2): HTTP check <= 1.3x the echo baseline at the median; normalizing a 50-turn
session < 2 ms; step 50 <= 1.5x step 1 once its history has been seen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.sessions import session_step  # noqa: E402
from guardrails.adapters import read_exchange  # noqa: E402
from guardrails.config import Settings  # noqa: E402
from guardrails.serve import build_service  # noqa: E402


def stats(samples_s: list[float]) -> tuple[float, float]:
    ms = sorted(x * 1000 for x in samples_s)
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def load_samples() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((REPO / "samples").glob("*.json"))}


def bench_in_process(bodies: dict[str, dict[str, Any]], n: int) -> list[tuple[str, float, float]]:
    service = build_service(Settings(policy_dir=REPO / "policies"))
    loop = asyncio.new_event_loop()
    rows = []
    for name, body in bodies.items():
        loop.run_until_complete(service.check(body))  # warm: policy build, caches
        med, p99 = stats(timed(lambda b=body: loop.run_until_complete(service.check(b)), n))
        rows.append((name, med, p99))
    loop.close()
    return rows


def bench_normalize(n: int) -> tuple[float, float]:
    body = session_step(50)
    return stats(timed(lambda: read_exchange(body["request"], body["response"]), n))


def bench_steps(variants: int, policy: str) -> tuple[float, float, float, float, float]:
    """Step 1 (everything new) vs step 50 (history seen at steps 1..49, response new), over fresh sessions.

    Variants rotate which tool each step calls, so steps 1 and 50 get the same mix of new content (an e-mail
    address to analyze, say) and the ratio measures what the history costs. Also returned: the median of each
    session's own step 50 / step 1 ratio; its two steps run ~50 ms apart, so the host's slower and faster
    spells (these 2-core machines drift by 30 % over seconds) cancel out of it.
    """
    service = build_service(Settings(policy_dir=REPO / "policies"))
    loop = asyncio.new_event_loop()

    def step(n: int, salt: str, rotation: int) -> dict[str, Any]:
        return {**session_step(n, salt, rotation), "policy": policy}

    loop.run_until_complete(service.check(step(1, "warmup", 0)))
    first, last = [], []
    for v in range(variants):
        salt, rotation = f"variant-{v}-{os.urandom(4).hex()}", v % 3
        body = step(1, salt, rotation)
        t = time.perf_counter()
        loop.run_until_complete(service.check(body))
        first.append(time.perf_counter() - t)
        for n in range(2, 50):
            loop.run_until_complete(service.check(step(n, salt, rotation)))
        body = step(50, salt, rotation)
        t = time.perf_counter()
        loop.run_until_complete(service.check(body))
        last.append(time.perf_counter() - t)
    loop.close()
    paired = statistics.median(b / a for a, b in zip(first, last, strict=True))
    return (*stats(first), *stats(last), paired)


# --- HTTP -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(app: str, port: int, factory: bool) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--log-level",
           "warning", "--no-access-log"]
    if factory:
        cmd.append("--factory")
    env = dict(os.environ, GUARDRAILS_POLICY_DIR=str(REPO / "policies"), PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{app} did not start on port {port}")


async def _worker(port: int, request: bytes, n: int, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(n):
        t = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
        await reader.readexactly(int(match.group(1)) if match else 0)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        latencies.append(time.perf_counter() - t)
    writer.close()


def load(port: int, body: bytes, concurrency: int, total: int) -> tuple[list[float], float]:
    """Send `total` requests over `concurrency` keep-alive connections: (latencies in s, elapsed s)."""
    request = (b"POST /v1/checks HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    latencies: list[float] = []

    async def run() -> float:
        await asyncio.gather(*(_worker(port, request, 20, []) for _ in range(min(concurrency, 4))))  # warm
        t = time.perf_counter()
        await asyncio.gather(*(_worker(port, request, total // concurrency, latencies) for _ in range(concurrency)))
        return time.perf_counter() - t

    return latencies, asyncio.run(run())


def compare(ports: tuple[int, int], body: bytes, concurrency: int, total: int, rounds: int = 5
            ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Check and echo in alternating rounds, so that a burst of load on these shared cores hits both
    alike; each side's median, p99 and requests/s over all its rounds."""
    results: list[tuple[list[float], float]] = [([], 0.0) for _ in ports]
    for _ in range(rounds):
        for k, port in enumerate(ports):
            latencies, elapsed = load(port, body, concurrency, total // rounds)
            results[k] = (results[k][0] + latencies, results[k][1] + elapsed)
    out = [(*stats(latencies), len(latencies) / elapsed) for latencies, elapsed in results]
    return out[0], out[1]


def bench_http(bodies: dict[str, dict[str, Any]], total: int) -> list[tuple[str, int, tuple, tuple]]:
    check_port, echo_port = free_port(), free_port()
    servers = [start_server("guardrails.serve:build_app", check_port, True),
               start_server("bench.echo_app:app", echo_port, False)]
    rows = []
    try:
        for name, body in bodies.items():
            raw = json.dumps(body).encode()
            for concurrency in (1, 32):
                n = total if concurrency == 1 else total * 2
                check, echo = compare((check_port, echo_port), raw, concurrency, n)
                rows.append((name, concurrency, check, echo))
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    n = 100 if args.quick else 400
    bodies = load_samples()
    bodies["session_step_50"] = session_step(50)

    print("== in-process check (service.check, warm caches) ==")
    print(f"{'body':<34}{'median ms':>11}{'p99 ms':>10}")
    for name, med, p99 in bench_in_process(bodies, n):
        print(f"{name:<34}{med:>11.3f}{p99:>10.3f}")

    med, p99 = bench_normalize(n * 2)
    print(f"\n== normalize a 50-turn session (read_exchange) ==\nmedian {med:.3f} ms  p99 {p99:.3f} ms"
          f"  target < 2 ms: {'OK' if med < 2 else 'MISSED'}")

    print("\n== agent session: step 1 (all new) vs step 50 (history seen, response new) ==")
    for policy in ("default", "minimal"):
        m1, p1, m50, p50, paired = bench_steps(16 if args.quick else 40, policy)
        ratio = m50 / m1
        print(f"[{policy}] step 1 median {m1:.3f} ms p99 {p1:.3f} ms | step 50 median {m50:.3f} ms p99 {p50:.3f} ms"
              f" | ratio of medians {ratio:.2f}x | per-session ratio, median {paired:.2f}x"
              f"  target <= 1.5x: {'OK' if paired <= 1.5 else 'MISSED'}")

    if args.no_http:
        return
    # Every sample and the 50-turn step, under the full default policy and under `minimal` (the check path
    # itself: parse, normalize, engine, one detector, audit).
    http_bodies = dict(bodies)
    http_bodies.update({f"{k}@minimal": {**v, "policy": "minimal"} for k, v in bodies.items()})
    print("\n== HTTP POST /v1/checks vs echo baseline (1 uvicorn worker each, raw asyncio keep-alive client) ==")
    print(f"{'body':<34}{'conc':>5}{'check med':>11}{'p99':>9}{'chk/s':>8}{'echo med':>10}{'p99':>9}"
          f"{'req/s':>8}{'ratio':>7}")
    ratios: dict[tuple[str, int], list[float]] = {}
    for name, conc, (cm, cp, cr), (em, ep, er) in bench_http(http_bodies, 100 if args.quick else 300):
        print(f"{name:<34}{conc:>5}{cm:>11.3f}{cp:>9.3f}{cr:>8.0f}{em:>10.3f}{ep:>9.3f}{er:>8.0f}{cm / em:>7.2f}")
        ratios.setdefault(("minimal" if name.endswith("@minimal") else "default", conc), []).append(cm / em)
    print("check / echo median ratio over the bodies (target <= 1.3x):")
    for (policy, conc), values in sorted(ratios.items()):
        met = sum(r <= 1.3 for r in values)
        print(f"  {policy:8s} concurrency {conc:>2}: median {statistics.median(values):.2f}x, "
              f"range {min(values):.2f}-{max(values):.2f}x, {met} of {len(values)} bodies within 1.3x")


if __name__ == "__main__":
    main()
