// Account requests and their results as JSON, for the trip between nodes. bigint travels as
// {"$bigint":"..."} and an operational error as its code and message; nothing else needs help.
import type { AccountRequest, CommandResult } from './protocol.ts';
import type { ErrorCode } from '../domain/errors.ts';
import { ERRORS, GeopayError } from '../domain/errors.ts';

const replacer = (_k: string, v: unknown): unknown => (typeof v === 'bigint' ? { $bigint: v.toString() } : v);
const reviver = (_k: string, v: unknown): unknown => {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length === 1 && keys[0] === '$bigint' && typeof o.$bigint === 'string' && /^-?[0-9]{1,20}$/.test(o.$bigint)) return BigInt(o.$bigint);
  }
  return v;
};

/**
 * `awaitOutcomeMs`: the sender waits for the outcome of the transfer this request creates; the
 * owner answers once the transfer settled or returned, or this long after its commit (src/payments/forwarded.ts).
 */
export interface WireRequest { req: AccountRequest; at: string; hops: number; awaitOutcomeMs?: number }

export function encodeRequest(w: WireRequest): string {
  return JSON.stringify(w, replacer);
}

export function decodeRequest(text: string): WireRequest {
  return JSON.parse(text, reviver) as WireRequest;
}

/** A result, and with `outcome` (null: none came in time) the outcome a WireRequest's awaitOutcomeMs asked for. */
export function encodeResult(r: CommandResult, outcome?: unknown): string {
  const o = outcome === undefined ? {} : { outcome };
  if (r.type === 'error') return JSON.stringify({ type: 'error', code: r.error.code, message: r.error.message, ...o });
  return JSON.stringify({ ...r, ...o }, replacer);
}

/** The result, and the outcome when the answer carries one (undefined when it carries none). */
export function decodeResultWithOutcome(text: string): { result: CommandResult; outcome: unknown } {
  const { outcome, ...v } = JSON.parse(text, reviver) as (CommandResult | { type: 'error'; code: string; message: string }) & { outcome?: unknown };
  if (v.type === 'error' && 'code' in v) {
    const code = (Object.hasOwn(ERRORS, v.code) ? v.code : 'internal_error') as ErrorCode;
    return { result: { type: 'error', error: new GeopayError(code, v.message) }, outcome };
  }
  return { result: v as CommandResult, outcome };
}

export function decodeResult(text: string): CommandResult {
  return decodeResultWithOutcome(text).result;
}

export function encodeState(state: unknown): string {
  return JSON.stringify({ state: state ?? null }, replacer);
}

export function decodeState(text: string): unknown {
  return (JSON.parse(text, reviver) as { state: unknown }).state ?? undefined;
}

/** Any JSON value with bigints, for the trip between nodes (a region read's arguments and answer). */
export function encodeValue(v: unknown): string {
  return JSON.stringify({ value: v ?? null }, replacer);
}

export function decodeValue(text: string): unknown {
  return (JSON.parse(text, reviver) as { value: unknown }).value ?? undefined;
}
