/**
 * Address groups: IPv4 and IPv6 parsing against Node's own `isIP` and the
 * WHATWG URL serializer (RFC 5952 compression) as independent oracles, every
 * textual form of a random IPv6 address (compression anywhere, mixed case,
 * leading zeros, a dotted-quad tail, a zone id), and the grouping rules.
 */
import { isIP } from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { addressGroupOf, formatIp, hostKeyOf, MALFORMED_GROUP, normalizeHost, parseIp } from "../../src/core/AddressGroup.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

const propOptions = (numRuns: number) => ({ fastCheck: { seed: PROPERTY_SEED, numRuns } })

// ---------------------------------------------------------------------------
// Oracles and arbitraries

/** The 16 bytes of eight 16-bit words. */
const wordsToBytes = (words: ReadonlyArray<number>): Array<number> => words.flatMap((w) => [w >>> 8, w & 0xff])

/** WHATWG URL's serialization of an IPv6 address (RFC 5952 compression), brackets removed. */
const urlCanonical = (words: ReadonlyArray<number>): string =>
  new URL(`http://[${words.map((w) => w.toString(16)).join(":")}]`).hostname.slice(1, -1)

const isMapped = (words: ReadonlyArray<number>): boolean => words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff

/** An IPv6 address and one of its many textual forms. */
interface Rendered {
  readonly words: ReadonlyArray<number>
  readonly text: string
}

// Zeros are common in real addresses and are what compression works on, so they are drawn often.
const arbWord = fc.oneof({ arbitrary: fc.constant(0), weight: 2 }, { arbitrary: fc.integer({ min: 0, max: 0xffff }), weight: 3 })

const arbWords = fc.array(arbWord, { minLength: 8, maxLength: 8 })

/** Every textual form of an address: which zero run `::` replaces (if any), case, padding, a dotted tail, a zone. */
const arbRendered: fc.Arbitrary<Rendered> = fc.record({
  words: fc.oneof(arbWords, arbWords.map((w) => [0, 0, 0, 0, 0, 0xffff, w[6] ?? 0, w[7] ?? 0])),
  compress: fc.option(fc.nat(), { nil: undefined }),
  upper: fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }),
  pad: fc.array(fc.nat(3), { minLength: 8, maxLength: 8 }),
  dotted: fc.boolean(),
  zone: fc.option(fc.constantFrom("eth0", "1", "en0.5", "wl_an-1"), { nil: undefined })
}).map(({ words, compress, upper, pad, dotted, zone }) => {
  const hexEnd = dotted ? 6 : 8
  const group = (i: number): string => {
    const hex = (words[i] as number).toString(16)
    const padded = hex.padStart(Math.min(4, hex.length + (pad[i] as number)), "0")
    return upper[i] === true ? padded.toUpperCase() : padded
  }
  // Every run of zero words (any sub-run of a longer one too) may be written "::".
  const runs: Array<readonly [number, number]> = []
  for (let i = 0; i < hexEnd; i++) {
    for (let j = i + 1; j <= hexEnd && words[j - 1] === 0; j++) runs.push([i, j])
  }
  const range = (from: number, to: number): Array<string> => {
    const out: Array<string> = []
    for (let i = from; i < to; i++) out.push(group(i))
    return out
  }
  const quad = dotted
    ? [(words[6] as number) >>> 8, (words[6] as number) & 0xff, (words[7] as number) >>> 8, (words[7] as number) & 0xff].join(".")
    : undefined
  let text: string
  const run = compress === undefined || runs.length === 0 ? undefined : runs[compress % runs.length]
  if (run === undefined) {
    text = [...range(0, hexEnd), ...(quad === undefined ? [] : [quad])].join(":")
  } else {
    const tail = [...range(run[1], hexEnd), ...(quad === undefined ? [] : [quad])]
    text = `${range(0, run[0]).join(":")}::${tail.join(":")}`
  }
  return { words, text: zone === undefined ? text : `${text}%${zone}` }
})

const arbIpv4 = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 })

/** Strings over the characters of IP literals: mostly malformed, sometimes not. */
const arbIpish = fc.stringOf(fc.constantFrom(..."0123456789abcdefABCDEF:.".split("")), { maxLength: 45 })

/** A valid address with one character deleted, inserted or replaced: the near misses a parser gets wrong. */
const arbNearMiss = fc.tuple(arbRendered, fc.nat(), fc.constantFrom(..."0f:.F9".split("")), fc.constantFrom("delete", "insert", "replace"))
  .map(([rendered, position, char, edit]) => {
    const text = rendered.text.split("%")[0] as string
    const at = position % (text.length + 1)
    if (edit === "delete") return text.slice(0, at) + text.slice(at + 1)
    if (edit === "insert") return text.slice(0, at) + char + text.slice(at)
    return text.slice(0, at) + char + text.slice(at + 1)
  })

const arbHostName = fc.domain().chain((name) =>
  fc.tuple(fc.constant(name), fc.boolean(), fc.boolean()).map(([n, upper, dot]) => `${upper ? n.toUpperCase() : n}${dot ? "." : ""}`)
)

const arbAnyHost = fc.oneof(
  arbRendered.map((r) => r.text),
  arbIpv4.map((b) => b.join(".")),
  arbIpish,
  arbNearMiss,
  arbHostName,
  fc.string({ unit: "binary", maxLength: 60 })
)

// ---------------------------------------------------------------------------
// parseIp

describe("parseIp", () => {
  it("reads dotted quads and rejects what is not one", () => {
    expect(parseIp("1.2.3.4")).toEqual({ family: 4, bytes: new Uint8Array([1, 2, 3, 4]) })
    expect(parseIp("0.0.0.0")).toEqual({ family: 4, bytes: new Uint8Array([0, 0, 0, 0]) })
    expect(parseIp("255.255.255.255")).toEqual({ family: 4, bytes: new Uint8Array([255, 255, 255, 255]) })
    for (const bad of ["256.1.1.1", "1.2.3", "1.2.3.4.5", "1.2.3.04", "01.2.3.4", "1..2.3", "1.2.3.4.", " 1.2.3.4", "1.2.3.-1", "0x7f.0.0.1", "1.2.3.4%eth0", "", "localhost"]) {
      expect(parseIp(bad), bad).toBeUndefined()
    }
  })

  it("reads the tricky IPv6 forms", () => {
    const v6 = (text: string): string | undefined => {
      const ip = parseIp(text)
      return ip?.family === 6 ? formatIp(ip) : undefined
    }
    expect(v6("::")).toBe("::")
    expect(v6("::1")).toBe("::1")
    expect(v6("1::")).toBe("1::")
    expect(v6("2001:DB8::1")).toBe("2001:db8::1")
    expect(v6("2001:0db8:0000:0000:0000:0000:0000:0001")).toBe("2001:db8::1")
    expect(v6("1:2:3:4:5:6:7::")).toBe("1:2:3:4:5:6:7:0") // "::" may stand for a single group
    expect(v6("::2:3:4:5:6:7:8")).toBe("0:2:3:4:5:6:7:8")
    expect(v6("1:0:0:1:0:0:0:1")).toBe("1:0:0:1::1") // the longest run is compressed
    expect(v6("1:0:0:1:0:0:1:1")).toBe("1::1:0:0:1:1") // the first of equal runs
    expect(v6("fe80::1%eth0")).toBe("fe80::1") // the zone id is dropped
    expect(v6("fe80::1%3")).toBe("fe80::1")
    expect(v6("::1.2.3.4")).toBe("::102:304") // IPv4-compatible (deprecated) stays IPv6
    expect(v6("1:2:3:4:5:6:1.2.3.4")).toBe("1:2:3:4:5:6:102:304")
    expect(v6("64:ff9b::192.0.2.33")).toBe("64:ff9b::c000:221")
  })

  it("takes IPv4-mapped IPv6 addresses as IPv4, in every notation", () => {
    const ipv4 = { family: 4, bytes: new Uint8Array([1, 2, 3, 4]) }
    expect(parseIp("::ffff:1.2.3.4")).toEqual(ipv4)
    expect(parseIp("::FFFF:1.2.3.4")).toEqual(ipv4)
    expect(parseIp("::ffff:102:304")).toEqual(ipv4)
    expect(parseIp("0:0:0:0:0:ffff:0102:0304")).toEqual(ipv4)
    expect(parseIp("::ffff:1.2.3.4%eth0")).toEqual(ipv4)
  })

  it("rejects malformed IPv6 without throwing", () => {
    for (const bad of [
      "1::2::3", "1:::2", ":::", ":1::", "::1:", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "1::2:3:4:5:6:7:8",
      "12345::", "g::1", "1:2:3:4:5:6:7:1.2.3.4", "::1.2.3", "::1.2.3.04", "1.2.3.4::", "::1.2.3.4:5",
      "fe80::1%", "fe80::1%eth 0", "[::1]", "::1]", ":", "::ffff:256.1.1.1", "1:2:3:4:5:6:7:8%", "%eth0"
    ]) {
      expect(parseIp(bad), bad).toBeUndefined()
    }
  })

  it.prop("every textual form of an IPv6 address reads back as its bytes", [arbRendered], ([{ words, text }]) => {
    const ip = parseIp(text)
    if (isMapped(words)) {
      expect(ip).toEqual({ family: 4, bytes: new Uint8Array(wordsToBytes(words).slice(12)) })
    } else {
      expect(ip).toEqual({ family: 6, bytes: new Uint8Array(wordsToBytes(words)) })
    }
  }, propOptions(1000))

  it.prop("formatIp writes IPv6 as the WHATWG URL serializer does (RFC 5952)", [arbWords], ([words]) => {
    const ip = parseIp(words.map((w) => w.toString(16)).join(":"))
    if (isMapped(words)) return
    expect(ip === undefined ? undefined : formatIp(ip)).toBe(urlCanonical(words))
  }, propOptions(1000))

  it.prop(
    "accepts exactly the strings Node's isIP accepts (strings of IP characters, near misses of valid addresses)",
    [fc.oneof(arbIpish, arbNearMiss, arbRendered.map((r) => r.text.split("%")[0] as string))],
    ([text]) => {
      expect(parseIp(text) !== undefined).toBe(isIP(text) !== 0)
    },
    propOptions(3000)
  )

  it.prop("never throws, and parses only what it can write back", [arbAnyHost], ([host]) => {
    const ip = parseIp(host)
    if (ip !== undefined) {
      expect(ip.bytes.length).toBe(ip.family === 4 ? 4 : 16)
      expect(parseIp(formatIp(ip))).toEqual(ip)
    }
  }, propOptions(1000))
})

// ---------------------------------------------------------------------------
// addressGroupOf and normalizeHost

describe("addressGroupOf", () => {
  it("groups IPv4 by /24, loopback and private addresses included", () => {
    expect(addressGroupOf("1.2.3.4")).toBe("1.2.3.0/24")
    expect(addressGroupOf("1.2.3.255")).toBe("1.2.3.0/24")
    expect(addressGroupOf("1.2.4.4")).toBe("1.2.4.0/24")
    expect(addressGroupOf("127.0.0.1")).toBe("127.0.0.0/24")
    expect(addressGroupOf("127.0.0.2")).toBe("127.0.0.0/24")
    expect(addressGroupOf("127.0.1.1")).toBe("127.0.1.0/24") // many 127.x.y.z networks on one machine
    expect(addressGroupOf("10.0.0.7")).toBe("10.0.0.0/24")
    expect(addressGroupOf("192.168.1.20")).toBe("192.168.1.0/24")
  })

  it("groups IPv6 by its first 48 bits", () => {
    expect(addressGroupOf("2001:db8:1:2::1")).toBe("2001:db8:1::/48")
    expect(addressGroupOf("2001:db8:1:ffff::9")).toBe("2001:db8:1::/48")
    expect(addressGroupOf("2001:DB8:0:1::1")).toBe("2001:db8::/48")
    expect(addressGroupOf("2001:db8:2::1")).toBe("2001:db8:2::/48")
    expect(addressGroupOf("::1")).toBe("::/48")
    expect(addressGroupOf("fe80::1%eth0")).toBe("fe80::/48")
    expect(addressGroupOf("1:2:3:4:5:6:7:8")).toBe("1:2:3::/48")
  })

  it("puts IPv6 addresses that carry an IPv4 address in that address's /24", () => {
    expect(addressGroupOf("::ffff:192.0.2.1")).toBe("192.0.2.0/24")
    expect(addressGroupOf("::ffff:c000:201")).toBe("192.0.2.0/24")
    expect(addressGroupOf("2002:c000:0201::1")).toBe("192.0.2.0/24") // 6to4
    expect(addressGroupOf("2002:c000:02ff:1::1")).toBe("192.0.2.0/24") // another 6to4 /48 of the same /24
    expect(addressGroupOf("2001:0:4136:e378:8000:63bf:3fff:fdd2")).toBe("192.0.2.0/24") // Teredo, RFC 4380's example
    expect(addressGroupOf("64:ff9b::192.0.2.33")).toBe("192.0.2.0/24") // NAT64
  })

  it("makes a host name its own lower-cased group", () => {
    expect(addressGroupOf("Example.COM")).toBe("example.com")
    expect(addressGroupOf("example.com.")).toBe("example.com")
    expect(addressGroupOf("localhost")).toBe("localhost")
    expect(addressGroupOf("node-1.example")).not.toBe(addressGroupOf("node-2.example"))
  })

  it("puts every malformed address in one shared group, which no host name or network can share", () => {
    for (const bad of ["1.2.3.999", "1.2.3", "127.1", "0x7f.1", "1::2::3", "fe80::1%", "[::1]", "1.2.3.04", "a/b", "1.2.3.0/24", "", ".", "a..b"]) {
      expect(addressGroupOf(bad), bad).toBe(MALFORMED_GROUP)
    }
    expect(parseIp(MALFORMED_GROUP)).toBeUndefined()
  })

  it.prop("an IPv4 address, written plain or IPv4-mapped, is in its /24", [arbIpv4], ([[a = 0, b = 0, c = 0, d = 0]]) => {
    const expected = `${a}.${b}.${c}.0/24`
    const hex = (x: number, y: number): string => ((x << 8) | y).toString(16)
    expect(addressGroupOf(`${a}.${b}.${c}.${d}`)).toBe(expected)
    expect(addressGroupOf(`::ffff:${a}.${b}.${c}.${d}`)).toBe(expected)
    expect(addressGroupOf(`::FFFF:${hex(a, b)}:${hex(c, d)}`)).toBe(expected)
    expect(normalizeHost(`::ffff:${a}.${b}.${c}.${d}`)).toBe(`${a}.${b}.${c}.${d}`)
  }, propOptions(500))

  it.prop(
    "two IPv6 addresses (other than the IPv4-carrying kinds) share a group exactly when their first 48 bits agree",
    [arbRendered, arbRendered, fc.boolean()],
    ([x, y, samePrefix]) => {
      const carriesIpv4 = (words: ReadonlyArray<number>): boolean =>
        isMapped(words) || words[0] === 0x2002 || (words[0] === 0x2001 && words[1] === 0) ||
        (words[0] === 0x64 && words[1] === 0xff9b && words.slice(2, 6).every((w) => w === 0))
      // Give y the prefix of x half of the time, so equal groups are exercised as much as distinct ones.
      const yWords = samePrefix ? [...x.words.slice(0, 3), ...y.words.slice(3)] : y.words
      if (carriesIpv4(x.words) || carriesIpv4(yWords)) return
      const yText = yWords.map((w) => w.toString(16)).join(":")
      const oracle = (words: ReadonlyArray<number>): string => `${urlCanonical([...words.slice(0, 3), 0, 0, 0, 0, 0])}/48`
      expect(addressGroupOf(x.text)).toBe(oracle(x.words))
      expect(addressGroupOf(x.text) === addressGroupOf(yText)).toBe(x.words.slice(0, 3).join() === yWords.slice(0, 3).join())
    },
    propOptions(1000)
  )
})

describe("normalizeHost", () => {
  it("writes each address in one canonical form", () => {
    expect(normalizeHost("1.2.3.4")).toBe("1.2.3.4")
    expect(normalizeHost("::ffff:1.2.3.4")).toBe("1.2.3.4")
    expect(normalizeHost("2001:0DB8:0:0::1")).toBe("2001:db8::1")
    expect(normalizeHost("fe80::1%eth0")).toBe("fe80::1")
    expect(normalizeHost("fe80::1%eth1")).toBe("fe80::1")
    expect(normalizeHost("Example.COM.")).toBe("example.com")
    expect(normalizeHost("1.2.3.999")).toBe("1.2.3.999")
  })

  it.prop("every form of one address has one key", [arbRendered], ([{ words, text }]) => {
    const plain = words.map((w) => w.toString(16)).join(":")
    expect(normalizeHost(text)).toBe(normalizeHost(plain))
    expect(normalizeHost(text)).toBe(isMapped(words) ? wordsToBytes(words).slice(12).join(".") : urlCanonical(words))
  }, propOptions(1000))

  it.prop("is idempotent and keeps the group", [arbAnyHost], ([host]) => {
    const key = normalizeHost(host)
    expect(normalizeHost(key)).toBe(key)
    expect(addressGroupOf(key)).toBe(addressGroupOf(host))
  }, propOptions(2000))
})

describe("hostKeyOf", () => {
  it("ATTACK: per-host budgets count an IPv6 host by its /64, so rotating addresses inside it buys nothing", () => {
    expect(hostKeyOf("2001:db8:1:2::1")).toBe(hostKeyOf("2001:db8:1:2:ffff:1:2:3"))
    expect(hostKeyOf("2001:db8:1:2::1")).not.toBe(hostKeyOf("2001:db8:1:3::1"))
    expect(hostKeyOf("::ffff:198.51.100.7")).toBe("198.51.100.7")
    expect(hostKeyOf("198.51.100.7")).not.toBe(hostKeyOf("198.51.100.8"))
  })
})
