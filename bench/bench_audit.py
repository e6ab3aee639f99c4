"""What the audit log and the budget detector add to a check on SQLite (issue 7: at most 0.5 ms, median).

    .venv/bin/python bench/bench_audit.py            # about a minute
    .venv/bin/python bench/bench_audit.py --quick

Three in-process services check the same agent step (a 10-step session, default policy): `baseline` has no
audit and no budget; `audit+budget` writes an audit record (SQLite, WAL, synchronous=NORMAL) and runs the
budget detector with every window, the repeated-call and the anomaly breaker on (limits set so nothing trips:
the full write path is measured); `audit(full)+budget` is the same with synchronous=FULL. Rounds interleave
the services so machine noise hits all of them alike. Then a burst of concurrent checks shows group commit.
Set GUARDRAILS_TEST_POSTGRES_URL / GUARDRAILS_TEST_REDIS_URL to add PostgreSQL + Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.sessions import session_step  # noqa: E402
from guardrails.config import Settings  # noqa: E402
from guardrails.serve import build_service  # noqa: E402
from guardrails.service import CheckService  # noqa: E402

HUGE = 10**12
BUDGET = {
    "enabled": True,
    "windows": {  # the default policy's agent block, plus a session and a tenant budget
        "agent": {
            "tokens_per_hour": HUGE,
            "requests_per_minute": HUGE,
            "tool_calls_per_minute": HUGE,
            "cost_per_day_usd": HUGE,
            "block_streak": HUGE,
        },
        "session": {"tokens_per_hour": HUGE},
        "tenant": {"tokens_per_day": HUGE, "cost_per_day_usd": HUGE},
    },
    "prices": {"Qwen/Qwen3-8B": {"input_per_mtok": 0.1, "output_per_mtok": 0.4}},
    "breaker": {
        "cooldown_s": 300,
        "repeated_call": {"max_repeats": HUGE, "window_s": 600},
        "anomaly": {"z": 1e9, "alpha": 0.1, "min_samples": 10, "min_tokens": 2000},
    },
}


def policy_dir(root: Path, budget: bool, minimal: bool) -> Path:
    target = root / f"policies-{'budget' if budget else 'plain'}-{'minimal' if minimal else 'default'}"
    shutil.copytree(REPO / "policies", target)
    config_file = target / "default" / "config.yml"
    config = yaml.safe_load(config_file.read_text())
    if minimal:  # one cheap detector: the check itself is fast and steady, so what we add stands out
        config["detectors"] = {"tool_undeclared": {"action": "block"}}
    config["detectors"]["budget"] = BUDGET if budget else False
    config_file.write_text(yaml.safe_dump(config))
    return target


def services(root: Path, minimal: bool) -> dict[str, CheckService]:
    plain, budget = policy_dir(root, False, minimal), policy_dir(root, True, minimal)
    root = root / ("minimal" if minimal else "default")
    built = {
        "baseline": build_service(
            Settings(policy_dir=plain, data_dir=root / "a", audit_url="none", state_url="none")
        ),
        "audit+budget": build_service(Settings(policy_dir=budget, data_dir=root / "b")),
        "audit(full)+budget": build_service(
            Settings(
                policy_dir=budget,
                data_dir=root / "c",
                audit_url=f"sqlite:///{root / 'c' / 'audit.sqlite3'}?synchronous=full",
            )
        ),
    }
    pg, rd = os.environ.get("GUARDRAILS_TEST_POSTGRES_URL"), os.environ.get("GUARDRAILS_TEST_REDIS_URL")
    if pg and rd:
        run = uuid.uuid4().hex[:8]
        built["postgres+redis"] = build_service(
            Settings(
                policy_dir=budget,
                data_dir=root / "d",
                audit_url=f"{pg}{'&' if '?' in pg else '?'}table=bench_{run}",
                state_url=f"{rd}{'&' if '?' in rd else '?'}prefix=bench-{run}:",
            )
        )
    return built


def bodies(n: int) -> list[dict[str, Any]]:
    # Distinct sessions of one shape: every check spends, counts its own call, and is audited.
    return [session_step(10, salt=f"s{i % 50}") for i in range(n)]


class Timed:
    """Runs a service's observers (the audit write, the streak update) and records their time per check."""

    def __init__(self, observers: list[Any], into: list[float]) -> None:
        self.observers, self.into = observers, into

    async def __call__(self, outcome: Any) -> None:
        started = time.perf_counter()
        for observer in self.observers:
            await observer(outcome)
        self.into.append(time.perf_counter() - started)


def measure(svcs: dict[str, CheckService], rounds: int, per_round: int) -> tuple[dict[str, list[float]], ...]:
    """Check latencies, per-check differences against the baseline (paired), and the parts of the overhead."""
    loop = asyncio.new_event_loop()
    samples: dict[str, list[float]] = {name: [] for name in svcs}
    paired: dict[str, list[float]] = {name: [] for name in svcs}
    parts: dict[str, list[float]] = {}
    for name, svc in svcs.items():
        parts[f"{name}: observers"] = observed = []
        svc.observers = [Timed(svc.observers, observed)]
        parts[f"{name}: budget detector"] = []
    work = bodies(per_round)
    for svc in svcs.values():  # warm: policy build, segment cache, store connections, writer threads
        for body in work:
            loop.run_until_complete(svc.check(body))
    for values in parts.values():
        values.clear()
    for _ in range(rounds):
        for body in work:  # each body through every service back to back: the pair shares the machine's mood
            latency = {}
            for name, svc in svcs.items():
                started = time.perf_counter()
                result = loop.run_until_complete(svc.check(body))
                latency[name] = time.perf_counter() - started
                samples[name].append(latency[name])
                paired[name].append(latency[name] - latency["baseline"])
                budget_ms = result["timings_ms"]["detectors"].get("budget")
                if budget_ms is not None:
                    parts[f"{name}: budget detector"].append(budget_ms / 1000)
    return samples, paired, {k: v for k, v in parts.items() if v}


def burst(svc: CheckService, n: int) -> float:
    """Checks per second with n checks in flight at once (group commit shares one commit among them)."""
    work = bodies(n)

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(svc.check(b) for b in work))
        return time.perf_counter() - started

    loop = asyncio.new_event_loop()
    loop.run_until_complete(run())
    return n / min(loop.run_until_complete(run()) for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, per_round = (10, 20) if args.quick else (40, 25)
    with tempfile.TemporaryDirectory() as tmp:
        for minimal in (True, False):
            svcs = services(Path(tmp), minimal)
            try:
                report(svcs, rounds, per_round, "minimal" if minimal else "default")
            finally:
                cleanup(svcs.get("postgres+redis"))
            gc.collect()


def cleanup(svc: CheckService | None) -> None:
    """Drop the PostgreSQL table and Redis keys this run created."""
    if svc is None:
        return
    from guardrails.audit.observer import AuditObserver

    for wrapper in svc.observers:  # measure() wrapped them in Timed
        for observer in getattr(wrapper, "observers", [wrapper]):
            if isinstance(observer, AuditObserver) and hasattr(observer.store, "drop"):
                observer.store.drop()
    if hasattr(svc.services.state, "purge"):
        svc.services.state.purge()


def report(svcs: dict[str, CheckService], rounds: int, per_round: int, policy: str) -> None:
    samples, paired, parts = measure(svcs, rounds, per_round)
    print(f"\n{policy} policy: check latency, {rounds * per_round} checks each (session step 10), ms:")
    print(f"  {'service':<20} {'median':>8} {'p90':>8} {'added: paired median':>21}")
    for name, values in samples.items():
        ms = sorted(v * 1000 for v in values)
        added = statistics.median(paired[name]) * 1000
        print(f"  {name:<20} {statistics.median(ms):8.3f} {ms[int(len(ms) * 0.9)]:8.3f} {added:+21.3f}")
    print("where the added time goes (median ms per check):")
    for name, values in parts.items():
        print(f"  {name:<40} {statistics.median(values) * 1000:8.3f}")
    for name in svcs:
        if name != "baseline":
            total = sum(statistics.median(v) for k, v in parts.items() if k.startswith(name + ":")) * 1000
            print(f"  {name + ': audit + budget, sum':<40} {total:8.3f}")
    print("concurrent burst (64 checks in flight), checks/s:")
    for name in svcs:
        print(f"  {name:<20} {burst(svcs[name], 64):8.0f}")


if __name__ == "__main__":
    main()
