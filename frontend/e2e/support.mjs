// Helpers of the end-to-end test: the fixture api process, a plain static server for the
// export (the cross-origin case), direct api calls and Debian's Chromium.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

/** The frontend directory. */
export const FRONTEND = resolve(fileURLToPath(new URL('..', import.meta.url)));
/** The Cargo workspace root. */
export const ROOT = resolve(FRONTEND, '..');
/** The static export. */
export const OUT = join(FRONTEND, 'out');
/** Where screenshots go (not committed). */
export const SCREENSHOTS = join(FRONTEND, 'e2e', 'screenshots');

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const FIXTURE = 'stargazer-frontend-fixture';

/** Fails early, with what to do, when the export has not been built. */
export function requireExport() {
  try {
    statSync(join(OUT, 'index.html'));
  } catch {
    throw new Error(`no static export at ${OUT}; run \`npm run build\` in frontend/ first`);
  }
}

/** Builds the fixture api (sharing the workspace's target directory and lockfile). */
export function buildFixture() {
  const built = spawnSync('cargo', ['build', '--quiet', '-p', FIXTURE], { cwd: ROOT, stdio: 'inherit' });
  if (built.status !== 0) throw new Error(`cargo build -p ${FIXTURE} failed (status ${built.status})`);
}

/**
 * Starts the fixture api; resolves to its ready line (`url`, `token`, `expired_token`,
 * `user`, `entities`, `groups`) plus `stop()`.
 */
export function startFixture(args) {
  const child = spawn('cargo', ['run', '--quiet', '-p', FIXTURE, '--', '--exit-on-stdin-eof', ...args], {
    cwd: ROOT,
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const stop = () =>
    new Promise((done) => {
      if (child.exitCode !== null || child.signalCode !== null) return done();
      child.once('exit', () => done());
      child.stdin.end();
      // Closing stdin asks it to stop; a hung process gets a signal after a grace period.
      setTimeout(() => child.kill('SIGTERM'), 10_000).unref();
    });
  return new Promise((ready, fail) => {
    const lines = createInterface({ input: child.stdout });
    child.once('exit', (code, signal) => fail(new Error(`fixture exited before it was ready (${code ?? signal})`)));
    child.once('error', fail);
    lines.once('line', (line) => {
      try {
        ready({ ...JSON.parse(line), stop });
      } catch (err) {
        fail(new Error(`fixture printed \`${line}\`, not its JSON ready line: ${err}`));
      }
    });
  });
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
};

/**
 * Serves the export from a second origin, as a separate static host would, with a
 * `config.json` whose contents `config()` returns at request time.
 */
export function startStaticServer(config) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    if (path === '/config.json') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      res.end(JSON.stringify(config()));
      return;
    }
    let file = normalize(join(OUT, path));
    if (!file.startsWith(OUT + sep) && file !== OUT) {
      res.writeHead(403).end();
      return;
    }
    try {
      if (statSync(file).isDirectory()) file = join(file, 'index.html');
      const body = readFileSync(file);
      res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
    }
  });
  return new Promise((ready) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      ready({ url: `http://127.0.0.1:${port}`, close: () => new Promise((done) => server.close(done)) });
    });
  });
}

/**
 * A server that records every request it gets (`method`, `path`, `authorization`) and
 * answers 503 with CORS open to every origin, so that a page would happily send it its
 * requests: what a crafted `?api=` link would point at.
 */
export function startRecordingServer() {
  const requests = [];
  const server = createServer((req, res) => {
    requests.push({ method: req.method, path: req.url, authorization: req.headers.authorization ?? null });
    res.writeHead(req.method === 'OPTIONS' ? 204 : 503, {
      'Access-Control-Allow-Origin': '*',
      'Access-Control-Allow-Headers': 'authorization, content-type',
      'Access-Control-Allow-Methods': 'POST, GET, OPTIONS',
      'Content-Type': 'application/json',
    });
    res.end(req.method === 'OPTIONS' ? undefined : '{"success":false}');
  });
  return new Promise((ready) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      ready({ url: `http://127.0.0.1:${port}`, requests, close: () => new Promise((done) => server.close(done)) });
    });
  });
}

/** Calls an api method as a session would; resolves to `{ status, body }`. */
export async function rpc(base, method, token, body = {}) {
  const response = await fetch(`${base}/v1/${method}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

/** Launches Debian's Chromium headless on a fresh profile; resolves to the context. */
export async function launchBrowser() {
  const profile = mkdtempSync(join(tmpdir(), 'stargazer-e2e-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 800 },
    locale: 'en-US',
    timezoneId: 'UTC',
    colorScheme: 'light',
  });
  context.setDefaultTimeout(15_000);
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}
