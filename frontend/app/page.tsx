// The only route: the subscription page, rendered in the browser (it needs the session
// from the URL and talks to the api from there).

import { SettingsApp } from '@/components/SettingsApp';

export default function Page() {
  return <SettingsApp />;
}
