// The official openai npm package, unmodified, against `sdw serve` (with an API key): images
// (generate, edit, createVariation), their streaming iterators, models, and errors as the SDK's
// classes.
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

test('images.generate with stream: true yields partial images, then the completed one', async () => {
  const stream = await client.images.generate({
    prompt: 'a photo of a cat', size: '64x64', steps: 6, seed: 3, stream: true, partial_images: 2,
  });
  const events = [];
  for await (const ev of stream) events.push(ev);
  // Partial images come from the job's previews as it passes 1/3 and 2/3 of its steps (a slow
  // reader may see the end first: OpenAI allows fewer), then the completed image.
  const types = events.map((e) => e.type), partial = events.slice(0, -1);
  assert.equal(types.at(-1), 'image_generation.completed');
  assert.ok(partial.length >= 1 && partial.length <= 2, types.join());
  assert.ok(partial.every((e, i) => e.type === 'image_generation.partial_image' && e.partial_image_index === i));
  for (const e of events) {
    const png = decodePng(Buffer.from(e.b64_json, 'base64'));
    assert.ok(png.width > 0);
    assert.equal(e.output_format, 'png');
  }
  const done = events.at(-1);
  assert.equal(done.size, '64x64');
  assert.equal(typeof done.usage.total_tokens, 'number');
  // The completed image is the image a plain call gives for the same seed.
  const plain = await client.images.generate({ prompt: 'a photo of a cat', size: '64x64', steps: 6, seed: 3 });
  assert.deepEqual(decodePng(Buffer.from(done.b64_json, 'base64')).pixels,
                   decodePng(Buffer.from(plain.data[0].b64_json, 'base64')).pixels);
});

test('images.edit with stream: true yields image_edit events', async () => {
  const src = await client.images.generate({ prompt: 'a photo of a cat', size: '64x64', steps: 2 });
  const image = await toFile(Buffer.from(src.data[0].b64_json, 'base64'), 'cat.png', { type: 'image/png' });
  const stream = await client.images.edit({ image, prompt: 'a dog', size: '64x64', steps: 4, stream: true,
                                            partial_images: 1 });
  const types = [];
  for await (const ev of stream) types.push(ev.type);
  assert.equal(types.at(-1), 'image_edit.completed');
  assert.ok(types.every((t) => t.startsWith('image_edit.')));
});

test('images.createVariation runs image-to-image from the image alone', async () => {
  const src = await client.images.generate({ prompt: 'a photo of a cat', size: '64x64', steps: 2 });
  const image = await toFile(Buffer.from(src.data[0].b64_json, 'base64'), 'cat.png', { type: 'image/png' });
  const res = await client.images.createVariation({ image, n: 2, size: '64x64' });
  assert.equal(res.data.length, 2);
  const img = decodePng(Buffer.from(res.data[0].b64_json, 'base64'));
  assert.deepEqual([img.width, img.height], [64, 64]);
  assert.match(img.text.parameters, /Denoising strength: 0.75/);
});

test('unknown routes and several images come back as the SDK error classes', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'hi' }] }),
    (e) => e instanceof OpenAI.NotFoundError && /no such endpoint: POST \/v1\/chat\/completions/.test(e.message));
  const src = await client.images.generate({ prompt: 'x', size: '64x64', steps: 1 });
  const buf = Buffer.from(src.data[0].b64_json, 'base64');
  const a = await toFile(buf, 'a.png', { type: 'image/png' }), b = await toFile(buf, 'b.png', { type: 'image/png' });
  await assert.rejects(client.images.edit({ image: [a, b], prompt: 'x' }),
    (e) => e instanceof OpenAI.BadRequestError && /one image at a time/.test(e.message) && e.param === 'image');
});
