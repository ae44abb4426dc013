// The layer lint must be able to fail. In a copy of the tree this plants an import cycle, one
// breach of each boundary in eslint.config.js and one unresolvable import (the canary: if the
// TypeScript resolver stopped resolving `'./x.ts'`, no-cycle and no-restricted-paths would find
// nothing and say nothing), runs eslint there as `npm run lint` does, and checks that every
// planted file gets exactly the rules it breaks, and the clean ones none. The real tree is
// linted by `npm test` itself, before vitest runs.
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ESLINT_BIN = join(ROOT, 'node_modules', 'eslint', 'bin', 'eslint.js');
const run = promisify(execFile);

interface LintMessage { ruleId: string | null; message: string; line: number }
interface LintResult { filePath: string; messages: LintMessage[]; errorCount: number; warningCount: number }

/** eslint's JSON report for `targets`, run in `cwd`. Exit 1 means "found problems": still a report. */
async function lint(cwd: string, targets: string[]): Promise<LintResult[]> {
  const args = [ESLINT_BIN, '--format', 'json', ...targets];
  const { stdout } = await run(process.execPath, args, { cwd, maxBuffer: 64 * 1024 * 1024 }).catch(
    (err: { code?: unknown; stdout?: string; stderr?: string }) => {
      if (err.code === 1 && err.stdout) return { stdout: err.stdout };
      throw new Error(`eslint failed (exit ${String(err.code)}): ${err.stderr ?? ''}`);
    },
  );
  return JSON.parse(stdout) as LintResult[];
}

const STORE = "export type Store = { rows: number };\nexport const store: Store = { rows: 0 };\n";
const leaf = (name: string): string => `export const ${name} = (): string => '${name}';\n`;
const uses = (specifier: string, name: string): string =>
  `import { ${name} } from '${specifier}';\nexport const via = (): unknown => ${name};\n`;

/** Each planted file, its text, and the rules eslint must report in it (once per entry). */
const PLANTED: Record<string, { text: string; rules: string[] }> = {
  // Targets of the imports below; clean themselves.
  'src/persistence/__store.ts': { text: STORE, rules: [] },
  'src/http/__route.ts': { text: leaf('route'), rules: [] },
  'src/actors/__actor.ts': { text: leaf('actor'), rules: [] },
  'src/cluster/__lease.ts': { text: leaf('lease'), rules: [] },
  'src/payments/__service.ts': { text: leaf('service'), rules: [] },

  // The cycle, and a file that only imports one of its members (no path back: not a cycle).
  'src/domain/__cycle_a.ts': { text: "import { b } from './__cycle_b.ts';\nexport const a = (n: number): number => (n > 0 ? b(n - 1) : 0);\n", rules: ['import-x/no-cycle'] },
  'src/domain/__cycle_b.ts': { text: "import { a } from './__cycle_a.ts';\nexport const b = (n: number): number => (n > 0 ? a(n - 1) : 1);\n", rules: ['import-x/no-cycle'] },
  'src/domain/__clean.ts': { text: uses('./__cycle_a.ts', 'a'), rules: [] },

  // src/domain is pure.
  'src/domain/__uses_persistence.ts': { text: uses('../persistence/__store.ts', 'store'), rules: ['import-x/no-restricted-paths'] },
  'src/domain/__uses_node.ts': { text: uses('node:crypto', 'randomUUID'), rules: ['no-restricted-imports'] },
  'src/domain/__uses_package.ts': { text: "import pino from 'pino';\nexport const via = (): unknown => pino;\n", rules: ['no-restricted-imports'] },
  'src/domain/__uses_globals.ts': {
    text: "export const size = (s: string): number => Buffer.byteLength(s) + Number(process.env.N ?? 0);\n",
    rules: ['no-restricted-globals', 'no-restricted-globals'],
  },
  'src/domain/__uses_pg.test.ts': {
    text: "import { it } from 'vitest';\nimport pg from 'pg';\nit('x', () => void pg);\n",
    rules: ['no-restricted-imports'],
  },
  'src/domain/__unresolved.ts': { text: uses('./__nowhere.ts', 'nothing'), rules: ['import-x/no-unresolved'] },

  // src/persistence imports only src/domain.
  'src/persistence/__uses_http.ts': { text: uses('../http/__route.ts', 'route'), rules: ['import-x/no-restricted-paths'] },
  'src/persistence/__uses_actors.ts': { text: uses('../actors/__actor.ts', 'actor'), rules: ['import-x/no-restricted-paths'] },
  'src/persistence/__uses_cluster.ts': { text: uses('../cluster/__lease.ts', 'lease'), rules: ['import-x/no-restricted-paths'] },
  'src/persistence/__uses_payments.ts': { text: uses('../payments/__service.ts', 'service'), rules: ['import-x/no-restricted-paths'] },

  // src/actors never reaches up into src/http; src/http goes through src/payments, types included.
  'src/actors/__uses_http.ts': { text: uses('../http/__route.ts', 'route'), rules: ['import-x/no-restricted-paths'] },
  'src/http/__uses_persistence.ts': { text: uses('../persistence/__store.ts', 'store'), rules: ['import-x/no-restricted-paths'] },
  'src/http/__uses_persistence_type.ts': {
    text: "import type { Store } from '../persistence/__store.ts';\nexport const rows = (s: Store): number => s.rows;\n",
    rules: ['import-x/no-restricted-paths'],
  },

  // bench/ and scripts/ drive the system from outside.
  'bench/__uses_actors.ts': { text: uses('../src/actors/__actor.ts', 'actor'), rules: ['import-x/no-restricted-paths'] },
  'scripts/__uses_actors.ts': { text: uses('../src/actors/__actor.ts', 'actor'), rules: ['import-x/no-restricted-paths'] },
};

describe('eslint layer rules', () => {
  let dir = '';
  let results: LintResult[] = [];

  beforeAll(async () => {
    dir = await realpath(await mkdtemp(join(tmpdir(), 'geopay-lint-')));
    for (const file of ['eslint.config.js', 'package.json', 'tsconfig.json']) await cp(join(ROOT, file), join(dir, file));
    await cp(join(ROOT, 'src'), join(dir, 'src'), { recursive: true });
    await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
    for (const [file, { text }] of Object.entries(PLANTED)) {
      await mkdir(dirname(join(dir, file)), { recursive: true });
      await writeFile(join(dir, file), text);
    }
    results = await lint(dir, ['.']);
  });

  afterAll(async () => {
    // rm unlinks the node_modules symlink; it does not follow it.
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reports each planted cycle and breach in its own file, and nothing in the clean ones', () => {
    const byFile = new Map(results.map((r) => [relative(dir, r.filePath), r]));
    const found = Object.fromEntries(
      Object.keys(PLANTED).map((file) => {
        const result = byFile.get(file);
        return [file, result ? result.messages.map((m) => m.ruleId ?? `fatal: ${m.message}`).sort() : ['<not linted>']];
      }),
    );
    const wanted = Object.fromEntries(Object.entries(PLANTED).map(([file, { rules }]) => [file, [...rules].sort()]));
    expect(found).toEqual(wanted);
  });

  it('names the imported module in a boundary report', () => {
    const result = results.find((r) => relative(dir, r.filePath) === 'src/http/__uses_persistence.ts');
    expect(result?.messages.map((m) => m.message)).toEqual([
      'Unexpected path "../persistence/__store.ts" imported in restricted zone. src/http goes through src/payments, never to src/persistence.',
    ]);
  });
});
