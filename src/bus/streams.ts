// Idempotent JetStream setup, run by every node at start: a stream or durable consumer that is
// missing is created, one whose settings differ from the code's is updated, one that matches is
// left alone. Several nodes starting at once race to create; the loser finds it there and goes
// on. A difference JetStream refuses to update (a duplicate window longer than the max age, more
// replicas than servers) fails the start loudly, with the server's reason.
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiError,
  ReplayPolicy,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';
import { millis, nanos } from '@nats-io/transport-node';
import assert from 'node:assert/strict';

/**
 * 2 minutes (JetStream's own default): the outbox relay re-publishes a row that stays
 * unacknowledged after its retry delay (seconds), so a re-publish lands well inside the window
 * and is dropped as a duplicate. A copy later than that is caught by the consumer's own
 * once-per-key apply. The server keeps every id of the window in memory: 120 s x 1,000 msg/s
 * is 120,000 ids, a few MB.
 */
export const DEFAULT_DUPLICATE_WINDOW_MS = 120_000;

/** JetStream API error codes this module tells apart (nats-server's errors.json). */
const STREAM_NOT_FOUND = 10059;
const STREAM_NAME_IN_USE = 10058;
const CONSUMER_NOT_FOUND = 10014;

export interface StreamSpec {
  name: string;
  subjects: string[];
  /** 1 on a single server; 3 on a JetStream cluster of three or more (a majority survives one loss). */
  replicas: number;
  /** Publishes with a Nats-Msg-Id seen this long ago or less are dropped as duplicates. */
  duplicateWindowMs?: number;
  /** Messages older than this are removed; unset: kept until deleted (no age limit). */
  maxAgeMs?: number;
  /**
   * 'limits' (the default): kept until the limits remove them, for any number of readers.
   * 'workqueue': a message is removed once acked; its consumers' filters may not overlap.
   * Fixed when the stream is created (JetStream cannot change it).
   */
  retention?: 'limits' | 'workqueue';
}

export interface ConsumerSpec {
  durable: string;
  filterSubject: string;
  /** A delivery not acked (nor naked) within this is delivered again. */
  ackWaitMs: number;
  /** Deliveries outstanding (not yet acked) at once; the server stops delivering at this bound. */
  maxAckPending: number;
}

export interface StreamSummary {
  name: string;
  replicas: number;
  /** What ensureStream did: the stream is as specified either way. */
  outcome: 'created' | 'updated' | 'unchanged';
}

/** Creates the stream, or brings its subjects, replicas, duplicate window and max age to `spec`. */
export async function ensureStream(jsm: JetStreamManager, spec: StreamSpec): Promise<StreamSummary> {
  assert.ok(spec.subjects.length > 0, `stream ${spec.name} needs at least one subject`);
  assert.ok(Number.isInteger(spec.replicas) && spec.replicas >= 1 && spec.replicas <= 5, `stream ${spec.name}: replicas must be 1 to 5`);
  const wanted = streamConfig(spec);
  const current = (await streamConfigOrUndefined(jsm, spec.name)) ?? (await createStream(jsm, wanted));
  if (current === 'created') return { name: spec.name, replicas: spec.replicas, outcome: 'created' };
  if (current.retention !== wanted.retention) throw new Error(`stream ${spec.name} has retention ${current.retention}, the code wants ${wanted.retention}: JetStream cannot change it; delete the stream or give it another name`);
  const differences = streamDifferences(current, wanted);
  if (differences.length === 0) return { name: spec.name, replicas: spec.replicas, outcome: 'unchanged' };
  try {
    await jsm.streams.update(spec.name, {
      subjects: wanted.subjects,
      num_replicas: wanted.num_replicas,
      duplicate_window: wanted.duplicate_window,
      max_age: wanted.max_age,
    });
  } catch (err) {
    throw setupError(`stream ${spec.name} differs (${differences.join(', ')}) and could not be updated`, err);
  }
  return { name: spec.name, replicas: spec.replicas, outcome: 'updated' };
}

/**
 * Creates the durable pull consumer, or brings its filter, ack wait and max ack pending to `spec`.
 * Redelivery is unbounded (max_deliver -1): a message that keeps failing stays in the stream
 * and is retried until its handler succeeds; the runner logs and counts it meanwhile.
 */
export async function ensureConsumer(jsm: JetStreamManager, stream: string, spec: ConsumerSpec): Promise<'created' | 'updated' | 'unchanged'> {
  assert.ok(spec.ackWaitMs >= 1_000, `consumer ${spec.durable}: ackWaitMs under 1 s redelivers work still in progress`);
  assert.ok(Number.isInteger(spec.maxAckPending) && spec.maxAckPending >= 1, `consumer ${spec.durable}: maxAckPending must be a positive integer`);
  const wanted = consumerConfig(spec);
  const current = (await consumerConfigOrUndefined(jsm, stream, spec.durable)) ?? (await createConsumer(jsm, stream, wanted));
  if (current === 'created') return 'created';
  const differences = consumerDifferences(current, wanted);
  if (differences.length === 0) return 'unchanged';
  try {
    await jsm.consumers.update(stream, spec.durable, {
      ack_wait: wanted.ack_wait,
      max_ack_pending: wanted.max_ack_pending,
      max_deliver: wanted.max_deliver,
      filter_subject: wanted.filter_subject,
    });
  } catch (err) {
    throw setupError(`consumer ${stream}/${spec.durable} differs (${differences.join(', ')}) and could not be updated`, err);
  }
  return 'updated';
}

/** The part of a stream's config this module owns; the server's defaults hold for the rest. */
type OwnedStreamConfig = Pick<StreamConfig, 'name' | 'subjects' | 'num_replicas' | 'duplicate_window' | 'max_age' | 'storage' | 'retention' | 'discard'>;

/** 'created', or the config of the stream another node created between our look-up and our create. */
async function createStream(jsm: JetStreamManager, wanted: OwnedStreamConfig): Promise<'created' | StreamConfig> {
  try {
    await jsm.streams.add(wanted);
    return 'created';
  } catch (err) {
    if (!isApiError(err, STREAM_NAME_IN_USE)) throw setupError(`stream ${wanted.name} could not be created`, err);
    return (await jsm.streams.info(wanted.name)).config;
  }
}

/** 'created', or the config of the consumer another node created between our look-up and our create. */
async function createConsumer(jsm: JetStreamManager, stream: string, wanted: ConsumerConfig): Promise<'created' | ConsumerConfig> {
  try {
    await jsm.consumers.add(stream, wanted);
    return 'created';
  } catch (err) {
    // Which error a create that lost the race gets differs between server versions: look again.
    const existing = await consumerConfigOrUndefined(jsm, stream, wanted.durable_name ?? '');
    if (existing === undefined) throw setupError(`consumer ${stream}/${wanted.durable_name} could not be created`, err);
    return existing;
  }
}

function streamConfig(spec: StreamSpec): OwnedStreamConfig {
  return {
    name: spec.name,
    subjects: spec.subjects,
    num_replicas: spec.replicas,
    duplicate_window: nanos(spec.duplicateWindowMs ?? DEFAULT_DUPLICATE_WINDOW_MS),
    max_age: nanos(spec.maxAgeMs ?? 0),
    // On disk, kept until the limits say otherwise (several consumers read the same stream),
    // and a full stream refuses new messages rather than dropping old ones nobody has read.
    storage: StorageType.File,
    retention: spec.retention === 'workqueue' ? RetentionPolicy.Workqueue : RetentionPolicy.Limits,
    discard: DiscardPolicy.New,
  };
}

function consumerConfig(spec: ConsumerSpec): ConsumerConfig {
  return {
    durable_name: spec.durable,
    filter_subject: spec.filterSubject,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    replay_policy: ReplayPolicy.Instant,
    ack_wait: nanos(spec.ackWaitMs),
    max_ack_pending: spec.maxAckPending,
    max_deliver: -1,
  };
}

function streamDifferences(current: StreamConfig, wanted: OwnedStreamConfig): string[] {
  const out: string[] = [];
  const have = [...(current.subjects ?? [])].sort().join(' ');
  const want = [...wanted.subjects].sort().join(' ');
  if (have !== want) out.push(`subjects ${have} -> ${want}`);
  if (current.num_replicas !== wanted.num_replicas) out.push(`replicas ${current.num_replicas} -> ${wanted.num_replicas}`);
  if (current.duplicate_window !== wanted.duplicate_window) out.push(`duplicate window ${millis(current.duplicate_window)} ms -> ${millis(wanted.duplicate_window)} ms`);
  if (current.max_age !== wanted.max_age) out.push(`max age ${millis(current.max_age)} ms -> ${millis(wanted.max_age)} ms`);
  return out;
}

function consumerDifferences(current: ConsumerConfig, wanted: ConsumerConfig): string[] {
  const out: string[] = [];
  if ((current.filter_subject ?? '') !== wanted.filter_subject) out.push(`filter ${current.filter_subject} -> ${wanted.filter_subject}`);
  if (current.ack_wait !== wanted.ack_wait) out.push(`ack wait ${millis(current.ack_wait ?? 0)} ms -> ${millis(wanted.ack_wait ?? 0)} ms`);
  if (current.max_ack_pending !== wanted.max_ack_pending) out.push(`max ack pending ${current.max_ack_pending} -> ${wanted.max_ack_pending}`);
  if (current.max_deliver !== wanted.max_deliver) out.push(`max deliver ${current.max_deliver} -> ${wanted.max_deliver}`);
  // Explicit acks are what the runner's correctness rests on; nothing else may be updated to it.
  if (current.ack_policy !== AckPolicy.Explicit) out.push(`ack policy ${current.ack_policy} (must be explicit)`);
  return out;
}

async function streamConfigOrUndefined(jsm: JetStreamManager, name: string): Promise<StreamConfig | undefined> {
  try {
    return (await jsm.streams.info(name)).config;
  } catch (err) {
    if (isApiError(err, STREAM_NOT_FOUND)) return undefined;
    throw setupError(`stream ${name} could not be read`, err);
  }
}

async function consumerConfigOrUndefined(jsm: JetStreamManager, stream: string, durable: string): Promise<ConsumerConfig | undefined> {
  try {
    return (await jsm.consumers.info(stream, durable)).config;
  } catch (err) {
    if (isApiError(err, CONSUMER_NOT_FOUND)) return undefined;
    throw setupError(`consumer ${stream}/${durable} could not be read`, err);
  }
}

function isApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

/** A start-up failure: the node cannot run with this bus, and says which object and why. */
function setupError(message: string, cause: unknown): Error {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new Error(`${message}: ${why}`, { cause });
}
