// Where the api lives and which session this page acts for, both read in the browser.
//
// Api base, first match wins:
//   1. `?api=https://api.example.org` on the page URL (for trying a build against
//      another api; http(s) only), honoured only when its origin is allowed (below);
//   2. `apiBase` in `config.json` next to `index.html` (edit after the build);
//   3. NEXT_PUBLIC_API_BASE at build time;
//   4. the page's own origin (the api serving the export itself).
//
// The page sends the session bearer to the api base, so `?api=` — which anyone can put
// in a link — may only name an origin the operator trusts: the page's own origin, the
// origin of `apiBase` (config.json) or of NEXT_PUBLIC_API_BASE, or one listed in
// `allowedApiOrigins` (config.json, a list) or NEXT_PUBLIC_ALLOWED_API_ORIGINS (build
// time, comma-separated). Any other `?api=` is ignored and the configured base is used.
//
// Session token: `#token=<token>` (the bot's /settings link). It travels in the URL
// fragment, which the browser never sends to a server; it is moved into sessionStorage
// and removed from the address bar at once, so it does not linger in history or in a
// copied URL; a reload reads it back from sessionStorage. A token in the query string
// (`?session=`) is not accepted, only removed from the address bar.

const TOKEN_KEY = 'stargazer.session';
const BUILD_API_BASE = process.env.NEXT_PUBLIC_API_BASE ?? '';
const BUILD_ALLOWED_ORIGINS = process.env.NEXT_PUBLIC_ALLOWED_API_ORIGINS ?? '';
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

function originOf(value: string | null | undefined): string | null {
  const url = httpUrl(value);
  return url ? new URL(url).origin : null;
}

/** What `config.json` next to `index.html` says (nothing when absent or broken). */
async function loadRuntimeConfig(): Promise<{ apiBase: string | null; allowedOrigins: string[] }> {
  try {
    const response = await fetch(`${BASE_PATH}/config.json`, { cache: 'no-store', credentials: 'omit' });
    if (response.ok) {
      const config: unknown = await response.json();
      if (typeof config === 'object' && config !== null) {
        const fields = config as { apiBase?: unknown; allowedApiOrigins?: unknown };
        const allowed = Array.isArray(fields.allowedApiOrigins) ? fields.allowedApiOrigins : [];
        return {
          apiBase: httpUrl(typeof fields.apiBase === 'string' ? fields.apiBase : null),
          allowedOrigins: allowed.filter((o): o is string => typeof o === 'string'),
        };
      }
    }
  } catch {
    // No or broken config.json: the build-time settings apply.
  }
  return { apiBase: null, allowedOrigins: [] };
}

/** Resolves the api base URL (`''` means the page's origin). */
export async function resolveApiBase(): Promise<string> {
  const runtime = await loadRuntimeConfig();
  const configured = runtime.apiBase ?? httpUrl(BUILD_API_BASE) ?? '';
  const requested = httpUrl(new URLSearchParams(window.location.search).get('api'));
  if (requested) {
    const allowed = new Set(
      [
        window.location.origin,
        originOf(runtime.apiBase),
        originOf(BUILD_API_BASE),
        ...runtime.allowedOrigins.map(originOf),
        ...BUILD_ALLOWED_ORIGINS.split(',').map((o) => originOf(o.trim())),
      ].filter((o): o is string => o !== null),
    );
    if (allowed.has(new URL(requested).origin)) return requested;
    console.warn(`ignoring ?api=${requested}: its origin is not allowed (see allowedApiOrigins)`);
  }
  return configured;
}

/** Takes the session token from the URL fragment (then strips it) or from this tab's storage. */
export function takeSessionToken(): string | null {
  const url = new URL(window.location.href);
  const hash = new URLSearchParams(url.hash.replace(/^#/, ''));
  const fromUrl = hash.get('token');
  if (fromUrl !== null || url.searchParams.has('session')) {
    // A token in the query was already sent to the server: not used, only removed.
    url.searchParams.delete('session');
    hash.delete('token');
    const rest = hash.toString();
    url.hash = rest ? `#${rest}` : '';
    window.history.replaceState(window.history.state, '', url.href);
  }
  const token = fromUrl?.trim();
  if (token) {
    try {
      window.sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      // Storage disabled: the page still works until it is reloaded.
    }
    return token;
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
