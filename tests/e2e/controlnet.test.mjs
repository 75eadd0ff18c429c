// The web page's ControlNet panel, driven in headless Chromium against `sdw serve
// --controlnet-dir`: the panel lists the folder's ControlNets, an uploaded control image with
// the golden's settings gives the reference's image (golden tiny-sd15/txt2img-ddim-controlnet,
// within 2 levels), and a model without an image is refused on the page.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { decodePng } from './png.mjs';
import { fixtures, startServer, tempDir } from './server.mjs';

const golden = path.join(fixtures, 'golden/tiny-sd15/txt2img-ddim-controlnet');
let server, tmp, context, page;

before(async () => {
  server = await startServer(['-t', '1', '--controlnet-dir', path.join(fixtures, 'models')]);
  tmp = tempDir('controlnet');
  context = await chromium.launchPersistentContext(path.join(tmp.dir, 'profile'), {
    executablePath: process.env.SDW_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: 1280, height: 900 },
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
const jobDone = (timeout = 120000) =>
  page.waitForFunction(() => !document.querySelector('#generate').disabled, null, { timeout });

test('the panel lists the ControlNets and reproduces the reference image', async () => {
  await page.goto(server.url + '/');
  await page.waitForFunction(() => document.querySelector('#cn-model').options.length > 1);
  assert.equal(await page.isHidden('#controlnet'), false);
  const names = await page.$$eval('#cn-model option', (os) => os.map((o) => o.value));
  assert.deepEqual(names, ['', 'tiny-sd15-controlnet']);
  await page.click('#controlnet summary');
  await page.fill('#prompt', 'a photo of a cat');
  await page.fill('#width', '64');
  await page.fill('#height', '64');
  await page.fill('#steps', '4');
  await page.fill('#guidance', '7.5');
  await page.fill('#seed', '42');
  await page.selectOption('#sampler', 'ddim');
  await page.selectOption('#cn-model', 'tiny-sd15-controlnet');
  await page.click('#generate');
  assert.match(await text('#message'), /control image/); // a model without its image
  await page.setInputFiles('#cn-file', path.join(golden, 'control_image.png'));
  await page.waitForSelector('#cn-preview:not([hidden])');
  await page.click('#generate');
  await jobDone();
  assert.match(await text('#message'), /Done in/);
  const src = await page.$eval('#result', (i) => i.src);
  const got = decodePng(Buffer.from(src.split(',')[1], 'base64'));
  const want = decodePng(fs.readFileSync(path.join(golden, 'image.png')));
  assert.deepEqual([got.width, got.height], [want.width, want.height]);
  let worst = 0;
  for (let p = 0; p < got.width * got.height; p++)
    for (let c = 0; c < 3; c++)
      worst = Math.max(worst, Math.abs(got.pixels[p * got.channels + c] - want.pixels[p * want.channels + c]));
  console.log(`# max diff ${worst} levels from the reference`);
  assert.ok(worst <= 2, `max diff ${worst}`);
});
