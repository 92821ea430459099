"""The spec's example (examples/quickstart.py) runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import PYTHON_DIR

QUICKSTART = PYTHON_DIR / "examples" / "quickstart.py"


def run_quickstart(args, env_extra=None):
    env = dict(os.environ)
    env.pop("LSE_ADDRESS", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, str(QUICKSTART), *args],
        capture_output=True, text=True, timeout=120, env=env, cwd="/",
    )


def check_output(result):
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
    # The three input nodes in chain order, then the output of node 1.
    m1 = re.fullmatch(r"(\d+) \[2, 7, 11, 15\]", lines[0])
    m2 = re.fullmatch(r"(\d+) some string input", lines[1])
    m3 = re.fullmatch(r"(\d+) \{'key': 'value'\}", lines[2])
    assert m1 and m2 and m3, lines
    ids = [int(m.group(1)) for m in (m1, m2, m3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert lines[3] == "[0, 1]"


def test_quickstart_with_address_argument(server, lse):
    before = set(lse.list_problems())
    # "localhost", as in the spec, though the server listens on 127.0.0.1.
    check_output(run_quickstart([f"localhost:{server.port}"]))
    # The example deletes its document at the end.
    assert set(lse.list_problems()) == before
    assert lse.get_stats()["compactions"] >= 1


def test_quickstart_with_env_address(address):
    check_output(run_quickstart([], {"LSE_ADDRESS": address}))


def test_quickstart_is_the_spec_example():
    """The part after the marker is the spec's example: one client, the
    spec's calls in the spec's order."""
    text = QUICKSTART.read_text()
    body = text.split("# ---- the spec's example", 1)[1]
    calls = re.findall(r"lse\.(\w+)\(", body)
    assert calls == [
        "create_problem", "get_problem_html", "get_problem_meta", "update_problem_html",
        "update_problem_column", "add_test_case", "add_test_case", "add_test_case",
        "set_expected_output", "set_expected_output", "get_all_test_cases", "get_expected_output",
        "update_test_case", "update_expected_output", "delete_expected_output", "delete_test_case",
        "delete_problem", "get_stats", "flush", "compact_now",
    ]
    assert "from lse_client import LseClient\nlse = LseClient(ADDRESS)\n" in body
