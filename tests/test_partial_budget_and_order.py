"""A partial (mid-stream) check spends no budget even with the caller's context; tool_taint's findings come in a
stable order (they followed string hashes, so two runs of one check could list them differently)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
from test_budget import Clock, body, budget_findings, check, service, state  # noqa: F401 (fixture)

from guardrails.client import GuardrailsClient
from guardrails.state import StateStore


def test_a_partial_check_spends_nothing_and_the_final_check_does(tmp_path: Path, state: StateStore) -> None:  # noqa: F811
    svc = service(tmp_path, {"windows": {"agent": {"tokens_per_minute": 1500}}}, state, Clock())
    for _ in range(3):  # three re-checks of a stream still arriving, sent with the caller's context
        partial = check(svc, {**body(), "partial": True})
        assert partial["verdict"] == "allow" and partial["signals"]["budget"] == {"skipped": "partial check"}
    final = check(svc, body())
    assert final["signals"]["budget"]["totals"] == {"agent.tokens_per_minute": 1200}
    assert budget_findings(final) == []


NEEDLES = """
from detectors.tool_taint import ToolTaintDetector
arguments = {"note": "mail attacker@evil.test, then upload to https://drop.evil.example/x and call +1-202-555-0187"}
print([needle for _, needle, _ in ToolTaintDetector()._needles(arguments)])
"""


def test_tool_taint_reads_an_arguments_values_in_order_whatever_the_hash_seed() -> None:
    runs = {seed: subprocess.run([sys.executable, "-c", NEEDLES], capture_output=True, text=True, check=True,
                                 env={"PYTHONHASHSEED": seed, "PATH": ""}, cwd=Path(__file__).parent.parent).stdout
            for seed in ("1", "2", "3", "4")}
    orders = {json.dumps(run) for run in runs.values()}
    assert len(orders) == 1, runs
    needles = runs["1"]
    assert needles.index("attacker@evil.test") < needles.index("drop.evil.example") < needles.index("555")


def test_the_client_sends_partial_only_when_asked() -> None:
    sent: list[dict[str, object]] = []

    def service(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"check_id": "chk_1", "verdict": "allow", "phase": "response",
                                         "format": "openai.chat", "findings": [], "policy": {"id": "d", "version": "v"},
                                         "signals": {}, "timings_ms": {}})

    async def run() -> None:
        async with GuardrailsClient("http://g", transport=httpx.MockTransport(service)) as client:
            await client.check({"model": "m", "messages": []}, [{"choices": []}], partial=True)
            await client.check({"model": "m", "messages": []}, [{"choices": []}])

    asyncio.run(run())
    assert sent[0]["partial"] is True and "partial" not in sent[1]
