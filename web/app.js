/*
 * resnetd dashboard: talks only to the REST API (docs/api.md).
 * Views (hash routes): #/ jobs, #/jobs/ID one job, #/compare, #/submit.
 * A job's view follows /api/jobs/ID/events (server-sent events) and redraws as
 * steps, epochs, findings and state changes arrive.
 */
'use strict';

/* Okabe-Ito: distinguishable with the common colour-vision deficiencies */
const COLORS = ['#0072b2', '#e69f00', '#009e73', '#d55e00', '#cc79a7', '#56b4e9', '#f0e442', '#000000'];

/* ---- small DOM helpers ---------------------------------------------------- */

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const fmt = (v, d = 4) => (v === null || v === undefined || Number.isNaN(v)) ? '–' : Number(v).toFixed(d);
const pct = v => (v === null || v === undefined) ? '–' : (100 * v).toFixed(1) + '%';
/* Decimal megabytes, as the manifest and docs/weights.md quote sizes ("102 MB"). */
const megabytes = n => n / 1e6 < 10 ? (n / 1e6).toFixed(1) : String(Math.round(n / 1e6));

/* ---- API -------------------------------------------------------------------- */

function token() { return localStorage.getItem('resnetd-token') || ''; }

function askToken(reason) {
  const t = window.prompt((reason ? reason + '\n\n' : '') + 'API token (Authorization: Bearer ...):', token());
  if (t !== null) localStorage.setItem('resnetd-token', t.trim());
  return t !== null;
}

/* Calls the API; throws {status, error} on an error answer. A 401 asks for the
 * token once and retries. */
async function api(method, path, body, retried) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token()) headers.Authorization = 'Bearer ' + token();
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)) });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (r.status === 401 && !retried && askToken('This daemon needs a token for changes.')) return api(method, path, body, true);
  if (!r.ok) throw { status: r.status, error: (data && data.error) || { code: 'http', message: r.statusText } };
  return data;
}

function showError(container, e) {
  const err = e && e.error ? e.error : { message: String(e) };
  container.replaceChildren(h('p', { class: 'field-error', role: 'alert' }, err.message));
}

/* ---- charts (uPlot) -------------------------------------------------------- */

/* Vertical dashed lines at the first epoch of each phase after the first. */
function phaseLines(getBoundaries) {
  return {
    hooks: {
      draw: [u => {
        const ctx = u.ctx;
        ctx.save();
        ctx.strokeStyle = '#888';
        ctx.setLineDash([4, 4]);
        ctx.lineWidth = 1;
        for (const b of getBoundaries()) {
          const x = Math.round(u.valToPos(b.x, 'x', true));
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
          ctx.fillStyle = '#555';
          ctx.font = `${Math.round(11 * devicePixelRatio)}px system-ui`;
          ctx.fillText(b.label, x + 4, u.bbox.top + 12 * devicePixelRatio);
        }
        ctx.restore();
      }],
    },
  };
}

/* A line chart in el; data = [xs, ...ys]. Returns {update(data)}. */
function lineChart(el, title, xLabel, series, data, opts = {}) {
  el.replaceChildren();
  const width = () => Math.max(260, el.clientWidth || 400);
  const u = new uPlot({
    title, width: width(), height: opts.height || 240,
    scales: { x: { time: false }, y: opts.log ? { distr: 3 } : {} },
    axes: [{ label: xLabel, labelSize: 20, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000],
      values: (u, vals) => vals.map(v => String(Math.round(v))) },
    { label: opts.yLabel || '', labelSize: 20, size: 64, values: (u, vals) => vals.map(v => v === null ? '' : String(+v.toPrecision(3))) }],
    series: [{ label: xLabel }, ...series.map((s, i) => ({
      label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: s.width || 2,
      dash: s.dash, points: { show: s.points !== false, size: 6 }, spanGaps: true,
    }))],
    plugins: opts.plugins || [],
  }, data, el);
  el.dataset.points = String(data[0].length);
  const ro = new ResizeObserver(() => u.setSize({ width: width(), height: opts.height || 240 }));
  ro.observe(el);
  return {
    update(d) { u.setData(d); el.dataset.points = String(d[0].length); },
    destroy() { ro.disconnect(); u.destroy(); },
  };
}

/* EMA with bias correction, as TensorBoard smooths scalars. */
function smooth(values, weight) {
  const out = [];
  let last = 0, n = 0;
  for (const v of values) {
    if (v === null || !Number.isFinite(v)) { out.push(null); continue; }
    last = last * weight + (1 - weight) * v;
    n++;
    out.push(weight === 0 ? v : last / (1 - Math.pow(weight, n)));
  }
  return out;
}

/* ---- views ------------------------------------------------------------------ */

const view = document.getElementById('view');
let cleanup = [];
function leave() { for (const f of cleanup) f(); cleanup = []; }

function stateBadge(state) { return h('span', { class: 'state state-' + state, 'data-state': state }, state); }

/* Jobs a person can still cancel: waiting for their weights, queued or running. */
const cancellable = state => state === 'fetching' || state === 'queued' || state === 'running';

/* What a job in state "fetching" shows. f is the job's "fetch" field or the
 * latest "fetch" event ({weights, file, done, total}); null until the download
 * has started. Percentages round down, so 100% means every byte arrived. */
function fetchLabel(f) {
  if (!f || (!f.total && !f.done)) return 'downloading weights…';
  if (!f.total) return `downloading weights (${megabytes(f.done)} MB so far)`;
  return `downloading weights ${Math.floor(100 * f.done / f.total)}% (${megabytes(f.done)} of ${megabytes(f.total)} MB)`;
}

/* A download bar with its label; update(f) redraws it in place, so that a
 * control next to it keeps the keyboard focus while events arrive. */
function fetchProgress(f) {
  const fill = h('span'), label = h('span', { class: 'small fetch-label' });
  const bar = h('div', { class: 'bar', role: 'progressbar', 'aria-label': 'weights download', 'aria-valuemin': 0, 'aria-valuemax': 100 }, fill);
  const el = h('div', { class: 'hbar' }, bar, label);
  const update = g => {
    const share = g && g.total ? Math.min(1, g.done / g.total) : 0;
    fill.style.width = `${100 * share}%`;
    bar.setAttribute('aria-valuenow', String(Math.floor(100 * share)));
    bar.setAttribute('aria-valuetext', fetchLabel(g));
    label.textContent = fetchLabel(g);
    el.title = g && g.weights ? `${g.weights}: ${g.file}` : '';
  };
  update(f);
  return { el, update };
}

async function jobsView() {
  view.replaceChildren(h('h1', {}, 'Jobs'), h('div', { class: 'card scroll', id: 'jobs-card' }, h('p', { class: 'empty' }, 'Loading…')));
  const card = document.getElementById('jobs-card');
  async function refresh() {
    try {
      const { jobs } = await api('GET', '/api/jobs');
      if (!jobs.length) {
        card.replaceChildren(h('p', { class: 'empty' }, 'No jobs yet. ', h('a', { href: '#/submit' }, 'Submit one'), ' or run make demo.'));
        return;
      }
      const rows = jobs.map(j => {
        const done = j.epochs_done || 0, total = j.epochs_total || 0;
        return h('tr', { 'data-job': j.id },
          h('td', { class: 'num' }, j.id),
          h('td', {}, h('a', { href: '#/jobs/' + j.id }, j.name)),
          h('td', {}, stateBadge(j.state)),
          h('td', { class: 'hide-narrow' }, j.spec && j.spec.dataset),
          h('td', { class: 'hide-narrow' }, j.phase_name || '–'),
          h('td', {}, j.state === 'fetching' ? fetchProgress(j.fetch).el : h('div', { class: 'hbar', title: `epoch ${done} of ${total}` },
            h('div', { class: 'bar', role: 'progressbar', 'aria-label': 'epochs', 'aria-valuemin': 0, 'aria-valuemax': total, 'aria-valuenow': done },
              h('span', { style: `width:${total ? 100 * done / total : 0}%` })),
            h('span', { class: 'small' }, `${done}/${total}`))),
          h('td', { class: 'num' }, j.best ? pct(j.best.val_acc) : '–'),
          h('td', {}, cancellable(j.state) ? h('button', { class: 'danger', type: 'button', 'data-cancel': j.id, onclick: async ev => {
            ev.target.disabled = true;
            try { await api('POST', `/api/jobs/${j.id}/cancel`); } catch (e) { alert(e.error.message); }
            refresh();
          } }, 'Cancel') : ''));
      });
      card.replaceChildren(h('table', { id: 'jobs' },
        h('thead', {}, h('tr', {}, h('th', { class: 'num' }, '#'), h('th', {}, 'job'), h('th', {}, 'state'),
          h('th', { class: 'hide-narrow' }, 'dataset'), h('th', { class: 'hide-narrow' }, 'phase'), h('th', {}, 'progress'),
          h('th', { class: 'num' }, 'best val acc'), h('th', {}, ''))),
        h('tbody', {}, rows)));
    } catch (e) { showError(card, e); }
  }
  await refresh();
  const timer = setInterval(refresh, 2000);
  cleanup.push(() => clearInterval(timer));
}

function findingView(f) {
  return h('div', { class: 'finding ' + f.severity, 'data-code': f.code },
    h('div', {}, h('span', { class: 'code' }, f.code), h('span', { class: 'sev ' + f.severity }, f.severity),
      h('span', { class: 'muted small' }, f.epoch === null || f.epoch === undefined ? ' · before training' : ` · epoch ${f.epoch + 1}`)),
    h('div', {}, f.message),
    h('div', { class: 'evidence' }, JSON.stringify(f.evidence)),
    h('div', {}, h('strong', {}, 'Fix: '), f.fix));
}

/* Heat map: the darker the cell, the larger its share of its row (true class). */
function confusionView(classes, matrix) {
  const k = matrix.length;
  const head = h('tr', {}, h('th', {}, 'true \\ predicted'), classes.map((c, i) => h('th', { title: c }, i)));
  const body = matrix.map((row, t) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    return h('tr', {}, h('th', { title: classes[t] }, `${t} ${classes[t]}`), row.map(v => {
      const share = v / total, light = 97 - 62 * share;
      return h('td', { style: `background:hsl(205 70% ${light}%);color:${light < 60 ? '#fff' : '#111'}`, title: `${v} (${(100 * share).toFixed(0)}% of row)` }, v);
    }));
  });
  return h('div', { class: 'scroll' }, h('table', { class: 'heat', id: 'confusion', 'data-size': k }, h('thead', {}, head), h('tbody', {}, body)));
}

function barsView(id, items) {
  const max = Math.max(1, ...items.map(i => i.value));
  return h('table', { id }, h('tbody', {}, items.map(i => h('tr', {},
    h('td', {}, i.label),
    h('td', { style: 'width:60%' }, h('div', { class: 'bar' }, h('span', { style: `width:${100 * i.value / max}%;background:${i.color || COLORS[0]}` }))),
    h('td', { class: 'num' }, i.text !== undefined ? i.text : i.value)))));
}

async function jobView(id) {
  view.replaceChildren(h('p', { class: 'empty' }, 'Loading…'));
  let job, metrics, steps, findings;
  try {
    [job, metrics, steps, findings] = await Promise.all([api('GET', `/api/jobs/${id}`), api('GET', `/api/jobs/${id}/metrics`),
      api('GET', `/api/jobs/${id}/steps`), api('GET', `/api/jobs/${id}/diagnosis`)]);
  } catch (e) { showError(view, e); return; }
  let epochs = metrics.epochs, stepRows = steps.steps, found = findings.findings;
  const header = h('div', { class: 'row' });
  const cards = {
    loss: h('div', { class: 'chart', id: 'chart-loss' }), acc: h('div', { class: 'chart', id: 'chart-acc' }),
    lr: h('div', { class: 'chart', id: 'chart-lr' }), steps: h('div', { class: 'chart', id: 'chart-steps' }),
    classes: h('div', { id: 'per-class' }), confusion: h('div', { id: 'confusion-card' }),
    predicted: h('div', { id: 'predicted-card' }), counts: h('div', { id: 'counts-card' }),
    findings: h('div', { id: 'findings' }),
  };
  const slider = h('input', { type: 'range', min: 0, max: 0.99, step: 0.01, value: 0.6, id: 'smoothing', 'aria-label': 'smoothing' });
  const sliderValue = h('span', { class: 'small' }, '0.60');
  view.replaceChildren(
    h('h1', {}, `Job ${id}: `, h('span', { id: 'job-name' }, job.name)), header,
    h('div', { class: 'card' }, h('h2', {}, 'Diagnosis'), cards.findings),
    h('div', { class: 'grid' },
      h('div', { class: 'card' }, cards.loss), h('div', { class: 'card' }, cards.acc),
      h('div', { class: 'card' }, cards.steps, h('div', { class: 'row' }, h('label', { for: 'smoothing' }, 'Smoothing'), slider, sliderValue)),
      h('div', { class: 'card' }, cards.lr)),
    h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('h2', {}, 'Per class (validation)'), cards.classes),
      h('div', { class: 'card' }, h('h2', {}, 'Confusion matrix'), cards.confusion)),
    h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('h2', {}, 'Predicted classes (validation)'), cards.predicted),
      h('div', { class: 'card' }, h('h2', {}, 'Dataset: images per class'), cards.counts)));

  /* kept across redraws: "fetch" events update it in place */
  const download = fetchProgress(job.fetch);
  download.el.id = 'fetch-progress';
  function renderHeader() {
    header.replaceChildren(stateBadge(job.state),
      job.state === 'fetching' ? download.el : '',
      h('span', {}, `epoch ${job.epochs_done}/${job.epochs_total}`),
      job.phase_name ? h('span', { class: 'muted' }, `phase ${job.phase_name}`) : '',
      job.progress ? h('span', { class: 'muted', id: 'step-progress' }, `step ${job.progress.step + 1}/${job.progress.steps}, loss ${fmt(job.progress.loss)}`) : '',
      job.error ? h('span', { class: 'field-error' }, job.error) : '',
      cancellable(job.state) ? h('button', { type: 'button', class: 'danger', id: 'cancel', onclick: async () => {
        try { await api('POST', `/api/jobs/${id}/cancel`); } catch (e) { alert(e.error.message); }
      } }, 'Cancel') : '',
      job.state === 'completed' ? h('a', { href: `/api/jobs/${id}/weights`, download: '' }, 'Download weights') : '');
  }
  function renderFindings() {
    cards.findings.replaceChildren(...(found.length ? found.map(findingView)
      : [h('p', { class: 'empty' }, 'No findings: nothing suspicious so far.')]));
  }
  const boundaries = () => epochs.filter((e, i) => i > 0 && e.phase !== epochs[i - 1].phase).map(e => ({ x: e.epoch + 1, label: e.phase_name }));
  const epochData = () => {
    const x = epochs.map(e => e.epoch + 1);
    return {
      loss: [x, epochs.map(e => e.train_loss), epochs.map(e => e.val_loss)],
      acc: [x, epochs.map(e => e.train_acc), epochs.map(e => e.val_acc), epochs.map(e => e.val_balanced_acc)],
      lr: [x, epochs.map(e => e.lr)],
    };
  };
  const stepData = () => {
    const w = Number(slider.value), loss = stepRows.map(s => s.loss);
    return [stepRows.map(s => s.index), loss, smooth(loss, w)];
  };
  const d = epochData();
  const charts = {
    loss: lineChart(cards.loss, 'Loss per epoch', 'epoch', [{ label: 'train loss' }, { label: 'val loss', dash: [6, 3] }], d.loss, { plugins: [phaseLines(boundaries)] }),
    acc: lineChart(cards.acc, 'Accuracy per epoch', 'epoch', [{ label: 'train acc' }, { label: 'val acc', dash: [6, 3] }, { label: 'val balanced acc', dash: [2, 3] }], d.acc, { plugins: [phaseLines(boundaries)] }),
    lr: lineChart(cards.lr, 'Learning rate', 'epoch', [{ label: 'lr', color: COLORS[2] }], d.lr, { plugins: [phaseLines(boundaries)] }),
    steps: lineChart(cards.steps, 'Loss per step', 'step', [{ label: 'loss', color: '#9ab7d3', width: 1, points: false }, { label: 'smoothed', color: COLORS[3], points: false }], stepData()),
  };
  cleanup.push(() => Object.values(charts).forEach(c => c.destroy()));
  slider.addEventListener('input', () => { sliderValue.textContent = Number(slider.value).toFixed(2); charts.steps.update(stepData()); });

  async function renderClasses() {
    if (!epochs.length) {
      cards.classes.replaceChildren(h('p', { class: 'empty' }, 'After the first epoch.'));
      return;
    }
    try {
      const c = await api('GET', `/api/jobs/${id}/classes`);
      const names = c.classes.map(r => r.name);
      cards.classes.replaceChildren(h('div', { class: 'scroll' }, h('table', { id: 'class-table' },
        h('thead', {}, h('tr', {}, h('th', {}, 'class'), h('th', {}, 'recall'), h('th', {}, 'precision'), h('th', { class: 'num' }, 'F1'), h('th', { class: 'num' }, 'support'))),
        h('tbody', {}, c.classes.map(r => h('tr', {},
          h('td', {}, r.name),
          h('td', {}, h('div', { class: 'hbar' }, h('div', { class: 'bar' }, h('span', { style: `width:${100 * (r.recall || 0)}%;background:${COLORS[0]}` })), h('span', { class: 'small' }, fmt(r.recall, 2)))),
          h('td', {}, h('div', { class: 'hbar' }, h('div', { class: 'bar' }, h('span', { style: `width:${100 * (r.precision || 0)}%;background:${COLORS[1]}` })), h('span', { class: 'small' }, fmt(r.precision, 2)))),
          h('td', { class: 'num' }, fmt(r.f1, 3)), h('td', { class: 'num' }, r.support)))))),
        h('p', { class: 'legend-note' }, `epoch ${c.epoch + 1}`));
      cards.confusion.replaceChildren(confusionView(names, c.confusion));
      cards.predicted.replaceChildren(barsView('predicted', c.classes.map((r, i) => ({ label: r.name, value: r.predicted, color: COLORS[i % COLORS.length] }))));
    } catch (e) { showError(cards.classes, e); }
  }
  async function renderCounts() {
    try {
      const ds = await api('GET', `/api/datasets/${encodeURIComponent(job.spec.dataset)}`);
      const counts = ds.report.counts;
      cards.counts.replaceChildren(barsView('counts', Object.keys(counts).map((name, i) => ({
        label: name, value: counts[name].train + counts[name].val, text: `${counts[name].train} train, ${counts[name].val} val`, color: COLORS[i % COLORS.length] }))));
    } catch (e) { cards.counts.replaceChildren(h('p', { class: 'empty' }, 'The dataset is no longer registered.')); }
  }
  renderHeader();
  renderFindings();
  renderClasses();
  renderCounts();

  /* live: server-sent events; the stream starts with the current state */
  const conn = document.getElementById('conn');
  const es = new EventSource(`/api/jobs/${id}/events`);
  let pendingSteps = false;
  es.addEventListener('open', () => { conn.textContent = 'live'; });
  es.addEventListener('error', () => { conn.textContent = cancellable(job.state) ? 'reconnecting…' : ''; });
  es.addEventListener('state', async ev => {
    const s = JSON.parse(ev.data);
    if (s.state !== job.state) {
      try { job = await api('GET', `/api/jobs/${id}`); } catch (e) { job.state = s.state; }
      download.update(job.fetch);
      renderHeader();
    }
    if (['completed', 'failed', 'cancelled'].includes(s.state)) { es.close(); conn.textContent = ''; }
  });
  /* about once a second while the job's weights download */
  es.addEventListener('fetch', ev => {
    const f = JSON.parse(ev.data);
    if (job.state !== 'fetching') return;
    job.fetch = { weights: f.weights, file: f.file, done: f.done, total: f.total };
    download.update(job.fetch);
  });
  es.addEventListener('step', ev => {
    const s = JSON.parse(ev.data);
    if (!stepRows.some(r => r.epoch === s.epoch && r.step === s.step)) {
      stepRows.push({ ...s, index: stepRows.length });
      job.progress = { epoch: s.epoch, step: s.step, steps: s.steps, loss: s.loss };
    }
    if (!pendingSteps) {
      pendingSteps = true;
      requestAnimationFrame(() => { pendingSteps = false; charts.steps.update(stepData()); renderHeader(); });
    }
  });
  es.addEventListener('epoch', ev => {
    const e = JSON.parse(ev.data);
    epochs = epochs.filter(x => x.epoch !== e.epoch).concat([e]).sort((a, b) => a.epoch - b.epoch);
    job.epochs_done = epochs.length;
    job.phase_name = e.phase_name;
    const nd = epochData();
    charts.loss.update(nd.loss);
    charts.acc.update(nd.acc);
    charts.lr.update(nd.lr);
    renderHeader();
    renderClasses();
  });
  es.addEventListener('finding', ev => {
    const f = JSON.parse(ev.data);
    found = found.filter(x => x.code !== f.code).concat([f]);
    renderFindings();
  });
  cleanup.push(() => { es.close(); conn.textContent = ''; });
}

async function compareView() {
  view.replaceChildren(h('h1', {}, 'Compare jobs'));
  let jobs;
  try { ({ jobs } = await api('GET', '/api/jobs')); } catch (e) { showError(view, e); return; }
  const picked = new Set((location.hash.split('?ids=')[1] || '').split(',').filter(Boolean).map(Number));
  const list = h('div', { class: 'card', id: 'compare-pick' }, h('h2', {}, 'Jobs'),
    jobs.map(j => h('label', { style: 'font-weight:400' }, h('input', { type: 'checkbox', value: j.id, checked: picked.has(j.id), onchange: ev => {
      if (ev.target.checked) picked.add(j.id); else picked.delete(j.id);
      history.replaceState(null, '', '#/compare?ids=' + [...picked].join(','));
      draw();
    } }), ` #${j.id} ${j.name} `, stateBadge(j.state))));
  const lossEl = h('div', { class: 'chart', id: 'compare-loss' }), accEl = h('div', { class: 'chart', id: 'compare-acc' });
  view.append(list, h('div', { class: 'grid' }, h('div', { class: 'card' }, lossEl), h('div', { class: 'card' }, accEl)));
  let charts = [];
  async function draw() {
    charts.forEach(c => c.destroy());
    charts = [];
    const ids = [...picked].sort((a, b) => a - b);
    if (!ids.length) {
      lossEl.replaceChildren(h('p', { class: 'empty' }, 'Pick jobs to overlay their validation curves.'));
      accEl.replaceChildren();
      return;
    }
    const runs = await Promise.all(ids.map(i => api('GET', `/api/jobs/${i}/metrics`).then(m => m.epochs).catch(() => [])));
    const maxEpochs = Math.max(1, ...runs.map(r => r.length));
    const x = Array.from({ length: maxEpochs }, (_, i) => i + 1);
    const col = (r, key) => x.map(e => { const row = r.find(v => v.epoch + 1 === e); return row ? row[key] : null; });
    const series = ids.map((i, k) => ({ label: `#${i} ${(jobs.find(j => j.id === i) || {}).name || ''}`, color: COLORS[k % COLORS.length] }));
    charts.push(lineChart(lossEl, 'Validation loss', 'epoch', series, [x, ...runs.map(r => col(r, 'val_loss'))]));
    charts.push(lineChart(accEl, 'Validation accuracy', 'epoch', series, [x, ...runs.map(r => col(r, 'val_acc'))]));
  }
  cleanup.push(() => charts.forEach(c => c.destroy()));
  draw();
}

const TEMPLATE = {
  name: 'my-job', dataset: '', weights: 'random', preprocess: 'auto', input_size: 64, batch_size: 32, seed: 1,
  class_weight: 'balanced',
  phases: [
    { name: 'head', epochs: 3, train: 'head', optimizer: { type: 'adam', lr: 0.001 } },
    { name: 'unfreeze', epochs: 3, train: 'stage:5', bn: 'frozen', optimizer: { type: 'sgd', lr: 0.0001, momentum: 0.9 } },
  ],
  early_stopping: { monitor: 'val_loss', patience: 3, restore_best: true },
};

/* A manifest entry's option label: name, variant, top-1 when the manifest
 * quotes one, and what choosing it means for the download. */
function namedLabel(n) {
  const facts = [n.variant];
  if (n.top1 !== null && n.top1 !== undefined) facts.push(`top-1 ${n.top1}%`);
  if (!n.pinned) facts.push('cannot download: the manifest pins no hash for it');
  else if (n.state === 'cached') facts.push('downloaded');
  else if (n.state === 'fetching') facts.push(n.pulling && n.pulling.total
    ? `downloading now, ${Math.floor(100 * n.pulling.done / n.pulling.total)}%` : 'downloading now');
  else facts.push(n.size ? `downloads ${megabytes(n.size)} MB on submit` : 'downloads on submit');
  return facts.join(', ');
}

/* The Weights select's four groups (GET /api/weights and GET /api/jobs):
 * random; the manifest's named weights, downloaded once, "imagenet" beside the
 * entry it stands for; uploaded or dropped files (a named entry's downloaded file
 * is listed once, under its name); completed jobs' exported models as job:ID.
 * An empty group keeps one disabled line that says how to fill it. */
function weightsOptions(list) {
  const { weights, named, named_error: namedError, jobs } = list;
  const opt = (value, label, disabled) => h('option', { value, disabled }, label);
  const none = label => opt('', label, true);
  const pretrained = [];
  for (const n of named) {
    if (n.aliases.includes('imagenet')) pretrained.push(opt('imagenet', `imagenet = ${n.name} (${namedLabel(n)})`, !n.pinned));
    const other = n.aliases.filter(a => a !== 'imagenet');
    pretrained.push(opt(n.name, `${n.name} (${namedLabel(n)})${other.length ? '; also ' + other.join(', ') : ''}`, !n.pinned));
  }
  const namedFiles = new Set(named.filter(n => n.cached).map(n => n.file));
  const files = weights.filter(w => !w.error && !namedFiles.has(w.name))
    .map(w => opt(w.name, `${w.name} (${w.variant}, ${w.preprocess}${w.head_classes ? `, ${w.head_classes}-class head` : ''})`));
  const finished = jobs.filter(j => j.state === 'completed').map(j => opt(`job:${j.id}`, `job ${j.id}: ${j.name}`));
  return [
    h('optgroup', { label: 'Train from scratch' }, opt('random', 'random (train from scratch)')),
    h('optgroup', { label: 'Pretrained (download once)' },
      pretrained.length ? pretrained : none(namedError ? 'none: the manifest did not load' : 'none: the manifest is empty')),
    h('optgroup', { label: 'Files in the weights folder' },
      files.length ? files : none('none: upload with PUT /api/weights/NAME')),
    h('optgroup', { label: 'Finished jobs' }, finished.length ? finished : none('none yet: completed jobs appear here')),
  ];
}

async function submitView() {
  view.replaceChildren(h('h1', {}, 'Submit a job'));
  let datasets, list;
  try {
    const [ds, w, j] = await Promise.all([api('GET', '/api/datasets'), api('GET', '/api/weights'), api('GET', '/api/jobs')]);
    datasets = ds.datasets;
    list = { weights: w.weights, named: w.named || [], named_error: w.named_error, jobs: j.jobs };
  } catch (e) { showError(view, e); return; }
  const spec = JSON.parse(JSON.stringify(TEMPLATE));
  spec.dataset = datasets.length ? datasets[0].name : '';
  if (spec.weights === 'random') spec.preprocess = 'torch';
  const editor = h('textarea', { id: 'spec', spellcheck: 'false', 'aria-describedby': 'spec-error' }, JSON.stringify(spec, null, 2));
  const error = h('div', { id: 'spec-error', role: 'alert' });
  const dsSel = h('select', { id: 'dataset' }, datasets.map(d => h('option', { value: d.name }, `${d.name} (${d.images} images)`)));
  const wSel = h('select', { id: 'weights', 'aria-describedby': list.named_error ? 'weights-note' : null }, weightsOptions(list));
  const wNote = list.named_error ? h('p', { id: 'weights-note', class: 'field-note small' },
    'Pretrained weights are unavailable: ', list.named_error) : '';
  function setField(key, value) {
    try {
      const s = JSON.parse(editor.value);
      s[key] = value;
      if (key === 'weights') s.preprocess = value === 'random' ? 'torch' : 'auto';
      editor.value = JSON.stringify(s, null, 2);
    } catch (e) { /* the editor holds invalid JSON: leave it to the user */ }
  }
  dsSel.addEventListener('change', () => setField('dataset', dsSel.value));
  wSel.addEventListener('change', () => setField('weights', wSel.value));
  /* selects the editor line of the field a JSON path ("phases[1].optimizer.lr") names */
  function markPath(path) {
    const text = editor.value;
    const segs = [];
    for (const part of path.split('.')) {
      const m = part.match(/^([^[]*)((\[\d+\])*)$/);
      if (!m) return;
      if (m[1]) segs.push(m[1]);
      for (const i of m[2].matchAll(/\[(\d+)\]/g)) segs.push(Number(i[1]));
    }
    /* the end of the value starting at i (a string, number, object or array) */
    const skipValue = i => {
      let depth = 0, str = false;
      for (; i < text.length; i++) {
        const c = text[i];
        if (str) { if (c === '\\') i++; else if (c === '"') { str = false; if (!depth) return i + 1; } continue; }
        if (c === '"') str = true;
        else if (c === '{' || c === '[') depth++;
        else if (c === '}' || c === ']') { depth--; if (depth <= 0) return i + 1; }
        else if (!depth && (c === ',' || c === '\n')) return i;
      }
      return i;
    };
    let pos = 0, keyAt = -1;
    for (const seg of segs) {
      if (typeof seg === 'string') {
        const at = text.indexOf(`"${seg}"`, pos);
        if (at < 0) return;
        keyAt = at;
        pos = text.indexOf(':', at) + 1;
      } else {
        pos = text.indexOf('[', pos) + 1;
        for (let k = 0; k < seg; k++) {
          while (/\s/.test(text[pos])) pos++;
          pos = skipValue(pos);
          pos = text.indexOf(',', pos) + 1;
        }
      }
    }
    if (keyAt < 0) return;
    const end = text.indexOf('\n', keyAt);
    editor.focus();
    editor.setSelectionRange(keyAt, end >= 0 ? end : text.length);
  }
  const submit = h('button', { type: 'submit', id: 'submit' }, 'Submit');
  const form = h('form', { class: 'card', id: 'submit-form', onsubmit: async ev => {
    ev.preventDefault();
    error.replaceChildren();
    editor.classList.remove('invalid');
    submit.disabled = true;
    try {
      const job = await api('POST', '/api/jobs', editor.value);
      location.hash = '#/jobs/' + job.id;
    } catch (e) {
      const err = e.error || { message: String(e) };
      editor.classList.add('invalid');
      error.replaceChildren(h('p', { class: 'field-error', 'data-path': err.path || '' },
        err.path ? h('code', {}, err.path) : '', err.path ? ' ' : '', err.message));
      if (err.path) markPath(err.path);
    } finally { submit.disabled = false; }
  } },
    h('div', { class: 'row' }, h('div', {}, h('label', { for: 'dataset' }, 'Dataset'), dsSel), h('div', {}, h('label', { for: 'weights' }, 'Weights'), wSel, wNote)),
    h('label', { for: 'spec' }, 'Job specification (JSON, see docs/jobs.md)'), editor, error, submit);
  view.append(form);
}

/* ---- router ------------------------------------------------------------------ */

async function route() {
  leave();
  const hash = location.hash || '#/';
  const m = hash.match(/^#\/jobs\/(\d+)/);
  const name = m ? 'jobs' : hash.startsWith('#/compare') ? 'compare' : hash.startsWith('#/submit') ? 'submit' : 'jobs';
  for (const a of document.querySelectorAll('nav a')) a.toggleAttribute('aria-current', a.dataset.nav === name && !m);
  for (const a of document.querySelectorAll('nav a')) if (a.hasAttribute('aria-current')) a.setAttribute('aria-current', 'page');
  if (m) await jobView(Number(m[1]));
  else if (name === 'compare') await compareView();
  else if (name === 'submit') await submitView();
  else await jobsView();
  view.focus({ preventScroll: true });
}

document.getElementById('token-button').addEventListener('click', () => askToken(''));
window.addEventListener('hashchange', route);
route();
