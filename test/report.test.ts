// The HTML report in a real browser: a small recorded run (synthesised through the same
// PhaseStats the drivers fill, plus a real failing checker result from an empty database) is
// written out, opened in headless Chromium, and every chart must have drawn something, with
// no error on the console; the PNG rendering must exist.
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { check } from '../bench/checker.ts';
import { CHROMIUM_PATH, launchBrowser, type Browser } from '../bench/lib/browser.ts';
import { Prng } from '../bench/lib/prng.ts';
import { toReport } from '../bench/lib/phases.ts';
import { environment, writeReport, type RunReport } from '../bench/lib/report.ts';
import { PhaseStats } from '../bench/lib/stats.ts';
import { createTestDatabase, type TestDatabase } from './helpers/db.ts';
import { requireChromium } from './helpers/prereq.ts';

requireChromium(CHROMIUM_PATH);

/** A phase of `seconds` at `rate` requests/s, latencies log-normal around `medianMs`, with some rejections. */
function synthetic(engine: string, workload: string, seconds: number, rate: number, medianMs: number, seed: number) {
  const rng = new Prng(seed);
  const stats = new PhaseStats(false);
  stats.start(0);
  for (let i = 0; i < seconds * rate; i++) {
    const sentMs = (i / rate) * 1000;
    // Box-Muller: a log-normal tail, like real latencies.
    const z = Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
    const latencyMs = medianMs * Math.exp(0.5 * z);
    stats.onSent('transfer', sentMs);
    const outcome = i % 97 === 0 ? { kind: 'rejected' as const, code: 'insufficient_funds' } : { kind: 'ok' as const, status: 201 };
    stats.onDone('transfer', outcome, latencyMs * 1000, Math.min(sentMs + latencyMs, seconds * 1000 - 1));
  }
  stats.finish(seconds * 1000);
  return toReport({ stats, durationS: seconds }, { engine, workload, load: { mode: 'closed', concurrency: 64 }, mix: 'transfer=100', skew: workload });
}

let dir: string;
let browser: Browser;
/** Empty: the checker's verdict on it is a real failure for the report to show. */
let db: TestDatabase;
const report: RunReport = {
  kind: 'compare',
  title: 'report test',
  createdAt: new Date().toISOString(),
  command: 'vitest run test/report.test.ts',
  environment: environment(),
  settings: { seed: 7, note: '<script>alert(1)</script> is escaped' },
  phases: [],
  checks: [{ engine: 'geopay', ok: true, failures: [], notes: [], stats: { postings: 10 } }],
  comparison: [{ workload: 'uniform', throughputRatio: 1.8, p50Ratio: 0.6, p99Ratio: 0.5, ofCeiling: { geopay: 0.2, baseline: 0.11 } }],
  remarks: [],
};

beforeAll(async () => {
  db = await createTestDatabase('report');
  const pool = new pg.Pool({ connectionString: db.url, max: 1 });
  try {
    const r = await check(pool);
    report.checks.push({ engine: 'baseline', ok: r.ok, failures: r.failures, notes: r.notes, stats: r.stats });
  } finally {
    await pool.end();
  }
  dir = await mkdtemp(join(tmpdir(), 'geopay-report-test-'));
  report.phases = [
    synthetic('geopay', 'uniform', 8, 400, 12, 1),
    synthetic('baseline', 'uniform', 8, 220, 20, 2),
    synthetic('geopay', 'ceiling', 4, 2000, 1.5, 3),
  ];
  browser = await launchBrowser();
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await rm(dir, { recursive: true, force: true });
  await db?.drop();
});

describe('HTML report', () => {
  it('summarises the synthetic phases correctly', () => {
    const p = report.phases[0]!;
    expect(p.counts.sent).toBe(3200);
    expect(p.counts.rejected).toEqual({ insufficient_funds: Math.ceil(3200 / 97) });
    expect(p.series).toHaveLength(8);
    expect(p.latency.p50Ms).toBeGreaterThan(10);
    expect(p.latency.p50Ms).toBeLessThan(14);
    expect(p.histogram.bins.reduce((n, b) => n + b.count, 0)).toBe(p.counts.ok);
  });

  it('renders every chart with content and logs no console error', async () => {
    const written = await writeReport(dir, report);
    expect(written.pngError).toBeUndefined();
    const html = await readFile(written.html, 'utf8');
    // Offline: no script or style is fetched from anywhere.
    expect(html).not.toMatch(/<script[^>]+src=/);
    expect(html).not.toMatch(/<link[^>]+href=/);
    expect(html).not.toContain('<script>alert(1)</script>');
    // A failed check is shown as such, with the checker's message.
    expect(report.checks[1]!.ok).toBe(false);
    expect(html).toContain('baseline: FAIL');
    expect(html).toContain('neither geopay (journal) nor baseline (baseline_transfers) tables');

    const page = await browser.context.newPage();
    const problems: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
    await page.goto(pathToFileURL(written.html).href);
    await page.waitForFunction(() => document.body.dataset.ready === 'true', undefined, { timeout: 15_000 });

    const charts = await page.evaluate(() => {
      const Chart = (window as unknown as { Chart: { getChart(c: HTMLCanvasElement): { data: { datasets: { data: unknown[] }[] } } | undefined } }).Chart;
      return [...document.querySelectorAll('canvas')].map((c) => {
        const ctx = c.getContext('2d')!;
        const pixels = ctx.getImageData(0, 0, c.width, c.height).data;
        let drawn = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i]! > 0) drawn++;
        const chart = Chart.getChart(c);
        const points = chart ? chart.data.datasets.reduce((n, d) => n + d.data.filter((v) => v !== null && v !== undefined).length, 0) : 0;
        const box = c.getBoundingClientRect();
        return { title: c.dataset.title ?? '', width: box.width, height: box.height, drawn, share: drawn / (c.width * c.height), points };
      });
    });
    // Two overview charts, and three per phase (throughput, percentiles, histogram).
    expect(charts).toHaveLength(2 + 3 * report.phases.length);
    for (const c of charts) {
      expect(c.width, c.title).toBeGreaterThan(100);
      expect(c.height, c.title).toBeGreaterThan(100);
      expect(c.points, c.title).toBeGreaterThan(0);
      // Axes and labels alone cover a little; lines and bars add more. An empty canvas is 0.
      expect(c.share, c.title).toBeGreaterThan(0.02);
    }
    expect(charts.filter((c) => c.title.startsWith('Latency histogram'))).toHaveLength(report.phases.length);
    expect(problems).toEqual([]);
    await page.close();

    const png = await stat(written.png!);
    expect(png.size).toBeGreaterThan(20_000);
    const head = (await readFile(written.png!)).subarray(0, 8);
    expect(head.equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
  });

  it('keeps the data in the page readable as JSON', async () => {
    const html = await readFile(join(dir, 'report.html'), 'utf8');
    const m = /<script id="report-data" type="application\/json">([\s\S]*?)<\/script>/.exec(html);
    expect(m).not.toBeNull();
    const data = JSON.parse(m![1]!) as RunReport;
    expect(data.phases.map((p) => `${p.engine}/${p.workload}`)).toEqual(['geopay/uniform', 'baseline/uniform', 'geopay/ceiling']);
    const saved = JSON.parse(await readFile(join(dir, 'results.json'), 'utf8')) as RunReport;
    expect(saved.phases[0]!.histogram.hdrBase64.length).toBeGreaterThan(10);
  });
});
