/**
 * UPnP IGD's formats and decisions: SSDP answers decode only when they are
 * an IGD's, their LOCATION is followed only when it is http on the
 * answering gateway itself; the XML reader takes miniupnpd's description
 * and SOAP answers and refuses truncated, garbage and hostile documents
 * (never throwing, in linear time); the control URL cannot leave the
 * device; faults carry their UPnP error code.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import fc from "fast-check"
import {
  acceptLocation,
  addPortMappingArgs,
  externalPortCandidates,
  readXml,
  searchRequest,
  soapRequest,
  SoapAnswerFromText,
  SsdpAnswerFromText,
  wanConnectionService,
  XML_MAX_DEPTH,
  XML_MAX_ELEMENTS
} from "../../src/core/UpnpIgd.js"
import { miniupnpdDescription, soapEnvelope, soapFault } from "../support/upnpIgd.js"

const decodeSsdp = Schema.decodeUnknownEither(SsdpAnswerFromText)
const decodeSoap = Schema.decodeUnknownEither(SoapAnswerFromText)
const device = { host: "100.64.1.1", port: 36123, path: "/rootDesc.xml" }

describe("SSDP", () => {
  it("searches with an M-SEARCH for the device type", () => {
    expect(searchRequest("urn:schemas-upnp-org:device:InternetGatewayDevice:1")).toBe(
      "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n" +
        "ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"
    )
  })

  it("decodes an IGD's search answer as miniupnpd sends it (header names in any case)", () => {
    const answer = "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
      "USN: uuid:3f9a64d2::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\nSERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\n" +
      "Location: http://100.64.1.1:36123/rootDesc.xml\r\nOPT: \"http://schemas.upnp.org/upnp/1/0/\"; ns=01\r\n\r\n"
    expect(decodeSsdp(answer)).toEqual(Either.right({
      location: "http://100.64.1.1:36123/rootDesc.xml",
      searchTarget: "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
    }))
  })

  it("refuses what is not an IGD's search answer, and never throws", () => {
    for (
      const garbage of [
        "",
        "NOTIFY * HTTP/1.1\r\nLOCATION: http://100.64.1.1/\r\nNT: upnp:rootdevice\r\n\r\n",
        "HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nLOCATION: http://100.64.1.1/\r\n\r\n", // another device type
        "HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n", // no LOCATION
        `HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://x/${"a".repeat(600)}\r\n\r\n`,
        "HTTP/1.1 404 Not Found\r\n\r\n"
      ]
    ) expect(Either.isLeft(decodeSsdp(garbage)), JSON.stringify(garbage.slice(0, 40))).toBe(true)
    fc.assert(fc.property(fc.string({ maxLength: 3000 }), (text) => void decodeSsdp(text)))
  })

  it("follows a LOCATION only when it is http on the answering gateway, on a LAN address", () => {
    const gateway = "100.64.1.1"
    expect(acceptLocation("http://100.64.1.1:36123/rootDesc.xml", gateway, gateway)).toEqual(Either.right(device))
    expect(acceptLocation("http://100.64.1.1/d.xml?x=1", gateway, gateway)).toEqual(Either.right({ host: gateway, port: 80, path: "/d.xml?x=1" }))
    for (
      const [location, responder] of [
        ["http://100.64.1.7:80/rootDesc.xml", "100.64.1.7"], // another LAN host, not the gateway
        ["http://100.64.1.7:80/rootDesc.xml", gateway], // the gateway answering, pointing elsewhere
        ["https://100.64.1.1/rootDesc.xml", gateway],
        ["file:///etc/passwd", gateway],
        ["http://router.lan/rootDesc.xml", gateway], // a name to resolve
        ["http://user:pw@100.64.1.1/rootDesc.xml", gateway],
        ["not a url", gateway]
      ] as const
    ) expect(Either.isLeft(acceptLocation(location, responder, gateway)), `${location} from ${responder}`).toBe(true)
    // A gateway on the internet (no NAT in between) is not one to ask.
    expect(Either.isLeft(acceptLocation("http://203.0.113.1/rootDesc.xml", "203.0.113.1", "203.0.113.1"))).toBe(true)
    // With no known gateway, the responder must still be the LOCATION's host, on the LAN (loopback: tests).
    expect(Either.isRight(acceptLocation("http://127.5.5.1:4000/d.xml", "127.5.5.1", undefined))).toBe(true)
  })
})

describe("the device description", () => {
  it("yields miniupnpd's WANIPConnection:1 control URL, resolved against the description's location", () => {
    const description = Either.getOrThrow(readXml(miniupnpdDescription()))
    expect(wanConnectionService(description, device)).toEqual(Either.right({
      serviceType: "urn:schemas-upnp-org:service:WANIPConnection:1",
      control: { host: "100.64.1.1", port: 36123, path: "/ctl/IPConn" }
    }))
  })

  it("prefers WANIPConnection:2, honours URLBase, reads entities, CDATA and prefixes", () => {
    const xml = `<?xml version="1.0"?><!-- a router --><r:root xmlns:r="urn:schemas-upnp-org:device-1-0"><URLBase>http://100.64.1.1:36123/base/</URLBase>` +
      `<service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType><controlURL>/ppp</controlURL></service>` +
      `<service><serviceType> urn:schemas-upnp-org:service:WANIPConnection:2 </serviceType><controlURL><![CDATA[ctl?a=1]]>&amp;b=2</controlURL></service>` +
      `</r:root>`
    expect(wanConnectionService(Either.getOrThrow(readXml(xml)), device)).toEqual(Either.right({
      serviceType: "urn:schemas-upnp-org:service:WANIPConnection:2",
      control: { host: "100.64.1.1", port: 36123, path: "/base/ctl?a=1&b=2" }
    }))
  })

  it("refuses a control URL (or URLBase) that leaves the device, and a description without a WAN connection service", () => {
    for (const control of ["http://203.0.113.9/ctl", "http://100.64.1.1:80/ctl", "//100.64.1.9:36123/ctl", "https://100.64.1.1:36123/ctl"]) {
      expect(Either.isLeft(wanConnectionService(Either.getOrThrow(readXml(miniupnpdDescription(control))), device)), control).toBe(true)
    }
    const withBase = miniupnpdDescription().replace("<device>", "<URLBase>http://203.0.113.9:36123/</URLBase><device>")
    expect(Either.isLeft(wanConnectionService(Either.getOrThrow(readXml(withBase)), device))).toBe(true)
    const noWan = miniupnpdDescription().replaceAll("WANIPConnection:1", "WANIPv6FirewallControl:1")
    expect(wanConnectionService(Either.getOrThrow(readXml(noWan)), device)).toEqual(
      Either.left("no WANIPConnection or WANPPPConnection service (the device maps no ports)")
    )
  })

  it("refuses truncated, garbage and hostile documents without throwing", () => {
    const full = miniupnpdDescription()
    for (const cut of [1, 40, 200, full.length / 2, full.length - 10]) expect(Either.isLeft(readXml(full.slice(0, cut))), `cut at ${cut}`).toBe(true)
    for (
      const hostile of [
        "",
        "just text",
        "<a><b></a></b>",
        "<a></a><b></b>",
        "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><a>&lol2;</a>", // entity expansion
        "<a>&unknown;</a>",
        "<a>&#0;</a>",
        "<a>&#x110000;</a>",
        `${"<a>".repeat(XML_MAX_DEPTH + 1)}${"</a>".repeat(XML_MAX_DEPTH + 1)}`,
        `<a>${"<b/>".repeat(XML_MAX_ELEMENTS)}</a>`,
        "<a><!-- never closed </a>",
        "<1a></1a>"
      ]
    ) expect(Either.isLeft(readXml(hostile)), hostile.slice(0, 40)).toBe(true)
    fc.assert(fc.property(fc.string({ maxLength: 400 }), (text) => void readXml(text)))
    // Mutations of a real description: whatever is left either reads or is refused.
    fc.assert(fc.property(fc.integer({ min: 0, max: full.length }), fc.integer({ min: 0, max: 50 }), fc.string({ maxLength: 8 }), (at, drop, insert) => {
      const mutated = full.slice(0, at) + insert + full.slice(at + drop)
      const read = readXml(mutated)
      if (Either.isRight(read)) void wanConnectionService(read.right, device)
    }))
  })

  it("reads a 64 KiB hostile document in linear time (no backtracking)", () => {
    const startedAt = performance.now()
    for (const hostile of ["<a>".repeat(21_000), "<".repeat(65_536), `<a>${"&amp;".repeat(13_000)}`, `<a ${"x".repeat(65_000)}`]) {
      expect(Either.isLeft(readXml(hostile))).toBe(true)
    }
    expect(performance.now() - startedAt).toBeLessThan(500)
  })
})

describe("SOAP", () => {
  it("writes requests with escaped arguments", () => {
    expect(soapRequest("urn:schemas-upnp-org:service:WANIPConnection:1", "DeletePortMapping", [["NewExternalPort", "4242"], ["X", "a<&"]])).toBe(
      "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" " +
        "s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>" +
        "<u:DeletePortMapping xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">" +
        "<NewExternalPort>4242</NewExternalPort><X>a&lt;&amp;</X></u:DeletePortMapping></s:Body></s:Envelope>"
    )
    expect(addPortMappingArgs(4242, "100.64.1.2", 4242, 3600).map(([name]) => name)).toEqual([
      "NewRemoteHost", "NewExternalPort", "NewProtocol", "NewInternalPort", "NewInternalClient", "NewEnabled",
      "NewPortMappingDescription", "NewLeaseDuration"
    ])
  })

  it("reads an action's answer and a fault with its UPnP error code", () => {
    const answer = soapEnvelope(
      "<u:GetExternalIPAddressResponse xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">" +
        "<NewExternalIPAddress>203.0.113.101</NewExternalIPAddress></u:GetExternalIPAddressResponse>"
    )
    expect(decodeSoap(answer)).toEqual(Either.right({ _tag: "Done", values: { NewExternalIPAddress: "203.0.113.101" } }))
    expect(decodeSoap(soapEnvelope("<u:AddPortMappingResponse xmlns:u=\"x\"/>"))).toEqual(Either.right({ _tag: "Done", values: {} }))
    expect(decodeSoap(soapFault(718, "ConflictInMappingEntry"))).toEqual(
      Either.right({ _tag: "Fault", errorCode: 718, description: "ConflictInMappingEntry" })
    )
    // A fault without a UPnP error code (a SOAP-level fault).
    expect(decodeSoap(soapEnvelope("<s:Fault><faultcode>s:Client</faultcode><faultstring>bad</faultstring></s:Fault>"))).toEqual(
      Either.right({ _tag: "Fault", description: "bad" })
    )
    for (const garbage of ["", "<html>oops</html>", soapEnvelope(""), soapEnvelope("<u:Whatever/>"), soapEnvelope("<u:X>").slice(0, 80)]) {
      expect(Either.isLeft(decodeSoap(garbage)), garbage.slice(0, 60)).toBe(true)
    }
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (text) => void decodeSoap(text)))
  })
})

describe("outside ports to try", () => {
  it("the same port first, then distinct ports above 1023", () => {
    expect(externalPortCandidates(4242, 0, 0.5)).toEqual([4242])
    fc.assert(fc.property(fc.integer({ min: 1, max: 65535 }), fc.integer({ min: 0, max: 8 }), fc.double({ min: 0, max: 0.999999, noNaN: true }), (port, extra, random) => {
      const ports = externalPortCandidates(port, extra, random)
      expect(ports[0]).toBe(port)
      expect(new Set(ports).size).toBe(extra + 1)
      for (const other of ports.slice(1)) expect(other >= 1024 && other <= 65535).toBe(true)
    }))
  })
})
