'use strict';
// Whole problems, versions and batches against the real lse_server (started
// by server.js like in lse.test.js): ImportProblem / ImportProblemStream,
// GetProblem / GetProblemStream, ReplaceTestCases, expected_version and the
// ABORTED trailer, MoveTestCase, Batch.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');

const {
  grpc, valueOf, newTestCase, importProblem, importProblemStream, getProblem, getProblemStream,
  replaceTestCases, currentVersionOf,
} = require('../example.js');
const { useServer, expectStatus } = require('./server.js');

let lse;
const ctx = useServer({ before, after }, (c) => { lse = c.lse; });

const DECIMAL = /^[1-9]\d*$/;

/** A Value (or null) as { kind, value } with the plain JS value, for deepEqual. */
function plain(v) {
  return v ? { kind: v.kind, value: valueOf(v) } : null;
}

/** What a sent Value reads back as: its single member's name and plain value. */
function sent(v) {
  if (v === undefined) return null;
  const [kind] = Object.keys(v);
  return plain({ ...v, kind });
}

/** The test cases of a getProblem result as [{ id, input, output }] of plain values. */
function chain(problem) {
  return problem.testCases.map((tc) => ({ id: tc.id, input: plain(tc.input), output: plain(tc.expectedOutput) }));
}

/** The chain a list of newTestCase()s should read back as, given their ids. */
function expectedChain(ids, testCases) {
  assert.equal(ids.length, testCases.length);
  return testCases.map((tc, i) => ({ id: ids[i], input: sent(tc.input), output: sent(tc.expected_output) }));
}

/** A chain with long strings replaced by their length and hash, so a failure prints readably. */
function brief(c) {
  return JSON.parse(JSON.stringify(c, (_, v) => (typeof v === 'string' && v.length > 64
    ? `<${v.length} chars, sha256 ${crypto.createHash('sha256').update(v).digest('hex').slice(0, 16)}>` : v)));
}

function assertAscending(ids) {
  for (let i = 1; i < ids.length; i++) assert.ok(BigInt(ids[i]) > BigInt(ids[i - 1]), `${ids[i - 1]} < ${ids[i]}`);
}

/** Counts the server holds, to see that a failed request changed nothing. */
async function counts() {
  const stats = await lse.async.GetStats({});
  const { problem_ids: ids } = await lse.async.ListProblems({ page_size: 10000 });
  return {
    problems: stats.problems_in_index, test_cases: stats.test_cases,
    expected_outputs: stats.expected_outputs, ids,
  };
}

const TEST_CASES = [
  newTestCase({ int_list: { values: ['2', '7', '11', '15'] } }, { int_list: { values: ['0', '1'] } }),
  newTestCase({ string_value: 'no output here' }),
  newTestCase({ int_value: '-9223372036854775808' }, { int_value: '9223372036854775807' }),
  newTestCase({ string_map: { entries: { b: '2', a: '1', 'ключ': 'значение' } } }, { double_value: -0.25 }),
  newTestCase({ int_list: { values: [] } }),
  newTestCase({ string_list: { values: ['foo', '', 'bar'] } }, { string_list: { values: [] } }),
  newTestCase({ double_value: 3.5 }, { string_value: '' }),
];

test('ImportProblem then one GetProblem returns it all: order, outputs, absent outputs, version', async () => {
  const before = await counts();
  const html = '<h1>Import</h1><p>ünïcødé 🎉</p>';
  const columns = { name: 'import', category: 'tutorial', empty: '' };
  const imported = await importProblem(lse, { html, columns, testCases: TEST_CASES });
  assert.match(imported.problemId, DECIMAL, 'ids are decimal strings (longs: String)');
  assert.match(imported.version, DECIMAL, 'versions are decimal strings (longs: String)');
  assert.equal(imported.testCaseIds.length, TEST_CASES.length);
  for (const id of imported.testCaseIds) assert.match(id, DECIMAL);
  assertAscending([imported.problemId, ...imported.testCaseIds]);

  // The raw response of ONE GetProblem call.
  const raw = await lse.async.GetProblem({ problem_id: imported.problemId });
  assert.equal(raw.problem_id, imported.problemId);
  assert.equal(raw.version, imported.version, 'GetProblem reads the version the import made');
  assert.equal(typeof raw.version, 'string');
  assert.equal(raw.html, html);
  assert.deepEqual({ ...raw.columns }, columns);
  assert.deepEqual(raw.test_cases.map((tc) => tc.test_case_id), imported.testCaseIds, 'chain order');
  assert.equal(raw.test_cases[1].expected_output, null, 'an absent output reads as null');
  assert.equal(raw.test_cases[4].expected_output, null);
  assert.equal(raw.test_cases[0].expected_output.kind, 'int_list');

  const problem = await getProblem(lse, imported.problemId);
  assert.deepEqual(chain(problem), expectedChain(imported.testCaseIds, TEST_CASES));
  assert.equal(problem.version, imported.version);

  // The one-node RPCs agree: same chain, outputs only where given.
  const { test_cases: all, version } = await lse.async.GetAllTestCases({ problem_id: imported.problemId });
  assert.equal(version, imported.version);
  assert.deepEqual(all.map((tc) => tc.test_case_id), imported.testCaseIds);
  await expectStatus(lse.async.GetExpectedOutput({ problem_id: imported.problemId, test_case_id: imported.testCaseIds[1] }),
    grpc.status.NOT_FOUND);
  const out = await lse.async.GetExpectedOutput({ problem_id: imported.problemId, test_case_id: imported.testCaseIds[2] });
  assert.deepEqual(plain(out.value), { kind: 'int_value', value: '9223372036854775807' });

  // A read at the current version is answered; at another it is ABORTED.
  assert.deepEqual(await getProblem(lse, imported.problemId, imported.version), problem);
  const stale = (BigInt(imported.version) - 1n).toString();
  const err = await expectStatus(getProblem(lse, imported.problemId, stale), grpc.status.ABORTED);
  assert.equal(currentVersionOf(err), imported.version);

  const after = await counts();
  assert.equal(BigInt(after.problems) - BigInt(before.problems), 1n);
  assert.equal(BigInt(after.test_cases) - BigInt(before.test_cases), 7n);
  assert.equal(BigInt(after.expected_outputs) - BigInt(before.expected_outputs), 5n);

  // A bad import (a test case with no input) is INVALID_ARGUMENT and leaves nothing.
  await expectStatus(importProblem(lse, { html: 'bad', testCases: [TEST_CASES[0], { expected_output: { int_value: 1 } }] }),
    grpc.status.INVALID_ARGUMENT);
  assert.deepEqual(await counts(), after);
  await expectStatus(getProblem(lse, '18446744073709551615'), grpc.status.NOT_FOUND);
});

test('GetProblemStream returns the same problem as GetProblem, over several messages', async () => {
  // 12 test cases of ~300 KB: more than 1 MiB, so the stream needs several messages.
  const big = (i) => `${i}:`.padEnd(300 * 1024, String.fromCharCode(97 + i));
  const testCases = [];
  for (let i = 0; i < 12; i++) {
    testCases.push(i % 3 === 1 ? newTestCase({ string_value: big(i) }) : newTestCase({ string_value: big(i) }, { int_value: String(i) }));
  }
  const imported = await importProblem(lse, { html: '<p>big</p>', columns: { size: 'big' }, testCases });

  const messages = await new Promise((resolve, reject) => {
    const got = [];
    const call = lse.GetProblemStream({ problem_id: imported.problemId });
    call.on('data', (m) => got.push(m));
    call.on('error', reject);
    call.on('end', () => resolve(got));
  });
  assert.ok(messages.length >= 3, `${messages.length} messages`);
  assert.equal(messages[0].html, '<p>big</p>', 'the first message has the html');
  assert.deepEqual({ ...messages[0].columns }, { size: 'big' });
  for (const m of messages) {
    assert.equal(m.problem_id, imported.problemId);
    assert.equal(m.version, imported.version, 'every message is from the same version');
  }
  for (const m of messages.slice(1)) assert.equal(m.html, '', 'only the first message has the html');
  assert.deepEqual(messages.flatMap((m) => m.test_cases.map((tc) => tc.test_case_id)), imported.testCaseIds);

  const streamed = await getProblemStream(lse, imported.problemId);
  const whole = await getProblem(lse, imported.problemId);
  assert.deepEqual(brief(chain(streamed)), brief(chain(whole)));
  assert.deepEqual(streamed, whole);
  assert.deepEqual(brief(chain(streamed)), brief(expectedChain(imported.testCaseIds, testCases)));

  // A small problem comes in one message, equal to GetProblem too.
  const small = await importProblem(lse, { html: 's', testCases: TEST_CASES });
  assert.deepEqual(await getProblemStream(lse, small.problemId), await getProblem(lse, small.problemId));

  // Errors arrive on the stream.
  await expectStatus(getProblemStream(lse, '18446744073709551615'), grpc.status.NOT_FOUND);
  const err = await expectStatus(getProblemStream(lse, small.problemId, '1'), grpc.status.ABORTED);
  assert.equal(currentVersionOf(err), small.version);
});

test('ImportProblemStream joins the messages; a refused stream leaves nothing', async () => {
  const before = await counts();
  const imported = await importProblemStream(lse, [
    { html: '<h1>Str', columns: { a: '1' }, test_cases: TEST_CASES.slice(0, 3) },
    { html: 'eam</h1>', columns: { b: '2' }, test_cases: [] },
    { test_cases: TEST_CASES.slice(3) },
  ]);
  const problem = await getProblem(lse, imported.problemId);
  assert.equal(problem.html, '<h1>Stream</h1>');
  assert.deepEqual(problem.columns, { a: '1', b: '2' });
  assert.equal(problem.version, imported.version);
  assert.deepEqual(chain(problem), expectedChain(imported.testCaseIds, TEST_CASES));
  const afterImport = await counts();
  assert.equal(BigInt(afterImport.problems) - BigInt(before.problems), 1n);

  // A column named twice is INVALID_ARGUMENT, and nothing is created.
  await expectStatus(importProblemStream(lse, [{ columns: { a: '1' } }, { columns: { a: '2' } }]), grpc.status.INVALID_ARGUMENT);
  // A cancelled upload writes nothing: Node's http2 ends the stream cleanly
  // before it resets it, but no message was marked last.
  const cancelled = await new Promise((resolve) => {
    const call = lse.ImportProblemStream((err) => resolve(err));
    call.write({ html: 'never', test_cases: TEST_CASES });
    setTimeout(() => call.cancel(), 50);
  });
  assert.equal(cancelled && cancelled.code, grpc.status.CANCELLED, cancelled && cancelled.details);
  // A stream ended without a message marked last writes nothing either.
  const unfinished = await new Promise((resolve) => {
    const call = lse.ImportProblemStream((err) => resolve(err));
    call.write({ html: 'never', test_cases: TEST_CASES });
    call.end();
  });
  assert.equal(unfinished && unfinished.code, grpc.status.CANCELLED, unfinished && unfinished.details);
  assert.match(unfinished.details, /marked last/);
  // A message the server refuses fails the call, and writes nothing.
  const refused = await new Promise((resolve) => {
    const call = lse.ImportProblemStream((err) => resolve(err));
    call.write({ html: 'never', test_cases: TEST_CASES });
    setTimeout(() => { call.write({ columns: { '': 'abort' }, last: true }); call.end(); }, 50);
  });
  assert.equal(refused && refused.code, grpc.status.INVALID_ARGUMENT, refused && refused.details);
  // Let the server finish whatever the cancelled call left, then count.
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepEqual(await counts(), afterImport);
});

test('ReplaceTestCases replaces the ids and raises the version; html and columns stay', async () => {
  const imported = await importProblem(lse, { html: 'h', columns: { c: 'v' }, testCases: TEST_CASES.slice(0, 3) });
  const before = await counts();
  const next = [
    newTestCase({ string_value: 'new one' }, { string_value: 'eno wen' }),
    newTestCase({ int_value: '9007199254740993' }),
  ];
  const replaced = await replaceTestCases(lse, imported.problemId, next, imported.version);
  assert.match(replaced.version, DECIMAL);
  assert.ok(BigInt(replaced.version) > BigInt(imported.version), `${replaced.version} > ${imported.version}`);
  assert.equal(replaced.testCaseIds.length, 2);
  for (const id of replaced.testCaseIds) {
    assert.ok(BigInt(id) > BigInt(imported.testCaseIds[2]), 'new ids, the old ones are never reused');
  }

  const problem = await getProblem(lse, imported.problemId);
  assert.equal(problem.version, replaced.version);
  assert.equal(problem.html, 'h');
  assert.deepEqual(problem.columns, { c: 'v' });
  assert.deepEqual(chain(problem), expectedChain(replaced.testCaseIds, next));
  for (const old of imported.testCaseIds) {
    await expectStatus(lse.async.GetTestCase({ problem_id: imported.problemId, test_case_id: old }), grpc.status.NOT_FOUND);
  }
  const after = await counts();
  assert.equal(BigInt(after.test_cases) - BigInt(before.test_cases), -1n, '3 test cases became 2');
  assert.equal(BigInt(after.expected_outputs) - BigInt(before.expected_outputs), -1n, '2 outputs became 1');

  // Without expected_version it is unconditional; an empty chain empties it.
  const emptied = await replaceTestCases(lse, imported.problemId, []);
  assert.ok(BigInt(emptied.version) > BigInt(replaced.version));
  assert.deepEqual(emptied.testCaseIds, []);
  const empty = await getProblem(lse, imported.problemId);
  assert.deepEqual(empty.testCases, []);
  assert.equal(empty.version, emptied.version);
  await expectStatus(replaceTestCases(lse, '18446744073709551615', next), grpc.status.NOT_FOUND);
});

test('a stale expected_version is ABORTED with lse-current-version, and changes nothing', async () => {
  const imported = await importProblem(lse, { html: 'v', testCases: TEST_CASES.slice(0, 2) });
  const read = await getProblem(lse, imported.problemId);
  // Someone else changes the problem after we read it.
  const { version: current } = await lse.async.UpdateProblemColumn({ problem_id: imported.problemId, name: 'by', value: 'other' });
  assert.ok(BigInt(current) > BigInt(read.version));
  const seen = await getProblem(lse, imported.problemId);
  const before = await counts();

  const err = await expectStatus(replaceTestCases(lse, imported.problemId, TEST_CASES, read.version), grpc.status.ABORTED);
  assert.deepEqual(err.metadata.get('lse-current-version'), [current], 'the trailer names the current version');
  assert.deepEqual(err.metadata.get('lse-problem-id'), [imported.problemId]);
  assert.equal(currentVersionOf(err), current);
  assert.ok(err.details.includes(current), err.details);
  assert.deepEqual(await getProblem(lse, imported.problemId), seen, 'the refused replace changed nothing');
  assert.deepEqual(await counts(), before);

  // Other writes are guarded the same way.
  await expectStatus(lse.async.AddTestCase({ problem_id: imported.problemId, value: { int_value: 1 }, expected_version: read.version }),
    grpc.status.ABORTED);
  await expectStatus(lse.async.UpdateProblemHtml({ problem_id: imported.problemId, html: 'x', expected_version: read.version }),
    grpc.status.ABORTED);
  await expectStatus(lse.async.DeleteProblem({ problem_id: imported.problemId, expected_version: read.version }),
    grpc.status.ABORTED);
  assert.deepEqual(await getProblem(lse, imported.problemId), seen);
  assert.equal(currentVersionOf(new Error('not a status')), undefined);

  // Retry at the version from the trailer: accepted.
  const retried = await replaceTestCases(lse, imported.problemId, TEST_CASES.slice(2, 4), currentVersionOf(err));
  assert.ok(BigInt(retried.version) > BigInt(current));
  assert.deepEqual(chain(await getProblem(lse, imported.problemId)), expectedChain(retried.testCaseIds, TEST_CASES.slice(2, 4)));
});

test('MoveTestCase changes the order GetProblem returns; outputs move along', async () => {
  const testCases = ['a', 'b', 'c', 'd'].map((s) => newTestCase({ string_value: s }, { string_value: s.toUpperCase() }));
  const imported = await importProblem(lse, { html: 'm', testCases });
  const [a, b, c, d] = imported.testCaseIds;
  const order = async () => (await getProblem(lse, imported.problemId)).testCases.map((tc) => valueOf(tc.input));
  assert.deepEqual(await order(), ['a', 'b', 'c', 'd']);

  let version = imported.version;
  const move = async (id, position) => {
    const res = await lse.async.MoveTestCase({ problem_id: imported.problemId, test_case_id: id, position, expected_version: version });
    assert.ok(BigInt(res.version) > BigInt(version), 'a move raises the version');
    version = res.version;
  };
  await move(d, { start: true });
  assert.deepEqual(await order(), ['d', 'a', 'b', 'c']);
  await move(a, { after: c });
  assert.deepEqual(await order(), ['d', 'b', 'c', 'a']);
  await move(c, { before: d });
  assert.deepEqual(await order(), ['c', 'd', 'b', 'a']);
  await move(c, { end: true });
  assert.deepEqual(await order(), ['d', 'b', 'a', 'c']);

  const problem = await getProblem(lse, imported.problemId);
  assert.equal(problem.version, version);
  assert.deepEqual(problem.testCases.map((tc) => tc.id), [d, b, a, c]);
  for (const tc of problem.testCases) assert.equal(valueOf(tc.expectedOutput), valueOf(tc.input).toUpperCase());
  const { test_cases: all } = await lse.async.GetAllTestCases({ problem_id: imported.problemId });
  assert.deepEqual(all.map((tc) => tc.test_case_id), [d, b, a, c]);

  // A stale move, or a move next to a test case of another problem, changes nothing.
  await expectStatus(lse.async.MoveTestCase({ problem_id: imported.problemId, test_case_id: a, position: { start: true },
    expected_version: imported.version }), grpc.status.ABORTED);
  const other = await importProblem(lse, { html: 'o', testCases: TEST_CASES.slice(0, 1) });
  await expectStatus(lse.async.MoveTestCase({ problem_id: imported.problemId, test_case_id: a,
    position: { before: other.testCaseIds[0] } }), grpc.status.NOT_FOUND);
  assert.deepEqual(await getProblem(lse, imported.problemId), problem);
});

test('Batch with problem_from_op / test_case_from_op creates a problem, a test case and its output at once', async () => {
  const before = await counts();
  const res = await lse.async.Batch({
    ops: [
      { create_problem: { html: '<p>batch</p>', columns: { made: 'by batch' } } },
      // problem_id is 0 (left out): the problem is the one op 0 created.
      { add_test_case: { value: { int_list: { values: [1, 2] } } }, problem_from_op: 0 },
      { add_test_case: { value: { string_value: 'second, no output' } }, problem_from_op: 0 },
      { set_expected_output: { value: { int_value: 3 } }, problem_from_op: 0, test_case_from_op: 1 },
      { update_problem_column: { name: 'cases', value: '2' }, problem_from_op: 0 },
    ],
  });
  assert.equal(res.created_ids.length, 5);
  const [pid, tc1, tc2, none, none2] = res.created_ids;
  for (const id of [pid, tc1, tc2]) assert.match(id, DECIMAL);
  assert.equal(none, '0', 'an op that creates nothing reports 0');
  assert.equal(none2, '0');
  assertAscending([pid, tc1, tc2]);
  assert.equal(res.versions.length, 1);
  assert.equal(res.versions[0].problem_id, pid);

  const problem = await getProblem(lse, pid);
  assert.equal(problem.version, res.versions[0].version);
  assert.equal(problem.html, '<p>batch</p>');
  assert.deepEqual(problem.columns, { made: 'by batch', cases: '2' });
  assert.deepEqual(chain(problem), [
    { id: tc1, input: { kind: 'int_list', value: ['1', '2'] }, output: { kind: 'int_value', value: '3' } },
    { id: tc2, input: { kind: 'string_value', value: 'second, no output' }, output: null },
  ]);
  const after = await counts();
  assert.equal(BigInt(after.problems) - BigInt(before.problems), 1n);
  assert.equal(BigInt(after.test_cases) - BigInt(before.test_cases), 2n);
  assert.equal(BigInt(after.expected_outputs) - BigInt(before.expected_outputs), 1n);

  // Several problems in one batch, guarded by expected_versions.
  const res2 = await lse.async.Batch({
    ops: [
      { update_problem_html: { problem_id: pid, html: '<p>batch 2</p>' } },
      { create_problem: { html: 'second' } },
      { move_test_case: { problem_id: pid, test_case_id: tc2, position: { start: true } } },
    ],
    expected_versions: [{ problem_id: pid, version: problem.version }],
  });
  const pid2 = res2.created_ids[1];
  assert.deepEqual(res2.versions.map((v) => v.problem_id), [pid, pid2], 'ascending id order');
  const moved = await getProblem(lse, pid);
  assert.equal(moved.html, '<p>batch 2</p>');
  assert.deepEqual(moved.testCases.map((tc) => tc.id), [tc2, tc1]);
  assert.equal(moved.version, res2.versions[0].version);
  assert.ok(BigInt(moved.version) > BigInt(problem.version));
});

test('a failing batch changes nothing', async () => {
  const imported = await importProblem(lse, { html: 'keep', columns: { k: 'v' }, testCases: TEST_CASES.slice(0, 2) });
  const [first, second] = imported.testCaseIds;
  const seen = await getProblem(lse, imported.problemId);
  const before = await counts();
  const unchanged = async () => {
    assert.deepEqual(await getProblem(lse, imported.problemId), seen);
    assert.deepEqual(await counts(), before);
  };

  // The last op fails (NOT_FOUND): the earlier ones, a new problem with a test
  // case and changes to an existing problem, are not applied either.
  await expectStatus(lse.async.Batch({
    ops: [
      { create_problem: { html: 'never' } },
      { add_test_case: { value: { int_value: 1 } }, problem_from_op: 0 },
      { set_expected_output: { value: { int_value: 2 } }, problem_from_op: 0, test_case_from_op: 1 },
      { update_problem_html: { problem_id: imported.problemId, html: 'changed' } },
      { delete_test_case: { problem_id: imported.problemId, test_case_id: first } },
      { move_test_case: { problem_id: imported.problemId, test_case_id: second, position: { start: true } } },
      { delete_expected_output: { problem_id: imported.problemId, test_case_id: '18446744073709551615' } },
    ],
  }), grpc.status.NOT_FOUND);
  await unchanged();

  // An op that is invalid (a value with no member) is INVALID_ARGUMENT.
  await expectStatus(lse.async.Batch({
    ops: [
      { update_problem_column: { problem_id: imported.problemId, name: 'k', value: 'changed' } },
      { add_test_case: { problem_id: imported.problemId, value: {} } },
    ],
  }), grpc.status.INVALID_ARGUMENT);
  await unchanged();

  // A stale precondition is ABORTED before any op runs, with the trailer.
  const stale = (BigInt(seen.version) - 1n).toString();
  const err = await expectStatus(lse.async.Batch({
    ops: [{ delete_problem: { problem_id: imported.problemId } }, { create_problem: { html: 'never' } }],
    expected_versions: [{ problem_id: imported.problemId, version: stale }],
  }), grpc.status.ABORTED);
  assert.equal(currentVersionOf(err), seen.version);
  await unchanged();

  // An op's own expected_version must be unset in a batch; a *_from_op that
  // names a later op or one that created nothing is refused too.
  await expectStatus(lse.async.Batch({
    ops: [{ update_problem_html: { problem_id: imported.problemId, html: 'x', expected_version: seen.version } }],
  }), grpc.status.INVALID_ARGUMENT);
  await expectStatus(lse.async.Batch({
    ops: [
      { add_test_case: { value: { int_value: 1 } }, problem_from_op: 1 },
      { create_problem: { html: 'never' } },
    ],
  }), grpc.status.INVALID_ARGUMENT);
  await unchanged();
});
