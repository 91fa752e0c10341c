## The texts of delivered notifications (delivery/compose.rs). $name: the streamer's
## name in the chat's language. The code escapes arguments for Telegram HTML.

# Headlines, one per kind of event (notify-other for kinds without their own).
notify-live = 🔴 { $name } is live
notify-scheduled = 📅 { $name } scheduled a stream
notify-reminder = ⏰ { $name } goes live soon
notify-video = 🎬 { $name } uploaded a video
notify-tweet = 🐦 { $name } posted
notify-retweet = 🔁 { $name } reposted
notify-other = 🔔 { $name }

# The link button, by the event's source.
notify-open-youtube = Open on YouTube
notify-open-x = Open on X
notify-open = Open

# Labels of the time line ("🕒 Starts: …") and of the original beside a translation.
notify-starts = Starts
notify-started = Started
notify-original = Original
