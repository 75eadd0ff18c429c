// The web page at "/", driven in headless Chromium (Debian's chromium, playwright-core): it
// generates images with live progress and previews (the preview cleared when the job ends),
// shows the result with its parameters, download / reuse-seed / send-to-form actions, and a
// gallery that survives a reload; image-to-image from an uploaded file and inpainting with a
// mask painted on the page; batch and scheduler controls; cancel. The server has an API key:
// the browser signs in with Basic credentials and its fetch and EventSource calls carry them.
// No server path is shown. Screenshots at 1280 and 400 px wide are saved in the test's
// temporary folder (SDW_E2E_KEEP=1 keeps them) and checked for layout overflow.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { decodePng } from './png.mjs';
import { fixtures, startServer, tempDir } from './server.mjs';

let server, tmp, context, page;

before(async () => {
  server = await startServer(['--api-key', 'page-key', '-t', '1', '--preview-every', '1']);
  tmp = tempDir('web');
  context = await chromium.launchPersistentContext(path.join(tmp.dir, 'profile'), {
    executablePath: process.env.SDW_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: 1280, height: 900 },
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

/* Waits for the current job to end (the Generate button comes back). */
const jobDone = (timeout = 120000) =>
  page.waitForFunction(() => !document.querySelector('#generate').disabled, null, { timeout });

test('the page loads the model, its defaults, samplers, schedulers and icon', async () => {
  const res = await page.goto(server.url + '/');
  assert.equal(res.status(), 200);
  await page.waitForFunction(() => document.querySelector('#sampler').options.length > 0);
  assert.match(await text('#model'), /^tiny-sd15 · stable-diffusion v1/);
  assert.equal(await page.inputValue('#width'), '64');
  assert.equal(await page.inputValue('#sampler'), 'pndm');
  const names = await page.$$eval('#sampler option', (os) => os.map((o) => o.textContent));
  for (const n of ['DDIM', 'PLMS', 'Euler', 'Euler a', 'DPM++ 2M']) assert.ok(names.includes(n), n);
  const scheds = await page.$$eval('#scheduler option', (os) => os.map((o) => o.value));
  assert.ok(scheds.includes('default') && scheds.includes('karras'));
  const icon = await page.evaluate(async () => {
    const r = await fetch(document.querySelector('link[rel=icon]').href);
    return [r.status, r.headers.get('content-type')];
  });
  assert.deepEqual(icon, [200, 'image/svg+xml']);
  // The favicon needs no key: browsers fetch it without the page's credentials.
  assert.equal((await fetch(server.url + '/favicon.ico')).status, 200);
});

test('generate shows progress and previews, then the image with its parameters', async () => {
  await page.fill('#prompt', 'a lighthouse at dusk');
  await page.fill('#negative', 'blurry');
  await page.fill('#width', '64');
  await page.fill('#height', '64');
  await page.fill('#steps', '12');
  await page.fill('#seed', '42');
  await page.selectOption('#sampler', 'euler');
  await page.selectOption('#scheduler', 'karras');
  // Record what the progress line and preview show while the job runs.
  await page.evaluate(() => {
    window.seen = { steps: new Set(), previews: 0 };
    new MutationObserver(() => {
      const m = /step (\d+) \/ (\d+)/.exec(document.querySelector('#progress-text').textContent);
      if (m) window.seen.steps.add(Number(m[1]));
    }).observe(document.querySelector('#progress-text'), { childList: true, characterData: true, subtree: true });
    new MutationObserver(() => { if (document.querySelector('#preview').src) window.seen.previews++; })
      .observe(document.querySelector('#preview'), { attributes: true, attributeFilter: ['src'] });
  });
  await page.click('#generate');
  assert.equal(await page.isEnabled('#cancel'), true);
  await page.waitForSelector('#result', { timeout: 120000 });
  await jobDone();
  const seen = await page.evaluate(() => ({ steps: [...window.seen.steps], previews: window.seen.previews }));
  assert.ok(seen.steps.length >= 2, `progress steps seen: ${seen.steps}`);
  assert.ok(seen.previews >= 1, 'a preview was shown');
  assert.match(await text('#progress-text'), /step 12 \/ 12/);
  assert.equal(await page.getAttribute('#preview', 'src'), null); // cleared when the job ended
  const size = await page.$eval('#result', (i) => [i.naturalWidth, i.naturalHeight]);
  assert.deepEqual(size, [64, 64]);
  const params = await text('#params');
  assert.match(params, /seed42/);
  assert.match(params, /size64×64/);
  assert.match(params, /negativeblurry/);
  assert.match(params, /samplereuler \(karras\)/);
  assert.match(params, /modeltiny-sd15$/);
  assert.equal(await page.$$eval('#gallery img', (a) => a.length), 1);
  assert.match(await text('#message'), /Done in/);
  assert.equal(await page.isEnabled('#generate'), true);
  // Download: the image itself, named by its seed.
  assert.match(await page.getAttribute('#download', 'href'), /^data:image\/png;base64,/);
  assert.equal(await page.getAttribute('#download', 'download'), 'sdworker-42.png');
  // No server path anywhere on the page.
  const html = await page.content();
  assert.ok(!html.includes(fixtures), 'the fixtures path is not shown');
});

test('a batch adds every image; the gallery survives a reload; parameters go back to the form', async () => {
  await page.fill('#steps', '2');
  await page.fill('#seed', '100');
  await page.fill('#batch', '2');
  await page.click('#generate');
  await jobDone();
  assert.match(await text('#message'), /2 images/);
  assert.equal(await page.$$eval('#gallery img', (a) => a.length), 3);
  await page.reload();
  await page.waitForFunction(() => document.querySelector('#sampler').options.length > 0);
  assert.equal(await page.$$eval('#gallery img', (a) => a.length), 3);
  // The oldest entry (seed 42, 12 steps) back into the form.
  await page.fill('#prompt', 'something else');
  await page.click('#gallery img:nth-child(3)');
  await page.click('#send-params');
  assert.equal(await page.inputValue('#prompt'), 'a lighthouse at dusk');
  assert.equal(await page.inputValue('#negative'), 'blurry');
  assert.equal(await page.inputValue('#steps'), '12');
  assert.equal(await page.inputValue('#seed'), '42');
  assert.equal(await page.inputValue('#sampler'), 'euler');
  assert.equal(await page.inputValue('#scheduler'), 'karras');
  // The second image of the batch had seed 101: reuse it.
  await page.click('#gallery img:nth-child(2)');
  await page.click('#reuse-seed');
  assert.equal(await page.inputValue('#seed'), '101');
});

test('image-to-image from an uploaded file, and inpainting with a painted mask', async () => {
  // The first result, as a file to upload.
  const src = await page.$eval('#gallery img:nth-child(3)', (i) => i.src);
  const file = path.join(tmp.dir, 'input.png');
  fs.writeFileSync(file, Buffer.from(src.split(',')[1], 'base64'));
  await page.fill('#batch', '1');
  await page.fill('#steps', '4');
  await page.fill('#seed', '7');
  await page.click('#modes button[data-mode=image_transform]');
  await page.setInputFiles('#init-file', file);
  await page.waitForSelector('#init-preview:not([hidden])');
  await page.$eval('#strength', (e) => { e.value = '0.5'; e.dispatchEvent(new Event('input')); });
  await page.click('#generate');
  await jobDone();
  assert.match(await text('#message'), /Done in/);
  assert.match(await text('#params'), /strength0.5/);

  await page.click('#modes button[data-mode=image_inpaint]');
  await page.click('#generate');
  assert.match(await text('#message'), /Paint the area/); // nothing painted yet
  await page.locator('#mask-canvas').scrollIntoViewIfNeeded(); // clicks scrolled the page
  const box = await page.locator('#mask-canvas').boundingBox();
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.3);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.6, { steps: 8 });
  await page.mouse.up();
  await page.click('#generate');
  await jobDone();
  assert.match(await text('#message'), /Done in/);
  const result = await page.$eval('#result', (i) => i.src);
  const img = decodePng(Buffer.from(result.split(',')[1], 'base64'));
  assert.deepEqual([img.width, img.height], [64, 64]);
  await page.click('#modes button[data-mode=image_generation]');
});

test('cancel stops a running job', async () => {
  const before = await page.$$eval('#gallery img', (a) => a.length);
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
  assert.equal(await page.getAttribute('#preview', 'src'), null);
  assert.equal(await page.$$eval('#gallery img', (a) => a.length), before); // nothing added
});

/* Every visible element inside the viewport's width: nothing sticks out or scrolls sideways. */
async function checkLayout(width) {
  await page.setViewportSize({ width, height: 900 });
  await page.waitForTimeout(100);
  const shot = path.join(tmp.dir, `web-${width}.png`);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`# screenshot: ${shot}`);
  const over = await page.evaluate(() => {
    const w = document.documentElement.clientWidth, bad = [];
    if (document.documentElement.scrollWidth > w) bad.push(`page ${document.documentElement.scrollWidth} > ${w}`);
    for (const el of document.querySelectorAll('body *')) {
      const r = el.getBoundingClientRect();
      if (!r.width || getComputedStyle(el).visibility === 'hidden') continue;
      if (r.right > w + 0.5 || r.left < -0.5) bad.push(`${el.tagName}#${el.id || ''}.${el.className} ${r.left}..${r.right}`);
    }
    return bad;
  });
  assert.deepEqual(over, [], `layout overflow at ${width} px`);
  const png = decodePng(fs.readFileSync(shot));
  assert.equal(png.width, width);
}

test('the layout fits at 1280 and 400 px wide (screenshots)', async () => {
  await page.click('#modes button[data-mode=image_inpaint]'); // the tallest form
  await checkLayout(1280);
  await checkLayout(400);
  // still usable at 400: the form's controls are reachable and wide enough to use
  const w = await page.$eval('#prompt', (e) => e.getBoundingClientRect().width);
  assert.ok(w > 300, `prompt box ${w} px`);
  await page.click('#modes button[data-mode=image_generation]');
  await page.setViewportSize({ width: 1280, height: 900 });
});
