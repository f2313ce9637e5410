/**
 * What the terminal chat says as it exits about the node it leaves behind,
 * decided from what the node answered when the window detached (see
 * `ChatWindows`), so the last line is always true: the node stops (this
 * was the last window of a node a chat started), keeps running for other
 * windows, keeps running because the user started it with `peerchat
 * start`, or was not running any more.
 */
import type { DetachAnswer } from "../../node/ChatWindows.js"

/** The node's fate as the window leaves. */
export type Farewell =
  /** No node was started or found (the user left during the first-run question). */
  | { readonly _tag: "NoNode" }
  /** The node was not running any more when the window left. */
  | { readonly _tag: "NotRunning" }
  /** The node stops now: `pid` is its process, to wait for. */
  | { readonly _tag: "Stopping"; readonly pid: number }
  /** The node a chat started keeps running for `windows` other windows. */
  | { readonly _tag: "KeepsRunningForOthers"; readonly windows: number }
  /** The user started the node (`peerchat start`): the chat never stops it. */
  | { readonly _tag: "KeepsRunningStartedByUser" }
  /** The node answers but does not count windows (an older node): it keeps running. */
  | { readonly _tag: "KeepsRunning" }

/** The fate of a node the window was attached to, from the node's answer to the detach request. */
export const farewellOfDetach = (answer: DetachAnswer, stopsWithLastWindow: boolean, pid: number): Farewell =>
  answer.stopping
    ? { _tag: "Stopping", pid }
    : stopsWithLastWindow
    ? { _tag: "KeepsRunningForOthers", windows: answer.windows }
    : { _tag: "KeepsRunningStartedByUser" }

/** The last line the chat prints, once the node's fate is known (`stopped`: a stopping node has exited). */
export const farewellText = (farewell: Farewell, stopped: boolean): string => {
  switch (farewell._tag) {
    case "NoNode":
      return "Bye!"
    case "NotRunning":
      return "Bye! Your node is not running; run peerchat again to start it."
    case "Stopping":
      return stopped
        ? "Bye! Your node has stopped; run peerchat again to come back."
        : `Bye! Your node is still stopping (pid ${farewell.pid}); its log is in the data directory's logs/node.log.`
    case "KeepsRunningForOthers":
      return farewell.windows === 1
        ? "Bye! Your node keeps running for the other chat window."
        : `Bye! Your node keeps running for the other ${farewell.windows} chat windows.`
    case "KeepsRunningStartedByUser":
      return "Bye! Your node keeps running (started with peerchat start)."
    case "KeepsRunning":
      return "Bye! Your node keeps running."
  }
}
