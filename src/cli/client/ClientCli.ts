/**
 * The entry of the client commands' bundle (`scripts/bundleCli.ts`): the same
 * `runCli` as `Cli.ts`, bundled apart from the node and the terminal chat.
 * `main.ts` loads it for `stop`, `register`, `whois`, `status`, `peers`,
 * `send`, `history`, `inbox`, `id`, `verify`, `trust`, `contacts`, `--help`
 * and `--completions`, so those commands load one file holding only what
 * they use, compiled through its V8 code cache (`CodeCache.ts`). In that bundle the `import()` of the
 * node and of the chat points at files that do not exist, so a client
 * command that reached for them would fail loudly.
 */
export { runCli } from "../Cli.js"

/**
 * Initialises the modules the commands load only when they run: the control
 * client (`ControlSession.ts`), the chat's schemas it loads with its first
 * chat call (`ControlClientChat.ts`) and the reader of `send -`
 * (`StdinText.ts`). `CodeCacheWriter.ts` calls it before a
 * warm-up command so the code cache holds their code too: without a node, no
 * warm-up command reaches a chat call.
 */
export const loadOnDemandModules = async (): Promise<void> => {
  await Promise.all([
    import("./ControlSession.js"),
    import("../../platform/ControlClientChat.js"),
    import("./StdinText.js")
  ])
}
