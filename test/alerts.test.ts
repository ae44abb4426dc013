// The Prometheus alert rules (ops/prometheus/alerts.yml) as `npm test` sees them: promtool
// checks them and runs their unit tests (alerts.test.yml), a broken copy of them must fail those
// tests, and every alert carries what the on-call engineer needs (a `for:`, a severity, a
// runbook section that exists) and is tested both firing and silent.
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requirePromtool } from './helpers/prereq.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const RULES = join(ROOT, 'ops', 'prometheus', 'alerts.yml');
const RULE_TESTS = join(ROOT, 'ops', 'prometheus', 'alerts.test.yml');
const RUNBOOK = join(ROOT, 'docs', 'runbook.md');
const SEVERITIES = ['critical', 'warning'];

interface PromtoolRun { code: number; output: string }

/** promtool's exit code and everything it printed; a non-zero exit is a result, not a throw. */
function promtool(args: string[]): Promise<PromtoolRun> {
  const bin = requirePromtool();
  return new Promise((resolve, reject) => {
    execFile(bin, args, { cwd: ROOT, timeout: 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : err.code;
      if (typeof code !== 'number') reject(err ?? new Error('promtool did not exit'));
      else resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

/** Fails with promtool's own report, so a broken rule or test case reads as promtool says it. */
function expectSuccess(run: PromtoolRun, what: string): void {
  if (run.code !== 0) expect.fail(`${what} exited ${run.code}:\n${run.output}`);
}

interface AlertRule { name: string; text: string }

/**
 * Each alerting rule's name and the lines of its block, up to the next rule or group. The file
 * is block-style YAML that promtool has parsed; the count is checked against promtool's own.
 */
function alertRules(yamlText: string): AlertRule[] {
  const starts = [...yamlText.matchAll(/^\s*- alert:\s*(\S+)\s*$/gm)];
  return starts.map((m, i) => {
    const end = starts[i + 1]?.index ?? yamlText.length;
    const block = yamlText.slice(m.index, end).split(/^\s*- name:/m)[0] ?? '';
    return { name: m[1] ?? '', text: block };
  });
}

/** The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens. */
const githubAnchor = (heading: string): string =>
  heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');

function runbookAnchors(markdown: string): Set<string> {
  return new Set([...markdown.matchAll(/^#{1,6}\s+(.+)$/gm)].map((m) => githubAnchor(m[1] ?? '')));
}

interface RuleTestCase { alertname: string; silent: boolean; firing: boolean }

/** The alert_rule_test entries of the promtool test file: which alert, expecting none or some. */
function ruleTestCases(yamlText: string): RuleTestCase[] {
  return yamlText.split(/^(?=\s*- (?:\{\s*)?(?:eval_time|name):)/m)
    .filter((chunk) => /^\s*- (?:\{\s*)?eval_time:/.test(chunk))
    .map((chunk) => ({
      alertname: /alertname:\s*([\w:]+)/.exec(chunk)?.[1] ?? '',
      silent: /exp_alerts:\s*\[\s*\]/.test(chunk),
      firing: /exp_alerts:\s*\n\s*- exp_labels:/.test(chunk),
    }));
}

/**
 * A copy of the rules and their tests in `dir`, with `from` replaced by `to` in the rule of
 * `alert` (found there exactly once).
 */
async function brokenCopy(dir: string, alert: string, from: string, to: string): Promise<string> {
  const rules = await readFile(RULES, 'utf8');
  const rule = alertRules(rules).find((r) => r.name === alert);
  expect(rule?.text.split(from), `${alert} holds ${from} once`).toHaveLength(2);
  await writeFile(join(dir, 'alerts.yml'), rules.replace(rule?.text ?? '', (rule?.text ?? '').replace(from, to)));
  await copyFile(RULE_TESTS, join(dir, 'alerts.test.yml'));
  return join(dir, 'alerts.test.yml');
}

describe('alert rules', () => {
  let rulesText = '';
  let dir = '';
  beforeAll(async () => {
    rulesText = await readFile(RULES, 'utf8');
    dir = await mkdtemp(join(tmpdir(), 'geopay-alerts-test-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('pass promtool check rules, lint included, and hold only the alerts the file lists', async () => {
    const run = await promtool(['check', 'rules', '--lint=all', '--lint-fatal', RULES]);
    expectSuccess(run, 'promtool check rules');
    const found = /SUCCESS: (\d+) rules found/.exec(run.output);
    expect(Number(found?.[1])).toBe(alertRules(rulesText).length);
  });

  it('pass their promtool unit tests', async () => {
    expectSuccess(await promtool(['test', 'rules', RULE_TESTS]), 'promtool test rules');
  });

  it('fail their unit tests when a threshold is wrong: too high for a firing case, too low for a silent one', async () => {
    const broken: [alert: string, from: string, to: string][] = [
      ['GeopayHighErrorRatio', ') > 0.05', ') > 0.5'],
      ['GeopayEventLoopLag', '> 0.25', '> 0.01'],
    ];
    for (const [alert, from, to] of broken) {
      const run = await promtool(['test', 'rules', await brokenCopy(dir, alert, from, to)]);
      expect(run.code, run.output).not.toBe(0);
      expect(run.output).toContain(`alertname: ${alert},`);
    }
  });

  it('each have a for:, a severity, a summary, a description and a runbook section of their own', async () => {
    const anchors = runbookAnchors(await readFile(RUNBOOK, 'utf8'));
    const rules = alertRules(rulesText);
    expect(rules.length).toBeGreaterThan(0);
    for (const { name, text } of rules) {
      expect(text, name).toMatch(/^\s+for: \d+[smh]\s*$/m);
      expect(SEVERITIES, name).toContain(/^\s+severity: (\S+)\s*$/m.exec(text)?.[1]);
      expect(text, name).toMatch(/^\s+summary: \S/m);
      expect(text, name).toMatch(/^\s+description: \S/m);
      const url = /^\s+runbook_url: "?([^"\s]+)"?\s*$/m.exec(text)?.[1];
      expect(url, name).toBe(`docs/runbook.md#${githubAnchor(name)}`);
      expect(anchors.has(githubAnchor(name)), `docs/runbook.md has no heading "${name}"`).toBe(true);
    }
  });

  it('each have a unit test where they fire and one where they stay silent', async () => {
    const cases = ruleTestCases(await readFile(RULE_TESTS, 'utf8'));
    for (const { name } of alertRules(rulesText)) {
      const own = cases.filter((c) => c.alertname === name);
      expect(own.some((c) => c.firing), `no test case where ${name} fires`).toBe(true);
      expect(own.some((c) => c.silent), `no test case where ${name} stays silent`).toBe(true);
    }
    const known = new Set(alertRules(rulesText).map((r) => r.name));
    expect(cases.filter((c) => !known.has(c.alertname)).map((c) => c.alertname)).toEqual([]);
  });
});
