"""The committed wire modules are exactly what proto/gen.sh generates from the .proto."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path


PROTO = Path(__file__).resolve().parents[3] / "proto"


def test_generated_modules_are_fresh(tmp_path: Path) -> None:
    import grpc_tools  # noqa: F401 - fails (not skips) without the dev extras
    subprocess.run(
        ["bash", str(PROTO / "gen.sh"), str(tmp_path)],
        check=True,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "gen.sh produced nothing"
    stale = [
        str(rel) for rel in generated if not filecmp.cmp(tmp_path / rel, PROTO / rel, shallow=False)
    ]
    assert not stale, f"stale generated code (run proto/gen.sh and commit): {stale}"


def test_wire_imports_as_meridian_not_proto() -> None:
    import meridian.v1.agent_pb2 as pb

    assert pb.DESCRIPTOR.package == "meridian.v1"
    assert "proto" not in sys.modules or not hasattr(sys.modules["proto"], "v1")
