// A check of something only the database knows (a single node's shard epochs), made at most
// every `boundMs` in the background and on demand when the last one is older: "fresh" means a
// check that STARTED no more than boundMs ago has completed, so what it saw is at most that
// old. One check runs at a time, whatever the demand, so a slow database gets one query, not a pile.

export class BoundedCheck {
  /** Monotonic instant at which the last completed check started. */
  private confirmedAt = Number.NEGATIVE_INFINITY;
  private running: { startedAt: number; done: Promise<void> } | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly boundMs: number,
    private readonly check: () => Promise<void>,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Background checks every boundMs (none while one is running); failures go to `onError`. */
  start(onError: (err: unknown) => void): void {
    this.timer = setInterval(() => {
      if (!this.running) this.run().catch(onError);
    }, this.boundMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Resolves once a check started within the last boundMs has completed; rejects with its error. */
  async fresh(): Promise<void> {
    const since = this.now() - this.boundMs;
    if (this.confirmedAt >= since) return;
    const current = this.running;
    if (current && current.startedAt >= since) return current.done;
    if (current) {
      // Too old to count: wait for it (one query at a time), then decide again.
      await current.done.catch(() => undefined);
      return this.fresh();
    }
    return this.run();
  }

  private run(): Promise<void> {
    const startedAt = this.now();
    const settle = () => {
      if (this.running?.startedAt === startedAt) this.running = undefined;
    };
    const done = this.check().then(() => {
      this.confirmedAt = Math.max(this.confirmedAt, startedAt);
      settle();
    }, (err: unknown) => {
      settle();
      throw err;
    });
    this.running = { startedAt, done };
    return done;
  }
}
