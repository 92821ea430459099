'use strict';
// Stratum from Node.js: loads ../../proto/lse.proto at run time with
// @grpc/proto-loader (no code generation) and stores a problem with test
// cases and expected outputs.
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
//                    that is not set stays absent)
//   oneofs: true     a Value gets a virtual `kind` field naming its member:
//                    "int_value" | "double_value" | "string_value" |
//                    "int_list" | "string_list" | "string_map"
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
 * each RPC: `await lse.async.CreateProblem({...})`. Close with lse.close().
 */
function connect(address) {
  const { Lse } = loadLse();
  const client = new Lse(address, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  client.async = {};
  for (const name of Object.keys(Lse.service)) {
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
    default: throw new Error(`value with no kind: ${JSON.stringify(v)}`);
  }
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
    return docId;
  } finally {
    lse.close();
  }
}

module.exports = { PROTO_PATH, LOADER_OPTIONS, MAX_MESSAGE_BYTES, loadLse, connect, valueOf, main, grpc };

if (require.main === module) {
  const address = process.argv[2] || process.env.LSE_ADDRESS || 'localhost:50051';
  main(address).catch((err) => {
    console.error(`example failed: ${err.code !== undefined ? `${grpc.status[err.code]}: ${err.details}` : err.stack}`);
    process.exit(1);
  });
}
