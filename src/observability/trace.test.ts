// The traceparent rules of W3C Trace Context as src/observability/trace.ts applies them: what
// is continued, what is refused (and so starts a new trace), and what goes out on a hop.
import { describe, expect, it } from 'vitest';
import {
  childTraceparent, formatTraceparent, newSpanId, newTrace, newTraceId, parseTraceparent, spanIn,
} from './trace.ts';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN_ID = '00f067aa0ba902b7';
const VALID = `00-${TRACE_ID}-${SPAN_ID}-01`;

describe('parseTraceparent', () => {
  it('reads a version 00 header and formats it back unchanged', () => {
    const t = parseTraceparent(VALID);
    expect(t).toEqual({ traceId: TRACE_ID, spanId: SPAN_ID, flags: '01' });
    expect(formatTraceparent(t!)).toBe(VALID);
    expect(parseTraceparent(`00-${TRACE_ID}-${SPAN_ID}-00`)?.flags).toBe('00');
  });

  it('reads a later version by the version 00 layout, extra fields after a dash, and writes it as 00', () => {
    expect(parseTraceparent(`01-${TRACE_ID}-${SPAN_ID}-01`)).toEqual({ traceId: TRACE_ID, spanId: SPAN_ID, flags: '01' });
    const later = parseTraceparent(`cc-${TRACE_ID}-${SPAN_ID}-09-what-comes-next`);
    expect(later).toEqual({ traceId: TRACE_ID, spanId: SPAN_ID, flags: '09' });
    expect(formatTraceparent(later!)).toBe(`00-${TRACE_ID}-${SPAN_ID}-09`);
  });

  it.each([
    ['absent', undefined],
    ['not a string', ['a', 'b']],
    ['empty', ''],
    ['version ff', `ff-${TRACE_ID}-${SPAN_ID}-01`],
    ['a version of one digit', `0-${TRACE_ID}-${SPAN_ID}-01`],
    ['an uppercase version', `0A-${TRACE_ID}-${SPAN_ID}-01`],
    ['a version 00 header with more after the flags', `${VALID}-extra`],
    ['a later version with more after the flags but no dash', `01-${TRACE_ID}-${SPAN_ID}-01x`],
    ['an all-zero trace id', `00-${'0'.repeat(32)}-${SPAN_ID}-01`],
    ['an all-zero parent id', `00-${TRACE_ID}-${'0'.repeat(16)}-01`],
    ['an uppercase trace id', `00-${TRACE_ID.toUpperCase()}-${SPAN_ID}-01`],
    ['an uppercase parent id', `00-${TRACE_ID}-00F067AA0BA902B7-01`],
    ['uppercase flags', `00-${TRACE_ID}-${SPAN_ID}-0A`],
    ['a short trace id', `00-${TRACE_ID.slice(1)}-${SPAN_ID}-01`],
    ['a long parent id', `00-${TRACE_ID}-${SPAN_ID}0-01`],
    ['flags of one digit', `00-${TRACE_ID}-${SPAN_ID}-1`],
    ['a non-hex digit', `00-${TRACE_ID.slice(0, 31)}g-${SPAN_ID}-01`],
    ['underscores for dashes', `00_${TRACE_ID}_${SPAN_ID}_01`],
    ['surrounding spaces', ` ${VALID} `],
    ['two headers joined', `${VALID}, ${VALID}`],
  ])('refuses %s', (_what, header) => {
    expect(parseTraceparent(header)).toBeUndefined();
  });
});

describe('new traces and hops', () => {
  it('makes valid, distinct, sampled traces', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1_000; i++) {
      const t = newTrace();
      const header = formatTraceparent(t);
      expect(parseTraceparent(header), header).toEqual(t);
      expect(t.flags).toBe('01');
      seen.add(t.traceId);
    }
    expect(seen.size).toBe(1_000);
    expect(newSpanId()).toMatch(/^[0-9a-f]{16}$/);
  });

  it('joins a caller trace under a span of its own with the caller flags, sampled without a caller', () => {
    const parent = parseTraceparent(`00-${TRACE_ID}-${SPAN_ID}-00`)!;
    const here = spanIn(parent.traceId, parent.flags);
    expect(here).toMatchObject({ traceId: TRACE_ID, flags: '00' });
    expect(here.spanId).not.toBe(SPAN_ID);
    const id = newTraceId();
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    const fresh = spanIn(id);
    expect(fresh).toMatchObject({ traceId: id, flags: '01' });
    expect(parseTraceparent(formatTraceparent(fresh))).toEqual(fresh);
  });

  it('gives each outgoing hop the same trace id and flags under a new parent id', () => {
    const here = spanIn(TRACE_ID);
    const a = parseTraceparent(childTraceparent(here))!;
    const b = parseTraceparent(childTraceparent(here))!;
    expect([a.traceId, b.traceId]).toEqual([TRACE_ID, TRACE_ID]);
    expect([a.flags, b.flags]).toEqual(['01', '01']);
    expect(new Set([a.spanId, b.spanId, here.spanId]).size).toBe(3);
  });
});
