"""YAML for policy files and inline configs, with duplicate keys refused (and, where asked, aliases).

PyYAML keeps the last of two equal keys in a mapping without a word. In a policy that silently drops rules: a
second `pii:` added under `detectors:` replaces the first with all its settings, and a second `tenants:` in
routing.yml drops every tenant route above it. The loader here raises instead, naming both lines.

An inline config (written by any caller of the NeMo endpoint) is read with `aliases=False`: a few hundred bytes of
nested `*alias` lists expand to billions of nodes when the policy is serialized for its version ("billion laughs").

YAML 1.1 reads an unquoted key as a number, a boolean, null or a date when it looks like one: `007:` is 7, `off:`
and `no:` are false, `0x1F:` is 31. Where a key names something (a tenant, an agent, a tool) that silently routes
or matches another name. `load_yaml` reports each key that was not read as a string, with its text as written and
its line, so the caller can refuse the ones that name things (`NonStringKey.message`).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import yaml

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True)
class NonStringKey:
    """A mapping key YAML did not read as a string: `path` is the keys (and list indexes) from the document's root
    to the mapping holding it, then the key as read; `text` is the key as written."""

    path: tuple[Any, ...]
    text: str
    value: Any
    line: int

    def message(self, noun: str) -> str:
        """`tenant key 007 is read by YAML as the number 7: quote it ('007')`, for the noun `tenant key`."""
        quote = "'" if "'" not in self.text else '"'
        return f"{noun} {self.text} is read by YAML as {_what(self.value)}: quote it ({quote}{self.text}{quote})"


def _what(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if value is None:
        return "null (no name at all)"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"the date {value.isoformat()}"
    return f"a {type(value).__name__}"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that holds the same key twice; `line` is the 1-based line of the second one."""

    def __init__(self, key: Any, first_line: int, line: int, mark: yaml.Mark) -> None:
        super().__init__(problem=f"duplicate key {key!r} (also on line {first_line}): YAML would keep only the "
                                 "last one and silently drop the other; merge them into one",
                         problem_mark=mark)
        self.key, self.first_line, self.line = key, first_line, line


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` overrides by design
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKeyError(key, seen[key], line, key_node.start_mark)
                seen[key] = line
            except TypeError:  # an unhashable key: construct_mapping reports it
                continue
        return super().construct_mapping(node, deep=deep)


class _UniqueKeyNoAliasLoader(_UniqueKeyLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        # Refused when composed, before anything is constructed, let alone expanded.
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed (a few bytes of them "
                                              "expand to billions of nodes)", self.peek_event().start_mark)
        return super().compose_node(parent, index)


def safe_load_unique(text: str, *, source: str | None = None, aliases: bool = True) -> Any:
    """`yaml.safe_load`, except that a mapping with a repeated key raises `DuplicateKeyError`.

    `source` names the text in the errors' marks (`in "<source>", line N`) instead of "<unicode string>";
    `aliases=False` refuses `&anchor`/`*alias` reuse (a `yaml.YAMLError` at the alias) for text from callers.
    """
    return load_yaml(text, source=source, aliases=aliases)[0]


def load_yaml(text: str, *, source: str | None = None, aliases: bool = True) -> tuple[Any, list[NonStringKey]]:
    """`safe_load_unique`'s data, and every mapping key in it that YAML did not read as a string."""
    try:
        loader = (_UniqueKeyLoader if aliases else _UniqueKeyNoAliasLoader)(text)  # SafeLoaders: no arbitrary objects
    except yaml.reader.ReaderError as exc:  # the reader checks the whole text for unprintable characters up front
        if source is not None:
            exc.name = source
        raise
    if source is not None:
        loader.name = source  # every mark made from here on carries it
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        keys = _non_string_keys(loader, node)
        return loader.construct_document(node), keys
    finally:
        loader.dispose()


def _non_string_keys(loader: yaml.SafeLoader, root: yaml.Node) -> list[NonStringKey]:
    """The keys of `root`'s mappings whose resolved tag is not `str` (a quoted key always is one), in document
    order. Each node is visited once: an alias repeats a subtree, it adds no key of its own."""
    found: list[NonStringKey] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        children: list[tuple[yaml.Node, tuple[Any, ...]]] = []
        if isinstance(node, yaml.SequenceNode):
            children = [(item, (*path, index)) for index, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue  # `<<: *base` merges a mapping visited where it is anchored
                key = key_node.value if key_node.tag == _STR_TAG else loader.construct_object(key_node)
                if key_node.tag != _STR_TAG:
                    found.append(NonStringKey((*path, key), key_node.value, key, key_node.start_mark.line + 1))
                children.append((value_node, (*path, key)))
        stack.extend(reversed(children))  # depth first, in document order
    return found
