import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fromHex, toHex, utf8 } from "../../src/core/Bytes.js"
import { nodeIdFromPublicKey } from "../../src/core/Id.js"
import { sha256 } from "../../src/core/Sha256.js"
import { Identity, IdentityError, Signatures } from "../../src/node/Identity.js"
import * as IdentityStore from "../../src/platform/IdentityStore.js"
import {
  encryptionKeyFromSeed,
  generateSigningKeyPair,
  sha256Native,
  signingKeyFromSeed,
  verifyEd25519
} from "../../src/platform/NodeCrypto.js"
import { seededRandomBytes } from "../support/arbitraries.js"

/** A fresh directory under the OS temp dir, removed when the test's scope closes. */
const tempDir = Effect.acquireRelease(
  Effect.promise(() => mkdtemp(join(tmpdir(), "peerchat-identity-"))),
  (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
)

const modeOf = (path: string) => Effect.promise(async () => (await stat(path)).mode & 0o777)
const readBytes = (path: string) => Effect.promise(async () => new Uint8Array(await readFile(path)))
const listDir = (dir: string) => Effect.promise(async () => (await readdir(dir)).sort())

const hex = (text: string): Uint8Array => {
  const bytes = fromHex(text)
  if (bytes === undefined) throw new Error(`bad hex in test vector: ${text}`)
  return bytes
}

const SEED_A = "11".repeat(32)
const SEED_B = "22".repeat(32)
const validDocument = { version: 1, signingSeed: SEED_A, encryptionSeed: SEED_B, createdAt: 1_700_000_000_000 }

/** Writes `content` as the identity file of a fresh data dir, mode 0600, and returns both paths. */
const withIdentityFile = (content: string) =>
  Effect.gen(function*() {
    const dataDir = yield* tempDir
    const file = join(dataDir, IdentityStore.IDENTITY_FILE)
    yield* Effect.promise(() => writeFile(file, content, { mode: 0o600 }))
    return { dataDir, file }
  })

/** Loads an identity file that must be rejected as Corrupt, and checks that it was left exactly as it was. */
const expectCorrupt = (content: string) =>
  Effect.gen(function*() {
    const { dataDir, file } = yield* withIdentityFile(content)
    const before = yield* readBytes(file)
    const error = yield* Effect.flip(IdentityStore.loadOrCreateIdentity(dataDir))
    expect(error).toBeInstanceOf(IdentityError)
    expect(error.reason).toBe("Corrupt")
    expect(error.path).toBe(file)
    expect(error.message).toContain(file)
    // Neither the seeds nor fragments of them may end up in an error message (and so in logs).
    expect(error.message).not.toContain("1111111111")
    expect(error.message).not.toContain("2222222222")
    expect(yield* readBytes(file)).toEqual(before)
    expect(yield* listDir(dataDir)).toEqual([IdentityStore.IDENTITY_FILE])
    return error
  })

const posixOnly = process.platform === "win32" ? it.scoped.skip : it.scoped

describe("loadOrCreateIdentity", () => {
  posixOnly("first start creates the data dir (0700) and identity.json (0600) with a valid document", () =>
    Effect.gen(function*() {
      const root = yield* tempDir
      const dataDir = join(root, "nested", "peerchat")
      const identity = yield* IdentityStore.loadOrCreateIdentity(dataDir)
      const file = join(dataDir, IdentityStore.IDENTITY_FILE)
      expect(yield* modeOf(dataDir)).toBe(0o700)
      expect(yield* modeOf(file)).toBe(0o600)
      expect(yield* listDir(dataDir)).toEqual([IdentityStore.IDENTITY_FILE])

      const document = Schema.decodeUnknownSync(IdentityStore.IdentityFile)(
        JSON.parse(yield* Effect.promise(() => readFile(file, "utf8")))
      )
      expect(identity.signingPublicKey).toEqual(signingKeyFromSeed(hex(document.signingSeed)).publicKey)
      expect(identity.encryptionPublicKey).toEqual(encryptionKeyFromSeed(hex(document.encryptionSeed)).publicKey)
      expect(identity.signingPublicKey.length).toBe(32)
      expect(identity.encryptionPublicKey.length).toBe(32)
      // The node id is SHA-256 of the signing key, checked with the core's own hash.
      expect(identity.nodeId).toBe(nodeIdFromPublicKey(identity.signingPublicKey, sha256))
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("second start loads the same identity and leaves the file unchanged", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      const first = yield* IdentityStore.loadOrCreateIdentity(dataDir)
      const file = join(dataDir, IdentityStore.IDENTITY_FILE)
      const written = yield* readBytes(file)
      const second = yield* IdentityStore.loadOrCreateIdentity(dataDir)
      expect(second.nodeId).toBe(first.nodeId)
      expect(second.signingPublicKey).toEqual(first.signingPublicKey)
      expect(second.encryptionPublicKey).toEqual(first.encryptionPublicKey)
      expect(yield* readBytes(file)).toEqual(written)
      // Ed25519 is deterministic, so both loads sign identically.
      const message = utf8("same key")
      expect(second.sign(message)).toEqual(first.sign(message))
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("two fresh data dirs get different identities", () =>
    Effect.gen(function*() {
      const a = yield* IdentityStore.loadOrCreateIdentity(yield* tempDir)
      const b = yield* IdentityStore.loadOrCreateIdentity(yield* tempDir)
      expect(a.nodeId).not.toBe(b.nodeId)
      expect(a.encryptionPublicKey).not.toEqual(b.encryptionPublicKey)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("loads a hand-written file into the identity of its seeds", () =>
    Effect.gen(function*() {
      const { dataDir } = yield* withIdentityFile(JSON.stringify(validDocument))
      const loaded = yield* IdentityStore.loadOrCreateIdentity(dataDir)
      const expected = IdentityStore.identityFromSeeds(hex(SEED_A), hex(SEED_B))
      expect(loaded.nodeId).toBe(expected.nodeId)
      expect(loaded.encryptionPublicKey).toEqual(expected.encryptionPublicKey)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("corrupt JSON is a Corrupt error naming the file, and the file is left untouched", () =>
    Effect.gen(function*() {
      const error = yield* expectCorrupt(`{"version":1,"signingSeed":"${SEED_A}"`)
      expect(error.detail).toContain("JSON")
      yield* expectCorrupt("")
      yield* expectCorrupt(`\u0000\u00ff garbage ${SEED_A}`)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("a document of the wrong shape is Corrupt, with the offending field in the message", () =>
    Effect.gen(function*() {
      const wrongVersion = yield* expectCorrupt(JSON.stringify({ ...validDocument, version: 2 }))
      expect(wrongVersion.message).toContain("version")
      const shortSeed = yield* expectCorrupt(JSON.stringify({ ...validDocument, signingSeed: SEED_A.slice(2) }))
      expect(shortSeed.message).toContain("signingSeed")
      const upperCase = yield* expectCorrupt(JSON.stringify({ ...validDocument, encryptionSeed: "2A".repeat(32) }))
      expect(upperCase.message).toContain("encryptionSeed")
      const { encryptionSeed: _dropped, ...missing } = validDocument
      const missingField = yield* expectCorrupt(JSON.stringify(missing))
      expect(missingField.message).toContain("encryptionSeed")
      yield* expectCorrupt(JSON.stringify({ ...validDocument, createdAt: -1 }))
      yield* expectCorrupt(JSON.stringify([validDocument]))
      yield* expectCorrupt("null")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("an identity path that is a directory is Corrupt, not replaced", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      const file = join(dataDir, IdentityStore.IDENTITY_FILE)
      yield* Effect.promise(() => mkdir(file))
      const error = yield* Effect.flip(IdentityStore.loadOrCreateIdentity(dataDir))
      expect(error.reason).toBe("Corrupt")
      expect((yield* Effect.promise(() => stat(file))).isDirectory()).toBe(true)
    }).pipe(Effect.provide(NodeContext.layer)))

  posixOnly("a file readable by group or others is InsecurePermissions, with the chmod to run", () =>
    Effect.gen(function*() {
      for (const mode of [0o644, 0o640, 0o604, 0o660]) {
        const { dataDir, file } = yield* withIdentityFile(JSON.stringify(validDocument))
        yield* Effect.promise(() => chmod(file, mode))
        const error = yield* Effect.flip(IdentityStore.loadOrCreateIdentity(dataDir))
        expect(error.reason).toBe("InsecurePermissions")
        expect(error.path).toBe(file)
        expect(error.message).toContain(`chmod 600 ${file}`)
        expect(error.detail).toContain(mode.toString(8))
        expect(yield* modeOf(file)).toBe(mode)
      }
      // Owner read-only is fine.
      const { dataDir, file } = yield* withIdentityFile(JSON.stringify(validDocument))
      yield* Effect.promise(() => chmod(file, 0o400))
      yield* IdentityStore.loadOrCreateIdentity(dataDir)
    }).pipe(Effect.provide(NodeContext.layer)))

  posixOnly("an unwritable data dir is an Unwritable error on first start", () =>
    Effect.gen(function*() {
      // root ignores permission bits, so this case cannot be provoked there.
      if (process.getuid?.() === 0) return
      const root = yield* tempDir
      yield* Effect.promise(() => chmod(root, 0o500))
      const error = yield* Effect.flip(IdentityStore.loadOrCreateIdentity(join(root, "peerchat")))
      yield* Effect.promise(() => chmod(root, 0o700))
      expect(error.reason).toBe("Unwritable")
    }).pipe(Effect.provide(NodeContext.layer)))
})

describe("Identity and Signatures layers", () => {
  const message = utf8("peerchat/test message")

  it.scoped("sign/verify round trip through the layers; verify rejects tampering without throwing", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      const { identity, signatures } = yield* Effect.gen(function*() {
        return { identity: yield* Identity, signatures: yield* Signatures }
      }).pipe(Effect.provide(Layer.merge(IdentityStore.layer(dataDir), IdentityStore.signaturesLayer)))
      const signature = identity.sign(message)
      expect(signature.length).toBe(64)
      expect(signatures.verify(identity.signingPublicKey, message, signature)).toBe(true)

      const tampered = message.slice()
      tampered[0] = (tampered[0] ?? 0) ^ 1
      expect(signatures.verify(identity.signingPublicKey, tampered, signature)).toBe(false)
      const flipped = signature.slice()
      flipped[10] = (flipped[10] ?? 0) ^ 0x40
      expect(signatures.verify(identity.signingPublicKey, message, flipped)).toBe(false)
      expect(signatures.verify(generateSigningKeyPair().publicKey, message, signature)).toBe(false)
      // The encryption key is not a signing key.
      expect(signatures.verify(identity.encryptionPublicKey, message, signature)).toBe(false)
    }).pipe(Effect.provide(NodeContext.layer)))

  it("verifyEd25519 returns false for malformed keys and signatures", () => {
    const signing = signingKeyFromSeed(seededRandomBytes(7)(32))
    const identity = IdentityStore.identityFromSeeds(signing.seed, seededRandomBytes(8)(32))
    const signature = identity.sign(message)
    const garbage = seededRandomBytes(9)
    expect(verifyEd25519(signing.publicKey, message, garbage(64))).toBe(false)
    expect(verifyEd25519(signing.publicKey, message, new Uint8Array(64))).toBe(false)
    expect(verifyEd25519(signing.publicKey, message, new Uint8Array(64).fill(0xff))).toBe(false)
    expect(verifyEd25519(signing.publicKey, message, signature.subarray(0, 63))).toBe(false)
    expect(verifyEd25519(signing.publicKey, message, new Uint8Array(0))).toBe(false)
    expect(verifyEd25519(signing.publicKey.subarray(0, 31), message, signature)).toBe(false)
    expect(verifyEd25519(new Uint8Array(0), message, signature)).toBe(false)
    expect(verifyEd25519(new Uint8Array(32).fill(0xff), message, signature)).toBe(false)
    expect(verifyEd25519(garbage(32), message, signature)).toBe(false)
    expect(verifyEd25519(signing.publicKey, message, signature)).toBe(true)
  })
})

describe("deterministic identities", () => {
  it("the same seeds give the same identity; different seeds a different one", () => {
    const a = IdentityStore.identityFromSeeds(hex(SEED_A), hex(SEED_B))
    const again = IdentityStore.identityFromSeeds(hex(SEED_A), hex(SEED_B))
    const other = IdentityStore.identityFromSeeds(hex(SEED_B), hex(SEED_A))
    expect(again.nodeId).toBe(a.nodeId)
    expect(again.signingPublicKey).toEqual(a.signingPublicKey)
    expect(again.encryptionPublicKey).toEqual(a.encryptionPublicKey)
    expect(again.sign(utf8("x"))).toEqual(a.sign(utf8("x")))
    expect(other.nodeId).not.toBe(a.nodeId)
    expect(a.nodeId).toBe(nodeIdFromPublicKey(a.signingPublicKey, sha256))
  })

  it("rejects seeds of the wrong length", () => {
    expect(() => IdentityStore.identityFromSeeds(new Uint8Array(31), hex(SEED_B))).toThrow(RangeError)
    expect(() => IdentityStore.identityFromSeeds(hex(SEED_A), new Uint8Array(33))).toThrow(RangeError)
  })

  it.effect("layerFromSeeds provides the identity of its seeds", () =>
    Effect.gen(function*() {
      const identity = yield* Identity
      expect(identity.nodeId).toBe(IdentityStore.identityFromSeeds(hex(SEED_A), hex(SEED_B)).nodeId)
    }).pipe(Effect.provide(IdentityStore.layerFromSeeds(hex(SEED_A), hex(SEED_B)))))

  it("Ed25519 from a seed matches RFC 8032 test vector 1", () => {
    const key = signingKeyFromSeed(hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    expect(toHex(key.publicKey)).toBe("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    const identity = IdentityStore.identityFromSeeds(key.seed, hex(SEED_B))
    const signature = identity.sign(new Uint8Array(0))
    expect(toHex(signature)).toBe(
      "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    expect(verifyEd25519(key.publicKey, new Uint8Array(0), signature)).toBe(true)
  })

  it("X25519 from a private key matches RFC 7748 section 6.1", () => {
    const key = encryptionKeyFromSeed(hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    expect(toHex(key.publicKey)).toBe("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
  })

  it("sha256Native agrees with the core's sha256", () => {
    const bytes = seededRandomBytes(3)
    for (const length of [0, 1, 55, 56, 63, 64, 65, 1000]) {
      const input = bytes(length)
      expect(sha256Native(input)).toEqual(sha256(input))
    }
    expect(sha256Native(new Uint8Array(0))).toBeInstanceOf(Uint8Array)
  })
})
