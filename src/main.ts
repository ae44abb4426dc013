// Composition root of one geopay process: read config once, start the node, print where it
// listens (and the admin key when this start created it), and shut down gracefully on signals.
import { ConfigError, loadConfig } from '../config/settings.ts';
import { rootLogger, startNode } from './node.ts';

async function main(): Promise<void> {
  let cfg;
  try {
    cfg = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = rootLogger(cfg);
  // Signals are handled from the first moment: a SIGTERM during start waits for the start,
  // then drains, instead of killing the process halfway.
  let signalled = false;
  const shutdown = (signal: string) => {
    if (signalled) return;
    signalled = true;
    logger.info({ signal }, 'shutting down');
    const hard = setTimeout(() => process.exit(1), cfg.shutdownTimeoutMs + 30_000);
    hard.unref();
    starting.then((n) => n.stop()).then(() => process.exit(0), (err: unknown) => {
      logger.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  const starting = startNode(cfg, { logger });
  const node = await starting;
  if (signalled) return;
  process.stdout.write(`geopay listening on ${node.url}\n`);
  if (node.internalUrl) process.stdout.write(`node-to-node listener on ${node.internalUrl}\n`);
  process.stdout.write(cfg.databaseUrl ? 'database: DATABASE_URL\n' : `database: embedded PGlite in ${cfg.dataDir}\n`);
  if (node.createdAdminKey) {
    process.stdout.write(`admin key (shown once, store it now): ${node.createdAdminKey}\n`);
  }
}

main().catch((err: unknown) => {
  // A setting the database refuses (SHARD_BUCKETS against the pinned shard map) is a
  // configuration error like any other: one line, exit code 2, no stack.
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`geopay failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
