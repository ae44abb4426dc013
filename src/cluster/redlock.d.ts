// Types for redlock 5.0.0-beta.2, pinned exactly. Its package.json "exports" has no "types"
// condition, so under NodeNext its bundled index.d.ts does not resolve; this declares only
// what leases.ts uses, checked against dist/index.d.ts and dist/esm/index.js of that version.
declare module 'redlock' {
  import type { EventEmitter } from 'node:events';
  import type { Redis } from 'ioredis';

  export interface Settings {
    readonly driftFactor: number;
    readonly retryCount: number;
    readonly retryDelay: number;
    readonly retryJitter: number;
    readonly automaticExtensionThreshold: number;
  }

  /** Another lock holds the resource on this master (the script applied to fewer keys than asked). */
  export class ResourceLockedError extends Error {}

  /** No quorum for the operation; `attempts` resolve to per-master votes once all have answered. */
  export class ExecutionError extends Error {
    readonly attempts: ReadonlyArray<Promise<ExecutionStats>>;
  }

  export interface ExecutionStats {
    readonly membershipSize: number;
    readonly quorumSize: number;
    readonly votesFor: Set<Redis>;
    readonly votesAgainst: Map<Redis, Error>;
  }

  export class Lock {
    readonly resources: string[];
    /** Stored under every resource on every master that voted for it. */
    readonly value: string;
    /** Wall clock (Date.now()) estimate; leases.ts keeps its own monotonic deadline instead. */
    expiration: number;
    constructor(redlock: Redlock, resources: string[], value: string, attempts: ReadonlyArray<Promise<ExecutionStats>>, expiration: number);
  }

  export default class Redlock extends EventEmitter {
    constructor(
      clients: Iterable<Redis>,
      settings?: Partial<Settings>,
      // Functions only: the constructor ignores a plain string (index.d.ts says it takes either).
      scripts?: {
        readonly acquireScript?: (script: string) => string;
        readonly extendScript?: (script: string) => string;
        readonly releaseScript?: (script: string) => string;
      },
    );
    /** Makes each lock's value; an implementation detail of this exact version (see leases.ts). */
    protected _random(): string;
    acquire(resources: string[], duration: number, settings?: Partial<Settings>): Promise<Lock>;
    extend(existing: Lock, duration: number, settings?: Partial<Settings>): Promise<Lock>;
    release(lock: Lock, settings?: Partial<Settings>): Promise<unknown>;
  }
}
