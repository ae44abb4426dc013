// W3C Trace Context (traceparent) for geopay: one trace id follows a payment from the node that
// took the request through every node it is forwarded to, so that node's log lines for it can
// be found together. A leaf (node: modules only): http, cluster, actors and payments all use it.
// The trace is passed along explicitly (request -> workflow -> registry -> forwarder), never
// through an AsyncLocalStorage: on Node 20 that hooks every promise of the process, which cost
// a third of the node's throughput (bench:core, docs/monitoring.md). Work that outlives a
// request (the saga's legs, the relay) carries its own.
import { randomFillSync } from 'node:crypto';

export const TRACEPARENT_HEADER = 'traceparent';

/** One span of a trace, as the W3C header carries it: lowercase hex, never all zeros. */
export interface TraceContext {
  /** 32 hex digits: the whole payment's id, the same on every node. */
  readonly traceId: string;
  /** 16 hex digits: this hop (in a parsed header, the caller's span: the parent-id). */
  readonly spanId: string;
  /** 2 hex digits; bit 0 is `sampled`. Passed on as received. */
  readonly flags: string;
}

// `version-traceid-parentid-flags`, then, for a version above 00 only, `-` and more fields.
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);
/** Our log lines are the record of every request's trace, so a trace we start is sampled. */
const SAMPLED = '01';

/**
 * The header's trace, or undefined when it is absent or invalid by the spec: a version that is
 * not two lowercase hex digits or is `ff`, a version 00 header with anything after the flags,
 * an id of the wrong length, in uppercase, or all zeros. A later version is read by the version
 * 00 layout when its first 55 characters follow it (the spec's forward compatibility).
 */
export function parseTraceparent(header: unknown): TraceContext | undefined {
  if (typeof header !== 'string' || header.length < 55) return undefined;
  const m = TRACEPARENT.exec(header);
  if (!m) return undefined;
  const version = m[1]!;
  const traceId = m[2]!;
  const spanId = m[3]!;
  const flags = m[4]!;
  if (version === 'ff' || (version === '00' && m[5] !== undefined)) return undefined;
  if (traceId === ZERO_TRACE_ID || spanId === ZERO_SPAN_ID) return undefined;
  return { traceId, spanId, flags };
}

/** The header value for `t`, always in version 00 (the only one this code writes). */
export function formatTraceparent(t: TraceContext): string {
  return `00-${t.traceId}-${t.spanId}-${t.flags}`;
}

/** A new trace: a random trace id and span id, sampled. */
export function newTrace(): TraceContext {
  return spanIn(newTraceId());
}

/** This node's span of trace `traceId`; `flags` as the caller sent them, else sampled. */
export function spanIn(traceId: string, flags: string = SAMPLED): TraceContext {
  return { traceId, spanId: newSpanId(), flags };
}

/** The header an outgoing hop carries: the same trace, a span of its own whose parent is `t`. */
export function childTraceparent(t: TraceContext): string {
  return `00-${t.traceId}-${newSpanId()}-${t.flags}`;
}

export function newTraceId(): string {
  return randomHex(16, ZERO_TRACE_ID);
}

export function newSpanId(): string {
  return randomHex(8, ZERO_SPAN_ID);
}

// Random bytes are drawn a few kilobytes at a time: one call into the CSPRNG per 256 ids
// instead of one per id, so a request's ids cost a slice and a hex conversion.
const POOL_BYTES = 4096;
const pool = Buffer.alloc(POOL_BYTES);
let poolOffset = POOL_BYTES;

function randomHex(bytes: number, zero: string): string {
  for (;;) {
    if (poolOffset + bytes > POOL_BYTES) {
      randomFillSync(pool);
      poolOffset = 0;
    }
    const hex = pool.toString('hex', poolOffset, poolOffset + bytes);
    poolOffset += bytes;
    // All zeros means "no id" in the spec; at 2^-64 and below it is a redraw, never an error.
    if (hex !== zero) return hex;
  }
}
