/**
 * A UPnP IGD device description as miniupnpd 2.3 serves it (`/rootDesc.xml`,
 * IGD:1 with a WANIPConnection:1 service, trimmed of its icon and
 * presentation URL), for the core and platform tests of UPnP IGD.
 */
export const miniupnpdDescription = (controlUrl = "/ctl/IPConn"): string =>
  `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0" configId="1337"><specVersion><major>1</major><minor>1</minor></specVersion>` +
  `<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><friendlyName>Debian router</friendlyName>` +
  `<manufacturer>Debian</manufacturer><manufacturerURL>https://www.debian.org/</manufacturerURL><modelDescription>Debian router</modelDescription>` +
  `<modelName>Debian router</modelName><modelNumber>2.3.1</modelNumber><serialNumber>00000000</serialNumber>` +
  `<UDN>uuid:3f9a64d2-0a4b-4c71-9d57-2b4c5f1d0e11</UDN><serviceList><service>` +
  `<serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId>` +
  `<SCPDURL>/L3F.xml</SCPDURL><controlURL>/ctl/L3F</controlURL><eventSubURL>/evt/L3F</eventSubURL></service></serviceList>` +
  `<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><friendlyName>WANDevice</friendlyName>` +
  `<UDN>uuid:3f9a64d2-0a4b-4c71-9d57-2b4c5f1d0e12</UDN><serviceList><service>` +
  `<serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType>` +
  `<serviceId>urn:upnp-org:serviceId:WANCommonIFC1</serviceId><SCPDURL>/WANCfg.xml</SCPDURL><controlURL>/ctl/CmnIfCfg</controlURL>` +
  `<eventSubURL>/evt/CmnIfCfg</eventSubURL></service></serviceList><deviceList><device>` +
  `<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><friendlyName>WANConnectionDevice</friendlyName>` +
  `<UDN>uuid:3f9a64d2-0a4b-4c71-9d57-2b4c5f1d0e13</UDN><serviceList><service>` +
  `<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>` +
  `<SCPDURL>/WANIPCn.xml</SCPDURL><controlURL>${controlUrl}</controlURL><eventSubURL>/evt/IPConn</eventSubURL></service></serviceList>` +
  `</device></deviceList></device></deviceList><presentationURL>http://100.64.1.1/</presentationURL></device></root>`

/** A SOAP answer envelope around `inner` (the body's content), as miniupnpd writes them. */
export const soapEnvelope = (inner: string): string =>
  `<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" ` +
  `s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>${inner}</s:Body></s:Envelope>\r\n`

/** A SOAP fault with UPnP error `code`, as miniupnpd writes them (HTTP 500). */
export const soapFault = (code: number, description: string): string =>
  soapEnvelope(
    `<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>` +
      `<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>${code}</errorCode>` +
      `<errorDescription>${description}</errorDescription></UPnPError></detail></s:Fault>`
  )
