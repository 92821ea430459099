"""Every error path against a live server: the right LseError subclass with
the server's message, never a raw grpc.RpcError."""

from __future__ import annotations

import socket
import time

import grpc
import pytest

import lse_client
from lse_client import (
    InvalidArgument,
    LseClient,
    MessageTooLarge,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
)
from test_values import dead_address

UNKNOWN = 2**64 - 1  # never assigned on a fresh store


def check_not_found(call):
    with pytest.raises(NotFound) as e:
        call()
    err = e.value
    assert isinstance(err, KeyError) and isinstance(err, lse_client.LseError)
    assert not isinstance(err, grpc.RpcError)
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert str(err) and not str(err).startswith("'")
    return err


@pytest.fixture
def doc(lse: LseClient):
    doc = lse.create_problem("<p>err</p>")
    tc = lse.add_test_case(doc, 1)
    return doc, tc


def calls_on_problem(lse: LseClient, doc: int, tc: int):
    return {
        "get_problem_html": lambda: lse.get_problem_html(doc),
        "get_problem_meta": lambda: lse.get_problem_meta(doc),
        "update_problem_html": lambda: lse.update_problem_html(doc, "x"),
        "update_problem_column": lambda: lse.update_problem_column(doc, "a", "b"),
        "add_test_case": lambda: lse.add_test_case(doc, 1),
        "get_all_test_cases": lambda: lse.get_all_test_cases(doc),
        "get_test_case": lambda: lse.get_test_case(doc, tc),
        "update_test_case": lambda: lse.update_test_case(doc, tc, 2),
        "set_expected_output": lambda: lse.set_expected_output(doc, tc, 3),
        "get_expected_output": lambda: lse.get_expected_output(doc, tc),
        "update_expected_output": lambda: lse.update_expected_output(doc, tc, 4),
        "delete_expected_output": lambda: lse.delete_expected_output(doc, tc),
        "delete_test_case": lambda: lse.delete_test_case(doc, tc),
        "delete_problem": lambda: lse.delete_problem(doc),
    }


def test_unknown_problem_is_not_found(lse: LseClient):
    for name, call in calls_on_problem(lse, UNKNOWN, UNKNOWN).items():
        err = check_not_found(call)
        assert err.method, name


def test_deleted_problem_is_not_found(lse: LseClient, doc):
    doc_id, tc = doc
    lse.delete_problem(doc_id)
    for call in calls_on_problem(lse, doc_id, tc).values():
        check_not_found(call)


def test_unknown_and_deleted_test_case_is_not_found(lse: LseClient, doc):
    doc_id, tc = doc
    for bad_tc in (UNKNOWN, doc_id):  # a problem id is no test case id
        for name, call in calls_on_problem(lse, doc_id, bad_tc).items():
            if name.startswith(("get_test", "update_test", "delete_test", "set_exp", "get_exp", "update_exp", "delete_exp")):
                check_not_found(call)
    lse.delete_test_case(doc_id, tc)
    check_not_found(lambda: lse.get_test_case(doc_id, tc))
    check_not_found(lambda: lse.update_test_case(doc_id, tc, 1))
    check_not_found(lambda: lse.delete_test_case(doc_id, tc))
    check_not_found(lambda: lse.set_expected_output(doc_id, tc, 1))
    assert lse.get_all_test_cases(doc_id) == []


def test_test_case_under_another_problem_is_not_found(lse: LseClient, doc):
    doc_id, tc = doc
    other = lse.create_problem("other")
    check_not_found(lambda: lse.get_test_case(other, tc))
    check_not_found(lambda: lse.update_test_case(other, tc, 5))
    check_not_found(lambda: lse.set_expected_output(other, tc, 5))
    check_not_found(lambda: lse.delete_test_case(other, tc))
    assert lse.get_test_case(doc_id, tc)["value"] == 1  # nothing changed


def test_missing_expected_output_is_not_found(lse: LseClient, doc):
    doc_id, tc = doc
    check_not_found(lambda: lse.get_expected_output(doc_id, tc))
    check_not_found(lambda: lse.update_expected_output(doc_id, tc, 1))  # update needs one
    check_not_found(lambda: lse.delete_expected_output(doc_id, tc))
    lse.set_expected_output(doc_id, tc, 1)
    lse.delete_expected_output(doc_id, tc)
    check_not_found(lambda: lse.delete_expected_output(doc_id, tc))


def test_not_found_is_a_key_error(lse: LseClient):
    try:
        lse.get_problem_html(UNKNOWN)
    except KeyError as e:
        assert str(UNKNOWN) in str(e) or "not" in str(e).lower()
    else:
        pytest.fail("no KeyError")


def check_invalid(call, *words):
    with pytest.raises(InvalidArgument) as e:
        call()
    assert isinstance(e.value, ValueError)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    for w in words:
        assert w in str(e.value).lower(), str(e.value)
    return e.value


def test_empty_column_name_is_invalid(lse: LseClient, doc):
    doc_id, _ = doc
    before = set(lse.list_problems())
    check_invalid(lambda: lse.create_problem("x", **{"": "v"}))
    assert set(lse.list_problems()) == before  # a failed request changes nothing
    check_invalid(lambda: lse.update_problem_column(doc_id, "", "v"))
    assert lse.get_problem_meta(doc_id) == {}


def test_id_zero_is_invalid(lse: LseClient, doc):
    doc_id, tc = doc
    check_invalid(lambda: lse.get_problem_html(0), "problem_id")
    check_invalid(lambda: lse.delete_problem(0), "problem_id")
    check_invalid(lambda: lse.add_test_case(0, 1), "problem_id")
    check_invalid(lambda: lse.get_test_case(doc_id, 0), "test_case_id")
    check_invalid(lambda: lse.get_expected_output(0, tc), "problem_id")


def test_bad_page_token_is_invalid(lse: LseClient):
    check_invalid(lambda: lse.list_problems_page(page_token="not-a-token"), "page_token")


def test_value_over_server_limit_is_invalid(lse: LseClient, doc):
    doc_id, tc = doc
    huge = "x" * (17 * 1024 * 1024)  # over the default 16 MiB value/blob limit
    check_invalid(lambda: lse.add_test_case(doc_id, huge))
    check_invalid(lambda: lse.update_problem_html(doc_id, huge))
    assert lse.get_problem_html(doc_id) == "<p>err</p>"


def test_message_over_client_limit_is_resource_exhausted(address: str, doc):
    doc_id, _ = doc
    with LseClient(address, max_message_bytes=1024) as small:
        with pytest.raises(ResourceExhausted):
            small.update_problem_html(doc_id, "x" * 4096)
        with pytest.raises(ResourceExhausted):
            small.add_test_case(doc_id, list(range(1000)))


def test_reply_over_client_limit_is_resource_exhausted(address: str, lse: LseClient, doc):
    doc_id, _ = doc
    lse.update_problem_html(doc_id, "y" * 8192)
    with LseClient(address, max_message_bytes=1024) as small:
        with pytest.raises(ResourceExhausted):
            small.get_problem_html(doc_id)


SMALL_MESSAGES = ("--max-message-bytes", "200000", "--max-blob-bytes", "100000", "--max-value-bytes", "100000")


def test_request_over_server_message_limit_is_out_of_range(make_server):
    srv = make_server(*SMALL_MESSAGES)
    with LseClient(srv.address) as lse:
        with pytest.raises(OutOfRange) as e:
            lse.create_problem("m" * 300_000)
        assert isinstance(e.value, MessageTooLarge)
        assert e.value.code == grpc.StatusCode.OUT_OF_RANGE
        assert "200000" in str(e.value)
        assert lse.list_problems() == []
        doc = lse.create_problem("ok")
        with pytest.raises(MessageTooLarge):
            lse.add_test_case(doc, "m" * 300_000)
        # Between the value limit and the message limit: InvalidArgument.
        check_invalid(lambda: lse.add_test_case(doc, "m" * 150_000), "100000")
        assert lse.get_all_test_cases(doc) == []


def test_chain_too_big_for_one_message_reads_back_page_by_page(make_server):
    """Each test case fits in a message, all of them together do not: the
    client pages, so it still gets them all, in order."""
    srv = make_server(*SMALL_MESSAGES)
    with LseClient(srv.address) as lse:
        doc = lse.create_problem("big")
        values = [c * 90_000 for c in "abc"]
        tcs = [lse.add_test_case(doc, v) for v in values]
        assert lse.get_all_test_cases(doc) == [{"tc_id": tc, "value": v} for tc, v in zip(tcs, values)]
        assert [lse.get_test_case(doc, tc)["value"] for tc in tcs] == values


def test_no_server_is_unavailable():
    with LseClient(dead_address(), timeout=5) as c:
        with pytest.raises(Unavailable) as e:
            c.get_stats()
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(Unavailable):
            c.list_problems()
        with pytest.raises(Unavailable):
            c.create_problem("x")


def test_server_stopped_midway_is_unavailable(own_server):
    with LseClient(own_server.address, timeout=5) as c:
        doc = c.create_problem("x")
        assert own_server.stop() == 0
        with pytest.raises(Unavailable):
            c.get_problem_html(doc)


def test_deadline_exceeded_is_a_timeout_error():
    """A server that accepts the connection but never answers: the call
    fails after the client's timeout with DeadlineExceeded."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with LseClient(f"127.0.0.1:{port}", timeout=0.5) as c:
            started = time.monotonic()
            with pytest.raises(lse_client.DeadlineExceeded) as e:
                c.get_stats()
            assert time.monotonic() - started >= 0.4
            assert isinstance(e.value, TimeoutError)
            assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_server_side_timeout_is_deadline_exceeded(address: str, monkeypatch):
    """Servers before the admission layer answered a deadline that passed
    there CANCELLED "Timeout expired" (tonic's status); the client reports a
    DeadlineExceeded."""
    from test_values import FakeRpcError

    with LseClient(address, timeout=5) as c:
        def cancelled(request, timeout=None, metadata=None):
            raise FakeRpcError(grpc.StatusCode.CANCELLED, "Timeout expired")

        monkeypatch.setattr(c._stub, "GetStats", cancelled)
        with pytest.raises(lse_client.DeadlineExceeded, match="Timeout expired"):
            c.get_stats()

        def other_cancel(request, timeout=None, metadata=None):
            raise FakeRpcError(grpc.StatusCode.CANCELLED, "Channel closed!")

        monkeypatch.setattr(c._stub, "GetStats", other_cancel)
        with pytest.raises(lse_client.Cancelled):
            c.get_stats()


def test_no_deadline_at_all(address: str):
    with LseClient(address, timeout=None) as c:
        assert c.get_stats()["sync_policy"]


def test_outcome_unknown_is_its_own_error(address: str, monkeypatch):
    """UNKNOWN is the server's answer for a write whose fsync failed after
    its record reached the log: the client says so with OutcomeUnknown, not
    as a plain failure (which would mean the write changed nothing)."""
    from test_values import FakeRpcError

    with LseClient(address, timeout=5) as c:
        def unknown(request, timeout=None, metadata=None):
            raise FakeRpcError(grpc.StatusCode.UNKNOWN, "outcome unknown: the write reached the log")

        monkeypatch.setattr(c._stub, "AddTestCase", unknown)
        with pytest.raises(lse_client.OutcomeUnknown, match="outcome unknown") as e:
            c.add_test_case(1, 5)
        assert e.value.code == grpc.StatusCode.UNKNOWN
        assert not isinstance(e.value, lse_client.Unavailable)
