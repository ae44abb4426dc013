// Our own bugs, caught where they happen: a failed precondition or postcondition throws, the
// actor's fault handler retires the actor, and its successor reloads from the journal. The
// domain stays free of node: modules, so this is its own assert.

export class InvariantError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvariantError';
  }
}

/** One condition per call; never for user input (that is a returned rejection). */
export function invariant(condition: boolean, message: string): asserts condition {
  if (!condition) throw new InvariantError(message);
}
