// Plain-text tables for the terminal: every bench and `npm run cluster` print through
// formatTable, so columns line up the same way everywhere. Labels (the leading columns) are
// left-aligned, numbers right-aligned so their digits line up.

export function formatTable(header: string[], rows: string[][], opts: { labelColumns?: number } = {}): string {
  const labels = opts.labelColumns ?? 1;
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i < labels ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export const fixed = (v: number | null | undefined, digits: number): string =>
  v === null || v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(digits);

/** `2026-11-28T13-01-02Z`: sortable, and valid in a file name everywhere. */
export const stamp = (d = new Date()): string => d.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
