"""`secret`: every rule finds exactly the secret value, never echoes it, and ignores look-alikes."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from conftest import fixture

from detectors.secret import RULES, SecretDetector, shannon_entropy
from guardrails.adapters import read_exchange
from guardrails.detector import ScanContext
from guardrails.exchange import Phase, Segment, SegmentKind, Trust
from guardrails.findings import Finding, Severity
from guardrails.pointer import resolve

DETECTOR = SecretDetector({})

# Synthetic credentials with the real shapes (none of them is a live key).
AWS_ID = "AKIAQ7XK2M4PZ3LJ8VWE"
AWS_SECRET = "q8Zr3Kx7Vt2Lm9Np4Bw6Yc1Hs5Jd0Fg/Ae+UiOoT"
GCP = "AIzaSyD3kL9mQ2xV7pR4tW8yB1nC6fJ0hZ5sE_g"
AZURE_STORAGE = "Xk9mQ2vT7pL4rW8yB1nC6fJ0hZ5sD3gK" * 2 + "aB3cD9eF2gH5iJ8kL1mN4o=="
AZURE_AD = "abc8Q~Zk9mQ2vT7pL4rW8yB1nC6fJ0hZ5sD3gK"
AZURE_SIG = "Zk9mQ2vT7pL4rW8yB1nC6fJ0hZ5sD3gKaB3cD9eF2gH5%3D"
GITHUB = "ghp_" + "R7mK2xQ9vL4pT8wZ3nB6yC1fJ5hD0sG9aE2k"
GITHUB_PAT = "github_pat_11ABCDEFG0" + "kL9mQ2xV7pR4tW8yB1nC6fJ0hZ5sE3gK" * 2 + "aB3cD9eF2g"[:8]
GITLAB = "glpat-" + "xR7mK2Q9vL4pT8wZ3nB6"
SLACK = "xoxb-" + "1234567890123-1234567890123-kL9mQ2xV7pR4tW8yB1nC6fJ0"
SLACK_HOOK = "T0ABCDEF1/B0ABCDEF2/kL9mQ2xV7pR4tW8yB1nC6fJ0"
STRIPE_LIVE = "sk_live_" + "51HkL9mQ2xV7pR4tW8yB1nC6fJ"
STRIPE_TEST = "rk_test_" + "51HkL9mQ2xV7pR4tW8yB1nC6fJ"
ANTHROPIC = "sk-ant-api03-" + "kL9mQ2xV7pR4tW8yB1nC6fJ0hZ5sE3g_-" * 3 + "AA"
OPENAI = "sk-proj-" + "kL9mQ2xV7pR4tW8yB1nC6fJ0h" + "T3BlbkFJ" + "Z5sE3gK4aB3cD9eF2gH5iJ8k"
OPENAI_PROJECT = "sk-proj-" + "kL9mQ2xV7pR4tW8yB1nC6fJ0hZ5sE3g_-" * 3
HF = "hf_" + "kL9mQ2xV7pR4tW8yB1nC6fJ0hZ5sE3gKaQ"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7k8s0lq1ZQ2xV7pR4tW8yB1nC6fJ0hZ5sE3g\n"
    "kL9mQ2xV7pR4tW8yB1nC6fJ0hZ5sE3gK4aB3cD9eF2gH5iJ8kL1mN==\n-----END RSA PRIVATE KEY-----"
)
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
URL_PASSWORD = "Tr0ub4dor&3x"
GENERIC = "Zx8Qm2Lp9Rt4Vw7Y"

# (rule, text around the secret, the secret) — the span must be exactly the secret.
POSITIVES = [
    ("aws_access_key_id", f"export AWS_ACCESS_KEY_ID={AWS_ID}\n", AWS_ID),
    ("aws_secret_access_key", f"aws_secret_access_key = {AWS_SECRET}\n", AWS_SECRET),
    ("gcp_api_key", f"const key = '{GCP}';", GCP),
    ("gcp_service_account", '{"type": "service_account", "private_key_id": "'
     + "3f9c2a1b7e4d5c6b8a9f0e1d2c3b4a5968778695" + '"}', "3f9c2a1b7e4d5c6b8a9f0e1d2c3b4a5968778695"),
    ("azure_storage_key", f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={AZURE_STORAGE};",
     AZURE_STORAGE),
    ("azure_ad_client_secret", f'client_secret: "{AZURE_AD}"', AZURE_AD),
    ("azure_sas_token", f"https://acme.blob.core.windows.net/c/f.txt?sv=2022-11-02&sig={AZURE_SIG}&se=x",
     AZURE_SIG),
    ("github_token", f"git clone https://x:{GITHUB}@github.com/acme/repo", GITHUB),
    ("github_token", f"token {GITHUB_PAT} ok", GITHUB_PAT),
    ("gitlab_token", f"PRIVATE-TOKEN: {GITLAB}", GITLAB),
    ("slack_token", f"Use {SLACK} for the bot.", SLACK),
    ("slack_webhook", f"POST https://hooks.slack.com/services/{SLACK_HOOK}", SLACK_HOOK),
    ("stripe_live_key", f"stripe.api_key = {STRIPE_LIVE}", STRIPE_LIVE),
    ("stripe_test_key", f"({STRIPE_TEST})", STRIPE_TEST),
    ("anthropic_key", f"ANTHROPIC_API_KEY={ANTHROPIC}", ANTHROPIC),
    ("openai_key", f"Your key is {OPENAI}.", OPENAI),
    ("openai_key", f"OPENAI_API_KEY={OPENAI_PROJECT}", OPENAI_PROJECT),
    ("huggingface_token", f"huggingface-cli login --token {HF}", HF),
    ("private_key", f"Here it is:\n{PEM}\nKeep it safe.", PEM),
    ("jwt", f"Authorization: Bearer {JWT}", JWT),
    ("url_credentials", f"DATABASE_URL=postgres://admin:{URL_PASSWORD}@db.internal:5432/app", URL_PASSWORD),
    ("generic_secret_assignment", f'api_key = "{GENERIC}"', GENERIC),
    ("generic_secret_assignment", f'{{"client_secret": "{GENERIC}"}}', GENERIC),
    ("generic_secret_assignment", f"DB_PASSWORD={GENERIC}\n", GENERIC),
]

NEGATIVES = [
    ("aws_access_key_id", "AKIA" + "q7xk2m4pz3lj8vwe"),  # lower case
    ("aws_access_key_id", "XAKIAQ7XK2M4PZ3LJ8VWE"),  # glued to a word
    ("aws_secret_access_key", "aws region is eu-west-1 and the bucket key is reports/2024/summary.csv"),
    ("gcp_api_key", "AIzaShort"),
    ("github_token", "ghp_tooShort123"),
    ("github_token", "see ghp_ prefix docs"),
    ("slack_token", "xoxb-123"),
    ("stripe_live_key", "sk_live_short"),
    ("openai_key", "sk-1234 is not a key, and neither is sk-proj-abc"),
    ("anthropic_key", "sk-ant-api03-short"),
    ("huggingface_token", "hf_transfer is a package"),
    ("private_key", "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n"
                    "-----END PUBLIC KEY-----"),
    ("jwt", "eyJhbGciOi is the start of a header"),
    ("url_credentials", "https://user@example.com/path and https://example.com/@handle"),
    ("url_credentials", "postgres://admin:password@localhost/db"),
    ("url_credentials", "redis://:${REDIS_PASSWORD}@cache:6379"),
    ("generic_secret_assignment", 'password = "changeme"'),
    ("generic_secret_assignment", 'api_key = "<YOUR_API_KEY>"'),
    ("generic_secret_assignment", "api_key = os.environ['OPENAI_API_KEY']"),
    ("generic_secret_assignment", '"max_tokens": 1024, "token_count": 99999999'),
    ("generic_secret_assignment", "password: aaaaaaaaaaaa"),
    ("generic_secret_assignment", "The token: verification happens later."),
]


def segment(text: str, kind: SegmentKind = SegmentKind.ASSISTANT) -> Segment:
    return Segment(index=0, kind=kind, role="assistant", trust=Trust.MODEL, turn=0, phase=Phase.RESPONSE,
                   text=text, pointer="/response")


def scan(body: dict[str, Any], detector: SecretDetector = DETECTOR) -> list[Finding]:
    exchange = read_exchange(body["request"], body.get("response"))
    ctx = ScanContext(segments=[s for s in exchange.segments if detector.default_scope.matches(s)], signals={})
    return asyncio.run(detector.scan(exchange, ctx))


def located(body: dict[str, Any], finding: Finding) -> str:
    return resolve(body, finding.pointer)[finding.start : finding.end]


def test_every_rule_has_a_positive_case() -> None:
    assert {rule for rule, _, _ in POSITIVES} == {r.id for r in RULES}


@pytest.mark.parametrize(("rule", "text", "secret"), POSITIVES, ids=[f"{r}-{i}" for i, (r, _, _) in
                                                                      enumerate(POSITIVES)])
def test_rule_finds_exactly_the_secret(rule: str, text: str, secret: str) -> None:
    hits = DETECTOR.analyze(segment(text))
    assert [(h.evidence["rule"], text[h.start : h.end]) for h in hits] == [(rule, secret)]
    hit = hits[0]
    assert hit.severity in (Severity.HIGH, Severity.CRITICAL)
    assert secret not in json.dumps(hit.evidence) and secret not in hit.message
    assert hit.evidence["preview"].count("…") == 1 and len(hit.evidence["preview"]) < len(secret)


@pytest.mark.parametrize(("rule", "text"), NEGATIVES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(NEGATIVES)])
def test_rule_ignores_look_alikes(rule: str, text: str) -> None:
    assert DETECTOR.analyze(segment(text)) == []


def test_preview_shows_public_prefix_and_last_four_only() -> None:
    (hit,) = DETECTOR.analyze(segment(f"key: {OPENAI}"))
    assert hit.evidence["preview"] == f"sk-…{OPENAI[-4:]}"
    (hit,) = DETECTOR.analyze(segment(PEM))
    assert hit.evidence["preview"] == "-----BEGIN RSA PRIVATE KEY-----…"


def test_truncated_private_key_spans_its_base64_lines() -> None:
    text = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\n"
            "bm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n")
    (hit,) = DETECTOR.analyze(segment(text + "That is all I have."))
    assert text[hit.start : hit.end] == text.rstrip("\n")


def test_specific_rule_wins_over_generic_assignment_on_the_same_value() -> None:
    hits = DETECTOR.analyze(segment(f'OPENAI_API_KEY = "{OPENAI}"'))
    assert [h.evidence["rule"] for h in hits] == ["openai_key"]


def test_entropy_gate_rejects_low_entropy_values() -> None:
    assert shannon_entropy("aaaaaaaa") == 0.0
    assert shannon_entropy(GENERIC) > 3.5
    assert DETECTOR.analyze(segment('secret = "abababab12"')) == []  # 2.2 bits/char


def test_settings_disable_rules_allow_values_and_override_severity() -> None:
    detector = SecretDetector({"disabled_rules": ["jwt"], "allow_list": [GITHUB],
                               "severity": {"stripe_test_key": "critical"}})
    assert detector.analyze(segment(f"{JWT} {GITHUB}")) == []
    (hit,) = detector.analyze(segment(STRIPE_TEST))
    assert hit.severity is Severity.CRITICAL
    with pytest.raises(ValueError, match="unknown rule ids"):
        SecretDetector({"disabled_rules": ["nope"]})


def test_secret_in_openai_tool_call_arguments_points_into_the_argument_string() -> None:
    body = {"request": {"model": "m", "messages": [{"role": "user", "content": "Deploy it."}]},
            "response": fixture("chat_completion_reasoning_2_tool_calls_logprobs.json")}
    call = body["response"]["choices"][0]["message"]["tool_calls"][1]["function"]
    # JSON escapes right before the key: `\n` must not glue an 'n' to it.
    call["arguments"] = json.dumps({"city": "Tokyo", "note": f"token:\n{GITHUB}"})
    (finding,) = scan(body)
    assert finding.pointer == "/response/choices/0/message/tool_calls/1/function/arguments"
    assert located(body, finding) == GITHUB
    assert finding.message == "GitHub token in arguments of get_time"
    assert finding.evidence["tool"] == "get_time"


def test_secret_in_a_user_message_and_in_reasoning() -> None:
    body = {"request": {"model": "m", "messages": [{"role": "user", "content": f"my key is {HF}"}]},
            "response": copy.deepcopy(fixture("chat_completion_reasoning_2_tool_calls_logprobs.json"))}
    message = body["response"]["choices"][0]["message"]
    message["reasoning"] += f"The user pasted {HF}; I must not repeat it.\n"
    findings = scan(body)
    assert [(f.pointer, located(body, f)) for f in findings] == [
        ("/request/messages/0/content", HF), ("/response/choices/0/message/reasoning", HF)]
    assert findings[1].message == "Hugging Face token in the model's reasoning"


def test_secret_split_across_stream_chunks_points_at_the_chunk_where_it_starts() -> None:
    chunks = copy.deepcopy(fixture("chat_completion_stream_reasoning_tool_call_logprobs.chunks.json"))
    fragments = [i for i, c in enumerate(chunks) if c.get("choices") and
                 (c["choices"][0].get("delta", {}).get("tool_calls") or [{}])[0].get("function", {}).get("arguments")]
    # {"city": "Paris"} streamed as {" city ": " Paris "}: put half a key in each of the last two value chunks.
    value_chunk = fragments[-2]
    chunks[value_chunk]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] = STRIPE_LIVE[:12]
    last = chunks[fragments[-1]]["choices"][0]["delta"]["tool_calls"][0]["function"]
    last["arguments"] = STRIPE_LIVE[12:] + '"}'
    body = {"request": {"model": "m", "messages": [{"role": "user", "content": "Pay"}], "stream": True},
            "response": chunks}
    (finding,) = scan(body)
    assert finding.pointer == f"/response/{value_chunk}/choices/0/delta/tool_calls/0/function/arguments"
    assert located(body, finding) == STRIPE_LIVE[:12]
    assert finding.severity is Severity.CRITICAL


def test_secret_in_anthropic_tool_use_input_points_at_the_string_value() -> None:
    response = copy.deepcopy(fixture("anthropic_messages_thinking_tool_use.json"))
    response["content"][2]["input"] = {"city": "Paris", "headers": {"Authorization": f"Bearer\n{JWT}"}}
    body = {"request": {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]},
            "response": response}
    exchange = read_exchange(body["request"], response, format="anthropic.messages")
    ctx = ScanContext(segments=list(exchange.segments), signals={})
    (finding,) = asyncio.run(DETECTOR.scan(exchange, ctx))
    assert finding.pointer == "/response/content/2/input/headers/Authorization"
    assert located(body, finding) == JWT
    assert finding.message == "JSON Web Token in arguments of get_weather"
