"""Attack tests for bounded YAML: billion laughs, deep nesting, recursive anchors, size.

Each is refused with a clear 4xx-mapped error before any Python value is built, and a
legitimate descriptor (with a modest anchor) still loads. Over the API:
``tests/unit/broker/api/test_api_inputs.py``.
"""

from __future__ import annotations

import time

import pytest

from broker import errors
from broker.models import vnf, yamlbound
from tests.support import placement as P


def billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        refs = ",".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def wide_laughs() -> str:
    # few aliases, each doubling: 2**40 nodes from 40 aliases (under the alias cap)
    lines = ["a0: &a0 [lol, lol]"]
    for i in range(1, 41):
        lines.append(f"a{i}: &a{i} [*a{i - 1}]" if i % 2 else f"a{i}: &a{i} [*a{i - 1}, 1]")
    return "\n".join(lines) + "\n"


ATTACKS = {
    "billion-laughs": (billion_laughs(), "aliases"),
    "alias-chain-depth": (wide_laughs(), "deeper"),
    "deep-flow": ("[" * 30_000 + "]" * 30_000, "deeper"),
    "deep-block": ("".join("  " * i + "- \n" for i in range(200)), "deeper"),
    "recursive-anchor": ("&a [*a]", "contains itself"),
    "oversized": ("x: " + "y" * (yamlbound.MAX_BYTES + 1), "bytes"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_are_refused_quickly(name: str) -> None:
    text, says = ATTACKS[name]
    started = time.monotonic()
    with pytest.raises(errors.InvalidInput) as caught:
        vnf.parse(text)
    assert caught.value.field == "descriptor"
    assert says in caught.value.problem
    assert time.monotonic() - started < 5.0


def test_expansion_bound_counts_aliases_followed() -> None:
    # 6 levels of 10: 10**6 nodes with only 60 aliases
    with pytest.raises(errors.InvalidInput, match="expands to more than"):
        yamlbound.load(billion_laughs(6), "descriptor")


def test_oversized_is_too_large() -> None:
    with pytest.raises(errors.TooLarge):
        yamlbound.load(ATTACKS["oversized"][0], "descriptor")


def test_a_modest_anchor_still_loads() -> None:
    text = (P.SAMPLES / "vfirewall.yaml").read_text()
    assert vnf.parse(text).name
    assert yamlbound.load("base: &b {x: 1}\nother: *b\n", "d") == {
        "base": {"x": 1},
        "other": {"x": 1},
    }


def test_trailing_newline_in_names_is_refused() -> None:
    data = vnf.to_json(P.sample("vfirewall"))
    data["name"] = data["name"] + "\n"
    with pytest.raises(errors.InvalidInput):
        vnf.parse(data)
