/**
 * The least a join can cost under Peerchat's rules, per peer, measured on
 * this machine: what one authenticated first meeting by datagram and one
 * listening probe cost in CPU at both ends, with the transport's own
 * primitives (`Datagrams`' seal, open and pair keys, the Noise static DH,
 * Ed25519 checks, the probe's statement) over raw `node:dgram` and
 * `node:net` sockets, and none of the node's machinery (no Effect, no RPC
 * codecs, no routing table, no budgets). `bench/manyNodes.ts` multiplies
 * them by what a join did (peers met, probes received) to give the floor a
 * faster implementation of the same rules could not go under.
 *
 * What the rules ask of each peer a newcomer meets:
 * - a first meeting (`docs/protocol.md`, "Datagrams"): a `Hello`, a
 *   `Welcome` whose signature over the static key the client checks, a
 *   query whose sender's signature the server checks, the static-static DH
 *   and HKDF at each end, a cookie made and checked, the query and its
 *   answer sealed and opened;
 * - a listening probe of the newcomer by each peer that takes it into its
 *   routing table ("an address only when verified"): a TCP connection, a
 *   challenge, and the close; the peers a newcomer met by datagram share a
 *   pair with it, so the answer is the pair's MAC of the challenge and its
 *   check (a pair probe, core `ListeningProbe`), not a signature.
 *
 *   npx tsx bench/joinFloor.ts [--rounds 2000]
 */
import { Buffer } from "node:buffer"
import { createHmac, randomBytes } from "node:crypto"
import * as dgram from "node:dgram"
import * as net from "node:net"
import { parseArgs } from "node:util"
import { fileURLToPath } from "node:url"
import {
  ANSWER_ASSOCIATED,
  COOKIE_BYTES,
  HELLO_BYTES,
  NONCE_BYTES,
  queryAssociated,
  TAG_BYTES,
  WELCOME_BYTES
} from "../src/core/Datagram.js"
import { nodeIdFromPublicKey } from "../src/core/Id.js"
import {
  judgeProbeAnswer,
  PAIR_PROBE_ANSWER_BYTES,
  PAIR_PROBE_OPENING_BYTES,
  pairProbeAnswer,
  pairProbeOf,
  pairProbeOpening
} from "../src/core/ListeningProbe.js"
import { open, pairKeys, seal } from "../src/platform/Datagrams.js"
import { hmacSha256, sha256Native, sign, signingKeyFromSeed, verifyEd25519 } from "../src/platform/NodeCrypto.js"
import { generateX25519KeyPair, staticDh } from "../src/platform/Noise.js"
import { staticKeyStatement } from "../src/platform/SecureChannel.js"

/**
 * CPU microseconds per operation, both ends together. The crypto parts are
 * a strict floor: every step is one the rules require, done once. The
 * socket parts are an estimate: one meeting or probe after another, each
 * packet paying its own wake-up, where a busy node reads up to 32 datagrams
 * per wake-up.
 */
export interface JoinFloor {
  /** A first meeting's cryptography: two signature checks, two DH and key derivations, a cookie, two seals and opens. */
  readonly meetingCrypto: number
  /** A first meeting's four datagrams (Hello, Welcome, query, answer) through raw UDP sockets, sent and received. */
  readonly meetingSockets: number
  /** A pair probe's challenge and its four MACs (the prober's, its check, the answer, its check). */
  readonly probeCrypto: number
  /** A pair probe's TCP connection through raw sockets: connect, 100 bytes, 32 back, close. */
  readonly probeSockets: number
}

/** How often each part is measured; the floor takes the cheapest, since a shared machine only ever adds. */
const REPEATS = 3

/**
 * CPU microseconds (user and system, this process) per round of `run`, the
 * least of `REPEATS` measurements of `rounds` rounds each, after `rounds / 10`
 * rounds of warm-up.
 */
const cpuPerRound = async (rounds: number, run: (rounds: number) => Promise<void> | void): Promise<number> => {
  await run(Math.max(1, Math.floor(rounds / 10)))
  let least = Infinity
  for (let repeat = 0; repeat < REPEATS; repeat++) {
    const before = process.cpuUsage()
    await run(rounds)
    const used = process.cpuUsage(before)
    least = Math.min(least, (used.user + used.system) / rounds)
  }
  return least
}

/** Throws when a step the floor counts did not do its job: a floor of broken cryptography would be no floor. */
const check = (ok: boolean, what: string): void => {
  if (!ok) throw new Error(`join floor: ${what}`)
}

/** What a FindNode answer of 20 contacts weighs in JSON, about. */
const answerPlaintext = Buffer.from(JSON.stringify(Array.from({ length: 20 }, (_, i) => ({
  nodeId: randomBytes(32).toString("hex"),
  address: { host: `127.0.${i}.1`, port: 40000 + i }
}))))

/** A query's plaintext: a FindNode request, its id and the client's port. */
const queryPlaintext = Buffer.from(JSON.stringify({ id: 12345, port: 40000, request: { _tag: "FindNode", target: randomBytes(32).toString("hex") } }))

const meetingCrypto = (rounds: number): void => {
  const server = signingKeyFromSeed(randomBytes(32))
  const client = signingKeyFromSeed(randomBytes(32))
  const serverStatic = generateX25519KeyPair()
  const clientStatic = generateX25519KeyPair()
  // Signed once per process, as `makeSecureSelf` does: not a per-meeting cost.
  const serverBinding = sign(server.privateKey, staticKeyStatement(serverStatic.publicKey))
  const clientBinding = sign(client.privateKey, staticKeyStatement(clientStatic.publicKey))
  const cookieSecret = randomBytes(32)
  const cookieOf = (token: Uint8Array) => createHmac("sha256", cookieSecret).update(token).update("127.0.0.1:40000").digest().subarray(0, 16)
  const clientSelf = { signingKey: client.publicKey, staticKey: clientStatic.publicKey, staticSignature: clientBinding }
  for (let round = 0; round < rounds; round++) {
    const token = randomBytes(16) // the Hello
    const cookie = cookieOf(token) // the Welcome's cookie
    // What a query's seal covers: its header with the cookie and the client's keys, as the transport builds it.
    const header = queryAssociated(cookie, clientSelf)
    // The client believes the Welcome: its signature, then the node id it names.
    check(verifyEd25519(server.publicKey, staticKeyStatement(serverStatic.publicKey), serverBinding), "the Welcome's signature")
    nodeIdFromPublicKey(server.publicKey, sha256Native)
    const clientSecret = staticDh(clientStatic, serverStatic.publicKey)
    check(clientSecret._tag === "Right", "the client's DH")
    const clientKeys = pairKeys(clientSecret._tag === "Right" ? clientSecret.right : Buffer.alloc(0), clientStatic.publicKey, serverStatic.publicKey)
    const clientSends = clientKeys.clientSends
    const clientReceives = clientKeys.serverSends
    const query = seal(clientSends, header, queryPlaintext)
    // The server: the cookie, the new client's signature, its id, the pair keys, the query.
    check(cookieOf(token).equals(cookie), "the cookie")
    check(verifyEd25519(client.publicKey, staticKeyStatement(clientStatic.publicKey), clientBinding), "the query's signature")
    nodeIdFromPublicKey(client.publicKey, sha256Native)
    const serverSecret = staticDh(serverStatic, clientStatic.publicKey)
    check(serverSecret._tag === "Right", "the server's DH")
    const serverKeys = pairKeys(serverSecret._tag === "Right" ? serverSecret.right : Buffer.alloc(0), clientStatic.publicKey, serverStatic.publicKey)
    const serverReceives = serverKeys.clientSends
    const serverSends = serverKeys.serverSends
    check(open(serverReceives, query.nonce, header, query.sealed) !== undefined, "the query opens")
    const answer = seal(serverSends, ANSWER_ASSOCIATED, answerPlaintext)
    check(open(clientReceives, answer.nonce, ANSWER_ASSOCIATED, answer.sealed) !== undefined, "the answer opens")
  }
}

/** Two UDP sockets on loopback trading a meeting's four datagrams, one meeting after another. */
const meetingSockets = async (rounds: number): Promise<void> => {
  const bound = (socket: dgram.Socket) => new Promise<number>((done) => socket.bind(0, "127.0.0.1", () => done(socket.address().port)))
  const server = dgram.createSocket("udp4")
  const client = dgram.createSocket("udp4")
  const serverPort = await bound(server)
  const clientPort = await bound(client)
  // The four packets at their real sizes (core `Datagram`); what they hold does not matter to the sockets.
  const queryHeader = queryAssociated(new Uint8Array(COOKIE_BYTES), {
    signingKey: new Uint8Array(32),
    staticKey: new Uint8Array(32),
    staticSignature: new Uint8Array(64)
  })
  const hello = randomBytes(HELLO_BYTES)
  const welcome = randomBytes(WELCOME_BYTES)
  const query = randomBytes(queryHeader.length + NONCE_BYTES + queryPlaintext.length + TAG_BYTES)
  const answer = randomBytes(ANSWER_ASSOCIATED.length + NONCE_BYTES + answerPlaintext.length + TAG_BYTES)
  // The server answers a Hello's size with a Welcome, anything else with an answer.
  server.on("message", (packet) => server.send(packet.length === hello.length ? welcome : answer, clientPort, "127.0.0.1"))
  try {
    await new Promise<void>((done) => {
      let left = rounds
      client.on("message", (packet) => {
        if (packet.length === welcome.length) return client.send(query, serverPort, "127.0.0.1")
        if (--left === 0) return done()
        client.send(hello, serverPort, "127.0.0.1")
      })
      client.send(hello, serverPort, "127.0.0.1")
    })
  } finally {
    server.close()
    client.close()
  }
}

const probeCrypto = (rounds: number): void => {
  const listener = signingKeyFromSeed(randomBytes(32))
  const expected = nodeIdFromPublicKey(listener.publicKey, sha256Native)
  const pairKey = randomBytes(32)
  const mac = (statement: Uint8Array) => hmacSha256(pairKey, statement)
  const listenerEnd = { staticKey: randomBytes(32), nodeId: expected }
  const proberEnd = { staticKey: randomBytes(32), nodeId: nodeIdFromPublicKey(randomBytes(32), sha256Native) }
  for (let round = 0; round < rounds; round++) {
    const challenge = randomBytes(32)
    const probe = { challenge, prober: proberEnd, listener: listenerEnd }
    // The prober's MAC of its opening; the listener checks it and answers with its own.
    const opening = pairProbeOf(pairProbeOpening(probe, mac))
    const answer = opening === undefined ? undefined : pairProbeAnswer(opening, listenerEnd, proberEnd.nodeId, mac)
    check(answer !== undefined, "the listener's MAC")
    const verdict = judgeProbeAnswer({
      expected,
      challenge,
      answer: answer ?? new Uint8Array(0),
      verify: verifyEd25519,
      hash: sha256Native,
      pair: { probe, mac }
    })
    check(verdict._tag === "Proven", "the probe's answer")
  }
}

/** A raw listener answering a pair probe's 100 bytes with 32 and closing first, and a prober dialling it once per round. */
const probeSockets = async (rounds: number): Promise<void> => {
  const answer = randomBytes(PAIR_PROBE_ANSWER_BYTES)
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => {})
    socket.once("data", () => socket.end(answer))
  })
  const port = await new Promise<number>((done) => server.listen(0, "127.0.0.1", () => done((server.address() as net.AddressInfo).port)))
  const opening = randomBytes(PAIR_PROBE_OPENING_BYTES)
  const once = () =>
    new Promise<void>((done, fail) => {
      const socket = net.connect({ host: "127.0.0.1", port, noDelay: true })
      let received = 0
      socket.on("error", fail)
      socket.once("connect", () => socket.write(opening))
      socket.on("data", (chunk) => {
        received += chunk.length
      })
      socket.on("end", () => {
        socket.destroy()
        if (received === answer.length) done()
        else fail(new Error(`join floor: a probe answer of ${received} bytes`))
      })
    })
  try {
    for (let round = 0; round < rounds; round++) await once()
  } finally {
    await new Promise<void>((done) => server.close(() => done()))
  }
}

/** Measures the four parts, `rounds` of each (a probe's sockets a quarter as often: each leaves a TIME_WAIT socket). */
export const measureJoinFloor = async (rounds = 2000): Promise<JoinFloor> => ({
  meetingCrypto: await cpuPerRound(rounds, meetingCrypto),
  meetingSockets: await cpuPerRound(rounds, meetingSockets),
  probeCrypto: await cpuPerRound(rounds, probeCrypto),
  probeSockets: await cpuPerRound(Math.max(1, Math.floor(rounds / 4)), probeSockets)
})

/** CPU microseconds of one first meeting and of one probe, both ends. */
export const perMeeting = (floor: JoinFloor): number => floor.meetingCrypto + floor.meetingSockets
export const perProbe = (floor: JoinFloor): number => floor.probeCrypto + floor.probeSockets

/** CPU microseconds of `meetings` first meetings and `probes` probes: with sockets, and their cryptography alone. */
export const floorOf = (floor: JoinFloor, meetings: number, probes: number): { readonly total: number; readonly crypto: number } => ({
  total: meetings * perMeeting(floor) + probes * perProbe(floor),
  crypto: meetings * floor.meetingCrypto + probes * floor.probeCrypto
})

/** The floor's parts in one line. */
export const describeJoinFloor = (floor: JoinFloor): string =>
  `a first meeting ${perMeeting(floor).toFixed(0)} µs (crypto ${floor.meetingCrypto.toFixed(0)}, four datagrams ${floor.meetingSockets.toFixed(0)}), ` +
  `a listening probe ${perProbe(floor).toFixed(0)} µs (crypto ${floor.probeCrypto.toFixed(0)}, TCP ${floor.probeSockets.toFixed(0)}), ` +
  `CPU at both ends, sockets one exchange at a time`

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { rounds: { type: "string", default: "2000" } } })
  measureJoinFloor(Number(values.rounds)).then((floor) => console.log(describeJoinFloor(floor)))
}
