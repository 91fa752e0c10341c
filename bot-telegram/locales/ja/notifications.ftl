## 配信された通知の文面（delivery/compose.rs）。$name: チャットの言語での配信者名。

notify-live = 🔴 { $name } の配信が始まりました
notify-scheduled = 📅 { $name } が配信を予定しました
notify-reminder = ⏰ { $name } の配信がまもなく始まります
notify-video = 🎬 { $name } が動画を投稿しました
notify-tweet = 🐦 { $name } がポストしました
notify-retweet = 🔁 { $name } がリポストしました
notify-other = 🔔 { $name }

notify-open-youtube = YouTube で開く
notify-open-x = X で開く
notify-open = 開く

notify-starts = 開始
notify-started = 配信開始
notify-original = 原文
