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
// - weights: a daemon with a test manifest (--weights-manifest) whose
//   torchvision-v1 is a real model (a tiny job's export) served by a loopback
//   HTTP server the test holds at 25% and 60% of the file: the submit form's
//   Weights select has the four groups (random; imagenet, the manifest's names,
//   an unpinned one disabled; an uploaded file; finished jobs as job:ID) and sets
//   preprocess; a job submitted with torchvision-v1 shows "downloading weights
//   25% (..)" in its view and the list, 60% live from the event stream, then runs
//   and completes, and is offered as job:ID; a manifest that does not load is
//   named under the select;
// - screenshots of the job view (desktop and phone width), the list, compare and
//   submit go to $RESNETD_BUILD_DIR/test-logs/web/ for a person to look at.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
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
const servers = [];
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
  for (const s of servers) s.close();
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

/* ---- weights: the submit form's choices and a job waiting for its download ---- */

/* A loopback HTTP server for a manifest's URL /tv1: it sends the file up to
 * each of stops (byte offsets) and holds there until release(i), so that the
 * page can be read at a known percentage. (tests/tools/test_weights_pull.py's
 * LoopbackServer "slow" mode sends a whole file in about 1.5 s: too quick to
 * read off a list that refreshes every 2 s.) Range "bytes=N-" is honoured, in
 * case the daemon resumes. close() releases every hold and drops connections. */
async function gatedServer(data, stops) {
  const holds = stops.map(() => { let open; const held = new Promise(r => { open = r; }); return { held, open }; });
  const requests = [];
  const server = http.createServer(async (req, res) => {
    requests.push({ path: req.url, range: req.headers.range || null });
    if (req.url !== '/tv1') { res.writeHead(404, { 'Content-Length': 0 }); res.end(); return; }
    const m = /^bytes=(\d+)-$/.exec(req.headers.range || '');
    const start = m ? Math.min(Number(m[1]), data.length) : 0;
    res.writeHead(start ? 206 : 200, { 'Content-Length': data.length - start,
      ...(start ? { 'Content-Range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}) });
    let at = start;
    for (let i = 0; i < stops.length; i++) {
      if (stops[i] > at) { res.write(data.subarray(at, stops[i])); at = stops[i]; }
      await holds[i].held;
    }
    res.end(data.subarray(at));
  });
  await new Promise(r => server.listen(0, '127.0.0.1', r));
  const handle = {
    url: p => `http://127.0.0.1:${server.address().port}${p}`,
    requests,
    release: i => holds[i].open(),
    close: () => { holds.forEach(x => x.open()); server.closeAllConnections(); server.close(); },
  };
  servers.push(handle);
  return handle;
}

/* The select's groups as the page has them: [{label, options: [{value, text, disabled}]}]. */
const weightGroups = page => page.locator('#weights').evaluate(sel => [...sel.querySelectorAll('optgroup')].map(g => ({
  label: g.label, options: [...g.querySelectorAll('option')].map(o => ({ value: o.value, text: o.textContent, disabled: o.disabled })),
})));

/* true once job id has completed; a job that failed or was cancelled fails the test at once */
async function completed(u, id) {
  const j = await call(u, 'GET', `/api/jobs/${id}`);
  assert.ok(!['failed', 'cancelled'].includes(j.state), JSON.stringify(j));
  return j.state === 'completed';
}

const megabytes = n => n / 1e6 < 10 ? (n / 1e6).toFixed(1) : String(Math.round(n / 1e6));

const named = {}; // what the weights tests share: the daemon, the mirror, the model, the job

test('weights: the submit form offers random, named weights, files and finished jobs', async () => {
  // a real model: a tiny completed job's export (it waits behind the jobs above)
  const pre = await call(url, 'POST', '/api/jobs', { ...JOB, name: 'web-pretrain', input_size: 32,
    phases: [{ name: 'scratch', epochs: 1, train: 'all', bn: 'train', optimizer: { type: 'adam', lr: 0.001 } }] });
  await waitFor(() => completed(url, pre.id), 'the pretraining job', 600000);
  const r = await fetch(url + `/api/jobs/${pre.id}/weights`);
  assert.equal(r.status, 200);
  const model = Buffer.from(await r.arrayBuffer());
  // held at 25.5% and 60.5% of the file, read as 25% and 60%
  const stops = [Math.ceil(model.length * 0.255), Math.ceil(model.length * 0.605)];
  const mirror = await gatedServer(model, stops);
  const sha256 = crypto.createHash('sha256').update(model).digest('hex');
  const entry = (p, file, extra = {}) => ({ url: mirror.url(p), file, size: model.length, sha256, md5: null,
    format: 'safetensors', variant: 'torchvision', preprocess: 'torch', classes: 3, top1: null,
    description: 'test file', ...extra });
  const manifest = path.join(tmp, 'manifest.json');
  fs.writeFileSync(manifest, JSON.stringify({ weights: {
    'torchvision-v1': entry('/tv1', 'torchvision-v1.safetensors', { top1: 76.13 }),
    unpinned: entry('/unpinned', 'unpinned.safetensors', { sha256: null }),
  } }));
  const d = await startDaemon('named', ['--weights-manifest', manifest]);
  await call(d, 'POST', '/api/datasets', { name: 'fm', path: 'fm' });
  const put = await fetch(d + '/api/weights/mine.safetensors', { method: 'PUT',
    headers: { 'Content-Type': 'application/octet-stream' }, body: model });
  assert.equal(put.status, 201, await put.text());
  Object.assign(named, { d, mirror, model, stops });

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(d + '/#/submit');
  await page.locator('#weights optgroup').first().waitFor({ state: 'attached' });
  const groups = await weightGroups(page);
  assert.deepEqual(groups.map(g => g.label),
    ['Train from scratch', 'Pretrained (download once)', 'Files in the weights folder', 'Finished jobs']);
  assert.deepEqual(groups[0].options.map(o => o.value), ['random']);
  const pretrained = Object.fromEntries(groups[1].options.map(o => [o.value, o]));
  assert.deepEqual(Object.keys(pretrained).sort(), ['imagenet', 'torchvision-v1', 'unpinned']);
  const mb = megabytes(model.length);
  assert.equal(pretrained['torchvision-v1'].text, `torchvision-v1 (torchvision, top-1 76.13%, downloads ${mb} MB on submit)`);
  assert.match(pretrained.imagenet.text, /^imagenet = torchvision-v1 \(/);
  assert.equal(pretrained['torchvision-v1'].disabled, false);
  assert.equal(pretrained.unpinned.disabled, true);
  assert.match(pretrained.unpinned.text, /pins no hash/);
  assert.deepEqual(groups[2].options.map(o => [o.value, o.disabled]), [['mine.safetensors', false]]);
  // no finished job on this daemon yet: one disabled line saying so
  assert.deepEqual(groups[3].options.map(o => [o.value, o.disabled]), [['', true]]);
  assert.equal(await page.locator('#weights-note').count(), 0);
  // the choice goes into the spec, with the preprocessing that fits it
  const spec = async () => JSON.parse(await page.locator('#spec').inputValue());
  await page.selectOption('#weights', 'mine.safetensors');
  assert.deepEqual([(await spec()).weights, (await spec()).preprocess], ['mine.safetensors', 'auto']);
  await page.selectOption('#weights', 'random');
  assert.deepEqual([(await spec()).weights, (await spec()).preprocess], ['random', 'torch']);
  await page.selectOption('#weights', 'imagenet');
  assert.deepEqual([(await spec()).weights, (await spec()).preprocess], ['imagenet', 'auto']);
  await page.screenshot({ path: path.join(OUT, 'submit-weights.png'), fullPage: true });
  await page.close();
  assert.equal(mirror.requests.length, 0, 'listing the manifest downloads nothing');
});

test('weights: a job whose named weights download shows the percentage, then runs', async () => {
  assert.ok(named.d, 'the previous test set up the daemon');
  const { d, mirror, model, stops } = named;
  const view = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await view.goto(d + '/#/submit');
  await view.locator('#weights option[value="torchvision-v1"]').waitFor({ state: 'attached' });
  await view.selectOption('#weights', 'torchvision-v1');
  const spec = JSON.parse(await view.locator('#spec').inputValue());
  assert.deepEqual([spec.weights, spec.preprocess, spec.dataset], ['torchvision-v1', 'auto', 'fm']);
  Object.assign(spec, { name: 'web-fetch', input_size: 32, batch_size: 8,
    phases: [{ name: 'head', epochs: 1, train: 'head', optimizer: { type: 'adam', lr: 0.01 } }] });
  delete spec.early_stopping;
  await view.locator('#spec').fill(JSON.stringify(spec, null, 2));
  await view.locator('#submit').click();
  await view.waitForURL(/#\/jobs\/\d+$/);
  const id = Number(view.url().match(/#\/jobs\/(\d+)$/)[1]);
  const label = n => `downloading weights ${n}% (${megabytes(stops[n === 25 ? 0 : 1])} of ${megabytes(model.length)} MB)`;

  // held at the first stop: the view and the list say 25%
  const header = view.locator('h1 + .row');
  await waitFor(async () => (await header.locator('.fetch-label').count()) &&
    (await header.locator('.fetch-label').textContent()) === label(25), 'the view to show 25%', 60000);
  assert.equal(await header.locator('.state').getAttribute('data-state'), 'fetching');
  assert.equal(await header.locator('#fetch-progress [role=progressbar]').getAttribute('aria-valuenow'), '25');
  assert.equal(await header.locator('#cancel').count(), 1);
  // the API agrees: every byte up to the stop arrived, none past it
  const api = await waitFor(async () => {
    const j = await call(d, 'GET', `/api/jobs/${id}`);
    return j.fetch && j.fetch.done === stops[0] ? j : null;
  }, 'the job to report the bytes up to the first stop');
  assert.equal(api.state, 'fetching');
  assert.deepEqual([api.fetch.weights, api.fetch.total], ['torchvision-v1', model.length]);
  await view.evaluate(() => { window.notReloaded = true; });
  await view.screenshot({ path: path.join(OUT, 'job-fetching.png'), fullPage: true });
  const list = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await list.goto(d + '/#/');
  const row = list.locator(`tr[data-job="${id}"]`);
  await row.waitFor();
  assert.equal(await row.locator('.state').getAttribute('data-state'), 'fetching');
  assert.equal(await row.locator('.fetch-label').textContent(), label(25));
  await list.screenshot({ path: path.join(OUT, 'jobs-fetching.png'), fullPage: true });

  // the next stop: the open view follows the "fetch" events, the list its refresh
  mirror.release(0);
  await waitFor(async () => (await header.locator('.fetch-label').textContent()) === label(60), 'the view to show 60%');
  assert.equal(await view.evaluate(() => window.notReloaded), true);
  await waitFor(async () => (await row.locator('.fetch-label').count()) &&
    (await row.locator('.fetch-label').textContent()) === label(60), 'the list to show 60%');

  // the rest: the job queues, runs and completes; the view turns normal
  mirror.release(1);
  await waitFor(async () => ['queued', 'running', 'completed'].includes(
    await header.locator('.state').getAttribute('data-state')), 'the view to leave fetching');
  assert.equal(await header.locator('.fetch-label').count(), 0);
  await waitFor(() => completed(d, id), 'the job to complete', 300000);
  await header.locator('.state[data-state="completed"]').waitFor({ timeout: 30000 });
  await waitFor(async () => (await row.locator('.state').getAttribute('data-state')) === 'completed', 'the list to say completed');
  assert.equal(await row.locator('.fetch-label').count(), 0);
  assert.equal(mirror.requests.filter(q => q.path === '/tv1').length, 1);
  await list.close();

  // now downloaded, and the finished job is a choice of its own
  await view.goto(d + '/#/submit');
  await view.locator('#weights optgroup').first().waitFor({ state: 'attached' });
  const groups = await weightGroups(view);
  const tv1 = groups[1].options.find(o => o.value === 'torchvision-v1');
  assert.match(tv1.text, /, downloaded\)$/);
  // the downloaded file is listed once, under its name
  assert.deepEqual(groups[2].options.map(o => o.value), ['mine.safetensors']);
  assert.deepEqual(groups[3].options.map(o => [o.value, o.text, o.disabled]), [[`job:${id}`, `job ${id}: web-fetch`, false]]);
  await view.selectOption('#weights', `job:${id}`);
  assert.equal(JSON.parse(await view.locator('#spec').inputValue()).weights, `job:${id}`);
  await view.close();
});

test('weights: a manifest that does not load is named under the select', async () => {
  const d = await startDaemon('nomanifest', ['--weights-manifest', path.join(tmp, 'missing.json')]);
  const w = await call(d, 'GET', '/api/weights');
  assert.ok(w.named_error, JSON.stringify(w));
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(d + '/#/submit');
  const note = page.locator('#weights-note');
  await note.waitFor();
  assert.equal(await note.textContent(), 'Pretrained weights are unavailable: ' + w.named_error);
  assert.equal(await page.locator('#weights').getAttribute('aria-describedby'), 'weights-note');
  const groups = await weightGroups(page);
  assert.deepEqual(groups[1].options.map(o => [o.value, o.disabled]), [['', true]]);
  await page.close();
});
