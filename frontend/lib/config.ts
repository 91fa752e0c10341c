// Where the api lives and which session this page acts for, both read in the browser.
//
// Api base, first match wins:
//   1. `?api=https://api.example.org` on the page URL (for trying a build against
//      another api; http(s) only);
//   2. `apiBase` in `config.json` next to `index.html` (edit after the build);
//   3. NEXT_PUBLIC_API_BASE at build time;
//   4. the page's own origin (the api serving the export itself).
//
// Session token: `?session=<token>` (the bot's /settings link) or `#session=<token>`.
// It is moved into sessionStorage and removed from the address bar at once, so it does
// not linger in history or in a copied URL; a reload reads it back from sessionStorage.

const TOKEN_KEY = 'stargazer.session';
const BUILD_API_BASE = process.env.NEXT_PUBLIC_API_BASE ?? '';
const BASE_PATH = process.env.NEXT_PUBLIC_BASE_PATH ?? '';

function httpUrl(value: string | null | undefined): string | null {
  if (!value) return null;
  try {
    const url = new URL(value, window.location.href);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
    return url.href.replace(/\/+$/, '');
  } catch {
    return null;
  }
}

/** Resolves the api base URL (`''` means the page's origin). */
export async function resolveApiBase(): Promise<string> {
  const fromQuery = httpUrl(new URLSearchParams(window.location.search).get('api'));
  if (fromQuery) return fromQuery;
  try {
    const response = await fetch(`${BASE_PATH}/config.json`, { cache: 'no-store', credentials: 'omit' });
    if (response.ok) {
      const config: unknown = await response.json();
      if (typeof config === 'object' && config !== null && 'apiBase' in config) {
        const fromFile = httpUrl(String((config as { apiBase: unknown }).apiBase ?? ''));
        if (fromFile) return fromFile;
      }
    }
  } catch {
    // No or broken config.json: the build-time default applies.
  }
  return httpUrl(BUILD_API_BASE) ?? '';
}

/** Takes the session token from the URL (then strips it) or from this tab's storage. */
export function takeSessionToken(): string | null {
  const url = new URL(window.location.href);
  const hash = new URLSearchParams(url.hash.replace(/^#/, ''));
  const fromUrl = url.searchParams.get('session') ?? hash.get('session');
  if (fromUrl !== null) {
    url.searchParams.delete('session');
    hash.delete('session');
    const rest = hash.toString();
    url.hash = rest ? `#${rest}` : '';
    window.history.replaceState(window.history.state, '', url.href);
    const token = fromUrl.trim();
    if (token) {
      try {
        window.sessionStorage.setItem(TOKEN_KEY, token);
      } catch {
        // Storage disabled: the page still works until it is reloaded.
      }
      return token;
    }
    return null;
  }
  try {
    return window.sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

/** Forgets the stored token (after the api rejected it). */
export function forgetSessionToken(): void {
  try {
    window.sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Nothing stored.
  }
}
