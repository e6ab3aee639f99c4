"""YAML for policy files and inline configs, with duplicate keys refused (and, where asked, aliases).

PyYAML keeps the last of two equal keys in a mapping without a word. In a policy that silently drops rules: a
second `pii:` added under `detectors:` replaces the first with all its settings, and a second `tenants:` in
routing.yml drops every tenant route above it. The loader here raises instead, naming both lines.

An inline config (written by any caller of the NeMo endpoint) is read with `aliases=False`: a few hundred bytes of
nested `*alias` lists expand to billions of nodes when the policy is serialized for its version ("billion laughs").
"""

from __future__ import annotations

from typing import Any

import yaml


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
    try:
        loader = (_UniqueKeyLoader if aliases else _UniqueKeyNoAliasLoader)(text)  # SafeLoaders: no arbitrary objects
    except yaml.reader.ReaderError as exc:  # the reader checks the whole text for unprintable characters up front
        if source is not None:
            exc.name = source
        raise
    if source is not None:
        loader.name = source  # every mark made from here on carries it
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
