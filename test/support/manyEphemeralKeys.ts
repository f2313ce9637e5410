/**
 * Run as its own process by `Noise.test.ts`: makes `count` (argv[2]) fresh
 * handshake keys with `generateEphemeralKey`, dropping each at once, then
 * prints "done". On Node 20, generating a key and exporting it afterwards
 * deadlocked in a garbage collection (see `generateEphemeralKey`); a process
 * that hangs never prints, which is what the test looks for. A separate
 * process, because a thread stuck on a native lock cannot be stopped from
 * JavaScript.
 */
import { generateEphemeralKey } from "../../src/platform/Noise.js"

const count = Number(process.argv[2])
let recent: Array<Uint8Array> = []
for (let i = 0; i < count; i++) {
  recent.push(generateEphemeralKey().publicKey)
  if (recent.length > 1000) recent = []
}
process.stdout.write("done\n")
