// The api's request and response shapes this page uses (see the api's /openapi.json).

/** A chat on one IM platform (`authMe` → `user`). */
export interface User {
  id: string;
  im: string;
  im_chat_id: string;
  name: string;
  language: string;
  settings: { timezone: string | null; paused: boolean; reminder_leads: number[]; calendar_link: boolean };
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
  /** Minutes before a stream, sorted; empty: the default lead (30 min). */
  reminder_leads: number[];
  /** Whether a calendar feed link exists. */
  calendar_link: boolean;
}

/** One stream of `getUpcoming`. */
export interface UpcomingStream {
  source: string;
  id: string;
  entity: string;
  entity_name: string;
  title: string;
  link: string;
  /** RFC 3339: the actual start when live, else the scheduled one. */
  start: string;
  scheduled_start: string;
  state: 'upcoming' | 'live';
  /** `stream` or `premiere`. */
  format: string;
  members_only: boolean;
  updated_at: string;
}

/** `createCalendarLink`: the secret is shown only here. */
export interface CalendarLink {
  secret: string;
  /** `/ical/<secret>.ics` on the api. */
  path: string;
  /** The full URL when the api knows its public URL. */
  url: string | null;
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
