"""Data survives a graceful restart (SIGTERM, then start on the same dir)."""

from __future__ import annotations

import math

from lse_client import INT64_MAX, INT64_MIN, LseClient

VALUES = [
    42, INT64_MIN, INT64_MAX, 3.14, float("inf"), "", "日本語 🎉", [], [2, 7, 11, 15],
    ["foo", "bar"], {}, {"key": "value"},
]


def snapshot(lse: LseClient) -> dict:
    out = {}
    for doc in lse.list_problems():
        nodes = lse.get_all_test_cases(doc)
        outputs = {}
        for n in nodes:
            try:
                outputs[n["tc_id"]] = lse.get_expected_output(doc, n["tc_id"])["value"]
            except KeyError:  # NotFound is a KeyError
                pass
        out[doc] = (lse.get_problem_html(doc), lse.get_problem_meta(doc), nodes, outputs)
    return out


def test_data_survives_restart(own_server):
    with LseClient(own_server.address) as lse:
        keep = lse.create_problem("<h1>kept</h1>", name="Example", version="1.0")
        tcs = [lse.add_test_case(keep, v) for v in VALUES]
        for tc, v in zip(tcs, reversed(VALUES)):
            lse.set_expected_output(keep, tc, v)
        nan_tc = lse.add_test_case(keep, float("nan"))
        lse.update_problem_html(keep, "<h1>kept, updated</h1>")
        lse.update_problem_column(keep, "version", "1.1")
        lse.update_test_case(keep, tcs[0], [3, 2, 4])
        lse.update_expected_output(keep, tcs[0], [1, 2])
        lse.delete_expected_output(keep, tcs[1])
        lse.delete_test_case(keep, tcs[2])
        gone = lse.create_problem("<p>gone</p>")
        lse.add_test_case(gone, 1)
        lse.delete_problem(gone)
        second = lse.create_problem("second")
        before = snapshot(lse)
        stats = lse.get_stats()
        last_id = max([second, gone, nan_tc, *tcs])

    assert own_server.stop() == 0
    own_server.start()

    with LseClient(own_server.address) as lse:
        assert lse.list_problems() == [keep, second]
        after = snapshot(lse)
        nan_after = after[keep][2].pop()  # NaN != NaN: compare it apart
        before[keep][2].pop()
        assert nan_after["tc_id"] == nan_tc and math.isnan(nan_after["value"])
        assert after == before
        assert lse.get_problem_html(keep) == "<h1>kept, updated</h1>"
        assert lse.get_problem_meta(keep) == {"name": "Example", "version": "1.1"}
        assert lse.get_test_case(keep, tcs[0])["value"] == [3, 2, 4]
        assert lse.get_expected_output(keep, tcs[0])["value"] == [1, 2]
        new_stats = lse.get_stats()
        for key in ("problems_in_index", "test_cases", "expected_outputs", "live_bytes"):
            assert new_stats[key] == stats[key], key
        # Ids are never reused after a restart.
        assert lse.create_problem("new") > last_id

        # And once more after a compaction.
        lse.compact_now()
        again = snapshot(lse)

    assert own_server.stop() == 0
    own_server.start()
    with LseClient(own_server.address) as lse:
        final = snapshot(lse)
        for snap in (again, final):
            snap[keep][2].pop(-1)
        assert final == again
