// Event kinds per platform, and the kinds-filter arithmetic of a subscription.
//
// A subscription's `kinds` list filters events; the api's empty list means every kind,
// including kinds added later. The page shows one checkbox per kind of the entity's
// platforms and keeps any other kinds the list holds untouched.

/** Kinds each platform produces, in display order. */
export const PLATFORM_KINDS: Record<string, string[]> = {
  youtube: [
    'youtube.video',
    'youtube.short',
    'youtube.scheduled',
    'youtube.premiere',
    'youtube.rescheduled',
    'youtube.reminder',
    'youtube.live',
    'youtube.ended',
    'youtube.cancelled',
    'youtube.members',
  ],
  twitter: ['twitter.tweet', 'twitter.retweet'],
  twitch: ['twitch.live', 'twitch.ended', 'twitch.rerun'],
  bilibili: ['bilibili.live', 'bilibili.ended', 'bilibili.dynamic', 'bilibili.video'],
};

/** Platforms in display order: known ones first, in `PLATFORM_KINDS` order. */
export function sortPlatforms(platforms: string[]): string[] {
  const known = Object.keys(PLATFORM_KINDS);
  const rank = (p: string) => (known.includes(p) ? known.indexOf(p) : known.length);
  return [...platforms].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/** The kinds an entity watched on `platforms` can produce, in display order. */
export function kindsFor(platforms: string[]): string[] {
  return sortPlatforms(platforms).flatMap((platform) => PLATFORM_KINDS[platform] ?? []);
}

/** A subscription as edited on the page. */
export interface SubState {
  subscribed: boolean;
  /** Sorted kinds wanted; `null` means every kind (the api's empty list). */
  kinds: string[] | null;
}

/** Whether `kind` is delivered under `state`. */
export function wants(state: SubState, kind: string): boolean {
  return state.kinds === null || state.kinds.includes(kind);
}

/** `state` with `kind` switched on or off, among the entity's `available` kinds. */
export function toggleKind(state: SubState, available: string[], kind: string, on: boolean): SubState {
  const current = state.kinds ?? [...available];
  const next = on ? Array.from(new Set([...current, kind])) : current.filter((k) => k !== kind);
  const extra = next.filter((k) => !available.includes(k));
  // Every available kind and nothing else: store "all", so kinds added later come too.
  const all = extra.length === 0 && available.length > 0 && available.every((k) => next.includes(k));
  return { ...state, kinds: all ? null : next.sort() };
}

/** Whether `state` asks for no kind the entity produces (nothing would be delivered). */
export function selectsNothing(state: SubState, available: string[]): boolean {
  const kinds = state.kinds;
  return state.subscribed && kinds !== null && !available.some((k) => kinds.includes(k));
}

/** Whether two states mean the same subscription. */
export function sameSub(a: SubState, b: SubState): boolean {
  if (a.subscribed !== b.subscribed) return false;
  if (!a.subscribed) return true;
  if (a.kinds === null || b.kinds === null) return a.kinds === b.kinds;
  const bk = b.kinds;
  return a.kinds.length === bk.length && a.kinds.every((k, i) => k === bk[i]);
}

/** The saved state of an index entry (`subscribed` as `getUserIndex` marks it). */
export function savedSub(subscribed: string[] | undefined): SubState {
  if (subscribed === undefined) return { subscribed: false, kinds: null };
  return { subscribed: true, kinds: subscribed.length === 0 ? null : [...subscribed].sort() };
}

/** The kinds list the api expects (empty: every kind). */
export function apiKinds(state: SubState): string[] {
  return state.kinds ?? [];
}
