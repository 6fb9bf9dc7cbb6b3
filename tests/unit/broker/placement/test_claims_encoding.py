"""A site's claims value: the same bytes however often its claims were encoded before."""

from __future__ import annotations

import json

from broker.placement import claims as cl


def reference(claims: dict[str, cl.Claim]) -> bytes:
    body = {m: c.to_json() for m, c in sorted(claims.items())}
    return json.dumps({"claims": body}, separators=(",", ":")).encode()


def test_encoding_is_stable_and_decodes_back() -> None:
    site = {
        "vnf-b/m1": cl.Claim("vnf-b/m1", "h2", 1, pcpus=4, page_size_kb=1048576, pages=2,
                             vfs=(("physnet1", 1, 2),), ready_ms=7),
        "vnf-a/m0": cl.Claim("vnf-a/m0", "h1", 0, vcpus=2, memory_mb=512),
        "vnf-é/m0": cl.Claim("vnf-é/m0", "h1", 0, vcpus=1),
    }
    first = cl.encode(site)
    assert first == reference(site)
    assert cl.encode(site) == first  # from the kept fragments
    assert cl.decode(first) == site
    ready = {**site, "vnf-a/m0": cl.replace_ready(site["vnf-a/m0"], 9)}
    assert cl.encode(ready) == reference(ready) and cl.decode(cl.encode(ready)) == ready
    assert cl.encode({}) == b'{"claims":{}}' and cl.decode(b'{"claims":{}}') == {}
