'use client';

// The whole page: resolves the api and the session, loads the user and the entity index,
// keeps the unsaved edits (settings and per-entity subscriptions) apart from the saved
// state, and saves only what changed.

import { useCallback, useEffect, useMemo, useState } from 'react';

import { ApiClient, ApiError } from '@/lib/api';
import { forgetSessionToken, resolveApiBase, takeSessionToken } from '@/lib/config';
import { LANGUAGES, nameIn, platformLabel, translator, type Translate } from '@/lib/i18n';
import { apiKinds, kindsFor, sameSub, savedSub, selectsNothing, type SubState } from '@/lib/kinds';
import type { IndexEntry, UpcomingStream, User, UserIndex } from '@/lib/types';
import { EntityCard } from './EntityCard';
import { CalendarLinkPanel, UpcomingList } from './Schedule';
import { SessionProblem } from './SessionProblem';
import styles from './ui.module.css';

/** The user's own settings as edited on the page; `timezone` `''` means UTC. */
interface SettingsDraft {
  language: string;
  timezone: string;
  paused: boolean;
  /** Sorted minutes; empty: the default lead. */
  reminder_leads: number[];
}

/** Reminder leads on offer, minutes (the api's `REMINDER_LEAD_CHOICES_MINUTES`). */
const LEAD_CHOICES = [5, 15, 30, 60];

function sameLeads(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((lead, i) => lead === b[i]);
}

type Phase =
  | { kind: 'loading' }
  | { kind: 'missing' }
  | { kind: 'expired' }
  | { kind: 'failed'; message: string }
  | { kind: 'ready' };

type Status = { kind: 'ok' | 'error'; text: string } | null;

/** Group filter value meaning "entities without a group". */
const NO_GROUP = '__none__';

function settingsOf(user: User): SettingsDraft {
  return {
    language: user.language,
    timezone: user.settings.timezone ?? '',
    paused: user.settings.paused,
    reminder_leads: [...(user.settings.reminder_leads ?? [])].sort((a, b) => a - b),
  };
}

function subsOf(index: UserIndex): Record<string, SubState> {
  return Object.fromEntries(index.entities.map((e) => [e.id, savedSub(e.subscribed)]));
}

function timeZones(current: string): string[] {
  let zones: string[] = [];
  try {
    zones = Intl.supportedValuesOf('timeZone');
  } catch {
    // An older browser: offer UTC and the current zone only.
  }
  if (current && !zones.includes(current)) zones = [current, ...zones];
  return zones.filter((zone) => zone !== 'UTC');
}

function browserLanguage(): string {
  return typeof navigator === 'undefined' ? 'en' : navigator.language;
}

/** The subscription page. */
export function SettingsApp() {
  const [phase, setPhase] = useState<Phase>({ kind: 'loading' });
  const [client, setClient] = useState<ApiClient | null>(null);
  const [user, setUser] = useState<User | null>(null);
  const [index, setIndex] = useState<UserIndex | null>(null);
  const [savedSettings, setSavedSettings] = useState<SettingsDraft | null>(null);
  const [draftSettings, setDraftSettings] = useState<SettingsDraft | null>(null);
  const [savedSubs, setSavedSubs] = useState<Record<string, SubState>>({});
  const [draftSubs, setDraftSubs] = useState<Record<string, SubState>>({});
  const [query, setQuery] = useState('');
  const [group, setGroup] = useState('');
  const [subscribedOnly, setSubscribedOnly] = useState(false);
  const [saving, setSaving] = useState(false);
  const [status, setStatus] = useState<Status>(null);
  const [uiLang, setUiLang] = useState('en');
  const [upcoming, setUpcoming] = useState<UpcomingStream[] | null>(null);
  const [upcomingError, setUpcomingError] = useState<string | null>(null);
  const [calendarActive, setCalendarActive] = useState(false);

  const t: Translate = useMemo(() => translator(uiLang), [uiLang]);

  const fail = useCallback((err: unknown) => {
    if (err instanceof ApiError && err.sessionInvalid) {
      forgetSessionToken();
      setPhase({ kind: 'expired' });
    } else {
      setPhase({ kind: 'failed', message: err instanceof Error ? err.message : String(err) });
    }
  }, []);

  /** Loads the user and the index and makes them the saved state. */
  const load = useCallback(async (api: ApiClient) => {
    // The Upcoming list is extra: its failure shows in its own section only.
    const streams = api.upcoming().then(
      (list) => ({ list, error: null }),
      (err: unknown) => {
        if (err instanceof ApiError && err.sessionInvalid) throw err;
        return { list: null, error: err instanceof Error ? err.message : String(err) };
      },
    );
    const [me, idx, next] = await Promise.all([api.me(), api.index(), streams]);
    setUpcoming(next.list);
    setUpcomingError(next.error);
    setCalendarActive(me.user.settings.calendar_link ?? false);
    const settings = settingsOf(me.user);
    setUser(me.user);
    setIndex(idx);
    setSavedSettings(settings);
    setDraftSettings(settings);
    const subs = subsOf(idx);
    setSavedSubs(subs);
    setDraftSubs(subs);
    setUiLang(me.user.language);
    return subs;
  }, []);

  const start = useCallback(async () => {
    setPhase({ kind: 'loading' });
    const token = takeSessionToken();
    if (!token) {
      setUiLang(browserLanguage());
      setPhase({ kind: 'missing' });
      return;
    }
    try {
      const api = new ApiClient(await resolveApiBase(), token);
      setClient(api);
      await load(api);
      setPhase({ kind: 'ready' });
    } catch (err) {
      setUiLang(browserLanguage());
      fail(err);
    }
  }, [fail, load]);

  useEffect(() => {
    void start();
  }, [start]);

  useEffect(() => {
    document.documentElement.lang = uiLang;
  }, [uiLang]);

  const changedEntities = useMemo(
    () =>
      (index?.entities ?? []).filter((e) => {
        const draft = draftSubs[e.id];
        const saved = savedSubs[e.id];
        return draft && saved && !sameSub(draft, saved);
      }),
    [index, draftSubs, savedSubs],
  );

  const settingsChange = useMemo(() => {
    if (!draftSettings || !savedSettings) return null;
    const change: Partial<SettingsDraft> = {};
    if (draftSettings.language !== savedSettings.language) change.language = draftSettings.language;
    if (draftSettings.timezone !== savedSettings.timezone) change.timezone = draftSettings.timezone;
    if (draftSettings.paused !== savedSettings.paused) change.paused = draftSettings.paused;
    if (!sameLeads(draftSettings.reminder_leads, savedSettings.reminder_leads)) {
      change.reminder_leads = draftSettings.reminder_leads;
    }
    return Object.keys(change).length > 0 ? change : null;
  }, [draftSettings, savedSettings]);

  const unsaved = changedEntities.length + (settingsChange ? 1 : 0);
  const blocked = changedEntities.some((e) => selectsNothing(draftSubs[e.id], kindsFor(e.platforms)));

  useEffect(() => {
    if (unsaved === 0) return;
    const warn = (event: BeforeUnloadEvent) => event.preventDefault();
    window.addEventListener('beforeunload', warn);
    return () => window.removeEventListener('beforeunload', warn);
  }, [unsaved]);

  const onSubChange = useCallback((id: string, state: SubState) => {
    setDraftSubs((subs) => ({ ...subs, [id]: state }));
    setStatus(null);
  }, []);

  const editSettings = (change: Partial<SettingsDraft>) => {
    setDraftSettings((draft) => (draft ? { ...draft, ...change } : draft));
    setStatus(null);
  };

  const discard = () => {
    setDraftSettings(savedSettings);
    setDraftSubs(savedSubs);
    setStatus(null);
  };

  const save = async () => {
    if (!client || !index || unsaved === 0 || blocked) return;
    setSaving(true);
    setStatus(null);
    const language = user?.language ?? 'en';
    const failures: { label: string; message: string }[] = [];
    const failedSubs: Record<string, SubState> = {};
    let failedSettings: SettingsDraft | null = null;
    try {
      if (settingsChange && draftSettings) {
        try {
          await client.updateSetting(settingsChange);
        } catch (err) {
          if (err instanceof ApiError && err.sessionInvalid) throw err;
          failures.push({ label: t('settings'), message: err instanceof Error ? err.message : String(err) });
          failedSettings = draftSettings;
        }
      }
      // One call per changed entity, in page order, so a failure names its entity.
      for (const entity of changedEntities) {
        const draft = draftSubs[entity.id];
        try {
          await client.updateSubscription(entity.id, draft.subscribed, apiKinds(draft));
        } catch (err) {
          if (err instanceof ApiError && err.sessionInvalid) throw err;
          failures.push({
            label: nameIn(entity.names, language, entity.default_language),
            message: err instanceof Error ? err.message : String(err),
          });
          failedSubs[entity.id] = draft;
        }
      }
      await load(client);
      // Keep what did not go through as unsaved edits, so the user can retry.
      if (failedSettings) setDraftSettings(failedSettings);
      if (Object.keys(failedSubs).length > 0) setDraftSubs((subs) => ({ ...subs, ...failedSubs }));
      setStatus(
        failures.length === 0
          ? { kind: 'ok', text: translator(draftSettings?.language ?? language)('saved') }
          : {
              kind: 'error',
              text: t('saveFailed', { details: failures.map((f) => `${f.label} (${f.message})`).join('; ') }),
            },
      );
    } catch (err) {
      if (err instanceof ApiError && err.sessionInvalid) {
        fail(err);
      } else {
        setStatus({
          kind: 'error',
          text: t('saveFailed', { details: err instanceof Error ? err.message : String(err) }),
        });
      }
    } finally {
      setSaving(false);
    }
  };

  if (phase.kind === 'missing' || phase.kind === 'expired') {
    return <SessionProblem reason={phase.kind} t={t} />;
  }
  if (phase.kind === 'loading' || (phase.kind === 'ready' && (!user || !index || !draftSettings))) {
    return (
      <main className={styles.centered}>
        <p className={styles.loading} role="status" data-testid="loading">
          {t('loading')}
        </p>
      </main>
    );
  }
  if (phase.kind === 'failed') {
    return (
      <main className={styles.centered}>
        <section className={styles.notice} data-testid="load-error">
          <h1>Stargazer</h1>
          <p>{t('loadFailed', { message: phase.message })}</p>
          <button type="button" className={styles.primary} onClick={() => void start()}>
            {t('retry')}
          </button>
        </section>
      </main>
    );
  }

  return (
    <Ready
      t={t}
      user={user!}
      index={index!}
      draftSettings={draftSettings!}
      draftSubs={draftSubs}
      savedSubs={savedSubs}
      query={query}
      group={group}
      subscribedOnly={subscribedOnly}
      saving={saving}
      status={status}
      unsaved={unsaved}
      blocked={blocked}
      onQuery={setQuery}
      onGroup={setGroup}
      onSubscribedOnly={setSubscribedOnly}
      onSettings={editSettings}
      onSubChange={onSubChange}
      onSave={() => void save()}
      onDiscard={discard}
      client={client!}
      upcoming={upcoming}
      upcomingError={upcomingError}
      calendarActive={calendarActive}
      onCalendarActive={setCalendarActive}
      onSessionInvalid={fail}
    />
  );
}

interface ReadyProps {
  t: Translate;
  user: User;
  index: UserIndex;
  draftSettings: SettingsDraft;
  draftSubs: Record<string, SubState>;
  savedSubs: Record<string, SubState>;
  query: string;
  group: string;
  subscribedOnly: boolean;
  saving: boolean;
  status: Status;
  unsaved: number;
  blocked: boolean;
  onQuery: (value: string) => void;
  onGroup: (value: string) => void;
  onSubscribedOnly: (value: boolean) => void;
  onSettings: (change: Partial<SettingsDraft>) => void;
  onSubChange: (id: string, state: SubState) => void;
  onSave: () => void;
  onDiscard: () => void;
  client: ApiClient;
  upcoming: UpcomingStream[] | null;
  upcomingError: string | null;
  calendarActive: boolean;
  onCalendarActive: (active: boolean) => void;
  onSessionInvalid: (err: unknown) => void;
}

function Ready(props: ReadyProps) {
  const { t, user, index, draftSettings, draftSubs, savedSubs, query, group, subscribedOnly, saving } = props;
  // Names follow the saved language, like the rest of the page.
  const language = user.language;
  const groupNames = useMemo(
    () => new Map(index.groups.map((g) => [g.id, nameIn(g.names, language, 'en')])),
    [index.groups, language],
  );
  const hasUngrouped = index.entities.some((e) => !e.group);
  const zones = useMemo(() => timeZones(draftSettings.timezone), [draftSettings.timezone]);
  const languages = LANGUAGES.some((l) => l.code === draftSettings.language)
    ? LANGUAGES
    : [...LANGUAGES, { code: draftSettings.language, label: draftSettings.language }];

  const visible = useMemo(() => {
    const needle = query.trim().toLowerCase();
    const matches = (e: IndexEntry) =>
      !needle ||
      e.search.some((s) => s.includes(needle)) ||
      Object.values(e.names).some((n) => n.toLowerCase().includes(needle));
    return index.entities
      .filter((e) => (group === '' ? true : group === NO_GROUP ? !e.group : e.group === group))
      .filter((e) => !subscribedOnly || draftSubs[e.id]?.subscribed || savedSubs[e.id]?.subscribed)
      .filter(matches)
      .sort((a, b) =>
        nameIn(a.names, language, a.default_language).localeCompare(nameIn(b.names, language, b.default_language)),
      );
  }, [index.entities, query, group, subscribedOnly, draftSubs, savedSubs, language]);

  return (
    <div className={styles.page}>
      <header className={styles.header}>
        <div className={styles.brand}>
          <span className={styles.logo} aria-hidden="true">
            ★
          </span>
          <div>
            <h1 className={styles.title}>Stargazer</h1>
            <p className={styles.subtitle}>{t('subtitle')}</p>
          </div>
        </div>
      </header>

      <main className={styles.main}>
        <div className={styles.side}>
          <section className={styles.panel} aria-labelledby="chat-heading">
            <div className={styles.chat}>
              <span className={styles.chatLabel} id="chat-heading">
                {t('chat')}
              </span>
              <strong className={styles.chatName} data-testid="chat-name">
                {user.name || user.im_chat_id}
              </strong>
              <span className={styles.chatMeta}>
                <span className={styles.imTag} data-testid="chat-im">
                  {platformLabel(user.im)}
                </span>
                <span>
                  {t('chatId')}: <code>{user.im_chat_id}</code>
                </span>
              </span>
            </div>
            <div className={styles.settings}>
              <label className={styles.field}>
                <span className={styles.fieldLabel}>{t('language')}</span>
                <select
                  data-testid="language"
                  value={draftSettings.language}
                  disabled={saving}
                  onChange={(e) => props.onSettings({ language: e.target.value })}
                >
                  {languages.map((l) => (
                    <option key={l.code} value={l.code}>
                      {l.label}
                    </option>
                  ))}
                </select>
                <span className={styles.help}>{t('languageHelp')}</span>
              </label>
              <label className={styles.field}>
                <span className={styles.fieldLabel}>{t('timezone')}</span>
                <select
                  data-testid="timezone"
                  value={draftSettings.timezone}
                  disabled={saving}
                  onChange={(e) => props.onSettings({ timezone: e.target.value })}
                >
                  <option value="">{t('utcDefault')}</option>
                  {zones.map((zone) => (
                    <option key={zone} value={zone}>
                      {zone.replaceAll('_', ' ')}
                    </option>
                  ))}
                </select>
              </label>
              <label className={styles.check}>
                <input
                  type="checkbox"
                  data-testid="paused"
                  checked={draftSettings.paused}
                  disabled={saving}
                  onChange={(e) => props.onSettings({ paused: e.target.checked })}
                />
                <span>{t('paused')}</span>
              </label>
              <fieldset className={styles.leads} disabled={saving} data-testid="reminder-leads">
                <legend className={styles.fieldLabel}>{t('reminderLeads')}</legend>
                <div className={styles.leadChoices}>
                  {LEAD_CHOICES.map((lead) => (
                    <label key={lead} className={styles.check}>
                      <input
                        type="checkbox"
                        data-testid={`lead-${lead}`}
                        checked={draftSettings.reminder_leads.includes(lead)}
                        onChange={(e) => {
                          const others = draftSettings.reminder_leads.filter((l) => l !== lead);
                          const next = e.target.checked ? [...others, lead] : others;
                          props.onSettings({ reminder_leads: next.sort((a, b) => a - b) });
                        }}
                      />
                      <span>{t('leadMinutes', { n: lead })}</span>
                    </label>
                  ))}
                </div>
                <span className={styles.help}>{t('reminderLeadsHelp')}</span>
              </fieldset>
            </div>
          </section>

          <UpcomingList
            t={t}
            streams={props.upcoming}
            error={props.upcomingError}
            language={language}
            timeZone={user.settings.timezone}
          />
          <CalendarLinkPanel
            t={t}
            client={props.client}
            active={props.calendarActive}
            onActive={props.onCalendarActive}
            onSessionInvalid={props.onSessionInvalid}
          />
        </div>

        <section aria-labelledby="entities-heading">
          <div className={styles.listHead}>
            <h2 id="entities-heading" className={styles.sectionTitle}>
              {t('entities')}
            </h2>
            <span className={styles.count} data-testid="showing">
              {t('showing', { shown: visible.length, total: index.entities.length })}
            </span>
          </div>
          <div className={styles.filters}>
            <input
              type="search"
              className={styles.search}
              data-testid="search"
              placeholder={t('search')}
              aria-label={t('search')}
              value={query}
              onChange={(e) => props.onQuery(e.target.value)}
            />
            <select
              data-testid="group-filter"
              aria-label={t('group')}
              value={group}
              onChange={(e) => props.onGroup(e.target.value)}
            >
              <option value="">{t('allGroups')}</option>
              {index.groups.map((g) => (
                <option key={g.id} value={g.id}>
                  {groupNames.get(g.id)}
                </option>
              ))}
              {hasUngrouped && <option value={NO_GROUP}>{t('noGroup')}</option>}
            </select>
            <label className={styles.check}>
              <input
                type="checkbox"
                data-testid="subscribed-only"
                checked={subscribedOnly}
                onChange={(e) => props.onSubscribedOnly(e.target.checked)}
              />
              <span>{t('subscribedOnly')}</span>
            </label>
          </div>
          {visible.length === 0 ? (
            <p className={styles.empty}>{t('noMatch')}</p>
          ) : (
            <ul className={styles.cards}>
              {visible.map((entity) => (
                <EntityCard
                  key={entity.id}
                  entity={entity}
                  groupName={entity.group ? (groupNames.get(entity.group) ?? null) : null}
                  language={language}
                  state={draftSubs[entity.id]}
                  changed={!sameSub(draftSubs[entity.id], savedSubs[entity.id])}
                  disabled={saving}
                  t={t}
                  onChange={props.onSubChange}
                />
              ))}
            </ul>
          )}
        </section>
      </main>

      <footer className={styles.saveBar} data-unsaved={props.unsaved}>
        <div className={styles.saveInner}>
          <div className={styles.saveText}>
            {props.status ? (
              <p
                className={props.status.kind === 'ok' ? styles.ok : styles.error}
                role={props.status.kind === 'ok' ? 'status' : 'alert'}
                data-testid="status"
                data-kind={props.status.kind}
              >
                {props.status.text}
              </p>
            ) : (
              <p className={styles.pending} data-testid="unsaved-count">
                {props.unsaved > 0 ? t('unsaved', { n: props.unsaved }) : t('noChanges')}
              </p>
            )}
          </div>
          <div className={styles.saveButtons}>
            <button
              type="button"
              className={styles.secondary}
              data-testid="discard"
              disabled={saving || props.unsaved === 0}
              onClick={props.onDiscard}
            >
              {t('discard')}
            </button>
            <button
              type="button"
              className={styles.primary}
              data-testid="save"
              disabled={saving || props.unsaved === 0 || props.blocked}
              onClick={props.onSave}
            >
              {saving ? t('saving') : t('save')}
            </button>
          </div>
        </div>
      </footer>
    </div>
  );
}
