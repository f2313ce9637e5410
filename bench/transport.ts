/**
 * Throughput of the TCP transport against two raw node:net baselines, on
 * loopback with the server in a separate process (`bench/transportServer.ts`,
 * forked with tsx). The modes:
 *
 * - `raw`: newline-delimited JSON requests and answers straight on a socket;
 * - `raw-noise`: the same NDJSON loop over the secure channel TcpTransport
 *   uses (`initiate` / `respond` on `socketStream`, the same identities, one
 *   sealed record per request and per answer): the same framing and the same
 *   encryption, without the RPC stack;
 * - `tcp`: TcpTransport (@effect/rpc over the secure channel).
 *
 * For each mode it runs, for a fixed duration each: Ping one at a time, Ping
 * with 64 calls in flight, and FindNode (an answer of 20 contacts) with 64 in
 * flight, over one connection; then new connections one after another
 * (connect, the secure handshake but for `raw`, one Ping, close; `tcp` through
 * a transport that keeps no idle connection, so that each call dials); and, for
 * `tcp`, a dial-back as a node makes it (a listening probe: connect, a signed
 * answer to a challenge, close) against that connect case. The modes take turns case by case. Prints calls (or connections)
 * per second, the server's and the client's CPU time per call, and the ratios
 * raw+Noise / raw (what encryption costs) and Tcp / raw+Noise (what the RPC
 * stack costs on top).
 *
 *   npx tsx bench/transport.ts [--seconds 3] [--rounds 1] [--inflight 64] [--profile] [--only tcp|raw|raw-noise[,...]]
 *
 * `--rounds R` runs every case R times, the modes taking turns in each round,
 * and adds the rounds up: a machine whose speed drifts (a shared virtual
 * machine) then slows every mode alike, which steadies the ratios.
 *
 * `--profile` records a V8 CPU profile of the TcpTransport server (or, without
 * tcp, the raw-noise one) and of this process while the 64-in-flight cases
 * run again, then again over the connect case, and prints where their time
 * goes (by area and by function).
 */
import { sha256 } from "../src/core/Sha256.js"
import { Buffer } from "node:buffer"
import { fork } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { Session } from "node:inspector"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { parseArgs } from "node:util"
import { Duration, Effect } from "effect"
import type { Key } from "../src/core/Id.js"
import { nodeIdFromPublicKey } from "../src/core/Id.js"
import { Identity, type IdentityService, Signatures } from "../src/node/Identity.js"
import { FindNode, Ping } from "../src/node/Protocol.js"
import { type ByteStream, socketStream } from "../src/platform/ByteStream.js"
import { sha256Native, sign, signingKeyFromSeed, verifyEd25519 } from "../src/platform/NodeCrypto.js"
import { initiate, makeSecureSelf, type SecureSelf } from "../src/platform/SecureChannel.js"
import { TcpTransport } from "../src/platform/TcpTransport.js"

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "3" },
    inflight: { type: "string", default: "64" },
    profile: { type: "boolean", default: false },
    only: { type: "string" },
    rounds: { type: "string", default: "1" }
  }
})
const caseMillis = Number(args.seconds) * 1000
const inFlight = Number(args.inflight)
const rounds = Number(args.rounds)
if (!Number.isInteger(rounds) || rounds < 1) {
  console.error(`--rounds takes a whole number of at least 1, not ${args.rounds}`)
  process.exit(2)
}
const serverScript = join(import.meta.dirname, "transportServer.ts")

const allModes = ["raw", "raw-noise", "tcp"] as const
type Mode = (typeof allModes)[number]
const only = args.only?.split(",").map((mode) => mode.trim())
if (only !== undefined && !only.every((mode) => (allModes as ReadonlyArray<string>).includes(mode))) {
  console.error(`--only takes ${allModes.join(", ")} (comma-separated), not ${args.only}`)
  process.exit(2)
}

/** A forked server process and its IPC helpers. */
interface ServerProcess {
  readonly port: number
  readonly cpu: () => Promise<number>
  readonly startProfile: (path: string) => void
  readonly stopProfile: () => Promise<void>
  readonly stop: () => Promise<void>
}

const startServer = (mode: Mode): Promise<ServerProcess> =>
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

/** Two runs of one case as one. */
const addResults = (a: CaseResult, b: CaseResult): CaseResult => ({
  calls: a.calls + b.calls,
  seconds: a.seconds + b.seconds,
  serverCpuMicros: a.serverCpuMicros + b.serverCpuMicros,
  clientCpuMicros: a.clientCpuMicros + b.clientCpuMicros
})

const ownCpuMicros = (): number => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}

/** Makes as many calls as it can before `deadline` (a `performance.now()` time) with `concurrency` loops; returns the count. */
type Load = (concurrency: number, deadline: number) => Promise<number>

/** Runs `load` for the case duration, after a short warm-up. */
const runCase = async (server: ServerProcess, load: Load, concurrency: number, warmUp = true): Promise<CaseResult> => {
  if (warmUp) await load(concurrency, performance.now() + 1000) // JIT, connection
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
  /** A new connection per call (and the secure handshake, if any), one Ping on it, then closed. */
  readonly connectPing: Load
  /** A listening probe (a dial-back) per call: TcpTransport only. */
  readonly listeningProbe?: Load | undefined
  readonly close: () => Promise<void>
}

/** The client's identity in the tcp and raw-noise modes (the server's is seed 2). */
const clientIdentity = (): IdentityService => {
  const signing = signingKeyFromSeed(new Uint8Array(32).fill(1))
  return {
    nodeId: nodeIdFromPublicKey(signing.publicKey, sha256Native),
    signingPublicKey: signing.publicKey,
    encryptionPublicKey: new Uint8Array(32),
    sign: (message: Uint8Array) => sign(signing.privateKey, message)
  }
}

const pingLine = `${JSON.stringify({ id: 0, tag: "Ping", payload: {} })}\n`

/** Runs `once` in `concurrency` loops until `deadline`; returns how many completed. */
const loadOf = (once: () => Promise<void>): Load => async (concurrency, deadline) => {
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

/**
 * The NDJSON request/answer loop of the raw modes, over whatever carries its
 * text: `write` sends one request line; feed what arrives to `onText`.
 */
const ndjsonCaller = (write: (line: string) => void) => {
  const pending = new Map<number, () => void>()
  let nextId = 0
  let buffer = ""
  const onText = (text: string): void => {
    buffer += text
    let newline = buffer.indexOf("\n")
    while (newline >= 0) {
      const answer = JSON.parse(buffer.slice(0, newline)) as { id: number; value: unknown }
      buffer = buffer.slice(newline + 1)
      pending.get(answer.id)?.()
      pending.delete(answer.id)
      newline = buffer.indexOf("\n")
    }
  }
  const call = (tag: string, payload: object) => (): Promise<void> =>
    new Promise((done) => {
      const id = nextId++
      pending.set(id, done)
      write(`${JSON.stringify({ id, tag, payload })}\n`)
    })
  return { onText, call }
}

const textOf = (chunk: Uint8Array): string => Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("utf8")

const connectSocket = (port: number): Promise<net.Socket> =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, noDelay: true })
    socket.once("error", reject)
    socket.once("connect", () => {
      socket.off("error", reject)
      resolve(socket)
    })
  })

/**
 * Closes a finished connection with a reset rather than a FIN, so that the
 * thousands of connections of the connect case leave no TIME_WAIT sockets
 * behind to run the machine out of ephemeral ports. Both raw modes close so.
 */
const hangUp = (socket: net.Socket): void => {
  socket.resetAndDestroy()
}

/** Runs the initiator's side of the secure handshake over a connected socket. */
const secureStream = (socket: net.Socket, self: SecureSelf): Promise<ByteStream> =>
  Effect.runPromise(initiate({ stream: socketStream(socket), self, verify: verifyEd25519, listenPort: 0 })).then(
    (session) => session.stream
  )

/** Waits for one complete answer line on `listen`'s stream of text. */
const oneAnswer = (listen: (onText: (text: string) => void) => void): Promise<void> =>
  new Promise((done) => {
    let text = ""
    listen((more) => {
      text += more
      if (text.includes("\n")) done()
    })
  })

const rawClient = async (port: number): Promise<Client> => {
  const socket = await connectSocket(port)
  const { call, onText } = ndjsonCaller((line) => socket.write(line))
  socket.on("data", (chunk: Buffer) => onText(chunk.toString("utf8")))
  const connectPing = async () => {
    const fresh = await connectSocket(port)
    const answered = oneAnswer((onText) => fresh.on("data", (chunk: Buffer) => onText(chunk.toString("utf8"))))
    fresh.write(pingLine)
    await answered
    hangUp(fresh)
  }
  return {
    ping: loadOf(call("Ping", {})),
    findNode: loadOf(call("FindNode", { target: "ab".repeat(32) })),
    connectPing: loadOf(connectPing),
    close: async () => {
      socket.destroy()
    }
  }
}

const ignoreDrainAndEnd = { drain: () => {}, end: () => {} }

const rawNoiseClient = async (port: number): Promise<Client> => {
  // One static key for the process, as TcpTransport has.
  const self = makeSecureSelf(clientIdentity())
  const socket = await connectSocket(port)
  const stream = await secureStream(socket, self)
  const { call, onText } = ndjsonCaller((line) => stream.write(Buffer.from(line, "utf8")))
  stream.listen({ data: (chunk) => onText(textOf(chunk)), ...ignoreDrainAndEnd })
  const connectPing = async () => {
    const fresh = await connectSocket(port)
    const secure = await secureStream(fresh, self)
    const answered = oneAnswer((onText) => secure.listen({ data: (chunk) => onText(textOf(chunk)), ...ignoreDrainAndEnd }))
    secure.write(Buffer.from(pingLine, "utf8"))
    await answered
    hangUp(fresh)
  }
  return {
    ping: loadOf(call("Ping", {})),
    findNode: loadOf(call("FindNode", { target: "ab".repeat(32) })),
    connectPing: loadOf(connectPing),
    close: async () => {
      socket.destroy()
    }
  }
}

const tcpClient = async (port: number): Promise<Client> => {
  const identity = clientIdentity()
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
      // The connect case's own transport keeps no idle connection, not even for a moment, so each call dials anew.
      const dialling = yield* TcpTransport.make({
        listen: { host: "127.0.0.1", port: 0 },
        callTimeout: Duration.seconds(10),
        limits: { maxIdleOutbound: 0, idleLingerMs: 0 }
      })
      const peer = { address: { host: "127.0.0.1", port } }
      const ping = new Ping({})
      const findNode = new FindNode({ target: "ab".repeat(32) as Key })
      // The loops are fibers, as a node's own callers would be.
      const loadOf = (once: () => Effect.Effect<unknown, unknown>): Load => (concurrency, deadline) => {
        let calls = 0
        const loop = Effect.whileLoop({
          while: () => performance.now() < deadline,
          body: once,
          step: () => {
            calls++
          }
        })
        return Effect.runPromise(
          Effect.as(Effect.all(Array.from({ length: concurrency }, () => loop), { concurrency: "unbounded" }), calls)
        ).then(() => calls)
      }
      const load = (request: Ping | FindNode, via = transport): Load => loadOf(() => via.send(peer, request))
      const serverId = nodeIdFromPublicKey(signingKeyFromSeed(new Uint8Array(32).fill(2)).publicKey, sha256Native)
      resolve({
        ping: load(ping),
        findNode: load(findNode),
        connectPing: load(ping, dialling),
        listeningProbe: loadOf(() => transport.proveListening({ address: peer.address, nodeId: serverId })),
        close: async () => release()
      })
      yield* Effect.promise(() => stopped)
    }).pipe(
      Effect.scoped,
      Effect.provideService(Identity, identity),
      Effect.provideService(Signatures, { verify: verifyEd25519, claimHash: sha256 })
    )
    Effect.runPromise(program).catch(reject)
  })
}

const clientFor = (mode: Mode, port: number): Promise<Client> =>
  mode === "tcp" ? tcpClient(port) : mode === "raw-noise" ? rawNoiseClient(port) : rawClient(port)

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

/** node:crypto's native cipher, hash and key functions (they have no url in a profile). */
const nativeCrypto = /^(CipherBase|initiv|update|final|setAuthTag|getAuthTag|setAAD|Hash|Hmac|digest|diffieHellman|KeyObjectHandle)$/

/** Where a function's code lives, coarsely: the buckets the report sums self time into. */
const categoryOf = (url: string, functionName: string): string => {
  if (functionName === "(garbage collector)") return "garbage collection"
  if ((functionName === "dispatch" && url === "") || url === "node:inspector") return "the profiler itself"
  if (functionName === "(program)") return "V8 / native (program)"
  if (/writeBuffer|writev|writeUtf8String/.test(functionName)) return "socket write system calls"
  if (url.includes("effect/dist/esm/ParseResult") || url.includes("effect/dist/esm/Schema")) return "effect Schema (decode/encode)"
  if (url.includes("@effect/rpc")) return "@effect/rpc (RpcServer, RpcClient)"
  if (url.includes("effect/dist")) return "effect runtime (fibers, scheduler, context)"
  if (url.includes("src/platform/Noise") || url.includes("src/platform/SecureChannel")) {
    return "Noise (seal/open records, handshake)"
  }
  if (url.includes("src/platform")) return "transport code (framing, connections)"
  if (url.startsWith("node:internal/crypto") || (url === "" && nativeCrypto.test(functionName))) {
    return "node:crypto (ChaCha20-Poly1305, X25519, Ed25519)"
  }
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

interface BenchCase {
  readonly name: string
  readonly concurrency: number
  readonly pick: (client: Client) => Load | undefined
}

const cases: ReadonlyArray<BenchCase> = [
  { name: "Ping, 1 in flight", concurrency: 1, pick: (client) => client.ping },
  { name: `Ping, ${inFlight} in flight`, concurrency: inFlight, pick: (client) => client.ping },
  { name: `FindNode (20 contacts), ${inFlight} in flight`, concurrency: inFlight, pick: (client) => client.findNode }
]

/** New connections one after another: connect (+ handshake) + one Ping + close. */
const connectCase: BenchCase = {
  name: "connect (+ handshake) + 1 Ping, sequential",
  concurrency: 1,
  pick: (client) => client.connectPing
}

/** Dial-backs as a node makes them now: a listening probe each, one after another (TcpTransport only). */
const probeCase: BenchCase = {
  name: "listening probe, sequential",
  concurrency: 1,
  pick: (client) => client.listeningProbe
}

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

const rate = (result: CaseResult) => result.calls / result.seconds
const micros = (value: number) => `${value.toFixed(1)} µs`
const serverPerCall = (result: CaseResult) => result.serverCpuMicros / result.calls
const clientPerCall = (result: CaseResult) => result.clientCpuMicros / result.calls
const cpuCell = (result: CaseResult | undefined) =>
  result === undefined ? "-" : `${micros(serverPerCall(result))}, ${micros(clientPerCall(result))}`
const rateCell = (result: CaseResult | undefined) => (result === undefined ? "-" : `${rate(result).toFixed(0)}/s`)
const ratioCell = (top: CaseResult | undefined, bottom: CaseResult | undefined) =>
  top === undefined || bottom === undefined ? "-" : (rate(top) / rate(bottom)).toFixed(2)
/** CPU per call that `more` spends beyond `less`, server and client. */
const extraCpuCell = (more: CaseResult | undefined, less: CaseResult | undefined) =>
  more === undefined || less === undefined
    ? "-"
    : `${micros(serverPerCall(more) - serverPerCall(less))}, ${micros(clientPerCall(more) - clientPerCall(less))}`

const main = async () => {
  const modes = allModes.filter((mode) => only === undefined || only.includes(mode))
  const setups = await Promise.all(modes.map(async (mode) => {
    const server = await startServer(mode)
    const client = await clientFor(mode, server.port)
    return { mode, server, client }
  }))
  // The modes take turns case by case, so a change in machine load hits all alike.
  const results = new Map<Mode, Map<BenchCase, CaseResult>>(modes.map((mode) => [mode, new Map()]))
  for (let round = 0; round < rounds; round++) {
    for (const benchCase of [...cases, connectCase, probeCase]) {
      for (const { mode, server, client } of setups) {
        const load = benchCase.pick(client)
        if (load === undefined) continue
        const result = await runCase(server, load, benchCase.concurrency, round === 0)
        const byCase = results.get(mode)
        const earlier = byCase?.get(benchCase)
        byCase?.set(benchCase, earlier === undefined ? result : addResults(earlier, result))
      }
    }
  }
  const resultOf = (mode: Mode, benchCase: BenchCase) => results.get(mode)?.get(benchCase)

  console.log(`\nLoopback, server in its own process, ${args.seconds} s per case and round, ${rounds} round(s), one connection.`)
  console.log("CPU/call: the server's, then the client's CPU time (user + system) per call.\n")
  console.log(
    "| case | raw node:net NDJSON | raw+Noise | TcpTransport | raw+Noise / raw | Tcp / raw+Noise | " +
      "CPU/call raw server, client | CPU/call raw+Noise server, client | CPU/call Tcp server, client | " +
      "CPU/call Noise adds (server, client) | CPU/call RPC stack adds (server, client) |"
  )
  console.log("|---|---|---|---|---|---|---|---|---|---|---|")
  for (const benchCase of cases) {
    const r = resultOf("raw", benchCase)
    const n = resultOf("raw-noise", benchCase)
    const t = resultOf("tcp", benchCase)
    console.log(
      `| ${benchCase.name} | ${rateCell(r)} | ${rateCell(n)} | ${rateCell(t)} | ${ratioCell(n, r)} | ${ratioCell(t, n)} | ` +
        `${cpuCell(r)} | ${cpuCell(n)} | ${cpuCell(t)} | ${extraCpuCell(n, r)} | ${extraCpuCell(t, n)} |`
    )
  }
  const r = resultOf("raw", connectCase)
  const n = resultOf("raw-noise", connectCase)
  const t = resultOf("tcp", connectCase)
  if (r !== undefined || n !== undefined || t !== undefined) {
    console.log(
      `\nNew connections, one after another: connect, the Noise XX handshake (not raw), one Ping, close ` +
        `(TcpTransport: a transport that keeps no idle connection, so each call dials).\n`
    )
    console.log(
      "| case | raw connect + Ping | raw+Noise connect + handshake + Ping | TcpTransport | raw+Noise / raw | Tcp / raw+Noise | " +
        "CPU/conn raw server, client | CPU/conn raw+Noise server, client | CPU/conn Tcp server, client | " +
        "CPU/conn the handshake adds (server, client) | CPU/conn the transport adds (server, client) |"
    )
    console.log("|---|---|---|---|---|---|---|---|---|---|---|")
    console.log(
      `| ${connectCase.name} | ${rateCell(r)} | ${rateCell(n)} | ${rateCell(t)} | ${ratioCell(n, r)} | ${ratioCell(t, n)} | ` +
        `${cpuCell(r)} | ${cpuCell(n)} | ${cpuCell(t)} | ${extraCpuCell(n, r)} | ${extraCpuCell(t, n)} |`
    )
  }

  const probe = resultOf("tcp", probeCase)
  if (probe !== undefined && t !== undefined) {
    console.log(
      `\nA dial-back, TcpTransport: a listening probe (connect, a signed answer to a challenge, close) against a Ping ` +
        `on a fresh connection (the connect case above), in the same run.\n`
    )
    console.log("| case | per second | CPU/op server, client | CPU/op both ends | rate against connect + handshake + Ping |")
    console.log("|---|---|---|---|---|")
    const both = (result: CaseResult) => micros(serverPerCall(result) + clientPerCall(result))
    console.log(`| ${connectCase.name} | ${rateCell(t)} | ${cpuCell(t)} | ${both(t)} | 1.00 |`)
    console.log(`| ${probeCase.name} | ${rateCell(probe)} | ${cpuCell(probe)} | ${both(probe)} | ${ratioCell(probe, t)} |`)
  }

  const profiled = setups.find((setup) => setup.mode === "tcp") ?? setups.find((setup) => setup.mode === "raw-noise")
  if (args.profile && profiled !== undefined) {
    // A separate pass, so profiling does not slow the figures above.
    const name = profiled.mode === "tcp" ? "TcpTransport" : "raw+Noise"
    /** Profiles the server and this process while `run` runs, prints both, and returns where the server's was written. */
    const profileBoth = async (label: string, run: () => Promise<unknown>) => {
      const serverFile = join(mkdtempSync(join(tmpdir(), "peerchat-bench-")), "server.cpuprofile")
      profiled.server.startProfile(serverFile)
      const clientProfile = await profileClient(run)
      await profiled.server.stopProfile()
      summariseProfile(`${name} server CPU profile over ${label}`, JSON.parse(readFileSync(serverFile, "utf8")) as CpuProfile)
      summariseProfile(`${name} client (this process) CPU profile over ${label}`, clientProfile)
      return { serverFile, clientProfile }
    }
    const inFlightPass = await profileBoth(`the ${inFlight}-in-flight cases`, async () => {
      for (const benchCase of cases.slice(1)) {
        const load = benchCase.pick(profiled.client)
        if (load !== undefined) await runCase(profiled.server, load, benchCase.concurrency)
      }
    })
    const connect = await profileBoth("the connect case", () => runCase(profiled.server, profiled.client.connectPing, 1))
    const connectFile = connect.serverFile
    // Kept for a closer look (Chrome DevTools, or any .cpuprofile reader).
    const clientFile = join(dirname(connectFile), "client.cpuprofile")
    writeFileSync(clientFile, JSON.stringify(connect.clientProfile))
    const inFlightClientFile = join(dirname(inFlightPass.serverFile), "client.cpuprofile")
    writeFileSync(inFlightClientFile, JSON.stringify(inFlightPass.clientProfile))
    console.log(`\nThe ${inFlight}-in-flight cases' profiles: ${inFlightPass.serverFile}, ${inFlightClientFile}`)
    console.log(`The connect case's profiles: ${connectFile}, ${clientFile}`)
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
