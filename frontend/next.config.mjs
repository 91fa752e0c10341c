// Next.js configuration: a static export (`out/`) that the api serves at `/`, or any
// static host. Build-time knobs, all optional:
//   NEXT_PUBLIC_API_BASE             where the api lives (default: the page's own origin);
//   NEXT_PUBLIC_ALLOWED_API_ORIGINS  other api origins `?api=` may name (comma-separated);
//   NEXT_BASE_PATH                   a sub-path the export is served under (default: none).
// The api base can also be changed after the build through `config.json` (`apiBase`,
// `allowedApiOrigins`) or an allowed `?api=` (see lib/config.ts).

const basePath = (process.env.NEXT_BASE_PATH ?? '').replace(/\/+$/, '');

/** @type {import('next').NextConfig} */
const nextConfig = {
  output: 'export',
  basePath,
  env: {
    // Inlined so that lib/config.ts finds `config.json` under the same sub-path.
    NEXT_PUBLIC_BASE_PATH: basePath,
  },
  reactStrictMode: true,
  poweredByHeader: false,
  images: { unoptimized: true },
  // Keep `next dev` from writing instruction files into the project.
  agentRules: false,
};

export default nextConfig;
