// A parser of the Prometheus text exposition format 0.0.4, strict enough to fail on what a
// scraper would refuse: HELP and TYPE lines, samples `name{label="value",...} value`, label
// values with the format's escapes. Histograms come back as families of their _bucket, _sum
// and _count samples, grouped by their labels without `le`.
export interface PromSample { name: string; labels: Record<string, string>; value: number }
export interface PromFamily { name: string; type: string; help: string; samples: PromSample[] }

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y;

export function parsePromText(text: string): Map<string, PromFamily> {
  const families = new Map<string, PromFamily>();
  const family = (name: string): PromFamily => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, type: 'untyped', help: '', samples: [] }));
    return f;
  };
  for (const [i, line] of text.split('\n').entries()) {
    if (line.trim() === '') continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/.exec(line);
    if (meta) {
      if (meta[1] === 'HELP') family(meta[2]!).help = meta[3]!;
      else family(meta[2]!).type = meta[3]!;
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`line ${i + 1}: not a sample: ${line}`);
    const value = parseValue(m[4]!);
    if (value === undefined) throw new Error(`line ${i + 1}: bad value: ${line}`);
    const name = m[1]!;
    family(familyOf(name, families)).samples.push({ name, labels: parseLabels(m[3] ?? '', i + 1), value });
  }
  return families;
}

/** A sample's value as Prometheus reads it (Go's ParseFloat: NaN and Inf in any case; prom-client writes "Nan"). */
function parseValue(raw: string): number | undefined {
  const special = /^([+-]?)(inf|nan)$/i.exec(raw);
  if (special) return special[2]!.toLowerCase() === 'nan' ? Number.NaN : special[1] === '-' ? -Infinity : Infinity;
  const v = Number(raw);
  return Number.isNaN(v) || raw.trim() === '' ? undefined : v;
}

/** A histogram's or summary's _bucket/_sum/_count samples belong to the family TYPE named. */
function familyOf(name: string, families: Map<string, PromFamily>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const base = name.slice(0, -suffix.length);
    const t = families.get(base)?.type;
    if (t === 'histogram' || t === 'summary') return base;
  }
  return name;
}

function parseLabels(raw: string, line: number): Record<string, string> {
  const out: Record<string, string> = {};
  LABEL.lastIndex = 0;
  while (LABEL.lastIndex < raw.length) {
    const m = LABEL.exec(raw);
    if (!m) throw new Error(`line ${line}: bad labels: {${raw}}`);
    if (m[1]! in out) throw new Error(`line ${line}: label ${m[1]} twice`);
    out[m[1]!] = m[2]!.replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
    if (m[3] === '') break;
  }
  return out;
}
