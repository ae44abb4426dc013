// The ledger events on the bus (NATS JetStream, NATS_URLS): each event published to
// `geopay.events.<tenant>.<account>` (`_ledger` for the ledger's own accounts) in the stream
// GEOPAY_EVENTS, with Nats-Msg-Id = the event id, by the outbox feed of the node owning the
// account's shard (consumer `bus`, src/payments/event-feed.ts). The outbox stays the truth:
// while the bus is away the cursor waits and the events wait in PostgreSQL; once it is back
// they are published in order, a repeat within the duplicate window dropped by JetStream and
// a later one by the consumer, which knows the event id.
import type { BusKeeper, StreamSpec } from '../bus/index.ts';
import { DEFAULT_DUPLICATE_WINDOW_MS } from '../bus/index.ts';
import type { StoredEvent } from '../persistence/events.ts';
import { eventId, viewOf } from './events.ts';

export const EVENTS_STREAM = 'GEOPAY_EVENTS';
export const EVENTS_SUBJECTS = 'geopay.events.>';
/** The subject token of events of no tenant (external and suspense accounts). */
const LEDGER_TOKEN = '_ledger';

export const eventSubject = (e: Pick<StoredEvent, 'tenantId' | 'accountId'>): string => `geopay.events.${e.tenantId ?? LEDGER_TOKEN}.${e.accountId}`;

/** The events stream, as the node's bus keeper makes it. */
export const eventsStreamSpec = (replicas: number): StreamSpec => ({ name: EVENTS_STREAM, subjects: [EVENTS_SUBJECTS], replicas, duplicateWindowMs: DEFAULT_DUPLICATE_WINDOW_MS });

/** Publishes one event; throws while the bus is away (the feed keeps its place and retries). */
export async function publishEvent(keeper: Pick<BusKeeper, 'bus'>, e: StoredEvent): Promise<void> {
  const bus = keeper.bus;
  if (!bus) throw new Error('the bus is not connected');
  await bus.publish(eventSubject(e), JSON.stringify(viewOf(e)), { msgId: eventId(e.accountId, e.n) });
}
