// Starts `sdw serve` (the binary under test: $SDW_BIN) on a free loopback port with the tiny
// fixture model ($SDW_FIXTURES/models/tiny-sd15), waits until it is ready, and stops it.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const fixtures = process.env.SDW_FIXTURES || path.resolve('../../../shared/fixtures');
const bin = process.env.SDW_BIN || path.resolve('../../build/sdw');

export async function startServer(args = []) {
  const model = path.join(fixtures, 'models/tiny-sd15');
  const child = spawn(bin, ['serve', '--port', '0', '-m', model, '-q', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('sdw serve did not start: ' + out)), 30000);
    child.on('exit', (code) => reject(new Error(`sdw serve exited with ${code}: ${out}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
  });
  const key = args.includes('--api-key') ? args[args.indexOf('--api-key') + 1] : null;
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  for (let i = 0; ; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/ready`, { headers });
      if (r.status === 200) break;
    } catch (e) { /* not yet */ }
    if (i > 300) throw new Error('sdw serve never became ready');
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      child.removeAllListeners('exit');
      const done = new Promise((r) => child.on('exit', (code) => r(code)));
      child.kill('SIGTERM');
      return done;
    },
  };
}

// A fresh temporary folder for this test's files; kept when SDW_E2E_KEEP is set (to look at the
// screenshot), removed otherwise.
export function tempDir(name) {
  const dir = fs.mkdtempSync(path.join(process.env.TMPDIR || os.tmpdir(), `sdw-e2e-${name}-`));
  return {
    dir,
    cleanup() {
      if (process.env.SDW_E2E_KEEP) console.log(`# kept ${dir}`);
      else fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
