#!/usr/bin/env node
/**
 * Entry point of the `peerchat` command. `--version` answers without loading
 * anything else. The client commands and `--help` load the client bundle
 * (`client/ClientCli.ts`: the parser, the commands and the control API
 * client); `start`, `chat` and `peerchat` alone load the whole program, with
 * the node and the terminal chat. Either bundle parses the whole command line.
 */
import { VERSION } from "./Version.js"

/** Commands that only talk to a running node. */
const CLIENT_COMMANDS: ReadonlySet<string> = new Set([
  "register", "whois", "status", "peers", "send", "history", "inbox", "id", "verify", "trust", "contacts", "--help", "-h"
])

const args = process.argv.slice(2)
const [first] = args
if (args.length === 1 && (first === "--version" || first === "-v")) {
  process.stdout.write(`${VERSION}\n`)
} else {
  const { runCli } = first !== undefined && CLIENT_COMMANDS.has(first)
    ? await import("./client/ClientCli.js")
    : await import("./Cli.js")
  runCli(args)
}
