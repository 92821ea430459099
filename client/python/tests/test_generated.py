"""The committed lse_pb2.py / lse_pb2_grpc.py match ../../proto/lse.proto."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import PYTHON_DIR, REPO_ROOT

GENERATED = ("lse_pb2.py", "lse_pb2_grpc.py")


def test_generated_files_are_up_to_date(tmp_path: Path):
    out = tmp_path / "gen"
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(
        ["bash", str(PYTHON_DIR / "generate.sh"), str(out)],
        check=True, env=env, cwd=tmp_path, capture_output=True, text=True,
    )
    for name in GENERATED:
        fresh = (out / name).read_text()
        committed = (PYTHON_DIR / name).read_text()
        assert fresh == committed, (
            f"client/python/{name} is stale: run client/python/generate.sh "
            "(with the grpcio-tools of requirements.txt) and commit the result"
        )


def test_generated_stub_covers_every_rpc():
    import lse_pb2

    proto = (REPO_ROOT / "proto" / "lse.proto").read_text()
    rpcs = [line.split()[1].split("(")[0] for line in proto.splitlines() if line.strip().startswith("rpc ")]
    service = lse_pb2.DESCRIPTOR.services_by_name["Lse"]
    assert sorted(m.name for m in service.methods) == sorted(rpcs)
    assert len(rpcs) >= 19


def test_client_has_a_method_for_every_rpc():
    """GetProblemHtml -> LseClient.get_problem_html, and so on."""
    import re

    import lse_pb2
    from lse_client import LseClient

    for method in lse_pb2.DESCRIPTOR.services_by_name["Lse"].methods:
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", method.name).lower()
        assert callable(getattr(LseClient, name, None)), f"LseClient has no {name}() for {method.name}"
        assert getattr(LseClient, name).__doc__, f"{name}() has no docstring"


def test_pip_install_gives_the_three_modules(tmp_path: Path):
    """`pip install client/python` installs lse_client, lse_pb2 and
    lse_pb2_grpc (built from a copy so the tree stays clean)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "lse_client.py", *GENERATED):
        shutil.copy(PYTHON_DIR / name, src / name)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(src)],
        check=True, capture_output=True, text=True,
    )
    for name in ("lse_client.py", *GENERATED):
        assert (target / name).is_file(), name
    code = "import lse_client, lse_pb2, lse_pb2_grpc; print(lse_client.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(target)),
        check=True, capture_output=True, text=True,
    )
    assert result.stdout.strip().startswith(str(target))
