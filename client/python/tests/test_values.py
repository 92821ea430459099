"""Value conversion and error mapping, without a server."""

from __future__ import annotations

import math
import socket

import grpc
import pytest

import lse_client
import lse_pb2
from lse_client import (
    INT64_MAX,
    INT64_MIN,
    LseClient,
    from_wire,
    to_wire,
)


def dead_address() -> str:
    """An address nothing listens on (a port that was just free)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.mark.parametrize(
    "value, kind",
    [
        (0, "int_value"),
        (INT64_MIN, "int_value"),
        (INT64_MAX, "int_value"),
        (1.5, "double_value"),
        (float("nan"), "double_value"),
        ("", "string_value"),
        ("x", "string_value"),
        ([], "int_list"),
        ((), "int_list"),
        ([1, 2], "int_list"),
        (["a"], "string_list"),
        ({}, "string_map"),
        ({"a": "b"}, "string_map"),
    ],
)
def test_to_wire_kind(value, kind):
    wire = to_wire(value)
    assert wire.WhichOneof("kind") == kind
    # The kind survives serialization even for zero / empty values.
    parsed = lse_pb2.Value.FromString(wire.SerializeToString())
    assert parsed.WhichOneof("kind") == kind


@pytest.mark.parametrize(
    "value, expected",
    [
        (-(2**63), -(2**63)),
        (2**63 - 1, 2**63 - 1),
        (-0.0, -0.0),
        (float("inf"), float("inf")),
        ("日本語 🎉", "日本語 🎉"),
        ([], []),
        ((1, 2), [1, 2]),
        (("a", "b"), ["a", "b"]),
        ({"b": "2", "a": "1"}, {"a": "1", "b": "2"}),
    ],
)
def test_wire_round_trip(value, expected):
    got = from_wire(lse_pb2.Value.FromString(to_wire(value).SerializeToString()))
    assert got == expected
    assert type(got) is type(expected)


def test_nan_round_trip():
    assert math.isnan(from_wire(to_wire(float("nan"))))


def test_empty_string_list_reads_back_as_empty_list():
    wire = lse_pb2.Value()
    wire.string_list.SetInParent()
    assert from_wire(wire) == []


def test_unset_value_from_server_is_lse_error():
    with pytest.raises(lse_client.LseError, match="no type set"):
        from_wire(lse_pb2.Value())


BAD_TYPES = [
    True,
    False,
    None,
    memoryview(b"x"),
    {1, 2},
    object(),
    1 + 2j,
    [1, "a"],
    [1, True],
    [True],
    [None],
    [1.5],
    [1, 2.0],
    [[1]],
    [{"a": "b"}],
    [b"x"],
    {"a": 1},
    {1: "a"},
    {"a": None},
    {"a": ["b"]},
    {"a": {"b": "c"}},
    {None: "a"},
]


@pytest.mark.parametrize("value", BAD_TYPES, ids=repr)
def test_bad_types_raise_type_error(value):
    with pytest.raises(TypeError) as e:
        to_wire(value)
    # The message names what is accepted.
    assert "int" in str(e.value) and "str" in str(e.value)


def test_bool_message_says_bool():
    with pytest.raises(TypeError, match="bool"):
        to_wire(True)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30, [0, 2**63], [-(2**63) - 1]])
def test_ints_outside_int64_raise_value_error(value):
    with pytest.raises(ValueError, match="int64"):
        to_wire(value)


@pytest.mark.parametrize("value", ["\ud800", ["ok", "\udfff"], {"\ud800": "v"}, {"k": "\ud800"}])
def test_lone_surrogates_raise_value_error(value):
    with pytest.raises(ValueError, match="UTF-8"):
        to_wire(value)


def test_bad_values_are_refused_before_sending():
    """Against a dead address a sent call would fail with Unavailable: a
    TypeError/ValueError proves the value was checked first."""
    with LseClient(dead_address(), timeout=5) as c:
        for bad in BAD_TYPES:
            with pytest.raises(TypeError):
                c.add_test_case(1, bad)
            with pytest.raises(TypeError):
                c.update_test_case(1, 2, bad)
            with pytest.raises(TypeError):
                c.set_expected_output(1, 2, bad)
            with pytest.raises(TypeError):
                c.update_expected_output(1, 2, bad)
        for bad in (2**63, [2**64]):
            with pytest.raises(ValueError, match="int64"):
                c.add_test_case(1, bad)
        # Ids, html and columns are checked too.
        with pytest.raises(TypeError):
            c.get_problem_html("1")
        with pytest.raises(TypeError):
            c.get_problem_html(True)
        with pytest.raises(TypeError):
            c.get_problem_html(1.0)
        with pytest.raises(ValueError, match="uint64"):
            c.get_problem_html(-1)
        with pytest.raises(ValueError, match="uint64"):
            c.get_test_case(1, 2**64)
        with pytest.raises(TypeError):
            c.create_problem(b"<h1>")
        with pytest.raises(TypeError):
            c.create_problem(None)
        with pytest.raises(TypeError):
            c.create_problem("x", version=1)
        with pytest.raises(TypeError):
            c.update_problem_column(1, "name", None)
        with pytest.raises(TypeError):
            c.update_problem_column(1, 5, "v")
        with pytest.raises(TypeError):
            c.update_problem_html(1, ["<h1>"])
        with pytest.raises(ValueError, match="UTF-8"):
            c.update_problem_html(1, "\ud800")
        with pytest.raises(TypeError):
            c.list_problems_page(page_size=True)
        with pytest.raises(ValueError):
            c.list_problems_page(page_size=-1)
        # And a real call does reach the network and fails as Unavailable.
        with pytest.raises(lse_client.Unavailable):
            c.add_test_case(1, 1)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize(
    "code, cls, also",
    [
        (grpc.StatusCode.NOT_FOUND, lse_client.NotFound, KeyError),
        (grpc.StatusCode.INVALID_ARGUMENT, lse_client.InvalidArgument, ValueError),
        (grpc.StatusCode.OUT_OF_RANGE, lse_client.OutOfRange, lse_client.MessageTooLarge),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, lse_client.ResourceExhausted, lse_client.MessageTooLarge),
        (grpc.StatusCode.UNAVAILABLE, lse_client.Unavailable, None),
        (grpc.StatusCode.DATA_LOSS, lse_client.DataLoss, None),
        (grpc.StatusCode.FAILED_PRECONDITION, lse_client.FailedPrecondition, None),
        (grpc.StatusCode.DEADLINE_EXCEEDED, lse_client.DeadlineExceeded, TimeoutError),
        (grpc.StatusCode.CANCELLED, lse_client.Cancelled, None),
        (grpc.StatusCode.INTERNAL, lse_client.Internal, None),
        (grpc.StatusCode.UNIMPLEMENTED, lse_client.Unimplemented, None),
        (grpc.StatusCode.UNKNOWN, lse_client.OutcomeUnknown, None),
        (grpc.StatusCode.UNAUTHENTICATED, lse_client.Unauthenticated, None),
        (grpc.StatusCode.PERMISSION_DENIED, lse_client.PermissionDenied, PermissionError),
        (grpc.StatusCode.ABORTED, lse_client.VersionConflict, None),
    ],
)
def test_error_mapping(code, cls, also):
    err = lse_client.error_from_rpc(FakeRpcError(code, "what was wrong"), "GetTestCase")
    assert type(err) is cls
    assert isinstance(err, lse_client.LseError)
    assert not isinstance(err, grpc.RpcError)
    if also is not None:
        assert isinstance(err, also)
    assert str(err) == "what was wrong"  # not quoted, even for KeyError
    assert err.details == "what was wrong"
    assert err.code == code
    assert err.method == "GetTestCase"


def test_an_overloaded_server_is_overloaded_not_a_message_too_large():
    details = "server overloaded: 4 calls in flight, the limit of --max-concurrent-requests; retry later"
    err = lse_client.error_from_rpc(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, details), "GetStats")
    assert type(err) is lse_client.Overloaded
    assert not isinstance(err, lse_client.MessageTooLarge)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_error_without_details_gets_a_message():
    err = lse_client.error_from_rpc(FakeRpcError(grpc.StatusCode.INTERNAL, None), "Flush")
    assert "Flush" in str(err) and "INTERNAL" in str(err)


def test_closed_client_raises_client_closed():
    c = LseClient(dead_address())
    c.close()
    c.close()  # twice is fine
    assert c.closed
    with pytest.raises(lse_client.ClientClosed):
        c.get_stats()
    assert "closed" in repr(c)


def test_wait_until_ready_times_out():
    with LseClient(dead_address()) as c:
        with pytest.raises(lse_client.DeadlineExceeded):
            c.wait_until_ready(timeout=0.5)


def test_bytes_round_trip_as_raw_octets_on_the_wire():
    every = bytes(range(256))
    for raw in [b"", every, b"\xff\xfe not UTF-8 \x00"]:
        wire = to_wire(raw)
        assert wire.WhichOneof("kind") == "bytes_value"
        assert from_wire(wire) == raw and isinstance(from_wire(wire), bytes)
    assert from_wire(to_wire(bytearray(b"ab"))) == b"ab"
