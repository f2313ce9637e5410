/** The part of bittorrent-dht's API (it ships no types) that `bench/manyNodes.ts` uses as its reference. */
declare module "bittorrent-dht" {
  import type { EventEmitter } from "node:events"

  interface DhtOptions {
    readonly bootstrap?: ReadonlyArray<string> | false
    readonly nodeId?: Buffer
  }

  export default class DHT extends EventEmitter {
    constructor(options?: DhtOptions)
    listen(port: number, address: string, onListening?: () => void): void
    address(): { readonly address: string; readonly port: number }
    lookup(infoHash: Buffer, callback?: (error: Error | null, found: number) => void): () => void
    toJSON(): { readonly nodes: ReadonlyArray<unknown> }
    destroy(callback?: () => void): void
  }
}
