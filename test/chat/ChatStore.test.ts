import { describe, expect, it } from "@effect/vitest"
import { ChatStore, ChatStoreConfig } from "../../src/chat/ChatStore.js"
import { chatStoreContract } from "./ChatStoreContract.js"

chatStoreContract("memory", ChatStore.layerMemory)

describe("ChatStoreConfig", () => {
  it("keeps the defaults it is not given", () => {
    const config = ChatStoreConfig.make({ seenCapacity: 10 })
    expect(config.seenCapacity).toBe(10)
    expect(config.outboxMaxPerRecipient).toBe(1000)
    expect(config.mailboxMaxBytesTotal).toBe(64 * 1024 * 1024)
  })

  it("refuses bounds that are not positive integers", () => {
    expect(() => ChatStoreConfig.make({ seenCapacity: 0 })).toThrow(RangeError)
    expect(() => ChatStoreConfig.make({ maxPageSize: 1.5 })).toThrow(/maxPageSize/)
  })
})
