"""YAML (and so JSON) from callers, parsed within bounds: size, depth, aliases, expansion.

A YAML document is a graph, not a tree: an alias (``*a``) names a node anchored
elsewhere (``&a``), so ten lines can stand for a billion nodes ("billion laughs"), and
``[[[[...`` a megabyte deep recurses the parser to death. ``load`` refuses both before
a Python object is built: the text is bounded (``MAX_BYTES``), the composer counts
nodes, aliases and nesting while it composes, and the composed graph's size *as expanded* — what
every later walk over the value would visit — is computed with memoised subtree sizes
(linear in the distinct nodes) and bounded by ``MAX_NODES``. A recursive anchor is
refused. Only then does the safe constructor build plain dicts, lists and scalars.

Invariant: whatever ``load`` returns has at most ``MAX_NODES`` nodes when walked as a
tree and at most ``MAX_DEPTH`` levels; everything else is ``InvalidInput`` naming
``what`` (422), or ``TooLarge`` (413) for the text's size.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml import nodes

from broker import errors

MAX_BYTES = 64 * 1024
"""Longest document accepted (a VNF descriptor is a few KiB; the samples ~1 KiB)."""
MAX_DEPTH = 32
"""Deepest nesting of mappings and sequences."""
MAX_ALIASES = 64
"""Most alias references (``*name``) in one document."""
MAX_NODES = 5_000
"""Most nodes the document has, and expands to when its aliases are followed."""


class _Refused(Exception):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, counting depth and aliases while it composes."""

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self.depth = 0
        self.aliases = 0
        self.nodes = 0

    def compose_node(self, parent: nodes.Node | None, index: Any) -> nodes.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Refused(f"has more than {MAX_ALIASES} aliases (*name)")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Refused(f"has more than {MAX_NODES} nodes")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(f"is nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _expanded(node: nodes.Node, seen: dict[int, tuple[int, int]], open_: set[int]) -> int:
    """How many nodes ``node`` stands for with every alias followed (memoised in ``seen``
    with its depth, so an alias cannot deepen the document past ``MAX_DEPTH`` either)."""
    key = id(node)
    if key in seen:
        return seen[key][0]
    if key in open_:
        raise _Refused("has an anchor that contains itself")
    open_.add(key)
    children: list[nodes.Node] = []
    if isinstance(node, nodes.SequenceNode):
        children = list(node.value)
    elif isinstance(node, nodes.MappingNode):
        children = [part for pair in node.value for part in pair]
    total, depth = 1, 1
    for child in children:
        total += _expanded(child, seen, open_)
        depth = max(depth, seen[id(child)][1] + 1)
    open_.discard(key)
    if total > MAX_NODES:
        raise _Refused(f"expands to more than {MAX_NODES} nodes (aliases followed)")
    if depth > MAX_DEPTH:
        raise _Refused(f"is nested deeper than {MAX_DEPTH} levels (aliases followed)")
    seen[key] = (total, depth)
    return total


def load(text: str | bytes, what: str) -> Any:
    """The document in ``text`` as plain Python values, or a 4xx error naming ``what``."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_BYTES:
        raise errors.TooLarge(what, f"is {size} bytes; at most {MAX_BYTES} are accepted")
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # reads the text: may already refuse it
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded(node, {}, set())
        return loader.construct_document(node)
    except _Refused as exc:
        raise errors.InvalidInput(what, exc.problem) from None
    except yaml.YAMLError as exc:
        raise errors.InvalidInput(what, f"is neither YAML nor JSON: {exc}") from exc
    finally:
        if loader is not None:
            loader.dispose()
