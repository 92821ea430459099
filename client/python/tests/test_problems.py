"""Whole problems, versions, positions and batches (ImportProblem(Stream),
GetProblem(Stream), ReplaceTestCases(Stream), MoveTestCase, Batch, and
``expected_version`` on every call) against real servers."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import grpc
import pytest

import lse_client
import lse_pb2
from conftest import ServerProcess
from lse_client import (
    Batch,
    InvalidArgument,
    LseClient,
    LseError,
    MessageTooLarge,
    NotFound,
    OutOfRange,
    Pending,
    ResourceExhausted,
    VersionConflict,
)

KIB = 1 << 10
MIB = 1 << 20

# The small server's limits: 4 MiB messages (GetProblemStream pages of
# 2 MiB), 1 MiB values.
SMALL_MESSAGE_BYTES = 4 * MIB
SMALL_VALUE_BYTES = 1 * MIB


def dead_address() -> str:
    """An address nothing listens on: a call that is sent fails with
    Unavailable, so any other error proves nothing was sent."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def small_server(server_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with 4 MiB messages, for the size switches."""
    srv = ServerProcess(
        server_bin,
        tmp_path_factory.mktemp("small") / "data",
        [
            "--max-message-bytes", str(SMALL_MESSAGE_BYTES),
            "--max-blob-bytes", str(SMALL_VALUE_BYTES),
            "--max-value-bytes", str(SMALL_VALUE_BYTES),
        ],
    )
    srv.start()
    yield srv
    if srv.proc is not None:
        assert srv.stop() == 0, srv.log_text()


@pytest.fixture
def small(small_server: ServerProcess) -> Iterator[LseClient]:
    with LseClient(small_server.address) as client:
        yield client


@pytest.fixture
def dead() -> Iterator[LseClient]:
    with LseClient(dead_address(), timeout=5) as client:
        yield client


def spy(client: LseClient, name: str) -> List[Tuple[str, Any]]:
    """Records ``(method, request or messages)`` of every call the client
    makes through its ``name`` helper (``_call``, ``_call_stream_in``,
    ``_call_stream_out``); for ``_call_stream_out`` the messages received
    are recorded instead."""
    calls: List[Tuple[str, Any]] = []
    original = getattr(client, name)

    def wrapper(method: str, payload: Any, *args: Any, **kwargs: Any) -> Any:
        if name != "_call_stream_out":
            calls.append((method, payload))  # also when the call fails
            return original(method, payload, *args, **kwargs)
        result = original(method, payload, *args, **kwargs)
        calls.append((method, result))
        return result

    setattr(client, name, wrapper)
    return calls


def chain(problem: Dict[str, Any]) -> List[int]:
    return [tc["tc_id"] for tc in problem["test_cases"]]


def listed(lse: LseClient, doc: int) -> List[int]:
    return [tc["tc_id"] for tc in lse.get_all_test_cases(doc)]


@pytest.fixture
def imported(lse: LseClient) -> Tuple[int, List[int]]:
    """A problem with three test cases: with an output, without, with."""
    return lse.import_problem("<p>three</p>", [(1, 10), 2, (3, 30)], c="old")


# ---------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------


def test_every_write_returns_the_new_version(lse: LseClient, imported):
    doc, (a, b, c) = imported
    version = lse.get_problem_version(doc)
    writes: List[Callable[[], int]] = [
        lambda: lse.update_problem_html(doc, "<p>new</p>"),
        lambda: lse.update_problem_column(doc, "c", "new"),
        lambda: lse.update_test_case(doc, a, 11),
        lambda: lse.set_expected_output(doc, b, 20),
        lambda: lse.update_expected_output(doc, b, 21),
        lambda: lse.delete_expected_output(doc, c),
        lambda: lse.move_test_case(doc, c, to_start=True),
        lambda: lse.delete_test_case(doc, a),
    ]
    for write in writes:
        returned = write()
        assert isinstance(returned, int)
        assert returned > version
        assert returned == lse.get_problem_version(doc)
        version = returned
    tc = lse.add_test_case(doc, 5)
    assert lse.get_problem_version(doc) > version
    assert tc in listed(lse, doc)
    assert lse.get_problem(doc)["version"] == lse.get_problem_version(doc)


def test_delete_problem_returns_none_and_honours_expected_version(lse: LseClient, imported):
    doc, _ = imported
    assert lse.delete_problem(doc, expected_version=lse.get_problem_version(doc)) is None
    with pytest.raises(NotFound):
        lse.get_problem_version(doc)


def test_get_problem_version_of_a_missing_problem(lse: LseClient):
    with pytest.raises(NotFound):
        lse.get_problem_version(10**15)


# Each write, given the problem of `imported`, its test case ids and an
# expected version.
STALE_WRITES: Dict[str, Callable[[LseClient, int, List[int], int], Any]] = {
    "update_problem_html": lambda lse, doc, tcs, v: lse.update_problem_html(doc, "<new>", expected_version=v),
    "update_problem_column": lambda lse, doc, tcs, v: lse.update_problem_column(doc, "c", "new", expected_version=v),
    "delete_problem": lambda lse, doc, tcs, v: lse.delete_problem(doc, expected_version=v),
    "add_test_case": lambda lse, doc, tcs, v: lse.add_test_case(doc, 99, expected_version=v),
    "add_test_case_after": lambda lse, doc, tcs, v: lse.add_test_case(doc, 99, after=tcs[0], expected_version=v),
    "update_test_case": lambda lse, doc, tcs, v: lse.update_test_case(doc, tcs[0], 99, expected_version=v),
    "delete_test_case": lambda lse, doc, tcs, v: lse.delete_test_case(doc, tcs[0], expected_version=v),
    "set_expected_output": lambda lse, doc, tcs, v: lse.set_expected_output(doc, tcs[1], 99, expected_version=v),
    "update_expected_output": lambda lse, doc, tcs, v: lse.update_expected_output(doc, tcs[0], 99, expected_version=v),
    "delete_expected_output": lambda lse, doc, tcs, v: lse.delete_expected_output(doc, tcs[0], expected_version=v),
    "move_test_case": lambda lse, doc, tcs, v: lse.move_test_case(doc, tcs[2], to_start=True, expected_version=v),
    "replace_test_cases": lambda lse, doc, tcs, v: lse.replace_test_cases(doc, [7, (8, 9)], expected_version=v),
    "replace_test_cases_stream": lambda lse, doc, tcs, v: lse.replace_test_cases_stream(
        doc, [7, (8, 9)], expected_version=v
    ),
}


@pytest.mark.parametrize("write", sorted(STALE_WRITES))
def test_a_stale_expected_version_is_refused_and_changes_nothing(lse: LseClient, imported, write):
    doc, tcs = imported
    call = STALE_WRITES[write]
    before = lse.get_problem(doc)
    version = before["version"]
    with pytest.raises(VersionConflict) as info:
        call(lse, doc, tcs, version - 1)
    assert info.value.problem_id == doc
    assert info.value.current_version == version
    assert info.value.code == grpc.StatusCode.ABORTED
    assert str(version) in str(info.value)
    assert lse.get_problem(doc) == before
    assert lse.get_problem_version(doc) == version
    # The same write at the current version goes through.
    call(lse, doc, tcs, version)
    if write == "delete_problem":
        with pytest.raises(NotFound):
            lse.get_problem(doc)
    else:
        after = lse.get_problem(doc)
        assert after["version"] > version
        assert after != before


READS: Dict[str, Callable[[LseClient, int, List[int], int], Any]] = {
    "get_problem_html": lambda lse, doc, tcs, v: lse.get_problem_html(doc, expected_version=v),
    "get_problem_meta": lambda lse, doc, tcs, v: lse.get_problem_meta(doc, expected_version=v),
    "get_test_case": lambda lse, doc, tcs, v: lse.get_test_case(doc, tcs[0], expected_version=v),
    "get_all_test_cases": lambda lse, doc, tcs, v: lse.get_all_test_cases(doc, expected_version=v),
    "get_expected_output": lambda lse, doc, tcs, v: lse.get_expected_output(doc, tcs[0], expected_version=v),
    "get_problem": lambda lse, doc, tcs, v: lse.get_problem(doc, expected_version=v),
    "get_problem_stream": lambda lse, doc, tcs, v: lse.get_problem_stream(doc, expected_version=v),
}


@pytest.mark.parametrize("read", sorted(READS))
def test_reads_answer_only_at_the_expected_version(lse: LseClient, imported, read):
    doc, tcs = imported
    version = lse.get_problem_version(doc)
    plain = READS[read](lse, doc, tcs, None)
    assert READS[read](lse, doc, tcs, version) == plain
    with pytest.raises(VersionConflict) as info:
        READS[read](lse, doc, tcs, version + 1)
    assert (info.value.problem_id, info.value.current_version) == (doc, version)


@pytest.mark.parametrize("bad, error", [("1", TypeError), (True, TypeError), (1.0, TypeError), (-1, ValueError),
                                        (2**64, ValueError)])
def test_expected_version_is_checked_before_sending(dead: LseClient, bad, error):
    for call in (
        lambda: dead.update_problem_html(1, "x", expected_version=bad),
        lambda: dead.delete_test_case(1, 2, expected_version=bad),
        lambda: dead.get_problem(1, expected_version=bad),
        lambda: dead.replace_test_cases(1, [1], expected_version=bad),
    ):
        with pytest.raises(error):
            call()


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details, trailers=None):
        self._code, self._details, self._trailers = code, details, trailers

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailers


def test_aborted_is_a_version_conflict_with_the_trailers():
    trailers = (("lse-problem-id", "12"), ("lse-current-version", "345"))
    err = lse_client.error_from_rpc(FakeRpcError(grpc.StatusCode.ABORTED, "stale", trailers), "Batch")
    assert type(err) is VersionConflict
    assert isinstance(err, LseError)
    assert (err.problem_id, err.current_version, err.method, str(err)) == (12, 345, "Batch", "stale")
    assert "VersionConflict" in lse_client.__all__


@pytest.mark.parametrize("trailers", [None, (), (("lse-current-version", "not a number"),)])
def test_a_version_conflict_without_readable_trailers_has_none(trailers):
    err = lse_client.error_from_rpc(FakeRpcError(grpc.StatusCode.ABORTED, "stale", trailers), "GetProblem")
    assert type(err) is VersionConflict
    assert err.problem_id is None and err.current_version is None


# ---------------------------------------------------------------------------
# Import and whole-problem reads
# ---------------------------------------------------------------------------


def test_import_problem_reads_back_whole(lse: LseClient):
    cases = [(1, 10), 2, ([4, 5], None), ("in", {"k": "v"}), [6, 7], (8.5, ["a", "b"])]
    doc, ids = lse.import_problem("<h1>import</h1>", cases, name="imp", level="easy")
    assert len(ids) == len(cases) == len(set(ids))
    problem = lse.get_problem(doc)
    assert problem == {
        "doc_id": doc,
        "html": "<h1>import</h1>",
        "meta": {"level": "easy", "name": "imp"},
        "version": lse.get_problem_version(doc),
        "test_cases": [
            {"tc_id": ids[0], "value": 1, "expected_output": 10},
            {"tc_id": ids[1], "value": 2, "expected_output": None},
            {"tc_id": ids[2], "value": [4, 5], "expected_output": None},
            {"tc_id": ids[3], "value": "in", "expected_output": {"k": "v"}},
            {"tc_id": ids[4], "value": [6, 7], "expected_output": None},
            {"tc_id": ids[5], "value": 8.5, "expected_output": ["a", "b"]},
        ],
    }
    assert listed(lse, doc) == ids
    assert lse.get_expected_output(doc, ids[0])["value"] == 10
    with pytest.raises(NotFound):
        lse.get_expected_output(doc, ids[1])
    assert lse.get_problem_stream(doc) == problem


def test_a_list_is_a_value_and_a_tuple_a_pair(lse: LseClient):
    doc, ids = lse.import_problem("", [[1, 2], (1, 2), ([1, 2], [3])])
    got = lse.get_problem(doc)["test_cases"]
    assert [(tc["value"], tc["expected_output"]) for tc in got] == [([1, 2], None), (1, 2), ([1, 2], [3])]


def test_import_an_empty_chain(lse: LseClient):
    doc, ids = lse.import_problem("<p>alone</p>", [])
    assert ids == []
    problem = lse.get_problem(doc)
    assert problem["test_cases"] == [] and problem["html"] == "<p>alone</p>" and problem["meta"] == {}


@pytest.mark.parametrize(
    "cases, error, match",
    [
        ([1, (1, 2, 3)], ValueError, "test case 1: a tuple is an"),
        ([(1,)], ValueError, "test case 0"),
        ([1, None], TypeError, "test case 1"),
        ([(None, 1)], TypeError, "test case 0"),
        ([(1, True)], TypeError, "test case 0"),
        ([2**63], ValueError, "test case 0"),
        ("abc", TypeError, "cases must be"),
        ({"a": 1}, TypeError, "cases must be"),
        (5, TypeError, "cases must be"),
    ],
)
def test_bad_cases_are_refused_before_sending(dead: LseClient, cases, error, match):
    with pytest.raises(error, match=match):
        dead.import_problem("", cases)
    with pytest.raises(error, match=match):
        dead.replace_test_cases(1, cases)


def test_import_with_a_bad_column_changes_nothing(lse: LseClient):
    problems = lse.list_problems()
    with pytest.raises(InvalidArgument):
        lse.import_problem("<p>", [1, 2], **{"": "empty name"})
    assert lse.list_problems() == problems


def test_a_large_import_goes_as_a_stream_of_1_mib_messages(lse: LseClient):
    unary, streamed = spy(lse, "_call"), spy(lse, "_call_stream_in")
    values = [chr(ord("a") + i) * (300 * KIB) for i in range(8)]
    cases = [(v, i) for i, v in enumerate(values)]
    doc, ids = lse.import_problem("<h1>big</h1>", cases, name="big")
    assert [m for m, _ in unary] == []
    [(method, messages)] = streamed
    assert method == "ImportProblemStream"
    assert len(messages) >= 3
    assert messages[0].html == "<h1>big</h1>" and dict(messages[0].columns) == {"name": "big"}
    assert all(m.html == "" and not m.columns for m in messages[1:])
    assert all(m.ByteSize() <= MIB for m in messages)
    assert sum(len(m.test_cases) for m in messages) == len(values)
    problem = lse.get_problem(doc)
    assert chain(problem) == ids
    assert [(tc["value"], tc["expected_output"]) for tc in problem["test_cases"]] == cases


def test_a_small_import_is_one_unary_call(lse: LseClient):
    unary, streamed = spy(lse, "_call"), spy(lse, "_call_stream_in")
    lse.import_problem("<p>", ["x" * (100 * KIB)] * 5)
    assert [m for m, _ in unary] == ["ImportProblem"] and streamed == []


def test_an_import_over_the_message_limit_still_arrives(small: LseClient):
    cases = [chr(ord("a") + i) * (700 * KIB) for i in range(6)]  # 4.2 MiB > 4 MiB
    with pytest.raises(MessageTooLarge):  # one message could not carry it
        small._call("ImportProblem", lse_pb2.ImportProblemRequest(
            html="x", test_cases=[lse_pb2.NewTestCase(input=lse_client.to_wire(c)) for c in cases]))
    doc, ids = small.import_problem("<p>big</p>", cases)
    problem = small.get_problem(doc)
    assert chain(problem) == ids and [tc["value"] for tc in problem["test_cases"]] == cases


def test_a_failed_import_stream_leaves_nothing(small: LseClient):
    problems = small.list_problems()
    stats = small.get_stats()
    streamed = spy(small, "_call_stream_in")
    cases = ["ok" * (200 * KIB)] * 4 + ["x" * (SMALL_VALUE_BYTES + KIB)]  # the last is over the value limit
    with pytest.raises(InvalidArgument):
        small.import_problem("<p>", cases)
    assert len(streamed) == 1 and len(streamed[0][1]) >= 2  # refused after several messages
    assert small.list_problems() == problems
    assert small.get_stats()["test_cases"] == stats["test_cases"]


def test_get_problem_falls_back_to_the_stream_on_out_of_range(small: LseClient):
    cases = [(chr(ord("a") + i) * (700 * KIB), i) for i in range(6)]
    doc, ids = small.import_problem("<p>wide</p>", cases, k="v")
    with pytest.raises(OutOfRange):  # the server cannot send it in one message
        small._call("GetProblem", lse_pb2.GetProblemRequest(problem_id=doc))
    streamed = spy(small, "_call_stream_out")
    problem = small.get_problem(doc)
    [(method, messages)] = streamed
    assert method == "GetProblemStream" and len(messages) >= 2
    assert problem["doc_id"] == doc and problem["html"] == "<p>wide</p>" and problem["meta"] == {"k": "v"}
    assert problem["version"] == small.get_problem_version(doc)
    assert chain(problem) == ids
    assert [(tc["value"], tc["expected_output"]) for tc in problem["test_cases"]] == cases


def test_get_problem_falls_back_to_the_stream_on_the_client_receive_limit(small_server: ServerProcess):
    with LseClient(small_server.address, max_message_bytes=3 * MIB) as client:
        cases = [chr(ord("a") + i) * (700 * KIB) for i in range(5)]  # 3.5 MiB: over 3, under 4
        doc, ids = client.import_problem("", cases)
        with pytest.raises(ResourceExhausted):  # this client refuses to receive it
            client._call("GetProblem", lse_pb2.GetProblemRequest(problem_id=doc))
        problem = client.get_problem(doc)
        assert chain(problem) == ids and [tc["value"] for tc in problem["test_cases"]] == cases


def test_get_problem_does_not_fall_back_for_other_errors(lse: LseClient):
    streamed = spy(lse, "_call_stream_out")
    with pytest.raises(NotFound):
        lse.get_problem(10**15)
    assert streamed == []
    with pytest.raises(NotFound):
        lse.get_problem_stream(10**15)


def test_stream_messages_of_different_versions_are_refused():
    def message(version: int, tc_id: int) -> lse_pb2.GetProblemResponse:
        return lse_pb2.GetProblemResponse(problem_id=1, version=version, test_cases=[
            lse_pb2.ProblemTestCase(test_case_id=tc_id, input=lse_client.to_wire(tc_id))])

    joined = lse_client._problem_dict([message(5, 2), message(5, 3)], "GetProblemStream")
    assert chain(joined) == [2, 3] and joined["version"] == 5
    with pytest.raises(LseError, match="version"):
        lse_client._problem_dict([message(5, 2), message(6, 3)], "GetProblemStream")
    with pytest.raises(LseError, match="no message"):
        lse_client._problem_dict([], "GetProblemStream")


# ---------------------------------------------------------------------------
# Replace
# ---------------------------------------------------------------------------


def test_replace_test_cases_replaces_the_whole_chain(lse: LseClient, imported):
    doc, old = imported
    version = lse.get_problem_version(doc)
    new = lse.replace_test_cases(doc, [("a", "A"), "b", ([1], None)])
    assert len(new) == 3 and not set(new) & set(old)
    problem = lse.get_problem(doc)
    assert problem["version"] > version
    assert problem["html"] == "<p>three</p>" and problem["meta"] == {"c": "old"}
    assert [(tc["tc_id"], tc["value"], tc["expected_output"]) for tc in problem["test_cases"]] == [
        (new[0], "a", "A"), (new[1], "b", None), (new[2], [1], None)]
    for tc in old:
        with pytest.raises(NotFound):
            lse.get_test_case(doc, tc)
    assert lse.replace_test_cases(doc, [], expected_version=problem["version"]) == []
    assert lse.get_problem(doc)["test_cases"] == []


def test_replace_on_a_missing_problem(lse: LseClient):
    with pytest.raises(NotFound):
        lse.replace_test_cases(10**15, [1])
    with pytest.raises(NotFound):
        lse.replace_test_cases_stream(10**15, [1])


def test_a_large_replace_goes_as_a_stream_naming_the_problem_first(small: LseClient):
    doc, old = small.import_problem("<p>", [1, 2])
    version = small.get_problem_version(doc)
    streamed = spy(small, "_call_stream_in")
    cases = [(chr(ord("a") + i) * (700 * KIB), i) for i in range(6)]  # 4.2 MiB: only as a stream
    new = small.replace_test_cases(doc, cases, expected_version=version)
    [(method, messages)] = streamed
    assert method == "ReplaceTestCasesStream" and len(messages) >= 4
    assert messages[0].problem_id == doc and messages[0].expected_version == version
    assert all(m.problem_id == 0 and not m.HasField("expected_version") for m in messages[1:])
    problem = small.get_problem(doc)
    assert chain(problem) == new and not set(new) & set(old)
    assert [(tc["value"], tc["expected_output"]) for tc in problem["test_cases"]] == cases


def test_a_stale_large_replace_changes_nothing(small: LseClient):
    doc, _ = small.import_problem("<p>", [(1, 2)])
    before = small.get_problem(doc)
    cases = [chr(ord("a") + i) * (700 * KIB) for i in range(6)]
    with pytest.raises(VersionConflict) as info:
        small.replace_test_cases(doc, cases, expected_version=before["version"] + 7)
    assert info.value.current_version == before["version"]
    assert small.get_problem(doc) == before


# ---------------------------------------------------------------------------
# Positions: add and move
# ---------------------------------------------------------------------------


def test_add_test_case_places(lse: LseClient):
    doc, (a, b) = lse.import_problem("", ["a", "b"])
    start = lse.add_test_case(doc, "start", at_start=True)
    mid = lse.add_test_case(doc, "mid", after=a)
    pre_b = lse.add_test_case(doc, "pre-b", before=b)
    end = lse.add_test_case(doc, "end")
    order = [start, a, mid, pre_b, b, end]
    assert listed(lse, doc) == order
    assert chain(lse.get_problem(doc)) == order
    assert [tc["value"] for tc in lse.get_problem(doc)["test_cases"]] == ["start", "a", "mid", "pre-b", "b", "end"]


def test_move_test_case_places(lse: LseClient):
    doc, (a, b, c, d) = lse.import_problem("", [(1, 10), 2, 3, (4, 40)])
    moves = [
        (dict(to_start=True), d, [d, a, b, c]),
        (dict(to_end=True), a, [d, b, c, a]),
        (dict(before=b), c, [d, c, b, a]),
        (dict(after=a), b, [d, c, a, b]),
    ]
    for placement, tc, order in moves:
        version = lse.get_problem_version(doc)
        returned = lse.move_test_case(doc, tc, **placement)
        assert returned > version and returned == lse.get_problem_version(doc)
        assert listed(lse, doc) == order
        assert chain(lse.get_problem(doc)) == order
    outputs = {tc["tc_id"]: tc["expected_output"] for tc in lse.get_problem(doc)["test_cases"]}
    assert outputs == {a: 10, b: None, c: None, d: 40}  # outputs move with their test cases


def test_positions_must_name_a_test_case_of_the_problem(lse: LseClient):
    doc, (a, b) = lse.import_problem("", [1, 2])
    other, (x,) = lse.import_problem("", [3])
    before = lse.get_problem(doc)
    with pytest.raises(NotFound):
        lse.add_test_case(doc, 9, before=x)
    with pytest.raises(NotFound):
        lse.add_test_case(doc, 9, after=10**15)
    with pytest.raises(NotFound):
        lse.move_test_case(doc, a, after=x)
    with pytest.raises(NotFound):
        lse.move_test_case(doc, x, to_start=True)
    assert lse.get_problem(doc) == before
    assert listed(lse, other) == [x]


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda c: c.add_test_case(1, 1, before=2, after=3), ValueError),
        (lambda c: c.add_test_case(1, 1, before=2, at_start=True), ValueError),
        (lambda c: c.add_test_case(1, 1, at_start="yes"), TypeError),
        (lambda c: c.add_test_case(1, 1, before="2"), TypeError),
        (lambda c: c.add_test_case(1, 1, after=-1), ValueError),
        (lambda c: c.move_test_case(1, 2), ValueError),
        (lambda c: c.move_test_case(1, 2, to_start=True, to_end=True), ValueError),
        (lambda c: c.move_test_case(1, 2, before=3, to_end=True), ValueError),
        (lambda c: c.move_test_case(1, 2, before=3, after=4), ValueError),
        (lambda c: c.move_test_case(1, 2, to_end=1), TypeError),
        (lambda c: c.move_test_case(1, 2, to_start=False), ValueError),
        (lambda c: c.batch().add_test_case(1, 1, before=2, after=3), ValueError),
        (lambda c: c.batch().move_test_case(1, 2), ValueError),
        (lambda c: c.batch().move_test_case(1, 2, to_start=True, after=3), ValueError),
    ],
)
def test_placement_errors_are_raised_before_sending(dead: LseClient, call, error):
    with pytest.raises(error):
        call(dead)


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------


def test_a_batch_creates_and_fills_a_problem_through_placeholders(lse: LseClient, imported):
    doc, (a, b, c) = imported
    with lse.batch() as batch:
        new = batch.create_problem("<h1>new</h1>", name="new")
        first = batch.add_test_case(new, [1, 2])
        second = batch.add_test_case(new, "second")
        batch.set_expected_output(new, first, 3)
        batch.update_test_case(new, second, "second v2")
        top = batch.add_test_case(new, "top", at_start=True)
        batch.move_test_case(new, second, to_start=True)
        batch.update_problem_column(doc, "c", "batched")
        batch.delete_test_case(doc, b)
        batch.add_test_case(doc, "after a", after=a)
    assert isinstance(new, Pending) and new.kind == "problem" and first.kind == "test case"
    assert batch.created == [new.id, first.id, second.id, 0, 0, top.id, 0, 0, 0, batch.created[9]]
    assert len({new.id, first.id, second.id, top.id, batch.created[9]}) == 5
    assert batch.versions == {doc: lse.get_problem_version(doc), new.id: lse.get_problem_version(new.id)}
    problem = lse.get_problem(new.id)
    assert problem["html"] == "<h1>new</h1>" and problem["meta"] == {"name": "new"}
    assert [(tc["tc_id"], tc["value"], tc["expected_output"]) for tc in problem["test_cases"]] == [
        (second.id, "second v2", None), (top.id, "top", None), (first.id, [1, 2], 3)]
    assert lse.get_problem_meta(doc) == {"c": "batched"}
    assert listed(lse, doc) == [a, batch.created[9], c]


def test_placeholders_and_results_are_unavailable_before_commit(lse: LseClient):
    batch = lse.batch()
    pending = batch.create_problem("<p>")
    with pytest.raises(RuntimeError, match="not committed"):
        pending.id
    with pytest.raises(RuntimeError):
        batch.versions
    with pytest.raises(RuntimeError):
        batch.created
    assert len(batch) == 1
    batch.commit()
    assert lse.get_problem_html(pending.id) == "<p>"
    with pytest.raises(RuntimeError):  # once only
        batch.commit()
    with pytest.raises(RuntimeError):
        batch.create_problem("<q>")


def test_a_batch_whose_last_op_fails_changes_nothing(lse: LseClient, imported):
    doc, (a, b, c) = imported
    before = lse.get_problem(doc)
    problems = lse.list_problems()
    stats = lse.get_stats()
    batch = lse.batch()
    with pytest.raises(NotFound):
        with batch:
            new = batch.create_problem("<p>never</p>")
            batch.add_test_case(new, 1)
            batch.update_problem_html(doc, "<p>changed</p>")
            batch.delete_test_case(doc, a)
            batch.move_test_case(doc, c, to_start=True)
            batch.update_expected_output(doc, b, 5)  # b has no expected output
    assert lse.get_problem(doc) == before
    assert lse.list_problems() == problems
    assert lse.get_stats()["test_cases"] == stats["test_cases"]
    with pytest.raises(RuntimeError):
        new.id


def test_a_batch_with_a_stale_expected_version_writes_nothing(lse: LseClient, imported):
    doc, (a, _, _) = imported
    other, _ = lse.import_problem("<p>other</p>", [1])
    before, other_before = lse.get_problem(doc), lse.get_problem(other)
    problems = lse.list_problems()
    batch = lse.batch({doc: before["version"], other: other_before["version"] - 1})
    with pytest.raises(VersionConflict) as info:
        with batch:
            batch.create_problem("<p>never</p>")
            batch.update_test_case(doc, a, 100)
            batch.update_problem_html(other, "<p>changed</p>")
    assert (info.value.problem_id, info.value.current_version) == (other, other_before["version"])
    assert info.value.method == "Batch"
    assert lse.get_problem(doc) == before and lse.get_problem(other) == other_before
    assert lse.list_problems() == problems
    # At the current versions the same batch goes through.
    with lse.batch({doc: before["version"], other: other_before["version"]}) as batch:
        batch.update_test_case(doc, a, 100)
        batch.update_problem_html(other, "<p>changed</p>")
    assert lse.get_test_case(doc, a)["value"] == 100
    assert batch.versions[other] == lse.get_problem_version(other) > other_before["version"]


def test_a_batch_deleting_a_problem_does_not_list_its_version(lse: LseClient, imported):
    doc, _ = imported
    with lse.batch() as batch:
        batch.delete_problem(doc)
    assert doc not in batch.versions and batch.created == [0]
    with pytest.raises(NotFound):
        lse.get_problem(doc)


def test_a_batch_left_by_an_exception_sends_nothing(lse: LseClient, imported):
    doc, _ = imported
    before = lse.get_problem(doc)
    problems = lse.list_problems()
    with pytest.raises(KeyError, match="mine"):
        with lse.batch() as batch:
            pending = batch.create_problem("<p>never</p>")
            batch.update_problem_html(doc, "<p>changed</p>")
            raise KeyError("mine")
    assert lse.get_problem(doc) == before and lse.list_problems() == problems
    with pytest.raises(RuntimeError):
        pending.id
    with pytest.raises(RuntimeError, match="discarded"):
        batch.commit()


def test_an_empty_batch_sends_nothing(dead: LseClient):
    with dead.batch({1: 2}) as batch:
        pass
    assert batch.versions == {} and batch.created == []
    with pytest.raises(lse_client.Unavailable):  # while a real one is sent
        with dead.batch() as batch:
            batch.delete_problem(1)


def test_placeholders_of_a_committed_batch_serve_later_batches(lse: LseClient):
    with lse.batch() as first:
        doc = first.create_problem("<p>")
        tc = first.add_test_case(doc, 1)
    with lse.batch() as second:
        second.set_expected_output(doc, tc, 2)
        second.add_test_case(doc, 0, before=tc)
    assert second.created[0] == 0
    assert [(t["value"], t["expected_output"]) for t in lse.get_problem(doc.id)["test_cases"]] == [(0, None), (1, 2)]


def test_batch_arguments_are_checked_when_queued(dead: LseClient):
    batch = dead.batch()
    doc = batch.create_problem("<p>")
    tc = batch.add_test_case(doc, 1)
    with pytest.raises(TypeError, match="pending problem"):
        batch.update_test_case(doc, doc, 1)
    with pytest.raises(TypeError, match="pending test case"):
        batch.delete_problem(tc)
    with pytest.raises(ValueError, match="another batch"):
        dead.batch().delete_problem(doc)
    with pytest.raises(TypeError):
        batch.set_expected_output(doc, tc, None)
    with pytest.raises(TypeError):
        batch.update_problem_html(doc, b"<p>")
    with pytest.raises(TypeError):
        batch.update_problem_column("1", "name", "v")
    assert len(batch) == 2  # the refused calls queued nothing
    for bad, error in [({1: "2"}, TypeError), ({"1": 2}, TypeError), ({1: None}, TypeError), ({1: -1}, ValueError),
                       ([(1, 2)], TypeError)]:
        with pytest.raises(error):
            dead.batch(bad)


def test_batch_ops_name_created_things_by_op_index(dead: LseClient):
    batch = dead.batch()
    doc = batch.create_problem("<p>")
    batch.update_problem_column(1, "c", "v")
    tc = batch.add_test_case(doc, 1)
    batch.set_expected_output(doc, tc, 2)
    batch.move_test_case(7, 8, to_end=True)
    ops = batch._ops
    assert ops[2].add_test_case.problem_id == 0 and ops[2].problem_from_op == 0
    assert not ops[2].HasField("test_case_from_op")
    assert ops[3].problem_from_op == 0 and ops[3].test_case_from_op == 2
    assert ops[3].set_expected_output.test_case_id == 0
    assert not ops[1].HasField("problem_from_op") and ops[1].update_problem_column.problem_id == 1
    assert ops[4].move_test_case.position.WhichOneof("at") == "end"
    assert isinstance(batch, Batch) and "5 ops" in repr(batch)


def test_a_batch_places_test_cases_beside_ones_it_adds(lse: LseClient):
    with lse.batch() as b:
        doc = b.create_problem("<p>placed</p>")
        first = b.add_test_case(doc, 1)
        b.add_test_case(doc, 0, before=first)
        last = b.add_test_case(doc, 3)
        b.add_test_case(doc, 2, after=first)
        b.move_test_case(doc, last, before=first)
    assert [t["value"] for t in lse.get_problem(doc.id)["test_cases"]] == [0, 3, 1, 2]
    # A test case cannot be placed beside itself, even while pending.
    with pytest.raises(InvalidArgument, match="itself"):
        with lse.batch() as b:
            tc = b.add_test_case(doc.id, 9)
            b.move_test_case(doc.id, tc, after=tc)
    assert len(lse.get_problem(doc.id)["test_cases"]) == 4
