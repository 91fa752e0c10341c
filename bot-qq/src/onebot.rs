//! The OneBot v11 HTTP API client: the actions the bot calls on the implementation
//! (NapCat, Lagrange.OneBot, LLOneBot, go-cqhttp) that logs in as its QQ account.
//!
//! Every action is a `POST {api_url}/<action>` with a JSON body and
//! `Authorization: Bearer <access_token>`; the answer is HTTP 200 with
//! `{"status": "ok" | "async" | "failed", "retcode", "data", …}` unless the token is
//! missing (401) or wrong (403), the action unknown (404) or the body unreadable
//! (400/406). Messages go out in the array format ([`Message::to_json`]), which needs no
//! escaping.
//!
//! Sends are paced ([`Pacer`]): evenly under `qq.global_per_second` over all chats and
//! at most one per `qq.group_interval_ms` per group, because QQ's risk control answers a
//! burst by failing sends and, repeated, by suspending the account.
//!
//! **Failures** ([`ApiError`]). OneBot fixes only retcodes 0 (ok) and 1 (async); every
//! other code is the implementation's, and the two big ones use them coarsely: NapCat's
//! HTTP adapter answers every failed action with retcode 200 and the error's text (its
//! WebSocket adapters 1200), a bad parameter with 400 (1400); go-cqhttp answers 100 with a
//! code in `msg` (`GROUP_NOT_FOUND`, `SEND_MSG_API_ERROR`, …). So a failure is classified
//! by retcode where it says something and otherwise by its text:
//!
//! - `Gone`: the bot is not in the group (removed, group dissolved: `GROUP_NOT_FOUND`,
//!   "群聊不存在", "不在群") or muted in it ("禁言"): pause the subscription.
//! - `RateLimited`: risk control (`SEND_MSG_API_ERROR`, "风控", "频繁", "频率"). go-cqhttp
//!   gives this same answer when the bot is muted, which cannot be told apart from here.
//! - `Invalid`: the request itself is wrong (retcode 400/1400/1404, HTTP 400/404/406,
//!   parameter errors, empty message, unknown message or member).
//! - `Unauthorized`: HTTP 401/403.
//! - `Transient`: 5xx, network errors, timeouts, an unreadable answer, and any failure
//!   not recognised above (retried a bounded number of times by the caller, rather than
//!   dropping a message on an error text not seen before).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use stargazer_core::sync::lock;
use tokio::time::Instant;

use crate::config::QqConfig;
use crate::message::Message;

/// Why an action failed, sorted by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The chat is gone for the bot: removed from the group, group dissolved, muted.
    #[error("chat gone (retcode {retcode}): {message}")]
    Gone {
        /// The implementation's retcode.
        retcode: i64,
        /// Its error text.
        message: String,
    },
    /// QQ's risk control refused the send: slow down and retry later.
    #[error("refused by risk control (retcode {retcode}): {message}")]
    RateLimited {
        /// The implementation's retcode.
        retcode: i64,
        /// Its error text.
        message: String,
    },
    /// The request is wrong and would fail again unchanged.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The access token is missing (401) or wrong (403).
    #[error("unauthorized: HTTP {status}")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
    },
    /// A failure that may pass: 5xx, network, timeout, an unrecognised answer.
    #[error("transient failure: {0}")]
    Transient(String),
}

/// A group member as `get_group_member_info` reports them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupMember {
    /// The group.
    pub group_id: i64,
    /// The member's QQ number.
    pub user_id: i64,
    /// Their nickname.
    #[serde(default)]
    pub nickname: String,
    /// Their group card; empty when unset.
    #[serde(default)]
    pub card: String,
    /// `owner`, `admin` or `member`.
    #[serde(default)]
    pub role: String,
}

impl GroupMember {
    /// Whether they may manage the group's subscriptions (owner or administrator).
    pub fn is_admin(&self) -> bool {
        matches!(self.role.as_str(), "owner" | "admin")
    }
}

/// The answer envelope. Both spellings of the error text are read: NapCat and the spec's
/// successors use `message`, go-cqhttp `msg`.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    status: String,
    #[serde(default)]
    retcode: Option<i64>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    wording: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MessageId {
    message_id: i64,
}

/// Sorts a `failed` answer (see the module documentation).
pub fn classify(retcode: i64, text: &str) -> ApiError {
    const GONE: &[&str] = &[
        "group_not_found",
        "群聊不存在",
        "群不存在",
        "不在群",
        "not in group",
        "not in this group",
        "group not found",
        "禁言",
        "muted",
    ];
    const RATE: &[&str] = &[
        "send_msg_api_error",
        "风控",
        "频繁",
        "频率",
        "rate limit",
        "too many",
        "risk control",
    ];
    const INVALID: &[&str] = &[
        "param",
        "参数",
        "empty_msg",
        "消息为空",
        "message_not_found",
        "消息不存在",
        "member_not_found",
        "成员不存在",
        "群员不存在",
        "不支持",
        "not supported",
    ];
    let lower = text.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let message = text.to_owned();
    if has(GONE) {
        ApiError::Gone { retcode, message }
    } else if has(RATE) {
        ApiError::RateLimited { retcode, message }
    } else if matches!(retcode, 400 | 1400 | 1404) || has(INVALID) {
        ApiError::Invalid(format!("retcode {retcode}: {text}"))
    } else {
        ApiError::Transient(format!("retcode {retcode}: {text}"))
    }
}

/// Keeps sends under the global rate and the per-group gap.
///
/// Not a queue of reservations: a caller takes the first moment both limits allow and,
/// if that is later, sleeps and looks again. A reservation would make a send waiting out
/// its group's gap hold a global slot and delay every other group behind it.
#[derive(Debug)]
pub struct Pacer {
    global: Duration,
    group: Duration,
    state: Mutex<PacerState>,
}

#[derive(Debug, Default)]
struct PacerState {
    next_global: Option<Instant>,
    next_group: HashMap<i64, Instant>,
}

impl Pacer {
    /// Sends at least `global` apart, and `group` apart within one group.
    pub fn new(global: Duration, group: Duration) -> Self {
        Self {
            global,
            group,
            state: Mutex::new(PacerState::default()),
        }
    }

    /// Waits until a send to `group` (or a private chat: `None`) may go, and counts it.
    pub async fn acquire(&self, group: Option<i64>) {
        loop {
            let ready_at = {
                let mut state = lock(&self.state);
                let now = Instant::now();
                let mut at = state.next_global.unwrap_or(now).max(now);
                if let Some(next) = group.and_then(|g| state.next_group.get(&g)) {
                    at = at.max(*next);
                }
                if at <= now {
                    state.next_global = Some(now + self.global);
                    if let Some(group) = group {
                        state.next_group.insert(group, now + self.group);
                        // Gaps that have passed say nothing any more; keeping them would
                        // grow the map with every group ever sent to.
                        state.next_group.retain(|_, next| *next > now);
                    }
                    return;
                }
                at
            };
            tokio::time::sleep_until(ready_at).await;
        }
    }
}

/// The client of one OneBot implementation.
#[derive(Debug)]
pub struct OneBotClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    pacer: Pacer,
}

impl OneBotClient {
    /// A client for `config.api_url`, paced by `config`'s limits.
    pub fn new(config: &QqConfig) -> crate::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout())
            .build()
            .map_err(|err| crate::Error::Client(err.to_string()))?;
        let token = Some(config.access_token.trim().to_owned()).filter(|t| !t.is_empty());
        Ok(Self {
            http,
            base: config.api_url.trim_end_matches('/').to_owned(),
            token,
            pacer: Pacer::new(config.global_interval(), config.group_interval()),
        })
    }

    /// Sends `message` to group `group_id`; returns the message id.
    #[tracing::instrument(skip(self, message), fields(chat_id = group_id))]
    pub async fn send_group_msg(&self, group_id: i64, message: &Message) -> Result<i32, ApiError> {
        check_sendable(message)?;
        self.pacer.acquire(Some(group_id)).await;
        let sent: MessageId = self
            .call(
                "send_group_msg",
                json!({"group_id": group_id, "message": message.to_json()}),
            )
            .await?;
        to_message_id(sent)
    }

    /// Sends `message` privately to `user_id`; returns the message id.
    #[tracing::instrument(skip(self, message), fields(chat_id = user_id))]
    pub async fn send_private_msg(&self, user_id: i64, message: &Message) -> Result<i32, ApiError> {
        check_sendable(message)?;
        self.pacer.acquire(None).await;
        let sent: MessageId = self
            .call(
                "send_private_msg",
                json!({"user_id": user_id, "message": message.to_json()}),
            )
            .await?;
        to_message_id(sent)
    }

    /// Recalls message `message_id` (QQ allows it for two minutes, or for any message
    /// of a member when the bot is an administrator).
    pub async fn delete_msg(&self, message_id: i32) -> Result<(), ApiError> {
        let _: Value = self
            .call("delete_msg", json!({"message_id": message_id}))
            .await?;
        Ok(())
    }

    /// `user_id`'s membership of `group_id` (role, card), asked fresh (`no_cache`): a
    /// role decides who may change a group's subscriptions.
    pub async fn get_group_member_info(
        &self,
        group_id: i64,
        user_id: i64,
    ) -> Result<GroupMember, ApiError> {
        self.call(
            "get_group_member_info",
            json!({"group_id": group_id, "user_id": user_id, "no_cache": true}),
        )
        .await
    }

    async fn call<T: DeserializeOwned>(&self, action: &str, params: Value) -> Result<T, ApiError> {
        let mut request = self
            .http
            .post(format!("{}/{action}", self.base))
            .json(&params);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|err| ApiError::Transient(format!("{action}: {err}")))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| ApiError::Transient(format!("{action}: reading the answer: {err}")))?;
        match status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(ApiError::Unauthorized {
                    status: status.as_u16(),
                })
            }
            StatusCode::TOO_MANY_REQUESTS => {
                return Err(ApiError::RateLimited {
                    retcode: 0,
                    message: format!("{action}: HTTP 429"),
                })
            }
            s if s.is_server_error() => {
                return Err(ApiError::Transient(format!("{action}: HTTP {s}")));
            }
            s if s.is_client_error() => {
                return Err(ApiError::Invalid(format!(
                    "{action}: HTTP {s}: {}",
                    excerpt(&body)
                )));
            }
            s => return Err(ApiError::Transient(format!("{action}: HTTP {s}"))),
        }
        let envelope: Envelope = serde_json::from_slice(&body).map_err(|err| {
            ApiError::Transient(format!(
                "{action}: unreadable answer ({err}): {}",
                excerpt(&body)
            ))
        })?;
        // Success is `status: "ok"`; a missing retcode is not taken for 0.
        let succeeded =
            envelope.status == "ok" || (envelope.status.is_empty() && envelope.retcode == Some(0));
        if succeeded {
            return serde_json::from_value(envelope.data)
                .map_err(|err| ApiError::Transient(format!("{action}: unexpected data: {err}")));
        }
        let text = [envelope.msg, envelope.message, envelope.wording]
            .into_iter()
            .flatten()
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        let retcode = envelope.retcode.unwrap_or(-1);
        let err = classify(retcode, &text);
        tracing::debug!(action, retcode, cause = %err, "action failed");
        Err(err)
    }
}

fn check_sendable(message: &Message) -> Result<(), ApiError> {
    if message.is_empty() {
        return Err(ApiError::Invalid("empty message".to_owned()));
    }
    Ok(())
}

fn to_message_id(sent: MessageId) -> Result<i32, ApiError> {
    // OneBot v11 message ids are int32; a wider one means a protocol this client does not
    // speak rather than a message lost, but it was sent: report it as unreadable.
    i32::try_from(sent.message_id)
        .map_err(|_| ApiError::Transient(format!("message_id {} is not an int32", sent.message_id)))
}

fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_code_and_text() {
        let gone = [
            (100, "GROUP_NOT_FOUND: 群聊不存在"),
            (200, "群聊不存在或机器人已不在群内"),
            (1200, "发送消息失败: 机器人已被禁言"),
        ];
        for (retcode, text) in gone {
            assert!(
                matches!(classify(retcode, text), ApiError::Gone { .. }),
                "{text}"
            );
        }
        let rate = [
            (100, "SEND_MSG_API_ERROR: 请参考 go-cqhttp 端输出"),
            (200, "发送消息失败: 消息发送过于频繁, 可能被风控"),
        ];
        for (retcode, text) in rate {
            assert!(
                matches!(classify(retcode, text), ApiError::RateLimited { .. }),
                "{text}"
            );
        }
        for (retcode, text) in [
            (400, "Key: group_id, Message: must be number"),
            (100, "EMPTY_MSG_ERROR: 消息为空"),
            (100, "MESSAGE_NOT_FOUND: 消息不存在"),
            (1404, "foo API 不存在"),
        ] {
            assert!(
                matches!(classify(retcode, text), ApiError::Invalid(_)),
                "{text}"
            );
        }
        assert!(matches!(
            classify(200, "Timeout: NTQQAPI call timed out"),
            ApiError::Transient(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_sends_and_groups() {
        let pacer = Pacer::new(Duration::from_millis(100), Duration::from_secs(3));
        let start = Instant::now();
        pacer.acquire(Some(1)).await;
        pacer.acquire(Some(2)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        pacer.acquire(None).await;
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        // Group 1 waits out its gap; meanwhile group 3 is not held behind it.
        let (one, three) = tokio::join!(
            async {
                pacer.acquire(Some(1)).await;
                start.elapsed()
            },
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                pacer.acquire(Some(3)).await;
                start.elapsed()
            }
        );
        assert_eq!(one, Duration::from_secs(3));
        assert_eq!(three, Duration::from_millis(300));
    }
}
