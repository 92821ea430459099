'use strict';
// Runs with `node --test` (from client/node). Starts the real lse_server
// (binary from $LSE_SERVER_BIN, else target/release or target/debug in the
// repo root) on a free port over a temp dir, talks to it through
// ../../proto/lse.proto loaded at run time, and stops it with SIGTERM.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const util = require('node:util');

const { connect, valueOf, grpc } = require('../example.js');

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const START_TIMEOUT_MS = 60_000;

function serverBinary() {
  if (process.env.LSE_SERVER_BIN) return process.env.LSE_SERVER_BIN;
  for (const profile of ['release', 'debug']) {
    const bin = path.join(REPO_ROOT, 'target', profile, 'lse_server');
    if (fs.existsSync(bin)) return bin;
  }
  throw new Error('no lse_server: set LSE_SERVER_BIN or run `cargo build --release --bin lse_server`');
}

/** Spawns lse_server and resolves with { proc, address } once it listens. */
function startServer(dataDir) {
  const proc = spawn(serverBinary(), ['--port', '0', '--data-dir', dataDir, '--log', 'warn'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (chunk) => { stderr += chunk; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`lse_server did not listen within ${START_TIMEOUT_MS} ms: ${stderr}`));
    }, START_TIMEOUT_MS);
    const lines = readline.createInterface({ input: proc.stdout });
    lines.once('line', (line) => {
      clearTimeout(timer);
      const match = /^lse_server listening on (\S+)$/.exec(line);
      if (match) resolve({ proc, address: match[1] });
      else reject(new Error(`unexpected first line from lse_server: ${JSON.stringify(line)}`));
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`lse_server exited with ${code} before listening: ${stderr}`));
    });
    proc.once('error', reject);
  });
}

/** SIGTERMs the server and resolves with its exit code. */
function stopServer(proc) {
  if (proc.exitCode !== null) return Promise.resolve(proc.exitCode);
  return new Promise((resolve) => {
    proc.once('exit', (code) => resolve(code));
    proc.kill('SIGTERM');
  });
}

let server;
let dataDir;
let lse;

before(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lse-node-'));
  server = await startServer(dataDir);
  lse = connect(server.address);
});

after(async () => {
  if (lse) lse.close();
  if (server) assert.equal(await stopServer(server.proc), 0, 'lse_server exits 0 on SIGTERM');
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

async function expectStatus(promise, code) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.code, code, `${grpc.status[err.code]}: ${err.details}`);
    assert.ok(err.details.length > 0, 'the server says what was wrong');
    return true;
  });
}

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
  const { stdout } = await util.promisify(execFile)(process.execPath, [example, server.address], { timeout: 60_000 });
  const lines = stdout.trim().split('\n');
  assert.match(lines[0], /^problem \d+$/);
  assert.equal(lines[1], 'meta {"category":"tutorial","name":"two-sum","version":"1.0"}');
  assert.match(lines[2], /^\d+ int_list \["2","7","11","15"\] -> int_list \["0","1"\]$/);
  assert.match(lines[3], /^\d+ string_value "some string input" -> string_value "output string"$/);
  assert.match(lines[4], /^\d+ string_map \{"key":"value"\} -> double_value 3\.14$/);
  assert.match(lines[5], /^\d+ int_value "9223372036854775807" -> string_list \["foo","bar"\]$/);
  assert.match(lines[6], /^NOT_FOUND: .+/);
  assert.equal(lines.length, 7);
});
