/**
 * Maps kept in the order entries were last set, so the oldest can be
 * forgotten first: the bound of many small memories of the core and the
 * services (failed punches, served request ids, routes, owner caches). A JS
 * `Map` iterates in insertion order, so re-inserting an entry makes it the
 * newest. Pure; mutates only the map it is given.
 *
 * @since 0.7.0
 */

/** Deletes the first-inserted entries of `map` until it holds at most `max`. */
export const trimOldest = <K, V>(map: Map<K, V>, max: number): void => {
  while (map.size > max) {
    const oldest = map.keys().next()
    if (oldest.done === true) return
    map.delete(oldest.value)
  }
}

/** Sets `key` to `value` as the newest entry, forgetting the oldest beyond `capacity`. */
export const setNewest = <K, V>(map: Map<K, V>, key: K, value: V, capacity: number): void => {
  map.delete(key)
  map.set(key, value)
  trimOldest(map, capacity)
}
