/**
 * Request budgets no test's or benchmark's traffic reaches: for tests of
 * what lies behind the rate limits (storage quotas under a flood), which a
 * real attacker reaches by pacing its flood or spreading it over ids and
 * hosts, and for benchmarks of the RPC stack (the limits still run on every
 * request, but refuse none).
 */
import type { RequestLimitsConfig } from "../../src/core/RequestLimits.js"

export const unlimitedRequests: Partial<RequestLimitsConfig> = {
  perPeerRate: 1e9,
  perPeerBurst: 1e9,
  perIpRate: 1e9,
  perIpBurst: 1e9,
  globalRate: 1e9,
  globalBurst: 1e9
}
