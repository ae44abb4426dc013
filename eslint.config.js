// The layer rules of STYLE.md (who may import whom) and "no import cycles", checked by a machine.
// Every path rule below depends on the TypeScript resolver turning `'../domain/ids.ts'` into a
// file: `import-x/no-unresolved` is on so that a resolver that stops resolving fails the lint
// instead of letting no-cycle and no-restricted-paths pass in silence. test/lint.test.ts plants
// a cycle and each kind of violation in a copy of the tree and checks that each one is reported.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import { importX } from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

// no-restricted-paths resolves its zones against process.cwd() unless told otherwise; anchor
// them to this file so `eslint` run from another folder (or through the Node API) checks the same.
const root = import.meta.dirname;

const layer = (name) => `./src/${name}`;

export default defineConfig(
  { ignores: ['node_modules/', 'data/', 'reports/', 'dist/', 'coverage/'] },

  js.configs.recommended,
  tseslint.configs.recommended,

  {
    files: ['**/*.{ts,js}'],
    plugins: { 'import-x': importX },
    settings: {
      // Without these import-x parses no .ts file while it walks the graph: no-unresolved still
      // passes, but no-cycle finds nothing (test/lint.test.ts catches that).
      'import-x/extensions': ['.ts', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      'import-x/external-module-folders': ['node_modules', 'node_modules/@types'],
      'import-x/resolver-next': [
        createTypeScriptImportResolver({ project: `${root}/tsconfig.json`, alwaysTryTypes: true }),
      ],
    },
    rules: {
      'import-x/no-unresolved': 'error',
      // Type-only imports are skipped (they vanish at run time); ignoreExternal keeps the walk
      // out of node_modules.
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      'import-x/no-restricted-paths': [
        'error',
        {
          basePath: root,
          zones: [
            {
              target: layer('domain'),
              from: '.',
              except: [layer('domain'), './node_modules'],
              message: 'src/domain is pure: it imports only from src/domain.',
            },
            ...['actors', 'http', 'cluster', 'payments', 'webhooks', 'bus'].map((name) => ({
              target: layer('persistence'),
              from: layer(name),
              message: 'src/persistence imports only src/domain.',
            })),
            {
              target: layer('bus'),
              from: ['actors', 'http', 'cluster', 'payments', 'persistence', 'webhooks'].map(layer),
              message: 'src/bus is a leaf: packages and src/domain only.',
            },
            {
              target: layer('webhooks'),
              from: ['actors', 'http', 'cluster', 'payments', 'bus'].map(layer),
              message: 'src/webhooks signs and delivers; it knows nothing of payments, actors or HTTP routes.',
            },
            {
              target: layer('actors'),
              from: layer('http'),
              message: 'src/actors never reaches up into src/http.',
            },
            {
              target: layer('http'),
              from: layer('persistence'),
              message: 'src/http goes through src/payments, never to src/persistence.',
            },
            {
              target: ['./bench', './scripts'],
              from: layer('actors'),
              message: 'bench/ and scripts/ drive the system from outside, not through its actors.',
            },
          ],
        },
      ],

      // A `_`-prefixed name is unused on purpose. (`as never`, used at the nact boundary and in
      // exhaustiveness checks, is flagged by no rule of this set: nothing to turn off for it.)
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
          ignoreRestSiblings: true,
        },
      ],
      // A `let` declared first and assigned once after a closure that reads it (the actor's own
      // ref in src/actors/nact.ts, the running cluster in scripts/cluster.ts) cannot be const.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // src/http/json-guard.ts matches U+0000 on purpose: PostgreSQL cannot store it.
      'no-control-regex': 'off',
    },
  },

  {
    // About 70 lines a function (STYLE.md): split by responsibility. A function that must be
    // longer says why in an eslint-disable comment on its first line.
    files: ['src/**/*.ts', 'bench/**/*.ts', 'scripts/**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: { 'max-lines-per-function': ['error', { max: 70, skipBlankLines: true, skipComments: true, IIFEs: true }] },
  },

  {
    // An HTTP body under test is whatever the server sent; the assertions are its type check.
    files: ['test/**/*.ts', 'bench/**/*.ts', 'scripts/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },

  {
    // Bare packages and node: builtins resolve into node_modules or to nothing, which
    // no-restricted-paths cannot see; match them by their specifier instead.
    files: ['src/domain/**/*.ts'],
    ignores: ['src/domain/**/*.test.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(?!\\.{1,2}/)',
              message: 'src/domain is pure: no node: builtin and no package (time, ids and I/O come in as arguments).',
            },
          ],
        },
      ],
      'no-restricted-globals': [
        'error',
        { name: 'Buffer', message: 'src/domain is pure: bytes and encodings belong to the edges.' },
        { name: 'process', message: 'src/domain is pure: config and environment come in as arguments.' },
      ],
    },
  },
  {
    // Domain unit tests sit next to the code and need their test tools, nothing else.
    files: ['src/domain/**/*.test.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(?!\\.{1,2}/|vitest$|fast-check$)',
              message: 'A domain test imports src/domain, vitest and fast-check only.',
            },
          ],
        },
      ],
    },
  },
);
