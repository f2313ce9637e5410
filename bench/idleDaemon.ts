/**
 * What an idle daemon holds: starts `--peers` nodes (default 100) in this
 * process, each on its own loopback /24, then the shipped `peerchat start`
 * (dist/cli/main.js, built by `npm run bundle`) as its own process joining
 * them, registers a user on it, waits until its routing table holds the
 * peers, lets it idle for `--idle` seconds (past the 60 s after which idle
 * connections close), and reads its memory from `peerchat status --json`:
 * resident memory split into the V8 heap, buffers, code and the rest of
 * native memory (SQLite, OpenSSL, libuv). The reference, measured in the
 * same run: a bare `node` process doing nothing.
 *
 * The daemon gets the environment the terminal chat starts its node with
 * (`NODE_PROCESS_ENVIRONMENT`); `--node-args=MALLOC_ARENA_MAX=` measures it
 * without. `--node-args` given twice or more starts one daemon per value (the flags
 * `node` gets before the command, e.g. `--node-args= --node-args=--lite-mode`;
 * words like `NAME=value` set its environment, as in a shell) in the same
 * network at the same time, so variants are compared in one run.
 *
 *   npx tsx bench/idleDaemon.ts [--peers 100] [--idle 90] [--node-args="--max-semi-space-size=1" ...] [--cli PATH/main.js]
 */
import { Context, Effect, Layer, Logger, LogLevel } from "effect"
import { execFile, spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { parseArgs } from "node:util"
import { formatAddress } from "../src/core/Contact.js"
import { ChatConfig } from "../src/chat/ChatConfig.js"
import { ChatStore, ChatStoreConfig } from "../src/chat/ChatStore.js"
import { Relay } from "../src/chat/Relay.js"
import type { NodeStatus } from "../src/node/Control.js"
import { DhtNode } from "../src/node/DhtNode.js"
import { Identity } from "../src/node/Identity.js"
import { NodeConfig } from "../src/node/NodeConfig.js"
import { Transport } from "../src/node/Transport.js"
import { generatePuzzleKeyPair, identityFromKeyPairs, signaturesLayer } from "../src/platform/IdentityStore.js"
import { generateEncryptionKeyPair } from "../src/platform/NodeCrypto.js"
import { NODE_PROCESS_ENVIRONMENT } from "../src/platform/ProcessMemory.js"
import { TcpTransport } from "../src/platform/TcpTransport.js"
import { loopbackHost } from "../test/support/loopback.js"

const { values: args } = parseArgs({
  options: {
    peers: { type: "string", default: "100" },
    idle: { type: "string", default: "90" },
    /** Flags for `node` before the command; one daemon per value given. */
    "node-args": { type: "string", multiple: true, default: [""] },
    /** Another build of the command to measure (an older one, for a before/after). */
    cli: { type: "string" }
  }
})
const peerCount = Number(args.peers)
const idleSeconds = Number(args.idle)
const CLI = args.cli ?? join(import.meta.dirname, "..", "dist", "cli", "main.js")
/** Light name claims for the whole network (the daemon agrees with `--claim-difficulty 4`). */
const CLAIM_DIFFICULTY = 4

const startPeer = (index: number, bootstrap: ReadonlyArray<{ host: string; port: number }>) =>
  Effect.gen(function*() {
    const identity = identityFromKeyPairs(yield* generatePuzzleKeyPair(NodeConfig.defaults.idPuzzleBits), generateEncryptionKeyPair())
    const base = Layer.mergeAll(
      Layer.succeed(Identity, identity),
      signaturesLayer,
      NodeConfig.layer({ bootstrap, claimDifficulty: CLAIM_DIFFICULTY, minClaimDifficulty: CLAIM_DIFFICULTY }),
      ChatConfig.layer(),
      ChatStoreConfig.layer()
    )
    const layer = Relay.layer.pipe(
      Layer.provideMerge(DhtNode.layerWithMemoryStore),
      Layer.provideMerge(ChatStore.layerMemory),
      Layer.provideMerge(TcpTransport.layer({ listen: { host: loopbackHost(index), port: 0 } })),
      Layer.provideMerge(base)
    )
    const context = yield* Layer.build(layer)
    yield* Context.get(context, DhtNode).awaitJoined
    return Context.get(context, Transport).localAddress
  })

/** Runs the shipped command once and returns its stdout. */
const peerchat = (argv: ReadonlyArray<string>) =>
  Effect.async<string, Error>((resume) => {
    execFile(process.execPath, [CLI, ...argv], { timeout: 60_000 }, (error, stdout, stderr) =>
      resume(error === null ? Effect.succeed(stdout) : Effect.fail(new Error(`peerchat ${argv.join(" ")}: ${stderr}`))))
  })

/** Resident memory of `pid` from /proc, in bytes: all of it, and its private part (not mapped from files). */
const residentOf = (pid: number): { readonly rss: number; readonly private: number } => {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8")
  const kilobytes = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(rollup)?.[1] ?? 0) * 1024
  return { rss: kilobytes("Rss"), private: kilobytes("Anonymous") }
}

/** A bare node process's resident memory, a second after it started. */
const bareNodeResident = Effect.async<{ readonly rss: number; readonly private: number }>((resume) => {
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1 << 30)"], { stdio: "ignore" })
  const timer = setTimeout(() => {
    const rss = residentOf(child.pid ?? 0)
    child.kill()
    resume(Effect.succeed(rss))
  }, 1000)
  return Effect.sync(() => {
    clearTimeout(timer)
    child.kill()
  })
})

const mb = (bytes: number): string => (bytes / 2 ** 20).toFixed(1)

const program = Effect.gen(function*() {
  if (!existsSync(CLI)) return yield* Effect.fail(new Error(`${CLI} is missing: run \`npm run bundle\` first`))
  const started = Date.now()
  const first = yield* startPeer(0, [])
  yield* Effect.forEach(
    Array.from({ length: peerCount - 1 }, (_, index) => index + 1),
    (index) => startPeer(index, [first]),
    { concurrency: 8 }
  )
  console.log(`${peerCount} peers up in ${((Date.now() - started) / 1000).toFixed(1)} s`)

  const reports = yield* Effect.forEach(args["node-args"], (nodeArgs, index) => idleDaemon(first, nodeArgs, index), {
    concurrency: "unbounded"
  })
  const reference = yield* bareNodeResident
  for (const report of reports) report(reference)
})

/** Starts one daemon with `nodeArgs`, lets it join and idle, and returns how to print what it holds. */
const idleDaemon = (first: { readonly host: string; readonly port: number }, nodeArgs: string, index: number) =>
  Effect.gen(function*() {
    const dataDir = mkdtempSync(join(tmpdir(), "peerchat-idle-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dataDir, { recursive: true, force: true })))
    const label = nodeArgs === "" ? "default flags" : nodeArgs
    // Words like NAME=value set the daemon's environment, as in a shell; the rest are `node`'s flags.
    const words = nodeArgs.split(" ").filter((word) => word !== "")
    const isSetting = (word: string) => /^[A-Za-z_][A-Za-z0-9_]*=/.test(word)
    const environment = Object.fromEntries(words.filter(isSetting).map((word) => {
      const at = word.indexOf("=")
      return [word.slice(0, at), word.slice(at + 1)]
    }))
    const daemon = yield* Effect.acquireRelease(
      Effect.async<{ readonly pid: number; readonly stop: () => void }, Error>((resume) => {
        const child = spawn(process.execPath, [
          ...words.filter((word) => !isSetting(word)),
          CLI,
          "start",
          "--json",
          "--data-dir",
          dataDir,
          "--listen",
          `${loopbackHost(peerCount + 1 + index)}:0`,
          "--bootstrap",
          formatAddress(first),
          "--claim-difficulty",
          String(CLAIM_DIFFICULTY),
          "--no-port-mapping"
        ], { stdio: ["ignore", "pipe", "ignore"], env: { ...NODE_PROCESS_ENVIRONMENT, ...process.env, ...environment } })
        child.on("exit", (code) => resume(Effect.fail(new Error(`the daemon (${label}) exited with ${code} before it was ready`))))
        createInterface({ input: child.stdout }).on("line", (line) => {
          if ((JSON.parse(line) as { readonly event?: string }).event === "ready") {
            resume(Effect.succeed({ pid: child.pid ?? 0, stop: () => child.kill("SIGTERM") }))
          }
        })
      }),
      (daemon) => Effect.sync(daemon.stop)
    )
    yield* peerchat(["register", `idler${index}`, "--data-dir", dataDir])
    const status = Effect.map(
      peerchat(["status", "--json", "--data-dir", dataDir]),
      (text) => JSON.parse(text) as NodeStatus & { readonly connections: { readonly inbound: number; readonly outbound: number } }
    )
    // Joined: the table holds (nearly) every peer, or stopped growing for 20 s.
    let last = -1
    let stableSince = Date.now()
    for (const deadline = Date.now() + 180_000; Date.now() < deadline;) {
      const { peers } = yield* status
      if (peers !== last) stableSince = Date.now()
      last = peers
      if (peers >= peerCount * 0.9 || Date.now() - stableSince > 20_000) break
      yield* Effect.sleep("2 seconds")
    }
    console.log(`the daemon (${label}) knows ${last} peers; idling ${idleSeconds} s`)
    yield* Effect.sleep(`${idleSeconds} seconds`)
    const idle = yield* status
    const rss = residentOf(daemon.pid)
    const memory = idle.memory
    return (reference: { readonly rss: number; readonly private: number }) => {
      console.log(
        `idle daemon (${label}): ${mb(rss.rss)} MB resident, ${mb(rss.private)} MB private ` +
          `(bare node: ${mb(reference.rss)} MB, ${mb(reference.private)} MB private; ratios ` +
          `${(rss.rss / reference.rss).toFixed(2)}, ${(rss.private / reference.private).toFixed(2)}), ` +
          `${idle.peers} peers, connections ${idle.connections.inbound} in / ${idle.connections.outbound} out`
      )
      if (memory !== undefined) {
        console.log(
          `  split of ${mb(memory.rss)} MB: code ${mb(memory.code)} MB (the node binary and libraries, shared), ` +
            `V8 heap in use ${mb(memory.heapUsed)} MB (${mb(memory.heapCommitted)} MB committed), buffers ${mb(memory.buffers)} MB, ` +
            `native ${mb(memory.native)} MB (SQLite, OpenSSL, libuv, free heap pages); ` +
            `private (rss − code) ${mb(memory.rss - memory.code)} MB`
        )
      }
    }
  })

Effect.runPromise(program.pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.Error))).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
