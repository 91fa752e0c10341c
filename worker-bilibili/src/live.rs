//! The life of one room's stream as the status polls see it: when it counts as started,
//! when as ended, and how a flapping room is kept to one stream.
//!
//! **Flapping rule.** Bilibili rooms drop and come back (an encoder restart, a network
//! hiccup) with a new `live_time` each time. A stream's end is therefore published only
//! once the room has stayed off (status 0 or 2) for the cooldown: a room back live within
//! the cooldown continues the stream it had, so chats get one `bilibili.live` and, later,
//! one `bilibili.ended` whose `actual_end` is when the room was first seen off for good.
//! The same holds when no poll saw the room off (a worker restart, a backoff): a new
//! `live_time` within the cooldown of the last poll that saw the stream live continues
//! it; a later one ends the old stream (at that last sighting) and starts a new one.
//!
//! A rerun loop (status 2) is never live: it starts nothing and counts as off.

use serde::{Deserialize, Serialize};

use crate::api::RoomStatus;
use crate::events::stream_id;

/// The stream a room is in, as announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentStream {
    /// `<room id>:<live_time>` of the broadcast that opened it.
    pub stream_id: String,
    /// The room.
    pub room_id: u64,
    /// When it started, unix seconds.
    pub started: i64,
    /// The latest title seen.
    pub title: String,
    /// The last poll that saw the room live, unix seconds.
    pub last_live: i64,
    /// When a poll first saw the room off since, unix seconds.
    pub off_since: Option<i64>,
}

/// What is remembered per task in the state store (namespace
/// [`LIVE_NAMESPACE`](crate::runner::LIVE_NAMESPACE)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveState {
    /// The uid this state is about: a task whose uid changed starts over.
    #[serde(default)]
    pub uid: u64,
    /// The last `live_status` seen.
    pub status: u8,
    /// The stream announced and not yet ended.
    pub stream: Option<CurrentStream>,
}

/// What an observation calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Announce `stream`.
    Live(CurrentStream),
    /// `stream` ended at `at` (unix seconds).
    Ended { stream: CurrentStream, at: i64 },
}

impl LiveState {
    /// Whether the room is in a stream that is on air now.
    pub fn on_air(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.off_since.is_none())
    }

    /// Applies the status `room` seen at `now`; returns the changes to publish, in order,
    /// and whether the state changed (and must be stored).
    pub(crate) fn observe(
        &mut self,
        room: &RoomStatus,
        now: i64,
        cooldown: i64,
    ) -> (Vec<Change>, bool) {
        let before = self.clone();
        let mut changes = Vec::new();
        self.status = room.live_status;
        if room.live_status == 1 {
            let started = if room.live_time > 0 {
                room.live_time
            } else {
                now
            };
            if let Some(current) = self.stream.as_mut() {
                let back_in_time = match current.off_since {
                    Some(off) => now - off < cooldown,
                    None => started == current.started || started - current.last_live < cooldown,
                };
                if back_in_time {
                    current.off_since = None;
                    current.last_live = now;
                    current.title.clone_from(&room.title);
                } else if let Some(old) = self.stream.take() {
                    let at = old.off_since.unwrap_or(old.last_live);
                    changes.push(Change::Ended { stream: old, at });
                }
            }
            if self.stream.is_none() {
                let stream = CurrentStream {
                    stream_id: stream_id(room.room_id, started),
                    room_id: room.room_id,
                    started,
                    title: room.title.clone(),
                    last_live: now,
                    off_since: None,
                };
                changes.push(Change::Live(stream.clone()));
                self.stream = Some(stream);
            }
        } else if let Some(current) = self.stream.as_mut() {
            let off = *current.off_since.get_or_insert(now);
            if now - off >= cooldown {
                if let Some(stream) = self.stream.take() {
                    changes.push(Change::Ended { stream, at: off });
                }
            }
        }
        // `last_live` moves on every live poll; storing it each cycle would cost a write
        // per live room per cycle, so it only counts as a change with something else.
        let changed = !changes.is_empty()
            || self.status != before.status
            || self.stream.as_ref().map(|s| (&s.title, s.off_since))
                != before.stream.as_ref().map(|s| (&s.title, s.off_since));
        (changes, changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: i64 = 300;

    fn room(status: u8, live_time: i64) -> RoomStatus {
        RoomStatus {
            room_id: 7,
            live_status: status,
            live_time,
            title: "t".into(),
            ..RoomStatus::default()
        }
    }

    fn kinds(changes: &[Change]) -> Vec<&'static str> {
        changes
            .iter()
            .map(|c| match c {
                Change::Live(_) => "live",
                Change::Ended { .. } => "ended",
            })
            .collect()
    }

    #[test]
    fn live_then_off_past_the_cooldown_ends_at_the_first_off_sighting() {
        let mut state = LiveState::default();
        let (changes, changed) = state.observe(&room(1, 1000), 1010, COOLDOWN);
        assert_eq!(kinds(&changes), ["live"]);
        assert!(changed);
        assert!(state.on_air());
        assert!(
            !state.observe(&room(1, 1000), 1040, COOLDOWN).1,
            "nothing new"
        );
        let (changes, changed) = state.observe(&room(0, 0), 2000, COOLDOWN);
        assert!(changes.is_empty() && changed);
        assert!(state.observe(&room(0, 0), 2299, COOLDOWN).0.is_empty());
        let (changes, _) = state.observe(&room(0, 0), 2300, COOLDOWN);
        match &changes[..] {
            [Change::Ended { stream, at }] => {
                assert_eq!((stream.stream_id.as_str(), *at), ("7:1000", 2000));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(state.stream, None);
    }

    #[test]
    fn a_flap_within_the_cooldown_continues_the_stream() {
        let mut state = LiveState::default();
        state.observe(&room(1, 1000), 1000, COOLDOWN);
        state.observe(&room(0, 0), 1100, COOLDOWN);
        let (changes, _) = state.observe(&room(1, 1150), 1160, COOLDOWN);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(state.stream.as_ref().unwrap().stream_id, "7:1000");
        // Unseen flap: a new live_time soon after the last live sighting.
        assert!(state.observe(&room(1, 1200), 1210, COOLDOWN).0.is_empty());
        // A new live_time long after: the old stream ended, a new one starts.
        let (changes, _) = state.observe(&room(1, 5000), 5010, COOLDOWN);
        assert_eq!(kinds(&changes), ["ended", "live"]);
    }

    #[test]
    fn a_rerun_loop_is_never_live_and_ends_a_stream() {
        let mut state = LiveState::default();
        assert!(state.observe(&room(2, 0), 1000, COOLDOWN).0.is_empty());
        assert_eq!(state.stream, None);
        state.observe(&room(1, 1000), 1000, COOLDOWN);
        state.observe(&room(2, 0), 1100, COOLDOWN);
        assert!(!state.on_air());
        assert_eq!(
            kinds(&state.observe(&room(2, 0), 1400, COOLDOWN).0),
            ["ended"]
        );
    }

    #[test]
    fn a_zero_cooldown_ends_at_once() {
        let mut state = LiveState::default();
        state.observe(&room(1, 1000), 1000, 0);
        assert_eq!(kinds(&state.observe(&room(0, 0), 1001, 0).0), ["ended"]);
    }
}
