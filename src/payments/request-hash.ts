// A stable hash of what a request asks for (route, params and canonical body): an
// Idempotency-Key replayed with a different request is told apart by it.
import { createHash } from 'node:crypto';

export function requestHash(route: string, params: unknown, body: unknown): string {
  return createHash('sha256').update(route).update('\n').update(canonical(params)).update('\n').update(canonical(body)).digest('hex');
}

function canonical(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(',')}}`;
}
