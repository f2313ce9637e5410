/**
 * The layer boundaries of docs/architecture.md are enforced by lint; these
 * tests make sure the rules actually fire, so a config change that silently
 * disables them fails the build.
 */
import { describe, expect, it } from "@effect/vitest"
import { ESLint } from "eslint"

const eslint = new ESLint({ cwd: process.cwd() })

const ruleViolations = async (filePath: string, code: string): Promise<ReadonlyArray<string>> => {
  const [result] = await eslint.lintText(code, { filePath })
  return (result?.messages ?? []).map((message) => `${message.ruleId ?? "fatal"}@${message.line}`)
}

describe("layer boundaries", () => {
  it("the core may not import Node, platform packages, runtime modules or other layers", async () => {
    const violations = await ruleViolations(
      "src/core/Example.ts",
      [
        `import { Effect, Schema } from "effect"`,
        `import { readFileSync } from "node:fs"`,
        `import { createHash } from "crypto"`,
        `import { NodeSocket } from "@effect/platform-node"`,
        `import { Transport } from "../node/Transport.js"`,
        `export const used = [Effect, Schema, readFileSync, createHash, NodeSocket, Transport]`
      ].join("\n")
    )
    expect(violations).toEqual([
      "no-restricted-imports@1",
      "no-restricted-imports@2",
      "no-restricted-imports@3",
      "no-restricted-imports@4",
      "no-restricted-imports@5"
    ])
  })

  it("the core may not read the clock or a random source of its own", async () => {
    const violations = await ruleViolations(
      "src/core/Example.ts",
      [
        `export const now = Date.now()`,
        `export const today = new Date()`,
        `export const dice = Math.random()`,
        `export const env = process.env`,
        `export const later = setTimeout`
      ].join("\n")
    )
    expect(violations).toEqual([
      "no-restricted-syntax@1",
      "no-restricted-syntax@2",
      "no-restricted-syntax@3",
      "no-restricted-globals@4",
      "no-restricted-globals@5"
    ])
  })

  it("the core may use pure effect data modules and its siblings", async () => {
    const violations = await ruleViolations(
      "src/core/Example.ts",
      [
        `import { Either, HashMap, Schema } from "effect"`,
        `import { sha256 } from "./Sha256.js"`,
        `export const used = [Either, HashMap, Schema, sha256, new Date(0)]`
      ].join("\n")
    )
    expect(violations).toEqual([])
  })

  it("node and chat services may not touch Node or the platform layer", async () => {
    for (const layer of ["node", "chat"]) {
      const violations = await ruleViolations(
        `src/${layer}/Example.ts`,
        [
          `import * as net from "node:net"`,
          `import { NodeSocket } from "@effect/platform-node"`,
          `import { TcpTransport } from "../platform/TcpTransport.js"`,
          `import { Effect } from "effect"`,
          `export const used = [net, NodeSocket, TcpTransport, Effect]`
        ].join("\n")
      )
      expect(violations).toEqual(["no-restricted-imports@1", "no-restricted-imports@2", "no-restricted-imports@3"])
    }
  })

  it("node may not depend on chat, which builds on it", async () => {
    const violations = await ruleViolations(
      "src/node/Example.ts",
      `import { Inbox } from "../chat/Inbox.js"\nexport const used = Inbox`
    )
    expect(violations).toEqual(["no-restricted-imports@1"])
  })

  it("the platform layer may use Node but not the composition root", async () => {
    const violations = await ruleViolations(
      "src/platform/Example.ts",
      [
        `import * as net from "node:net"`,
        `import { main } from "../cli/main.js"`,
        `export const used = [net, main]`
      ].join("\n")
    )
    expect(violations).toEqual(["no-restricted-imports@2"])
  })
})
