'use strict';
// Shared by the test files (not a test itself; `node --test` runs every .js
// file under test/, so this one also "passes" as a file with no tests).
// Starts the real lse_server (binary from $LSE_SERVER_BIN, else
// target/release or target/debug in the repo root) on a free port over a temp
// dir, and stops it with SIGTERM.

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const { connect, grpc } = require('../example.js');

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

/**
 * Registers before/after hooks (of the calling test file) that start a server
 * over a fresh temp dir and connect to it, then close, stop it (expecting exit
 * 0) and remove the dir. Returns a live object: ctx.lse, ctx.server, filled
 * in before the first test; `onReady(ctx)`, if given, is called then (from the
 * same hook: a second top-level `before` may run before this one completes).
 */
function useServer({ before, after }, onReady) {
  const ctx = { server: undefined, lse: undefined, dataDir: undefined };
  before(async () => {
    ctx.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lse-node-'));
    ctx.server = await startServer(ctx.dataDir);
    ctx.lse = connect(ctx.server.address);
    if (onReady) onReady(ctx);
  });
  after(async () => {
    if (ctx.lse) ctx.lse.close();
    if (ctx.server) assert.equal(await stopServer(ctx.server.proc), 0, 'lse_server exits 0 on SIGTERM');
    if (ctx.dataDir) fs.rmSync(ctx.dataDir, { recursive: true, force: true });
  });
  return ctx;
}

/** Asserts that `promise` rejects with gRPC status `code` and a message; resolves with the error. */
async function expectStatus(promise, code) {
  let caught;
  await assert.rejects(promise, (err) => {
    assert.equal(err.code, code, `${grpc.status[err.code]}: ${err.details}`);
    assert.ok(err.details.length > 0, 'the server says what was wrong');
    caught = err;
    return true;
  });
  return caught;
}

module.exports = { REPO_ROOT, serverBinary, startServer, stopServer, useServer, expectStatus };
