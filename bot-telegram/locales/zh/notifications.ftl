## 推送通知的文字（delivery/compose.rs）。$name：主播在该聊天语言中的名字。

notify-live = 🔴 { $name } 开始直播了
notify-scheduled = 📅 { $name } 预定了直播
notify-reminder = ⏰ { $name } 的直播即将开始
notify-video = 🎬 { $name } 发布了视频
notify-tweet = 🐦 { $name } 发布了推文
notify-retweet = 🔁 { $name } 转发了推文
notify-other = 🔔 { $name }

notify-open-youtube = 在 YouTube 打开
notify-open-x = 在 X 打开
notify-open = 打开

notify-starts = 开始
notify-started = 开播时间
notify-original = 原文
