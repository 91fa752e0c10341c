//! `GET /ical/{secret}.ics`: a user's upcoming streams as an iCalendar feed (RFC 5545)
//! for calendar apps, on the public listener, authenticated by the secret in the path
//! alone (calendar apps send no headers of ours). The secret comes from
//! `createCalendarLink` ([`crate::schedule`] says what it is made of).
//!
//! An unknown, revoked or malformed secret is a 404 that does not say which. A request
//! costs at most one user lookup before the secret is checked.
//!
//! One `VEVENT` per stream `getUpcoming` would list: `UID` `<source>-<id>@stargazer`
//! (stable, so a moved stream moves in the calendar), `DTSTART` the actual start when
//! live, else the scheduled one, `DTEND` one hour later (an estimate: the schedule knows
//! only when a stream starts, and the `DESCRIPTION` says so), `SUMMARY`
//! `<entity name in the user's language>: <title>`, `URL` the watch link, and
//! `DTSTAMP`/`LAST-MODIFIED` when the worker last wrote the stream.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Duration;
use icalendar::{Calendar, Component, EventLike, Property};

use crate::error::{Error, Result};
use crate::schedule::{secret_matches, secret_user, upcoming_of};
use crate::state::AppState;
use crate::types::{StreamState, UpcomingStream};

/// How long a stream is assumed to last, for `DTEND`.
const ASSUMED_LENGTH: Duration = Duration::hours(1);

/// How often calendar apps are asked to fetch the feed again.
const REFRESH_EVERY: Duration = Duration::minutes(15);

/// The feed's content type.
const CALENDAR: &str = "text/calendar; charset=utf-8";

/// The feed route.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/ical/{file}", get(feed))
}

fn no_such_calendar() -> Error {
    Error::NotFound("no such calendar".into())
}

async fn feed(
    State(state): State<AppState>,
    file: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    // A path that does not even decode is as unknown as any other.
    let Path(file) = file.map_err(|_| no_such_calendar())?;
    let secret = file.strip_suffix(".ics").ok_or_else(no_such_calendar)?;
    let id = secret_user(secret).ok_or_else(no_such_calendar)?;
    let user = state
        .storage
        .get_user(id)
        .await?
        .ok_or_else(no_such_calendar)?;
    if !secret_matches(&user, secret) {
        return Err(no_such_calendar());
    }
    let streams = upcoming_of(&state, &user).await?;
    let body = render(&streams)?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(CALENDAR)),
            // The URL is a credential: keep the feed out of shared caches.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=60"),
            ),
        ],
        body,
    )
        .into_response())
}

/// The feed of `streams`.
pub(crate) fn render(streams: &[UpcomingStream]) -> Result<String> {
    let mut calendar = Calendar::empty();
    calendar
        .append_property(Property::new("VERSION", "2.0"))
        .append_property(Property::new("PRODID", "-//Stargazer//Schedule//EN"))
        .append_property(Property::new("CALSCALE", "GREGORIAN"))
        .append_property(Property::new("METHOD", "PUBLISH"))
        .name("Stargazer")
        .description("Upcoming streams of the streamers this chat follows on Stargazer")
        .ttl(&REFRESH_EVERY);
    for stream in streams {
        calendar.push(event(stream));
    }
    (&calendar)
        .try_into()
        .map_err(|err| Error::Internal(format!("writing a calendar: {err}")))
}

fn event(stream: &UpcomingStream) -> icalendar::Event {
    let mut notes = Vec::new();
    if stream.state == StreamState::Live {
        notes.push("Live now.");
    }
    if stream.format == stargazer_core::contract::format::PREMIERE {
        notes.push("Premiere.");
    }
    if stream.members_only {
        notes.push("Members only.");
    }
    notes.push("The end time is an estimate: one hour after the start.");
    let description = format!("{}\n\n{}", stream.link, notes.join("\n"));
    icalendar::Event::new()
        .uid(&format!("{}-{}@stargazer", stream.source, stream.id))
        .summary(&format!("{}: {}", stream.entity_name, stream.title))
        .description(&description)
        .url(&stream.link)
        .starts(stream.start)
        .ends(stream.start + ASSUMED_LENGTH)
        .timestamp(stream.updated_at)
        .last_modified(stream.updated_at)
        .done()
}
