// Business outcomes are returned values, never thrown (STYLE.md, "three kinds of failure").
export type Result<T, E extends string> = { ok: true; value: T } | { ok: false; code: E };

export const ok = <T>(value: T): { ok: true; value: T } => ({ ok: true, value });
export const fail = <E extends string>(code: E): { ok: false; code: E } => ({ ok: false, code });
