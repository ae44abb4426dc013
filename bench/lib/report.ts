// Results of a run, written three ways: results.json (everything measured, the full
// histograms included), report.html (one self-contained file: Chart.js and the data inlined,
// so it opens offline and can be mailed), and report.png (that page rendered by headless
// Chromium, for a pull request or a chat where HTML does not display).
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { cpus, hostname, platform, release, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { launchBrowser } from './browser.ts';
import type { HistogramData, LatencySummary, PhaseCounts, SecondSample } from './stats.ts';

export interface PhaseReport {
  engine: string;
  /** uniform, hot, ceiling, or the loadtest's own label. */
  workload: string;
  /** How load was applied (open loop at a rate, or closed loop with clients). */
  load: string;
  mix?: string;
  skew?: string;
  durationS: number;
  counts: PhaseCounts;
  /** Successful answers per second over the window (open loop: until the last answer). */
  throughputPerS: number;
  /** Latencies of successful requests; open loop: from the instant each was due. */
  latency: LatencySummary;
  /** Open loop: how late the client sent requests after their due time (its own bottleneck). */
  sendLag?: LatencySummary;
  series: SecondSample[];
  histogram: HistogramData;
}

export interface CheckReport {
  engine: string;
  ok: boolean;
  failures: string[];
  notes: string[];
  stats: Record<string, number>;
}

export interface ComparisonRow {
  workload: string;
  /** geopay over baseline; null where a side is missing. */
  throughputRatio: number | null;
  p50Ratio: number | null;
  p99Ratio: number | null;
  /** Each engine's throughput as a fraction of its server's HTTP ceiling. */
  ofCeiling: Record<string, number | null>;
}

export interface RunReport {
  kind: 'loadtest' | 'compare';
  title: string;
  createdAt: string;
  command: string;
  environment: Record<string, string | number>;
  settings: Record<string, unknown>;
  phases: PhaseReport[];
  checks: CheckReport[];
  comparison?: ComparisonRow[];
  /** One line per fact worth knowing when reading the figures (skipped engine, server death...). */
  remarks: string[];
}

export function environment(): Record<string, string | number> {
  const c = cpus();
  return {
    node: process.version,
    platform: `${platform()} ${release()}`,
    cpus: c.length,
    cpuModel: c[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    host: hostname(),
  };
}

function chartJsSource(): string {
  const require = createRequire(import.meta.url);
  // The package exports only its module entries; the UMD build sits beside them in dist/.
  const file = join(dirname(require.resolve('chart.js')), 'chart.umd.min.js');
  return readFileSync(file, 'utf8');
}

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const fmt = (v: number | null | undefined, digits = 1): string => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(digits));
const sum = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);
const codes = (r: Record<string, number>): string => Object.entries(r).map(([k, v]) => `${k}: ${v}`).join(', ');

function summaryTable(r: RunReport): string {
  const rows = r.phases.map((p) => `
    <tr>
      <td>${esc(p.engine)}</td><td>${esc(p.workload)}</td><td>${esc(p.load)}</td>
      <td class="n">${p.counts.sent}</td><td class="n">${p.counts.ok}</td>
      <td class="n" title="${esc(codes(p.counts.rejected))}">${sum(p.counts.rejected)}</td>
      <td class="n ${sum(p.counts.errors) > 0 ? 'bad' : ''}" title="${esc(codes(p.counts.errors))}">${sum(p.counts.errors)}</td>
      <td class="n">${p.counts.retries}</td>
      <td class="n"><b>${fmt(p.throughputPerS, 0)}</b></td>
      <td class="n">${fmt(p.latency.p50Ms, 2)}</td><td class="n">${fmt(p.latency.p90Ms, 2)}</td>
      <td class="n">${fmt(p.latency.p99Ms, 2)}</td><td class="n">${fmt(p.latency.p999Ms, 2)}</td><td class="n">${fmt(p.latency.maxMs, 2)}</td>
    </tr>`).join('');
  return `<table>
    <thead><tr><th>engine</th><th>workload</th><th>load</th><th>sent</th><th>ok</th><th>rejected</th><th>errors</th><th>retries</th>
      <th>ok/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr></thead>
    <tbody>${rows}</tbody></table>`;
}

function comparisonTable(rows: ComparisonRow[], engines: string[]): string {
  const ratio = (v: number | null): string => (v === null ? '–' : `${v.toFixed(2)}×`);
  const pct = (v: number | null | undefined): string => (v === null || v === undefined ? '–' : `${(100 * v).toFixed(0)}%`);
  return `<table>
    <thead><tr><th>workload</th><th>throughput geopay/baseline</th><th>p50 geopay/baseline</th><th>p99 geopay/baseline</th>
      ${engines.map((e) => `<th>${esc(e)} of ceiling</th>`).join('')}</tr></thead>
    <tbody>${rows.map((c) => `<tr><td>${esc(c.workload)}</td><td class="n"><b>${ratio(c.throughputRatio)}</b></td>
      <td class="n">${ratio(c.p50Ratio)}</td><td class="n">${ratio(c.p99Ratio)}</td>
      ${engines.map((e) => `<td class="n">${pct(c.ofCeiling[e])}</td>`).join('')}</tr>`).join('')}</tbody></table>
    <p class="muted">Latency ratios below 1 mean geopay answers faster; throughput ratios above 1 mean it carries more.</p>`;
}

function checksSection(checks: CheckReport[]): string {
  if (checks.length === 0) return '<p class="bad">The ledger was not checked (no database to read).</p>';
  return checks.map((c) => `
    <div class="check ${c.ok ? 'pass' : 'fail'}">
      <b>${esc(c.engine)}: ${c.ok ? 'PASS' : 'FAIL'}</b>
      <span class="muted">${esc(Object.entries(c.stats).map(([k, v]) => `${k} ${v}`).join(', '))}</span>
      ${c.notes.map((n) => `<div class="muted">note: ${esc(n)}</div>`).join('')}
      ${c.failures.length ? `<ul>${c.failures.map((f) => `<li>${esc(f)}</li>`).join('')}</ul>` : ''}
    </div>`).join('');
}

/** The page's own script: draws every chart from the inlined data, then marks the page ready. */
const PAGE_SCRIPT = String.raw`
(function () {
  var report = JSON.parse(document.getElementById('report-data').textContent);
  Chart.defaults.animation = false;
  Chart.defaults.font.size = 11;
  Chart.defaults.maintainAspectRatio = false;
  var palette = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2'];
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text) e.textContent = text; return e; }
  function chart(parent, title, config) {
    var box = el('div', 'chart'); var canvas = el('canvas');
    canvas.setAttribute('aria-label', title); canvas.dataset.title = title;
    box.appendChild(canvas); parent.appendChild(box);
    config.options = config.options || {};
    config.options.plugins = Object.assign({ title: { display: true, text: title } }, config.options.plugins || {});
    return new Chart(canvas, config);
  }
  var overview = document.getElementById('overview');
  // The ceiling is an order of magnitude above any payment workload: it has its own section.
  var payments = report.phases.filter(function (p) { return p.workload !== 'ceiling'; });
  if (payments.length > 0) {
    var workloads = []; var engines = [];
    payments.forEach(function (p) { if (workloads.indexOf(p.workload) < 0) workloads.push(p.workload); if (engines.indexOf(p.engine) < 0) engines.push(p.engine); });
    function metric(f) { return engines.map(function (e, i) { return { label: e, backgroundColor: palette[i % palette.length], data: workloads.map(function (w) {
      var p = payments.find(function (x) { return x.engine === e && x.workload === w; }); return p ? f(p) : null; }) }; }); }
    chart(overview, 'Throughput (successful requests/s)', { type: 'bar', data: { labels: workloads, datasets: metric(function (p) { return p.throughputPerS; }) },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: 'requests/s' } } } } });
    chart(overview, 'Latency p50 and p99 (ms, log scale)', { type: 'bar', data: { labels: workloads, datasets: [].concat(
      metric(function (p) { return p.latency.p50Ms; }).map(function (d) { d.label += ' p50'; return d; }),
      metric(function (p) { return p.latency.p99Ms; }).map(function (d, i) { d.label += ' p99'; d.backgroundColor = palette[(i + 2) % palette.length]; return d; })) },
      options: { scales: { y: { type: 'logarithmic', title: { display: true, text: 'ms' } } } } });
  }
  var phases = document.getElementById('phases');
  report.phases.forEach(function (p) {
    var section = el('section', 'phase');
    section.appendChild(el('h3', null, p.engine + ' · ' + p.workload + ' · ' + p.load));
    var row = el('div', 'row'); section.appendChild(row); phases.appendChild(section);
    var t = p.series.map(function (s) { return s.t; });
    chart(row, 'Throughput per second', { type: 'line', data: { labels: t, datasets: [
      { label: 'ok/s', data: p.series.map(function (s) { return s.ok; }), borderColor: palette[0], backgroundColor: palette[0], pointRadius: 0, borderWidth: 2 },
      { label: 'sent/s', data: p.series.map(function (s) { return s.sent; }), borderColor: '#94a3b8', borderDash: [4, 3], pointRadius: 0, borderWidth: 1 },
      { label: 'rejected/s', data: p.series.map(function (s) { return s.rejected; }), borderColor: palette[4], pointRadius: 0, borderWidth: 1 },
      { label: 'errors/s', data: p.series.map(function (s) { return s.errors; }), borderColor: palette[1], pointRadius: 0, borderWidth: 1 } ] },
      options: { scales: { x: { title: { display: true, text: 's' } }, y: { beginAtZero: true } } } });
    chart(row, 'Latency percentiles per second (ms, log scale)', { type: 'line', data: { labels: t, datasets: [
      { label: 'p50', data: p.series.map(function (s) { return s.p50; }), borderColor: palette[2], pointRadius: 0, borderWidth: 2 },
      { label: 'p90', data: p.series.map(function (s) { return s.p90; }), borderColor: palette[4], pointRadius: 0, borderWidth: 2 },
      { label: 'p99', data: p.series.map(function (s) { return s.p99; }), borderColor: palette[1], pointRadius: 0, borderWidth: 2 } ] },
      options: { scales: { x: { title: { display: true, text: 's' } }, y: { type: 'logarithmic' } } } });
    var bins = p.histogram.bins;
    chart(row, 'Latency histogram (p50 ' + p.latency.p50Ms.toFixed(2) + ' ms, p99 ' + p.latency.p99Ms.toFixed(2) + ' ms)', { type: 'bar', data: {
      labels: bins.map(function (b) { return b.fromMs < 10 ? b.fromMs.toPrecision(2) : b.fromMs.toFixed(0); }),
      datasets: [{ label: 'requests', data: bins.map(function (b) { return b.count; }), backgroundColor: palette[3], barPercentage: 1, categoryPercentage: 1 }] },
      options: { plugins: { legend: { display: false } }, scales: { x: { title: { display: true, text: 'latency from (ms), 10 bins per decade' } }, y: { beginAtZero: true } } } });
  });
  document.body.dataset.ready = 'true';
})();`;

export function renderHtml(r: RunReport): string {
  const data = JSON.stringify(r).replace(/</g, '\\u003c');
  const engines = [...new Set(r.phases.map((p) => p.engine))];
  const settings = Object.entries(r.settings).map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(typeof v === 'string' ? v : JSON.stringify(v))}</td></tr>`).join('');
  const env = Object.entries(r.environment).map(([k, v]) => `${esc(k)} ${esc(String(v))}`).join(' · ');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(r.title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px; color: #0f172a; }
  h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; } h3 { font-size: 14px; margin: 18px 0 6px; }
  table { border-collapse: collapse; margin: 6px 0; } th, td { border-bottom: 1px solid #e2e8f0; padding: 3px 8px; text-align: left; }
  td.n { text-align: right; font-variant-numeric: tabular-nums; } .muted { color: #64748b; } .bad { color: #b91c1c; }
  .row { display: grid; grid-template-columns: repeat(3, 1fr); gap: 12px; } #overview { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
  .chart { position: relative; height: 260px; border: 1px solid #e2e8f0; border-radius: 6px; padding: 6px; }
  .check { margin: 6px 0; padding: 6px 10px; border-radius: 6px; } .pass { background: #f0fdf4; } .fail { background: #fef2f2; }
  .remarks li { color: #92400e; }
</style></head>
<body>
<h1>${esc(r.title)}</h1>
<div class="muted">${esc(r.createdAt)} · ${env}</div>
<div class="muted"><code>${esc(r.command)}</code></div>
${r.remarks.length ? `<ul class="remarks">${r.remarks.map((m) => `<li>${esc(m)}</li>`).join('')}</ul>` : ''}
${r.comparison ? `<h2>geopay against the row-locking baseline</h2>${comparisonTable(r.comparison, engines)}` : ''}
<h2>Summary</h2>
${summaryTable(r)}
<p class="muted">Latencies are of successful requests (2xx), retries included; in open loop they run from the instant each request was due.
Rejected = business answers (e.g. insufficient_funds); errors = no acceptable answer after bounded retries.</p>
<h2>Ledger check</h2>
${checksSection(r.checks)}
<div id="overview"></div>
<h2>Per engine and workload</h2>
<div id="phases"></div>
<h2>Settings</h2>
<table>${settings}</table>
<noscript>The charts need JavaScript; the figures are in the tables above and in results.json.</noscript>
<script id="report-data" type="application/json">${data}</script>
<script>${chartJsSource().replace(/<\/script/gi, '<\\/script')}</script>
<script>${PAGE_SCRIPT}</script>
</body></html>
`;
}

export interface WrittenReport {
  json: string;
  html: string;
  png: string | undefined;
  /** Why there is no PNG, when there is none. */
  pngError?: string;
}

/** Where the report went, as loadtest and compare print it. */
export function describeWritten(written: WrittenReport): string {
  const png = written.png ? `\n        ${written.png}` : written.pngError ? ` (no PNG: ${written.pngError})` : '';
  return `report: ${written.html}${png}\nresults: ${written.json}`;
}

/** Writes results.json, report.html and (unless the browser fails) report.png into `dir`. */
export function writeReport(dir: string, r: RunReport, opts: { png?: boolean } = {}): Promise<WrittenReport> {
  return writeThreeWays(dir, 'results', 'report', r, renderHtml(r), opts);
}

/**
 * `<data>.json` (the document), `<page>.html` (its page) and, unless the browser fails or
 * `png: false`, `<page>.png` (that page rendered) in `dir`: the benches' and the chaos run's.
 */
export async function writeThreeWays(dir: string, data: string, page: string, doc: unknown, html: string, opts: { png?: boolean } = {}): Promise<WrittenReport> {
  const json = join(dir, `${data}.json`);
  const htmlPath = join(dir, `${page}.html`);
  await writeFile(json, `${JSON.stringify(doc, null, 2)}\n`);
  await writeFile(htmlPath, html);
  if (opts.png === false) return { json, html: htmlPath, png: undefined };
  const png = join(dir, `${page}.png`);
  try {
    await renderPng(htmlPath, png);
    return { json, html: htmlPath, png };
  } catch (err) {
    // The numbers are already on disk; a missing browser must not lose them.
    return { json, html: htmlPath, png: undefined, pngError: (err as Error).message.split('\n')[0] };
  }
}

export async function renderPng(htmlPath: string, pngPath: string): Promise<void> {
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    await page.goto(pathToFileURL(htmlPath).href, { waitUntil: 'load' });
    await page.waitForFunction(() => document.body.dataset.ready === 'true', undefined, { timeout: 30_000 });
    await page.screenshot({ path: pngPath, fullPage: true });
  } finally {
    await browser.close();
  }
}
