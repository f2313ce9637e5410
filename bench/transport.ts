/**
 * Throughput of the TCP transport against a raw node:net baseline, on
 * loopback with the server in a separate process (`bench/transportServer.ts`,
 * forked with tsx). For each transport it runs, for a fixed duration each:
 * Ping one at a time, Ping with 64 calls in flight, and FindNode (an answer of
 * 20 contacts) with 64 in flight, over one connection. Prints calls per second,
 * the server's CPU time per call, and the ratio TcpTransport / raw.
 *
 *   npx tsx bench/transport.ts [--seconds 3] [--inflight 64] [--profile] [--only tcp|raw]
 *
 * `--profile` records a V8 CPU profile of the TcpTransport server while the
 * cases run and prints where its time goes (by area and by function).
 */
import { sha256 } from "../src/core/Sha256.js"
import { fork } from "node:child_process"
import { mkdtempSync, readFileSync } from "node:fs"
import { Session } from "node:inspector"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { Duration, Effect } from "effect"
import type { Key } from "../src/core/Id.js"
import { nodeIdFromPublicKey } from "../src/core/Id.js"
import { Identity, Signatures } from "../src/node/Identity.js"
import { FindNode, Ping } from "../src/node/Protocol.js"
import { sha256Native, sign, signingKeyFromSeed, verifyEd25519 } from "../src/platform/NodeCrypto.js"
import { TcpTransport } from "../src/platform/TcpTransport.js"

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "3" },
    inflight: { type: "string", default: "64" },
    profile: { type: "boolean", default: false },
    only: { type: "string" }
  }
})
const caseMillis = Number(args.seconds) * 1000
const inFlight = Number(args.inflight)
const serverScript = join(import.meta.dirname, "transportServer.ts")

/** A forked server process and its IPC helpers. */
interface ServerProcess {
  readonly port: number
  readonly cpu: () => Promise<number>
  readonly startProfile: (path: string) => void
  readonly stopProfile: () => Promise<void>
  readonly stop: () => Promise<void>
}

const startServer = (mode: "tcp" | "raw"): Promise<ServerProcess> =>
  new Promise((resolve, reject) => {
    const child = fork(serverScript, [mode], { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] })
    const waiters: Array<(cpu: number) => void> = []
    let profiled: () => void = () => {}
    child.on("message", (message: { port?: number; cpu?: number; profiled?: string }) => {
      if (message.port !== undefined) {
        resolve({
          port: message.port,
          cpu: () =>
            new Promise((done) => {
              waiters.push(done)
              child.send("cpu")
            }),
          startProfile: (path) => child.send({ profileTo: path }),
          stopProfile: () =>
            new Promise((done) => {
              profiled = done
              child.send("profile-stop")
            }),
          stop: () =>
            new Promise((done) => {
              child.once("exit", () => done())
              child.send("stop")
            })
        })
      }
      if (message.cpu !== undefined) waiters.shift()?.(message.cpu)
      if (message.profiled !== undefined) profiled()
    })
    child.once("error", reject)
    child.once("exit", (code) => reject(new Error(`server exited with ${code}`)))
  })

/** What one case measured. */
interface CaseResult {
  readonly calls: number
  readonly seconds: number
  readonly serverCpuMicros: number
  readonly clientCpuMicros: number
}

const ownCpuMicros = (): number => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}

/** Makes as many calls as it can before `deadline` (a `performance.now()` time) with `concurrency` loops; returns the count. */
type Load = (concurrency: number, deadline: number) => Promise<number>

/** Runs `load` for the case duration, after a short warm-up. */
const runCase = async (server: ServerProcess, load: Load, concurrency: number): Promise<CaseResult> => {
  await load(concurrency, performance.now() + 1000) // warm-up: JIT, connection
  const cpuBefore = await server.cpu()
  const clientBefore = ownCpuMicros()
  const started = performance.now()
  const calls = await load(concurrency, started + caseMillis)
  const seconds = (performance.now() - started) / 1000
  const clientCpuMicros = ownCpuMicros() - clientBefore
  const cpuAfter = await server.cpu()
  return { calls, seconds, serverCpuMicros: cpuAfter - cpuBefore, clientCpuMicros }
}

// -- Clients --------------------------------------------------------------------

interface Client {
  readonly ping: Load
  readonly findNode: Load
  readonly close: () => Promise<void>
}

const rawClient = (port: number): Promise<Client> =>
  new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port, noDelay: true })
    const pending = new Map<number, () => void>()
    let nextId = 0
    let buffer = ""
    socket.on("data", (chunk: Buffer) => {
      buffer += chunk.toString("utf8")
      let newline = buffer.indexOf("\n")
      while (newline >= 0) {
        const answer = JSON.parse(buffer.slice(0, newline)) as { id: number; value: unknown }
        buffer = buffer.slice(newline + 1)
        pending.get(answer.id)?.()
        pending.delete(answer.id)
        newline = buffer.indexOf("\n")
      }
    })
    const call = (tag: string, payload: object) => (): Promise<void> =>
      new Promise((done) => {
        const id = nextId++
        pending.set(id, done)
        socket.write(`${JSON.stringify({ id, tag, payload })}\n`)
      })
    const load = (once: () => Promise<void>): Load => async (concurrency, deadline) => {
      let calls = 0
      const loop = async () => {
        while (performance.now() < deadline) {
          await once()
          calls++
        }
      }
      await Promise.all(Array.from({ length: concurrency }, loop))
      return calls
    }
    socket.once("connect", () =>
      resolve({
        ping: load(call("Ping", {})),
        findNode: load(call("FindNode", { target: "ab".repeat(32) })),
        close: async () => {
          socket.destroy()
        }
      }))
  })

const tcpClient = async (port: number): Promise<Client> => {
  const signing = signingKeyFromSeed(new Uint8Array(32).fill(1))
  const identity = {
    nodeId: nodeIdFromPublicKey(signing.publicKey, sha256Native),
    signingPublicKey: signing.publicKey,
    encryptionPublicKey: new Uint8Array(32),
    sign: (message: Uint8Array) => sign(signing.privateKey, message)
  }
  let release: () => void = () => {}
  const stopped = new Promise<void>((done) => {
    release = done
  })
  return new Promise((resolve, reject) => {
    const program = Effect.gen(function*() {
      const transport = yield* TcpTransport.make({
        listen: { host: "127.0.0.1", port: 0 },
        callTimeout: Duration.seconds(10)
      })
      const peer = { address: { host: "127.0.0.1", port } }
      const ping = new Ping({})
      const findNode = new FindNode({ target: "ab".repeat(32) as Key })
      // The loops are fibers, as a node's own callers would be.
      const load = (request: Ping | FindNode): Load => (concurrency, deadline) => {
        let calls = 0
        const loop = Effect.whileLoop({
          while: () => performance.now() < deadline,
          body: () => transport.send(peer, request),
          step: () => {
            calls++
          }
        })
        return Effect.runPromise(
          Effect.as(Effect.all(Array.from({ length: concurrency }, () => loop), { concurrency: "unbounded" }), calls)
        ).then(() => calls)
      }
      resolve({ ping: load(ping), findNode: load(findNode), close: async () => release() })
      yield* Effect.promise(() => stopped)
    }).pipe(
      Effect.scoped,
      Effect.provideService(Identity, identity),
      Effect.provideService(Signatures, { verify: verifyEd25519, claimHash: sha256 })
    )
    Effect.runPromise(program).catch(reject)
  })
}

// -- Profile summary -------------------------------------------------------------

interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
}
interface CpuProfile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

/** Where a function's code lives, coarsely: the buckets the report sums self time into. */
const categoryOf = (url: string, functionName: string): string => {
  if (functionName === "(garbage collector)") return "garbage collection"
  if ((functionName === "dispatch" && url === "") || url === "node:inspector") return "the profiler itself"
  if (functionName === "(program)") return "V8 / native (program)"
  if (/writeBuffer|writev|writeUtf8String/.test(functionName)) return "socket write system calls"
  if (url.includes("effect/dist/esm/ParseResult") || url.includes("effect/dist/esm/Schema")) return "effect Schema (decode/encode)"
  if (url.includes("@effect/rpc")) return "@effect/rpc (RpcServer, RpcClient)"
  if (url.includes("effect/dist")) return "effect runtime (fibers, scheduler, context)"
  if (url.includes("src/platform")) return "transport code (framing, connections)"
  if (url.startsWith("node:internal/modules") || url.includes("tsx/dist") || url.includes("source_map")) {
    return "module loading (start-up)"
  }
  if (url.startsWith("node:") || url === "") return "node: net, streams, timers, JSON"
  return "other"
}

const summariseProfile = (title: string, profile: CpuProfile): void => {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const selfTime = new Map<string, number>()
  const categories = new Map<string, number>()
  let total = 0
  profile.samples.forEach((id, i) => {
    const node = byId.get(id)
    const delta = profile.timeDeltas[i] ?? 0
    if (node === undefined || node.callFrame.functionName === "(idle)") return
    const { functionName, url, lineNumber } = node.callFrame
    const where = url.replace(/^.*node_modules\//, "").replace(/^.*\/work\/main\//, "")
    const label = `${functionName || "(anonymous)"} ${where}:${lineNumber + 1}`
    const category = categoryOf(url, functionName)
    selfTime.set(label, (selfTime.get(label) ?? 0) + delta)
    categories.set(category, (categories.get(category) ?? 0) + delta)
    total += delta
  })
  const percent = (micros: number) => `${((100 * micros) / total).toFixed(1).padStart(5)}%`
  console.log(`\n${title}: ${(total / 1000).toFixed(0)} ms busy (idle excluded), self time by area:`)
  for (const [category, micros] of [...categories.entries()].sort((a, b) => b[1] - a[1])) {
    console.log(`  ${percent(micros)}  ${category}`)
  }
  console.log("Top functions by self time:")
  for (const [label, micros] of [...selfTime.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
    console.log(`  ${percent(micros)}  ${label}`)
  }
}

// -- Main -------------------------------------------------------------------------

const cases = [
  { name: "Ping, 1 in flight", concurrency: 1, pick: (client: Client) => client.ping },
  { name: `Ping, ${inFlight} in flight`, concurrency: inFlight, pick: (client: Client) => client.ping },
  { name: `FindNode (20 contacts), ${inFlight} in flight`, concurrency: inFlight, pick: (client: Client) => client.findNode }
]

/** Profiles this process (the client) while `run` runs. */
const profileClient = async (run: () => Promise<unknown>): Promise<CpuProfile> => {
  const session = new Session()
  session.connect()
  const post = (method: string) =>
    new Promise<unknown>((done, fail) =>
      session.post(method, (error, result) => (error === null ? done(result) : fail(error)))
    )
  await post("Profiler.enable")
  await post("Profiler.start")
  await run()
  const { profile } = (await post("Profiler.stop")) as { profile: CpuProfile }
  session.disconnect()
  return profile
}

const main = async () => {
  const modes = (["raw", "tcp"] as const).filter((mode) => args.only === undefined || args.only === mode)
  const setups = await Promise.all(modes.map(async (mode) => {
    const server = await startServer(mode)
    const client = mode === "tcp" ? await tcpClient(server.port) : await rawClient(server.port)
    return { mode, server, client }
  }))
  // The two transports take turns case by case, so a change in machine load hits both alike.
  const raw: Array<CaseResult> = []
  const tcp: Array<CaseResult> = []
  for (const benchCase of cases) {
    for (const { mode, server, client } of setups) {
      const result = await runCase(server, benchCase.pick(client), benchCase.concurrency)
      ;(mode === "raw" ? raw : tcp).push(result)
    }
  }
  const rate = (result: CaseResult) => result.calls / result.seconds
  const perCall = (micros: (result: CaseResult) => number) => (result: CaseResult) =>
    `${(micros(result) / result.calls).toFixed(1)} µs`
  const show = (result: CaseResult | undefined, format: (result: CaseResult) => string) =>
    result === undefined ? "-" : format(result)
  console.log(`\nLoopback, server in its own process, ${args.seconds} s per case, one connection.\n`)
  console.log(
    "| case | raw node:net NDJSON | TcpTransport (@effect/rpc) | ratio | CPU/call raw server, client | CPU/call Tcp server, client |"
  )
  console.log("|---|---|---|---|---|---|")
  cases.forEach((benchCase, i) => {
    const r = raw[i]
    const t = tcp[i]
    const ratio = r === undefined || t === undefined ? "-" : (rate(t) / rate(r)).toFixed(2)
    const cpu = (x: CaseResult) =>
      `${perCall((y) => y.serverCpuMicros)(x)}, ${perCall((y) => y.clientCpuMicros)(x)}`
    console.log(
      `| ${benchCase.name} | ${show(r, (x) => `${rate(x).toFixed(0)}/s`)} | ${show(t, (x) => `${rate(x).toFixed(0)}/s`)} | ` +
        `${ratio} | ${show(r, cpu)} | ${show(t, cpu)} |`
    )
  })

  const tcpSetup = setups.find((setup) => setup.mode === "tcp")
  if (args.profile && tcpSetup !== undefined) {
    // A separate pass, so profiling does not slow the figures above.
    const file = join(mkdtempSync(join(tmpdir(), "peerchat-bench-")), "server.cpuprofile")
    tcpSetup.server.startProfile(file)
    const clientProfile = await profileClient(async () => {
      for (const benchCase of cases.slice(1)) {
        await runCase(tcpSetup.server, benchCase.pick(tcpSetup.client), benchCase.concurrency)
      }
    })
    await tcpSetup.server.stopProfile()
    const label = `the ${inFlight}-in-flight cases`
    summariseProfile(`TcpTransport server CPU profile over ${label}`, JSON.parse(readFileSync(file, "utf8")) as CpuProfile)
    summariseProfile(`TcpTransport client (this process) CPU profile over ${label}`, clientProfile)
  }
  for (const { client, server } of setups) {
    await client.close()
    await server.stop()
  }
  process.exit(0)
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
