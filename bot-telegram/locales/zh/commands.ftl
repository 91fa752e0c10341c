## 对命令和按钮的回复、拒绝与错误提示，以及命令菜单。
## 标有 HTML 的消息以 Telegram HTML 发送（参数由代码转义）。

language-name = 中文

## 命令菜单（setMyCommands）与 /help

help-intro = Stargazer 会在你关注的主播开播、发帖或上传视频时通知你。命令：
command-start = 注册此聊天（可重复发送）。
command-help = 显示此帮助。
command-subscribe = 关注主播：/subscribe <名称或 ID>
command-unsubscribe = 取消关注：/unsubscribe [名称]
command-list = 列出已关注的主播。
command-settings = 获取在网页上编辑设置的链接。
command-lang = 设置回复和通知的语言：/lang <代码>，例如 /lang zh
command-delete = 删除此聊天的注册和全部关注。
command-reminders = 选择在直播前多久提醒你。

## 非命令消息与未知命令

only-commands = 我只回应命令。发送 /help 查看命令列表。
unknown-command = 未知命令 { $command }。
unreadable-command = 无法识别该命令（{ $reason }）。

## 拒绝与错误

admin-only = 只有本群管理员可以更改本群的关注和设置。
error-unavailable = Stargazer 暂时无法使用，请稍后再试。
error-not-found = 操作失败：对象不存在（可能已被删除）。
error-conflict = 操作失败：对象已存在。
error-refused = 操作失败：{ $reason }

## /start

start-resumed = 欢迎回来！已恢复向此聊天发送通知。发送 /list 查看你的关注。
start-again = 欢迎回来！此聊天已注册（语言：{ $language }）。
    发送 /subscribe <名称> 关注主播，/list 查看关注列表，/help 查看更多。
start-new = 欢迎使用 Stargazer！此聊天已注册（语言：{ $language }）。
    发送 /subscribe <名称> 关注主播，/lang <代码> 更改语言，/help 查看更多。

## /settings

settings-target-own = 你的关注和设置
settings-target-group = { $name } 的关注和设置
settings-target-group-unnamed = 本群的关注和设置
settings-link = 在这里编辑{ $target }：
    <a href="{ $href }">{ $href }</a>

    链接在 { $minutes } 分钟内有效；需要新链接时请再次发送 /settings。请勿分享此链接。
settings-button = 打开设置
settings-private-only = 设置链接只会通过私聊发送。如果你是本群管理员，请用自己的账号打开 { $link } 并点击“开始”，我会把链接发到那里。
settings-sent-privately = { $admin }，我已通过私信把设置链接发给你了。
settings-start-private = { $admin }，设置链接只能通过私聊发送，但你还没有和我开始私聊。请打开 { $link } 并点击“开始”，我会把链接发到那里。
settings-group-unregistered = 该群尚未注册。请先在群里发送 /start。

## /lang

lang-current = 此聊天当前使用 `{ $language }`。我会说：{ $languages }。发送 /lang 加语言代码即可切换，例如 /lang zh。
lang-unknown = 我不会说“{ $code }”。我会说：{ $languages }。发送 /lang 加语言代码即可切换，例如 /lang zh。
lang-set = 完成：此聊天的回复和通知现在使用 `{ $language }`。

## /delete

delete-nothing = 此聊天尚未注册，没有可删除的内容。
delete-ask = 要删除此聊天的注册和全部关注吗？此操作无法撤销。
delete-yes = 是，全部删除
delete-done = 已删除：此聊天的注册和关注已全部清除。发送 /start 可重新注册。
delete-gone = 此聊天已不再注册，没有可删除的内容。

## 按钮

button-cancel = 取消
button-done = 完成
button-expired = 此按钮已失效。
cancelled = 已取消。

## 关注时可选择的事件类型

kinds-all = 全部事件
kinds-separator = 、
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

## /subscribe、/unsubscribe、/list

subscribe-usage = 请告诉我要关注谁：/subscribe <名称或 ID>，例如 /subscribe Aqua。任何语言的名称都可以。
subscribe-no-match = 没有与“{ $query }”匹配的主播。请尝试名称的一部分（任何语言均可）或 ID。
subscribe-pick = 有多位主播与“{ $query }”匹配。要关注哪一位？
subscribe-more = （另有 { $count } 位匹配；输入更完整的名称可缩小范围。）
subscribe-kinds = 你想接收 <b>{ $name }</b> 的哪些事件？点击切换，然后点“完成”。
subscribe-gone = 该主播已不再被追踪。
subscribe-none-chosen = 请至少选择一种事件，或点“取消”。
subscribe-done = ✅ 已关注 <b>{ $name }</b>：{ $kinds }。
unsubscribe-none = 此聊天还没有关注任何主播。发送 /subscribe <名称> 添加关注。
unsubscribe-no-match = 此聊天的关注中没有与“{ $query }”匹配的主播。发送 /list 查看列表。
unsubscribe-pick = 要取消关注哪一位？
unsubscribe-done = 已取消关注 <b>{ $name }</b>。
list-unregistered = 此聊天尚未注册。请先发送 /start，再发送 /subscribe <名称>。
list-empty = 还没有关注任何主播。发送 /subscribe <名称> 关注主播。
list-title = <b>关注列表（{ $count }）</b>

## /reminders

reminders-prompt = 要在直播前多久提醒此聊天？点击切换，然后点“保存”。
    当前：{ $now }。不选择时收到默认提醒。
reminders-default = 提前 { $minutes } 分钟（默认）
reminders-leads = 提前 { $list } 分钟
reminders-button = { $minutes } 分钟
reminders-save = 保存
reminders-saved = 已保存：{ $leads }提醒。
