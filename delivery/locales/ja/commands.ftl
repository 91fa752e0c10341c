## コマンドへの返信（Discord・QQ）。プレーンテキスト。

language-name = 日本語

admin-only = このグループの購読と設定を変更できるのは管理者だけです。
guild-only = 購読はサーバーのチャンネルに属します。サーバーのチャンネルでコマンドを使ってください。
error-unavailable = Stargazer は一時的に利用できません。少ししてからもう一度お試しください。
error-not-found = 実行できませんでした：存在しません（もうありません）。
error-conflict = 実行できませんでした：すでに存在します。
error-refused = 実行できませんでした：{ $reason }

help-intro = Stargazer は推しの配信開始・投稿・動画公開をお知らせします。コマンド：
command-subscribe = 名前か ID で配信者を購読します。
command-unsubscribe = 配信者の購読を解除します。
command-list = このチャットの購読を一覧表示します。
command-settings = 購読と設定を Web で編集するリンクを受け取ります。
command-lang = 返信と通知の言語を設定します。
command-delete = このチャットの登録と購読を削除します。
command-help = このヘルプを表示します。

subscribe-usage = 購読する相手を指定してください：{ $command } <名前または ID>。名前はどの言語でも使えます。
subscribe-no-match = 「{ $query }」に一致する配信者はいません。名前の一部（どの言語でも）か ID を試してください。
subscribe-pick = 「{ $query }」に一致する配信者が複数います：
    { $names }
    フルネームか ID でもう一度 { $command } を送ってください。
subscribe-more = …ほか { $count } 件。
subscribed = { $name } を購読しました（{ $kinds }）。
kinds-choose = { $name } のどのイベントを受け取るか選んでください：
kinds-set = { $name }：{ $kinds } を受け取ります。
kinds-all = すべてのイベント
kinds-separator = {"、"}
unsubscribe-usage = 購読を解除する相手を指定してください：{ $command } <名前または ID>。
unsubscribe-no-match = このチャットに「{ $query }」に一致する購読はありません。{ $list } で確認できます。
unsubscribed = { $name } の購読を解除しました。
list-empty = このチャットにはまだ購読がありません。{ $command } <名前> で配信者を購読できます。
list = このチャットの購読：
    { $entries }
list-entry = • { $name } — { $kinds }
list-entry-mention = • { $name } — { $kinds } — { $mention } にメンション
mention-set = { $name }：投稿時に { $mention } にメンションします。
mention-cleared = { $name }：投稿時のメンションをやめました。
command-mention = 配信者のイベント投稿時にロールをメンションします（ロールなし：解除）。

lang-current = このチャットの言語は { $language } です。対応言語：{ $languages }。{ $command } <コード> で変更できます。
lang-unknown = 「{ $code }」には対応していません。対応言語：{ $languages }。
lang-set = 設定しました：ここでの返信と通知は { $language } になります。

settings-link = このチャットの購読と設定はこちらで編集できます：{ $href }
    リンクの有効期間は { $minutes } 分です。共有しないでください。
settings-sent-privately = 設定リンクを個別メッセージで送りました。
settings-private-failed = 個別メッセージを送れませんでした。友だち追加してからもう一度お試しください。

delete-nothing = このチャットは登録されていないので、削除するものはありません。
delete-ask = このチャットの登録とすべての購読を削除します。元に戻せません。実行するには：{ $command }
delete-done = 削除しました：このチャットの登録と購読はなくなりました。

## Kinds of events a subscription can choose (kind-<kind with dashes>).
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
