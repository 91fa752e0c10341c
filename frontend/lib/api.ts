// The api client: `POST {base}/v1/{method}` with a JSON body and the session as a bearer
// token, unwrapping the `{"success", "time", "data" | "error"}` envelope.

import type {
  CalendarLink,
  IndexEntry,
  MeUser,
  Settings,
  SubscriptionUpdate,
  UpcomingStream,
  UserIndex,
} from './types';

/** A failed call: HTTP status (0 when the api was unreachable) and the api's error code. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }

  /** The session is unknown or has expired: only a new link from the bot helps. */
  get sessionInvalid(): boolean {
    return this.status === 401 || this.code === 'unauthorized';
  }
}

/** Calls the api on behalf of one session. */
export class ApiClient {
  private readonly base: string;
  private readonly token: string;

  /** `base` is the api's root (`''` for the page's own origin). */
  constructor(base: string, token: string) {
    this.base = base.replace(/\/+$/, '');
    this.token = token;
  }

  /** Calls `method` with `body`, resolving to the envelope's `data`. */
  async call<T>(method: string, body: object = {}): Promise<T> {
    let response: Response;
    try {
      response = await fetch(`${this.base}/v1/${method}`, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          Authorization: `Bearer ${this.token}`,
        },
        body: JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
      });
    } catch (err) {
      throw new ApiError(0, 'network', err instanceof Error ? err.message : String(err));
    }
    let envelope: unknown;
    try {
      envelope = await response.json();
    } catch {
      throw new ApiError(response.status, 'bad_response', `the api answered ${response.status} without JSON`);
    }
    if (typeof envelope !== 'object' || envelope === null || !('success' in envelope)) {
      throw new ApiError(response.status, 'bad_response', 'the api answered with an unexpected shape');
    }
    const env = envelope as { success: boolean; data?: T; error?: { code?: string; message?: string } };
    if (!env.success || !response.ok) {
      throw new ApiError(
        response.status,
        env.error?.code ?? 'unknown',
        env.error?.message ?? `the api answered ${response.status}`,
      );
    }
    return env.data as T;
  }

  /** Who the session acts for. */
  async me(): Promise<MeUser> {
    const me = await this.call<MeUser | { kind: string }>('authMe');
    if (me.kind !== 'user') {
      throw new ApiError(403, 'forbidden', 'this page needs a user session, not a service credential');
    }
    return me as MeUser;
  }

  /** Every entity and group, marked with the session user's subscriptions. */
  index(): Promise<UserIndex> {
    return this.call<UserIndex>('getUserIndex');
  }

  /** Changes the given settings. */
  updateSetting(change: Partial<Settings>): Promise<Settings> {
    return this.call<Settings>('updateSetting', change);
  }

  /** The upcoming and live streams of the session user's subscriptions. */
  upcoming(): Promise<UpcomingStream[]> {
    return this.call<UpcomingStream[]>('getUpcoming');
  }

  /** A new calendar feed link (the previous one stops working). */
  createCalendarLink(): Promise<CalendarLink> {
    return this.call<CalendarLink>('createCalendarLink');
  }

  /** Removes the calendar feed link. */
  revokeCalendarLink(): Promise<{ revoked: boolean }> {
    return this.call<{ revoked: boolean }>('revokeCalendarLink');
  }

  /** The absolute URL of an api path (`/ical/…`), on the api this client talks to. */
  absolute(path: string): string {
    return new URL(`${this.base}${path}`, window.location.href).toString();
  }

  /** Subscribes to `entity` with `kinds` (empty: all) or unsubscribes. */
  updateSubscription(entity: IndexEntry['id'], subscribed: boolean, kinds: string[]): Promise<SubscriptionUpdate> {
    return this.call<SubscriptionUpdate>('updateSubscription', subscribed ? { entity, kinds } : { entity, subscribed });
  }
}
