/**
 * Usernames and the DHT key they are published under. A username is
 * normalized (NFKC, lower case) before it is checked, so `Alice` and
 * `ａｌｉｃｅ` name the same user and map to the same key.
 *
 * @since 0.1.0
 */
import { Either, Schema } from "effect"
import { concatBytes, utf8 } from "./Bytes.js"
import { type Key, keyFromBytes } from "./Id.js"
import { type HashFunction, sha256 } from "./Sha256.js"

/** Shortest allowed username, in characters. */
export const USERNAME_MIN_LENGTH = 3
/** Longest allowed username, in characters. */
export const USERNAME_MAX_LENGTH = 32

const USERNAME_PATTERN = /^[a-z0-9_.-]{3,32}$/

/** A normalized username: 3-32 characters of `[a-z0-9_.-]`. */
export const Username = Schema.String.pipe(
  Schema.pattern(USERNAME_PATTERN, {
    message: () => "a username is 3-32 characters of a-z, 0-9, '_', '.' or '-'"
  }),
  Schema.brand("peerchat/Username")
)
/** @see Username */
export type Username = typeof Username.Type

/** Why a string is not a valid username. */
export class InvalidUsername extends Schema.TaggedError<InvalidUsername>()("InvalidUsername", {
  input: Schema.String,
  reason: Schema.Literal("TooShort", "TooLong", "InvalidCharacter")
}) {
  override get message(): string {
    switch (this.reason) {
      case "TooShort":
        return `username ${JSON.stringify(this.input)} is shorter than ${USERNAME_MIN_LENGTH} characters`
      case "TooLong":
        return `username ${JSON.stringify(this.input)} is longer than ${USERNAME_MAX_LENGTH} characters`
      case "InvalidCharacter":
        return `username ${JSON.stringify(this.input)} may only contain a-z, 0-9, '_', '.' and '-'`
    }
  }
}

/** Normalizes (NFKC, lower case) and validates a username. */
export const parseUsername = (input: string): Either.Either<Username, InvalidUsername> => {
  const normalized = input.normalize("NFKC").toLowerCase()
  // Length in code points, so that a rejected non-ASCII name gets the right reason.
  const length = [...normalized].length
  if (length < USERNAME_MIN_LENGTH) return Either.left(new InvalidUsername({ input, reason: "TooShort" }))
  if (length > USERNAME_MAX_LENGTH) return Either.left(new InvalidUsername({ input, reason: "TooLong" }))
  if (!USERNAME_PATTERN.test(normalized)) {
    return Either.left(new InvalidUsername({ input, reason: "InvalidCharacter" }))
  }
  return Either.right(normalized as Username)
}

const USER_KEY_DOMAIN = utf8("peerchat/user/")

/** The DHT key a user's record is stored under: SHA-256("peerchat/user/" + username). */
export const userKey = (username: Username, hash: HashFunction = sha256): Key =>
  keyFromBytes(hash(concatBytes(USER_KEY_DOMAIN, utf8(username))))
