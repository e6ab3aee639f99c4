"""One async HTTP client for vLLM's OpenAI-compatible server: bounded concurrency, timeouts, a breaker.

Checks run on every agent step, so a failing vLLM must cost little: after `breaker_failures` consecutive
failures the breaker opens and calls fail at once for `breaker_reset_s`, then one trial call decides
whether it closes again. Callers turn `VLLMError` into a `detector_error` finding, never a failed check.

`shared_client(config)` keeps one client per configuration per process. The underlying
`httpx.AsyncClient` and semaphore are bound to an event loop, so they are rebuilt if the loop changes
(tests run one loop per `asyncio.run`; the server runs one loop for its life).
"""

from __future__ import annotations

import asyncio
import difflib
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from guardrails.detector import SettingError, read_setting
from guardrails.surrogates import without_surrogates

API_KEY_ENV = "api_key_env"  # a policy setting: the environment variable that holds the key


class VLLMError(Exception):
    """vLLM could not answer usefully (bad request, unreadable answer...)."""


class VLLMUnavailable(VLLMError):
    """vLLM is unreachable, timed out, failing (5xx), or the breaker is open."""


@dataclass(frozen=True, slots=True)
class VLLMConfig:
    base_url: str
    model: str | None = None
    api_key: str | None = None
    timeout_s: float = 5.0
    max_concurrency: int = 16
    breaker_failures: int = 5
    breaker_reset_s: float = 30.0

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any], where: str = "vllm") -> VLLMConfig:
        """Build from a policy's `vllm:` mapping (`where`: its path in messages). A bad value is a `SettingError`
        naming the setting and its range, an unknown key one naming the closest known key: a typo (`timeout:`)
        or a value like `timeout_s: -1` would otherwise only show up as failed checks."""
        unknown = [key for key in raw if key not in VLLM_SETTINGS]
        if unknown:
            raise SettingError(f"setting {where}: unknown vllm settings: {', '.join(map(_closest, unknown))}; "
                               f"valid: {', '.join(sorted(VLLM_SETTINGS))}")
        prefix = f"{where}."
        values: dict[str, Any] = {key: read_setting(raw, key, kind, where=prefix, **bounds)
                                  for key, (kind, bounds) in VLLM_SETTINGS.items()
                                  if key != API_KEY_ENV and raw.get(key) is not None}
        values["base_url"] = _base_url(raw.get("base_url"), f"{prefix}base_url")
        if API_KEY_ENV in raw:
            values["api_key"] = _key_from_environment(raw[API_KEY_ENV], values.get("api_key"), where)
        return cls(**values)

    def __repr__(self) -> str:  # never print the key
        return f"VLLMConfig(base_url={self.base_url!r}, model={self.model!r})"


# The keys a `vllm:` block may hold: type and range. A timeout is finite and at most ten minutes (a check waits far
# less; an enormous one overflows the socket timeout), the breaker's reset at most an hour.
VLLM_SETTINGS: dict[str, tuple[type, dict[str, float]]] = {
    "base_url": (str, {}),
    "model": (str, {}),
    "api_key": (str, {}),
    API_KEY_ENV: (str, {}),
    "timeout_s": (float, {"above": 0, "maximum": 600}),
    "max_concurrency": (int, {"minimum": 1}),
    "breaker_failures": (int, {"minimum": 1}),
    "breaker_reset_s": (float, {"above": 0, "maximum": 3600}),
}


def _base_url(value: Any, name: str) -> str:
    """An http(s) URL with a host, without its trailing slash: anything else would fail every call."""
    try:
        url = httpx.URL(value) if isinstance(value, str) else None
    except (httpx.InvalidURL, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise SettingError(f"setting {name} must be an http:// or https:// URL with a host, not {value!r}")
    return value.rstrip("/")


def _closest(key: Any) -> str:
    """An unknown key, with the known one it was probably meant to be."""
    close = difflib.get_close_matches(str(key), VLLM_SETTINGS, n=1)
    return f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)


def _key_from_environment(name: Any, inline: Any, where: str = "vllm") -> str:
    """The API key named by `vllm.api_key_env`: policy files are versioned and shared, keys are not."""
    if inline is not None:
        raise SettingError(f"setting {where}: set {where}.api_key or {where}.{API_KEY_ENV}, not both")
    if not isinstance(name, str) or not name:
        raise SettingError(f"setting {where}.{API_KEY_ENV} must name an environment variable, not {name!r}")
    key = os.environ.get(name)
    if not key:
        raise SettingError(f"setting {where}.{API_KEY_ENV} names {name}, which is not set in the environment")
    return key


class CircuitBreaker:
    """closed -> (N consecutive failures) -> open -> (reset_s elapsed) -> half-open: one trial call."""

    def __init__(self, failures: int = 5, reset_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures_to_open = max(1, failures)
        self.reset_s = reset_s
        self.clock = clock
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self._trial_running = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        with self._lock:
            state = self.state
            if state == "closed":
                return True
            if state == "half_open" and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self.consecutive_failures = 0
            self.opened_at = None
            self._trial_running = False

    def failure(self) -> None:
        with self._lock:
            self.consecutive_failures += 1
            if self._trial_running or self.consecutive_failures >= self.failures_to_open:
                self.opened_at = self.clock()
            self._trial_running = False


class VLLMClient:
    def __init__(self, config: VLLMConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_s)
        self._transport = transport
        self._bound: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient, asyncio.Semaphore] | None = None

    def _for_loop(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._bound is None or self._bound[0] is not loop:
            headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
            http = httpx.AsyncClient(base_url=self.config.base_url, headers=headers, transport=self._transport,
                                     timeout=httpx.Timeout(self.config.timeout_s))
            self._bound = (loop, http, asyncio.Semaphore(self.config.max_concurrency))
        return self._bound[1], self._bound[2]

    async def post(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST JSON and return the JSON answer; raise VLLMUnavailable or VLLMError."""
        if not self.breaker.allow():
            raise VLLMUnavailable(f"vLLM at {self.config.base_url} is failing; circuit breaker open")
        http, semaphore = self._for_loop()
        body = dict(payload)
        if self.config.model and "model" not in body:
            body["model"] = self.config.model
        try:
            async with semaphore:  # waiting for a slot is not vLLM's fault: the timeout starts after it
                async with asyncio.timeout(self.config.timeout_s):
                    response = await http.post(path, content=_json_bytes(body), headers=JSON_HEADERS)
        except (TimeoutError, httpx.TimeoutException):
            self.breaker.failure()
            raise VLLMUnavailable(f"vLLM {path} timed out after {self.config.timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            self.breaker.failure()
            raise VLLMUnavailable(f"vLLM {path} unreachable: {type(exc).__name__}") from None
        if response.status_code >= 500 or response.status_code == 429:
            self.breaker.failure()
            raise VLLMUnavailable(f"vLLM {path} answered HTTP {response.status_code}")
        self.breaker.success()  # the server is up even when it refuses this particular request
        if response.status_code >= 400:
            raise VLLMError(f"vLLM {path} refused the request: HTTP {response.status_code}: {_message(response)}")
        try:
            answer = response.json()
        except ValueError:
            raise VLLMError(f"vLLM {path} answered with something that is not JSON") from None
        if not isinstance(answer, dict):
            raise VLLMError(f"vLLM {path} answered with a JSON {type(answer).__name__}, expected an object")
        return answer

    async def completions(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return await self.post("/v1/completions", payload)

    async def chat(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return await self.post("/v1/chat/completions", payload)

    async def tokenize(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return await self.post("/tokenize", payload)

    async def detokenize(self, token_ids: list[int]) -> str:
        answer = await self.post("/detokenize", {"tokens": token_ids})
        prompt = answer.get("prompt")
        if not isinstance(prompt, str):
            raise VLLMError("vLLM /detokenize answered without a prompt string")
        return prompt

    async def aclose(self) -> None:
        if self._bound is not None:
            loop, http, _ = self._bound
            self._bound = None
            if loop is asyncio.get_running_loop():
                await http.aclose()


def _message(response: httpx.Response) -> str:
    try:
        error = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(error, dict):
        inner = error.get("error", error)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"][:200]
        if isinstance(error.get("message"), str):
            return error["message"][:200]
    return str(error)[:200]


_clients: dict[VLLMConfig, VLLMClient] = {}
_clients_lock = threading.Lock()


def shared_client(config: VLLMConfig) -> VLLMClient:
    """The process's client for this configuration (one connection pool, one breaker)."""
    with _clients_lock:
        client = _clients.get(config)
        if client is None:
            client = _clients[config] = VLLMClient(config)
        return client


JSON_HEADERS = {"Content-Type": "application/json"}


def _json_bytes(body: Mapping[str, Any]) -> bytes:
    """The request body as JSON; a lone surrogate in checked text (a library caller's string) is sent as U+FFFD
    rather than failing the call: no JSON encoder takes it."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return orjson.dumps(without_surrogates(body))
