"""The quickstart of Stratum's spec, as written there, against a live server.

Usage: python quickstart.py [HOST:PORT]
The address comes from the first argument, else from LSE_ADDRESS, else
localhost:50051 (the spec's). Run it from client/python, or with
client/python on PYTHONPATH, or after `pip install client/python`.

Below the marked line is the spec's example verbatim; only the address given
to LseClient is a variable, so the same code runs against any port.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
ADDRESS = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LSE_ADDRESS", "localhost:50051")

# ---- the spec's example --------------------------------------------------
from lse_client import LseClient
lse = LseClient(ADDRESS)
# ── Create a document ─────────────────────────────────────────────────────────
doc_id = lse.create_problem(
"<h1>My Document</h1><p>Any HTML or text content.</p>",
name="Example",
category="tutorial",
version="1.0"
)
# ── Read it back ──────────────────────────────────────────────────────────────
content = lse.get_problem_html(doc_id)
meta = lse.get_problem_meta(doc_id) # {"name": "Example", "category": "tutorial", …}
# ── Update content (old version becomes garbage — GC handles it) ──────────────
lse.update_problem_html(doc_id, "<h1>Updated content</h1>")
lse.update_problem_column(doc_id, "version", "1.1")
# ── Add input nodes (any data type) ──────────────────────────────────────────
node1 = lse.add_test_case(doc_id, [2, 7, 11, 15]) # list of ints
node2 = lse.add_test_case(doc_id, "some string input") # string
node3 = lse.add_test_case(doc_id, {"key": "value"}) # map
# ── Attach output nodes ───────────────────────────────────────────────────────
lse.set_expected_output(doc_id, node1, [0, 1]) # list answer
lse.set_expected_output(doc_id, node2, "output string") # string answer
# ── Read all input nodes for a document ──────────────────────────────────────
nodes = lse.get_all_test_cases(doc_id)
for n in nodes:
    print(n["tc_id"], n["value"])
# ── Read a specific output node ───────────────────────────────────────────────
output = lse.get_expected_output(doc_id, node1)
print(output["value"]) # [0, 1]
# ── Update a node value ───────────────────────────────────────────────────────
lse.update_test_case(doc_id, node1, [3, 2, 4])
lse.update_expected_output(doc_id, node1, [1, 2])
# ── Delete ────────────────────────────────────────────────────────────────────
lse.delete_expected_output(doc_id, node2)
lse.delete_test_case(doc_id, node3)
lse.delete_problem(doc_id)
# ── Admin ─────────────────────────────────────────────────────────────────────
stats = lse.get_stats()
# {"problems_in_index": 12, "active_segment_bytes": 4096, "segment_count": 3}
lse.flush() # force active segment to disk
lse.compact_now() # trigger immediate compaction (normally runs automatically)
