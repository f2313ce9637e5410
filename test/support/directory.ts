/**
 * The user directory of a running test node (see memoryNetwork.ts), built by
 * hand over the node's services with an in-memory profile, for tests that
 * register and resolve names without the chat layer.
 */
import { Context, Effect, Layer } from "effect"
import { Circuits } from "../../src/node/Circuits.js"
import { DhtNode } from "../../src/node/DhtNode.js"
import { Directory } from "../../src/node/Directory.js"
import { Identity } from "../../src/node/Identity.js"
import { NodeConfig, type NodeConfigShape } from "../../src/node/NodeConfig.js"
import { emptyProfile, type Profile, ProfileStore } from "../../src/node/Profile.js"
import { Transport } from "../../src/node/Transport.js"
import { type TestNode, testSignatures } from "./memoryNetwork.js"

/**
 * The directory of `node` (configured like the node, from `config`) and its
 * profile store; with `circuits`, a node behind a NAT whose record lists
 * what that service advertises.
 */
export const directoryOf = (
  node: TestNode,
  config: Partial<NodeConfigShape>,
  profile: Profile = emptyProfile,
  circuits?: Context.Tag.Service<Circuits>
) =>
  Effect.gen(function*() {
    const services = Layer.mergeAll(
      Layer.succeed(DhtNode, node.dht),
      Layer.succeed(Identity, node.identity),
      Layer.succeed(Transport, node.transport),
      NodeConfig.layer(config),
      testSignatures
    )
    const context = yield* Layer.build(
      Directory.layer().pipe(
        Layer.provideMerge(ProfileStore.layerMemory(profile)),
        Layer.provide(circuits === undefined ? services : Layer.merge(services, Layer.succeed(Circuits, circuits)))
      )
    )
    return { directory: Context.get(context, Directory), profiles: Context.get(context, ProfileStore) }
  })
