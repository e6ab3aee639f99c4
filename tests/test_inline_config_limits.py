"""An inline config (`guardrails.config` of POST /v1/guardrail/checks) is written by any caller: a setting that
reads a file or calls a URL is refused there (422), before the detector reads or calls anything. The same
settings in a policy bundle on the server's disk keep working."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from guardrails.config import Settings
from guardrails.detector import Detector, DetectorRegistry, InlineSettings, SettingError
from guardrails.engine import Engine
from guardrails.policy import load_policy, policy_from_mapping
from guardrails.serve import build_app

REPO = Path(__file__).resolve().parent.parent
CANARY = "canary_line_4417: token: 9f8e"  # not YAML: a parser error quotes the line
ONLY_ON_SERVER = "only allowed in policy bundles on the server"
REASONING = "I will lie to the user about the balance."


@pytest.fixture()
def listener() -> Iterator[socket.socket]:
    """A TCP listener on a free port in 18100-18999 that never accepts: a connection waits in its backlog."""
    for port in range(18100, 19000):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.listen(8)
        sock.setblocking(False)
        yield sock
        sock.close()
        return
    pytest.skip("no free port in 18100-18999")


def connections(sock: socket.socket) -> int:
    """Connections the kernel completed for `sock` (accepted here, without waiting)."""
    seen = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return seen
        conn.close()
        seen += 1


def nemo(detectors: dict[str, Any], reasoning: str = REASONING) -> dict[str, Any]:
    """A NeMo check body: a user turn, then the assistant answer under check (vLLM's reasoning_content shape)."""
    return {
        "model": "meta/llama-3.3-70b-instruct",
        "messages": [
            {"role": "user", "content": "What is my account balance?"},
            {"role": "assistant", "content": "Your balance is $1,200.", "reasoning_content": reasoning},
        ],
        "guardrails": {"config": {"detectors": detectors}},
    }


def refused(resp: Any, setting: str) -> str:
    """Assert the 422 names `setting` and why; return its message."""
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["pointer"] == "/guardrails/config", error
    assert f"setting {setting} " in error["message"] and ONLY_ON_SERVER in error["message"], error
    return error["message"]


def test_inline_rules_file_is_refused_unread(client: TestClient, tmp_path: Path) -> None:
    secret = tmp_path / "secret.yml"
    secret.write_text(CANARY + "\n", encoding="utf-8")
    resp = client.post("/v1/guardrail/checks", json=nemo({"unsafe_reasoning": {"rules_file": str(secret)}}))
    refused(resp, "rules_file")
    assert "canary_line_4417" not in resp.text and "9f8e" not in resp.text


@pytest.mark.parametrize("value", ["/etc/passwd", ["/proc/self/environ"], "../../etc/passwd"])
def test_inline_rules_file_any_form_is_refused(client: TestClient, value: Any) -> None:
    resp = client.post("/v1/guardrail/checks", json=nemo({"unsafe_reasoning": {"rules_file": value}}))
    refused(resp, "rules_file")
    assert "root:" not in resp.text and "PATH=" not in resp.text


@pytest.mark.parametrize(("detector", "settings", "setting"), [
    ("guard_model", {}, "vllm"),
    ("low_confidence", {"pull": True}, "vllm"),
], ids=["guard_model", "low_confidence_pull"])
def test_inline_vllm_block_is_refused_uncalled(client: TestClient, listener: socket.socket, detector: str,
                                               settings: dict[str, Any], setting: str) -> None:
    port = listener.getsockname()[1]
    vllm = {"base_url": f"http://127.0.0.1:{port}", "model": "judge", "timeout_s": 1}
    resp = client.post("/v1/guardrail/checks", json=nemo({detector: {**settings, "vllm": vllm}}))
    assert connections(listener) == 0, resp.text
    refused(resp, setting)


@pytest.mark.parametrize(("detector", "settings", "setting"), [
    ("guard_model", {"templates": {"safety": "/etc/passwd"}}, "templates"),
    ("jailbreak", {"model_file": "/etc/passwd"}, "model_file"),
    ("pii", {"nlp_engine": {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "/tmp"}]}},
     "nlp_engine"),
])
def test_other_file_settings_are_refused_inline(client: TestClient, detector: str, settings: dict[str, Any],
                                                setting: str) -> None:
    resp = client.post("/v1/guardrail/checks", json=nemo({detector: settings}))
    refused(resp, setting)
    assert "root:" not in resp.text


def test_inline_config_without_file_settings_still_checks(client: TestClient) -> None:
    body = nemo({"unsafe_reasoning": {"rules_file": None, "disabled_rules": []}, "guard_model": {"enabled": False}})
    resp = client.post("/v1/guardrail/checks", json=body)
    assert resp.status_code == 200, resp.text
    assert any(f["detector"] == "unsafe_reasoning" for f in resp.json()["guardrails_data"]["findings"])


def write_bundle(root: Path, port: int) -> Path:
    """A bundle on disk with an extra rules file and a guard model on `port`, with its judge templates."""
    bundle = root / "onserver"
    (bundle / "judge").mkdir(parents=True)
    for check in ("alignment", "safety"):
        (bundle / "judge" / f"{check}.txt").write_text(f"{check} check: $text\n", encoding="utf-8")
    (bundle / "extra_rules.yml").write_text(
        "rules:\n- id: balance_lie\n  category: deception\n  severity: high\n  requires_intent: false\n"
        "  description: lies about a balance\n  pattern: \\bbalance\\s+is\\s+secretly\\b\n", encoding="utf-8")
    (bundle / "config.yml").write_text(
        "detectors:\n"
        "  unsafe_reasoning: {rules_file: extra_rules.yml}\n"
        f"  guard_model: {{enabled: false, vllm: {{base_url: 'http://127.0.0.1:{port}', model: judge}}}}\n",
        encoding="utf-8")
    return bundle


def test_the_same_settings_load_from_a_bundle_on_disk(tmp_path: Path, listener: socket.socket) -> None:
    bundle = write_bundle(tmp_path, listener.getsockname()[1])
    policy = load_policy(bundle)
    client = TestClient(build_app(Settings(policy_dir=tmp_path)))
    body = nemo({}, reasoning="The balance is secretly lower.")
    body["guardrails"] = {"config_id": "onserver"}
    resp = client.post("/v1/guardrail/checks", json=body)
    assert resp.status_code == 200, resp.text
    rules = {f.get("evidence", {}).get("rule") for f in resp.json()["guardrails_data"]["findings"]}
    assert "balance_lie" in rules, resp.json()
    # The guard model's vllm block is accepted from disk (built, not called: it is disabled above).
    engine = Engine(policy, DetectorRegistry.from_entry_points())
    detector, unknown = engine.build_detector(policy.detector("guard_model"))
    assert detector.client is not None and detector.client.config.base_url.endswith(str(listener.getsockname()[1]))
    assert unknown == []


class _PluginDetector(Detector):
    """A third-party detector that reads a file named by a setting."""

    name = "plugin_with_file"

    def __init__(self, settings: Any = None, services: Any = None) -> None:
        super().__init__(settings, services)
        self.path = self.setting("words_file", str, server_only=True)

    async def scan(self, exchange: Any, ctx: Any) -> list[Any]:
        return []


def test_third_party_detectors_declare_server_only_settings() -> None:
    assert _PluginDetector({"words_file": "/etc/passwd"}).path == "/etc/passwd"
    with pytest.raises(SettingError, match=f"words_file.*{ONLY_ON_SERVER}"):
        _PluginDetector(InlineSettings({"words_file": "/etc/passwd"}))
    assert _PluginDetector(InlineSettings({"words_file": None})).path is None


def test_policy_from_mapping_marks_its_detector_settings_inline() -> None:
    inline = policy_from_mapping({"detectors": {"plugin_with_file": {"words_file": "words.txt"}}})
    with pytest.raises(SettingError, match="words_file"):
        _PluginDetector(inline.detector("plugin_with_file").settings)
