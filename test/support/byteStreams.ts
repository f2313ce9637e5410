/**
 * In-memory `ByteStream`s for tests share this: the flow-control half of
 * the interface, which they do not need since nothing is ever held back.
 */
export abstract class UnthrottledStream {
  readonly writableLength = (): number => 0
  readonly pause = (): void => {}
  readonly resume = (): void => {}
  readonly isPaused = (): boolean => false
  readonly cork = (): void => {}
  readonly uncork = (): void => {}
  readonly setIdleTimeout = (): void => {}
}
