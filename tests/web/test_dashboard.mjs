// test_dashboard.mjs: the dashboard in a real headless Chromium (Debian's
// chromium, driven by playwright-core from web/node_modules), against a real
// `resnetd serve` on loopback with a small real job.
//
//   node --test tests/web/        (tests/run.sh runs it; needs `make all` first)
//
// - the job list shows the job with its state and progress;
// - the job view's loss chart has one point per finished epoch (as /metrics says)
//   and gains a point when the next epoch ends, live from the event stream;
// - the confusion matrix is classes x classes; per-class rows, predicted-class
//   bars and the dataset's class counts are there; findings are listed;
// - the step-loss smoothing slider changes the smoothed curve's data;
// - cancel in the job view turns the job "cancelled";
// - compare overlays two jobs' validation curves;
// - a bad schedule in the submit form shows the server's error naming the field;
// - with a token: the page asks for it once (a prompt) and the change goes through;
// - screenshots of the job view (desktop and phone width), the list, compare and
//   submit go to $RESNETD_BUILD_DIR/test-logs/web/ for a person to look at.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BUILD = path.resolve(ROOT, process.env.RESNETD_BUILD_DIR || 'build');
const OUT = path.join(BUILD, 'test-logs', 'web');
const require = createRequire(path.join(ROOT, 'web', 'package.json'));
const { chromium } = require('playwright-core');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'resnetd-web-'));
const daemons = [];
let browser;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}

async function startDaemon(name, extra = []) {
  const port = await freePort();
  const log = fs.openSync(path.join(tmp, name + '.log'), 'w');
  const proc = spawn(path.join(BUILD, 'resnetd'), ['serve', '--listen', `127.0.0.1:${port}`,
    '--data-dir', path.join(tmp, name), '--data-root', path.join(tmp, 'data'), ...extra],
  { stdio: ['ignore', log, log], env: { ...process.env, RESNETD_WEB_DIR: path.join(ROOT, 'web') } });
  const url = `http://127.0.0.1:${port}`;
  daemons.push(proc);
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`resnetd serve exited: ${fs.readFileSync(path.join(tmp, name + '.log'), 'utf8')}`);
    try { if ((await fetch(url + '/api/health')).ok) return url; } catch (e) { /* not yet */ }
    await new Promise(r => setTimeout(r, 100));
  }
  throw new Error('resnetd serve did not answer');
}

async function call(url, method, p, body, tok) {
  const headers = { 'Content-Type': 'application/json' };
  if (tok) headers.Authorization = 'Bearer ' + tok;
  const r = await fetch(url + p, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = await r.json();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${JSON.stringify(data)}`);
  return data;
}

const JOB = {
  name: 'web-live', dataset: 'fm', weights: 'random', preprocess: 'torch', input_size: 64, batch_size: 8, seed: 3,
  augment: { hflip: true },
  phases: [{ name: 'scratch', epochs: 3, train: 'all', bn: 'train', optimizer: { type: 'adam', lr: 0.001 } },
    { name: 'more', epochs: 40, train: 'all', bn: 'train', optimizer: { type: 'adam', lr: 0.0005 } }],
};

let url;
before(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  fs.mkdirSync(path.join(tmp, 'data'));
  execFileSync(path.join(BUILD, 'tools', 'fmnist_to_png'), [path.join(tmp, 'data', 'fm'), '--classes', '0,1,7',
    '--per-class', '20', '--size', '64'], { stdio: 'ignore' });
  url = await startDaemon('main');
  await call(url, 'POST', '/api/datasets', { name: 'fm', path: 'fm' });
  await call(url, 'POST', '/api/jobs', JOB);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
});

after(async () => {
  if (browser) await browser.close();
  for (const d of daemons) d.kill('SIGTERM');
  await new Promise(r => setTimeout(r, 500));
  for (const d of daemons) if (d.exitCode === null) d.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function waitFor(fn, what, ms = 60000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await new Promise(r => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

async function epochsDone(u, id) { return (await call(u, 'GET', `/api/jobs/${id}/metrics`)).epochs.length; }

test('the job list shows the job, its state and progress', async () => {
  await waitFor(async () => (await epochsDone(url, 1)) >= 1, 'the first epoch');
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(url + '/#/');
  const row = page.locator('tr[data-job="1"]');
  await row.waitFor();
  assert.match(await row.textContent(), /web-live/);
  assert.equal(await row.locator('.state').getAttribute('data-state'), 'running');
  const bar = row.locator('[role=progressbar]');
  assert.equal(await bar.getAttribute('aria-valuemax'), '43');
  assert.ok(Number(await bar.getAttribute('aria-valuenow')) >= 1);
  await page.screenshot({ path: path.join(OUT, 'jobs.png'), fullPage: true });
  await page.close();
});

test('the loss chart has a point per finished epoch and gains one live', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(url + '/#/jobs/1');
  const chart = page.locator('#chart-loss');
  await chart.locator('canvas').waitFor();
  // the page's points equal the epochs /metrics has (sampled together, until they agree)
  const n = await waitFor(async () => {
    const shown = Number(await chart.getAttribute('data-points'));
    const api = await epochsDone(url, 1);
    return shown === api && shown >= 1 ? shown : 0;
  }, 'the chart to match /metrics');
  // the next epoch arrives over the event stream, without reloading
  await waitFor(async () => Number(await chart.getAttribute('data-points')) === n + 1, 'one more point');
  const steps = Number(await page.locator('#chart-steps').getAttribute('data-points'));
  assert.ok(steps >= (n + 1) * 5, `step chart has ${steps} points`);
  await page.screenshot({ path: path.join(OUT, 'job-desktop.png'), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(OUT, 'job-phone.png'), fullPage: true });
  await page.close();
});

test('the confusion matrix, per-class table, histograms and findings are there', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(url + '/#/jobs/1');
  const heat = page.locator('#confusion');
  await heat.waitFor();
  assert.equal(await heat.getAttribute('data-size'), '3');
  assert.equal(await heat.locator('tbody tr').count(), 3);
  assert.equal(await heat.locator('tbody tr').first().locator('td').count(), 3);
  // the matrix's total is the val split's size
  const cells = (await heat.locator('tbody td').allTextContents()).map(Number);
  const val = (await call(url, 'GET', '/api/datasets/fm')).report.totals.val;
  assert.equal(cells.reduce((a, b) => a + b, 0), val);
  assert.equal(await page.locator('#class-table tbody tr').count(), 3);
  assert.equal(await page.locator('#predicted tr').count(), 3);
  const counts = await page.locator('#counts tr').allTextContents();
  assert.equal(counts.length, 3);
  assert.match(counts.join(' '), /16 train, 4 val/);
  // 64x64 from random weights with BN in train mode at batch 8: the preflight flags it
  await page.locator('#findings [data-code="BN_SMALL_BATCH"]').waitFor();
  assert.match(await page.locator('#findings [data-code="BN_SMALL_BATCH"]').textContent(), /batch_size/);
  // the smoothing slider changes the smoothed series
  const before = await page.evaluate(() => document.querySelector('#smoothing').value);
  await page.locator('#smoothing').fill('0.95');
  assert.notEqual(before, await page.evaluate(() => document.querySelector('#smoothing').value));
  await page.close();
});

test('compare overlays two jobs', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const second = await call(url, 'POST', '/api/jobs', { ...JOB, name: 'web-queued', phases: [JOB.phases[0]] });
  await page.goto(url + `/#/compare?ids=1,${second.id}`);
  await page.locator('#compare-loss canvas').waitFor();
  assert.equal(await page.locator('#compare-pick input:checked').count(), 2);
  // two series plus x: the legend lists both jobs
  const legend = await page.locator('#compare-loss .u-legend').textContent();
  assert.match(legend, /#1 web-live/);
  assert.match(legend, new RegExp(`#${second.id} web-queued`));
  await page.screenshot({ path: path.join(OUT, 'compare.png'), fullPage: true });
  await page.close();
});

test('cancel in the job view turns the job cancelled', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(url + '/#/jobs/1');
  await page.locator('#cancel').click();
  await page.locator('h1 + .row .state[data-state="cancelled"]').waitFor({ timeout: 60000 });
  assert.equal((await call(url, 'GET', '/api/jobs/1')).state, 'cancelled');
  await page.close();
});

test('a bad schedule shows the server error next to the field', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(url + '/#/submit');
  const editor = page.locator('#spec');
  await editor.waitFor();
  const spec = JSON.parse(await editor.inputValue());
  assert.equal(spec.dataset, 'fm');
  spec.phases[1].optimizer.lr = -1;
  await editor.fill(JSON.stringify(spec, null, 2));
  await page.locator('#submit').click();
  const err = page.locator('#spec-error .field-error');
  await err.waitFor();
  assert.equal(await err.getAttribute('data-path'), 'phases[1].optimizer.lr');
  assert.match(await err.textContent(), /phases\[1\]\.optimizer\.lr.*must be a number/);
  // the editor selects the line of the offending key
  const sel = await editor.evaluate(t => t.value.slice(t.selectionStart, t.selectionEnd));
  assert.match(sel, /"lr": -1/);
  await page.screenshot({ path: path.join(OUT, 'submit-error.png'), fullPage: true });
  // fixed, it goes through and opens the new job
  spec.phases[1].optimizer.lr = 0.001;
  spec.phases = [spec.phases[0]];
  spec.phases[0].epochs = 1;
  await editor.fill(JSON.stringify(spec, null, 2));
  await page.locator('#submit').click();
  await page.waitForURL(/#\/jobs\/\d+$/);
  await page.close();
});

test('with a token the page asks for it once and sends it', async () => {
  const secured = await startDaemon('secured', ['--token', 's3cret']);
  await call(secured, 'POST', '/api/datasets', { name: 'fm', path: 'fm' }, 's3cret');
  await call(secured, 'POST', '/api/jobs', { ...JOB, name: 'secured' }, 's3cret');
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  let prompts = 0;
  page.on('dialog', d => { prompts++; d.accept('s3cret'); });
  await page.goto(secured + '/#/jobs/1');
  await page.locator('#cancel').click();
  await page.locator('h1 + .row .state[data-state="cancelled"]').waitFor({ timeout: 60000 });
  assert.equal(prompts, 1);
  assert.equal(await page.evaluate(() => localStorage.getItem('resnetd-token')), 's3cret');
  await page.close();
});
