/**
 * Hostile nodes for the simulator: a fraction of the network, drawn from the
 * seed among the nodes that serve no user, that stays online and lies over
 * the ordinary transport. Each installs handlers of its own with
 * `transport.serve`, which replace the node's honest ones for its session:
 *
 * - FindValue for a registered user's key answers with the node's own claim
 *   of the name (signed with its own key, with the largest sequence there
 *   is), and for any key with contacts that are all hostile (an eclipse
 *   attempt: a reader that follows them meets only liars);
 * - FindNode answers with the hostile nodes closest to the target, never an
 *   honest one;
 * - Store and StoreMail say "Stored" and keep nothing (mail left with them
 *   is lost, and records stored with them are never served).
 *
 * They answer Ping honestly, so they enter and stay in routing tables. Their
 * claims are signed once the users have registered (a hostile node cannot
 * tell a name from its key, but the simulation knows every name), each with
 * the proof of work an honest claim pays (solved once per node and name),
 * and signed again when one nears its expiry. The readers must end at the real
 * owner's key or at a loud conflict, never at a hostile key alone; the
 * simulation counts how often each happens (`runResolutions`).
 *
 * @since 0.2.0
 */
import type { ChatHandlers } from "../chat/ChatProtocol.js"
import type { DhtHandlers } from "../node/Transport.js"
import { Clock, Effect, Scope } from "effect"
import { toHex } from "../core/Bytes.js"
import { type ClaimProof, solveClaimStep } from "../core/ClaimProof.js"
import type { Contact } from "../core/Contact.js"
import { compareDistance } from "../core/Distance.js"
import type { Key, NodeId } from "../core/Id.js"
import {
  type ClaimRules,
  defaultRecordLimits,
  type PublicKeyHex,
  signUserRecord,
  type UserRecord
} from "../core/UserRecord.js"
import { userKey } from "../core/Username.js"
import { validRecordAt } from "../node/Lookups.js"
import { verifyEd25519 } from "../platform/NodeCrypto.js"
import { uniformSample } from "./Sampling.js"
import { type SimNode, simKeys, simSignatures } from "./SimNode.js"
import { MAX_HOSTILE_FRACTION } from "./SimulationOptions.js"

/** The sequence of every forged claim: above any sequence an honest owner will ever reach. */
export const FORGED_SEQUENCE = Number.MAX_SAFE_INTEGER

/** Nonces tried per step while solving a claim's proof of work (each step is bounded; the loop is not). */
const ATTEMPTS_PER_STEP = 4096

/** A forged claim is signed again when it has less than this left to live. */
const RESIGN_BEFORE_EXPIRY_MS = 60 * 60 * 1000

/** How many of `nodes` nodes are hostile at `fraction`, at most the `eligible` ones. */
export const hostileCount = (nodes: number, fraction: number, eligible: number): number =>
  Math.min(eligible, Math.round(nodes * Math.min(Math.max(fraction, 0), MAX_HOSTILE_FRACTION)))

/**
 * Draws the hostile nodes: `hostileCount(nodes, fraction, ...)` distinct
 * indices, uniformly among those not in `exclude` (the users' nodes), in
 * ascending order. Draws nothing when the count is 0, so a run without
 * hostile nodes replays as it did before they existed.
 */
export const chooseHostile = (
  nodes: number,
  fraction: number,
  exclude: ReadonlySet<number>
): Effect.Effect<ReadonlyArray<number>> =>
  Effect.gen(function*() {
    const eligible = Array.from({ length: nodes }, (_, index) => index).filter((index) => !exclude.has(index))
    return yield* uniformSample(eligible, hostileCount(nodes, fraction, eligible.length))
  })

/** One hostile node: where it is, and the claims it made. */
interface Member {
  readonly index: number
  readonly contact: Contact
  readonly signingKey: PublicKeyHex
  readonly encryptionKey: PublicKeyHex
  readonly sign: (message: Uint8Array) => Uint8Array
  /** The difficulty its claims are solved at (its node's own), and what readers check them against. */
  readonly claimDifficulty: number
  readonly readerRules: ClaimRules
  /** Its claim of each registered name, by user key. Bound: one per registered user. */
  readonly claims: Map<Key, UserRecord>
}

/** What the hostile nodes of a run share: who they are, and the names they claim. */
export interface HostileCrew {
  /** Indices of the hostile nodes, ascending. */
  readonly indices: ReadonlyArray<number>
  /** Their signing keys (a sole owner with one of these keys is a hijacked name). */
  readonly signingKeys: ReadonlySet<PublicKeyHex>
  /** How many claims the crew has signed so far (one per hostile node and name, more on re-signing). */
  readonly forgedClaims: () => number
}

/** The crew with the state its handlers read. */
interface Crew extends HostileCrew {
  readonly members: ReadonlyArray<Member>
  readonly byIndex: ReadonlyMap<number, Member>
  /** The honest owners' records, by user key: the names to claim. Bound: one per registered user. */
  readonly owners: Map<Key, UserRecord>
  signed: number
}

/** The crew of the hostile nodes `nodes` of the run seeded `runSeed` (their keys derive from seed and index). */
export const makeCrew = (runSeed: number, nodes: ReadonlyArray<SimNode>): HostileCrew => {
  const members = nodes.map((node): Member => {
    const { identity } = simKeys(runSeed, node.index)
    return {
      index: node.index,
      contact: { nodeId: node.nodeId, address: node.address },
      // 32-byte keys in hex: PublicKeyHex values.
      signingKey: toHex(identity.signingPublicKey) as PublicKeyHex,
      encryptionKey: toHex(identity.encryptionPublicKey) as PublicKeyHex,
      sign: identity.sign,
      claimDifficulty: node.nodeConfig.claimDifficulty,
      readerRules: { minDifficulty: node.nodeConfig.minClaimDifficulty, hash: simSignatures.claimHash },
      claims: new Map()
    }
  })
  const crew: Crew = {
    indices: members.map((member) => member.index),
    signingKeys: new Set(members.map((member) => member.signingKey)),
    forgedClaims: () => crew.signed,
    members,
    byIndex: new Map(members.map((member) => [member.index, member])),
    owners: new Map(),
    signed: 0
  }
  return crew
}

const asCrew = (crew: HostileCrew): Crew => crew as Crew // every HostileCrew is made by makeCrew

/**
 * The proof of work of `member`'s claim of `username`, at its node's
 * difficulty: about 2^difficulty hash evaluations, what an honest claim
 * costs. Deterministic (the nonces are tried from 0).
 */
const solveClaim = (member: Member, username: string): ClaimProof => {
  let fromNonce = 0
  for (;;) {
    const step = solveClaimStep({
      username,
      signingKey: member.signingKey,
      difficulty: member.claimDifficulty,
      hash: simSignatures.claimHash,
      fromNonce,
      attempts: ATTEMPTS_PER_STEP
    })
    if (step._tag === "Solved") return step.proof
    fromNonce = step.nextNonce
  }
}

/**
 * `member`'s claim of the name `owner` holds: a record of that name with the
 * hostile node's keys, node, address and proof of work, the largest
 * sequence, issued `now` and living as long as storers allow. `proof` is
 * that of an earlier claim of the same name, if any (it does not change).
 */
const forge = (crew: Crew, member: Member, owner: UserRecord, now: number, proof?: ClaimProof): UserRecord => {
  const claim = signUserRecord(
    {
      username: owner.username,
      signingKey: member.signingKey,
      encryptionKey: member.encryptionKey,
      nodeId: member.contact.nodeId,
      addresses: [member.contact.address],
      sequence: FORGED_SEQUENCE,
      issuedAt: now,
      expiresAt: now + defaultRecordLimits.maxLifetimeMs,
      claim: proof ?? solveClaim(member, owner.username)
    },
    member.sign
  )
  crew.signed++
  return claim
}

/**
 * Every hostile node signs its own claim of each name in `owners` (the
 * users' records as registered). Dies when a claim would not pass a
 * reader's checks: the record rules changed, and the attack would be
 * silently toothless.
 */
export const forgeClaims = (crew: HostileCrew, owners: ReadonlyArray<UserRecord>): Effect.Effect<void> =>
  Effect.gen(function*() {
    const state = asCrew(crew)
    const now = yield* Clock.currentTimeMillis
    for (const owner of owners) state.owners.set(userKey(owner.username), owner)
    for (const member of state.members) {
      for (const [key, owner] of state.owners) {
        const claim = forge(state, member, owner, now)
        if (!validRecordAt(key, verifyEd25519, member.readerRules)(claim, now)) {
          return yield* Effect.die(
            new Error(`a hostile node's claim of ${JSON.stringify(owner.username)} is not a valid record: update src/sim/Hostile.ts`)
          )
        }
        member.claims.set(key, claim)
      }
    }
  })

/** `member`'s live claim for `key`, signed again when it nears expiry; undefined for a key no user holds. */
const claimFor = (crew: Crew, member: Member, key: Key, now: number): UserRecord | undefined => {
  const held = member.claims.get(key)
  if (held === undefined || held.expiresAt - now > RESIGN_BEFORE_EXPIRY_MS) return held
  const owner = crew.owners.get(key)
  if (owner === undefined) return held
  const fresh = forge(crew, member, owner, now, held.claim)
  member.claims.set(key, fresh)
  return fresh
}

/**
 * The `count` hostile contacts closest to `target`, closest first, other
 * than `skip` (the answering node and its caller). A bounded insertion:
 * O(members · count) at worst, with no copy of the member list.
 */
const closestHostile = (crew: Crew, target: Key, count: number, skip: ReadonlySet<NodeId>): Array<Contact> => {
  const chosen: Array<Contact> = []
  for (const { contact } of crew.members) {
    if (skip.has(contact.nodeId)) continue
    let at = chosen.length
    while (at > 0 && compareDistance(target, contact.nodeId, (chosen[at - 1] as Contact).nodeId) < 0) at--
    if (at >= count) continue
    chosen.splice(at, 0, contact)
    if (chosen.length > count) chosen.pop()
  }
  return chosen
}

/**
 * Makes `node` (one of the crew) lie for the rest of its session: installs
 * the hostile handlers in the node's scope, over its honest ones. `k` is
 * how many contacts an answer carries.
 */
export const turnHostile = (node: SimNode, crew: HostileCrew, k: number): Effect.Effect<void> =>
  Effect.gen(function*() {
    const state = asCrew(crew)
    const member = state.byIndex.get(node.index)
    if (member === undefined) return yield* Effect.die(new Error(`node ${node.index} is not one of the hostile nodes`))
    const contactsFor = (target: Key, caller: NodeId) => closestHostile(state, target, k, new Set([node.nodeId, caller]))
    yield* node.transport.serve({
      FindNode: (caller, request) => Effect.succeed({ contacts: contactsFor(request.target, caller.nodeId) }),
      FindValue: (caller, request) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          const contacts = contactsFor(request.key, caller.nodeId)
          const claim = claimFor(state, member, request.key, now)
          return claim === undefined
            ? { _tag: "Closer" as const, contacts }
            : { _tag: "Found" as const, record: claim, contacts }
        }),
      Store: () => Effect.succeed({ outcome: "Stored" as const }),
      StoreMail: () => Effect.succeed({ outcome: "Stored" as const })
    } satisfies Partial<DhtHandlers & ChatHandlers>).pipe(Scope.extend(node.scope))
  })
