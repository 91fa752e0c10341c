//! What to publish for a video, decided from what the Data API says now and what the worker
//! recorded about it before. Pure functions: no I/O, so every transition is unit-tested.
//!
//! Transitions (S = scheduled start, "pending" = S still in the future):
//! - upload, fresh (published within `max_video_age_hours`, and — in the channel's first
//!   sync — after the channel began to be tracked) → `youtube.video`;
//! - upcoming with a new S → `youtube.scheduled` (ready), `youtube.reminder` on `delay`
//!   firing at S − lead (`reminder:<id>`), `youtube.live` on `live_check.delay` firing at S
//!   (`live:<id>`); the same delay ids make a reschedule replace the pending messages; when
//!   S − lead already passed the reminder is skipped (and a pending one cancelled);
//! - live: announced now unless a delayed `youtube.live` for it already fired; when it was
//!   pending (started early) the delayed messages are cancelled and `youtube.live` is
//!   published ready;
//! - tombstone, disappearance or end of a pending stream → cancels of both delayed messages;
//! - anything else (same state re-pushed, title edit, old upload, ended stream) → nothing.
//!
//! Each group of messages is guarded by a claim in the seen-window so two workers (or a
//! restart racing a re-push) never publish the same group twice.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use stargazer_core::contract::control::{DELAY_AT, DELAY_CANCEL, DELAY_ID, LIVE_CHECK_VIDEO};
use stargazer_core::contract::{kind, source, tag};
use stargazer_core::model::Event;
use stargazer_core::routing::key_with_tags;
use uuid::Uuid;

use crate::data_api::Video;

/// What the worker remembers about one video of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoRecord {
    /// The Atom `updated` last processed; an entry with the same value is not re-classified.
    #[serde(default)]
    pub updated: Option<String>,
    /// The state last seen.
    pub state: VideoState,
    /// The scheduled start the published delayed messages point at.
    #[serde(default)]
    pub scheduled_start: Option<DateTime<Utc>>,
    /// When the record was last written; old records are pruned.
    pub touched_at: DateTime<Utc>,
}

/// Last known state of a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoState {
    /// A plain upload.
    Upload,
    /// A scheduled stream or premiere.
    Upcoming,
    /// Live now.
    Live,
    /// A finished stream or premiere.
    Ended,
    /// The Data API did not return it (private or removed).
    Missing,
    /// A tombstone was received.
    Deleted,
}

/// How the Data API classifies a video right now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Class {
    /// A plain upload.
    Upload,
    /// A scheduled stream or premiere starting at the given time.
    Upcoming(DateTime<Utc>),
    /// Live now.
    Live,
    /// A stream or premiere that is over (or upcoming without a schedule).
    Ended,
    /// Not returned by the API.
    Missing,
}

/// Classifies a `videos.list` item (`None` when the API did not return the id).
pub(crate) fn classify(video: Option<&Video>) -> Class {
    let Some(video) = video else {
        return Class::Missing;
    };
    let content = video
        .snippet
        .as_ref()
        .map(|s| s.live_broadcast_content.as_str())
        .unwrap_or("none");
    let scheduled = video.live.as_ref().and_then(|l| l.scheduled_start_time);
    match content {
        "live" => Class::Live,
        "upcoming" => match scheduled {
            Some(start) => Class::Upcoming(start),
            None => Class::Ended,
        },
        _ if video.live.is_some() => Class::Ended,
        _ => Class::Upload,
    }
}

/// One message to publish (routing key and event).
pub(crate) type Outgoing = stargazer_core::outbox::OutboxMessage;

/// Messages published together under one seen-window claim.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    /// The seen-window id (without the entity prefix); the group is published only by
    /// whoever records it first.
    pub claim: String,
    /// The messages.
    pub messages: Vec<Outgoing>,
}

/// The outcome of a decision: groups to publish, then the record to store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Groups to publish, in order.
    pub groups: Vec<Group>,
    /// The record to store afterwards.
    pub record: VideoRecord,
}

/// Everything a decision depends on besides the video.
#[derive(Debug, Clone)]
pub(crate) struct Context<'a> {
    /// Now.
    pub now: DateTime<Utc>,
    /// The entity events are about.
    pub entity: Uuid,
    /// The channel watched.
    pub channel_id: &'a str,
    /// The video.
    pub video_id: &'a str,
    /// The Atom `updated` that triggered the decision, if any.
    pub updated: Option<&'a str>,
    /// Fallback title (from the Atom entry) when the API returned none.
    pub title_hint: Option<&'a str>,
    /// For the channel's first sync: when it began to be tracked. Uploads published in an
    /// earlier second (or with no publication time) are history, not news; `None` otherwise.
    pub history_before: Option<DateTime<Utc>>,
    /// Uploads older than this are not announced.
    pub max_video_age: chrono::Duration,
    /// Reminder lead before the scheduled start.
    pub reminder_lead: chrono::Duration,
    /// Upcoming streams whose start passed longer ago than this are not announced.
    pub stale_upcoming: chrono::Duration,
}

/// The `x-delay-id` of a video's reminder.
pub(crate) fn reminder_delay_id(video_id: &str) -> String {
    format!("reminder:{video_id}")
}

/// The `x-delay-id` of a video's delayed live check.
pub(crate) fn live_delay_id(video_id: &str) -> String {
    format!("live:{video_id}")
}

fn schedule_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn watch_link(video_id: &str) -> String {
    format!("https://www.youtube.com/watch?v={video_id}")
}

fn fields(ctx: &Context<'_>, video: Option<&Video>) -> Map<String, Value> {
    let mut fields = Map::new();
    let snippet = video.and_then(|v| v.snippet.as_ref());
    let title = snippet
        .map(|s| s.title.as_str())
        .filter(|t| !t.is_empty())
        .or(ctx.title_hint)
        .unwrap_or("");
    fields.insert("video_id".into(), json!(ctx.video_id));
    fields.insert("channel_id".into(), json!(ctx.channel_id));
    fields.insert("title".into(), json!(title));
    fields.insert("link".into(), json!(watch_link(ctx.video_id)));
    if let Some(snippet) = snippet {
        if !snippet.channel_title.is_empty() {
            fields.insert("channel_title".into(), json!(snippet.channel_title));
        }
        if let Some(published) = snippet.published_at {
            fields.insert("published_at".into(), json!(published.to_rfc3339()));
        }
    }
    if let Some(thumbnail) = video.and_then(Video::best_thumbnail) {
        fields.insert("thumbnail".into(), json!(thumbnail));
    }
    if let Some(live) = video.and_then(|v| v.live.as_ref()) {
        if let Some(at) = live.scheduled_start_time {
            fields.insert("scheduled_start".into(), json!(at.to_rfc3339()));
        }
        if let Some(at) = live.actual_start_time {
            fields.insert("actual_start".into(), json!(at.to_rfc3339()));
        }
    }
    fields
}

fn event(
    kind: &str,
    id: Uuid,
    ctx: &Context<'_>,
    time: DateTime<Utc>,
    fields: Map<String, Value>,
    control: Map<String, Value>,
) -> Event {
    let _ = ctx;
    Event {
        id,
        kind: kind.to_owned(),
        entity: ctx.entity,
        time,
        fields,
        control,
    }
}

fn scheduled_messages(
    ctx: &Context<'_>,
    video: Option<&Video>,
    start: DateTime<Utc>,
    prev: Option<&VideoRecord>,
) -> Vec<Outgoing> {
    let s = schedule_text(start);
    let base = fields(ctx, video);
    let mut out = vec![Outgoing {
        routing_key: source::YOUTUBE.into(),
        event: event(
            kind::YOUTUBE_SCHEDULED,
            Event::make_id(kind::YOUTUBE_SCHEDULED, ctx.video_id, Some(&s)),
            ctx,
            start,
            base.clone(),
            Map::new(),
        ),
    }];
    let reminder_at = start - ctx.reminder_lead;
    if reminder_at > ctx.now {
        let mut control = Map::new();
        control.insert(DELAY_AT.into(), json!(reminder_at.timestamp_millis()));
        control.insert(DELAY_ID.into(), json!(reminder_delay_id(ctx.video_id)));
        out.push(Outgoing {
            routing_key: key_with_tags(source::YOUTUBE, &[tag::DELAY]),
            event: event(
                kind::YOUTUBE_REMINDER,
                Event::make_id(kind::YOUTUBE_REMINDER, ctx.video_id, Some(&s)),
                ctx,
                start,
                base.clone(),
                control,
            ),
        });
    } else if let Some(prev_start) = pending_start(prev, ctx.now) {
        // Moved so close that the reminder is moot; the old one would fire at the wrong time.
        out.push(reminder_cancel(ctx, video, prev_start));
    }
    let mut control = Map::new();
    control.insert(DELAY_AT.into(), json!(start.timestamp_millis()));
    control.insert(DELAY_ID.into(), json!(live_delay_id(ctx.video_id)));
    control.insert(LIVE_CHECK_VIDEO.into(), json!(ctx.video_id));
    out.push(Outgoing {
        routing_key: key_with_tags(source::YOUTUBE, &[tag::DELAY, tag::LIVE_CHECK]),
        event: event(
            kind::YOUTUBE_LIVE,
            Event::make_id(kind::YOUTUBE_LIVE, ctx.video_id, Some(&s)),
            ctx,
            start,
            base,
            control,
        ),
    });
    out
}

fn reminder_cancel(ctx: &Context<'_>, video: Option<&Video>, start: DateTime<Utc>) -> Outgoing {
    let s = schedule_text(start);
    let mut control = Map::new();
    control.insert(
        DELAY_AT.into(),
        json!((start - ctx.reminder_lead).timestamp_millis()),
    );
    control.insert(DELAY_ID.into(), json!(reminder_delay_id(ctx.video_id)));
    control.insert(DELAY_CANCEL.into(), json!(true));
    Outgoing {
        routing_key: key_with_tags(source::YOUTUBE, &[tag::DELAY]),
        event: event(
            kind::YOUTUBE_REMINDER,
            Event::make_id(
                kind::YOUTUBE_REMINDER,
                ctx.video_id,
                Some(&format!("cancel@{s}")),
            ),
            ctx,
            start,
            fields(ctx, video),
            control,
        ),
    }
}

fn live_cancel(ctx: &Context<'_>, video: Option<&Video>, start: DateTime<Utc>) -> Outgoing {
    let s = schedule_text(start);
    let mut control = Map::new();
    control.insert(DELAY_AT.into(), json!(start.timestamp_millis()));
    control.insert(DELAY_ID.into(), json!(live_delay_id(ctx.video_id)));
    control.insert(DELAY_CANCEL.into(), json!(true));
    control.insert(LIVE_CHECK_VIDEO.into(), json!(ctx.video_id));
    Outgoing {
        routing_key: key_with_tags(source::YOUTUBE, &[tag::DELAY, tag::LIVE_CHECK]),
        event: event(
            kind::YOUTUBE_LIVE,
            Event::make_id(
                kind::YOUTUBE_LIVE,
                ctx.video_id,
                Some(&format!("cancel@{s}")),
            ),
            ctx,
            start,
            fields(ctx, video),
            control,
        ),
    }
}

fn cancel_group(ctx: &Context<'_>, video: Option<&Video>, start: DateTime<Utc>) -> Group {
    Group {
        claim: format!("cancel/{}/{}", ctx.video_id, schedule_text(start)),
        messages: vec![
            reminder_cancel(ctx, video, start),
            live_cancel(ctx, video, start),
        ],
    }
}

/// The scheduled start of a previously recorded stream whose delayed messages are still
/// pending.
fn pending_start(prev: Option<&VideoRecord>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let prev = prev?;
    match (prev.state, prev.scheduled_start) {
        (VideoState::Upcoming, Some(start)) if start > now => Some(start),
        _ => None,
    }
}

/// Decides what to publish for a classified video.
pub(crate) fn decide(
    prev: Option<&VideoRecord>,
    class: &Class,
    video: Option<&Video>,
    ctx: &Context<'_>,
) -> Plan {
    let updated = ctx
        .updated
        .map(str::to_owned)
        .or_else(|| prev.and_then(|p| p.updated.clone()));
    let record = |state: VideoState, scheduled_start: Option<DateTime<Utc>>| VideoRecord {
        updated: updated.clone(),
        state,
        scheduled_start,
        touched_at: ctx.now,
    };
    let prev_state = prev.map(|p| p.state);
    let pending = pending_start(prev, ctx.now);
    let mut groups = Vec::new();

    let plan_record = match class {
        Class::Upload => {
            if let Some(start) = pending {
                groups.push(cancel_group(ctx, video, start));
            }
            let published = video
                .and_then(|v| v.snippet.as_ref())
                .and_then(|s| s.published_at);
            let fresh = published.is_some_and(|at| ctx.now - at <= ctx.max_video_age);
            // Whole seconds: the Data API gives `publishedAt` to the second, so an upload in
            // the very second tracking began counts as news.
            let history = ctx.history_before.is_some_and(|before| {
                published.is_none_or(|at| at.timestamp() < before.timestamp())
            });
            if prev_state != Some(VideoState::Upload) && !history && fresh {
                let id = Event::make_id(kind::YOUTUBE_VIDEO, ctx.video_id, None);
                groups.push(Group {
                    claim: id.to_string(),
                    messages: vec![Outgoing {
                        routing_key: source::YOUTUBE.into(),
                        event: event(
                            kind::YOUTUBE_VIDEO,
                            id,
                            ctx,
                            published.unwrap_or(ctx.now),
                            fields(ctx, video),
                            Map::new(),
                        ),
                    }],
                });
            }
            record(VideoState::Upload, None)
        }
        Class::Upcoming(start) => {
            let start = *start;
            let same = prev.is_some_and(|p| {
                p.state == VideoState::Upcoming && p.scheduled_start == Some(start)
            });
            let stale = ctx.now - start > ctx.stale_upcoming;
            if !same && !stale {
                let previous = prev
                    .filter(|p| p.state == VideoState::Upcoming)
                    .and_then(|p| p.scheduled_start)
                    .map(schedule_text)
                    .unwrap_or_else(|| "-".into());
                groups.push(Group {
                    claim: format!("sched/{}/{}/{previous}", ctx.video_id, schedule_text(start)),
                    messages: scheduled_messages(ctx, video, start, prev),
                });
            }
            record(VideoState::Upcoming, Some(start))
        }
        Class::Live => {
            let scheduled = video
                .and_then(|v| v.live.as_ref())
                .and_then(|l| l.scheduled_start_time)
                .or(pending);
            let delayed_fired = prev.is_some_and(|p| {
                p.state == VideoState::Upcoming && p.scheduled_start.is_some_and(|s| s <= ctx.now)
            });
            if prev_state != Some(VideoState::Live) && !delayed_fired {
                let s = scheduled.map(schedule_text);
                let id = Event::make_id(kind::YOUTUBE_LIVE, ctx.video_id, s.as_deref());
                let mut messages = Vec::new();
                let claim = match pending {
                    Some(start) => {
                        messages.push(reminder_cancel(ctx, video, start));
                        messages.push(live_cancel(ctx, video, start));
                        format!("early/{}/{}", ctx.video_id, schedule_text(start))
                    }
                    None => id.to_string(),
                };
                let time = video
                    .and_then(|v| v.live.as_ref())
                    .and_then(|l| l.actual_start_time)
                    .unwrap_or(ctx.now);
                messages.push(Outgoing {
                    routing_key: source::YOUTUBE.into(),
                    event: event(
                        kind::YOUTUBE_LIVE,
                        id,
                        ctx,
                        time,
                        fields(ctx, video),
                        Map::new(),
                    ),
                });
                groups.push(Group { claim, messages });
            }
            record(VideoState::Live, scheduled)
        }
        Class::Ended | Class::Missing => {
            if let Some(start) = pending {
                groups.push(cancel_group(ctx, video, start));
            }
            let state = if *class == Class::Ended {
                VideoState::Ended
            } else {
                VideoState::Missing
            };
            record(state, None)
        }
    };
    Plan {
        groups,
        record: plan_record,
    }
}

/// Decides what to publish for a tombstone: cancels when a stream was pending.
pub(crate) fn decide_tombstone(prev: Option<&VideoRecord>, ctx: &Context<'_>) -> Plan {
    let mut groups = Vec::new();
    if let Some(start) = pending_start(prev, ctx.now) {
        groups.push(cancel_group(ctx, None, start));
    }
    Plan {
        groups,
        record: VideoRecord {
            updated: prev.and_then(|p| p.updated.clone()),
            state: VideoState::Deleted,
            scheduled_start: None,
            touched_at: ctx.now,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_api::{LiveStreamingDetails, Snippet};
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn ctx() -> Context<'static> {
        Context {
            now: now(),
            entity: Uuid::from_u128(7),
            channel_id: "UC1",
            video_id: "V1",
            updated: Some("u1"),
            title_hint: None,
            history_before: None,
            max_video_age: Duration::hours(48),
            reminder_lead: Duration::minutes(30),
            stale_upcoming: Duration::hours(24),
        }
    }

    fn video(content: &str, scheduled: Option<DateTime<Utc>>, started: bool) -> Video {
        Video {
            id: "V1".into(),
            snippet: Some(Snippet {
                published_at: Some(now() - Duration::hours(1)),
                channel_id: "UC1".into(),
                title: "title".into(),
                channel_title: "ch".into(),
                thumbnails: Default::default(),
                live_broadcast_content: content.into(),
            }),
            live: (scheduled.is_some() || started).then(|| LiveStreamingDetails {
                scheduled_start_time: scheduled,
                actual_start_time: started.then(now),
                actual_end_time: None,
            }),
        }
    }

    fn keys(plan: &Plan) -> Vec<(String, String)> {
        plan.groups
            .iter()
            .flat_map(|g| g.messages.iter())
            .map(|m| (m.event.kind.clone(), m.routing_key.clone()))
            .collect()
    }

    #[test]
    fn fresh_upload_is_announced_once() {
        let v = video("none", None, false);
        let plan = decide(None, &classify(Some(&v)), Some(&v), &ctx());
        assert_eq!(
            keys(&plan),
            vec![("youtube.video".into(), "youtube".into())]
        );
        let again = decide(Some(&plan.record), &classify(Some(&v)), Some(&v), &ctx());
        assert!(again.groups.is_empty());
    }

    #[test]
    fn old_or_initial_uploads_are_history() {
        let mut v = video("none", None, false);
        let initial = Context {
            history_before: Some(now() - Duration::minutes(30)),
            ..ctx()
        };
        // Published an hour ago, before the channel was tracked.
        assert!(decide(None, &Class::Upload, Some(&v), &initial)
            .groups
            .is_empty());
        // Published after tracking began (a first poll that failed until now): news.
        let mut recent = v.clone();
        recent.snippet.as_mut().unwrap().published_at = Some(now() - Duration::minutes(10));
        assert_eq!(
            keys(&decide(None, &Class::Upload, Some(&recent), &initial)),
            vec![("youtube.video".into(), "youtube".into())]
        );
        v.snippet.as_mut().unwrap().published_at = Some(now() - Duration::days(3));
        assert!(decide(None, &Class::Upload, Some(&v), &ctx())
            .groups
            .is_empty());
    }

    #[test]
    fn upcoming_publishes_scheduled_reminder_and_live_check() {
        let start = now() + Duration::hours(2);
        let v = video("upcoming", Some(start), false);
        let plan = decide(None, &classify(Some(&v)), Some(&v), &ctx());
        assert_eq!(
            keys(&plan),
            vec![
                ("youtube.scheduled".into(), "youtube".into()),
                ("youtube.reminder".into(), "youtube.delay".into()),
                ("youtube.live".into(), "youtube.live_check.delay".into()),
            ]
        );
        let msgs = &plan.groups[0].messages;
        assert_eq!(
            msgs[1].event.control["x-delay-at"],
            json!((start - Duration::minutes(30)).timestamp_millis())
        );
        assert_eq!(msgs[1].event.control["x-delay-id"], json!("reminder:V1"));
        assert_eq!(
            msgs[2].event.control["x-delay-at"],
            json!(start.timestamp_millis())
        );
        assert_eq!(msgs[2].event.control["x-delay-id"], json!("live:V1"));
        assert_eq!(msgs[2].event.control["x-live-check-video"], json!("V1"));
        assert_eq!(plan.record.state, VideoState::Upcoming);
        // A re-push with the same schedule publishes nothing.
        let again = decide(Some(&plan.record), &classify(Some(&v)), Some(&v), &ctx());
        assert!(again.groups.is_empty());
    }

    #[test]
    fn reschedule_publishes_new_ids_with_the_same_delay_ids() {
        let start = now() + Duration::hours(2);
        let v = video("upcoming", Some(start), false);
        let first = decide(None, &classify(Some(&v)), Some(&v), &ctx());
        let later = start + Duration::hours(1);
        let v2 = video("upcoming", Some(later), false);
        let second = decide(Some(&first.record), &classify(Some(&v2)), Some(&v2), &ctx());
        let (a, b) = (&first.groups[0].messages, &second.groups[0].messages);
        assert_ne!(a[0].event.id, b[0].event.id);
        assert_ne!(first.groups[0].claim, second.groups[0].claim);
        assert_eq!(
            a[1].event.control["x-delay-id"],
            b[1].event.control["x-delay-id"]
        );
        assert_eq!(
            a[2].event.control["x-delay-id"],
            b[2].event.control["x-delay-id"]
        );
        // Back to the first schedule: a new claim, so the delays are replaced again.
        let third = decide(Some(&second.record), &classify(Some(&v)), Some(&v), &ctx());
        assert_ne!(third.groups[0].claim, first.groups[0].claim);
        assert_eq!(third.groups[0].messages[0].event.id, a[0].event.id);
    }

    #[test]
    fn reschedule_inside_the_reminder_lead_cancels_the_reminder() {
        let start = now() + Duration::hours(2);
        let v = video("upcoming", Some(start), false);
        let first = decide(None, &classify(Some(&v)), Some(&v), &ctx());
        let soon = now() + Duration::minutes(10);
        let v2 = video("upcoming", Some(soon), false);
        let second = decide(Some(&first.record), &classify(Some(&v2)), Some(&v2), &ctx());
        let msgs = &second.groups[0].messages;
        assert_eq!(msgs[1].event.kind, "youtube.reminder");
        assert_eq!(msgs[1].event.control["x-delay-cancel"], json!(true));
        assert_eq!(msgs[1].event.control["x-delay-id"], json!("reminder:V1"));
    }

    #[test]
    fn live_without_history_is_ready_and_announced_once() {
        let v = video("live", None, true);
        let plan = decide(None, &classify(Some(&v)), Some(&v), &ctx());
        assert_eq!(keys(&plan), vec![("youtube.live".into(), "youtube".into())]);
        assert!(plan.groups[0].messages[0].event.control.is_empty());
        assert!(decide(Some(&plan.record), &Class::Live, Some(&v), &ctx())
            .groups
            .is_empty());
    }

    #[test]
    fn early_start_cancels_delays_and_goes_ready() {
        let start = now() + Duration::hours(2);
        let v = video("upcoming", Some(start), false);
        let first = decide(None, &classify(Some(&v)), Some(&v), &ctx());
        let live = video("live", Some(start), true);
        let plan = decide(
            Some(&first.record),
            &classify(Some(&live)),
            Some(&live),
            &ctx(),
        );
        let msgs = &plan.groups[0].messages;
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0].event.control["x-delay-cancel"], json!(true));
        assert_eq!(msgs[1].event.control["x-delay-cancel"], json!(true));
        assert_eq!(msgs[2].routing_key, "youtube");
        // Same id as the delayed one, so a consumer that saw both delivers once.
        assert_eq!(msgs[2].event.id, first.groups[0].messages[2].event.id);
    }

    #[test]
    fn live_after_the_delayed_check_fired_publishes_nothing() {
        let start = now() - Duration::minutes(5);
        let prev = VideoRecord {
            updated: None,
            state: VideoState::Upcoming,
            scheduled_start: Some(start),
            touched_at: now(),
        };
        let live = video("live", Some(start), true);
        assert!(decide(Some(&prev), &Class::Live, Some(&live), &ctx())
            .groups
            .is_empty());
    }

    #[test]
    fn tombstone_of_a_pending_stream_cancels_both_delays() {
        let start = now() + Duration::hours(2);
        let v = video("upcoming", Some(start), false);
        let first = decide(None, &classify(Some(&v)), Some(&v), &ctx());
        let plan = decide_tombstone(Some(&first.record), &ctx());
        let msgs = &plan.groups[0].messages;
        assert_eq!(msgs[0].event.control["x-delay-id"], json!("reminder:V1"));
        assert_eq!(msgs[1].event.control["x-delay-id"], json!("live:V1"));
        assert!(msgs
            .iter()
            .all(|m| m.event.control["x-delay-cancel"] == json!(true)));
        assert_eq!(plan.record.state, VideoState::Deleted);
        assert!(decide_tombstone(Some(&plan.record), &ctx())
            .groups
            .is_empty());
        assert!(decide_tombstone(None, &ctx()).groups.is_empty());
    }

    #[test]
    fn stale_upcoming_is_not_announced() {
        let v = video("upcoming", Some(now() - Duration::days(3)), false);
        assert!(decide(None, &classify(Some(&v)), Some(&v), &ctx())
            .groups
            .is_empty());
    }

    #[test]
    fn classification_of_api_items() {
        assert_eq!(classify(None), Class::Missing);
        assert_eq!(classify(Some(&video("none", None, false))), Class::Upload);
        let ended = video("none", Some(now()), true);
        assert_eq!(classify(Some(&ended)), Class::Ended);
        assert_eq!(
            classify(Some(&video("upcoming", None, false))),
            Class::Ended
        );
    }
}
