"""Review edges: learned thresholds poisoned by re-checks, deleted bundles still served, HTTP edge gaps.

1. `low_confidence` learned from every check, so 40 `partial: true` re-checks (each resending every chunk so far)
   with extreme logprobs flipped an unchanged body from warn to allow; a retried check counted twice.
2. A bundle that served a check and was then removed kept answering with its old version.
3. A client that closed mid-body was a logged traceback and a 500 in the metrics; a non-UTF-8 body was reported
   as "surrogates not allowed"; `audit export --since T --until T` exported nothing with exit 0; the OpenAPI
   `CheckRequest` did not say unknown keys are refused.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fixture
from fastapi.testclient import TestClient
from policy_bundles import bundle
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import Message
from test_metrics import labels, moved, scrape

from detectors.low_confidence import LowConfidenceDetector
from guardrails.adapters import read_exchange
from guardrails.cli import main
from guardrails.config import Settings
from guardrails.detector import DetectorRegistry, ScanContext, Services
from guardrails.errors import UnknownPolicy
from guardrails.exchange import CallerContext
from guardrails.model_stats import InMemoryModelStats, SeenResponses
from guardrails.policy import PolicyStore
from guardrails.serve import build_app
from guardrails.service import CheckService

REPO = Path(__file__).resolve().parent.parent
REGISTRY = DetectorRegistry.from_entry_points()
MODEL = "poison-demo-1"


# --- 1. what low_confidence learns from ----------------------------------------------------------------------


def shaky_body(model: str = MODEL, logprob: float = -3.0) -> dict[str, Any]:
    """A plain chat answer whose every token sits at `logprob`: -3.0 warns at the cold-start thresholds."""
    response = fixture("chat_completion_content_logprobs.json")
    response["model"] = model
    for token in response["choices"][0]["logprobs"]["content"]:
        token["logprob"] = logprob
    return {"request": {"model": model, "messages": [{"role": "user", "content": "How is the weather in Paris?"}],
                        "logprobs": True, "top_logprobs": 3}, "response": response}


def extreme(body: dict[str, Any]) -> dict[str, Any]:
    """The same response with alternating 0 and -30 logprobs: a huge spread, which makes -3.0 look ordinary."""
    out = copy.deepcopy(body)
    for i, token in enumerate(out["response"]["choices"][0]["logprobs"]["content"]):
        token["logprob"] = 0.0 if i % 2 else -30.0
    return out


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(policy_dir=REPO / "policies", data_dir=tmp_path / "var")
    with TestClient(build_app(settings)) as client:
        yield client


def test_partial_re_checks_do_not_teach_the_thresholds_that_judge_the_final_check(app_client: TestClient) -> None:
    base = shaky_body()
    before = app_client.post("/v1/checks", json=base).json()
    assert before["verdict"] == "warn"
    poison = {**extreme(base), "partial": True}
    for _ in range(40):  # 40 x 13 tokens: past relative.min_tokens (500) and min_segments (30) when learned
        assert app_client.post("/v1/checks", json=poison).status_code == 200
    after = app_client.post("/v1/checks", json=base).json()
    # Was allow, judged against thresholds learned from the partial checks ({"relative": true, "token": -38...}).
    assert after["verdict"] == "warn"
    assert after["signals"]["low_confidence"]["thresholds"] == before["signals"]["low_confidence"]["thresholds"]


def scan(detector: LowConfidenceDetector, body: dict[str, Any], partial: bool = False, tenant: str | None = None
         ) -> None:
    exchange = read_exchange(body["request"], body["response"], partial=partial, context=CallerContext(tenant=tenant))
    ctx = ScanContext(segments=[s for s in exchange.segments if detector.default_scope.matches(s)], signals={})
    asyncio.run(detector.scan(exchange, ctx))


def learner() -> tuple[LowConfidenceDetector, InMemoryModelStats]:
    stats = InMemoryModelStats()
    return LowConfidenceDetector({}, Services(extra={"model_stats": stats})), stats


def test_a_partial_check_is_never_learned_from_and_does_not_hide_its_final_check() -> None:
    detector, stats = learner()
    body = shaky_body()
    for _ in range(3):
        scan(detector, body, partial=True)
    assert stats.get(MODEL) is None
    scan(detector, body)  # the stream's final check, same response id: counted, once
    learned = stats.get(MODEL)
    assert learned is not None and learned.tokens.count == 13 and learned.segments.count == 1


def test_a_retried_check_of_the_same_response_is_counted_once() -> None:
    detector, stats = learner()
    body = shaky_body()
    scan(detector, body)
    once = stats.get(MODEL)
    assert once is not None
    scan(detector, body)  # a gateway retry: same response id, same model
    assert stats.get(MODEL) == once
    other = copy.deepcopy(body)
    other["response"]["id"] = "chatcmpl-another-response"
    scan(detector, other)
    twice = stats.get(MODEL)
    assert twice is not None and twice.tokens.count == 2 * once.tokens.count


def test_the_same_response_id_under_another_model_or_without_an_id_still_counts() -> None:
    detector, stats = learner()
    body = shaky_body()
    scan(detector, body)
    scan(detector, shaky_body(model="other-model"))  # the id is the same: the pair is not
    assert stats.get("other-model") is not None
    anonymous = copy.deepcopy(body)
    del anonymous["response"]["id"]
    before = stats.get(MODEL)
    assert before is not None
    scan(detector, anonymous)
    scan(detector, anonymous)  # cannot be told from another response: each counts
    after = stats.get(MODEL)
    assert after is not None and after.tokens.count == before.tokens.count + 2 * 13


def test_another_tenants_check_of_a_response_id_does_not_keep_that_response_out() -> None:
    # The pair (model, response id) was global: a caller could send another tenant's response id first.
    detector, stats = learner()
    body = shaky_body()
    scan(detector, body, tenant="mallory")
    once = stats.get(MODEL)
    assert once is not None
    scan(detector, body, tenant="acme")
    twice = stats.get(MODEL)
    assert twice is not None and twice.tokens.count == 2 * once.tokens.count


def test_the_counted_responses_are_bounded_and_forget_the_oldest() -> None:
    seen = SeenResponses(max_entries=3)
    for i in range(10):
        assert seen.first("m", f"id-{i}") is True
    assert len(seen) == 3
    assert seen.first("m", "id-9") is False  # recent: a retry of it is caught
    assert seen.first("m", "id-0") is True  # long forgotten: counted again
    assert len(seen) == 3
    # A megabyte id takes no more room than a short one, and the model is part of the pair.
    assert seen.first("m", "x" * 1_000_000) is True and seen.first("m", "x" * 1_000_000) is False
    assert seen.first("m:", "a") is True and seen.first("m", ":a") is True


# --- 2. a removed bundle is no longer served -----------------------------------------------------------------

MINIMAL = (REPO / "policies" / "minimal" / "config.yml").read_text()
BODY = {"request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}


def service_over(root: Path, removal_grace_s: float = 0) -> CheckService:
    store = PolicyStore(root, check_interval_s=0, removal_grace_s=removal_grace_s)
    return CheckService(store, REGISTRY, default_policy="default")


def named(policy: str) -> dict[str, Any]:
    return {**BODY, "policy": policy}


@pytest.mark.parametrize("removal", ["directory", "config.yml"])
def test_a_removed_bundle_is_refused_as_unknown_and_served_again_when_it_comes_back(
    tmp_path: Path, removal: str
) -> None:
    bundle(tmp_path, "default", MINIMAL)
    gone = bundle(tmp_path, "gone", MINIMAL)
    service = service_over(tmp_path)
    assert asyncio.run(service.check(named("gone")))["policy"]["id"] == "gone"
    if removal == "directory":
        shutil.rmtree(gone)
    else:
        (gone / "config.yml").unlink()
    # Was answered by the old version, while `guardrails check --policy gone` exits 4 "no policy named".
    with pytest.raises(UnknownPolicy, match="no policy named 'gone'"):
        asyncio.run(service.check(named("gone")))
    assert "gone" not in service.policies.loaded_versions()
    assert not any(key[0] == "gone" for key in service._engines)  # its detectors are not kept
    bundle(tmp_path, "gone", MINIMAL.replace("minimal", "back again", 1) + "\n# back\n")
    back = asyncio.run(service.check(named("gone")))
    assert back["policy"]["id"] == "gone"


def test_a_config_yml_being_replaced_keeps_the_last_good_version(tmp_path: Path) -> None:
    # An editor that deletes config.yml and writes it again leaves a moment without it: the bundle is not
    # forgotten then (a check or /readyz landing in the gap got unknown_policy / not ready), and a bad rewrite
    # keeps the last good version serving, as any rejected edit does.
    bundle(tmp_path, "default", MINIMAL)
    edited = bundle(tmp_path, "edited", MINIMAL)
    service = service_over(tmp_path, removal_grace_s=60)
    version = asyncio.run(service.check(named("edited")))["policy"]["version"]
    (edited / "config.yml").unlink()
    assert asyncio.run(service.check(named("edited")))["policy"]["version"] == version
    assert service.readiness()["ready"] is True and "edited" in service.policies.loaded_versions()
    (edited / "config.yml").write_text("detectors: [unclosed\n")
    assert asyncio.run(service.check(named("edited")))["policy"]["version"] == version
    assert "reload:edited" in service.readiness()["problems"]


def test_removing_the_default_policy_makes_readyz_not_ready_with_the_reason(tmp_path: Path) -> None:
    default = bundle(tmp_path, "default", MINIMAL)
    bundle(tmp_path, "other", MINIMAL)
    service = service_over(tmp_path)
    asyncio.run(service.check(BODY))
    assert service.readiness()["ready"] is True
    shutil.rmtree(default)
    report = service.readiness()
    assert report["ready"] is False
    # Was `ready: false` with no problem listed at all.
    assert "no bundle 'default' in the policy directory" in report["problems"]["policy:default"]
    assert "bundles found: other" in report["problems"]["policy:default"]
    bundle(tmp_path, "default", MINIMAL)
    assert service.readiness() == {"ready": True, "problems": {}}
    assert asyncio.run(service.check(BODY))["policy"]["id"] == "default"


def test_a_removed_bundle_takes_its_stale_reload_error_and_metrics_line_with_it(tmp_path: Path) -> None:
    bundle(tmp_path, "default", MINIMAL)
    broken = bundle(tmp_path, "broken", MINIMAL)
    service = service_over(tmp_path)
    asyncio.run(service.check(named("broken")))
    (broken / "config.yml").write_text("detectors: [unclosed\n")
    asyncio.run(service.check(named("broken")))  # the rejected edit: the last good version serves
    assert "reload:broken" in service.readiness()["problems"]
    shutil.rmtree(broken)
    # Readiness alone (no check names it): was a `reload:broken` problem for a bundle that no longer exists.
    assert service.readiness() == {"ready": True, "problems": {}}
    assert "broken" not in service.policies.loaded_versions()  # policy_info on /metrics reads these


# --- 3. the HTTP edge ----------------------------------------------------------------------------------------


def disconnecting_post(app: Any, path: str = "/v1/checks") -> list[Message]:
    """POST `path` whose client sends part of its body and then closes the connection; what the app sent."""
    incoming: list[Message] = [{"type": "http.request", "body": b'{"request":', "more_body": True},
                               {"type": "http.disconnect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "scheme": "http", "server": ("testserver", 80), "client": ("127.0.0.1", 1),
             "http_version": "1.1", "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", b"1000")]}
    asyncio.run(app(scope, receive, send))
    return sent


def test_a_client_that_disconnects_mid_body_is_no_internal_error(caplog: pytest.LogCaptureFixture) -> None:
    app = build_app(Settings(policy_dir=REPO / "policies", audit_url="none"))
    with TestClient(app) as client:
        before = scrape(client)
        with caplog.at_level(logging.DEBUG, logger="guardrails.api"):
            sent = disconnecting_post(app)
        after = scrape(client)
    assert sent[0]["status"] == 499
    # Was {status="500", type="internal_error"}, and an ERROR "unhandled error" with a traceback.
    assert moved(before, after, "guardrails_check_errors_total") == {
        labels(status="499", type="client_disconnect"): 1.0}
    records = [r for r in caplog.records if r.name == "guardrails.api"]
    assert [(r.levelno, r.exc_info) for r in records] == [(logging.INFO, None)]
    assert "client disconnected" in records[0].getMessage()


@pytest.mark.parametrize("path", ["/v1/checks", "/v1/guardrail/checks"])
def test_a_disconnect_through_the_full_middleware_stack_is_not_raised_to_the_server(path: str) -> None:
    app = build_app(Settings(policy_dir=REPO / "policies", audit_url="none"))

    async def passthrough(request: Any, call_next: Any) -> Any:
        return await call_next(request)

    app.add_middleware(BaseHTTPMiddleware, dispatch=passthrough)  # the check route then takes the full stack
    # Was: starlette's ServerErrorMiddleware answered 500 and re-raised, so the server logged the traceback.
    sent = disconnecting_post(app, path)
    assert sent[0]["status"] == 499


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(build_app(Settings(policy_dir=REPO / "policies", audit_url="none"))) as test_client:
        yield test_client


def test_a_missing_content_type_is_read_as_json_and_a_wrong_one_is_refused(client: TestClient) -> None:
    body = b'{"request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}'
    assert client.post("/v1/checks", content=body, headers={"content-type": ""}).status_code == 200
    missing = client.post("/v1/checks", content=body)  # httpx adds no content-type to raw content
    assert missing.status_code == 200, missing.text
    wrong = client.post("/v1/checks", content=body, headers={"content-type": "text/plain"})
    assert wrong.status_code == 415
    assert wrong.json()["error"]["message"] == "Content-Type must be application/json (or absent), got 'text/plain'"


def test_a_body_that_is_not_utf8_names_the_byte(client: TestClient) -> None:
    body = b'{"request":{"model":"m","messages":[{"role":"user","content":"hi \xff"}]}}'
    resp = client.post("/v1/checks", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    # Was "body is not valid JSON: str is not valid UTF-8: surrogates not allowed: line 1 column 1 (char 0)".
    assert resp.json()["error"] == {"type": "invalid_json",
                                    "message": "the body is not valid UTF-8 at byte 65 (0xff): JSON is sent as UTF-8"}
    not_json = client.post("/v1/checks", content=b'{"request": ', headers={"content-type": "application/json"})
    assert not_json.json()["error"]["message"].startswith("body is not valid JSON: ")


def test_openapi_check_request_says_unknown_keys_are_refused(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["CheckRequest"]
    assert schema["additionalProperties"] is False
    assert "refused with HTTP 422 `invalid_body`" in schema["description"]
    resp = client.post("/v1/checks", json={**BODY, "polcy": "default"})
    assert resp.status_code == 422 and resp.json()["error"]["pointer"] == "/polcy"


def test_an_empty_time_range_is_refused_by_export_and_the_api(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(policy_dir=REPO / "policies", data_dir=tmp_path / "var")
    with TestClient(build_app(settings)) as api:
        assert api.post("/v1/checks", json=BODY).status_code == 200
        when = api.get("/v1/audit/records").json()["records"][0]["time"]
        refused = api.get("/v1/audit/records", params={"since": when, "until": when})
        assert refused.status_code == 422
        assert "since equals until" in refused.json()["error"]["message"]
    url = f"sqlite:///{tmp_path / 'var' / 'audit.sqlite3'}"
    assert main(["audit", "export", "--url", url, "--since", when]) == 0  # the record's own time selects it
    assert when in capsys.readouterr().out
    # Was exit 0 with nothing on stdout, while README says an empty range is refused (exit 4).
    assert main(["audit", "export", "--url", url, "--since", when, "--until", when]) == 4
    out, err = capsys.readouterr()
    assert out == "" and "--since equals --until" in err and "empty range" in err
