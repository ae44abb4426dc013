// Request JSON that PostgreSQL cannot store (NUL, lone surrogates) or that is nested deep
// enough to exhaust a recursive walk is refused at the edge with validation_failed, so it never
// reaches an actor's batch. Metadata is put in the key order jsonb keeps, so an answer built
// from the request and one read back from the database are byte for byte the same.

const MAX_DEPTH = 8;
// A NUL, or a surrogate half without its partner.
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** The first problem of a parsed JSON value, or undefined. Iterative: depth cannot blow the stack. */
export function jsonProblem(root: unknown): string | undefined {
  const stack: { v: unknown; depth: number }[] = [{ v: root, depth: 0 }];
  while (stack.length > 0) {
    const { v, depth } = stack.pop()!;
    if (typeof v === 'string') {
      if (UNSTORABLE.test(v)) return 'a string holds a NUL or a lone surrogate';
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (depth >= MAX_DEPTH) return `nested deeper than ${MAX_DEPTH} levels`;
    if (Array.isArray(v)) {
      for (const x of v) stack.push({ v: x, depth: depth + 1 });
    } else {
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
        if (UNSTORABLE.test(k)) return 'a key holds a NUL or a lone surrogate';
        stack.push({ v: x, depth: depth + 1 });
      }
    }
  }
  return undefined;
}

/** jsonb's key order: shorter keys first, then bytewise. Depth is bounded by jsonProblem. */
export function jsonbOrder<T>(v: T): T {
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(jsonbOrder) as T;
  const entries = Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, Buffer.from(k, 'utf8'), x] as const);
  entries.sort((a, b) => a[1].length - b[1].length || Buffer.compare(a[1], b[1]));
  return Object.fromEntries(entries.map(([k, , x]) => [k, jsonbOrder(x)])) as T;
}
