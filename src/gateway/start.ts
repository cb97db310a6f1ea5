/** A `vqalab serve` server with the gateway mounted: what the trainer and the tests start. */
import type { LocalPolicy } from '../rollout/local.js';
import { serve, type ServeHandle, type ServeOptions } from '../serve/server.js';
import { Gateway, type GatewayOptions } from './gateway.js';

export interface StartedGateway {
  gateway: Gateway;
  server: ServeHandle;
  close(): Promise<void>;
}

/** Serve `policy` on loopback (port 0 by default) with the gateway's per-attempt routes mounted. */
export async function startGateway(
  policy: LocalPolicy,
  options: { serve?: Omit<ServeOptions, 'policy' | 'routes'>; gateway?: GatewayOptions } = {},
): Promise<StartedGateway> {
  const gateway = new Gateway(options.gateway);
  const server = await serve({ port: 0, ...options.serve, policy, routes: gateway.routes });
  gateway.attach(server, policy);
  return { gateway, server, close: () => server.close() };
}
