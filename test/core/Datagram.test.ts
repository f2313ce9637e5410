import { describe, expect, it } from "@effect/vitest"
import {
  DATAGRAM_FORMAT_VERSION,
  acceptedCookieEpochs,
  BUSY_BYTES,
  busyPacket,
  COOKIE_EPOCH_MILLIS,
  cookieStillGood,
  DatagramRoutes,
  HELLO_BYTES,
  helloGiveUpMillis,
  helloPacket,
  MAX_ANSWER_BYTES,
  MAX_NO_DATAGRAM_ADDRESSES,
  MAX_QUERY_BYTES,
  MAX_SERVINGS,
  NO_DATAGRAMS_FOR_MILLIS,
  parseDatagram,
  QUERY_RESENDS_MILLIS,
  queryAssociated,
  REMEMBERED_REQUESTS,
  RequestReplays,
  sealedPacket,
  travelsByDatagram,
  WELCOME_BYTES,
  welcomePacket
} from "../../src/core/Datagram.js"
import { requestClasses } from "../../src/platform/WireProtocol.js"

const bytes = (length: number, fill: number) => new Uint8Array(length).fill(fill)
const self = { signingKey: bytes(32, 1), staticKey: bytes(32, 2), staticSignature: bytes(64, 3) }

describe("Datagram", () => {
  it("every packet parses back to what was built, its fields in place", () => {
    expect(parseDatagram(helloPacket(bytes(16, 9)))).toEqual({ kind: "Hello", token: bytes(16, 9) })
    const welcome = parseDatagram(welcomePacket(bytes(16, 9), self, bytes(16, 4)))
    expect(welcome).toEqual({ kind: "Welcome", token: bytes(16, 9), ...self, cookie: bytes(16, 4) })
    const associated = queryAssociated(bytes(16, 4), self)
    const query = parseDatagram(sealedPacket(associated, bytes(12, 5), bytes(40, 6)))
    expect(query).toMatchObject({ kind: "Query", cookie: bytes(16, 4), ...self, nonce: bytes(12, 5), sealed: bytes(40, 6), associated })
    expect(parseDatagram(busyPacket(bytes(16, 7)))).toEqual({ kind: "Busy", token: bytes(16, 7) })
  })

  it("no answer to a forged source is larger than what drew it: Welcome and Busy are smaller than a Hello and than any query", () => {
    const smallestQuery = queryAssociated(bytes(16, 0), self).length + 12 + 16
    expect(WELCOME_BYTES).toBeLessThan(HELLO_BYTES)
    expect(WELCOME_BYTES).toBeLessThan(smallestQuery)
    expect(BUSY_BYTES).toBeLessThan(smallestQuery)
  })

  it("ATTACK: anything of another magic, version or kind, or of a size its kind cannot have, is not a datagram", () => {
    const hello = helloPacket(bytes(16, 1))
    // Formats 1 (before DialBack travelled by datagram) and 2 (before pair probes), and a later one, are not read.
    expect(DATAGRAM_FORMAT_VERSION).toBe(3)
    for (const [at, value] of [[0, 0x51], [1, 0], [2, 1], [2, 2], [2, 4], [3, 9]] as const) {
      const changed = Uint8Array.from(hello)
      changed[at] = value
      expect(parseDatagram(changed)).toBeUndefined()
    }
    expect(parseDatagram(hello.subarray(0, HELLO_BYTES - 1))).toBeUndefined()
    expect(parseDatagram(welcomePacket(bytes(16, 1), self, bytes(16, 1)).subarray(1))).toBeUndefined()
    const associated = queryAssociated(bytes(16, 4), self)
    expect(parseDatagram(sealedPacket(associated, bytes(12, 5), bytes(15, 6)))).toBeUndefined()
    expect(parseDatagram(sealedPacket(associated, bytes(12, 5), bytes(MAX_QUERY_BYTES, 6)))).toBeUndefined()
    const answer = sealedPacket(Uint8Array.of(0x50, 0x44, DATAGRAM_FORMAT_VERSION, 4), bytes(12, 1), bytes(MAX_ANSWER_BYTES, 1))
    expect(parseDatagram(answer)).toBeUndefined()
    expect(parseDatagram(new Uint8Array(0))).toBeUndefined()
    expect(parseDatagram(busyPacket(bytes(16, 1)).subarray(0, BUSY_BYTES - 1))).toBeUndefined()
  })

  it("only Ping, FindNode and DialBack travel by datagram: no write, no long poll", () => {
    // Every request of the protocol, so that one added later is decided here too.
    expect(Object.keys(requestClasses).filter(travelsByDatagram).sort()).toEqual(["DialBack", "FindNode", "Ping"])
  })

  it("a cookie is used for one epoch's length and accepted in its epoch and the next, so it is never used stale", () => {
    for (const receivedAt of [0, 1, COOKIE_EPOCH_MILLIS - 1, 5 * COOKIE_EPOCH_MILLIS + 17]) {
      const mintedIn = acceptedCookieEpochs(receivedAt)[0]
      const lastUse = receivedAt + COOKIE_EPOCH_MILLIS - 1
      expect(cookieStillGood(receivedAt, lastUse)).toBe(true)
      expect(cookieStillGood(receivedAt, lastUse + 1)).toBe(false)
      expect(acceptedCookieEpochs(lastUse)).toContain(mintedIn)
    }
    // A clock that went back does not make an old cookie good.
    expect(cookieStillGood(1000, 999)).toBe(false)
  })

  it("a Hello waits half the call's time, at most 750 ms, so TCP keeps the rest", () => {
    expect(helloGiveUpMillis(2000)).toBe(750)
    expect(helloGiveUpMillis(400)).toBe(200)
  })

  it("an address that did not answer a Hello is called over TCP for 10 minutes, and at most 4,096 are remembered", () => {
    const routes = new DatagramRoutes()
    routes.markUnanswered("10.0.0.1:1", 0)
    expect(routes.usable("10.0.0.1:1", NO_DATAGRAMS_FOR_MILLIS - 1)).toBe(false)
    expect(routes.usable("10.0.0.1:1", NO_DATAGRAMS_FOR_MILLIS)).toBe(true)
    expect(routes.size).toBe(0)
    for (let i = 0; i < MAX_NO_DATAGRAM_ADDRESSES + 10; i++) routes.markUnanswered(`10.0.${i >> 8}.${i & 255}:1`, 0)
    expect(routes.size).toBe(MAX_NO_DATAGRAM_ADDRESSES)
    // The oldest went first.
    expect(routes.usable("10.0.0.0:1", 1)).toBe(true)
    expect(routes.usable(`10.0.${(MAX_NO_DATAGRAM_ADDRESSES + 9) >> 8}.${(MAX_NO_DATAGRAM_ADDRESSES + 9) & 255}:1`, 1)).toBe(false)
  })

  it("ATTACK: a replayed request is served at most as often as its resends could need; ids in any order are honest", () => {
    expect(MAX_SERVINGS).toBe(1 + QUERY_RESENDS_MILLIS.length)
    const replays = new RequestReplays()
    const served = Array.from({ length: 6 }, () => {
      const may = replays.mayServe("77")
      if (may) replays.served("77")
      return may
    })
    expect(served).toEqual([true, true, true, false, false, false])
    // A link made again starts at a new random id, maybe lower: still served.
    expect(replays.mayServe("5")).toBe(true)
    // Bounded: the oldest of more than 256 ids is forgotten (its query's cookie dies within 4 minutes).
    for (let id = 1000; id < 1000 + REMEMBERED_REQUESTS; id++) replays.served(String(id))
    expect(replays.mayServe("77")).toBe(true)
    expect(replays.mayServe("1000")).toBe(true)
  })

})
