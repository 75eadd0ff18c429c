// The AUTOMATIC1111 API as its clients call it (the requests mix1009's webuiapi and the
// a1111-webui-api package send; neither installs here: one is Python, the other needs sharp's
// prebuilt binaries): txt2img, png-info of the result, the lists clients read at start
// (upscalers, sd-vae, ...), progress with a client's query parameters; and /metrics read as a
// Prometheus scraper reads it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startServer } from './server.mjs';

let server;
const auth = { Authorization: 'Bearer a1111-key' };

before(async () => { server = await startServer(['--api-key', 'a1111-key', '-t', '1']); });
after(async () => assert.equal(await server.stop(), 0));

async function call(method, path, body) {
  const res = await fetch(server.url + path, {
    method, headers: { ...auth, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: res.headers.get('content-type')?.includes('json') ? await res.json() : await res.text() };
}

test('txt2img, then png-info reads the parameters back', async () => {
  const r = await call('POST', '/sdapi/v1/txt2img', {
    prompt: 'a lighthouse', negative_prompt: 'fog', width: 64, height: 64, steps: 2, seed: 11,
    sampler_name: 'Euler a', cfg_scale: 7, batch_size: 1, n_iter: 1, send_images: true, save_images: false,
  });
  assert.equal(r.status, 200);
  const info = JSON.parse(r.body.info);
  assert.equal(info.seed, 11);
  assert.deepEqual(info.warnings, []);
  // webuiapi sends the image as a data URL
  const p = await call('POST', '/sdapi/v1/png-info', { image: 'data:image/png;base64,' + r.body.images[0] });
  assert.equal(p.status, 200);
  assert.match(p.body.info, /^a lighthouse\nNegative prompt: fog\nSteps: 2, Sampler: Euler a/);
  assert.equal(p.body.parameters.Prompt, 'a lighthouse');
  assert.equal(p.body.parameters.Seed, '11');
  assert.equal(p.body.parameters['Size-1'], '64');
});

test('the lists clients read at start answer, empty or not', async () => {
  for (const [path, check] of [
    ['/sdapi/v1/upscalers', (b) => Array.isArray(b) && b[0].name === 'None'],
    ['/sdapi/v1/sd-vae', Array.isArray], ['/sdapi/v1/latent-upscale-modes', Array.isArray],
    ['/sdapi/v1/prompt-styles', Array.isArray], ['/sdapi/v1/loras', Array.isArray],
    ['/sdapi/v1/hypernetworks', Array.isArray], ['/sdapi/v1/face-restorers', Array.isArray],
    ['/sdapi/v1/embeddings', (b) => typeof b.loaded === 'object'],
    ['/sdapi/v1/scripts', (b) => Array.isArray(b.txt2img)],
    ['/sdapi/v1/memory', (b) => b.ram.total > 0], ['/sdapi/v1/cmd-flags', (b) => b.api === true],
    ['/sdapi/v1/sd-models', (b) => b[0].model_name === 'tiny-sd15' && !b[0].filename.includes('/')],
    ['/sdapi/v1/progress?skipCurrentImage=false', (b) => b.progress === 0],
  ]) {
    const r = await call('GET', path);
    assert.equal(r.status, 200, path);
    assert.ok(check(r.body), path);
  }
  assert.equal((await call('POST', '/sdapi/v1/refresh-checkpoints')).status, 200);
});

test('a checkpoint this worker does not serve is a 404, never a run with another model', async () => {
  const r = await call('POST', '/sdapi/v1/txt2img', {
    prompt: 'x', steps: 1, override_settings: { sd_model_checkpoint: 'v1-5-pruned-emaonly.safetensors [6ce0161689]' },
  });
  assert.equal(r.status, 404);
  assert.match(r.body.detail, /not found: this worker serves 'tiny-sd15'/);
});

test('/metrics parses as Prometheus text', async () => {
  const r = await call('GET', '/metrics');
  assert.equal(r.status, 200);
  const types = new Map();
  const samples = [];
  for (const line of r.body.split('\n')) {
    if (!line) continue;
    let m;
    if ((m = /^# TYPE (\w+) (counter|gauge|histogram)$/.exec(line))) { types.set(m[1], m[2]); continue; }
    if (line.startsWith('# HELP ')) continue;
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+-]+|\+Inf|NaN)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const family = m[1].replace(/_(bucket|sum|count)$/, '');
    assert.ok(types.has(m[1]) || types.get(family) === 'histogram', `undeclared: ${m[1]}`);
    samples.push({ name: m[1], labels: m[2] || '', value: Number(m[3]) });
  }
  const get = (name, labels = '') => samples.find((s) => s.name === name && s.labels === labels)?.value;
  assert.equal(get('sdw_model_loaded'), 1);
  assert.ok(get('sdw_jobs_total', '{state="succeeded"}') >= 1);
  assert.ok(get('sdw_images_total') >= 1);
  assert.ok(get('process_resident_memory_bytes') > 1e6);
  assert.equal(get('sdw_step_seconds_bucket', '{le="+Inf"}'), get('sdw_step_seconds_count'));
  assert.equal(types.get('sdw_step_seconds'), 'histogram');
});
