// The page shown without a usable session: the link expired, or there was none.

import type { Translate } from '@/lib/i18n';
import styles from './ui.module.css';

/** Tells the user to ask the bot for a new link. */
export function SessionProblem({ reason, t }: { reason: 'expired' | 'missing'; t: Translate }) {
  const title = reason === 'expired' ? t('expiredTitle') : t('noSessionTitle');
  const body = reason === 'expired' ? t('expiredBody') : t('noSessionBody');
  return (
    <main className={styles.centered}>
      <section className={styles.notice} data-testid="session-problem" data-reason={reason}>
        {reason === 'expired' ? <HourglassIcon /> : <LinkIcon />}
        <h1>{title}</h1>
        <p>{body}</p>
        <p className={styles.command}>
          <code>/settings</code>
        </p>
      </section>
    </main>
  );
}

function HourglassIcon() {
  return (
    <svg className={styles.noticeIcon} viewBox="0 0 24 24" fill="none" stroke="currentColor" strokeWidth="1.8"
      strokeLinecap="round" strokeLinejoin="round" aria-hidden="true">
      <path d="M6 2h12M6 22h12M7 2v4a5 5 0 0 0 10 0V2M7 22v-4a5 5 0 0 1 10 0v4" />
    </svg>
  );
}

function LinkIcon() {
  return (
    <svg className={styles.noticeIcon} viewBox="0 0 24 24" fill="none" stroke="currentColor" strokeWidth="1.8"
      strokeLinecap="round" strokeLinejoin="round" aria-hidden="true">
      <path d="M10 14a4 4 0 0 0 5.7 0l3-3a4 4 0 0 0-5.7-5.7l-1 1" />
      <path d="M14 10a4 4 0 0 0-5.7 0l-3 3a4 4 0 0 0 5.7 5.7l1-1" />
    </svg>
  );
}
