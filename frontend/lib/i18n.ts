// Page texts in the languages the bot writes in (English, Japanese, Chinese), the
// language choices, and picking a name in the reader's language.

/** Languages offered in the language picker: code and native name. */
export const LANGUAGES: { code: string; label: string }[] = [
  { code: 'en', label: 'English' },
  { code: 'ja', label: '日本語' },
  { code: 'zh', label: '中文' },
];

const en = {
  subtitle: 'Notification settings',
  loading: 'Loading…',
  settings: 'Settings',
  chat: 'Chat',
  chatId: 'Chat id',
  language: 'Language',
  languageHelp: "Used for the bot's messages and for names on this page.",
  timezone: 'Time zone',
  utcDefault: 'UTC (default)',
  paused: 'Pause all notifications',
  entities: 'Streamers',
  search: 'Search by name or account',
  group: 'Group',
  allGroups: 'All groups',
  noGroup: 'No group',
  subscribedOnly: 'Subscribed only',
  showing: '{shown} of {total}',
  noMatch: 'Nothing matches your search.',
  subscribe: 'Subscribe',
  subscribed: 'Subscribed',
  kindsLegend: 'Notify me about',
  pickOne: 'Pick at least one kind, or unsubscribe.',
  unsaved: '{n} unsaved change(s)',
  noChanges: 'No unsaved changes',
  save: 'Save',
  saving: 'Saving…',
  discard: 'Discard',
  saved: 'Saved. The bot uses your new settings right away.',
  saveFailed: 'Some changes were not saved: {details}',
  loadFailed: 'Could not load your settings: {message}',
  retry: 'Retry',
  expiredTitle: 'This link has expired',
  expiredBody: 'Links from the bot work for a limited time. Send /settings to the bot again to get a new one.',
  noSessionTitle: 'Open this page from the bot',
  noSessionBody: 'Send /settings to the bot; it answers with a personal link to this page.',
  'youtube.video': 'New videos',
  'youtube.scheduled': 'Scheduled streams',
  'youtube.live': 'Stream started',
  'twitter.tweet': 'Posts',
  'twitter.retweet': 'Reposts',
  reminderLeads: 'Remind me before a stream',
  reminderLeadsHelp: 'None picked: 30 minutes before. Needs “Reminders before a stream” on the streamer.',
  leadMinutes: '{n} min',
  upcoming: 'Upcoming streams',
  upcomingEmpty: 'Nothing scheduled by the streamers you follow.',
  upcomingFailed: 'Could not load the upcoming streams: {message}',
  live: 'Live',
  premiere: 'Premiere',
  membersOnly: 'Members only',
  calendar: 'Calendar feed',
  calendarHelp: 'Add this link to your calendar app to see these streams there. Anyone with the link can see them: keep it to yourself.',
  calendarNone: 'No calendar link yet.',
  calendarActive: 'A calendar link exists. It is shown only when made: make a new one if you lost it.',
  calendarCreate: 'Create calendar link',
  calendarRotate: 'New link (the old one stops working)',
  calendarRevoke: 'Remove link',
  calendarCopy: 'Copy',
  calendarCopied: 'Copied.',
  calendarFailed: 'Calendar link: {message}',
  'youtube.short': 'New Shorts',
  'youtube.premiere': 'Premieres',
  'youtube.rescheduled': 'Schedule changes',
  'youtube.ended': 'Stream ended',
  'youtube.cancelled': 'Stream cancelled',
  'youtube.members': 'Members-only streams and videos',
  'youtube.reminder': 'Reminders before a stream',
  'twitch.live': 'Stream started',
  'twitch.ended': 'Stream ended',
  'twitch.rerun': 'Reruns and other replays',
  'bilibili.live': 'Stream started',
  'bilibili.ended': 'Stream ended',
  'bilibili.dynamic': 'Posts and reposts',
  'bilibili.video': 'New videos',
};

/** The keys of every page text. */
export type TextKey = keyof typeof en;

const ja: Record<TextKey, string> = {
  subtitle: '通知設定',
  loading: '読み込み中…',
  settings: '設定',
  chat: 'チャット',
  chatId: 'チャットID',
  language: '言語',
  languageHelp: 'ボットのメッセージとこのページの名前の表示に使われます。',
  timezone: 'タイムゾーン',
  utcDefault: 'UTC（既定）',
  paused: 'すべての通知を一時停止',
  entities: '配信者',
  search: '名前またはアカウントで検索',
  group: 'グループ',
  allGroups: 'すべてのグループ',
  noGroup: 'グループなし',
  subscribedOnly: '登録中のみ',
  showing: '{total}件中{shown}件',
  noMatch: '該当する配信者はいません。',
  subscribe: '通知を受け取る',
  subscribed: '登録中',
  kindsLegend: '通知する内容',
  pickOne: '少なくとも1つ選ぶか、登録を解除してください。',
  unsaved: '未保存の変更：{n}件',
  noChanges: '未保存の変更はありません',
  save: '保存',
  saving: '保存中…',
  discard: '元に戻す',
  saved: '保存しました。ボットにすぐ反映されます。',
  saveFailed: '一部の変更を保存できませんでした：{details}',
  loadFailed: '設定を読み込めませんでした：{message}',
  retry: '再試行',
  expiredTitle: 'このリンクの有効期限が切れました',
  expiredBody: 'ボットのリンクは一定時間だけ有効です。ボットに /settings を送って新しいリンクを受け取ってください。',
  noSessionTitle: 'ボットからこのページを開いてください',
  noSessionBody: 'ボットに /settings を送ると、このページへの専用リンクが届きます。',
  'youtube.video': '新しい動画',
  'youtube.scheduled': '配信の予定',
  'youtube.live': '配信開始',
  'twitter.tweet': 'ポスト',
  'twitter.retweet': 'リポスト',
  reminderLeads: '配信前のリマインダー',
  reminderLeadsHelp: '未選択の場合は30分前。配信者の「配信前のリマインダー」が必要です。',
  leadMinutes: '{n}分前',
  upcoming: '今後の配信',
  upcomingEmpty: '登録中の配信者の配信予定はありません。',
  upcomingFailed: '今後の配信を読み込めませんでした：{message}',
  live: 'ライブ中',
  premiere: 'プレミア公開',
  membersOnly: 'メンバー限定',
  calendar: 'カレンダー',
  calendarHelp: 'このリンクをカレンダーアプリに追加すると、配信予定がカレンダーに表示されます。リンクを知っている人は誰でも見られるので、他の人に教えないでください。',
  calendarNone: 'カレンダーのリンクはまだありません。',
  calendarActive: 'カレンダーのリンクがあります。リンクは作成時にだけ表示されます。分からなくなったら新しく作成してください。',
  calendarCreate: 'カレンダーのリンクを作成',
  calendarRotate: '新しいリンク（古いリンクは無効になります）',
  calendarRevoke: 'リンクを削除',
  calendarCopy: 'コピー',
  calendarCopied: 'コピーしました。',
  calendarFailed: 'カレンダーのリンク：{message}',
  'youtube.short': '新しいショート',
  'youtube.premiere': 'プレミア公開',
  'youtube.rescheduled': '配信予定の変更',
  'youtube.ended': '配信終了',
  'youtube.cancelled': '配信の中止',
  'youtube.members': 'メンバー限定の配信・動画',
  'youtube.reminder': '配信前のリマインダー',
  'twitch.live': '配信開始',
  'twitch.ended': '配信終了',
  'twitch.rerun': '再放送など',
  'bilibili.live': '配信開始',
  'bilibili.ended': '配信終了',
  'bilibili.dynamic': '投稿・リポスト',
  'bilibili.video': '新しい動画',
};

const zh: Record<TextKey, string> = {
  subtitle: '通知设置',
  loading: '加载中…',
  settings: '设置',
  chat: '聊天',
  chatId: '聊天 ID',
  language: '语言',
  languageHelp: '用于机器人的消息和本页显示的名称。',
  timezone: '时区',
  utcDefault: 'UTC（默认）',
  paused: '暂停所有通知',
  entities: '主播',
  search: '按名称或账号搜索',
  group: '分组',
  allGroups: '全部分组',
  noGroup: '未分组',
  subscribedOnly: '仅显示已订阅',
  showing: '{shown} / {total}',
  noMatch: '没有符合条件的主播。',
  subscribe: '订阅',
  subscribed: '已订阅',
  kindsLegend: '通知内容',
  pickOne: '请至少选择一项，或取消订阅。',
  unsaved: '{n} 项未保存的更改',
  noChanges: '没有未保存的更改',
  save: '保存',
  saving: '保存中…',
  discard: '放弃更改',
  saved: '已保存，机器人会立即使用新设置。',
  saveFailed: '部分更改未能保存：{details}',
  loadFailed: '无法加载设置：{message}',
  retry: '重试',
  expiredTitle: '此链接已过期',
  expiredBody: '机器人发出的链接只在一段时间内有效。请向机器人发送 /settings 获取新链接。',
  noSessionTitle: '请从机器人打开此页面',
  noSessionBody: '向机器人发送 /settings，它会回复一个打开此页面的专属链接。',
  'youtube.video': '新视频',
  'youtube.scheduled': '直播预告',
  'youtube.live': '开始直播',
  'twitter.tweet': '帖子',
  'twitter.retweet': '转帖',
  reminderLeads: '开播前提醒',
  reminderLeadsHelp: '未选择时为开播前 30 分钟。需要在主播处勾选“开播前提醒”。',
  leadMinutes: '{n} 分钟',
  upcoming: '即将开始的直播',
  upcomingEmpty: '你关注的主播暂无直播预告。',
  upcomingFailed: '无法加载即将开始的直播：{message}',
  live: '直播中',
  premiere: '首映',
  membersOnly: '会员限定',
  calendar: '日历订阅',
  calendarHelp: '将此链接添加到日历应用，即可在日历中看到这些直播。任何拿到链接的人都能看到，请勿分享。',
  calendarNone: '还没有日历链接。',
  calendarActive: '日历链接已存在。链接只在创建时显示；如已遗失，请重新创建。',
  calendarCreate: '创建日历链接',
  calendarRotate: '新链接（旧链接将失效）',
  calendarRevoke: '删除链接',
  calendarCopy: '复制',
  calendarCopied: '已复制。',
  calendarFailed: '日历链接：{message}',
  'youtube.short': '新短视频',
  'youtube.premiere': '首映',
  'youtube.rescheduled': '直播时间变更',
  'youtube.ended': '直播结束',
  'youtube.cancelled': '直播取消',
  'youtube.members': '会员限定直播和视频',
  'youtube.reminder': '开播前提醒',
  'twitch.live': '开始直播',
  'twitch.ended': '直播结束',
  'twitch.rerun': '重播等',
  'bilibili.live': '开始直播',
  'bilibili.ended': '直播结束',
  'bilibili.dynamic': '动态和转发',
  'bilibili.video': '新视频',
};

const TEXTS: Record<string, Record<TextKey, string>> = { en, ja, zh };

/** A text lookup for one language, with `{name}` placeholders filled from `vars`. */
export type Translate = (key: TextKey | string, vars?: Record<string, string | number>) => string;

/** The page language for a user language code (`zh-Hant` → `zh`, unknown → `en`). */
export function uiLanguage(code: string | undefined | null): string {
  const base = (code ?? '').toLowerCase().split(/[-_]/)[0];
  return base in TEXTS ? base : 'en';
}

/** The text lookup for `code`; unknown keys (a kind added later) show as themselves. */
export function translator(code: string | undefined | null): Translate {
  const texts = TEXTS[uiLanguage(code)];
  return (key, vars) => {
    let text: string = (texts as Record<string, string>)[key] ?? (en as Record<string, string>)[key] ?? key;
    for (const [name, value] of Object.entries(vars ?? {})) {
      text = text.replaceAll(`{${name}}`, String(value));
    }
    return text;
  };
}

/** A name in `language`, else in its base language, else in `fallback`, else any. */
export function nameIn(names: Record<string, string>, language: string, fallback?: string): string {
  const base = language.split(/[-_]/)[0];
  return (
    names[language] ??
    names[base] ??
    (fallback !== undefined ? names[fallback] : undefined) ??
    Object.values(names)[0] ??
    ''
  );
}

/** Display names of IM platforms and watched platforms. */
export function platformLabel(platform: string): string {
  switch (platform) {
    case 'telegram':
      return 'Telegram';
    case 'discord':
      return 'Discord';
    case 'qq':
      return 'QQ';
    case 'youtube':
      return 'YouTube';
    case 'twitter':
      return 'X';
    case 'twitch':
      return 'Twitch';
    case 'bilibili':
      return 'Bilibili';
    default:
      return platform;
  }
}
