/**
 * Bounds of the chat part of the control API that the `peerchat` command
 * line needs before any call: `history --limit` and `send --timeout` are
 * checked against them, and the control client times its event stream by the
 * heartbeat. They live apart from `ChatControl.ts` (which re-exports them) so
 * a client command reads them without building the chat API's schemas
 * (docs/decisions.md, "Fast client commands").
 *
 * @since 0.1.0
 */
import { Duration } from "effect"

/** Most messages one history request returns (the chat store's page bound). */
export const MAX_HISTORY_LIMIT = 1000

/** Longest a single delivery wait may last; a longer wait is a malformed request. */
export const MAX_DELIVERY_WAIT: Duration.Duration = Duration.minutes(10)

/** Time between two heartbeat lines of `GET /v1/events` when no event was written. */
export const DEFAULT_EVENT_HEARTBEAT: Duration.Duration = Duration.seconds(15)
