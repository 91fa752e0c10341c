//! What to publish for a video, decided from what the Data API says now and what the worker
//! recorded about it before. Pure functions: no I/O, so every transition is unit-tested.
//!
//! Transitions (S = scheduled start, "pending" = S still in the future):
//! - upload, fresh (published within `max_video_age_hours`, and — in the channel's first
//!   sync — after the channel began to be tracked) → `youtube.video`, or `youtube.short`
//!   for a Short (see [`format_of`]);
//! - upcoming, first seen → `youtube.scheduled` (`youtube.premiere` for a premiere),
//!   ready; one `youtube.reminder` per offered lead on `delay` firing at S − lead
//!   (`reminder:<id>:<lead seconds>`), and `youtube.live` on `live_check.delay` firing at S
//!   (`live:<id>`);
//! - upcoming with a new S → `youtube.rescheduled` (with `previous_start`), ready, and the
//!   delayed messages again under the same delay ids, which replaces the pending ones; a
//!   lead whose time already passed gets no reminder (and its pending one is cancelled);
//! - live: announced now unless a delayed `youtube.live` for it already fired; when it was
//!   pending (started early) the delayed messages are cancelled and `youtube.live` is
//!   published ready;
//! - ended with an `actualEndTime`, after it was live or scheduled → `youtube.ended` with
//!   the duration (and cancels, when it was still pending);
//! - tombstone, disappearance or end without a start of a scheduled stream → cancels of the
//!   delayed messages (when pending) and `youtube.cancelled`, ready;
//! - anything else (same state re-pushed, title edit, old upload) → nothing.
//!
//! Every event of a video carries `format` (stream, premiere, short, video) and
//! `members_only`; the format a stream had while upcoming or live is kept in the record,
//! since a premiere's duration is all that tells it from a stream and an ended stream has
//! a duration too.
//!
//! Each group of messages is guarded by a claim in the seen-window so two workers (or a
//! restart racing a re-push) never publish the same group twice.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use stargazer_core::contract::control::{DELAY_AT, DELAY_CANCEL, DELAY_ID, LIVE_CHECK_VIDEO};
use stargazer_core::contract::{field, format, kind, source, tag};
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
    /// The format decided while it was upcoming or live (`contract::format`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
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

/// Longest Short, seconds (YouTube allows Shorts up to three minutes since October 2024).
pub(crate) const SHORT_MAX_SECONDS: u64 = 180;

/// Markers VTubers put in titles and descriptions of members-only videos; the Data API has
/// no field for it.
const MEMBERS_MARKERS: [&str; 9] = [
    "members only",
    "members-only",
    "member only",
    "member-only",
    "membership only",
    "メン限",
    "メンバー限定",
    "会员限定",
    "會員限定",
];

/// What a video is, from what the Data API and the feed say (docs/ARCHITECTURE.md §4):
/// - `premiere`: it has `liveStreamingDetails` and a non-zero `contentDetails.duration`
///   while upcoming or live (a live stream's duration is `P0D` until it ends; a premiere is
///   a finished video, so its length is known in advance);
/// - `stream`: any other video with `liveStreamingDetails`;
/// - `short`: no `liveStreamingDetails`, at most [`SHORT_MAX_SECONDS`] long, and marked as a
///   Short — its feed link is `/shorts/<id>` or its title or description carries `#shorts`;
/// - `video`: everything else.
///
/// Known failures: a Short with neither marker is a `video`; a premiere whose
/// `contentDetails` the API left out is a `stream`.
pub(crate) fn format_of(video: Option<&Video>, feed_link: Option<&str>) -> &'static str {
    let Some(video) = video else {
        return format::VIDEO;
    };
    let seconds = video.duration_seconds();
    let class = classify(Some(video));
    if video.live.is_some() || matches!(class, Class::Upcoming(_) | Class::Live) {
        return match class {
            Class::Upcoming(_) | Class::Live if seconds.is_some_and(|s| s > 0) => format::PREMIERE,
            _ => format::STREAM,
        };
    }
    let text = video
        .snippet
        .as_ref()
        .map(|s| format!("{} {}", s.title, s.description).to_lowercase())
        .unwrap_or_default();
    let marked =
        feed_link.is_some_and(|link| link.contains("/shorts/")) || text.contains("#shorts");
    if marked && seconds.is_some_and(|s| s > 0 && s <= SHORT_MAX_SECONDS) {
        format::SHORT
    } else {
        format::VIDEO
    }
}

/// Whether the video is for channel members only, from the markers in its title or
/// description (docs/ARCHITECTURE.md §4). Known failures: an unmarked members-only video
/// counts as public; a public video that mentions a marker counts as members-only.
pub(crate) fn members_only(video: Option<&Video>) -> bool {
    video.and_then(|v| v.snippet.as_ref()).is_some_and(|s| {
        let text = format!("{} {}", s.title, s.description).to_lowercase();
        MEMBERS_MARKERS.iter().any(|marker| text.contains(marker))
    })
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

/// The worker's timing settings, the same for every decision.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    /// Uploads older than this are not announced.
    pub max_video_age: chrono::Duration,
    /// Reminder leads offered, one delayed reminder each.
    pub reminder_leads: Vec<chrono::Duration>,
    /// The lead of chats that chose none (one of `reminder_leads`).
    pub default_lead: chrono::Duration,
    /// Upcoming streams whose start passed longer ago than this are not announced.
    pub stale_upcoming: chrono::Duration,
}

impl Timing {
    /// From the worker's configuration: the offered leads, sorted, without repeats, with
    /// the default lead among them.
    pub(crate) fn from_config(config: &crate::config::YoutubeConfig) -> Self {
        let seconds = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
        let default_lead = seconds(config.reminder_lead_seconds);
        let mut reminder_leads: Vec<_> = config
            .reminder_leads_seconds
            .iter()
            .map(|&s| seconds(s))
            .chain([default_lead])
            .collect();
        reminder_leads.sort();
        reminder_leads.dedup();
        Self {
            max_video_age: chrono::Duration::hours(
                i64::try_from(config.max_video_age_hours).unwrap_or(i64::MAX),
            ),
            reminder_leads,
            default_lead,
            stale_upcoming: chrono::Duration::hours(
                i64::try_from(config.stale_upcoming_hours).unwrap_or(i64::MAX),
            ),
        }
    }
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
    /// The Atom entry's alternate link (a Short's is `/shorts/<id>`), if any.
    pub feed_link: Option<&'a str>,
    /// For the channel's first sync: when it began to be tracked. Uploads published in an
    /// earlier second (or with no publication time) are history, not news; `None` otherwise.
    pub history_before: Option<DateTime<Utc>>,
    /// Timing settings.
    pub timing: &'a Timing,
}

/// The `x-delay-id` of a video's reminder at `lead`.
pub(crate) fn reminder_delay_id(video_id: &str, lead: chrono::Duration) -> String {
    format!("reminder:{video_id}:{}", lead.num_seconds())
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

/// The fields every event of the video carries; `format` is the video's format.
fn fields(ctx: &Context<'_>, video: Option<&Video>, format: &str) -> Map<String, Value> {
    let mut fields = Map::new();
    let snippet = video.and_then(|v| v.snippet.as_ref());
    let title = snippet
        .map(|s| s.title.as_str())
        .filter(|t| !t.is_empty())
        .or(ctx.title_hint)
        .unwrap_or("");
    fields.insert(field::VIDEO_ID.into(), json!(ctx.video_id));
    fields.insert("channel_id".into(), json!(ctx.channel_id));
    fields.insert(field::TITLE.into(), json!(title));
    fields.insert(field::LINK.into(), json!(watch_link(ctx.video_id)));
    fields.insert(field::FORMAT.into(), json!(format));
    fields.insert(field::MEMBERS_ONLY.into(), json!(members_only(video)));
    if let Some(snippet) = snippet {
        if !snippet.channel_title.is_empty() {
            fields.insert("channel_title".into(), json!(snippet.channel_title));
        }
        if let Some(published) = snippet.published_at {
            fields.insert("published_at".into(), json!(published.to_rfc3339()));
        }
    }
    if let Some(thumbnail) = video.and_then(Video::best_thumbnail) {
        fields.insert(field::THUMBNAIL.into(), json!(thumbnail));
    }
    if let Some(live) = video.and_then(|v| v.live.as_ref()) {
        if let Some(at) = live.scheduled_start_time {
            fields.insert(field::SCHEDULED_START.into(), json!(at.to_rfc3339()));
        }
        if let Some(at) = live.actual_start_time {
            fields.insert(field::ACTUAL_START.into(), json!(at.to_rfc3339()));
        }
        if let Some(at) = live.actual_end_time {
            fields.insert(field::ACTUAL_END.into(), json!(at.to_rfc3339()));
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
    Event {
        id,
        kind: kind.to_owned(),
        entity: ctx.entity,
        time,
        fields,
        control,
    }
}

fn ready(event: Event) -> Outgoing {
    Outgoing {
        routing_key: source::YOUTUBE.into(),
        event,
    }
}

/// The scheduled (or rescheduled) announcement, one reminder per lead still ahead, and the
/// delayed live check; cancels of the reminders whose time passed when the stream was
/// pending before.
fn scheduled_messages(
    ctx: &Context<'_>,
    video: Option<&Video>,
    format: &str,
    start: DateTime<Utc>,
    prev: Option<&VideoRecord>,
) -> Vec<Outgoing> {
    let s = schedule_text(start);
    let base = fields(ctx, video, format);
    let previous = prev
        .filter(|p| p.state == VideoState::Upcoming)
        .and_then(|p| p.scheduled_start);
    let announcement = match previous {
        Some(previous) => {
            let mut fields = base.clone();
            fields.insert(field::PREVIOUS_START.into(), json!(previous.to_rfc3339()));
            event(
                kind::YOUTUBE_RESCHEDULED,
                Event::make_id(
                    kind::YOUTUBE_RESCHEDULED,
                    ctx.video_id,
                    Some(&format!("{}>{s}", schedule_text(previous))),
                ),
                ctx,
                start,
                fields,
                Map::new(),
            )
        }
        None => {
            let kind = if format == format::PREMIERE {
                kind::YOUTUBE_PREMIERE
            } else {
                kind::YOUTUBE_SCHEDULED
            };
            event(
                kind,
                Event::make_id(kind, ctx.video_id, Some(&s)),
                ctx,
                start,
                base.clone(),
                Map::new(),
            )
        }
    };
    let mut out = vec![ready(announcement)];
    let pending = pending_start(prev, ctx.now);
    for &lead in &ctx.timing.reminder_leads {
        let reminder_at = start - lead;
        if reminder_at > ctx.now {
            let mut control = Map::new();
            control.insert(DELAY_AT.into(), json!(reminder_at.timestamp_millis()));
            control.insert(
                DELAY_ID.into(),
                json!(reminder_delay_id(ctx.video_id, lead)),
            );
            let mut fields = base.clone();
            fields.insert(field::LEAD_SECONDS.into(), json!(lead.num_seconds()));
            fields.insert(
                field::LEAD_DEFAULT.into(),
                json!(lead == ctx.timing.default_lead),
            );
            out.push(Outgoing {
                routing_key: key_with_tags(source::YOUTUBE, &[tag::DELAY]),
                event: event(
                    kind::YOUTUBE_REMINDER,
                    Event::make_id(
                        kind::YOUTUBE_REMINDER,
                        ctx.video_id,
                        Some(&format!("{s}/{}", lead.num_seconds())),
                    ),
                    ctx,
                    start,
                    fields,
                    control,
                ),
            });
        } else if let Some(prev_start) = pending {
            // Moved so close that this reminder is moot; the old one would fire at the
            // wrong time.
            out.push(reminder_cancel(ctx, video, format, prev_start, lead));
        }
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

fn reminder_cancel(
    ctx: &Context<'_>,
    video: Option<&Video>,
    format: &str,
    start: DateTime<Utc>,
    lead: chrono::Duration,
) -> Outgoing {
    let s = schedule_text(start);
    let mut control = Map::new();
    control.insert(DELAY_AT.into(), json!((start - lead).timestamp_millis()));
    control.insert(
        DELAY_ID.into(),
        json!(reminder_delay_id(ctx.video_id, lead)),
    );
    control.insert(DELAY_CANCEL.into(), json!(true));
    Outgoing {
        routing_key: key_with_tags(source::YOUTUBE, &[tag::DELAY]),
        event: event(
            kind::YOUTUBE_REMINDER,
            Event::make_id(
                kind::YOUTUBE_REMINDER,
                ctx.video_id,
                Some(&format!("cancel@{s}/{}", lead.num_seconds())),
            ),
            ctx,
            start,
            fields(ctx, video, format),
            control,
        ),
    }
}

fn live_cancel(
    ctx: &Context<'_>,
    video: Option<&Video>,
    format: &str,
    start: DateTime<Utc>,
) -> Outgoing {
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
            fields(ctx, video, format),
            control,
        ),
    }
}

/// Cancels of every delayed message of a stream pending at `start`.
fn delay_cancels(
    ctx: &Context<'_>,
    video: Option<&Video>,
    format: &str,
    start: DateTime<Utc>,
) -> Vec<Outgoing> {
    let mut out: Vec<Outgoing> = ctx
        .timing
        .reminder_leads
        .iter()
        .map(|&lead| reminder_cancel(ctx, video, format, start, lead))
        .collect();
    out.push(live_cancel(ctx, video, format, start));
    out
}

/// A scheduled stream that will not happen: cancels of its delayed messages when they are
/// still pending, and `youtube.cancelled` for the chats that were told about it.
fn cancel_group(
    ctx: &Context<'_>,
    video: Option<&Video>,
    format: &str,
    start: DateTime<Utc>,
) -> Group {
    let mut messages = if start > ctx.now {
        delay_cancels(ctx, video, format, start)
    } else {
        Vec::new()
    };
    let mut fields = fields(ctx, video, format);
    fields.insert(field::SCHEDULED_START.into(), json!(start.to_rfc3339()));
    let s = schedule_text(start);
    messages.push(ready(event(
        kind::YOUTUBE_CANCELLED,
        Event::make_id(kind::YOUTUBE_CANCELLED, ctx.video_id, Some(&s)),
        ctx,
        ctx.now,
        fields,
        Map::new(),
    )));
    Group {
        claim: format!("cancel/{}/{s}", ctx.video_id),
        messages,
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

/// The scheduled start of a previously recorded upcoming stream, pending or not.
fn upcoming_start(prev: Option<&VideoRecord>) -> Option<DateTime<Utc>> {
    prev.filter(|p| p.state == VideoState::Upcoming)
        .and_then(|p| p.scheduled_start)
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
    let prev_state = prev.map(|p| p.state);
    let pending = pending_start(prev, ctx.now);
    // A stream keeps the format it had while upcoming or live: once ended, a stream has a
    // duration and would look like a premiere.
    let format = match (class, prev.and_then(|p| p.format.as_deref())) {
        (Class::Ended | Class::Missing, Some(recorded)) => recorded.to_owned(),
        _ => format_of(video, ctx.feed_link).to_owned(),
    };
    let record = |state: VideoState, scheduled_start: Option<DateTime<Utc>>| VideoRecord {
        updated: updated.clone(),
        state,
        scheduled_start,
        format: matches!(
            state,
            VideoState::Upcoming | VideoState::Live | VideoState::Ended
        )
        .then(|| format.clone()),
        touched_at: ctx.now,
    };
    let mut groups = Vec::new();

    let plan_record = match class {
        Class::Upload => {
            if let Some(start) = upcoming_start(prev) {
                groups.push(cancel_group(ctx, video, &format, start));
            }
            let published = video
                .and_then(|v| v.snippet.as_ref())
                .and_then(|s| s.published_at);
            let fresh = published.is_some_and(|at| ctx.now - at <= ctx.timing.max_video_age);
            // Whole seconds: the Data API gives `publishedAt` to the second, so an upload in
            // the very second tracking began counts as news.
            let history = ctx.history_before.is_some_and(|before| {
                published.is_none_or(|at| at.timestamp() < before.timestamp())
            });
            if prev_state != Some(VideoState::Upload) && !history && fresh {
                let kind = if format == format::SHORT {
                    kind::YOUTUBE_SHORT
                } else {
                    kind::YOUTUBE_VIDEO
                };
                // The id keeps the `youtube.video` seed, so a redelivery of the same upload
                // classified by an older worker is still recognised.
                let id = Event::make_id(kind::YOUTUBE_VIDEO, ctx.video_id, None);
                groups.push(Group {
                    claim: id.to_string(),
                    messages: vec![ready(event(
                        kind,
                        id,
                        ctx,
                        published.unwrap_or(ctx.now),
                        fields(ctx, video, &format),
                        Map::new(),
                    ))],
                });
            }
            record(VideoState::Upload, None)
        }
        Class::Upcoming(start) => {
            let start = *start;
            let same = prev.is_some_and(|p| {
                p.state == VideoState::Upcoming && p.scheduled_start == Some(start)
            });
            let stale = ctx.now - start > ctx.timing.stale_upcoming;
            if !same && !stale {
                let previous = upcoming_start(prev)
                    .map(schedule_text)
                    .unwrap_or_else(|| "-".into());
                groups.push(Group {
                    claim: format!("sched/{}/{}/{previous}", ctx.video_id, schedule_text(start)),
                    messages: scheduled_messages(ctx, video, &format, start, prev),
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
                        messages.extend(delay_cancels(ctx, video, &format, start));
                        format!("early/{}/{}", ctx.video_id, schedule_text(start))
                    }
                    None => id.to_string(),
                };
                let time = video
                    .and_then(|v| v.live.as_ref())
                    .and_then(|l| l.actual_start_time)
                    .unwrap_or(ctx.now);
                messages.push(ready(event(
                    kind::YOUTUBE_LIVE,
                    id,
                    ctx,
                    time,
                    fields(ctx, video, &format),
                    Map::new(),
                )));
                groups.push(Group { claim, messages });
            }
            record(VideoState::Live, scheduled)
        }
        Class::Ended => {
            let live = video.and_then(|v| v.live.as_ref());
            let ended_at = live.and_then(|l| l.actual_end_time);
            let started_at = live.and_then(|l| l.actual_start_time);
            let was_announced = matches!(prev_state, Some(VideoState::Live | VideoState::Upcoming));
            match (ended_at, started_at) {
                (Some(end), Some(begin)) if was_announced => {
                    let mut messages = pending
                        .map(|start| delay_cancels(ctx, video, &format, start))
                        .unwrap_or_default();
                    let mut fields = fields(ctx, video, &format);
                    fields.insert(
                        field::DURATION_SECONDS.into(),
                        json!((end - begin).num_seconds().max(0)),
                    );
                    let id = Event::make_id(kind::YOUTUBE_ENDED, ctx.video_id, None);
                    messages.push(ready(event(
                        kind::YOUTUBE_ENDED,
                        id,
                        ctx,
                        end,
                        fields,
                        Map::new(),
                    )));
                    groups.push(Group {
                        claim: id.to_string(),
                        messages,
                    });
                }
                _ => {
                    if let Some(start) = upcoming_start(prev) {
                        groups.push(cancel_group(ctx, video, &format, start));
                    }
                }
            }
            record(VideoState::Ended, None)
        }
        Class::Missing => {
            if let Some(start) = upcoming_start(prev) {
                groups.push(cancel_group(ctx, video, &format, start));
            }
            record(VideoState::Missing, None)
        }
    };
    Plan {
        groups,
        record: plan_record,
    }
}

/// Decides what to publish for a tombstone: a scheduled stream is cancelled.
pub(crate) fn decide_tombstone(prev: Option<&VideoRecord>, ctx: &Context<'_>) -> Plan {
    let mut groups = Vec::new();
    let format = prev
        .and_then(|p| p.format.clone())
        .unwrap_or_else(|| format::STREAM.to_owned());
    if let Some(start) = upcoming_start(prev) {
        groups.push(cancel_group(ctx, None, &format, start));
    }
    Plan {
        groups,
        record: VideoRecord {
            updated: prev.and_then(|p| p.updated.clone()),
            state: VideoState::Deleted,
            scheduled_start: None,
            format: None,
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

    fn timing(leads: &[i64]) -> &'static Timing {
        Box::leak(Box::new(Timing {
            max_video_age: Duration::hours(48),
            reminder_leads: leads.iter().map(|&m| Duration::minutes(m)).collect(),
            default_lead: Duration::minutes(30),
            stale_upcoming: Duration::hours(24),
        }))
    }

    fn ctx() -> Context<'static> {
        Context {
            now: now(),
            entity: Uuid::from_u128(7),
            channel_id: "UC1",
            video_id: "V1",
            updated: Some("u1"),
            title_hint: None,
            feed_link: None,
            history_before: None,
            timing: timing(&[30]),
        }
    }

    fn video(content: &str, scheduled: Option<DateTime<Utc>>, started: bool) -> Video {
        Video {
            id: "V1".into(),
            snippet: Some(Snippet {
                published_at: Some(now() - Duration::hours(1)),
                channel_id: "UC1".into(),
                title: "title".into(),
                description: String::new(),
                channel_title: "ch".into(),
                thumbnails: Default::default(),
                live_broadcast_content: content.into(),
            }),
            live: (scheduled.is_some() || started).then(|| LiveStreamingDetails {
                scheduled_start_time: scheduled,
                actual_start_time: started.then(now),
                actual_end_time: None,
            }),
            content: Some(crate::data_api::ContentDetails {
                duration: Some("P0D".into()),
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
        assert_eq!(
            msgs[1].event.control["x-delay-id"],
            json!("reminder:V1:1800")
        );
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
        assert_eq!(a[0].event.kind, "youtube.scheduled");
        for (plan, previous) in [(&second, start), (&third, later)] {
            let announced = &plan.groups[0].messages[0];
            assert_eq!(announced.event.kind, "youtube.rescheduled");
            assert_eq!(announced.routing_key, "youtube");
            assert_eq!(
                announced.event.fields["previous_start"],
                json!(previous.to_rfc3339())
            );
        }
        assert_ne!(
            third.groups[0].messages[0].event.id,
            second.groups[0].messages[0].event.id
        );
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
        assert_eq!(
            msgs[1].event.control["x-delay-id"],
            json!("reminder:V1:1800")
        );
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
            format: None,
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
        assert_eq!(
            msgs[0].event.control["x-delay-id"],
            json!("reminder:V1:1800")
        );
        assert_eq!(msgs[1].event.control["x-delay-id"], json!("live:V1"));
        assert!(msgs[..2]
            .iter()
            .all(|m| m.event.control["x-delay-cancel"] == json!(true)));
        assert_eq!(msgs[2].event.kind, "youtube.cancelled");
        assert_eq!(msgs[2].routing_key, "youtube");
        assert!(msgs[2].event.control.is_empty());
        assert_eq!(msgs.len(), 3);
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

#[cfg(test)]
mod lifecycle_tests {
    use super::*;
    use crate::data_api::{ContentDetails, LiveStreamingDetails, Snippet};
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn timing() -> &'static Timing {
        Box::leak(Box::new(Timing {
            max_video_age: Duration::hours(48),
            reminder_leads: [5, 15, 30, 60].map(Duration::minutes).to_vec(),
            default_lead: Duration::minutes(30),
            stale_upcoming: Duration::hours(24),
        }))
    }

    fn ctx_at(now: DateTime<Utc>) -> Context<'static> {
        Context {
            now,
            entity: Uuid::from_u128(7),
            channel_id: "UC1",
            video_id: "V1",
            updated: None,
            title_hint: None,
            feed_link: None,
            history_before: None,
            timing: timing(),
        }
    }

    fn ctx() -> Context<'static> {
        ctx_at(now())
    }

    struct V {
        content: &'static str,
        scheduled: Option<DateTime<Utc>>,
        started: Option<DateTime<Utc>>,
        ended: Option<DateTime<Utc>>,
        duration: &'static str,
        title: &'static str,
        description: &'static str,
    }

    impl Default for V {
        fn default() -> Self {
            Self {
                content: "none",
                scheduled: None,
                started: None,
                ended: None,
                duration: "P0D",
                title: "title",
                description: "",
            }
        }
    }

    impl V {
        fn build(self) -> Video {
            let streamed = self.scheduled.is_some() || self.started.is_some();
            Video {
                id: "V1".into(),
                snippet: Some(Snippet {
                    published_at: Some(now() - Duration::hours(1)),
                    channel_id: "UC1".into(),
                    title: self.title.into(),
                    description: self.description.into(),
                    channel_title: "ch".into(),
                    thumbnails: Default::default(),
                    live_broadcast_content: self.content.into(),
                }),
                live: streamed.then_some(LiveStreamingDetails {
                    scheduled_start_time: self.scheduled,
                    actual_start_time: self.started,
                    actual_end_time: self.ended,
                }),
                content: Some(ContentDetails {
                    duration: Some(self.duration.into()),
                }),
            }
        }
    }

    fn upcoming(start: DateTime<Utc>) -> Video {
        V {
            content: "upcoming",
            scheduled: Some(start),
            ..V::default()
        }
        .build()
    }

    fn decide_v(prev: Option<&VideoRecord>, v: &Video, ctx: &Context<'_>) -> Plan {
        decide(prev, &classify(Some(v)), Some(v), ctx)
    }

    fn ready_kinds(plan: &Plan) -> Vec<String> {
        plan.groups
            .iter()
            .flat_map(|g| &g.messages)
            .filter(|m| m.routing_key == "youtube")
            .map(|m| m.event.kind.clone())
            .collect()
    }

    #[test]
    fn one_reminder_per_lead_still_ahead_the_default_marked() {
        let start = now() + Duration::minutes(20);
        let plan = decide_v(None, &upcoming(start), &ctx());
        let reminders: Vec<_> = plan.groups[0]
            .messages
            .iter()
            .filter(|m| m.event.kind == "youtube.reminder")
            .map(|m| &m.event)
            .collect();
        // 30 and 60 minutes before a start 20 minutes away already passed.
        assert_eq!(reminders.len(), 2);
        assert_eq!(reminders[0].fields["lead_seconds"], json!(300));
        assert_eq!(reminders[1].fields["lead_seconds"], json!(900));
        assert!(reminders
            .iter()
            .all(|r| r.fields["lead_default"] == json!(false)));
        assert_eq!(reminders[0].control["x-delay-id"], json!("reminder:V1:300"));
        assert_ne!(reminders[0].id, reminders[1].id);

        let far = decide_v(None, &upcoming(now() + Duration::hours(3)), &ctx());
        let defaults: Vec<_> = far.groups[0]
            .messages
            .iter()
            .filter(|m| m.event.fields.get("lead_default") == Some(&json!(true)))
            .map(|m| m.event.fields["lead_seconds"].clone())
            .collect();
        assert_eq!(defaults, [json!(1800)]);
    }

    #[test]
    fn moving_a_stream_closer_cancels_the_leads_that_passed() {
        let start = now() + Duration::hours(3);
        let first = decide_v(None, &upcoming(start), &ctx());
        let soon = now() + Duration::minutes(10);
        let second = decide_v(Some(&first.record), &upcoming(soon), &ctx());
        let msgs = &second.groups[0].messages;
        let cancelled: Vec<_> = msgs
            .iter()
            .filter(|m| m.event.control.get("x-delay-cancel") == Some(&json!(true)))
            .map(|m| m.event.control["x-delay-id"].clone())
            .collect();
        assert_eq!(
            cancelled,
            [
                json!("reminder:V1:900"),
                json!("reminder:V1:1800"),
                json!("reminder:V1:3600")
            ]
        );
        assert_eq!(msgs[0].event.kind, "youtube.rescheduled");
        assert_eq!(
            msgs.iter()
                .filter(|m| m.event.kind == "youtube.reminder"
                    && m.event.control.get("x-delay-cancel").is_none())
                .count(),
            1
        );
    }

    #[test]
    fn a_live_stream_that_ends_is_announced_ended_with_its_duration_once() {
        let start = now() - Duration::hours(2);
        let live = V {
            content: "live",
            scheduled: Some(start),
            started: Some(start),
            ..V::default()
        }
        .build();
        let on_air = decide_v(None, &live, &ctx());
        assert_eq!(ready_kinds(&on_air), ["youtube.live"]);
        let end = start + Duration::minutes(133);
        let over = V {
            scheduled: Some(start),
            started: Some(start),
            ended: Some(end),
            duration: "PT2H13M",
            ..V::default()
        }
        .build();
        let plan = decide_v(Some(&on_air.record), &over, &ctx());
        assert_eq!(ready_kinds(&plan), ["youtube.ended"]);
        let ended = &plan.groups[0].messages[0].event;
        assert_eq!(ended.fields["duration_seconds"], json!(133 * 60));
        assert_eq!(ended.fields["actual_end"], json!(end.to_rfc3339()));
        // The stream stays a stream although it now has a duration.
        assert_eq!(ended.fields["format"], json!("stream"));
        assert_eq!(plan.record.state, VideoState::Ended);
        assert!(decide_v(Some(&plan.record), &over, &ctx())
            .groups
            .is_empty());
        // An archive first seen after the end is not news.
        assert!(decide_v(None, &over, &ctx()).groups.is_empty());
    }

    #[test]
    fn a_scheduled_stream_that_disappears_or_loses_its_schedule_is_cancelled() {
        let start = now() + Duration::hours(2);
        let first = decide_v(None, &upcoming(start), &ctx());
        for plan in [
            decide(Some(&first.record), &Class::Missing, None, &ctx()),
            decide_v(
                Some(&first.record),
                &V {
                    content: "upcoming",
                    ..V::default()
                }
                .build(),
                &ctx(),
            ),
        ] {
            assert_eq!(ready_kinds(&plan), ["youtube.cancelled"]);
            let msgs = &plan.groups[0].messages;
            // Four reminders and the live check are cancelled first.
            assert_eq!(msgs.len(), 6);
            assert!(msgs[..5]
                .iter()
                .all(|m| m.event.control["x-delay-cancel"] == json!(true)));
        }
        // Past its start (the delays fired already): only the announcement.
        let late = ctx_at(start + Duration::minutes(10));
        let plan = decide(Some(&first.record), &Class::Missing, None, &late);
        assert_eq!(ready_kinds(&plan), ["youtube.cancelled"]);
        assert_eq!(plan.groups[0].messages.len(), 1);
    }

    #[test]
    fn premieres_are_their_own_kind_and_keep_their_format() {
        let start = now() + Duration::hours(1);
        let premiere = V {
            content: "upcoming",
            scheduled: Some(start),
            duration: "PT4M12S",
            ..V::default()
        }
        .build();
        let plan = decide_v(None, &premiere, &ctx());
        assert_eq!(ready_kinds(&plan), ["youtube.premiere"]);
        assert!(plan.groups[0]
            .messages
            .iter()
            .all(|m| m.event.fields["format"] == json!("premiere")));
        assert_eq!(plan.record.format.as_deref(), Some("premiere"));
        // A stream scheduled the same way (`P0D`) is a stream.
        assert_eq!(
            ready_kinds(&decide_v(None, &upcoming(start), &ctx())),
            ["youtube.scheduled"]
        );
    }

    #[test]
    fn shorts_need_a_marker_and_a_short_duration() {
        let short = |duration: &'static str, title: &'static str| {
            V {
                duration,
                title,
                ..V::default()
            }
            .build()
        };
        let c = ctx();
        let shorts_link = Context {
            feed_link: Some("https://www.youtube.com/shorts/V1"),
            ..c.clone()
        };
        assert_eq!(
            ready_kinds(&decide_v(None, &short("PT45S", "clip"), &shorts_link)),
            ["youtube.short"]
        );
        assert_eq!(
            ready_kinds(&decide_v(None, &short("PT2M", "cat #Shorts"), &c)),
            ["youtube.short"]
        );
        // No marker, or too long: a video.
        assert_eq!(
            ready_kinds(&decide_v(None, &short("PT45S", "clip"), &c)),
            ["youtube.video"]
        );
        assert_eq!(
            ready_kinds(&decide_v(None, &short("PT4M", "cat #shorts"), &c)),
            ["youtube.video"]
        );
        // Same event id either way, so the two kinds never both go out for one upload.
        let a = decide_v(None, &short("PT45S", "clip"), &shorts_link);
        let b = decide_v(None, &short("PT45S", "clip"), &c);
        assert_eq!(
            a.groups[0].messages[0].event.id,
            b.groups[0].messages[0].event.id
        );
    }

    #[test]
    fn members_only_from_the_markers() {
        let start = now() + Duration::hours(1);
        for (title, description, expected) in [
            ("【メン限】雑談", "", true),
            ("Karaoke", "Members-only stream, join the membership", true),
            ("会员限定 直播", "", true),
            ("Karaoke", "Everyone welcome", false),
        ] {
            let v = V {
                content: "upcoming",
                scheduled: Some(start),
                title,
                description,
                ..V::default()
            }
            .build();
            let plan = decide_v(None, &v, &ctx());
            assert!(
                plan.groups[0]
                    .messages
                    .iter()
                    .all(|m| m.event.fields["members_only"] == json!(expected)),
                "{title} / {description}"
            );
        }
    }
}
