/**
 * What only the control client's chat calls need (`send`, `history`,
 * `inbox`, the event stream, `id`, `contacts`, `verify`, `trust`): the
 * schemas of their answers and errors and the check of a message's text.
 * `ControlClient.ts` imports this module with the first such call, so
 * `status`, `peers`, `register` and `whois` run without building the chat's
 * schemas (docs/decisions.md, "Fast client commands"). It names exactly what
 * the client uses: a bundle keeps every export of a module imported with
 * `import()`, and the server's request schemas are not the client's.
 *
 * @since 0.3.0
 */
export {
  ChatEventLine,
  ChatUnavailable,
  ContactsAnswer,
  ContactsErrors,
  ConversationErrors,
  DeliveryAnswer,
  DeliveryErrors,
  formatHistoryCursor,
  HistoryAnswer,
  IdentityAnswer,
  IdErrors,
  InboxAnswer,
  InboxErrors,
  MarkReadAnswer,
  SendErrors,
  SentMessageAnswer,
  TrustAnswer,
  TrustErrors,
  VerifyAnswer,
  VerifyErrors
} from "../chat/ChatControl.js"
export { parseOutgoingText } from "../core/MessageInput.js"
