/**
 * The terminal chat's screen, with Ink (React for terminals): one component
 * that subscribes to the driver's state, paints the rows `view` computed
 * (one `Text` per row, one nested `Text` per styled segment), reports key
 * presses and terminal resizes as messages, and nothing else. Ink does the
 * terminal work: raw mode, key decoding, diffing frames, colours.
 */
import { Box, render, Text, type TextProps, useInput, useStdout } from "ink"
import { createElement as h, useEffect, useMemo, useSyncExternalStore } from "react"
import type { ChatStore } from "./ChatDriver.js"
import { keyPressesOf, type Size } from "./ChatState.js"
import { type Style, view } from "./ChatView.js"

const STYLES: { readonly [S in Style]: TextProps } = {
  plain: {},
  dim: { dimColor: true },
  bold: { bold: true },
  title: { bold: true },
  bar: { inverse: true },
  barGood: { inverse: true, color: "green" },
  barWarn: { inverse: true, color: "yellow" },
  barBad: { inverse: true, color: "red" },
  error: { color: "red" },
  success: { color: "green" },
  warning: { color: "yellow" },
  selected: { inverse: true },
  unread: { bold: true, color: "yellow" },
  me: { color: "cyan", bold: true },
  peer: { color: "magenta", bold: true },
  cursor: { inverse: true }
}

/**
 * The size the chat lays out for: the terminal's, one row short, so a frame
 * never fills the screen (Ink clears the whole terminal for each frame that does).
 */
export const screenSize = (stdout: { readonly columns?: number; readonly rows?: number }): Size => ({
  columns: stdout.columns ?? 80,
  rows: Math.max(1, (stdout.rows ?? 24) - 1)
})

/** Longest a change waits to be drawn: changes within one frame are drawn once. */
const FRAME_MS = 33

/**
 * The chat's state, re-rendered at most once a frame: a burst of changes (a
 * hundred messages arriving, each with its status changes) costs a few
 * frames, not a layout of the whole screen per change.
 */
const useChatState = (store: ChatStore) => {
  const subscribe = useMemo(
    () => (listener: () => void) => {
      let timer: ReturnType<typeof setTimeout> | null = null
      const unsubscribe = store.subscribe(() => {
        timer ??= setTimeout(() => {
          timer = null
          listener()
        }, FRAME_MS)
      })
      return () => {
        if (timer !== null) clearTimeout(timer)
        unsubscribe()
      }
    },
    [store]
  )
  return useSyncExternalStore(subscribe, store.getState)
}

const ChatScreen = ({ store }: { readonly store: ChatStore }) => {
  const state = useChatState(store)
  const { stdout } = useStdout()
  useEffect(() => {
    const onResize = () => store.dispatch({ _tag: "Resize", size: screenSize(stdout) })
    onResize()
    stdout.on("resize", onResize)
    return () => {
      stdout.off("resize", onResize)
    }
  }, [stdout, store])
  useInput((input, key) => {
    for (const press of keyPressesOf(input, key)) store.dispatch({ _tag: "Key", key: press })
  })
  return h(
    Box,
    { flexDirection: "column" },
    ...view(state).map((row, index) =>
      h(
        Text,
        { key: index, wrap: "truncate" },
        ...row.map((part, at) => h(Text, { key: at, ...STYLES[part.style] }, part.text))
      )
    )
  )
}

/** Paints the chat of `store` until `unmount`; Ctrl-C reaches the chat as a key, which quits it cleanly. */
export const renderChat = (store: ChatStore) =>
  render(h(ChatScreen, { store }), { exitOnCtrlC: false, patchConsole: true, incrementalRendering: false })
