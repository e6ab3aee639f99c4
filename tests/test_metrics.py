"""GET /metrics: real checks through the app move the Prometheus counters, and the exposition is well formed
(read back with a strict parser of the text format 0.0.4)."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient
from policy_bundles import bundle

from api.app import create_app
from guardrails.audit.observer import AuditObserver
from guardrails.config import Settings
from guardrails.detector import Detector, ScanContext
from guardrails.exchange import Exchange
from guardrails.findings import Category, Finding
from guardrails.metrics import CheckMetrics
from guardrails.serve import build_app, build_service

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE_LINE = re.compile(rf"({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? (\S+)")
LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
UNESCAPED = {"\\": "\\", '"': '"', "n": "\n"}
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}

Series = tuple[str, frozenset[tuple[str, str]]]


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def parse_exposition(text: str) -> dict[Series, float]:
    """Strictly: HELP then TYPE once per family before its samples, `name{labels} value` lines, label values
    escaped, no series twice, histogram buckets cumulative up to `+Inf` == `_count`."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[Series, float] = {}
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert re.fullmatch(NAME, name) and name not in types, line
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary") and name not in types, line
            types[name] = kind
        else:
            match = SAMPLE_LINE.fullmatch(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            assert _family(name, types) is not None, f"sample before its TYPE: {line!r}"
            pairs = frozenset((key, re.sub(r"\\(.)", lambda m: UNESCAPED[m[1]], raw))
                              for key, raw in LABEL_PAIR.findall(labels or ""))
            assert (name, pairs) not in samples, f"series twice: {line!r}"
            samples[name, pairs] = float(value)
    _check_histograms(samples, types)
    return samples


def _family(name: str, types: Mapping[str, str]) -> str | None:
    if name in types and types[name] in ("counter", "gauge"):
        return name
    for kind, suffixes in SUFFIXES.items():
        for suffix in suffixes:
            if name.endswith(suffix) and types.get(name.removesuffix(suffix)) == kind:
                return name.removesuffix(suffix)
    return None


def _check_histograms(samples: Mapping[Series, float], types: Mapping[str, str]) -> None:
    for family in (name for name, kind in types.items() if kind == "histogram"):
        for (name, labels), count in samples.items():
            if name != f"{family}_count":
                continue
            buckets = sorted((float(dict(key)["le"]), value) for (n, key), value in samples.items()
                             if n == f"{family}_bucket" and key - {("le", dict(key)["le"])} == labels)
            assert [v for _, v in buckets] == sorted(v for _, v in buckets), (family, labels)
            assert buckets[-1] == (float("inf"), count), (family, labels)


def scrape(client: TestClient, **headers: str) -> dict[Series, float]:
    resp = client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == CONTENT_TYPE
    return parse_exposition(resp.text)


def moved(before: Mapping[Series, float], after: Mapping[Series, float], name: str) -> dict[tuple, float]:
    """How each series of `name` moved, keyed by its label pairs (sorted); series that did not move left out."""
    return {tuple(sorted(labels)): after[n, labels] - before.get((n, labels), 0.0)
            for n, labels in after if n == name and after[n, labels] != before.get((n, labels), 0.0)}


def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


def settings(**overrides: Any) -> Settings:
    return Settings(**{"policy_dir": REPO / "policies", "audit_url": "none", **overrides})


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(build_app(settings()))


def test_a_blocking_check_counts_its_verdict_findings_and_durations(client: TestClient) -> None:
    before = scrape(client)
    answer = client.post("/v1/checks", json=sample("attacks/openai_chat_exfiltration.json")).json()
    after = scrape(client)
    assert answer["verdict"] == "block"
    assert moved(before, after, "guardrails_checks_total") == {
        labels(policy="default", format="openai.chat", phase="response", verdict="block"): 1}
    reported = Counter(labels(category=f["category"], detector=f["detector"], action=f["action"])
                       for f in answer["findings"])
    categories = {f["category"] for f in answer["findings"]}
    assert {"secret", "prompt_injection", "unsafe_reasoning", "tool_taint"} <= categories
    assert moved(before, after, "guardrails_findings_total") == dict(reported)
    assert moved(before, after, "guardrails_check_duration_seconds_count") == {labels(policy="default"): 1}
    assert moved(before, after, "guardrails_check_duration_seconds_bucket")[labels(policy="default", le="+Inf")] == 1
    assert moved(before, after, "guardrails_detector_duration_seconds_count") == {
        labels(detector=name): 1 for name in answer["timings_ms"]["detectors"]}
    assert not moved(before, after, "guardrails_detector_errors_total")
    assert not moved(before, after, "guardrails_check_errors_total")


@pytest.mark.parametrize(("name", "body_format", "phase"), [
    ("openai_chat.json", "openai.chat", "response"),
    ("anthropic_messages_stream.json", "anthropic.messages", "response"),
    ("gemini_interactions.json", "gemini.interactions", "request"),
])
def test_allowed_checks_count_their_format_and_phase(client: TestClient, name: str, body_format: str,
                                                     phase: str) -> None:
    body = sample(name)
    if phase == "request":
        del body["response"]
    before = scrape(client)
    assert client.post("/v1/checks", json=body).json()["verdict"] == "allow"
    assert moved(before, scrape(client), "guardrails_checks_total") == {
        labels(policy="default", format=body_format, phase=phase, verdict="allow"): 1}


def test_versions_of_the_service_and_of_each_loaded_policy(client: TestClient) -> None:
    answer = client.post("/v1/checks", json=sample("openai_chat.json")).json()
    scraped = scrape(client)
    assert scraped["guardrails_info", frozenset({("version", client.get("/healthz").json()["version"])})] == 1
    policies = {dict(key)["policy"]: dict(key)["version"] for name, key in scraped if name == "guardrails_policy_info"}
    assert policies["default"] == answer["policy"]["version"]
    assert set(policies) == {p.name for p in (REPO / "policies").iterdir() if (p / "config.yml").is_file()}


class Exploding(Exception):
    pass


# A class name a plug-in could produce, with every character the text format escapes.
Exploding.__name__ = 'Exploding"Quote\\Backslash\nNewline'


class ExplodingDetector(Detector):
    name: ClassVar[str] = "exploding"
    category: ClassVar[Category] = Category.CUSTOM

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        raise Exploding("boom")


def test_a_detector_error_is_counted_and_odd_label_values_are_escaped(tmp_path: Path) -> None:
    policy_id = 'odd "policy" \\ with\nnewline'
    bundle(tmp_path, policy_id, "on_detector_error: block\ndetectors:\n  tool_undeclared: {}\n  exploding: {}\n")
    service = build_service(settings(policy_dir=tmp_path, state_url="none"))
    service.registry.register(ExplodingDetector)
    client = TestClient(create_app(service, settings(policy_dir=tmp_path)))
    body = {**sample("openai_chat.json"), "policy": policy_id}
    before = scrape(client)
    answer = client.post("/v1/checks", json=body).json()
    after = scrape(client)
    assert answer["verdict"] == "block" and [f["category"] for f in answer["findings"]] == ["detector_error"]
    assert moved(before, after, "guardrails_detector_errors_total") == {
        labels(detector="exploding", error_type=Exploding.__name__): 1}
    assert moved(before, after, "guardrails_findings_total") == {
        labels(category="detector_error", detector="exploding", action="block"): 1}
    assert moved(before, after, "guardrails_checks_total") == {
        labels(policy=policy_id, format="openai.chat", phase="response", verdict="block"): 1}
    assert ("guardrails_policy_info", frozenset({("policy", policy_id), ("version", answer["policy"]["version"])})) \
        in after
    text = client.get("/metrics").text
    assert 'error_type="Exploding\\"Quote\\\\Backslash\\nNewline"' in text
    assert 'policy="odd \\"policy\\" \\\\ with\\nnewline"' in text


def with_middleware(app: FastAPI) -> FastAPI:
    """An app that adds middleware gets the full framework stack for checks instead of the fast path."""

    @app.middleware("http")
    async def passing(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        return await call_next(request)

    return app


@pytest.mark.parametrize("stack", ["fast path", "full stack"])
def test_refused_checks_are_counted_by_status_and_type(stack: str) -> None:
    app = build_app(settings(max_body_bytes=64 * 1024))
    client = TestClient(with_middleware(app) if stack == "full stack" else app)
    json_type = {"content-type": "application/json"}
    before = scrape(client)
    assert client.post("/v1/checks", content=b'{"request": ', headers=json_type).status_code == 400
    assert client.post("/v1/checks", json={"request": "not an object"}).status_code == 422
    assert client.post("/v1/checks", json={"request": {"messages": []}, "policy": "nope"}).status_code == 422
    assert client.post("/v1/checks", json={"request": {"messages": []}, "extra": 1}).status_code == 422
    assert client.post("/v1/checks", content=b"x" * 70_000, headers=json_type).status_code == 413
    after = scrape(client)
    assert moved(before, after, "guardrails_check_errors_total") == {
        labels(status="400", type="invalid_json"): 1, labels(status="413", type="body_too_large"): 1,
        labels(status="422", type="invalid_body"): 2, labels(status="422", type="unknown_policy"): 1}
    assert not moved(before, after, "guardrails_checks_total")


def test_a_check_whose_audit_record_fails_is_a_refusal_not_a_verdict(tmp_path: Path) -> None:
    app = build_app(settings(audit_url="", data_dir=tmp_path))
    client = TestClient(app)
    (audit,) = [o for o in app.state.service.observers if isinstance(o, AuditObserver)]

    def broken(rows: Any) -> list[int]:
        raise sqlite3.OperationalError("disk I/O error")

    audit.store._append_batch = broken  # type: ignore[method-assign]
    before = scrape(client)
    assert client.post("/v1/checks", json=sample("openai_chat.json")).status_code == 503
    after = scrape(client)
    assert moved(before, after, "guardrails_check_errors_total") == {labels(status="503", type="audit_unavailable"): 1}
    assert not moved(before, after, "guardrails_checks_total")


def test_metrics_need_a_key_when_keys_are_set() -> None:
    client = TestClient(build_app(settings(api_keys=("s3cret",))))
    for headers in ({}, {"authorization": "Bearer wrong"}):
        resp = client.get("/metrics", headers=headers)
        assert resp.status_code == 401 and resp.json()["error"]["type"] == "unauthorized"
    before = scrape(client, authorization="Bearer s3cret")
    assert client.post("/v1/checks", json=sample("openai_chat.json")).status_code == 401
    after = scrape(client, authorization="Bearer s3cret")
    assert moved(before, after, "guardrails_check_errors_total") == {labels(status="401", type="unauthorized"): 1}


def test_a_metrics_failure_never_fails_the_check(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    client = TestClient(build_app(settings()))

    def broken(self: CheckMetrics, outcome: Any) -> None:
        raise RuntimeError("counting failed")

    monkeypatch.setattr(CheckMetrics, "count", broken)
    with caplog.at_level(logging.ERROR, logger="guardrails.metrics"):
        resp = client.post("/v1/checks", json=sample("attacks/openai_chat_exfiltration.json"))
    assert resp.status_code == 200 and resp.json()["verdict"] == "block"
    assert "could not count check" in caplog.text and "counting failed" in caplog.text
