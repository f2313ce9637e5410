#!/usr/bin/env node
/**
 * Entry point of the `peerchat` command. `--version` answers without loading
 * anything else. The client commands, `--help` and `--completions` load the
 * client bundle (`client/ClientCli.ts`: the parser, the commands and the
 * control API client) through its V8 code cache (`client/CodeCache.ts`);
 * `start`, `chat` and `peerchat` alone load the whole program, with the node
 * and the terminal chat. Either bundle parses the whole command line.
 */
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { CLIENT_BUNDLE_FILE, loadBundle, runCliOf } from "./client/CodeCache.js"
import { VERSION } from "./Version.js"

/** Commands that only talk to a running node, and the built-ins that need no node (help, shell completions). */
const CLIENT_COMMANDS: ReadonlySet<string> = new Set([
  "stop", "register", "whois", "status", "peers", "send", "history", "inbox", "id", "verify", "trust", "contacts",
  "--help", "-h", "--completions"
])

const args = process.argv.slice(2)
const [first] = args
if (args.length === 1 && (first === "--version" || first === "-v")) {
  process.stdout.write(`${VERSION}\n`)
} else if (first !== undefined && CLIENT_COMMANDS.has(first)) {
  const clientBundle = fileURLToPath(new URL(`./client/${CLIENT_BUNDLE_FILE}`, import.meta.url))
  // Run from the sources (tsx), there is no bundle: the module itself is loaded.
  const runCli = existsSync(clientBundle)
    ? runCliOf(loadBundle(clientBundle).exports)
    : (await import("./client/ClientCli.js")).runCli
  runCli(args)
} else {
  const { runCli } = await import("./Cli.js")
  runCli(args)
}
