/**
 * Linux network namespaces for tests: running commands (in the root namespace
 * or inside one namespace), the per-run name prefix, the probe that tells a
 * test whether it can make namespaces at all, and the sweep of what a crashed
 * earlier run left behind.
 *
 * Names. Everything these helpers create is a namespace whose name starts
 * with `TAG` followed by the creating process's pid (5 base-36 digits) and a
 * per-process counter: `pcn00k3f2-alice` is namespace "alice" of network 2 of
 * process 0k3f (base 36). Interfaces are created directly inside those
 * namespaces (never in the root namespace) and die with them. So the sweep
 * can tell leftovers from live networks: a tagged namespace whose pid no
 * longer runs belongs to a crashed run, one whose pid runs belongs to a live
 * test (another vitest worker, say) and is left alone.
 */
import { Data, Duration, Effect, type Scope } from "effect"
import { type ChildProcess, type ChildProcessWithoutNullStreams, execFile, spawn, spawnSync } from "node:child_process"

/** The project's fixed tag: the first characters of every name these helpers create. */
export const TAG = "pcn"

/** `TAG`, then 5 base-36 digits of a pid, then a base-36 counter: the prefix of one network's names. */
const TAGGED = new RegExp(`^${TAG}([0-9a-z]{5})[0-9a-z]+-`)

const pid36 = (pid: number): string => pid.toString(36).padStart(5, "0")

let networkCounter = 0

/** A fresh prefix for one network of this process: `pcn<pid, 5 base-36 digits><counter>` (at most 11 characters). */
export const freshPrefix = (): string => `${TAG}${pid36(process.pid)}${(++networkCounter).toString(36)}`

/** A command that could not be run, or that failed when it had to succeed. */
export class NetError extends Data.TaggedError("NetError")<{ readonly message: string }> {}

/** What a command printed and how it ended. */
export interface ExecResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
  /** Set when the command was killed because it outlived its time limit. */
  readonly timedOut: boolean
}

/** How to run one command. */
export interface ExecOptions {
  /** Written to the command's stdin (which is closed after it). */
  readonly input?: string
  /** Killed (SIGKILL) after this long; default 30 s. */
  readonly timeout?: Duration.DurationInput
}

/** Something that lives in a network namespace: a host, a router. */
export interface InNamespace {
  readonly namespace: string
}

/** Runs `command args` in the root namespace to completion; fails only if it cannot be started. */
export const run = (command: string, args: ReadonlyArray<string>, options: ExecOptions = {}): Effect.Effect<ExecResult, NetError> =>
  Effect.async<ExecResult, NetError>((resume) => {
    const timeout = Duration.toMillis(options.timeout ?? Duration.seconds(30))
    const child = execFile(command, [...args], { timeout, killSignal: "SIGKILL", maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error !== null && typeof error.code === "string") {
        return resume(Effect.fail(new NetError({ message: `cannot run ${command}: ${error.message}` })))
      }
      const timedOut = error !== null && error.killed === true
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
      resume(Effect.succeed({ code, stdout, stderr, timedOut }))
    })
    if (options.input !== undefined) child.stdin?.end(options.input)
    else child.stdin?.end()
    return Effect.sync(() => void child.kill("SIGKILL"))
  })

/** Like `run`, but a non-zero exit is an error (with the command and its stderr in the message). */
export const runOk = (command: string, args: ReadonlyArray<string>, options: ExecOptions = {}): Effect.Effect<ExecResult, NetError> =>
  Effect.flatMap(run(command, args, options), (result) =>
    result.code === 0
      ? Effect.succeed(result)
      : Effect.fail(new NetError({ message: `${command} ${args.join(" ")} exited with ${result.code}: ${result.stderr.trim()}` })))

/** `ip netns exec NS command args`: runs a command inside `target`'s namespace to completion. */
export const exec = (target: InNamespace, command: string, args: ReadonlyArray<string>, options: ExecOptions = {}) =>
  run("ip", ["netns", "exec", target.namespace, command, ...args], options)

/** Like `exec`, but a non-zero exit is an error. */
export const execOk = (target: InNamespace, command: string, args: ReadonlyArray<string>, options: ExecOptions = {}) =>
  runOk("ip", ["netns", "exec", target.namespace, command, ...args], options)

/**
 * Starts `command args` inside `target`'s namespace (stdio piped) and stops it
 * when the scope closes: SIGTERM, then SIGKILL if it has not exited after
 * `stopTimeout` (default 10 s). `ip netns exec` execs the command in place,
 * so the child's pid is the command's own and signals reach it directly.
 */
export const spawnIn = (
  target: InNamespace,
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly stopTimeout?: Duration.DurationInput } = {}
): Effect.Effect<ChildProcessWithoutNullStreams, NetError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<ChildProcessWithoutNullStreams, NetError>((resume) => {
      const child = spawn("ip", ["netns", "exec", target.namespace, command, ...args])
      child.once("error", (error) => resume(Effect.fail(new NetError({ message: `cannot start ${command} in ${target.namespace}: ${error.message}` }))))
      child.once("spawn", () => resume(Effect.succeed(child)))
    }),
    (child) => stopChild(child, options.stopTimeout ?? Duration.seconds(10))
  )

/** SIGTERM, then SIGKILL after `grace`; completes once the child has exited. */
export const stopChild = (child: ChildProcess, grace: Duration.DurationInput): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    const timer = setTimeout(() => child.kill("SIGKILL"), Duration.toMillis(grace))
    child.once("exit", () => {
      clearTimeout(timer)
      resume(Effect.void)
    })
    child.kill("SIGTERM")
  })

/** The namespaces that exist now (`ip netns list`, names only). */
export const listNamespaces: Effect.Effect<ReadonlyArray<string>, NetError> = Effect.map(
  runOk("ip", ["netns", "list"]),
  (result) => result.stdout.split("\n").map((line) => line.trim().split(" ")[0] ?? "").filter((name) => name !== "")
)

/** The interfaces of the root namespace (`ip -o link`, names only, without `@peer`). */
export const listRootInterfaces: Effect.Effect<ReadonlyArray<string>, NetError> = Effect.map(
  runOk("ip", ["-o", "link", "show"]),
  (result) =>
    result.stdout.split("\n").flatMap((line) => {
      const match = /^\d+:\s+([^:@\s]+)/.exec(line)
      return match?.[1] === undefined ? [] : [match[1]]
    })
)

/**
 * Deletes a namespace of ours: first kills (SIGKILL, by pid) whatever still
 * runs inside it (processes a test started there and did not stop), since a
 * namespace with processes in it outlives its name. Never fails.
 */
export const deleteNamespace = (name: string): Effect.Effect<void> =>
  Effect.gen(function*() {
    const pids = yield* run("ip", ["netns", "pids", name])
    for (const pid of pids.stdout.split("\n").map((line) => Number.parseInt(line, 10)).filter(Number.isInteger)) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // It exited meanwhile.
      }
    }
    const deleted = yield* run("ip", ["netns", "delete", name])
    if (deleted.code !== 0 && !/No such file/.test(deleted.stderr)) {
      yield* Effect.logWarning(`could not delete namespace ${name}: ${deleted.stderr.trim()}`)
    }
  }).pipe(Effect.catchAll((error) => Effect.logWarning(`could not delete namespace ${name}: ${error.message}`)))

const isRunning = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** Whether `name` is one of ours (starts with `TAG`, the pid and a counter) and its creator no longer runs. */
export const isLeftover = (name: string): boolean => {
  const match = TAGGED.exec(name)
  return match?.[1] !== undefined && !isRunning(Number.parseInt(match[1], 36))
}

/**
 * Removes what crashed earlier runs left: namespaces (and, though these
 * helpers create none, root-namespace interfaces) whose names carry `TAG`
 * and the pid of a process that no longer runs. Names without the tag, and
 * tagged names of live processes, are never touched. Returns what it removed.
 */
export const sweepLeftovers: Effect.Effect<ReadonlyArray<string>, NetError> = Effect.gen(function*() {
  const namespaces = (yield* listNamespaces).filter(isLeftover)
  yield* Effect.forEach(namespaces, deleteNamespace, { discard: true })
  const links = (yield* listRootInterfaces).filter(isLeftover)
  yield* Effect.forEach(links, (link) => Effect.ignore(run("ip", ["link", "delete", link])), { discard: true })
  if (namespaces.length + links.length > 0) {
    yield* Effect.logInfo(`removed leftovers of crashed runs: ${[...namespaces, ...links].join(", ")}`)
  }
  return [...namespaces, ...links]
})

let probed: { readonly reason: string | undefined } | undefined

/**
 * Whether this process can build test networks: Linux, root, `ip`
 * (iproute2) and `nft` (nftables) installed, `ip netns add` working and
 * nftables usable inside a namespace. `undefined` when it can, else the
 * reason it cannot (for `describe.skipIf`). Synchronous, and run once per
 * process (the answer is kept).
 */
export const canCreateNamespaces = (): string | undefined => {
  if (probed !== undefined) return probed.reason
  const reason = probe()
  probed = { reason }
  return reason
}

const probe = (): string | undefined => {
  if (process.platform !== "linux") return `network namespaces need Linux (this is ${process.platform})`
  if (process.getuid?.() !== 0) return "creating network namespaces needs root (run the tests as root, as CI does)"
  const ip = spawnSync("ip", ["-V"], { encoding: "utf8" })
  if (ip.error !== undefined || ip.status !== 0) return "`ip` (iproute2) is not installed"
  const nft = spawnSync("nft", ["--version"], { encoding: "utf8" })
  if (nft.error !== undefined || nft.status !== 0) return "`nft` is not installed (apt-get install -y nftables)"
  // Counter 0 is never a network's, so the probe's name cannot clash with one; a crash leaves it to the sweep.
  const name = `${TAG}${pid36(process.pid)}0-probe`
  const added = spawnSync("ip", ["netns", "add", name], { encoding: "utf8" })
  if (added.status !== 0) return `\`ip netns add\` does not work here: ${(added.stderr || String(added.error)).trim()}`
  try {
    const table = spawnSync("ip", ["netns", "exec", name, "nft", "add table inet probe"], { encoding: "utf8" })
    if (table.status !== 0) return `nftables does not work in a namespace: ${(table.stderr || String(table.error)).trim()}`
    return undefined
  } finally {
    spawnSync("ip", ["netns", "delete", name])
  }
}
