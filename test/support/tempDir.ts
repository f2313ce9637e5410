/** A fresh temporary directory for one test, removed when the test's scope closes. */
import { Effect } from "effect"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"

/** Creates `<os tmp>/peerchat-<label>-XXXXXX` and removes it (recursively) at scope end. */
export const scopedTempDir = (label: string) =>
  Effect.acquireRelease(
    Effect.promise(() => mkdtemp(join(tmpdir(), `peerchat-${label}-`))),
    (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
  )
