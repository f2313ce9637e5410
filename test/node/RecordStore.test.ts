import { Layer } from "effect"
import { NodeConfig } from "../../src/node/NodeConfig.js"
import { RecordStore } from "../../src/node/RecordStore.js"
import { testSignatures } from "../support/memoryNetwork.js"
import { recordStoreContract } from "./RecordStoreContract.js"

recordStoreContract("memory", (maxStoredRecords) =>
  RecordStore.layerMemory.pipe(Layer.provide(Layer.merge(NodeConfig.layer({ maxStoredRecords }), testSignatures))))
