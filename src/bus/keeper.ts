// One node's connection to the bus, shared by everything on it that publishes or consumes (the
// ledger events, the transfer legs): made in the background, retried while the bus is away so
// the node starts and pays without it, and the streams its users need made once it answers.
// After that the client reconnects on its own (bus.ts).
import type { Logger } from 'pino';
import type { Bus } from './bus.ts';
import { connectBus } from './bus.ts';
import type { StreamSpec } from './streams.ts';

export interface BusKeeperOptions {
  urls: readonly string[];
  /** The connection's name as the servers show it. */
  name: string;
  /** Every stream this node's users need, made (or brought to spec) before the bus is handed out. */
  streams: readonly StreamSpec[];
  logger: Logger;
  /** Between two attempts while the bus is away; default 1 s. */
  retryMs?: number;
}

export class BusKeeper {
  private current: Bus | undefined;
  private connecting: Promise<Bus | undefined> | undefined;
  private stopped = false;

  constructor(private readonly opts: BusKeeperOptions) {}

  start(): void {
    this.connecting ??= this.connect();
  }

  /** The bus, once connected with its streams made; undefined before (and after stop). */
  get bus(): Bus | undefined {
    return this.current;
  }

  /** Resolves with the bus once it is ready, or undefined if the keeper stopped first. */
  ready(): Promise<Bus | undefined> {
    return this.connecting ?? Promise.resolve(undefined);
  }

  /** Stops trying; closes the connection (its users stop their consumers first). */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.connecting;
    const bus = this.current;
    this.current = undefined;
    await bus?.close();
  }

  private async connect(): Promise<Bus | undefined> {
    while (!this.stopped) {
      let bus: Bus | undefined;
      try {
        bus = await connectBus({ urls: this.opts.urls, name: this.opts.name, logger: this.opts.logger });
        for (const spec of this.opts.streams) await bus.ensureStream(spec);
        if (this.stopped) {
          await bus.close();
          break;
        }
        this.current = bus;
        return bus;
      } catch (err) {
        await bus?.close().catch(() => undefined);
        this.opts.logger.warn({ err }, 'bus not reachable; what goes by it waits in the PostgreSQL outbox');
        await new Promise((r) => setTimeout(r, this.opts.retryMs ?? 1_000).unref());
      }
    }
    return undefined;
  }
}
