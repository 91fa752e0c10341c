## The texts of delivered notifications (delivery/compose.rs). $name: the streamer's
## name in the chat's language; $time a time, $duration how long a stream lasted, $h and $m
## hours and minutes. The code escapes the formatted text for Telegram HTML.

notify-live = 🔴 { $name } is live
notify-scheduled = 📅 { $name } scheduled a stream
notify-reminder = ⏰ { $name } goes live soon
notify-video = 🎬 { $name } uploaded a video
notify-tweet = 🐦 { $name } posted
notify-retweet = 🔁 { $name } reposted
notify-other = 🔔 { $name }
notify-open-youtube = Open on YouTube
notify-open-x = Open on X
notify-open = Open
notify-starts = Starts
notify-started = Started
notify-original = Original
notify-premiere = 🎞 { $name } scheduled a premiere
notify-premiere-live = 🎞 { $name }'s premiere has started
notify-premiere-reminder = ⏰ { $name }'s premiere starts soon
notify-rescheduled = 📅 { $name } moved a stream
notify-premiere-rescheduled = 🎞 { $name } moved a premiere
notify-short = 📱 { $name } posted a Short
notify-live-now = 🔴 Live now: { $name }
notify-premiere-live-now = 🎞 Premiere live now: { $name }
notify-ended = ⏹ Ended, lasted { $duration }: { $name }
notify-ended-plain = ⏹ Ended: { $name }
notify-cancelled = ❌ Cancelled: { $name }
notify-moved-from = moved from { $time }
notify-moved-earlier = ⏩ Moved earlier: { $name } now starts { $time }
notify-members-only = 🔒 Members only
notify-archive = Watch the archive
notify-hours-minutes = { $h }h{ $m }m
notify-minutes = { $m }m
notify-twitch-live = 🟣 { $name } is live on Twitch
notify-twitch-rerun = 📼 { $name } is showing a rerun on Twitch
notify-bilibili-live = 📺 { $name } is live on Bilibili
notify-bilibili-dynamic = 💬 { $name } posted on Bilibili
notify-bilibili-repost = 🔁 { $name } reposted on Bilibili
notify-bilibili-video = 🎬 { $name } uploaded a video on Bilibili
notify-open-twitch = Open on Twitch
notify-open-bilibili = Open on Bilibili
