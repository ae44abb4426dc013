// The route plugins of each engine, for the composition root to hand to buildApp. Tenants,
// keys, limits, inspection and the ops page are served whichever engine moves the money.
import type { RoutePlugin, Routes } from '../context.ts';
import { accountRoutes } from './accounts.ts';
import { adminRoutes } from './admin.ts';
import { batchRoutes } from './batch.ts';
import { eventRoutes } from './events.ts';
import { holdRoutes } from './holds.ts';
import { internalRoutes } from './internal.ts';
import { limitRoutes } from './limits.ts';
import { opsPageRoutes, opsRoutes } from './ops.ts';
import { suspenseRoutes } from './suspense.ts';
import { transferRoutes } from './transfers.ts';
import { webhookRoutes } from './webhooks.ts';

/** geopay's own routes, or the admin routes plus `engine`'s routes for money movement. */
export function routesFor(engine: RoutePlugin[] | 'geopay'): Routes {
  const money = engine === 'geopay' ? [accountRoutes, transferRoutes, holdRoutes, batchRoutes, suspenseRoutes, eventRoutes] : engine;
  return { root: [opsPageRoutes], api: [adminRoutes, limitRoutes, opsRoutes, webhookRoutes, ...money], internal: [internalRoutes] };
}
