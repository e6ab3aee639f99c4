"""Which built-in rule family an argument belongs to, judged by its schema, its name and its value.

Built-in rules apply even when the policy says nothing about a tool, so recognition must be conservative:
"query" is SQL only when the value parses as SQL, a shell needs a shell-ish name, a path must look like one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from detectors.tool_policy.sql import looks_like_sql

SHELL_KEYS = frozenset({"cmd", "command", "commands", "shell", "script", "bash", "cmdline", "commandline"})
SHELL_TOOLS = frozenset({"terminal", "shell", "bash", "cmd", "console", "powershell", "command", "sh"})
SQL_KEYS = frozenset({"sql"})
CODE_KEYS = frozenset({"code"})
# Tool-name words of code execution: `execute_python_code`, `run_python`, `code_interpreter`, `code_execution`.
CODE_TOOLS = frozenset({"python", "code", "interpreter", "exec", "execute", "eval", "run", "repl", "jupyter",
                        "notebook", "ipython", "javascript", "node"})
RUN_WORDS = frozenset({"execute", "exec", "run", "launch"})  # a path argument of `execute_python_file` is run
WRITE_WORDS = frozenset({"write", "save", "create", "append"})
CONTENT_KEYS = frozenset({"text", "content", "contents", "data", "body", "code", "source"})
SCRIPT_FILE = re.compile(r"\.(?:py|pyw|js|mjs|cjs|ts|rb|pl|php|ps1|lua)$", re.IGNORECASE)
URL_KEYS = frozenset({"url", "urls", "uri", "uris", "link", "links", "href", "endpoint", "webhook", "website",
                      "homepage", "callback", "host", "hostname", "domain"})
PATH_KEYS = frozenset({"path", "paths", "file", "files", "filename", "filepath", "dir", "dirname", "directory",
                       "folder", "attachment", "attachments"})
URL_VALUE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://\S+$|^(?:javascript|data|file):", re.S)
PATH_VALUE = re.compile(r"^(?:/|~/|\.\.?/|[a-zA-Z]:[\\/]|\\\\)[^\n]*$")
# A whole value in base64 (standard or URL-safe alphabet, line breaks allowed): matched on the value without its
# whitespace, one character class and the padding, so a failed match costs one pass (possessive: a bad last
# character of 4 MB is not backtracked over character by character).
BASE64 = re.compile(r"[A-Za-z0-9+/]++={0,2}|[A-Za-z0-9_-]++={0,2}")
MIN_ENCODED = 64  # shorter base64 is an id or a hash, not a payload
SCHEMA_FORMATS = {"uri": "url", "url": "url", "iri": "url", "uri-reference": "url", "hostname": "url"}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")


# Names up to the longest a tool name may be (64 characters for OpenAI, Anthropic and Gemini) are kept; longer ones
# (an argument key is the caller's: a megabyte) are split uncached. An entry holds at most ~4.3 KB (a 64-character
# name of 32 two-letter tokens: the name, the set and the tokens): with CACHED_NAMES of them, under 16 MiB.
CACHED_NAME = 64
CACHED_NAMES = 3072


def name_tokens(name: str) -> frozenset[str]:
    """`TerminalExecute` / `file_path` / `targetURL` -> {"terminal", "execute"} / {"file", "path"} / ..."""
    return _cached_tokens(name) if len(name) <= CACHED_NAME else _tokens(name)


def _tokens(name: str) -> frozenset[str]:
    return frozenset(t for t in _SPLIT.split(_CAMEL.sub("_", name).lower()) if t)


_cached_tokens = lru_cache(maxsize=CACHED_NAMES)(_tokens)  # agents resend their history every step


def classify(tool: str, key: str | None, value: str, schema: Mapping[str, Any] | None,
             writes_script: bool = False) -> str | None:
    """"shell", "code", "sql", "url", "path", "script" (a file the tool runs), "written_code" (source written to
    a script file: `writes_script`, see `writes_script_file`), "encoded" (a base64 value) or None for an argument
    string."""
    if isinstance(schema, Mapping):
        kind = SCHEMA_FORMATS.get(str(schema.get("format", "")))
        if kind:
            return kind
    tokens = name_tokens(key) if key else frozenset()
    tool_tokens = name_tokens(tool)
    if tokens & SHELL_KEYS or (tool_tokens & SHELL_TOOLS and not tokens & (URL_KEYS | PATH_KEYS)):
        return "shell"
    if writes_script and tokens & CONTENT_KEYS:
        return "written_code"
    if tokens & CODE_KEYS and tool_tokens & CODE_TOOLS:
        return "code"
    if tokens & SQL_KEYS or looks_like_sql(value):
        return "sql"
    if tokens & URL_KEYS or URL_VALUE.match(value):
        return "url"
    path_shaped = PATH_VALUE.match(value) is not None
    if not path_shaped and looks_encoded(value):
        return "encoded"  # an attachment's content, not its file name
    if (tokens & PATH_KEYS and "://" not in value) or (path_shaped and len(value) < 1024):
        return "script" if tool_tokens & RUN_WORDS else "path"
    return None


def looks_encoded(value: str) -> bool:
    """The value is one base64 text of at least MIN_ENCODED characters (whitespace aside)."""
    if len(value) < MIN_ENCODED or " " in value.strip():
        return False
    compact = "".join(value.split())
    return len(compact) >= MIN_ENCODED and BASE64.fullmatch(compact) is not None


def writes_script_file(tool: str, arguments: Mapping[str, Any]) -> bool:
    """The call writes a script file (`write_to_file(filename="main.py", text=...)`): its content is source."""
    if not name_tokens(tool) & WRITE_WORDS:
        return False
    return any(isinstance(value, str) and name_tokens(str(key)) & PATH_KEYS and SCRIPT_FILE.search(value.strip())
               for key, value in arguments.items())
