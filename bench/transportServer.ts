/**
 * The server half of `bench/transport.ts`, run in its own process (forked by
 * the driver with tsx). `tcp` serves Ping and FindNode (20 contacts) over
 * `TcpTransport`; `raw` is the baseline: node:net with newline-delimited JSON,
 * answering the same payloads. Talks to the driver over the fork IPC channel:
 * sends `{ port }` once listening, answers `"cpu"` with its CPU time so far
 * (µs), starts the V8 CPU profiler on `{ profileTo: path }` and writes the
 * profile there on `"profile-stop"` (answering `{ profiled: path }`), and
 * exits on `"stop"`.
 *
 *   (started by bench/transport.ts) transportServer.ts tcp|raw
 */
import { sha256 } from "../src/core/Sha256.js"
import { writeFileSync } from "node:fs"
import { Session } from "node:inspector"
import * as net from "node:net"
import { Effect } from "effect"
import type { Contact } from "../src/core/Contact.js"
import { type NodeId, nodeIdFromPublicKey } from "../src/core/Id.js"
import { Identity, Signatures } from "../src/node/Identity.js"
import type { DhtHandlers } from "../src/node/Transport.js"
import { sha256Native, sign, signingKeyFromSeed, verifyEd25519 } from "../src/platform/NodeCrypto.js"
import { TcpTransport } from "../src/platform/TcpTransport.js"

const mode = process.argv[2]

/** The 20 contacts every FindNode answer carries. */
const benchContacts: ReadonlyArray<Contact> = Array.from({ length: 20 }, (_, i) => ({
  nodeId: i.toString(16).padStart(2, "0").repeat(32) as NodeId,
  address: { host: `10.0.0.${i + 1}`, port: 4000 + i }
}))

const cpuMicros = (): number => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}

const send = (message: unknown): void => {
  process.send?.(message)
}

const session = new Session()
let profilePath: string | undefined = undefined

const onControl = (stop: () => void): void => {
  process.on("message", (message: unknown) => {
    if (message === "cpu") send({ cpu: cpuMicros() })
    if (message === "stop") stop()
    if (typeof message === "object" && message !== null && "profileTo" in message) {
      profilePath = String(message.profileTo)
      session.connect()
      session.post("Profiler.enable", () => session.post("Profiler.start"))
    }
    if (message === "profile-stop") {
      session.post("Profiler.stop", (error, result) => {
        if (error === null && profilePath !== undefined) writeFileSync(profilePath, JSON.stringify(result.profile))
        send({ profiled: profilePath })
      })
    }
  })
  process.on("disconnect", stop)
}

const runRaw = (): void => {
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => {})
    let pending = ""
    socket.on("data", (chunk: Buffer) => {
      pending += chunk.toString("utf8")
      let newline = pending.indexOf("\n")
      let out = ""
      while (newline >= 0) {
        const line = pending.slice(0, newline)
        pending = pending.slice(newline + 1)
        const request = JSON.parse(line) as { id: number; tag: string }
        const value = request.tag === "Ping"
          ? { observedHost: socket.remoteAddress ?? "" }
          : { contacts: benchContacts }
        out += `${JSON.stringify({ id: request.id, value })}\n`
        newline = pending.indexOf("\n")
      }
      if (out !== "") socket.write(out)
    })
  })
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    send({ port: typeof address === "object" && address !== null ? address.port : 0 })
  })
  onControl(() => {
    server.close()
    process.exit(0)
  })
}

const runTcp = (): void => {
  const signing = signingKeyFromSeed(new Uint8Array(32).fill(2))
  const identity = {
    nodeId: nodeIdFromPublicKey(signing.publicKey, sha256Native),
    signingPublicKey: signing.publicKey,
    encryptionPublicKey: new Uint8Array(32),
    sign: (message: Uint8Array) => sign(signing.privateKey, message)
  }
  const handlers: DhtHandlers = {
    Ping: (_caller, _request, observedHost) => Effect.succeed({ observedHost }),
    FindNode: () => Effect.succeed({ contacts: benchContacts }),
    FindValue: () => Effect.succeed({ _tag: "Closer" as const, contacts: benchContacts }),
    Store: () => Effect.succeed({ outcome: "Stored" as const })
  }
  const program = Effect.gen(function*() {
    const transport = yield* TcpTransport.make({ listen: { host: "127.0.0.1", port: 0 } })
    yield* transport.serve(handlers)
    send({ port: transport.localAddress.port })
    yield* Effect.async<void>((resume) => onControl(() => resume(Effect.void)))
  }).pipe(
    Effect.scoped,
    Effect.provideService(Identity, identity),
    Effect.provideService(Signatures, { verify: verifyEd25519, claimHash: sha256 })
  )
  Effect.runPromise(program).then(
    () => process.exit(0),
    (error: unknown) => {
      console.error(error)
      process.exit(1)
    }
  )
}

if (mode === "raw") runRaw()
else if (mode === "tcp") runTcp()
else {
  console.error("usage: transportServer.ts tcp|raw")
  process.exit(2)
}
