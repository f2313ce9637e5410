/**
 * Which network a host belongs to. Resource limits and the routing table's
 * diversity filter cap what one network may hold, not what one address may
 * hold: an attacker rents addresses by the subnet (a /24 of IPv4, a /48 or
 * more of IPv6), so a cap per address alone is no cap. The group of an IPv4
 * address is its /24, of an IPv6 address its first 48 bits (the usual size of
 * a site's allocation), and of a host name the name itself. IPv6 addresses
 * that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, and, for the
 * group only, 6to4 `2002::/16`, Teredo `2001::/32` and NAT64 `64:ff9b::/96`)
 * belong to the group of that IPv4 address, as in Bitcoin Core's netgroups:
 * otherwise one IPv4 /24 would yield 256 distinct 6to4 /48s.
 *
 * Loopback and private addresses get no special treatment: `127.0.0.1` is in
 * `127.0.0.0/24` like any other address (tests run many nodes on one machine
 * on distinct `127.x.y.z` addresses on purpose, to look like distinct networks).
 *
 * A string that is neither a well-formed IP address nor a host name (say
 * `1::2::3`, or `1.2.3.999` and `0x7f.1`, whose last label is a number, which
 * some resolvers read as IPv4 in odd notations) belongs to one shared group,
 * `MALFORMED_GROUP`: such hosts cannot each claim a network of their own.
 * A host name is taken as written; names that resolve to one address are not
 * grouped together (that would need DNS).
 *
 * Parsing never throws; malformed input yields `undefined` from `parseIp`.
 *
 * @since 0.1.0
 */
import { toHex } from "./Bytes.js"

/** An IPv4 address: 4 bytes, most significant first. */
export interface Ipv4Address {
  readonly family: 4
  readonly bytes: Uint8Array
}

/** An IPv6 address: 16 bytes, most significant first; a zone id, if any, is dropped. */
export interface Ipv6Address {
  readonly family: 6
  readonly bytes: Uint8Array
}

/** A parsed IP address. IPv4-mapped IPv6 addresses are IPv4 addresses. */
export type IpAddress = Ipv4Address | Ipv6Address

/** The group of every host that is neither a well-formed IP address nor a host name. */
export const MALFORMED_GROUP = "malformed/0"

// The longest textual IPv6 address: six groups of four hex digits and a dotted quad.
const IPV6_MAX_LENGTH = 45
const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/
// Zone ids are interface names or numbers; this is wider than either but excludes separators.
const ZONE = /^[0-9A-Za-z_.-]+$/
// A decimal octet without leading zeros: "010" is octal to some parsers and decimal to others.
const OCTET = /^(?:0|[1-9][0-9]{0,2})$/

/** The four octets of a dotted quad, or undefined. */
const parseIpv4Bytes = (text: string): Uint8Array | undefined => {
  const parts = text.split(".")
  if (parts.length !== 4) return undefined
  const bytes = new Uint8Array(4)
  for (let i = 0; i < 4; i++) {
    const part = parts[i] as string
    if (!OCTET.test(part)) return undefined
    const value = Number(part)
    if (value > 255) return undefined
    bytes[i] = value
  }
  return bytes
}

/**
 * The 16-bit words of a colon-separated run (one side of `::`), or undefined.
 * `lastMayBeIpv4` allows a dotted quad as the final element (two words).
 */
const parseWords = (text: string, lastMayBeIpv4: boolean): Array<number> | undefined => {
  if (text === "") return []
  const parts = text.split(":")
  const words: Array<number> = []
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as string
    if (HEX_GROUP.test(part)) {
      words.push(Number.parseInt(part, 16))
    } else if (lastMayBeIpv4 && i === parts.length - 1) {
      const quad = parseIpv4Bytes(part)
      if (quad === undefined) return undefined
      words.push(((quad[0] as number) << 8) | (quad[1] as number), ((quad[2] as number) << 8) | (quad[3] as number))
    } else {
      return undefined
    }
  }
  return words
}

/** The 16 bytes of an IPv6 address without a zone id, or undefined. */
const parseIpv6Bytes = (text: string): Uint8Array | undefined => {
  if (text.length > IPV6_MAX_LENGTH || !text.includes(":")) return undefined
  const halves = text.split("::")
  if (halves.length > 2) return undefined
  let words: Array<number>
  if (halves.length === 2) {
    const head = parseWords(halves[0] as string, false)
    const tail = parseWords(halves[1] as string, true)
    if (head === undefined || tail === undefined) return undefined
    // "::" stands for at least one group of zeros.
    const missing = 8 - head.length - tail.length
    if (missing < 1) return undefined
    words = [...head, ...new Array<number>(missing).fill(0), ...tail]
  } else {
    const all = parseWords(text, true)
    if (all === undefined || all.length !== 8) return undefined
    words = all
  }
  const bytes = new Uint8Array(16)
  for (let i = 0; i < 8; i++) {
    const word = words[i] as number
    bytes[2 * i] = word >>> 8
    bytes[2 * i + 1] = word & 0xff
  }
  return bytes
}

/** Whether `bytes` begins with the bytes of `prefix`. */
const startsWith = (bytes: Uint8Array, prefix: ReadonlyArray<number>): boolean =>
  prefix.every((byte, i) => bytes[i] === byte)

const IPV4_MAPPED_PREFIX: ReadonlyArray<number> = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]

/**
 * Reads `host` as an IP address: a dotted quad (no leading zeros), or an IPv6
 * address in any RFC 4291 form (`::` compression, a trailing dotted quad,
 * upper or lower case) with an optional zone id (`fe80::1%eth0`), which is
 * dropped. An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, `::ffff:102:304`)
 * is returned as the IPv4 address it maps. Host names, bracketed addresses
 * and malformed input give `undefined`; nothing throws.
 */
export const parseIp = (host: string): IpAddress | undefined => {
  if (!host.includes(":")) {
    const bytes = parseIpv4Bytes(host)
    return bytes === undefined ? undefined : { family: 4, bytes }
  }
  const percent = host.indexOf("%")
  if (percent >= 0 && !ZONE.test(host.slice(percent + 1))) return undefined
  const bytes = parseIpv6Bytes(percent >= 0 ? host.slice(0, percent) : host)
  if (bytes === undefined) return undefined
  if (startsWith(bytes, IPV4_MAPPED_PREFIX)) return { family: 4, bytes: bytes.slice(12) }
  return { family: 6, bytes }
}

/**
 * The canonical text of an address: a dotted quad, or RFC 5952's form of an
 * IPv6 address (lower case, no leading zeros, the longest run of two or more
 * zero groups, the first of equals, written `::`).
 */
export const formatIp = (ip: IpAddress): string => {
  if (ip.family === 4) return Array.from(ip.bytes).join(".")
  const words: Array<number> = []
  for (let i = 0; i < 8; i++) words.push(((ip.bytes[2 * i] as number) << 8) | (ip.bytes[2 * i + 1] as number))
  let bestStart = -1
  let bestLength = 1 // RFC 5952 4.2.2: a single zero group is not compressed
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++
      continue
    }
    let end = i
    while (end < 8 && words[end] === 0) end++
    if (end - i > bestLength) {
      bestStart = i
      bestLength = end - i
    }
    i = end
  }
  const hex = (from: number, to: number): string => words.slice(from, to).map((w) => w.toString(16)).join(":")
  if (bestStart < 0) return hex(0, 8)
  return `${hex(0, bestStart)}::${hex(bestStart + bestLength, 8)}`
}

/** A host name: dot-separated non-empty labels (underscores allowed, as in `Address`), one trailing dot allowed. */
const HOST_NAME = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?$/

/**
 * A last label that makes a name an attempt at an IPv4 address: URL parsers
 * (WHATWG's "ends in a number" rule) and `inet_aton` read `1.2.3.999`,
 * `127.1` or `0x7f.1` as IPv4 (or reject them), never as names.
 */
const NUMERIC_LABEL = /^(?:0x[0-9a-f]*|[0-9]+)$/

/** What a host is, for keys and groups. */
type HostKind =
  | { readonly _tag: "Ip"; readonly ip: IpAddress }
  | { readonly _tag: "Name"; readonly name: string }
  | { readonly _tag: "Malformed"; readonly text: string }

/**
 * Classifies `host`. A host name is lower-cased without its trailing dot
 * (`Example.COM.` is `example.com`); anything that is neither an address nor
 * a name (a malformed address, a name ending in a number, characters no name
 * has) is malformed and kept lower-cased as written: it names no network, so
 * there is nothing to canonicalize. Names cannot contain `/` or `:`, so no
 * name is ever mistaken for a network's group.
 */
const classify = (host: string): HostKind => {
  const ip = parseIp(host)
  if (ip !== undefined) return { _tag: "Ip", ip }
  const lower = host.toLowerCase()
  if (!HOST_NAME.test(lower)) return { _tag: "Malformed", text: lower }
  const name = lower.endsWith(".") ? lower.slice(0, -1) : lower
  const lastLabel = name.slice(name.lastIndexOf(".") + 1)
  return NUMERIC_LABEL.test(lastLabel) ? { _tag: "Malformed", text: lower } : { _tag: "Name", name }
}

/**
 * The key under which per-address limits count `host`: the canonical text of
 * an IP address (an IPv4-mapped address as IPv4, IPv6 per RFC 5952, the zone
 * id dropped, so `fe80::1%eth0` and `fe80::1%eth1` share a budget); a host
 * name lower-cased without its trailing dot; anything else lower-cased.
 * Idempotent, and `addressGroupOf(normalizeHost(h)) === addressGroupOf(h)`.
 */
export const normalizeHost = (host: string): string => rememberedNormalHosts(host)

const normalHostOf = (host: string): string => {
  const kind = classify(host)
  return kind._tag === "Ip" ? formatIp(kind.ip) : kind._tag === "Malformed" ? kind.text : kind.name
}

const ipv4Group = (bytes: Uint8Array, offset: number): string =>
  `${bytes[offset] as number}.${bytes[offset + 1] as number}.${bytes[offset + 2] as number}.0/24`

/**
 * The network of `host` for per-network caps: `"a.b.c.0/24"` for IPv4
 * (including IPv4-mapped IPv6, and the IPv4 address inside 6to4, Teredo and
 * NAT64 addresses), `"x:y:z::/48"` (RFC 5952 text of the first 48 bits) for
 * other IPv6 addresses, the host name itself (as `normalizeHost`
 * writes it) for a host name, and `MALFORMED_GROUP` for anything else.
 */
export const addressGroupOf = (host: string): string => rememberedGroups(host)

/**
 * The key under which per-host budgets count `host` (datagram budgets and
 * sessions, dial-backs): an IPv4 address itself, an IPv6 address's /64 (one
 * host commonly holds a whole /64, so counting each address apart would give
 * it millions of budgets), anything else as written.
 */
export const hostKeyOf = (host: string): string => {
  const ip = parseIp(host)
  if (ip === undefined) return host
  return ip.family === 4 ? Array.from(ip.bytes).join(".") : `${toHex(ip.bytes.subarray(0, 8))}::/64`
}

/** Most hosts a remembered answer is kept for (`rememberedByHost`). */
const RECENT_HOSTS = 4096

/**
 * `compute`, remembered for the hosts asked about lately. The diversity
 * checks ask for the group of every contact of a bucket at every admission
 * and of every candidate of a lookup, and the datagram transport the
 * canonical host of every packet's source and every call's target: parsing
 * each time was about 1.5 % and 1 % of the CPU of joins (profiles of
 * `bench/manyNodes.ts`). The answer depends on the text alone, so
 * remembering it changes nothing else. Bounded: emptied when full (a table
 * and its lookups name a few hundred hosts, met again and again).
 */
const rememberedByHost = (compute: (host: string) => string): ((host: string) => string) => {
  const recent = new Map<string, string>()
  return (host) => {
    const known = recent.get(host)
    if (known !== undefined) return known
    const answer = compute(host)
    if (recent.size >= RECENT_HOSTS) recent.clear()
    recent.set(host, answer)
    return answer
  }
}

const groupOf = (host: string): string => {
  const kind = classify(host)
  if (kind._tag === "Malformed") return MALFORMED_GROUP
  if (kind._tag === "Name") return kind.name
  const ip = kind.ip
  if (ip.family === 4) return ipv4Group(ip.bytes, 0)
  const bytes = ip.bytes
  // 6to4 (RFC 3056): 2002:AABB:CCDD::/48 is the site of IPv4 AA.BB.CC.DD.
  if (startsWith(bytes, [0x20, 0x02])) return ipv4Group(bytes, 2)
  // Teredo (RFC 4380): 2001:0000::/32, the client's IPv4 address inverted in the last 32 bits.
  if (startsWith(bytes, [0x20, 0x01, 0x00, 0x00])) {
    const client = bytes.slice(12).map((byte) => byte ^ 0xff)
    return ipv4Group(client, 0)
  }
  // NAT64's well-known prefix (RFC 6052): 64:ff9b::a.b.c.d is the IPv4 host a.b.c.d.
  if (startsWith(bytes, [0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0])) return ipv4Group(bytes, 12)
  const masked = new Uint8Array(16)
  masked.set(bytes.subarray(0, 6))
  return `${formatIp({ family: 6, bytes: masked })}/48`
}

const rememberedNormalHosts = rememberedByHost(normalHostOf)
const rememberedGroups = rememberedByHost(groupOf)
