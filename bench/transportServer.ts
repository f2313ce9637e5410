/**
 * The server half of `bench/transport.ts`, run in its own process (forked by
 * the driver with tsx). `tcp` serves Ping and FindNode (20 contacts) over
 * `TcpTransport`; `raw` is the baseline: node:net with newline-delimited JSON,
 * answering the same payloads; `raw-noise` is the same NDJSON loop over the
 * secure channel TcpTransport uses (`respond` on `socketStream(socket)`, with
 * the tcp mode's identity), so it does the same framing and the same
 * encryption without the RPC stack. Talks to the driver over the fork IPC channel:
 * sends `{ port }` once listening, answers `"cpu"` with its CPU time so far
 * (µs), starts the V8 CPU profiler on `{ profileTo: path }` and writes the
 * profile there on `"profile-stop"` (answering `{ profiled: path }`), and
 * exits on `"stop"`.
 *
 *   (started by bench/transport.ts) transportServer.ts tcp|raw|raw-noise
 */
import { sha256 } from "../src/core/Sha256.js"
import { Buffer } from "node:buffer"
import { writeFileSync } from "node:fs"
import { Session } from "node:inspector"
import * as net from "node:net"
import { Effect } from "effect"
import type { Contact } from "../src/core/Contact.js"
import { type NodeId, nodeIdFromPublicKey } from "../src/core/Id.js"
import { Identity, type IdentityService, Signatures } from "../src/node/Identity.js"
import type { DhtHandlers } from "../src/node/Transport.js"
import { socketStream } from "../src/platform/ByteStream.js"
import { sha256Native, sign, signingKeyFromSeed, verifyEd25519 } from "../src/platform/NodeCrypto.js"
import { makeSecureSelf, respond } from "../src/platform/SecureChannel.js"
import { TcpTransport } from "../src/platform/TcpTransport.js"
import { unlimitedRequests } from "../test/support/requestLimits.js"

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
        // Disconnected, so that another profile can be taken later in the run.
        session.disconnect()
        send({ profiled: profilePath })
      })
    }
  })
  process.on("disconnect", stop)
}

/** The server's identity in the tcp and raw-noise modes (the client's is seed 1). */
const serverIdentity = (): IdentityService => {
  const signing = signingKeyFromSeed(new Uint8Array(32).fill(2))
  return {
    nodeId: nodeIdFromPublicKey(signing.publicKey, sha256Native),
    signingPublicKey: signing.publicKey,
    encryptionPublicKey: new Uint8Array(32),
    sign: (message: Uint8Array) => sign(signing.privateKey, message)
  }
}

/**
 * The NDJSON answering loop of the raw modes: takes the text that arrived and
 * returns the answers to the complete requests in it (one string, to be
 * written at once), keeping any incomplete line for the next chunk.
 */
const ndjsonAnswerer = (observedHost: string): (text: string) => string => {
  let pending = ""
  return (text) => {
    pending += text
    let newline = pending.indexOf("\n")
    let out = ""
    while (newline >= 0) {
      const line = pending.slice(0, newline)
      pending = pending.slice(newline + 1)
      const request = JSON.parse(line) as { id: number; tag: string }
      const value = request.tag === "Ping"
        ? { observedHost }
        : { contacts: benchContacts }
      out += `${JSON.stringify({ id: request.id, value })}\n`
      newline = pending.indexOf("\n")
    }
    return out
  }
}

const listenAndReport = (server: net.Server): void => {
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    send({ port: typeof address === "object" && address !== null ? address.port : 0 })
  })
  onControl(() => {
    server.close()
    process.exit(0)
  })
}

const runRaw = (): void => {
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => {})
    const answer = ndjsonAnswerer(socket.remoteAddress ?? "")
    socket.on("data", (chunk: Buffer) => {
      const out = answer(chunk.toString("utf8"))
      if (out !== "") socket.write(out)
    })
  })
  listenAndReport(server)
}

/**
 * The raw loop over the secure channel. The secure stream hands up one
 * decrypted record at a time and the client seals one record per request, so
 * each answer is sealed on its own, as TcpTransport seals each frame; the
 * answers to one burst of input still leave in one system call (the raw
 * stream is corked until the burst is handled, as TcpTransport does).
 */
const runRawNoise = (): void => {
  const self = makeSecureSelf(serverIdentity())
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => {})
    const raw = socketStream(socket)
    Effect.runPromise(respond({ stream: raw, self, verify: verifyEd25519 })).then(
      ({ stream }) => {
        const answer = ndjsonAnswerer(stream.remoteHost)
        let corked = false
        const uncork = () => {
          corked = false
          stream.uncork()
        }
        stream.listen({
          data: (chunk) => {
            const out = answer(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("utf8"))
            if (out === "") return
            if (!corked) {
              corked = true
              stream.cork()
              queueMicrotask(uncork)
            }
            stream.write(Buffer.from(out, "utf8"))
          },
          drain: () => {},
          end: () => {}
        })
      },
      () => raw.destroy({ reason: "Closed", detail: "handshake failed" })
    )
  })
  listenAndReport(server)
}

const runTcp = (): void => {
  const identity = serverIdentity()
  // The requests the benchmark measures; DialBack is not among them.
  const handlers: Omit<DhtHandlers, "DialBack"> = {
    Ping: (caller) => Effect.succeed({ observedHost: caller.observedHost ?? "" }),
    FindNode: () => Effect.succeed({ contacts: benchContacts }),
    FindValue: () => Effect.succeed({ _tag: "Closer" as const, contacts: benchContacts }),
    Store: () => Effect.succeed({ outcome: "Stored" as const })
  }
  const program = Effect.gen(function*() {
    // The request limits still run on every request (their cost is part of the stack's), but at
    // rates no benchmark reaches: one client at full speed would otherwise measure the per-peer limit.
    const transport = yield* TcpTransport.make({ listen: { host: "127.0.0.1", port: 0 }, requestLimits: unlimitedRequests })
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
else if (mode === "raw-noise") runRawNoise()
else if (mode === "tcp") runTcp()
else {
  console.error("usage: transportServer.ts tcp|raw|raw-noise")
  process.exit(2)
}
