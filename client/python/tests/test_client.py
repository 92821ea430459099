"""Every LseClient method against a live server, and value round trips."""

from __future__ import annotations

import math
import threading

import pytest

import lse_pb2
from lse_client import INT64_MAX, INT64_MIN, LseClient, LseError, NotFound

UNICODE = "héllo wörld — 日本語 · Ελληνικά · 🎉🚀 · עברית"

ROUND_TRIP = [
    pytest.param(0, id="int-zero"),
    pytest.param(42, id="int"),
    pytest.param(-7, id="int-negative"),
    pytest.param(INT64_MIN, id="int64-min"),
    pytest.param(INT64_MAX, id="int64-max"),
    pytest.param(3.14, id="double"),
    pytest.param(0.0, id="double-zero"),
    pytest.param(-2.5e-300, id="double-tiny"),
    pytest.param(1.7976931348623157e308, id="double-max"),
    pytest.param(5e-324, id="double-subnormal"),
    pytest.param(float("inf"), id="inf"),
    pytest.param(float("-inf"), id="-inf"),
    pytest.param("", id="str-empty"),
    pytest.param("hello world", id="str"),
    pytest.param(UNICODE, id="str-unicode"),
    pytest.param("nul \x00 inside\nand newlines\ttabs", id="str-control"),
    pytest.param("x" * 100_000, id="str-100k"),
    pytest.param([], id="list-empty"),
    pytest.param([0], id="int-list-one"),
    pytest.param([2, 7, 11, 15], id="int-list"),
    pytest.param([INT64_MIN, -1, 0, 1, INT64_MAX], id="int-list-extremes"),
    pytest.param(list(range(10_000)), id="int-list-10k"),
    pytest.param(["foo", "bar"], id="str-list"),
    pytest.param(["", UNICODE, ""], id="str-list-unicode-empty"),
    pytest.param({}, id="map-empty"),
    pytest.param({"key": "value"}, id="map"),
    pytest.param({"": ""}, id="map-empty-key"),
    pytest.param({"z": "1", "a": "2", UNICODE: UNICODE}, id="map-unicode"),
    pytest.param(b"", id="bytes-empty"),
    pytest.param(bytes(range(256)), id="bytes-every-octet"),
    pytest.param(b"\xff\xfe not UTF-8" * 1000, id="bytes-not-utf8"),
]


def same(a, b) -> bool:
    """Equality that also checks types, NaN and the sign of zero."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return a == b


@pytest.fixture
def doc(lse: LseClient) -> int:
    return lse.create_problem("<p>fixture</p>", kind="fixture")


# ---- problems ----


def test_create_and_read_problem(lse: LseClient):
    doc_id = lse.create_problem("<h1>My Document</h1>", name="Example", category="tutorial", version="1.0")
    assert isinstance(doc_id, int) and doc_id >= 1
    assert lse.get_problem_html(doc_id) == "<h1>My Document</h1>"
    meta = lse.get_problem_meta(doc_id)
    assert meta == {"name": "Example", "category": "tutorial", "version": "1.0"}
    assert list(meta) == sorted(meta)  # key order
    assert doc_id in lse.list_problems()


def test_create_problem_without_columns_and_empty_html(lse: LseClient):
    doc_id = lse.create_problem("")
    assert lse.get_problem_html(doc_id) == ""
    assert lse.get_problem_meta(doc_id) == {}


def test_create_problem_unusual_column_names(lse: LseClient):
    # html is positional-only, so a column may be called "html" (or "self").
    doc_id = lse.create_problem("<p>blob</p>", html="column", self="me", **{"with space": UNICODE, "ü": ""})
    assert lse.get_problem_html(doc_id) == "<p>blob</p>"
    assert lse.get_problem_meta(doc_id) == {"html": "column", "self": "me", "with space": UNICODE, "ü": ""}


def test_unicode_html(lse: LseClient):
    doc_id = lse.create_problem(UNICODE)
    assert lse.get_problem_html(doc_id) == UNICODE
    lse.update_problem_html(doc_id, UNICODE * 3)
    assert lse.get_problem_html(doc_id) == UNICODE * 3


def test_ids_are_distinct_and_shared_by_problems_and_test_cases(lse: LseClient):
    a = lse.create_problem("a")
    tc = lse.add_test_case(a, 1)
    b = lse.create_problem("b")
    assert len({a, tc, b}) == 3
    assert a < tc < b


def test_update_problem_html(lse: LseClient, doc: int):
    lse.update_problem_html(doc, "<h1>Updated content</h1>")
    assert lse.get_problem_html(doc) == "<h1>Updated content</h1>"
    lse.update_problem_html(doc, "")
    assert lse.get_problem_html(doc) == ""
    assert lse.get_problem_meta(doc) == {"kind": "fixture"}  # columns stay


def test_update_problem_column(lse: LseClient, doc: int):
    lse.update_problem_column(doc, "kind", "changed")
    lse.update_problem_column(doc, "new", "")
    lse.update_problem_column(doc, "ключ", UNICODE)
    assert lse.get_problem_meta(doc) == {"kind": "changed", "new": "", "ключ": UNICODE}
    assert lse.get_problem_html(doc) == "<p>fixture</p>"  # blob stays


def test_delete_problem_deletes_everything(lse: LseClient, doc: int):
    tc = lse.add_test_case(doc, 1)
    lse.set_expected_output(doc, tc, 2)
    lse.delete_problem(doc)
    assert doc not in lse.list_problems()
    for call in (
        lambda: lse.get_problem_html(doc),
        lambda: lse.get_problem_meta(doc),
        lambda: lse.get_all_test_cases(doc),
        lambda: lse.get_test_case(doc, tc)["value"],
        lambda: lse.get_expected_output(doc, tc),
        lambda: lse.delete_problem(doc),
    ):
        with pytest.raises(NotFound):
            call()


def test_large_blob_over_grpc_default_4mib(lse: LseClient):
    """Reading values above 4 MiB needs the raised receive limit."""
    html = "<p>" + "x" * (5 * 1024 * 1024) + "</p>"
    doc_id = lse.create_problem(html)
    assert lse.get_problem_html(doc_id) == html
    big = "é" * (3 * 1024 * 1024)  # 6 MiB of UTF-8
    tc = lse.add_test_case(doc_id, big)
    assert lse.get_test_case(doc_id, tc)["value"] == big
    lse.delete_problem(doc_id)


# ---- listing ----


def test_list_problems_follows_pages(own_server):
    with LseClient(own_server.address) as lse:
        assert lse.list_problems() == []
        assert lse.list_problems_page() == ([], "")
        ids = [lse.create_problem(f"p{i}") for i in range(23)]
        for gone in ids[3:6]:
            lse.delete_problem(gone)
        live = [i for i in ids if i not in ids[3:6]]
        assert lse.list_problems() == live
        assert lse.list_problems(page_size=7) == live
        assert lse.list_problems(page_size=1) == live
        assert list(lse.iter_problems(page_size=4)) == live

        page, token = lse.list_problems_page(page_size=7)
        assert page == live[:7] and token
        page2, token2 = lse.list_problems_page(page_size=7, page_token=token)
        assert page2 == live[7:14] and token2
        pages = [page, page2]
        while token2:
            p, token2 = lse.list_problems_page(page_size=7, page_token=token2)
            pages.append(p)
        assert sum(pages, []) == live
        assert lse.list_problems_page(page_size=len(live)) == (live, "")

        it = lse.iter_problems(page_size=2)
        assert next(it) == live[0]  # lazy: one page at a time


# ---- test cases ----


def test_test_case_methods(lse: LseClient, doc: int):
    assert lse.get_all_test_cases(doc) == []
    t1 = lse.add_test_case(doc, [2, 7, 11, 15])
    t2 = lse.add_test_case(doc, "some string input")
    t3 = lse.add_test_case(doc, {"key": "value"})
    # A node read is a dict, like get_expected_output and the chain's items.
    assert lse.get_test_case(doc, t1) == {"tc_id": t1, "value": [2, 7, 11, 15]}
    assert lse.get_test_case(doc, t2)["value"] == "some string input"
    assert lse.get_test_case(doc, t3)["value"] == {"key": "value"}
    assert lse.get_all_test_cases(doc) == [
        {"tc_id": t1, "value": [2, 7, 11, 15]},
        {"tc_id": t2, "value": "some string input"},
        {"tc_id": t3, "value": {"key": "value"}},
    ]
    # Update keeps position; the value may change type.
    lse.update_test_case(doc, t1, 3.5)
    assert [n["tc_id"] for n in lse.get_all_test_cases(doc)] == [t1, t2, t3]
    assert lse.get_test_case(doc, t1)["value"] == 3.5
    # Delete keeps the order of the rest.
    lse.delete_test_case(doc, t2)
    assert lse.get_all_test_cases(doc) == [{"tc_id": t1, "value": 3.5}, {"tc_id": t3, "value": {"key": "value"}}]
    t4 = lse.add_test_case(doc, 4)
    assert [n["tc_id"] for n in lse.get_all_test_cases(doc)] == [t1, t3, t4]
    with pytest.raises(NotFound):
        lse.get_test_case(doc, t2)["value"]


def test_delete_test_case_deletes_its_output(lse: LseClient, doc: int):
    tc = lse.add_test_case(doc, 1)
    lse.set_expected_output(doc, tc, 2)
    lse.delete_test_case(doc, tc)
    with pytest.raises(NotFound):
        lse.get_expected_output(doc, tc)


def test_many_test_cases_keep_order(lse: LseClient, doc: int):
    ids = [lse.add_test_case(doc, i) for i in range(200)]
    got = lse.get_all_test_cases(doc)
    assert [n["tc_id"] for n in got] == ids
    assert [n["value"] for n in got] == list(range(200))


# ---- expected outputs ----


def test_expected_output_methods(lse: LseClient, doc: int):
    t1 = lse.add_test_case(doc, [2, 7, 11, 15])
    t2 = lse.add_test_case(doc, "in")
    lse.set_expected_output(doc, t1, [0, 1])
    lse.set_expected_output(doc, t2, "output string")
    assert lse.get_expected_output(doc, t1) == {"tc_id": t1, "value": [0, 1]}
    assert lse.get_expected_output(doc, t2)["value"] == "output string"
    lse.update_expected_output(doc, t1, [1, 2])
    assert lse.get_expected_output(doc, t1)["value"] == [1, 2]
    lse.set_expected_output(doc, t1, {"replaced": "yes"})  # set replaces
    assert lse.get_expected_output(doc, t1)["value"] == {"replaced": "yes"}
    # Updating the input keeps the output.
    lse.update_test_case(doc, t1, [3, 2, 4])
    assert lse.get_expected_output(doc, t1)["value"] == {"replaced": "yes"}
    lse.delete_expected_output(doc, t2)
    with pytest.raises(NotFound):
        lse.get_expected_output(doc, t2)
    assert lse.get_test_case(doc, t2)["value"] == "in"  # the input stays
    lse.set_expected_output(doc, t2, "again")
    assert lse.get_expected_output(doc, t2)["value"] == "again"


# ---- every value type, both tiers, every write path ----


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_value_round_trip(lse: LseClient, doc: int, value):
    tc = lse.add_test_case(doc, value)
    assert same(lse.get_test_case(doc, tc)["value"], value)
    (node,) = lse.get_all_test_cases(doc)
    assert node["tc_id"] == tc and same(node["value"], value)
    lse.set_expected_output(doc, tc, value)
    assert same(lse.get_expected_output(doc, tc)["value"], value)

    other = lse.add_test_case(doc, "placeholder")
    lse.update_test_case(doc, other, value)
    assert same(lse.get_test_case(doc, other)["value"], value)
    lse.set_expected_output(doc, other, "placeholder")
    lse.update_expected_output(doc, other, value)
    assert same(lse.get_expected_output(doc, other)["value"], value)


@pytest.mark.parametrize("value", [float("nan"), -0.0])
def test_special_doubles(lse: LseClient, doc: int, value):
    tc = lse.add_test_case(doc, value)
    assert same(lse.get_test_case(doc, tc)["value"], value)
    lse.set_expected_output(doc, tc, value)
    assert same(lse.get_expected_output(doc, tc)["value"], value)


def test_tuples_read_back_as_lists(lse: LseClient, doc: int):
    a = lse.add_test_case(doc, (1, 2, 3))
    b = lse.add_test_case(doc, ("x", "y"))
    assert lse.get_test_case(doc, a)["value"] == [1, 2, 3]
    assert lse.get_test_case(doc, b)["value"] == ["x", "y"]


def test_empty_list_decision(lse: LseClient, doc: int):
    """[] is stored as an empty int list; an empty string list (written by
    another client) also reads back as []."""
    tc = lse.add_test_case(doc, [])
    raw = lse._stub.GetTestCase(lse_pb2.TestCaseRef(problem_id=doc, test_case_id=tc))
    assert raw.test_case.value.WhichOneof("kind") == "int_list"
    assert lse.get_test_case(doc, tc)["value"] == []

    value = lse_pb2.Value()
    value.string_list.SetInParent()
    other = lse._stub.AddTestCase(lse_pb2.AddTestCaseRequest(problem_id=doc, value=value)).test_case_id
    raw = lse._stub.GetTestCase(lse_pb2.TestCaseRef(problem_id=doc, test_case_id=other))
    assert raw.test_case.value.WhichOneof("kind") == "string_list"
    assert lse.get_test_case(doc, other)["value"] == []


def test_map_keys_come_back_sorted(lse: LseClient, doc: int):
    tc = lse.add_test_case(doc, {"b": "2", "c": "3", "a": "1"})
    assert list(lse.get_test_case(doc, tc)["value"]) == ["a", "b", "c"]


# ---- administration ----

STATS_FIELDS = {
    "problems_in_index", "active_segment_bytes", "segment_count", "test_cases", "expected_outputs",
    "total_bytes", "live_bytes", "garbage_bytes", "records", "fsyncs", "sync_policy", "write_error",
    "compactions", "last_compaction_bytes_in", "last_compaction_bytes_out",
}


def test_stats_flush_compact(own_server):
    with LseClient(own_server.address) as lse:
        stats = lse.get_stats()
        assert set(stats) == STATS_FIELDS
        assert stats["problems_in_index"] == 0
        assert stats["sync_policy"] == "always"
        assert stats["write_error"] == ""
        assert stats["segment_count"] >= 1
        assert all(isinstance(stats[k], int) for k in STATS_FIELDS - {"sync_policy", "write_error"})

        doc = lse.create_problem("<p>v1</p>", a="1")
        tcs = [lse.add_test_case(doc, i) for i in range(5)]
        lse.set_expected_output(doc, tcs[0], "out")
        for i in range(10):
            lse.update_problem_html(doc, f"<p>v{i + 2}</p>")
        lse.delete_test_case(doc, tcs[4])
        gone = lse.create_problem("gone")
        lse.delete_problem(gone)

        stats = lse.get_stats()
        assert stats["problems_in_index"] == 1
        assert stats["test_cases"] == 4
        assert stats["expected_outputs"] == 1
        assert stats["active_segment_bytes"] > 0
        assert stats["garbage_bytes"] > 0
        assert stats["total_bytes"] == stats["live_bytes"] + stats["garbage_bytes"]
        fsyncs = stats["fsyncs"]

        assert lse.flush() is None
        assert lse.get_stats()["fsyncs"] >= fsyncs

        report = lse.compact_now()
        assert set(report) == {"segments_in", "bytes_in", "bytes_out", "records_dropped"}
        assert all(isinstance(v, int) for v in report.values())
        assert report["records_dropped"] > 0
        stats = lse.get_stats()
        assert stats["compactions"] == 1
        assert stats["garbage_bytes"] < stats["total_bytes"]
        assert stats["last_compaction_bytes_in"] == report["bytes_in"]
        assert stats["last_compaction_bytes_out"] == report["bytes_out"]
        # Everything still reads back after compaction.
        assert lse.get_problem_html(doc) == "<p>v11</p>"
        assert lse.get_problem_meta(doc) == {"a": "1"}
        assert [n["value"] for n in lse.get_all_test_cases(doc)] == [0, 1, 2, 3]
        assert lse.get_expected_output(doc, tcs[0])["value"] == "out"
        assert lse.compact_now(timeout=60) is not None


# ---- client lifecycle and threads ----


def test_context_manager(address: str):
    with LseClient(address) as lse:
        assert isinstance(lse, LseClient)
        doc = lse.create_problem("ctx")
        assert lse.get_problem_html(doc) == "ctx"
        assert not lse.closed
    assert lse.closed
    with pytest.raises(LseError):
        lse.get_problem_html(doc)


def test_context_manager_closes_on_error(address: str):
    with pytest.raises(RuntimeError):
        with LseClient(address) as lse:
            raise RuntimeError("boom")
    assert lse.closed


def test_wait_until_ready(address: str):
    with LseClient(address, timeout=5) as lse:
        lse.wait_until_ready(timeout=10)
        assert lse.get_stats()["sync_policy"]


def test_one_client_many_threads(lse: LseClient):
    threads_n, per_thread = 8, 25
    results: dict = {}
    errors: list = []
    start = threading.Barrier(threads_n)

    def worker(n: int) -> None:
        try:
            start.wait()
            doc = lse.create_problem(f"<p>thread {n}</p>", thread=str(n))
            tcs = []
            for i in range(per_thread):
                tc = lse.add_test_case(doc, [n, i])
                lse.set_expected_output(doc, tc, f"{n}:{i}")
                tcs.append(tc)
            results[n] = (doc, tcs)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors, errors
    assert len(results) == threads_n

    all_ids = [results[n][0] for n in results] + [tc for n in results for tc in results[n][1]]
    assert len(set(all_ids)) == len(all_ids)  # ids never collide
    for n, (doc, tcs) in results.items():
        assert lse.get_problem_meta(doc) == {"thread": str(n)}
        nodes = lse.get_all_test_cases(doc)
        assert [x["tc_id"] for x in nodes] == tcs  # per-problem order kept
        assert [x["value"] for x in nodes] == [[n, i] for i in range(per_thread)]
        assert [lse.get_expected_output(doc, tc)["value"] for tc in tcs] == [f"{n}:{i}" for i in range(per_thread)]


def test_many_threads_reading(lse: LseClient, doc: int):
    tc = lse.add_test_case(doc, {"shared": "value"})
    errors: list = []

    def reader() -> None:
        try:
            for _ in range(50):
                assert lse.get_test_case(doc, tc)["value"] == {"shared": "value"}
                assert lse.get_problem_html(doc) == "<p>fixture</p>"
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
