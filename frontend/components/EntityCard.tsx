// One streamer: name, group, platforms, the subscribe switch and the kinds filter.

import { memo } from 'react';

import type { Translate } from '@/lib/i18n';
import { nameIn, platformLabel } from '@/lib/i18n';
import { kindsFor, selectsNothing, sortPlatforms, toggleKind, wants, type SubState } from '@/lib/kinds';
import type { IndexEntry } from '@/lib/types';
import styles from './ui.module.css';

interface Props {
  entity: IndexEntry;
  groupName: string | null;
  language: string;
  state: SubState;
  changed: boolean;
  disabled: boolean;
  t: Translate;
  onChange: (id: string, state: SubState) => void;
}

function EntityCardImpl({ entity, groupName, language, state, changed, disabled, t, onChange }: Props) {
  const name = nameIn(entity.names, language, entity.default_language);
  const original = nameIn(entity.names, entity.default_language);
  const available = kindsFor(entity.platforms);
  const empty = selectsNothing(state, available);
  const switchId = `subscribe-${entity.id}`;
  const className = [styles.card, state.subscribed ? styles.cardOn : '', changed ? styles.cardChanged : '']
    .filter(Boolean)
    .join(' ');

  return (
    <li className={className} data-testid={`entity-${entity.id}`} data-subscribed={state.subscribed}>
      <div className={styles.cardHead}>
        <div className={styles.cardTitle}>
          <h3 className={styles.entityName} lang={entity.names[language] ? language : entity.default_language}>
            {name}
          </h3>
          {original !== name && (
            <span className={styles.entityAlt} lang={entity.default_language}>
              {original}
            </span>
          )}
        </div>
        <label className={styles.switch} htmlFor={switchId}>
          <input
            id={switchId}
            type="checkbox"
            role="switch"
            data-testid={switchId}
            checked={state.subscribed}
            disabled={disabled}
            aria-label={`${t('subscribe')}: ${name}`}
            onChange={(e) => onChange(entity.id, { ...state, subscribed: e.target.checked })}
          />
          <span className={styles.switchTrack} aria-hidden="true" />
          <span className={styles.switchText} aria-hidden="true">
            {state.subscribed ? t('subscribed') : t('subscribe')}
          </span>
        </label>
      </div>
      <div className={styles.tags}>
        {sortPlatforms(entity.platforms).map((platform) => (
          <span key={platform} className={`${styles.platformTag} ${styles[`platform_${platform}`] ?? ''}`}>
            {platformLabel(platform)}
          </span>
        ))}
        {groupName && <span className={styles.groupTag}>{groupName}</span>}
      </div>
      {state.subscribed && available.length > 0 && (
        <fieldset className={styles.kinds} disabled={disabled}>
          <legend className={styles.kindsLegend}>{t('kindsLegend')}</legend>
          {available.map((kind) => (
            <label key={kind} className={styles.kind}>
              <input
                type="checkbox"
                data-testid={`kind-${entity.id}-${kind}`}
                checked={wants(state, kind)}
                onChange={(e) => onChange(entity.id, toggleKind(state, available, kind, e.target.checked))}
              />
              <span>{t(kind)}</span>
            </label>
          ))}
          {empty && (
            <p className={styles.warning} role="alert">
              {t('pickOne')}
            </p>
          )}
        </fieldset>
      )}
    </li>
  );
}

/** One streamer's card; re-renders only when its own props change. */
export const EntityCard = memo(EntityCardImpl);
