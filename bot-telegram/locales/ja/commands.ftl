## コマンドとボタンへの返信、拒否とエラー、コマンドメニュー。
## HTML の印があるメッセージは Telegram HTML で送られます（引数はコードがエスケープします）。

language-name = 日本語

## コマンドメニュー（setMyCommands）と /help

help-intro = Stargazer は、推しの配信者の配信開始・投稿・動画アップロードをお知らせします。コマンド一覧:
command-start = このチャットを登録します（何度送っても大丈夫です）。
command-help = このヘルプを表示します。
command-subscribe = 配信者をフォローします: /subscribe <名前または ID>
command-unsubscribe = フォローを解除します: /unsubscribe [名前]
command-list = フォロー中の配信者を表示します。
command-settings = Web で設定を編集するリンクを受け取ります。
command-lang = 返信と通知の言語を設定します: /lang <コード>（例: /lang ja）
command-delete = このチャットの登録とフォローをすべて削除します。
command-reminders = 配信の何分前にリマインドするかを選びます。

## コマンド以外のメッセージと未知のコマンド

only-commands = コマンドにだけお答えします。/help でコマンド一覧を表示します。
unknown-command = { $command } というコマンドはありません。
unreadable-command = コマンドを読み取れませんでした（{ $reason }）。

## 拒否とエラー

admin-only = このグループのフォローと設定を変更できるのは、グループの管理者だけです。
error-unavailable = Stargazer は一時的に利用できません。少し時間をおいてからもう一度お試しください。
error-not-found = うまくいきませんでした: 対象が見つかりません（削除された可能性があります）。
error-conflict = うまくいきませんでした: すでに存在します。
error-refused = うまくいきませんでした: { $reason }

## /start

start-resumed = おかえりなさい！このチャットへの通知を再開しました。/list でフォロー中の配信者を表示します。
start-again = おかえりなさい！このチャットは登録済みです（言語: { $language }）。
    /subscribe <名前> で配信者をフォロー、/list でフォロー一覧、/help でその他のコマンドを表示します。
start-new = Stargazer へようこそ！このチャットを登録しました（言語: { $language }）。
    /subscribe <名前> で配信者をフォロー、/lang <コード> で言語を変更、/help でその他のコマンドを表示します。

## /settings

settings-target-own = フォローと設定
settings-target-group = { $name } のフォローと設定
settings-target-group-unnamed = グループのフォローと設定
settings-link = { $target }は、こちらで編集できます:
    <a href="{ $href }">{ $href }</a>

    このリンクは { $minutes } 分間有効です。新しいリンクが必要なときは /settings をもう一度送ってください。リンクは誰とも共有しないでください。
settings-button = 設定を開く
settings-private-only = 設定リンクはプライベートチャットでのみお送りします。このグループの管理者の方は、ご自分のアカウントで { $link } を開いて「開始」を押してください。そちらにお送りします。
settings-sent-privately = { $admin } さん、設定リンクをプライベートメッセージでお送りしました。
settings-start-private = { $admin } さん、設定リンクはプライベートチャットでしかお送りできませんが、まだ私とのチャットが始まっていません。{ $link } を開いて「開始」を押してください。そちらにお送りします。
settings-group-unregistered = そのグループは登録されていません。先にグループで /start を送ってください。

## /lang

lang-current = このチャットの言語は `{ $language }` です。対応している言語: { $languages }。変更するには /lang のあとにコードを付けて送ってください（例: /lang ja）。
lang-unknown = 「{ $code }」には対応していません。対応している言語: { $languages }。/lang のあとにコードを付けて送ってください（例: /lang ja）。
lang-set = 設定しました: このチャットへの返信と通知は `{ $language }` になります。

## /delete

delete-nothing = このチャットは登録されていないため、削除するものはありません。
delete-ask = このチャットの登録とすべてのフォローを削除しますか？元に戻すことはできません。
delete-yes = はい、すべて削除します
delete-done = 削除しました: このチャットの登録とフォローはすべてなくなりました。もう一度登録するには /start を送ってください。
delete-gone = このチャットはもう登録されていません。削除するものはありません。

## ボタン

button-cancel = キャンセル
button-done = 完了
button-expired = このボタンはもう使えません。
cancelled = キャンセルしました。

## フォローで選べるイベントの種類

kinds-all = すべてのイベント
kinds-separator = 、
kind-youtube-live = 🔴 配信
kind-youtube-scheduled = 📅 配信予定
kind-youtube-reminder = ⏰ リマインダー
kind-youtube-video = 🎬 動画
kind-twitter-tweet = 🐦 ポスト
kind-twitter-retweet = 🔁 リポスト
kind-youtube-rescheduled = 🕒 日時変更
kind-youtube-ended = ⏹ 終了
kind-youtube-cancelled = ❌ 中止
kind-youtube-premiere = 🎞 プレミア公開
kind-youtube-short = 📱 ショート
kind-youtube-members = 🔒 メンバー限定
kind-twitch-live = 🟣 Twitch 配信
kind-twitch-ended = ⏹ Twitch 終了
kind-twitch-rerun = 📼 Twitch 再放送
kind-bilibili-live = 📺 ビリビリ配信
kind-bilibili-ended = ⏹ ビリビリ終了
kind-bilibili-dynamic = 💬 ビリビリ投稿
kind-bilibili-video = 🎬 ビリビリ動画

## /subscribe、/unsubscribe、/list

subscribe-usage = フォローする配信者を指定してください: /subscribe <名前または ID>（例: /subscribe Aqua）。名前はどの言語でもかまいません。
subscribe-no-match = 「{ $query }」に一致する配信者はいません。名前の一部（どの言語でも可）か ID で試してください。
subscribe-pick = 「{ $query }」に一致する配信者が複数います。どの配信者ですか？
subscribe-more = （ほかに { $count } 件一致しています。名前をもう少し入力すると絞り込めます。）
subscribe-kinds = <b>{ $name }</b> のどのイベントを受け取りますか？タップで切り替えて、「完了」を押してください。
subscribe-gone = その配信者はもう追跡されていません。
subscribe-none-chosen = イベントの種類を 1 つ以上選ぶか、「キャンセル」を押してください。
subscribe-done = ✅ <b>{ $name }</b> をフォローしました: { $kinds }
unsubscribe-none = このチャットはまだ誰もフォローしていません。/subscribe <名前> でフォローできます。
unsubscribe-no-match = このチャットのフォローに「{ $query }」に一致するものはありません。/list で一覧を表示します。
unsubscribe-pick = どの配信者のフォローを解除しますか？
unsubscribe-done = <b>{ $name }</b> のフォローを解除しました。
list-unregistered = このチャットはまだ登録されていません。/start を送ってから、/subscribe <名前> でフォローしてください。
list-empty = まだ誰もフォローしていません。/subscribe <名前> で配信者をフォローできます。
list-title = <b>フォロー中（{ $count }）</b>

## /reminders

reminders-prompt = 配信の何分前にこのチャットへリマインドしますか？タップで切り替えて、「保存」を押してください。
    現在: { $now }。何も選ばないと既定のリマインドが届きます。
reminders-default = { $minutes } 分前（既定）
reminders-leads = { $list } 分前
reminders-button = { $minutes } 分
reminders-save = 保存
reminders-saved = 保存しました: リマインドは { $leads } です。
