/**
 * What the chat says about its node as it exits (always the truth, from the
 * node's answer to the detach), and how it explains a node that could not start.
 */
import { describe, expect, it } from "@effect/vitest"
import { startFailureOf } from "../../src/cli/chat/ChatProgram.js"
import { farewellOfDetach, farewellText } from "../../src/cli/chat/Farewell.js"

describe("the last line of the chat", () => {
  it("follows the node's answer to the detach", () => {
    // The last window of a node a chat started: it stops, and the line says so once it has.
    const last = farewellOfDetach({ windows: 0, stopping: true }, true, 42)
    expect(last).toEqual({ _tag: "Stopping", pid: 42 })
    expect(farewellText(last, true)).toBe("Bye! Your node has stopped; run peerchat again to come back.")
    expect(farewellText(last, false)).toMatch(/^Bye! Your node is still stopping \(pid 42\)/)
    // Other windows remain.
    expect(farewellText(farewellOfDetach({ windows: 1, stopping: false }, true, 42), true))
      .toBe("Bye! Your node keeps running for the other chat window.")
    expect(farewellText(farewellOfDetach({ windows: 3, stopping: false }, true, 42), true))
      .toBe("Bye! Your node keeps running for the other 3 chat windows.")
    // A node the user started with peerchat start is never stopped by the chat.
    expect(farewellText(farewellOfDetach({ windows: 0, stopping: false }, false, 42), true))
      .toBe("Bye! Your node keeps running (started with peerchat start).")
    expect(farewellText({ _tag: "NotRunning" }, false)).toMatch(/^Bye! Your node is not running/)
  })
})

describe("a node that could not start", () => {
  it("is explained by its own failure line, or by its last words", () => {
    const inUse = JSON.stringify({ error: { tag: "TransportStartError", message: "cannot listen on 0.0.0.0:4242: address in use" } })
    expect(startFailureOf(`${inUse}\n`, "code 1")).toBe(
      "cannot listen on 0.0.0.0:4242: address in use (peerchat chat --listen HOST:PORT picks another)"
    )
    const running = JSON.stringify({ error: { tag: "NodeAlreadyRunning", message: "a node is already running" } })
    expect(startFailureOf(`old crash\n${running}\n`, "code 1")).toBe("a node is already running")
    expect(startFailureOf("Error: boom\n    at somewhere\n", "signal SIGSEGV")).toBe("your node exited (signal SIGSEGV): at somewhere")
    expect(startFailureOf("", "code 1")).toBe("your node exited (code 1) before it was ready")
  })
})
