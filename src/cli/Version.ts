/** The version of this build, as `peerchat --version` prints it. */
export const VERSION = "0.1.0"
