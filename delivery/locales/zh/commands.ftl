## 命令的回复（Discord、QQ），纯文本。

language-name = 中文

admin-only = 只有本群管理员可以更改本群的订阅和设置。
guild-only = 订阅属于服务器频道：请在服务器的频道中使用命令。
error-unavailable = Stargazer 暂时不可用，请稍后再试。
error-not-found = 操作失败：对象不存在（或已不存在）。
error-conflict = 操作失败：对象已存在。
error-refused = 操作失败：{ $reason }

help-intro = Stargazer 会在你喜欢的主播开播、发帖或上传视频时通知你。命令：
command-subscribe = 按名字或 ID 订阅主播。
command-unsubscribe = 取消订阅主播。
command-list = 列出本聊天的订阅。
command-settings = 获取在网页上编辑订阅和设置的链接。
command-lang = 设置回复和通知的语言。
command-delete = 删除本聊天的注册和订阅。
command-help = 显示本帮助。

subscribe-usage = 请告诉我要关注谁：{ $command } <名字或 ID>。任何语言的名字都可以。
subscribe-no-match = 没有主播匹配“{ $query }”。请尝试名字的一部分（任何语言）或 ID。
subscribe-pick = 有多位主播匹配“{ $query }”：
    { $names }
    请用完整名字或 ID 再发送一次 { $command }。
subscribe-more = ……还有 { $count } 位。
subscribed = 已订阅 { $name }（{ $kinds }）。
kinds-choose = 选择要接收 { $name } 的哪些事件：
kinds-set = { $name }：现在接收 { $kinds }。
kinds-all = 全部事件
kinds-separator = {"、"}
unsubscribe-usage = 请告诉我要取消关注谁：{ $command } <名字或 ID>。
unsubscribe-no-match = 本聊天没有匹配“{ $query }”的订阅。用 { $list } 查看。
unsubscribed = 已取消订阅 { $name }。
list-empty = 本聊天还没有订阅。用 { $command } <名字> 关注主播。
list = 本聊天的订阅：
    { $entries }
list-entry = • { $name } — { $kinds }
list-entry-mention = • { $name } — { $kinds } — 提及 { $mention }
mention-set = { $name }：发布时将提及 { $mention }。
mention-cleared = { $name }：发布时不再提及任何人。
command-mention = 发布主播的事件时提及一个身份组（不选身份组：取消）。

lang-current = 本聊天的语言是 { $language }。支持：{ $languages }。用 { $command } <代码> 更改。
lang-unknown = 不支持“{ $code }”。支持：{ $languages }。
lang-set = 完成：这里的回复和通知现在使用 { $language }。

settings-link = 在这里编辑本聊天的订阅和设置：{ $href }
    链接 { $minutes } 分钟内有效。请勿分享。
settings-sent-privately = 已通过私聊把设置链接发给你。
settings-private-failed = 无法给你发私聊消息。请先加我为好友，再试一次。

delete-nothing = 本聊天未注册，没有可删除的内容。
delete-ask = 这将删除本聊天的注册和全部订阅，且无法撤销。确认请发送：{ $command }
delete-done = 已删除：本聊天的注册和订阅都已清除。

## Kinds of events a subscription can choose (kind-<kind with dashes>).
kind-youtube-live = 🔴 直播
kind-youtube-scheduled = 📅 直播预告
kind-youtube-reminder = ⏰ 开播提醒
kind-youtube-video = 🎬 视频
kind-twitter-tweet = 🐦 推文
kind-twitter-retweet = 🔁 转推
kind-youtube-rescheduled = 🕒 改期
kind-youtube-ended = ⏹ 已结束
kind-youtube-cancelled = ❌ 已取消
kind-youtube-premiere = 🎞 首映
kind-youtube-short = 📱 短视频
kind-youtube-members = 🔒 会员限定
kind-twitch-live = 🟣 Twitch 直播
kind-twitch-ended = ⏹ Twitch 下播
kind-twitch-rerun = 📼 Twitch 重播
kind-bilibili-live = 📺 B站直播
kind-bilibili-ended = ⏹ B站下播
kind-bilibili-dynamic = 💬 B站动态
kind-bilibili-video = 🎬 B站视频
