/**
 * Plain TCP probes for the test internet, with nothing but `node` (no ping,
 * netcat or curl in the image): a server that answers each connection with
 * the address and port it saw the connection come from, and a client that
 * connects (optionally from a given local port) and reports its own end and
 * what the server saw. Together they show what a NAT did to a connection,
 * as a STUN server would.
 */
import { Duration, Effect, type Scope } from "effect"
import { createInterface } from "node:readline"
import { execOk, NetError, spawnIn } from "./Netns.js"
import type { Host } from "./Topology.js"

/** An address and port as one side of a connection saw it. */
export interface Endpoint {
  readonly address: string
  readonly port: number
}

const SERVER = `
const net = require("node:net");
const [host, port] = process.argv.slice(1);
const server = net.createServer((socket) => {
  const seen = { address: socket.remoteAddress, port: socket.remotePort };
  process.stdout.write(JSON.stringify({ event: "connection", ...seen }) + "\\n");
  socket.on("error", () => {});
  socket.end(JSON.stringify(seen) + "\\n");
});
server.on("error", (error) => { process.stderr.write(String(error) + "\\n"); process.exit(1); });
server.listen(Number(port), host, () =>
  process.stdout.write(JSON.stringify({ event: "listening", port: server.address().port }) + "\\n"));
`

const CLIENT = `
const net = require("node:net");
const [host, port, localPort, timeoutMs] = process.argv.slice(1);
const done = (result) => { process.stdout.write(JSON.stringify(result) + "\\n"); process.exit(0); };
const options = { host, port: Number(port) };
if (localPort !== "0") options.localPort = Number(localPort);
const timer = setTimeout(() => done({ ok: false, error: "timeout" }), Number(timeoutMs));
const socket = net.connect(options);
let local;
let data = "";
socket.on("connect", () => { local = { address: socket.localAddress, port: socket.localPort }; });
socket.on("data", (chunk) => { data += chunk; });
socket.on("end", () => { clearTimeout(timer); done({ ok: true, local, seen: JSON.parse(data) }); });
socket.on("error", (error) => { clearTimeout(timer); done({ ok: false, error: error.code ?? error.message }); });
`

/** A probe server in a host. */
export interface TcpServer {
  readonly host: Host
  /** The port it listens on. */
  readonly port: number
  /** Where each connection came from, as the server saw it, in order (so far). */
  readonly connections: ReadonlyArray<Endpoint>
  /** Where connection number `index` (from 0) came from, once the server has logged it (fails after 10 s). */
  readonly connection: (index: number) => Effect.Effect<Endpoint, NetError>
}

/**
 * Starts a probe server in `host` on `port` (0: any free port) and waits
 * until it listens; it is stopped when the scope closes. Each connection is
 * logged with the address it came from.
 */
export const tcpServer = (host: Host, port = 0): Effect.Effect<TcpServer, NetError, Scope.Scope> =>
  Effect.gen(function*() {
    const child = yield* spawnIn(host, process.execPath, ["-e", SERVER, host.address, String(port)], { stopTimeout: Duration.seconds(2) })
    const connections: Array<Endpoint> = []
    const waiters = new Set<() => void>()
    const lines = createInterface({ input: child.stdout })
    const listening = yield* Effect.async<number, NetError>((resume) => {
      let stderr = ""
      child.stderr.on("data", (chunk: Buffer) => void (stderr += chunk.toString()))
      child.once("exit", (code) => resume(Effect.fail(new NetError({ message: `probe server in ${host.label} exited with ${code}: ${stderr}` }))))
      lines.on("line", (line) => {
        const event = JSON.parse(line) as { readonly event: string; readonly port: number; readonly address: string }
        if (event.event === "listening") resume(Effect.succeed(event.port))
        if (event.event === "connection") {
          connections.push({ address: event.address, port: event.port })
          for (const waiter of waiters) waiter()
        }
      })
    }).pipe(Effect.timeoutFail({ duration: Duration.seconds(10), onTimeout: () => new NetError({ message: `probe server in ${host.label} did not start` }) }))
    const connection = (index: number) =>
      Effect.async<Endpoint>((resume) => {
        const check = () => {
          const seen = connections[index]
          if (seen === undefined) return false
          waiters.delete(check)
          resume(Effect.succeed(seen))
          return true
        }
        if (!check()) waiters.add(check)
        return Effect.sync(() => void waiters.delete(check))
      }).pipe(
        Effect.timeoutFail({
          duration: Duration.seconds(10),
          onTimeout: () => new NetError({ message: `probe server in ${host.label} saw no connection number ${index}` })
        })
      )
    return { host, port: listening, connections, connection }
  })

/** What one probe connection found. */
export type DialResult =
  | {
    readonly ok: true
    /** The client's end, as the client's kernel bound it. */
    readonly local: Endpoint
    /** The client's end as the server saw it (after any NAT). */
    readonly seen: Endpoint
  }
  | {
    readonly ok: false
    /** `timeout` (nothing answered: dropped), or the error code (`ECONNREFUSED`, `ENETUNREACH`, …). */
    readonly error: string
  }

/**
 * Connects from `from` to `address:port` (from `localPort` if given) and
 * reports the outcome; gives up after `timeout` (default 5 s), which is what
 * a silently dropped connection looks like (pass a short one, 1 s, where a
 * drop is expected: on these links a connection is made in milliseconds).
 */
export const tcpDial = (
  from: Host,
  to: Endpoint,
  options: { readonly localPort?: number; readonly timeout?: Duration.DurationInput } = {}
): Effect.Effect<DialResult, NetError> => {
  const timeout = Duration.toMillis(options.timeout ?? Duration.seconds(5))
  const args = ["-e", CLIENT, to.address, String(to.port), String(options.localPort ?? 0), String(timeout)]
  return Effect.flatMap(
    execOk(from, process.execPath, args, { timeout: Duration.millis(timeout + 10_000) }),
    (result) =>
      Effect.try({
        try: () => JSON.parse(result.stdout) as DialResult,
        catch: () => new NetError({ message: `probe client in ${from.label} printed ${JSON.stringify(result.stdout)}` })
      })
  )
}
