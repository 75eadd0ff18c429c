// The official openai npm package, unmodified, against `sdw serve` (with an API key).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI, { toFile } from 'openai';
import { decodePng } from './png.mjs';
import { startServer } from './server.mjs';

let server, client;

before(async () => {
  server = await startServer(['--api-key', 'e2e-key', '-t', '1']);
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'e2e-key', maxRetries: 0 });
});
after(async () => assert.equal(await server.stop(), 0));

test('images.generate returns a decodable PNG of the asked size', async () => {
  const res = await client.images.generate({
    model: 'tiny-sd15', prompt: 'a photo of a cat', size: '64x64', n: 2,
    response_format: 'b64_json',
  });
  assert.equal(typeof res.created, 'number');
  assert.equal(res.data.length, 2);
  for (const d of res.data) {
    const img = decodePng(Buffer.from(d.b64_json, 'base64'));
    assert.equal(img.width, 64);
    assert.equal(img.height, 64);
    assert.equal(img.channels, 3);
    assert.match(img.text.parameters, /^a photo of a cat\nSteps: 20, /);
  }
  // Two images of one request have different seeds, hence different pixels.
  const [a, b] = res.data.map((d) => decodePng(Buffer.from(d.b64_json, 'base64')).pixels);
  assert.notDeepEqual(a, b);
});

test('images.generate with output_format jpeg and webp', async () => {
  for (const [fmt, check] of [['jpeg', (b) => b[0] === 0xff && b[1] === 0xd8],
                              ['webp', (b) => b.toString('latin1', 8, 12) === 'WEBP']]) {
    const res = await client.images.generate({ prompt: 'x', size: '64x64', steps: 1, output_format: fmt });
    assert.ok(check(Buffer.from(res.data[0].b64_json, 'base64')), fmt);
  }
});

test('images.edit (multipart upload) returns the edited image', async () => {
  const src = await client.images.generate({ prompt: 'a photo of a cat', size: '64x64', steps: 2 });
  const image = await toFile(Buffer.from(src.data[0].b64_json, 'base64'), 'cat.png', { type: 'image/png' });
  const res = await client.images.edit({ image, prompt: 'a photo of a dog', size: '64x64' });
  const img = decodePng(Buffer.from(res.data[0].b64_json, 'base64'));
  assert.deepEqual([img.width, img.height], [64, 64]);
  assert.match(img.text.parameters, /Denoising strength: 0.75/);
});

test('models.list names the loaded model', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ['tiny-sd15']);
});

test('errors come back as the SDK error classes with the message', async () => {
  await assert.rejects(client.images.generate({ prompt: 'x', size: 'huge' }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /WIDTHxHEIGHT/.test(e.message)
           && e.param === 'size');
  const wrong = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(wrong.images.generate({ prompt: 'x' }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  // A mask of another size: the server's message comes through the SDK's multipart upload.
  const png = await client.images.generate({ prompt: 'x', size: '64x64', steps: 1 });
  const image = await toFile(Buffer.from(png.data[0].b64_json, 'base64'), 'in.png', { type: 'image/png' });
  const other = await client.images.generate({ prompt: 'x', size: '72x64', steps: 1 });
  const mask = await toFile(Buffer.from(other.data[0].b64_json, 'base64'), 'mask.png', { type: 'image/png' });
  await assert.rejects(client.images.edit({ image, mask, prompt: 'a cat' }),
    (e) => e instanceof OpenAI.BadRequestError && /mask size 72x64 does not match/.test(e.message));
});
