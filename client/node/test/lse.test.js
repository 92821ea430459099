'use strict';
// Runs with `node --test` (from client/node). Starts the real lse_server
// (binary from $LSE_SERVER_BIN, else target/release or target/debug in the
// repo root; see server.js) on a free port over a temp dir, talks to it
// through ../../proto/lse.proto loaded at run time, and stops it with SIGTERM.
// The one-node-at-a-time RPCs and example.js; whole problems, versions and
// batches are in problem.test.js.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const path = require('node:path');
const util = require('node:util');

const { valueOf, grpc } = require('../example.js');
const { useServer, expectStatus } = require('./server.js');

let lse;
const ctx = useServer({ before, after }, (c) => { lse = c.lse; });

test('a problem with inputs and outputs reads back through the proto', async () => {
  const { problem_id: docId } = await lse.async.CreateProblem({
    html: '<h1>My Document</h1><p>Any HTML — ünïcødé 🎉</p>',
    columns: { name: 'Example', category: 'tutorial', version: '1.0' },
  });
  assert.equal(typeof docId, 'string', 'uint64 ids are decimal strings (longs: String)');
  assert.match(docId, /^[1-9]\d*$/);

  const html = await lse.async.GetProblemHtml({ problem_id: docId });
  assert.equal(html.html, '<h1>My Document</h1><p>Any HTML — ünïcødé 🎉</p>');
  const meta = await lse.async.GetProblemMeta({ problem_id: docId });
  assert.deepEqual({ ...meta.columns }, { name: 'Example', category: 'tutorial', version: '1.0' });
  await lse.async.UpdateProblemColumn({ problem_id: docId, name: 'version', value: '1.1' });
  assert.equal((await lse.async.GetProblemMeta({ problem_id: docId })).columns.version, '1.1');

  const inputs = [
    { int_list: { values: ['2', '7', '11', '15'] } },
    { string_value: 'some string input' },
    { string_map: { entries: { key: 'value', 'ключ': 'значение' } } },
    { int_value: '-9223372036854775808' },
    { double_value: 3.5 },
    { string_list: { values: ['foo', '', 'bar'] } },
    { int_list: { values: [] } },
  ];
  const outputs = [
    { int_list: { values: ['0', '1'] } },
    { string_value: 'output string' },
    { int_value: '9223372036854775807' },
    { double_value: -0.25 },
    { string_map: { entries: {} } },
    { string_value: '' },
    { string_list: { values: [] } },
  ];
  const ids = [];
  for (let i = 0; i < inputs.length; i++) {
    const { test_case_id: tcId } = await lse.async.AddTestCase({ problem_id: docId, value: inputs[i] });
    assert.equal(typeof tcId, 'string');
    await lse.async.SetExpectedOutput({ problem_id: docId, test_case_id: tcId, value: outputs[i] });
    ids.push(tcId);
  }
  // Ids grow; they are compared as BigInt since they are strings.
  for (let i = 1; i < ids.length; i++) assert.ok(BigInt(ids[i]) > BigInt(ids[i - 1]));

  const { test_cases: all } = await lse.async.GetAllTestCases({ problem_id: docId });
  assert.deepEqual(all.map((tc) => tc.test_case_id), ids, 'chain order');
  for (let i = 0; i < inputs.length; i++) {
    const [kind] = Object.keys(inputs[i]);
    assert.equal(all[i].value.kind, kind);
    assert.deepEqual(valueOf(all[i].value), valueOf({ ...inputs[i], kind }));

    const one = await lse.async.GetTestCase({ problem_id: docId, test_case_id: ids[i] });
    assert.equal(one.test_case.test_case_id, ids[i]);
    assert.deepEqual(valueOf(one.test_case.value), valueOf(all[i].value));

    const out = await lse.async.GetExpectedOutput({ problem_id: docId, test_case_id: ids[i] });
    const [outKind] = Object.keys(outputs[i]);
    assert.equal(out.test_case_id, ids[i]);
    assert.equal(out.value.kind, outKind);
    assert.deepEqual(valueOf(out.value), valueOf({ ...outputs[i], kind: outKind }));
  }

  // Update, then delete an output and an input.
  await lse.async.UpdateTestCase({ problem_id: docId, test_case_id: ids[0], value: { int_list: { values: [3, 2, 4] } } });
  await lse.async.UpdateExpectedOutput({ problem_id: docId, test_case_id: ids[0], value: { int_list: { values: [1, 2] } } });
  assert.deepEqual(valueOf((await lse.async.GetTestCase({ problem_id: docId, test_case_id: ids[0] })).test_case.value), ['3', '2', '4']);
  assert.deepEqual(valueOf((await lse.async.GetExpectedOutput({ problem_id: docId, test_case_id: ids[0] })).value), ['1', '2']);
  await lse.async.DeleteExpectedOutput({ problem_id: docId, test_case_id: ids[1] });
  await expectStatus(lse.async.GetExpectedOutput({ problem_id: docId, test_case_id: ids[1] }), grpc.status.NOT_FOUND);
  await lse.async.DeleteTestCase({ problem_id: docId, test_case_id: ids[2] });
  const left = (await lse.async.GetAllTestCases({ problem_id: docId })).test_cases.map((tc) => tc.test_case_id);
  assert.deepEqual(left, [ids[0], ids[1], ...ids.slice(3)]);

  const { problem_ids: listed } = await lse.async.ListProblems({});
  assert.ok(listed.includes(docId));
  const stats = await lse.async.GetStats({});
  assert.equal(stats.problems_in_index, String(listed.length));
  assert.equal(stats.sync_policy, 'always');
});

test('unknown and deleted ids are NOT_FOUND; bad requests INVALID_ARGUMENT', async () => {
  const max = '18446744073709551615';
  await expectStatus(lse.async.GetProblemHtml({ problem_id: max }), grpc.status.NOT_FOUND);
  await expectStatus(lse.async.GetAllTestCases({ problem_id: max }), grpc.status.NOT_FOUND);

  const { problem_id: docId } = await lse.async.CreateProblem({ html: 'gone soon' });
  const { test_case_id: tcId } = await lse.async.AddTestCase({ problem_id: docId, value: { int_value: 1 } });
  await expectStatus(lse.async.GetTestCase({ problem_id: docId, test_case_id: max }), grpc.status.NOT_FOUND);
  await expectStatus(lse.async.GetExpectedOutput({ problem_id: docId, test_case_id: tcId }), grpc.status.NOT_FOUND);
  await expectStatus(lse.async.UpdateExpectedOutput({ problem_id: docId, test_case_id: tcId, value: { int_value: 2 } }),
    grpc.status.NOT_FOUND);

  await lse.async.DeleteProblem({ problem_id: docId });
  await expectStatus(lse.async.GetProblemHtml({ problem_id: docId }), grpc.status.NOT_FOUND);
  await expectStatus(lse.async.GetTestCase({ problem_id: docId, test_case_id: tcId }), grpc.status.NOT_FOUND);
  await expectStatus(lse.async.DeleteProblem({ problem_id: docId }), grpc.status.NOT_FOUND);

  await expectStatus(lse.async.GetProblemHtml({ problem_id: 0 }), grpc.status.INVALID_ARGUMENT);
  await expectStatus(lse.async.CreateProblem({ html: 'x', columns: { '': 'empty name' } }), grpc.status.INVALID_ARGUMENT);
  const { problem_id: other } = await lse.async.CreateProblem({ html: 'x' });
  await expectStatus(lse.async.AddTestCase({ problem_id: other, value: {} }), grpc.status.INVALID_ARGUMENT);
  await expectStatus(lse.async.ListProblems({ page_token: 'bogus' }), grpc.status.INVALID_ARGUMENT);
});

test('example.js runs against the server', async () => {
  const example = path.join(__dirname, '..', 'example.js');
  const { stdout } = await util.promisify(execFile)(process.execPath, [example, ctx.server.address], { timeout: 60_000 });
  const lines = stdout.trim().split('\n');
  assert.match(lines[0], /^problem \d+$/);
  assert.equal(lines[1], 'meta {"category":"tutorial","name":"two-sum","version":"1.0"}');
  assert.match(lines[2], /^\d+ int_list \["2","7","11","15"\] -> int_list \["0","1"\]$/);
  assert.match(lines[3], /^\d+ string_value "some string input" -> string_value "output string"$/);
  assert.match(lines[4], /^\d+ string_map \{"key":"value"\} -> double_value 3\.14$/);
  assert.match(lines[5], /^\d+ int_value "9223372036854775807" -> string_list \["foo","bar"\]$/);
  assert.match(lines[6], /^NOT_FOUND: .+/);

  // The whole-problem part: import, one GetProblem, guarded replace, stale version.
  const imported = /^imported (\d+) version (\d+) test cases (\d+),(\d+),(\d+)$/.exec(lines[7]);
  assert.ok(imported, lines[7]);
  const [, pid, v1, a, b, c] = imported;
  const header = (v) => `problem ${pid} version ${v} html "<h1>Reverse</h1><p>Reverse the list.</p>" ` +
    'columns {"category":"tutorial","name":"reverse"}';
  assert.equal(lines[8], header(v1));
  assert.equal(lines[9], `  ${a} int_list ["1","2","3"] -> int_list ["3","2","1"]`);
  assert.equal(lines[10], `  ${b} int_list [] -> (no expected output)`);
  assert.equal(lines[11], `  ${c} string_list ["a","b"] -> string_list ["b","a"]`);
  const replaced = /^replaced: version (\d+) -> (\d+) test cases (\d+),(\d+)$/.exec(lines[12]);
  assert.ok(replaced, lines[12]);
  const [, from, v2, d, e] = replaced;
  assert.equal(from, v1);
  assert.ok(BigInt(v2) > BigInt(v1), 'the replace raised the version');
  assert.ok(BigInt(d) > BigInt(c), 'new ids, never reused');
  assert.equal(lines[13], header(v2));
  assert.equal(lines[14], `  ${d} int_value "9007199254740993" -> int_value "-9007199254740993"`);
  assert.equal(lines[15], `  ${e} string_value "abc" -> string_value "cba"`);
  assert.match(lines[16], new RegExp(`^ABORTED: current version ${v2} \\(.+\\)$`));
  assert.equal(lines.length, 17);
});
