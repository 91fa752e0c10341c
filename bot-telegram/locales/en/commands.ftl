## The bot's replies to commands and keyboard presses, its refusals and errors, and the
## command menu. Messages marked HTML are sent as Telegram HTML: the code escapes their
## arguments; their own text must stay valid HTML. The others are plain text.

# The language's own name, as /lang lists it.
language-name = English

## The command menu (setMyCommands) and /help: one description per command.

help-intro = Stargazer tells you when your favourite streamers go live, post or upload. Commands:
command-start = Register this chat (safe to repeat).
command-help = Show this help.
command-subscribe = Subscribe to a streamer: /subscribe <name or id>
command-unsubscribe = Unsubscribe: /unsubscribe [name]
command-list = List your subscriptions.
command-settings = Get a link to edit your settings on the web.
command-lang = Set the language of replies and notifications: /lang <code>, e.g. /lang ja
command-delete = Delete this chat's registration and subscriptions.
command-reminders = Choose how long before a stream you are reminded.

## Messages that are not commands, and commands the bot does not know.

only-commands = I answer commands only. Send /help to see them.
# The command list follows on its own lines.
unknown-command = Unknown command { $command }.
# $reason: the parser's explanation (English).
unreadable-command = I could not read that command ({ $reason }).

## Refusals and errors.

admin-only = Only this group's administrators can change its subscriptions and settings.
error-unavailable = Stargazer is temporarily unavailable. Please try again in a minute.
error-not-found = That did not work: it does not exist (any more).
error-conflict = That did not work: it already exists.
# $reason: the api's explanation (English).
error-refused = That did not work: { $reason }

## /start

start-resumed = Welcome back! Notifications to this chat are on again. /list shows your subscriptions.
start-again = Welcome back! This chat is already registered (language: { $language }).
    Use /subscribe <name> to follow a streamer, /list to see your subscriptions, /help for more.
start-new = Welcome to Stargazer! This chat is registered (language: { $language }).
    Use /subscribe <name> to follow a streamer, /lang <code> to change the language, /help for more.

## /settings

# What the settings link edits ($target of settings-link).
settings-target-own = your subscriptions and settings
settings-target-group = the subscriptions and settings of { $name }
settings-target-group-unnamed = the group's subscriptions and settings
# HTML. $minutes: how long the link works.
settings-link = Edit { $target } here:
    <a href="{ $href }">{ $href }</a>

    { $minutes ->
        [one] The link works for one minute; send /settings again for a new one. Do not share it.
       *[other] The link works for { $minutes } minutes; send /settings again for a new one. Do not share it.
    }
settings-button = Open settings
settings-private-only = The settings link is only sent in a private chat. As an admin of this group, open { $link } from your own account and press Start: I will send it there.
settings-sent-privately = { $admin }, I sent you the settings link in a private message.
settings-start-private = { $admin }, I can only send the settings link in a private chat, and you have not started one with me yet. Open { $link } and press Start: I will send it there.
settings-group-unregistered = That group is not registered. Send /start in the group first.

## /lang ($languages: "en (English), ja (日本語), …")

lang-current = This chat is in `{ $language }`. I speak { $languages }: send /lang and a code to change it, e.g. /lang ja.
lang-unknown = I do not speak “{ $code }”. I speak { $languages }: send /lang and a code, e.g. /lang ja.
lang-set = Done: replies and notifications here are now in `{ $language }`.

## /delete

delete-nothing = This chat is not registered, so there is nothing to delete.
delete-ask = Delete this chat's registration and all its subscriptions? This cannot be undone.
delete-yes = Yes, delete everything
delete-done = Deleted: this chat's registration and subscriptions are gone. Send /start to register again.
delete-gone = This chat is not registered any more; nothing to delete.

## Keyboards

button-cancel = Cancel
button-done = Done
button-expired = This button is no longer valid.
cancelled = Cancelled.

## Kinds of events a subscription can choose (kind-<kind with dashes>).

kinds-all = all events
# Between the kinds of a subscription.
kinds-separator = {", "}
kind-youtube-live = 🔴 Live
kind-youtube-scheduled = 📅 Scheduled
kind-youtube-reminder = ⏰ Reminder
kind-youtube-video = 🎬 Video
kind-twitter-tweet = 🐦 Post
kind-twitter-retweet = 🔁 Repost
kind-youtube-rescheduled = 🕒 Rescheduled
kind-youtube-ended = ⏹ Ended
kind-youtube-cancelled = ❌ Cancelled
kind-youtube-premiere = 🎞 Premieres
kind-youtube-short = 📱 Shorts
kind-youtube-members = 🔒 Members-only
kind-twitch-live = 🟣 Twitch live
kind-twitch-ended = ⏹ Twitch ended
kind-twitch-rerun = 📼 Twitch rerun
kind-bilibili-live = 📺 Bilibili live
kind-bilibili-ended = ⏹ Bilibili ended
kind-bilibili-dynamic = 💬 Bilibili post
kind-bilibili-video = 🎬 Bilibili video

## /subscribe, /unsubscribe, /list

subscribe-usage = Tell me whom to follow: /subscribe <name or id>, e.g. /subscribe Aqua. Names work in any language.
subscribe-no-match = No streamer matches “{ $query }”. Try part of a name, in any language, or an id.
# HTML
subscribe-pick = Several streamers match “{ $query }”. Which one?
# HTML. $count: matches not shown.
subscribe-more = { $count ->
        [one] (One more matches; type more of the name to narrow it down.)
       *[other] ({ $count } more match; type more of the name to narrow it down.)
    }
# HTML
subscribe-kinds = Which events of <b>{ $name }</b> do you want? Tap to toggle, then Done.
subscribe-gone = That streamer is no longer tracked.
subscribe-none-chosen = Choose at least one kind of event, or Cancel.
# HTML. $kinds: the chosen kinds, or kinds-all.
subscribe-done = ✅ Subscribed to <b>{ $name }</b>: { $kinds }.
unsubscribe-none = This chat has no subscriptions. Use /subscribe <name> to add one.
unsubscribe-no-match = None of this chat's subscriptions matches “{ $query }”. /list shows them.
unsubscribe-pick = Unsubscribe from which one?
# HTML
unsubscribe-done = Unsubscribed from <b>{ $name }</b>.
list-unregistered = This chat is not registered yet. Send /start, then /subscribe <name>.
list-empty = No subscriptions yet. Use /subscribe <name> to follow a streamer.
# HTML. The heading of /list; one line per subscription follows.
list-title = <b>{ $count ->
        [one] One subscription
       *[other] { $count } subscriptions
    }</b>

## /reminders

reminders-prompt = When should I remind this chat before a stream? Tap to toggle, then Save.
    Now: { $now }. With none chosen you get the default reminder.
reminders-default = { $minutes } minutes before (the default)
reminders-leads = { $list } minutes before
reminders-button = { $minutes } min
reminders-save = Save
reminders-saved = Saved: reminders { $leads }.
