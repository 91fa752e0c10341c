## Replies to the chat commands of the bots whose commands are network-neutral (Discord,
## QQ), in plain text: adapters escape nothing and add no markup. $command arguments are
## how the network writes a command ("/subscribe", or "/subscribe name:" on Discord).

language-name = English

## Refusals and errors.

admin-only = Only this group's administrators can change its subscriptions and settings.
guild-only = Subscriptions belong to a server channel: use the commands in a channel of your server.
error-unavailable = Stargazer is temporarily unavailable. Please try again in a minute.
error-not-found = That did not work: it does not exist (any more).
error-conflict = That did not work: it already exists.
# $reason: the api's explanation (English).
error-refused = That did not work: { $reason }

## /help

help-intro = Stargazer tells you when your favourite streamers go live, post or upload. Commands:
command-subscribe = Subscribe to a streamer by name or id.
command-unsubscribe = Unsubscribe from a streamer.
command-list = List this chat's subscriptions.
command-settings = Get a link to edit the subscriptions and settings on the web.
command-lang = Set the language of replies and notifications.
command-delete = Delete this chat's registration and subscriptions.
command-help = Show this help.

## /subscribe, /unsubscribe, /list

subscribe-usage = Tell me whom to follow: { $command } <name or id>. Names work in any language.
subscribe-no-match = No streamer matches “{ $query }”. Try part of a name, in any language, or an id.
# $names: the matches, one per line. $command: how to subscribe.
subscribe-pick = Several streamers match “{ $query }”:
    { $names }
    Send { $command } again with the full name or the id.
# $count: matches not listed.
subscribe-more = { $count ->
        [one] …and one more.
       *[other] …and { $count } more.
    }
# $kinds: what the subscription delivers.
subscribed = Subscribed to { $name } ({ $kinds }).
kinds-choose = Choose which events of { $name } to receive:
kinds-set = { $name }: now { $kinds }.
kinds-all = all events
kinds-separator = {", "}
unsubscribe-usage = Tell me whom to unfollow: { $command } <name or id>.
unsubscribe-no-match = This chat has no subscription matching “{ $query }”. { $list } shows them.
unsubscribed = Unsubscribed from { $name }.
list-empty = This chat has no subscriptions yet. { $command } <name> follows a streamer.
# $entries: one subscription per line.
list = This chat's subscriptions:
    { $entries }

list-entry = • { $name } — { $kinds }
list-entry-mention = • { $name } — { $kinds } — mentions { $mention }
# $mention: the role, as the network shows it.
mention-set = { $name }: posts now mention { $mention }.
mention-cleared = { $name }: posts mention nobody now.
command-mention = Mention a role when a streamer's events are posted (no role: stop).

## /lang ($languages: "en (English), ja (日本語), …")

lang-current = This chat is in { $language }. I speak { $languages }: { $command } <code> changes it.
lang-unknown = I do not speak “{ $code }”. I speak { $languages }.
lang-set = Done: replies and notifications here are now in { $language }.

## /settings

# $minutes: how long the link works.
settings-link = Edit this chat's subscriptions and settings here: { $href }
    { $minutes ->
        [one] The link works for one minute. Do not share it.
       *[other] The link works for { $minutes } minutes. Do not share it.
    }
settings-sent-privately = I sent you the settings link in a private message.
settings-private-failed = I could not send you a private message. Add me as a friend, then ask again.

## /delete

delete-nothing = This chat is not registered, so there is nothing to delete.
delete-ask = This deletes this chat's registration and all its subscriptions, and cannot be undone. To go ahead: { $command }
delete-done = Deleted: this chat's registration and subscriptions are gone.

## Kinds of events a subscription can choose (kind-<kind with dashes>).
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
