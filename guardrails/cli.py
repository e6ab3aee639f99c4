"""The `guardrails` command line.

Exit codes of `guardrails check`: 0 allow, 1 warn, 2 block, 3 unreadable input (not JSON, or not a
check body), 4 policy or configuration error, 64 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import errno
import json
import os
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from guardrails.config import Settings, parse_int
from guardrails.errors import GuardrailsError, InvalidJSON, PolicyUnavailable, UnknownPolicy
from guardrails.jsonbody import loads_body
from guardrails.pointer import resolve
from guardrails.policy import ROUTING_FILE, PolicyError
from guardrails.textview import redact

if TYPE_CHECKING:
    from guardrails.service import CheckService

EXIT_BY_VERDICT = {"allow": 0, "warn": 1, "block": 2}
EXIT_BAD_INPUT = 3
EXIT_CONFIG = 4
EXIT_USAGE = 64
EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE: a bug of ours, never to be read as a verdict (1 is "warn")
# Findings whose located text the readable report masks: evidence never echoes a secret (docs/detectors-text.md).
MASKED_CATEGORIES = frozenset({"secret", "pii"})
CHECK_EXIT_CODES = f"""exit codes:
  {EXIT_BY_VERDICT['allow']}   allow
  {EXIT_BY_VERDICT['warn']}   warn
  {EXIT_BY_VERDICT['block']}   block
  {EXIT_BAD_INPUT}   the body cannot be read (not JSON, not a check body, unknown format)
  {EXIT_CONFIG}   the policy does not load or is unknown
  {EXIT_USAGE}  wrong arguments
  {EXIT_INTERNAL}  internal error (a bug: the traceback is printed)"""


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's
LISTEN_HINTS = {
    errno.EADDRINUSE: "another process listens there: stop it or choose another port (--port, GUARDRAILS_PORT)",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address: set --host or GUARDRAILS_HOST",
    errno.EACCES: "a port below 1024 needs privileges: choose another port (--port, GUARDRAILS_PORT)",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


POLICY_DIR_HELP = ("directory of policy bundles (default $GUARDRAILS_POLICY_DIR, else ./policies when it holds a "
                   "default bundle, else the bundles installed with the package)")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="guardrails", description="Inference-aware guardrails service.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=_bounded_int(1, 65535), default=None, help="port (default 8000)")
    serve.add_argument("--workers", type=_bounded_int(1), default=None, help="worker processes (default 1)")
    serve.add_argument("--policy-dir", default=None, help=POLICY_DIR_HELP)
    serve.add_argument("--log-level", default="info", choices=LOG_LEVELS, type=str.lower)
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check", help="check one body (file or - for stdin) and print the verdict",
                           epilog=CHECK_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("file", help="a check body JSON file, or - for stdin")
    check.add_argument("--json", action="store_true", help="print the raw /v1/checks response")
    check.add_argument("--policy", default=None, help="policy id (overrides the body's)")
    check.add_argument("--format", default=None, help="API format (overrides detection)")
    check.add_argument("--policy-dir", default=None, help=POLICY_DIR_HELP)
    check.set_defaults(func=_check)

    from guardrails.audit_cli import add_commands

    add_commands(sub)  # audit export|verify, breakers list|show|reset
    from guardrails.policy_cli import add_policy_commands

    add_policy_commands(sub)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception:  # Python would exit 1, which `guardrails check` documents as "warn"
        traceback.print_exc()
        print(f"guardrails: internal error (exit {EXIT_INTERNAL}); please report it with the traceback above",
              file=sys.stderr)
        return EXIT_INTERNAL


def _bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: the settings' own bounds, refused as a usage error (exit 64)."""

    def parse(text: str) -> int:
        try:
            return parse_int(text, low, high)
        except ValueError as exc:  # argparse shows an ArgumentTypeError's message, not a ValueError's
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _settings(args: argparse.Namespace) -> Settings:
    if getattr(args, "policy_dir", None):
        os.environ["GUARDRAILS_POLICY_DIR"] = str(Path(args.policy_dir).resolve())
    return Settings.from_env()


def _configured(args: argparse.Namespace) -> tuple[Settings, CheckService] | None:
    """Settings and the service built from them; None (after saying why) when the configuration is unusable:
    a malformed GUARDRAILS_* value, an unsupported store URL, a data directory that cannot be created."""
    from guardrails.serve import build_service

    try:
        settings = _settings(args)
        return settings, build_service(settings)
    except (ValueError, OSError) as exc:
        print(f"guardrails: configuration error: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    for flag, env in (("host", "GUARDRAILS_HOST"), ("port", "GUARDRAILS_PORT"), ("workers", "GUARDRAILS_WORKERS")):
        if getattr(args, flag) is not None:
            os.environ[env] = str(getattr(args, flag))
    configured = _configured(args)
    if configured is None:
        return EXIT_CONFIG
    settings, service = configured
    try:  # fail fast on a broken default policy instead of at the first request
        problem = _default_policy_problem(service)
    finally:  # only a trial: the server builds its own, and an open store here would outlive it
        service.close()
    problem = problem or _listen_problem(settings.host, settings.port)
    if problem:
        print(f"guardrails: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    uvicorn.run("guardrails.serve:build_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level=args.log_level, log_config=_log_config(args.log_level))
    return 0


def _listen_problem(host: str, port: int) -> str | None:
    """Why uvicorn could not listen on host:port, if it could not. Found after its "startup complete" it would exit
    3 with a traceback-like log; found here it is one line and exit 4. Bound as uvicorn binds (SO_REUSEADDR, so a
    port held only by closed connections in TIME_WAIT passes), then released for it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    try:
        socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot listen on {where}: the host does not resolve ({exc.strerror}); set --host or GUARDRAILS_HOST"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            hint = LISTEN_HINTS.get(exc.errno or 0, "check --host and --port (GUARDRAILS_HOST, GUARDRAILS_PORT)")
            return f"cannot listen on {where}: {exc.strerror or exc}; {hint}"
    return None


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus our `guardrails.*` loggers: without a handler of their own they fell through
    to Python's last-resort handler, which drops INFO (policy reloads) and prints the rest without a level
    or the logger's name. Each line says which part of the service speaks."""
    from uvicorn.config import LOG_LEVELS as LEVEL_NUMBERS
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["guardrails"] = {"()": "uvicorn.logging.DefaultFormatter",
                                          "fmt": "%(levelprefix)s %(name)s: %(message)s"}
    config["handlers"]["guardrails"] = {"formatter": "guardrails", "class": "logging.StreamHandler",
                                        "stream": "ext://sys.stderr"}
    config["loggers"]["guardrails"] = {"handlers": ["guardrails"], "level": LEVEL_NUMBERS[level],
                                       "propagate": False}
    return config


def _default_policy_problem(service: CheckService) -> str | None:
    """Why the default policy (routing.yml's `default`, else GUARDRAILS_DEFAULT_POLICY) cannot serve, if it cannot."""
    try:
        policy_id = service.default_policy_id()
    except PolicyError as exc:
        return f"cannot read {ROUTING_FILE}: {exc}"
    try:
        service.engine_for(service.policies.get(policy_id))
    except KeyError:
        routing = service.policies.routing()
        return "cannot load default policy: " + service.missing_policy(
            policy_id, routing, "default" if routing.default else None)
    except PolicyError as exc:
        return f"cannot load default policy {policy_id!r}: {exc}"
    return None


def _check(args: argparse.Namespace) -> int:
    if args.format is not None and args.format not in _formats():  # an option's value: a usage error, not input
        print(f"guardrails check: error: argument --format: unknown format {args.format!r} (choose from "
              f"{', '.join(_formats())})", file=sys.stderr)
        return EXIT_USAGE
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        print(f"guardrails: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except UnicodeDecodeError as exc:
        print(f"guardrails: {args.file} is not UTF-8: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        # The HTTP API's reader: the same bodies are read (a lone surrogate escape, NaN...) or refused.
        # surrogateescape: stdin decoded that way gives back its bytes, and the reader names the bad one.
        body = loads_body(text.encode("utf-8", "surrogateescape"))
    except InvalidJSON as exc:
        print(f"guardrails: {args.file}: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(body, dict):
        if args.policy:
            body["policy"] = args.policy
        if args.format:
            body["format"] = args.format
    configured = _configured(args)
    if configured is None:
        return EXIT_CONFIG
    _, service = configured
    try:
        result = asyncio.run(service.check(body))
    except (UnknownPolicy, PolicyUnavailable) as exc:  # named by --policy or the body, or chosen by the settings
        print(f"guardrails: policy error: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except GuardrailsError as exc:
        print(json.dumps(exc.to_dict()) if args.json else f"guardrails: {exc.type}: {exc.message}"
              + (f" (at {exc.pointer})" if exc.pointer else ""), file=sys.stderr)
        return EXIT_BAD_INPUT
    except PolicyError as exc:
        print(f"guardrails: policy error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else render(result, body))
        sys.stdout.flush()
    except BrokenPipeError:  # `guardrails check f | head` is fine; the exit code still carries the verdict
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_BY_VERDICT[result["verdict"]]


def _formats() -> tuple[str, ...]:
    from guardrails.adapters import FORMATS

    return FORMATS


def render(result: dict[str, Any], body: Any) -> str:
    """A readable report: verdict, then each finding with the text it points at."""
    policy = result["policy"]
    lines = [f"verdict: {result['verdict'].upper()}  (policy {policy['id']}@{policy['version']}, "
             f"format {result['format']}, phase {result['phase']}, {len(result['findings'])} finding(s))"]
    for f in result["findings"]:
        loc = f["location"]
        lines.append(f"  [{f['action']}] {f['severity']:<8} {f['category']:<17} {f['message']}")
        where = loc["pointer"] or "(whole check)"
        if loc.get("start") is not None:
            where += f" [{loc['start']}:{loc['end']}]"
            snippet = _snippet(body, loc, f)
            if snippet:
                where += f"  {snippet}"
        lines.append(f"      at {where}")
    timings = result["timings_ms"]
    lines.append(f"  took {timings['total']:.2f} ms")
    return "\n".join(lines)


def _snippet(body: Any, loc: dict[str, Any], finding: dict[str, Any]) -> str:
    try:
        value = resolve(body, loc["pointer"])
    except KeyError:
        return ""
    if not isinstance(value, str):
        return ""
    text = value[loc["start"]:loc["end"]]
    if finding["category"] in MASKED_CATEGORIES:
        text = _masked(text, finding)
    return json.dumps(text[:80] + ("…" if len(text) > 80 else ""), ensure_ascii=False)


def _masked(text: str, finding: dict[str, Any]) -> str:
    """The located text as the detectors' evidence previews it (never the whole value): the public head the
    finding's own preview shows ("AKIA", "-----BEGIN … KEY-----"), an ellipsis and the last few characters."""
    preview = finding.get("evidence", {}).get("preview")
    head = preview.split("…", 1)[0] if isinstance(preview, str) and "…" in preview else ""
    # A head that is not the text's own start, or most of it, is not a public prefix of this text.
    keep = len(head) if head and text.startswith(head) and len(head) <= len(text) // 2 else 0
    return redact(text, keep)


if __name__ == "__main__":
    raise SystemExit(main())
