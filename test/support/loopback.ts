/**
 * Loopback hosts for tests that run several real nodes on one machine. All
 * of 127.0.0.0/8 reaches this machine, and nodes limit how many contacts of
 * one network (/24) they keep, so each node gets a network of its own —
 * as distinct hosts on the internet would — instead of everyone on 127.0.0.1.
 */

/** The loopback host of test node `index` (0..65,535): `127.<hi>.<lo>.1`, one /24 per node. */
export const loopbackHost = (index: number): string => `127.${1 + ((index >>> 8) & 127)}.${index & 255}.1`

// Test files run in parallel worker processes: start each process at its own offset so that two
// files rarely pick the same host (and when they do, ports still differ).
let next = (process.pid * 97) & 0x7fff

/** A loopback host in a /24 no other call of this process returned recently. */
export const freshLoopbackHost = (): string => loopbackHost(next++ & 0x7fff)
