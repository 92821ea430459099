#!/usr/bin/env bash
# Regenerates lse_pb2.py and lse_pb2_grpc.py from ../../proto/lse.proto with
# grpcio-tools (pinned in requirements.txt). Run it after editing the proto
# and commit the result: the generated files are checked in so that
# lse_client.py, lse_pb2.py and lse_pb2_grpc.py can be copied into another
# project as they are.
#
# Usage: client/python/generate.sh [OUT_DIR]
#   OUT_DIR  where to write the two files (default: client/python itself);
#            the test suite writes to a temp dir and compares.
#   PYTHON   the interpreter that has grpcio-tools (default: python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
if [[ "$python" == */* ]]; then  # a relative path: make it survive the cd
    python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")"
fi
out="${1:-$here}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

cd "$here"
"$python" -m grpc_tools.protoc \
    -I../../proto \
    --python_out="$out" \
    --grpc_python_out="$out" \
    lse.proto
