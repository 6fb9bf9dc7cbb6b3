#!/usr/bin/env bash
# Regenerates the wire modules beside the .proto files; tests/unit/test_wire_fresh.py fails
# when the committed modules differ from what this produces.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
cd "$here"
python -m grpc_tools.protoc -I. --python_out="$out" --mypy_out="$out" \
    --grpc_python_out="$out" --mypy_grpc_out="$out" meridian/v1/*.proto
