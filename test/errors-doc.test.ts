// docs/errors.md and the registry in src/domain/errors.ts must list the same codes with the
// same HTTP statuses (STYLE.md: fastify's errors.js and its test). The failure names every
// code that differs, in both directions, so the fix is obvious from the output alone.
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ERRORS } from '../src/http/errors.ts';

const DOC = fileURLToPath(new URL('../docs/errors.md', import.meta.url));

interface DocRow { code: string; status: number; line: number }

function cells(line: string): string[] {
  // `| a | b |` -> ['a', 'b']; escaped pipes (\|) stay inside their cell.
  return line.trim().replace(/^\|/, '').replace(/\|$/, '').split(/(?<!\\)\|/).map((c) => c.trim());
}

/** The rows of the codes table: a first cell that is one code in backticks. */
function parseErrorsDoc(md: string): { header: string[] | undefined; rows: DocRow[]; problems: string[] } {
  const rows: DocRow[] = [];
  const problems: string[] = [];
  let header: string[] | undefined;
  md.split('\n').forEach((text, i) => {
    const line = i + 1;
    if (!text.trim().startsWith('|')) return;
    const c = cells(text);
    if (c[0] === 'code') {
      header = c;
      return;
    }
    const m = /^`([a-z0-9_]+)`$/.exec(c[0] ?? '');
    if (!m) return; // separator row or another table
    const code = m[1]!;
    if (!/^[1-5][0-9]{2}$/.test(c[1] ?? '')) {
      problems.push(`line ${line}: \`${code}\` has status ${JSON.stringify(c[1])}, not a 3-digit HTTP status`);
      return;
    }
    if (c.length !== 4 || c[2] === '' || c[3] === '') {
      problems.push(`line ${line}: \`${code}\` needs 4 non-empty cells (code | HTTP status | meaning | retry?), has ${c.length}`);
    }
    rows.push({ code, status: Number(c[1]), line });
  });
  return { header, rows, problems };
}

/** Every disagreement between the registry and the doc, as one line per code. */
function compareWithRegistry(registry: Record<string, { status: number }>, rows: DocRow[]): string[] {
  const out: string[] = [];
  const seen = new Map<string, DocRow>();
  for (const r of rows) {
    const first = seen.get(r.code);
    if (first) out.push(`\`${r.code}\` is listed twice in docs/errors.md (lines ${first.line} and ${r.line})`);
    else seen.set(r.code, r);
  }
  for (const [code, { status }] of Object.entries(registry)) {
    const row = seen.get(code);
    if (!row) out.push(`\`${code}\` (${status}) is in src/domain/errors.ts but missing from docs/errors.md`);
    else if (row.status !== status) {
      out.push(`\`${code}\` has status ${row.status} in docs/errors.md (line ${row.line}) but ${status} in src/domain/errors.ts`);
    }
  }
  for (const [code, row] of seen) {
    if (!Object.hasOwn(registry, code)) {
      out.push(`\`${code}\` is in docs/errors.md (line ${row.line}) but not in src/domain/errors.ts`);
    }
  }
  return out;
}

describe('docs/errors.md', () => {
  const { header, rows, problems } = parseErrorsDoc(readFileSync(DOC, 'utf8'));

  it('has a table with columns code | HTTP status | meaning | retry?', () => {
    expect(header).toEqual(['code', 'HTTP status', 'meaning', 'retry?']);
    expect(problems).toEqual([]);
  });

  it('lists exactly the codes and statuses of src/domain/errors.ts', () => {
    const diffs = compareWithRegistry(ERRORS, rows);
    expect(diffs, `docs/errors.md disagrees with src/domain/errors.ts:\n${diffs.join('\n')}`).toEqual([]);
    expect(rows).toHaveLength(Object.keys(ERRORS).length);
  });
});

// The checker must be able to fail: fed a doc that drifted, it names each differing code.
describe('the errors.md checker', () => {
  const registry = { a_code: { status: 400 }, b_code: { status: 503 }, c_code: { status: 404 } };
  const md = [
    '| code | HTTP status | meaning | retry? |',
    '|---|---|---|---|',
    '| `a_code` | 400 | fine, even with an escaped \\| pipe | no |',
    '| `b_code` | 500 | wrong status | yes |',
    '| `d_code` | 409 | not in the registry | no |',
    '| `a_code` | 400 | again | no |',
    '| `e_code` | oops | bad status | no |',
    '',
    '| other | table |', // another table: ignored
    '| `a_code` |', // a code row without its status is reported, not skipped
  ].join('\n');

  it('reports missing, extra, wrong-status and duplicated codes', () => {
    const parsed = parseErrorsDoc(md);
    expect(parsed.header).toEqual(['code', 'HTTP status', 'meaning', 'retry?']);
    expect(parsed.problems).toEqual([
      'line 7: `e_code` has status "oops", not a 3-digit HTTP status',
      'line 10: `a_code` has status undefined, not a 3-digit HTTP status',
    ]);
    expect(compareWithRegistry(registry, parsed.rows)).toEqual([
      '`a_code` is listed twice in docs/errors.md (lines 3 and 6)',
      '`b_code` has status 500 in docs/errors.md (line 4) but 503 in src/domain/errors.ts',
      '`c_code` (404) is in src/domain/errors.ts but missing from docs/errors.md',
      '`d_code` is in docs/errors.md (line 5) but not in src/domain/errors.ts',
    ]);
  });

  it('accepts a doc that matches', () => {
    const ok = parseErrorsDoc('| `a_code` | 400 | m | no |\n| `b_code` | 503 | m | yes |\n| `c_code` | 404 | m | no |');
    expect(compareWithRegistry(registry, ok.rows)).toEqual([]);
  });
});
