// The bus layer's public surface (NATS JetStream): what the composition root and the payments
// code import. The files behind it: bus.ts (connection), streams.ts (setup), publish.ts,
// consumer.ts (the pull runner), keeper.ts (the node's one connection) and message.ts (what a handler sees). docs/bus.md explains.
export { connectBus, parseNatsUrls, type Bus, type BusOptions, type ConsumerState, type StreamState } from './bus.ts';
export type { ConsumeOptions, ConsumerRunner, HandlerFailure } from './consumer.ts';
export { BusKeeper, type BusKeeperOptions } from './keeper.ts';
export { MSG_ID_HEADER, type BusMessage, type HandlerOutcome, type MessageHandler } from './message.ts';
export type { PublishAck, PublishOptions } from './publish.ts';
export { DEFAULT_DUPLICATE_WINDOW_MS, type ConsumerSpec, type StreamSpec, type StreamSummary } from './streams.ts';
