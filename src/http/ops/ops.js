// The ops page: asks for the admin key once per tab, polls GET /v1/ops every 2 s and draws
// what it answers. Plain DOM and hand-drawn SVG, no library and nothing from the network but
// this server (the page's Content-Security-Policy allows 'self' only). Every figure the
// browser test reads carries a data-testid, and its raw value in data-value.
/* global document, Node, sessionStorage, fetch, setTimeout, clearTimeout */
'use strict';

const KEY_STORAGE = 'geopay.ops.adminKey';
const POLL_MS = 2_000;
/** Points on the chart: two minutes of polls. */
const HISTORY = 60;
const SVG_NS = 'http://www.w3.org/2000/svg';

const history = [];
let timer;
let polls = 0;

const $ = (selector) => document.querySelector(selector);

/** An element with attributes and children (strings become text: nothing here is parsed as HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

/** Shows `text` in the element with data-testid `id`, its raw value in data-value ('' for none). */
function show(id, text, raw) {
  const node = document.querySelector(`[data-testid="${id}"]`);
  node.textContent = text;
  node.dataset.value = raw === null || raw === undefined ? '' : String(raw);
  return node;
}

const fmtRate = (x) => (x === null ? '–' : x.toFixed(x >= 100 ? 0 : 1));
const fmtMs = (x) => (x === null ? '–' : `${x.toFixed(x >= 100 ? 0 : 1)} ms`);
function fmtAge(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  if (ms < 120_000) return `${(ms / 1_000).toFixed(1)} s`;
  return `${Math.round(ms / 60_000)} min`;
}

function setStatus(text, kind) {
  const status = $('#status');
  status.textContent = text;
  status.className = `status ${kind}`;
}

function showLogin(message = '') {
  clearTimeout(timer);
  $('#dashboard').hidden = true;
  $('#forget').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message;
  setStatus('not connected', '');
  $('#key').focus();
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(poll, POLL_MS);
}

async function poll() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (!key) return showLogin();
  let res;
  try {
    res = await fetch('/v1/ops', { headers: { authorization: `Bearer ${key}` }, cache: 'no-store' });
  } catch (err) {
    setStatus(`no answer: ${err.message}`, 'bad');
    return schedule();
  }
  if (res.status === 401 || res.status === 403) {
    sessionStorage.removeItem(KEY_STORAGE);
    return showLogin(res.status === 403 ? 'That is a tenant key: this page needs the admin key.' : 'The server does not know that key.');
  }
  if (!res.ok) {
    setStatus(`server answered ${res.status}`, 'bad');
    return schedule();
  }
  render(await res.json());
  schedule();
}

function render(doc) {
  $('#login').hidden = true;
  $('#dashboard').hidden = false;
  $('#forget').hidden = false;
  const { totals } = doc;
  setStatus(totals.unreachable === 0 ? 'all nodes answering' : `${totals.unreachable} node(s) unreachable`, totals.unreachable === 0 ? 'ok' : 'warn');
  show('served-by', doc.servedBy, doc.servedBy);
  show('ops-at', new Date(doc.at).toLocaleTimeString(), doc.at);
  show('window-s', String(doc.windowS), doc.windowS);
  show('total-tps', fmtRate(totals.transfersPerS), totals.transfersPerS);
  show('total-p99', fmtMs(totals.p99Ms), totals.p99Ms);
  show('in-flight-count', String(doc.inFlight.count), doc.inFlight.count);
  show('in-flight-oldest', doc.inFlight.count === 0 ? 'none' : fmtAge(doc.inFlight.oldestAgeS * 1_000), doc.inFlight.oldestAgeS);
  const backlog = show('webhook-backlog', doc.webhookBacklog === null ? 'not configured' : String(doc.webhookBacklog), doc.webhookBacklog);
  backlog.classList.toggle('none', doc.webhookBacklog === null);
  show('total-nodes', String(totals.nodes), totals.nodes);
  show('total-shards', String(totals.shards), totals.shards);
  show('total-unreachable', String(totals.unreachable), totals.unreachable);
  $('#regions').replaceChildren(...doc.regions.map(regionView));
  renderHot(doc.hotAccounts);
  history.push({ tps: totals.transfersPerS ?? 0, p99: totals.p99Ms ?? 0 });
  if (history.length > HISTORY) history.shift();
  drawChart();
  polls += 1;
  document.body.dataset.at = doc.at;
  document.body.dataset.polls = String(polls);
}

function regionView(region) {
  const unowned = region.unowned.length === 0 ? [] : [el('p', { class: 'unowned', 'data-testid': 'region-unowned-list' },
    `Without a live owner: ${region.unowned.map((s) => s.id).join(', ')}`)];
  return el('section', { class: 'region', 'data-testid': 'region', 'data-region': region.region },
    el('h3', {}, region.region,
      el('span', { class: 'sub', 'data-testid': 'region-nodes', 'data-value': region.nodes.length }, `${region.nodes.length} node${region.nodes.length === 1 ? '' : 's'}`),
      el('span', { class: 'sub', 'data-testid': 'region-shards', 'data-value': region.shards }, `${region.shards} shards`),
      el('span', { class: 'sub', 'data-testid': 'region-unowned', 'data-value': region.unowned.length }, `${region.unowned.length} without owner`)),
    el('div', { class: 'nodes' }, region.nodes.map(nodeView)),
    unowned);
}

function figure(label, id, text, raw) {
  return el('div', {}, el('dt', {}, label), el('dd', { 'data-testid': id, 'data-value': raw ?? '' }, text));
}

function nodeView(node) {
  const card = el('article', { class: `node${node.reachable ? '' : ' unreachable'}`, 'data-testid': 'node', 'data-node-id': node.nodeId, 'data-reachable': node.reachable },
    el('h4', {}, el('span', { 'data-testid': 'node-id' }, node.nodeId), el('span', { class: 'self' }, node.self ? 'serving this page' : `heartbeat ${fmtAge(node.heartbeatAgeMs)} ago`)));
  if (!node.reachable) card.append(el('p', { class: 'why', 'data-testid': 'node-error' }, `unreachable: ${node.error}`));
  card.append(el('dl', { class: 'figures' },
    figure('transfers/s', 'node-tps', fmtRate(node.transfersPerS), node.transfersPerS),
    figure('p99', 'node-p99', fmtMs(node.p99Ms), node.p99Ms),
    figure('shards', 'node-shards', String(node.shards.length), node.shards.length)));
  card.append(shardTable(node.shards));
  return card;
}

function shardTable(shards) {
  if (shards.length === 0) return el('p', { class: 'empty' }, 'owns no shard');
  const rows = shards.map((s) => {
    // A lease is extended every third of its TTL: one older than two thirds of it is late.
    const late = s.leaseAgeMs !== null && s.leaseExpiresInMs !== null && s.leaseAgeMs > 2 * s.leaseExpiresInMs;
    return el('tr', { 'data-testid': 'shard', 'data-shard': s.id },
      el('td', {}, s.id), el('td', {}, s.epoch),
      el('td', late ? { class: 'stale' } : {}, fmtAge(s.leaseAgeMs)), el('td', {}, fmtAge(s.leaseExpiresInMs)));
  });
  return el('table', { class: 'shards' },
    el('thead', {}, el('tr', {}, el('th', {}, 'shard'), el('th', {}, 'epoch'), el('th', {}, 'lease age'), el('th', {}, 'expires in'))),
    el('tbody', {}, rows));
}

function renderHot(hot) {
  const rows = hot.length === 0
    ? [el('tr', {}, el('td', { colspan: 3, class: 'empty' }, 'no mailbox is waiting'))]
    : hot.map((h) => el('tr', { 'data-testid': 'hot-account' }, el('td', {}, h.accountId), el('td', { 'data-value': h.depth }, String(h.depth)), el('td', {}, h.nodeId)));
  $('#hot').replaceChildren(...rows);
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

/** Transfers/s on its scale, p99 on its own (dashed); the last HISTORY polls, newest on the right. */
function drawChart() {
  const chart = $('#chart');
  const width = 900, height = 160, pad = 18;
  const maxTps = Math.max(1, ...history.map((h) => h.tps));
  const maxP99 = Math.max(1, ...history.map((h) => h.p99));
  const x = (i) => width - pad - (history.length - 1 - i) * ((width - 2 * pad) / (HISTORY - 1));
  const line = (key, max) => history.map((h, i) => `${x(i).toFixed(1)},${(height - pad - (h[key] / max) * (height - 2 * pad)).toFixed(1)}`).join(' ');
  const parts = [
    svg('line', { class: 'grid', x1: pad, x2: width - pad, y1: height - pad, y2: height - pad }),
    svg('line', { class: 'grid', x1: pad, x2: width - pad, y1: pad, y2: pad }),
    svg('polyline', { class: 'tps', points: line('tps', maxTps) }),
    svg('polyline', { class: 'p99', points: line('p99', maxP99) }),
  ];
  const label = svg('text', { x: pad + 2, y: pad - 4 });
  label.textContent = `${fmtRate(maxTps)} /s · ${fmtMs(maxP99)}`;
  parts.push(label);
  chart.replaceChildren(...parts);
}

$('#login').addEventListener('submit', (event) => {
  event.preventDefault();
  const key = $('#key').value.trim();
  if (key === '') return;
  sessionStorage.setItem(KEY_STORAGE, key);
  $('#key').value = '';
  setStatus('connecting…', 'warn');
  void poll();
});

$('#forget').addEventListener('click', () => {
  sessionStorage.removeItem(KEY_STORAGE);
  history.length = 0;
  showLogin();
});

void poll();
