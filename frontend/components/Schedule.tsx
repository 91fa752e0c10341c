// The schedule side of the page: the upcoming streams of the chat's subscriptions, in the
// chat's time zone, and the calendar feed link (made, remade or removed at once, not
// through the save bar: the secret is shown only when it is made).

import { useState } from 'react';

import type { ApiClient } from '@/lib/api';
import { ApiError } from '@/lib/api';
import type { Translate } from '@/lib/i18n';
import type { CalendarLink, UpcomingStream } from '@/lib/types';
import styles from './ui.module.css';

/** `start` in `timeZone` (none: UTC), written the way `language` writes dates. */
export function localTime(start: string, language: string, timeZone: string | null): string {
  const options: Intl.DateTimeFormatOptions = {
    weekday: 'short',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    timeZoneName: 'short',
    timeZone: timeZone || 'UTC',
  };
  try {
    return new Intl.DateTimeFormat(language, options).format(new Date(start));
  } catch {
    // A zone this browser does not know: UTC rather than nothing.
    return new Intl.DateTimeFormat(language, { ...options, timeZone: 'UTC' }).format(new Date(start));
  }
}

interface UpcomingProps {
  t: Translate;
  streams: UpcomingStream[] | null;
  error: string | null;
  language: string;
  timeZone: string | null;
}

/** The upcoming and live streams, soonest first. */
export function UpcomingList({ t, streams, error, language, timeZone }: UpcomingProps) {
  return (
    <section className={styles.panel} aria-labelledby="upcoming-heading" data-testid="upcoming">
      <h2 id="upcoming-heading" className={styles.sectionTitle}>
        {t('upcoming')}
      </h2>
      {error !== null ? (
        <p className={styles.error} role="alert" data-testid="upcoming-error">
          {t('upcomingFailed', { message: error })}
        </p>
      ) : streams === null ? (
        <p className={styles.help}>{t('loading')}</p>
      ) : streams.length === 0 ? (
        <p className={styles.help} data-testid="upcoming-empty">
          {t('upcomingEmpty')}
        </p>
      ) : (
        <ul className={styles.upcoming}>
          {streams.map((stream) => (
            <li
              key={`${stream.source}-${stream.id}`}
              className={styles.upcomingItem}
              data-testid={`upcoming-${stream.id}`}
              data-state={stream.state}
            >
              <time className={styles.upcomingTime} dateTime={stream.start}>
                {localTime(stream.start, language, timeZone)}
              </time>
              <span className={styles.upcomingName}>{stream.entity_name}</span>
              <a className={styles.upcomingTitle} href={stream.link} target="_blank" rel="noopener noreferrer">
                {stream.title}
              </a>
              <span className={styles.tags}>
                {stream.state === 'live' && <span className={styles.liveTag}>{t('live')}</span>}
                {stream.format === 'premiere' && <span className={styles.groupTag}>{t('premiere')}</span>}
                {stream.members_only && <span className={styles.groupTag}>{t('membersOnly')}</span>}
              </span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

interface CalendarProps {
  t: Translate;
  client: ApiClient;
  /** Whether the chat has a link (its secret is known only right after it is made). */
  active: boolean;
  onActive: (active: boolean) => void;
  onSessionInvalid: (err: ApiError) => void;
}

/** Make, remake or remove the calendar feed link; copy a freshly made one. */
export function CalendarLinkPanel({ t, client, active, onActive, onSessionInvalid }: CalendarProps) {
  const [link, setLink] = useState<CalendarLink | null>(null);
  const [busy, setBusy] = useState(false);
  const [note, setNote] = useState<{ kind: 'ok' | 'error'; text: string } | null>(null);

  const run = async (action: () => Promise<void>) => {
    setBusy(true);
    setNote(null);
    try {
      await action();
    } catch (err) {
      if (err instanceof ApiError && err.sessionInvalid) {
        onSessionInvalid(err);
        return;
      }
      setNote({ kind: 'error', text: t('calendarFailed', { message: err instanceof Error ? err.message : String(err) }) });
    } finally {
      setBusy(false);
    }
  };

  const url = link ? (link.url ?? client.absolute(link.path)) : null;

  const create = () =>
    run(async () => {
      const made = await client.createCalendarLink();
      setLink(made);
      onActive(true);
    });

  const revoke = () =>
    run(async () => {
      await client.revokeCalendarLink();
      setLink(null);
      onActive(false);
    });

  const copy = async () => {
    if (!url) return;
    try {
      await navigator.clipboard.writeText(url);
      setNote({ kind: 'ok', text: t('calendarCopied') });
    } catch {
      // No clipboard access (an insecure origin): select the text for a manual copy.
      const field = document.querySelector<HTMLInputElement>('[data-testid="calendar-url"]');
      field?.select();
    }
  };

  return (
    <section className={styles.panel} aria-labelledby="calendar-heading" data-testid="calendar">
      <h2 id="calendar-heading" className={styles.sectionTitle}>
        {t('calendar')}
      </h2>
      <p className={styles.help}>{t('calendarHelp')}</p>
      {url ? (
        <div className={styles.calendarUrl}>
          <input
            type="text"
            readOnly
            data-testid="calendar-url"
            aria-label={t('calendar')}
            value={url}
            onFocus={(e) => e.target.select()}
          />
          <button type="button" className={styles.secondary} data-testid="calendar-copy" onClick={() => void copy()}>
            {t('calendarCopy')}
          </button>
        </div>
      ) : (
        <p className={styles.help} data-testid="calendar-state" data-active={active}>
          {active ? t('calendarActive') : t('calendarNone')}
        </p>
      )}
      <div className={styles.saveButtons}>
        <button
          type="button"
          className={styles.primary}
          data-testid="calendar-create"
          disabled={busy}
          onClick={() => void create()}
        >
          {active ? t('calendarRotate') : t('calendarCreate')}
        </button>
        {active && (
          <button
            type="button"
            className={styles.secondary}
            data-testid="calendar-revoke"
            disabled={busy}
            onClick={() => void revoke()}
          >
            {t('calendarRevoke')}
          </button>
        )}
      </div>
      {note && (
        <p
          className={note.kind === 'ok' ? styles.ok : styles.error}
          role={note.kind === 'ok' ? 'status' : 'alert'}
          data-testid="calendar-note"
        >
          {note.text}
        </p>
      )}
    </section>
  );
}
