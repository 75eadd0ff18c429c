// A browser front end on another origin calling the API (CORS), in headless Chromium: a page
// served from one port fetches `sdw serve` on another with an API key in its Authorization
// header, which makes the browser send a preflight first. The origin given to --cors-origin
// gets through; any other is blocked by the browser.
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { startServer, tempDir } from './server.mjs';

let server, tmp, context, front, other, frontUrl, otherUrl;

function serve(html) {
  return new Promise((resolve) => {
    const s = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      res.end(html);
    });
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
}

before(async () => {
  front = await serve('<!doctype html><title>front end</title>');
  other = await serve('<!doctype html><title>elsewhere</title>');
  frontUrl = `http://127.0.0.1:${front.address().port}`;
  otherUrl = `http://127.0.0.1:${other.address().port}`;
  server = await startServer(['--api-key', 'cors-key', '-t', '1', '--cors-origin', frontUrl]);
  tmp = tempDir('cors');
  context = await chromium.launchPersistentContext(path.join(tmp.dir, 'profile'), {
    executablePath: process.env.SDW_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
});

after(async () => {
  await context?.close();
  front?.close();
  other?.close();
  assert.equal(await server.stop(), 0);
  tmp.cleanup();
});

/* fetch from a page at origin, in the browser: [status, body] or the error's message. */
async function fetchFrom(origin, url, init) {
  const page = await context.newPage();
  await page.goto(origin + '/');
  const out = await page.evaluate(async ([u, i]) => {
    try {
      const r = await fetch(u, i);
      return { status: r.status, body: await r.text(), location: r.headers.get('Location') };
    } catch (e) { return { error: String(e) }; }
  }, [url, init]);
  await page.close();
  return out;
}

test('the allowed origin calls the API with its key (preflight, then the call)', async () => {
  const r = await fetchFrom(frontUrl, server.url + '/v1/jobs', {
    method: 'POST',
    headers: { Authorization: 'Bearer cors-key', 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt: 'x', width: 64, height: 64, steps: 1 }),
  });
  assert.equal(r.error, undefined, r.error);
  assert.equal(r.status, 202);
  assert.match(JSON.parse(r.body).job_id, /^[0-9a-f]{32}$/);
  assert.match(r.location, /^\/v1\/jobs\//); // exposed to the page
  const s = await fetchFrom(frontUrl, server.url + '/sdapi/v1/samplers', { headers: { Authorization: 'Bearer cors-key' } });
  assert.equal(s.status, 200);
});

test('another origin is blocked by the browser', async () => {
  const r = await fetchFrom(otherUrl, server.url + '/sdapi/v1/samplers', { headers: { Authorization: 'Bearer cors-key' } });
  assert.match(r.error || '', /Failed to fetch/);
});

test('the preflight itself, as a client sees it', async () => {
  const res = await fetch(server.url + '/v1/images/generations', {
    method: 'OPTIONS',
    headers: { Origin: frontUrl, 'Access-Control-Request-Method': 'POST',
               'Access-Control-Request-Headers': 'authorization,content-type' },
  });
  assert.equal(res.status, 204);
  assert.equal(res.headers.get('access-control-allow-origin'), frontUrl);
  assert.match(res.headers.get('access-control-allow-methods'), /POST/);
  assert.match(res.headers.get('access-control-allow-headers'), /authorization/);
});
