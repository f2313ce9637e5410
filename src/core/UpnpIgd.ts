/**
 * Port mapping with UPnP IGD (Internet Gateway Device, v1 and v2), the
 * protocol most home routers speak when they speak no NAT-PMP: the text of
 * its messages and the pure decisions around them. Everything a LAN host
 * sends back is decoded here, bounded, and never throws:
 *
 * - SSDP search answers (HTTP-like header lines in one UDP datagram):
 *   `SsdpAnswerFromText`, then `acceptLocation` decides whether the device
 *   description it points to may be fetched (http, on the answering host,
 *   which must be the gateway, on a LAN address).
 * - XML (the device description, SOAP answers): `XmlFromText` reads a small
 *   subset — elements, attributes skipped (no `>` inside their values), text with the five named
 *   entities and numeric character references, comments, processing
 *   instructions, CDATA; a DOCTYPE is refused (no entity definitions, so no
 *   entity expansion) — into a tree of at most `XML_MAX_ELEMENTS` elements
 *   nested at most `XML_MAX_DEPTH` deep, in one linear pass. Namespace
 *   prefixes are dropped from names.
 * - `wanConnectionService` finds the WANIPConnection:2/1 (or
 *   WANPPPConnection:1) service's control URL in a description, which must
 *   stay on the device's own host and port.
 * - `SoapAnswerFromXml` reads an action's answer or a fault with its UPnP
 *   error code.
 *
 * The HTTP and UDP exchanges live in `src/platform/UpnpIgd.ts`.
 *
 * @since 0.2.0
 */
import { Either, ParseResult, Schema } from "effect"
import { isLanIpv4 } from "./PortMapping.js"

/** SSDP's multicast group and port. */
export const SSDP_ADDRESS = "239.255.255.250"
export const SSDP_PORT = 1900

/** The device types searched for: IGD v1 and v2. */
export const SEARCH_TARGETS = [
  "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
  "urn:schemas-upnp-org:device:InternetGatewayDevice:2"
] as const

/** Service types that add port mappings, best first (v2 has AddAnyPortMapping). */
export const WAN_CONNECTION_SERVICES = [
  "urn:schemas-upnp-org:service:WANIPConnection:2",
  "urn:schemas-upnp-org:service:WANIPConnection:1",
  "urn:schemas-upnp-org:service:WANPPPConnection:1"
] as const

/** Size limits: an SSDP answer datagram, a device description, a SOAP answer (bytes). */
export const SSDP_ANSWER_MAX_BYTES = 2048
export const DESCRIPTION_MAX_BYTES = 64 * 1024
export const SOAP_ANSWER_MAX_BYTES = 16 * 1024

/** The lease asked for a mapping, in seconds; renewed at half. 0 (permanent) when the router takes nothing else. */
export const UPNP_LEASE_SECONDS = 3600

/** An M-SEARCH for `target` (MX 1: devices answer within a second; we wait less, see the platform). */
export const searchRequest = (target: string): string =>
  [
    "M-SEARCH * HTTP/1.1",
    `HOST: ${SSDP_ADDRESS}:${SSDP_PORT}`,
    "MAN: \"ssdp:discover\"",
    "MX: 1",
    `ST: ${target}`,
    "",
    ""
  ].join("\r\n")

/** An SSDP search answer: where the device's description is, and what was found. */
export const SsdpAnswer = Schema.Struct({
  location: Schema.String,
  searchTarget: Schema.String
})
/** @see SsdpAnswer */
export type SsdpAnswer = typeof SsdpAnswer.Type

const HEADER_VALUE_MAX = 512

/**
 * An SSDP search answer from the text of its datagram: status line
 * `HTTP/1.1 200 OK`, then header lines; `LOCATION` and `ST` (names in any
 * case) are required, `ST` must be one of `SEARCH_TARGETS`, values at most
 * 512 characters.
 */
export const SsdpAnswerFromText = Schema.transformOrFail(Schema.String, SsdpAnswer, {
  strict: true,
  decode: (text, _, ast) => {
    const fail = (message: string) => ParseResult.fail(new ParseResult.Type(ast, text, message))
    if (text.length > SSDP_ANSWER_MAX_BYTES) return fail(`an SSDP answer has at most ${SSDP_ANSWER_MAX_BYTES} bytes`)
    const lines = text.split(/\r?\n/)
    if (!/^HTTP\/1\.[01] 200\b/.test(lines[0] ?? "")) return fail("not an SSDP search answer (status line)")
    const headers = new Map<string, string>()
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":")
      if (colon <= 0) continue
      headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim())
    }
    const location = headers.get("location")
    const searchTarget = headers.get("st")
    if (location === undefined || location === "" || location.length > HEADER_VALUE_MAX) return fail("no usable LOCATION")
    if (searchTarget === undefined || !(SEARCH_TARGETS as ReadonlyArray<string>).includes(searchTarget)) {
      return fail(`not an Internet Gateway Device (ST ${JSON.stringify(searchTarget?.slice(0, 80))})`)
    }
    return ParseResult.succeed({ location, searchTarget })
  },
  encode: (answer) =>
    ParseResult.succeed(["HTTP/1.1 200 OK", "CACHE-CONTROL: max-age=120", `ST: ${answer.searchTarget}`, `LOCATION: ${answer.location}`, "", ""].join("\r\n"))
})

/** Where an HTTP resource of the device is: always an IPv4 LAN host, a port, an absolute path. */
export interface HttpTarget {
  readonly host: string
  readonly port: number
  readonly path: string
}

const parseHttpUrl = (text: string, base?: string): HttpTarget | string => {
  let url: URL
  try {
    url = base === undefined ? new URL(text) : new URL(text, base)
  } catch {
    return `${JSON.stringify(text.slice(0, 80))} is not a URL`
  }
  if (url.protocol !== "http:") return `${url.protocol} is not http:`
  if (url.username !== "" || url.password !== "") return "credentials in the URL"
  const port = url.port === "" ? 80 : Number(url.port)
  return { host: url.hostname, port, path: `${url.pathname}${url.search}` }
}

/**
 * Whether the description at `location`, announced by `responder` (the
 * datagram's source address), may be fetched: an http URL whose host is
 * the responder itself, which is the gateway when one is known, on a LAN
 * (private or loopback) IPv4 address. Anything else — a URL on the
 * internet, on another LAN host, a name to resolve — is refused: a LAN host
 * answering SSDP must not make the node fetch from somewhere else.
 */
export const acceptLocation = (location: string, responder: string, gateway: string | undefined): Either.Either<HttpTarget, string> => {
  const target = parseHttpUrl(location)
  if (typeof target === "string") return Either.left(target)
  if (target.host !== responder) return Either.left(`its LOCATION host ${target.host} is not the responder ${responder}`)
  if (gateway !== undefined && responder !== gateway) return Either.left(`${responder} is not the gateway ${gateway}`)
  if (!isLanIpv4(target.host)) return Either.left(`${target.host} is not a LAN address`)
  return Either.right(target)
}

// -- A small XML reader ---------------------------------------------------------

/** At most this many elements, nested at most this deep, in one document. */
export const XML_MAX_ELEMENTS = 4096
export const XML_MAX_DEPTH = 32

/** An element: its local name (prefix dropped), its text (children's text excluded), its children. */
export interface XmlElement {
  readonly name: string
  readonly text: string
  readonly children: ReadonlyArray<XmlElement>
}

export const XmlElement: Schema.Schema<XmlElement> = Schema.Struct({
  name: Schema.String,
  text: Schema.String,
  children: Schema.Array(Schema.suspend((): Schema.Schema<XmlElement> => XmlElement))
})

const NAMED_ENTITIES: Readonly<Record<string, string>> = { amp: "&", lt: "<", gt: ">", quot: "\"", apos: "'" }

/** Text with entities replaced; `undefined` for an unknown entity or a character reference out of range. */
const decodeEntities = (raw: string): string | undefined => {
  let bad = false
  const text = raw.replace(/&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|[A-Za-z][A-Za-z0-9]{0,15});/g, (_, entity: string) => {
    if (entity.startsWith("#")) {
      const code = entity[1] === "x" ? Number.parseInt(entity.slice(2), 16) : Number.parseInt(entity.slice(1), 10)
      if (code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff) || code === 0) {
        bad = true
        return ""
      }
      return String.fromCodePoint(code)
    }
    const named = NAMED_ENTITIES[entity]
    if (named === undefined) bad = true
    return named ?? ""
  })
  return bad ? undefined : text
}

interface OpenElement {
  readonly name: string
  text: string
  readonly children: Array<XmlElement>
}

/** The local name in a tag (`s:Envelope` → `Envelope`), or `undefined` when it is not a name. */
const localName = (qualified: string): string | undefined => {
  if (!/^[A-Za-z_][\w.-]*(:[A-Za-z_][\w.-]*)?$/.test(qualified)) return undefined
  const colon = qualified.indexOf(":")
  return colon < 0 ? qualified : qualified.slice(colon + 1)
}

/** Reads `xml` into its root element, or a reason it is not the XML subset read here. Linear in the input. */
export const readXml = (xml: string): Either.Either<XmlElement, string> => {
  const stack: Array<OpenElement> = []
  let root: XmlElement | undefined
  let elements = 0
  let at = 0
  const addText = (raw: string): string | undefined => {
    const top = stack[stack.length - 1]
    if (top === undefined) return raw.trim() === "" ? undefined : "text outside the root element"
    const text = decodeEntities(raw)
    if (text === undefined) return "an unknown entity"
    top.text += text
    return undefined
  }
  while (at < xml.length) {
    const open = xml.indexOf("<", at)
    const textEnd = open < 0 ? xml.length : open
    if (textEnd > at) {
      const problem = addText(xml.slice(at, textEnd))
      if (problem !== undefined) return Either.left(problem)
    }
    if (open < 0) break
    if (xml.startsWith("<!--", open)) {
      const end = xml.indexOf("-->", open + 4)
      if (end < 0) return Either.left("an unterminated comment")
      at = end + 3
    } else if (xml.startsWith("<![CDATA[", open)) {
      const end = xml.indexOf("]]>", open + 9)
      if (end < 0) return Either.left("an unterminated CDATA section")
      const top = stack[stack.length - 1]
      if (top === undefined) return Either.left("CDATA outside the root element")
      top.text += xml.slice(open + 9, end)
      at = end + 3
    } else if (xml.startsWith("<?", open)) {
      const end = xml.indexOf("?>", open + 2)
      if (end < 0) return Either.left("an unterminated processing instruction")
      at = end + 2
    } else if (xml.startsWith("<!", open)) {
      return Either.left("a DOCTYPE or other declaration (not read here)")
    } else {
      const end = xml.indexOf(">", open + 1)
      if (end < 0) return Either.left("an unterminated tag")
      const tag = xml.slice(open + 1, end)
      at = end + 1
      if (tag.startsWith("/")) {
        const name = localName(tag.slice(1).trim())
        const top = stack.pop()
        if (top === undefined || name !== top.name) return Either.left(`a closing tag </${tag.slice(1, 40)}> that closes nothing open`)
        const element: XmlElement = { name: top.name, text: top.text, children: top.children }
        const parent = stack[stack.length - 1]
        if (parent === undefined) root = element
        else parent.children.push(element)
        continue
      }
      const selfClosing = tag.endsWith("/")
      const body = selfClosing ? tag.slice(0, -1) : tag
      const nameEnd = body.search(/[\s]/)
      const name = localName(nameEnd < 0 ? body : body.slice(0, nameEnd))
      if (name === undefined) return Either.left(`a malformed tag <${tag.slice(0, 40)}>`)
      if (root !== undefined) return Either.left("more than one root element")
      if (++elements > XML_MAX_ELEMENTS) return Either.left(`more than ${XML_MAX_ELEMENTS} elements`)
      if (stack.length >= XML_MAX_DEPTH) return Either.left(`elements nested deeper than ${XML_MAX_DEPTH}`)
      if (selfClosing) {
        const element: XmlElement = { name, text: "", children: [] }
        const parent = stack[stack.length - 1]
        if (parent === undefined) root = element
        else parent.children.push(element)
      } else {
        stack.push({ name, text: "", children: [] })
      }
    }
  }
  if (stack.length > 0) return Either.left(`unclosed element <${stack[stack.length - 1]?.name}> (cut short?)`)
  return root === undefined ? Either.left("no root element") : Either.right(root)
}

/** An XML document (the subset `readXml` reads) from its text. */
export const XmlFromText = Schema.transformOrFail(Schema.String, XmlElement, {
  strict: true,
  decode: (text, _, ast) =>
    Either.match(readXml(text), {
      onLeft: (reason) => ParseResult.fail(new ParseResult.Type(ast, text.slice(0, 200), `not readable XML: ${reason}`)),
      onRight: ParseResult.succeed
    }),
  encode: (element, _, ast) => ParseResult.fail(new ParseResult.Forbidden(ast, element, "XML is only read"))
})

/** Every element named `name` in the tree under (and including) `root`, in document order. */
export const elementsNamed = (root: XmlElement, name: string): ReadonlyArray<XmlElement> => {
  const found: Array<XmlElement> = []
  const visit = (element: XmlElement) => {
    if (element.name === name) found.push(element)
    for (const child of element.children) visit(child)
  }
  visit(root)
  return found
}

/** The trimmed text of `element`'s first child named `name`. */
export const childText = (element: XmlElement, name: string): string | undefined =>
  element.children.find((child) => child.name === name)?.text.trim()

// -- The device description ------------------------------------------------------

/** The service that maps ports: its type (one of `WAN_CONNECTION_SERVICES`) and where its control URL is. */
export interface WanConnectionService {
  readonly serviceType: (typeof WAN_CONNECTION_SERVICES)[number]
  readonly control: HttpTarget
}

/**
 * The best port-mapping service in a device description fetched from
 * `location` (WANIPConnection:2, then :1, then WANPPPConnection:1), with its
 * control URL resolved against `URLBase` when present, else `location`. The
 * control URL must be on the description's own host and port: a
 * description cannot send the node's SOAP requests anywhere else.
 */
export const wanConnectionService = (description: XmlElement, location: HttpTarget): Either.Either<WanConnectionService, string> => {
  const base = `http://${location.host}:${location.port}${location.path}`
  const urlBase = childText(description, "URLBase")
  const services = elementsNamed(description, "service")
  for (const serviceType of WAN_CONNECTION_SERVICES) {
    const service = services.find((candidate) => childText(candidate, "serviceType") === serviceType)
    if (service === undefined) continue
    const controlUrl = childText(service, "controlURL")
    if (controlUrl === undefined || controlUrl === "") return Either.left(`its ${serviceType} service has no controlURL`)
    let resolvedBase = base
    if (urlBase !== undefined && urlBase !== "") {
      const parsedBase = parseHttpUrl(urlBase)
      if (typeof parsedBase === "string") return Either.left(`its URLBase: ${parsedBase}`)
      resolvedBase = urlBase
    }
    const control = parseHttpUrl(controlUrl, resolvedBase)
    if (typeof control === "string") return Either.left(`its controlURL: ${control}`)
    if (control.host !== location.host || control.port !== location.port) {
      return Either.left(`its controlURL points to ${control.host}:${control.port}, not the device at ${location.host}:${location.port}`)
    }
    return Either.right({ serviceType, control })
  }
  return Either.left("no WANIPConnection or WANPPPConnection service (the device maps no ports)")
}

// -- SOAP ---------------------------------------------------------------------------

const escapeXml = (text: string): string =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

/** The body of a SOAP request for `action` of `serviceType` with `args` in order (values escaped). */
export const soapRequest = (serviceType: string, action: string, args: ReadonlyArray<readonly [string, string]>): string =>
  [
    "<?xml version=\"1.0\"?>",
    "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\">",
    "<s:Body>",
    `<u:${action} xmlns:u="${escapeXml(serviceType)}">`,
    ...args.map(([name, value]) => `<${name}>${escapeXml(value)}</${name}>`),
    `</u:${action}>`,
    "</s:Body>",
    "</s:Envelope>",
    ""
  ].join("")

/** The `SOAPAction` header of a request for `action` of `serviceType`. */
export const soapActionHeader = (serviceType: string, action: string): string => `"${serviceType}#${action}"`

/** The arguments of `AddPortMapping` (and, v2, `AddAnyPortMapping`) for a TCP port. */
export const addPortMappingArgs = (
  externalPort: number,
  internalClient: string,
  internalPort: number,
  leaseSeconds: number
): ReadonlyArray<readonly [string, string]> => [
  ["NewRemoteHost", ""],
  ["NewExternalPort", String(externalPort)],
  ["NewProtocol", "TCP"],
  ["NewInternalPort", String(internalPort)],
  ["NewInternalClient", internalClient],
  ["NewEnabled", "1"],
  ["NewPortMappingDescription", "peerchat"],
  ["NewLeaseDuration", String(leaseSeconds)]
]

/** The arguments of `DeletePortMapping` for a TCP port. */
export const deletePortMappingArgs = (externalPort: number): ReadonlyArray<readonly [string, string]> => [
  ["NewRemoteHost", ""],
  ["NewExternalPort", String(externalPort)],
  ["NewProtocol", "TCP"]
]

/** A SOAP answer: the action's output arguments by name, or a fault with its UPnP error code when it has one. */
export const SoapAnswer = Schema.Union(
  Schema.TaggedStruct("Done", { values: Schema.Record({ key: Schema.String, value: Schema.String }) }),
  Schema.TaggedStruct("Fault", { errorCode: Schema.optional(Schema.Int), description: Schema.String })
)
/** @see SoapAnswer */
export type SoapAnswer = typeof SoapAnswer.Type

/**
 * A SOAP answer from an XML tree: `Envelope/Body` holds either `Fault`
 * (with `detail/UPnPError/errorCode` and `errorDescription`, read wherever
 * they sit in it) or `<Action>Response` with one child per output argument.
 */
export const SoapAnswerFromXml = Schema.transformOrFail(XmlElement, SoapAnswer, {
  strict: true,
  decode: (envelope, _, ast) => {
    const fail = (message: string) => ParseResult.fail(new ParseResult.Type(ast, envelope.name, message))
    if (envelope.name !== "Envelope") return fail("not a SOAP envelope")
    const body = envelope.children.find((child) => child.name === "Body")
    const content = body?.children[0]
    if (content === undefined) return fail("a SOAP envelope without a body")
    if (content.name === "Fault") {
      const code = elementsNamed(content, "errorCode")[0]?.text.trim()
      const description = (elementsNamed(content, "errorDescription")[0]?.text ?? childText(content, "faultstring") ?? "").trim().slice(0, 200)
      const errorCode = code !== undefined && /^\d{1,6}$/.test(code) ? Number(code) : undefined
      return ParseResult.succeed({ _tag: "Fault" as const, ...(errorCode === undefined ? {} : { errorCode }), description })
    }
    if (!content.name.endsWith("Response")) return fail(`a SOAP body holding <${content.name.slice(0, 40)}>`)
    const values: Record<string, string> = {}
    for (const child of content.children) values[child.name] = child.text.trim()
    return ParseResult.succeed({ _tag: "Done" as const, values })
  },
  encode: (answer, _, ast) => ParseResult.fail(new ParseResult.Forbidden(ast, answer, "SOAP answers are only read"))
})

/** A SOAP answer from the text of an HTTP body. */
export const SoapAnswerFromText = Schema.compose(XmlFromText, SoapAnswerFromXml)

/** UPnP error codes a router answers to port-mapping actions (UPnP IGD, WANIPConnection:2 2.4). */
export const UPNP_ERRORS: Readonly<Record<number, string>> = {
  401: "invalid action",
  402: "invalid arguments",
  501: "action failed",
  606: "action not authorized",
  714: "no such entry in the mapping table",
  715: "wildcard not permitted in source IP",
  716: "wildcard not permitted in external port",
  718: "conflict in the mapping table (the port is mapped for another host)",
  724: "internal and external port values must be the same",
  725: "only permanent leases are supported",
  726: "remote host must be a wildcard",
  727: "external port must be a wildcard",
  728: "no port maps available",
  729: "conflict with other mechanisms"
}

/** ConflictInCurrentlyUsedMapping: the outside port is mapped for another host. */
export const CONFLICT_IN_MAPPING = 718
/** OnlyPermanentLeasesSupported: ask again with lease 0, and remove it on shutdown. */
export const ONLY_PERMANENT_LEASES = 725

/**
 * The outside ports to ask for, in order, when mapping `internalPort`: the
 * same port first, then `extra` others spread over 1024-65535 from
 * `random` (a number in [0, 1): the caller's randomness), all distinct.
 */
export const externalPortCandidates = (internalPort: number, extra: number, random: number): ReadonlyArray<number> => {
  const candidates = [internalPort]
  const span = 65535 - 1024 + 1
  let next = Math.floor(random * span)
  while (candidates.length < extra + 1) {
    const port = 1024 + (next % span)
    if (!candidates.includes(port)) candidates.push(port)
    next += 7919 // a prime step: spread, and never stuck on one port
  }
  return candidates
}
