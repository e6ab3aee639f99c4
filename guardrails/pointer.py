"""RFC 6901 JSON Pointers: build them while walking a body, resolve them afterwards."""

from __future__ import annotations

from typing import Any


def escape(token: str | int) -> str:
    text = str(token)
    if "~" in text or "/" in text:
        text = text.replace("~", "~0").replace("/", "~1")
    return text


def join(base: str, *tokens: str | int) -> str:
    """Append reference tokens to a pointer: join("/request", "messages", 0) -> "/request/messages/0"."""
    # Hot path of every adapter: plain string work, no generator.
    parts = [base]
    for token in tokens:
        text = str(token)
        if "~" in text or "/" in text:
            text = text.replace("~", "~0").replace("/", "~1")
        parts.append(text)
    return "/".join(parts)


def split(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer must start with '/': {pointer!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def resolve(document: Any, pointer: str) -> Any:
    """Return the value a pointer designates; raise KeyError when it does not resolve."""
    node = document
    for token in split(pointer):
        if isinstance(node, list):
            if not token.isdigit() or int(token) >= len(node):
                raise KeyError(pointer)
            node = node[int(token)]
        elif isinstance(node, dict):
            if token not in node:
                raise KeyError(pointer)
            node = node[token]
        else:
            raise KeyError(pointer)
    return node
