// The web page at "/", driven in headless Chromium (Debian's chromium, playwright-core): it
// generates an image with live progress and previews, shows the result with its parameters and
// in the gallery, and cancels a running job. The server has an API key: the browser signs in
// with Basic credentials and its fetch and EventSource calls carry them. A screenshot is saved
// in the test's temporary folder (SDW_E2E_KEEP=1 keeps it).
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { startServer, tempDir } from './server.mjs';

let server, tmp, context, page;

before(async () => {
  server = await startServer(['--api-key', 'page-key', '-t', '1', '--preview-every', '1']);
  tmp = tempDir('web');
  context = await chromium.launchPersistentContext(path.join(tmp.dir, 'profile'), {
    executablePath: process.env.SDW_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: 1180, height: 900 },
    httpCredentials: { username: 'me', password: 'page-key' },
  });
  page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => { throw e; });
});

after(async () => {
  await context?.close();
  assert.equal(await server.stop(), 0);
  tmp.cleanup();
});

const text = (sel) => page.$eval(sel, (e) => e.textContent);

test('the page loads the model, its defaults and samplers', async () => {
  const res = await page.goto(server.url + '/');
  assert.equal(res.status(), 200);
  await page.waitForFunction(() => document.querySelector('#sampler').options.length > 0);
  assert.match(await text('#model'), /tiny-sd15 · stable-diffusion v1/);
  assert.equal(await page.inputValue('#width'), '64');
  assert.equal(await page.inputValue('#sampler'), 'pndm');
  const names = await page.$$eval('#sampler option', (os) => os.map((o) => o.textContent));
  assert.deepEqual(names, ['DDIM', 'PLMS', 'Euler', 'Euler a', 'DPM++ 2M']);
});

test('generate shows progress and previews, then the image with its parameters', async () => {
  await page.fill('#prompt', 'a lighthouse at dusk');
  await page.fill('#negative', 'blurry');
  await page.fill('#width', '64');
  await page.fill('#height', '64');
  await page.fill('#steps', '12');
  await page.fill('#seed', '42');
  await page.selectOption('#sampler', 'euler');
  // Record what the progress line and preview show while the job runs.
  await page.evaluate(() => {
    window.seen = { steps: new Set(), previews: 0 };
    new MutationObserver(() => {
      const m = /step (\d+) \/ (\d+)/.exec(document.querySelector('#progress-text').textContent);
      if (m) window.seen.steps.add(Number(m[1]));
    }).observe(document.querySelector('#progress-text'), { childList: true, characterData: true, subtree: true });
    new MutationObserver(() => window.seen.previews++)
      .observe(document.querySelector('#preview'), { attributes: true, attributeFilter: ['src'] });
  });
  await page.click('#generate');
  assert.equal(await page.isEnabled('#cancel'), true);
  await page.waitForSelector('#result', { timeout: 120000 });
  const seen = await page.evaluate(() => ({ steps: [...window.seen.steps], previews: window.seen.previews }));
  assert.ok(seen.steps.length >= 2, `progress steps seen: ${seen.steps}`);
  assert.ok(seen.previews >= 1, 'a preview was shown');
  assert.match(await text('#progress-text'), /step 12 \/ 12/);
  const size = await page.$eval('#result', (i) => [i.naturalWidth, i.naturalHeight]);
  assert.deepEqual(size, [64, 64]);
  const params = await text('#params');
  assert.match(params, /seed42/);
  assert.match(params, /size64×64/);
  assert.match(params, /negativeblurry/);
  assert.equal(await page.$$eval('#gallery img', (a) => a.length), 1);
  assert.match(await text('#message'), /Done in/);
  assert.equal(await page.isEnabled('#generate'), true);
});

test('cancel stops a running job', async () => {
  await page.fill('#steps', '150');
  await page.fill('#seed', '-1');
  await page.click('#generate');
  await page.waitForFunction(() => /step [1-9]\d* \/ 150/.test(document.querySelector('#progress-text').textContent),
    null, { timeout: 60000 });
  await page.click('#cancel');
  await page.waitForFunction(() => document.querySelector('#status').textContent === 'cancelled',
    null, { timeout: 60000 });
  assert.match(await text('#message'), /Cancelled/);
  assert.equal(await page.isEnabled('#generate'), true);
  assert.equal(await page.$$eval('#gallery img', (a) => a.length), 1); // nothing added
  const shot = path.join(tmp.dir, 'web.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`# screenshot: ${shot}`);
});
