// The api's request and response shapes this page uses (see the api's /openapi.json).

/** A chat on one IM platform (`authMe` → `user`). */
export interface User {
  id: string;
  im: string;
  im_chat_id: string;
  name: string;
  language: string;
  settings: { timezone: string | null; paused: boolean };
  created_at: string;
}

/** `authMe` for a session caller. */
export interface MeUser {
  kind: 'user';
  user: User;
  expires_at: string;
}

/** `getSettings` / `updateSetting`. */
export interface Settings {
  language: string;
  timezone: string | null;
  paused: boolean;
}

/** A group of entities (agency, unit). */
export interface Group {
  id: string;
  names: Record<string, string>;
}

/** One entity in `getUserIndex`. */
export interface IndexEntry {
  id: string;
  names: Record<string, string>;
  default_language: string;
  group: string | null;
  /** `youtube`, `twitter`. */
  platforms: string[];
  /** Lowercased names and account ids. */
  search: string[];
  /** Present when subscribed: the kinds filter, empty meaning every kind. */
  subscribed?: string[];
}

/** `getUserIndex`. */
export interface UserIndex {
  groups: Group[];
  entities: IndexEntry[];
}

/** One subscription (`getSubscription`). */
export interface Subscription {
  user: string;
  entity: string;
  kinds: string[];
}

/** `updateSubscription`. */
export interface SubscriptionUpdate {
  changed: boolean;
  subscriptions: Subscription[];
}
