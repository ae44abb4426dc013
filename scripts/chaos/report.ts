// The chaos run's results, written the three ways the benches write theirs (bench/lib/report.ts):
// chaos.json (everything measured), chaos.html (one self-contained page: the table, and per fault
// an SVG plot of each region's success rate drawn here by hand, so the page fetches nothing and
// opens offline) and chaos.png (that page through headless Chromium); plus the terminal's table.
import { writeThreeWays, type WrittenReport } from '../../bench/lib/report.ts';
import { fixed, formatTable } from '../../bench/lib/table.ts';
import type { Bucket, ChaosReport, FaultRow } from './types.ts';

export type WrittenChaos = WrittenReport;

/** The regions in the cluster's own order: the table's window columns and the plots' lines follow it. */
const regionsOf = (r: ChaosReport): string[] => Object.keys(r.cluster.regions);

const ms = (v: number | undefined): string => fixed(v, 0);

/** A window longer than the bound the fault is held to: the row the reader must look at. */
const overBound = (row: FaultRow): boolean => row.longestWindowMs > row.boundMs;

function header(r: ChaosReport): string[] {
  return [
    'fault', 'sent', 'acked', 'refused', '503/none', '429', 'other', 'replays', 'p50 ms', 'p99 ms',
    ...regionsOf(r).map((region) => `${region} ms`),
    'aimed-at ms', 'longest ms', 'bound ms', 'settle ms', 'violations',
  ];
}

/** One row's cells; `longest` is the longest window's cell as the caller marks it. */
function cells(r: ChaosReport, row: FaultRow, longest: string): string[] {
  const replays = row.replayMismatches > 0 ? `${row.replays} (${row.replayMismatches} mismatched)` : String(row.replays);
  return [
    row.fault, String(row.sent), String(row.acknowledged), String(row.refused),
    String(row.unavailable), String(row.rateLimited), String(row.other), replays, ms(row.p50Ms ?? undefined), ms(row.p99Ms ?? undefined),
    ...regionsOf(r).map((region) => ms(row.windowMsByRegion[region])),
    row.affected ? ms(row.affected.windowMs) : '-', longest, ms(row.boundMs), ms(row.settleMs), String(row.violations),
  ];
}

export function formatChaosTable(r: ChaosReport): string {
  // The unmarked cells end in a space so their digits stay under those of a marked one.
  const rows = r.rows.map((row) => cells(r, row, `${ms(row.longestWindowMs)}${overBound(row) ? '!' : ' '}`));
  return formatTable(header(r), rows, { labelColumns: 1 });
}

export function chaosSummaryLine(r: ChaosReport): string {
  const t = r.totals;
  return `chaos: ${t.faults} faults, ${t.violations} violations, longest window ${Math.round(t.longestWindowMs)} ms`;
}

// Everything put into the page goes through esc: fault ids, actions and the checker's failures
// are free text. (bench/lib/report.ts has the same one, not exported.)
const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function htmlTable(r: ChaosReport): string {
  const regions = regionsOf(r).length;
  // Columns after the 8 counts and the region windows: longest, bound, settle, violations.
  const longestAt = 8 + regions;
  const violationsAt = longestAt + 3;
  const rows = r.rows.map((row) => {
    const tds = cells(r, row, ms(row.longestWindowMs)).map((c, i) => {
      const classes = [i === 0 ? '' : 'n', i === longestAt && overBound(row) ? 'bad' : '', i === violationsAt && row.violations > 0 ? 'bad' : ''];
      return `<td class="${classes.filter(Boolean).join(' ')}">${esc(c)}</td>`;
    });
    return `<tr class="${overBound(row) ? 'over' : ''}">${tds.join('')}</tr>`;
  });
  return `<table>
    <thead><tr>${header(r).map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead>
    <tbody>${rows.join('\n')}</tbody></table>`;
}

// The plot's geometry, in the SVG's own units (the page scales it to its column's width).
const PLOT = { width: 620, height: 250, left: 46, right: 84, top: 24, bottom: 38 };
const INNER_W = PLOT.width - PLOT.left - PLOT.right;
const INNER_H = PLOT.height - PLOT.top - PLOT.bottom;
const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777'];

interface Scale {
  /** Seconds of the load, clamped to the axis. */
  x(s: number): number;
  /** Success rate in percent. */
  y(pct: number): number;
  span: number;
}

function scaleFor(row: FaultRow): Scale {
  const span = Math.max(row.loadSeconds, row.bucketS, 1);
  return {
    span,
    x: (s) => PLOT.left + (Math.min(Math.max(s, 0), span) / span) * INNER_W,
    y: (pct) => PLOT.top + (1 - pct / 100) * INNER_H,
  };
}

const num = (v: number): string => v.toFixed(1);

/** A round tick step giving at most about ten ticks over the span. */
function tickStep(span: number): number {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600];
  return steps.find((s) => span / s <= 10) ?? Math.ceil(span / 10);
}

function axes(sc: Scale): string {
  const parts: string[] = [];
  const bottom = PLOT.top + INNER_H;
  for (const pct of [0, 25, 50, 75, 100]) {
    const y = num(sc.y(pct));
    parts.push(`<line class="grid" x1="${PLOT.left}" x2="${PLOT.left + INNER_W}" y1="${y}" y2="${y}"/>`);
    parts.push(`<text class="tick" x="${PLOT.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${pct}%</text>`);
  }
  const step = tickStep(sc.span);
  for (let s = 0; s <= sc.span + 1e-9; s += step) {
    const x = num(sc.x(s));
    parts.push(`<line class="axis" x1="${x}" x2="${x}" y1="${bottom}" y2="${bottom + 5}"/>`);
    parts.push(`<text class="tick" x="${x}" y="${bottom + 17}" text-anchor="middle">${s}</text>`);
  }
  parts.push(`<line class="axis" x1="${PLOT.left}" x2="${PLOT.left + INNER_W}" y1="${bottom}" y2="${bottom}"/>`);
  parts.push(`<line class="axis" x1="${PLOT.left}" x2="${PLOT.left}" y1="${PLOT.top}" y2="${bottom}"/>`);
  parts.push(`<text class="label" x="${PLOT.left + INNER_W / 2}" y="${PLOT.height - 4}" text-anchor="middle">seconds of load</text>`);
  const yMid = PLOT.top + INNER_H / 2;
  parts.push(`<text class="label" x="12" y="${yMid}" text-anchor="middle" transform="rotate(-90 12 ${yMid})">success rate</text>`);
  return parts.join('');
}

/** The fault's span, shaded under the lines so they stay readable through it. */
function faultBand(row: FaultRow, sc: Scale): string {
  const x1 = sc.x(row.faultStartS);
  const x2 = Math.max(sc.x(row.faultEndS), x1);
  const label = `fault ${fixed(row.faultStartS, 1)}–${fixed(row.faultEndS, 1)} s`;
  return `<rect class="fault" x="${num(x1)}" y="${PLOT.top}" width="${num(x2 - x1)}" height="${INNER_H}"/>`
    + `<text class="fault-label" x="${num(x1 + 4)}" y="${PLOT.top - 8}">${esc(label)}</text>`;
}

/**
 * A region's timeline as runs of [seconds, percent] points, each slice at its middle. A slice with
 * no answer has no rate: it breaks the line rather than being drawn as 0 % or bridged over, and
 * so does a slice missing from the timeline.
 */
function runs(buckets: Bucket[], bucketS: number): Array<Array<[number, number]>> {
  const out: Array<Array<[number, number]>> = [];
  let current: Array<[number, number]> = [];
  let lastT = -Infinity;
  for (const b of [...buckets].sort((a, c) => a.t - c.t)) {
    const gap = b.t - lastT > bucketS * 1.5;
    lastT = b.t;
    if ((b.answered === 0 || gap) && current.length > 0) {
      out.push(current);
      current = [];
    }
    if (b.answered > 0) current.push([b.t + bucketS / 2, (100 * b.ok) / b.answered]);
  }
  if (current.length > 0) out.push(current);
  return out;
}

function regionLines(row: FaultRow, regions: string[], sc: Scale): string {
  return regions.map((region, i) => {
    const colour = PALETTE[i % PALETTE.length]!;
    // Where regions agree (100 % most of the time) their lines coincide: the earlier ones are
    // drawn wider underneath so every colour still shows at the edges.
    const width = 2 + (regions.length - 1 - i) * 1.5;
    return runs(row.timeline[region] ?? [], row.bucketS).map((run) => {
      // A lone slice between two silent ones is a point, which a polyline does not draw.
      if (run.length === 1) {
        const [s, pct] = run[0]!;
        return `<circle cx="${num(sc.x(s))}" cy="${num(sc.y(pct))}" r="${width}" fill="${colour}"/>`;
      }
      const points = run.map(([s, pct]) => `${num(sc.x(s))},${num(sc.y(pct))}`).join(' ');
      return `<polyline points="${points}" fill="none" stroke="${colour}" stroke-width="${width}" stroke-linejoin="round"/>`;
    }).join('');
  }).join('');
}

function legend(regions: string[]): string {
  const x = PLOT.left + INNER_W + 14;
  return regions.map((region, i) => {
    const y = PLOT.top + 10 + i * 18;
    const colour = PALETTE[i % PALETTE.length]!;
    return `<line x1="${x}" x2="${x + 18}" y1="${y}" y2="${y}" stroke="${colour}" stroke-width="3"/>`
      + `<text class="legend" x="${x + 24}" y="${y}" dominant-baseline="middle">${esc(region)}</text>`;
  }).join('');
}

/** Regions of the cluster first, in its order, then any the timeline has besides (drawn, not dropped). */
function plotRegions(r: ChaosReport, row: FaultRow): string[] {
  const regions = regionsOf(r);
  return [...regions, ...Object.keys(row.timeline).filter((region) => !regions.includes(region))];
}

function plot(r: ChaosReport, row: FaultRow): string {
  const sc = scaleFor(row);
  const regions = plotRegions(r, row);
  const title = `Acknowledged share of answered writes per region during ${row.fault}`;
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${PLOT.width} ${PLOT.height}" role="img" aria-label="${esc(title)}">`
    + faultBand(row, sc) + axes(sc) + regionLines(row, regions, sc) + legend(regions) + '</svg>';
}

function faultSection(r: ChaosReport, row: FaultRow): string {
  const window = `longest window ${ms(row.longestWindowMs)} ms, bound ${ms(row.boundMs)} ms`;
  const failures = row.failures.length
    ? `<ul class="failures">${row.failures.map((f) => `<li>${esc(f)}</li>`).join('')}</ul>`
    : '';
  return `<section class="fault-plot ${overBound(row) ? 'over' : ''}">
    <h3>${esc(row.fault)} <span class="muted">${esc(window)}${row.violations > 0 ? ` · ${row.violations} violations` : ''}</span></h3>
    ${plot(r, row)}
    <p class="action">${esc(row.action)}</p>
    ${Object.keys(row.attemptErrors).length > 0 ? `<p class="action">attempts not acknowledged: ${esc(Object.entries(row.attemptErrors).map(([c, n]) => `${c} ${n}`).join(', '))}</p>` : ''}
    ${row.refused > 0 ? `<p class="action">refused: ${esc(Object.entries(row.refusedCodes).map(([c, n]) => `${c} ${n}`).join(', '))}</p>` : ''}
    ${row.affected ? `<p class="action">aimed at ${esc(row.affected.label)}: longest window ${ms(row.affected.windowMs)} ms</p>` : ''}
    ${failures}
  </section>`;
}

function clusterShape(r: ChaosReport): string {
  const c = r.cluster;
  const nodes = Object.entries(c.regions).map(([region, n]) => `${region} ${n}`).join(', ');
  return `nodes ${nodes} · ${c.redisMasters} Redis masters · ${c.postgres} PostgreSQL · ${c.nats} nats-servers`;
}

const STYLE = `
  body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px; color: #0f172a; }
  h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; } h3 { font-size: 14px; margin: 0 0 4px; }
  table { border-collapse: collapse; margin: 6px 0; } th, td { border-bottom: 1px solid #e2e8f0; padding: 3px 8px; text-align: left; }
  th { font-weight: 600; white-space: nowrap; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
  tr.over { background: #fef2f2; } .bad { color: #b91c1c; font-weight: 600; } .muted { color: #64748b; font-weight: normal; }
  .plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }
  .fault-plot { border: 1px solid #e2e8f0; border-radius: 6px; padding: 8px 10px; } .fault-plot.over { border-color: #fca5a5; }
  .fault-plot svg { width: 100%; height: auto; display: block; }
  .action { margin: 4px 0; color: #334155; } .failures { margin: 4px 0; color: #b91c1c; }
  svg .grid { stroke: #e2e8f0; } svg .axis { stroke: #475569; } svg text { font: 11px system-ui, sans-serif; fill: #334155; }
  svg .label { fill: #64748b; } svg .legend { font-size: 12px; fill: #0f172a; }
  svg .fault { fill: #f59e0b; fill-opacity: 0.18; } svg .fault-label { fill: #b45309; }
`;

export function renderChaosHtml(r: ChaosReport): string {
  const facts = [
    `started ${r.startedAt}`, `seed ${r.seed}`, `${r.seconds} s of load per fault`,
    `${r.rate} writes/s`, `lease TTL ${r.leaseTtlMs} ms`,
  ].map(esc).join(' · ');
  // No script: the page is complete as written, so it is ready for the PNG renderer at once.
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(`chaos ${r.startedAt}`)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>${STYLE}</style></head>
<body data-ready="true">
<h1>Chaos run</h1>
<div class="muted">${facts}</div>
<div class="muted">${esc(clusterShape(r))}</div>
<div class="muted"><code>${esc(r.command)}</code></div>
<h2>${esc(chaosSummaryLine(r))}</h2>
${htmlTable(r)}
<p class="muted">Windows are the longest stretch with no acknowledged write, per region (the region of the debited account);
a highlighted row went over its bound. 503/none: the client gave up retrying, or had no answer.</p>
<h2>Per fault</h2>
<div class="plots">${r.rows.map((row) => faultSection(r, row)).join('\n')}</div>
</body></html>
`;
}

/** Writes chaos.json, chaos.html and (unless the browser fails) chaos.png into `dir` (which exists). */
export function writeChaosReport(dir: string, r: ChaosReport, opts: { png?: boolean } = {}): Promise<WrittenChaos> {
  return writeThreeWays(dir, 'chaos', 'chaos', r, renderChaosHtml(r), opts);
}
