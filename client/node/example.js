'use strict';
// Stratum from Node.js: loads ../../proto/lse.proto at run time with
// @grpc/proto-loader (no code generation) and stores a problem with test
// cases and expected outputs, one RPC at a time; then imports, reads and
// replaces a whole problem, one RPC each (see wholeProblem).
//
//   node example.js [HOST:PORT]      (default: $LSE_ADDRESS or localhost:50051)
//
// Loader options, and why:
//   keepCase: true   fields keep the proto's names (problem_id, int_list, ...)
//   longs: String    64-bit integers are DECIMAL STRINGS both ways. Ids are
//                    uint64 and int values int64: a JS number is exact only
//                    up to 2^53, so Number would silently corrupt large ones.
//                    Responses always carry strings ("42"); requests accept a
//                    string or a safe integer number. Convert with BigInt(id)
//                    if you need arithmetic.
//   defaults: true   unset scalars read as 0 / "" / [] / {} (but a oneof member
//                    that is not set stays absent, and an unset message field,
//                    such as a test case's expected_output, reads as null)
//   oneofs: true     a Value gets a virtual `kind` field naming its member:
//                    "int_value" | "double_value" | "string_value" |
//                    "int_list" | "string_list" | "string_map" |
//                    "bytes_value" (a Buffer)
//   arrays, objects  empty repeated fields and maps read as [] and {}
//
// A Value is sent as an object with exactly one member set, e.g.
//   { int_list: { values: ['2', '7'] } }, { string_value: 'x' },
//   { string_map: { entries: { key: 'value' } } }.
// An empty list must pick its member: { int_list: { values: [] } } (the Python
// client sends [] that way) and reads back with kind "int_list".
//
// Errors are gRPC statuses: err.code is a grpc.status value (NOT_FOUND,
// INVALID_ARGUMENT, ...) and err.details the server's message; see the top of
// proto/lse.proto for their meaning.
//
// Whole problems (the second half of main): ImportProblem creates a problem
// with its html, columns and whole chain of test cases in one atomic RPC;
// GetProblem reads all of it back in one message, from one version;
// ReplaceTestCases swaps the whole chain atomically. Every problem has a
// `version` (a uint64, so a decimal string here) that grows with every change;
// writes take an `optional uint64 expected_version` and are refused with
// ABORTED when the problem is no longer at it, the current version being in
// the trailer `lse-current-version`. An `optional` field is simply left out
// of the request when not wanted (then no version check is made).

const path = require('node:path');
const util = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_PATH = path.resolve(__dirname, '..', '..', 'proto', 'lse.proto');

const LOADER_OPTIONS = Object.freeze({
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  arrays: true,
  objects: true,
});

/** 64 MiB, the server's default --max-message-bytes (gRPC's default is 4 MiB). */
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** The `lse` package of the proto, loaded at run time. */
function loadLse() {
  const definition = protoLoader.loadSync(PROTO_PATH, LOADER_OPTIONS);
  return grpc.loadPackageDefinition(definition).lse;
}

/**
 * A client of the Lse service at `address`, with a promise-returning twin of
 * each unary RPC: `await lse.async.CreateProblem({...})`. The streaming RPCs
 * (ImportProblemStream, GetProblemStream, ReplaceTestCasesStream) have no
 * twin: call them on the client itself (see importProblemStream and
 * getProblemStream below). Close with lse.close().
 */
function connect(address) {
  const { Lse } = loadLse();
  const client = new Lse(address, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  client.async = {};
  for (const [name, method] of Object.entries(Lse.service)) {
    if (method.requestStream || method.responseStream) continue;
    client.async[name] = util.promisify(client[name]).bind(client);
  }
  return client;
}

/** The plain JS value of an lse.Value (int64s stay decimal strings). */
function valueOf(v) {
  switch (v.kind) {
    case 'int_value': return v.int_value;
    case 'double_value': return v.double_value;
    case 'string_value': return v.string_value;
    case 'int_list': return v.int_list.values;
    case 'string_list': return v.string_list.values;
    case 'string_map': return v.string_map.entries;
    case 'bytes_value': return v.bytes_value; // a Buffer
    default: throw new Error(`value with no kind: ${JSON.stringify(v)}`);
  }
}

/**
 * A NewTestCase (ImportProblem / ReplaceTestCases) from an input Value and an
 * optional expected output Value: leave `expectedOutput` undefined for a test
 * case without one (an unset message field, not an empty Value, which the
 * server would refuse as INVALID_ARGUMENT).
 */
function newTestCase(input, expectedOutput) {
  return expectedOutput === undefined ? { input } : { input, expected_output: expectedOutput };
}

/**
 * Creates a problem with its html, columns and chain of test cases (each a
 * newTestCase) in ONE atomic RPC. Resolves with { problemId, version,
 * testCaseIds } (all decimal strings; ids in chain order).
 */
async function importProblem(lse, { html = '', columns = {}, testCases = [] }) {
  const res = await lse.async.ImportProblem({ html, columns, test_cases: testCases });
  return { problemId: res.problem_id, version: res.version, testCaseIds: res.test_case_ids };
}

/**
 * ImportProblem over a client stream, for a problem larger than one message:
 * `messages` is a list of ImportProblemRequests whose html is concatenated,
 * columns merged and test cases appended, in order. Nothing is visible until
 * the stream ends. Resolves like importProblem.
 *
 * The final message must set `last: true` (this helper sets it): the server
 * writes nothing for a stream that ends without it, and answers CANCELLED.
 * That is what makes giving up safe: call.cancel() (Node's http2 ends the
 * stream cleanly before it resets it) or a crash before the last message
 * leaves nothing behind.
 */
function importProblemStream(lse, messages) {
  return new Promise((resolve, reject) => {
    const call = lse.ImportProblemStream((err, res) => {
      if (err) reject(err);
      else resolve({ problemId: res.problem_id, version: res.version, testCaseIds: res.test_case_ids });
    });
    messages.forEach((message, at) => call.write(at === messages.length - 1 ? { ...message, last: true } : message));
    call.end();
  });
}

/**
 * A whole problem from ONE GetProblem call (everything from one version):
 * { problemId, version, html, columns, testCases: [{ id, input, expectedOutput }] }
 * in chain order. `expectedOutput` is null for a test case that has none
 * (defaults: true reads an unset message field as null). Pass
 * `expectedVersion` to be answered only at that version (ABORTED otherwise).
 */
async function getProblem(lse, problemId, expectedVersion) {
  const req = { problem_id: problemId };
  if (expectedVersion !== undefined) req.expected_version = expectedVersion;
  return problemOf([await lse.async.GetProblem(req)]);
}

/**
 * getProblem over GetProblemStream, for a problem larger than one message: the
 * first message carries id, version, html and columns, every message a run of
 * test cases continuing the previous one's; they are joined here. Every message
 * is from the same version (checked).
 */
function getProblemStream(lse, problemId, expectedVersion) {
  const req = { problem_id: problemId };
  if (expectedVersion !== undefined) req.expected_version = expectedVersion;
  return new Promise((resolve, reject) => {
    const messages = [];
    const call = lse.GetProblemStream(req);
    call.on('data', (message) => messages.push(message));
    call.on('error', reject);
    call.on('end', () => {
      try { resolve(problemOf(messages)); } catch (err) { reject(err); }
    });
  });
}

/** Joins GetProblemResponse messages (one, or a stream's) into one problem. */
function problemOf(messages) {
  if (messages.length === 0) throw new Error('GetProblem returned no message');
  const [first] = messages;
  const testCases = [];
  for (const message of messages) {
    if (message.version !== first.version || message.problem_id !== first.problem_id) {
      throw new Error(`GetProblemStream mixed versions: ${first.version} and ${message.version}`);
    }
    for (const tc of message.test_cases) {
      testCases.push({ id: tc.test_case_id, input: tc.input, expectedOutput: tc.expected_output || null });
    }
  }
  return { problemId: first.problem_id, version: first.version, html: first.html, columns: { ...first.columns }, testCases };
}

/**
 * Replaces the whole chain of a problem (test cases and expected outputs; the
 * html and columns stay) atomically. With `expectedVersion` the replace is
 * refused with ABORTED unless the problem is still at that version. Resolves
 * with { version, testCaseIds } (the new version and the NEW ids: the old test
 * cases are gone, ids are never reused).
 */
async function replaceTestCases(lse, problemId, testCases, expectedVersion) {
  const req = { problem_id: problemId, test_cases: testCases };
  if (expectedVersion !== undefined) req.expected_version = expectedVersion;
  const res = await lse.async.ReplaceTestCases(req);
  return { version: res.version, testCaseIds: res.test_case_ids };
}

/**
 * The problem's current version (a decimal string) from an ABORTED error's
 * trailing metadata `lse-current-version`, or undefined for any other error.
 * Metadata.get returns a list of values; the server sends one.
 */
function currentVersionOf(err) {
  if (!err || err.code !== grpc.status.ABORTED || !err.metadata) return undefined;
  const [version] = err.metadata.get('lse-current-version');
  return version === undefined ? undefined : String(version);
}

/** Human-readable text of a Value (or of a missing one). */
function describeValue(v) {
  return v ? `${v.kind} ${JSON.stringify(valueOf(v))}` : '(no expected output)';
}

/** Prints a problem from getProblem: a header, then one line per test case in chain order. */
function printProblem(problem, log = console.log) {
  log(`problem ${problem.problemId} version ${problem.version} html ${JSON.stringify(problem.html)} ` +
    `columns ${JSON.stringify(sortedObject(problem.columns))}`);
  for (const tc of problem.testCases) {
    log(`  ${tc.id} ${describeValue(tc.input)} -> ${describeValue(tc.expectedOutput)}`);
  }
}

function sortedObject(obj) {
  return Object.fromEntries(Object.entries(obj).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * The whole-problem part of the example: import, one-call read, guarded
 * replace, and a stale expected_version. Resolves with the problem id.
 */
async function wholeProblem(lse) {
  // One RPC creates the problem with its whole chain; the second test case
  // has no expected output.
  const imported = await importProblem(lse, {
    html: '<h1>Reverse</h1><p>Reverse the list.</p>',
    columns: { name: 'reverse', category: 'tutorial' },
    testCases: [
      newTestCase({ int_list: { values: [1, 2, 3] } }, { int_list: { values: [3, 2, 1] } }),
      newTestCase({ int_list: { values: [] } }),
      newTestCase({ string_list: { values: ['a', 'b'] } }, { string_list: { values: ['b', 'a'] } }),
    ],
  });
  console.log(`imported ${imported.problemId} version ${imported.version} test cases ${imported.testCaseIds.join(',')}`);

  // ONE call returns html, columns, version and every test case with its
  // output, in chain order and all from the same version.
  const problem = await getProblem(lse, imported.problemId);
  printProblem(problem);

  // Replace the whole chain, but only if nobody changed the problem since we
  // read it (expected_version = the version we read).
  const replaced = await replaceTestCases(lse, problem.problemId, [
    newTestCase({ int_value: '9007199254740993' }, { int_value: '-9007199254740993' }),
    newTestCase({ string_value: 'abc' }, { string_value: 'cba' }),
  ], problem.version);
  console.log(`replaced: version ${problem.version} -> ${replaced.version} test cases ${replaced.testCaseIds.join(',')}`);
  printProblem(await getProblem(lse, problem.problemId));

  // The version we read is stale now: the same guarded write is ABORTED, and
  // the trailer says the version to read again at.
  try {
    await replaceTestCases(lse, problem.problemId, [], problem.version);
    throw new Error('a stale expected_version was accepted');
  } catch (err) {
    if (err.code !== grpc.status.ABORTED) throw err;
    console.log(`ABORTED: current version ${currentVersionOf(err)} (${err.details})`);
  }
  return problem.problemId;
}

async function main(address) {
  const lse = connect(address);
  try {
    const { problem_id: docId } = await lse.async.CreateProblem({
      html: '<h1>Two sum</h1><p>Return the indices of the two numbers that add up to the target.</p>',
      columns: { name: 'two-sum', category: 'tutorial', version: '1.0' },
    });
    console.log(`problem ${docId}`);

    // Input nodes of several types, each with its expected output.
    const cases = [
      [{ int_list: { values: [2, 7, 11, 15] } }, { int_list: { values: [0, 1] } }],
      [{ string_value: 'some string input' }, { string_value: 'output string' }],
      [{ string_map: { entries: { key: 'value' } } }, { double_value: 3.14 }],
      [{ int_value: '9223372036854775807' }, { string_list: { values: ['foo', 'bar'] } }],
    ];
    for (const [input, output] of cases) {
      const { test_case_id: tcId } = await lse.async.AddTestCase({ problem_id: docId, value: input });
      await lse.async.SetExpectedOutput({ problem_id: docId, test_case_id: tcId, value: output });
    }

    // Read everything back.
    const meta = await lse.async.GetProblemMeta({ problem_id: docId });
    console.log('meta', JSON.stringify(meta.columns));
    const { test_cases: testCases } = await lse.async.GetAllTestCases({ problem_id: docId });
    for (const tc of testCases) {
      const out = await lse.async.GetExpectedOutput({ problem_id: docId, test_case_id: tc.test_case_id });
      console.log(`${tc.test_case_id} ${tc.value.kind} ${JSON.stringify(valueOf(tc.value))} -> ` +
        `${out.value.kind} ${JSON.stringify(valueOf(out.value))}`);
    }

    // A missing node is a NOT_FOUND status.
    try {
      await lse.async.GetTestCase({ problem_id: docId, test_case_id: '18446744073709551615' });
    } catch (err) {
      if (err.code !== grpc.status.NOT_FOUND) throw err;
      console.log(`NOT_FOUND: ${err.details}`);
    }

    await wholeProblem(lse);
    return docId;
  } finally {
    lse.close();
  }
}

module.exports = {
  PROTO_PATH, LOADER_OPTIONS, MAX_MESSAGE_BYTES, loadLse, connect, valueOf, main, grpc,
  newTestCase, importProblem, importProblemStream, getProblem, getProblemStream, problemOf,
  replaceTestCases, currentVersionOf, describeValue, printProblem, wholeProblem,
};

if (require.main === module) {
  const address = process.argv[2] || process.env.LSE_ADDRESS || 'localhost:50051';
  main(address).catch((err) => {
    console.error(`example failed: ${err.code !== undefined ? `${grpc.status[err.code]}: ${err.details}` : err.stack}`);
    process.exit(1);
  });
}
