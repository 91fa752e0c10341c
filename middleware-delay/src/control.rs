//! Parsing of the delay control fields (docs/ARCHITECTURE.md §4): `x-delay-at` (unix ms),
//! `x-delay-id` (string) and `x-delay-cancel` (bool). Parsing removes them from the event,
//! so what is stored and republished no longer carries them.

use stargazer_core::model::Event;

pub(crate) use stargazer_core::contract::control::{DELAY_AT, DELAY_CANCEL, DELAY_ID};

/// Longest accepted `x-delay-id`, in bytes: ids are kept in memory for every pending
/// message, so an unbounded one would be a memory hazard.
pub(crate) const MAX_ID_LEN: usize = 512;

/// What a message asks the delay middleware to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Hold the event until `at_ms` under `id`, replacing a pending one with that id.
    Schedule {
        /// The delay id (`x-delay-id`, else the event id).
        id: String,
        /// Fire time, unix milliseconds.
        at_ms: i64,
    },
    /// Remove the pending message `id`; publish nothing.
    Cancel {
        /// The delay id to cancel.
        id: String,
    },
}

/// Takes the control fields out of `event` and interprets them; `Err` is a reason for
/// the dead-letter queue.
pub(crate) fn take_request(event: &mut Event) -> Result<Request, String> {
    let id = match event.take_control(DELAY_ID) {
        None | Some(serde_json::Value::Null) => event.id.to_string(),
        Some(serde_json::Value::String(id)) if id.is_empty() => {
            return Err(format!("{DELAY_ID} is empty"));
        }
        Some(serde_json::Value::String(id)) if id.len() > MAX_ID_LEN => {
            return Err(format!("{DELAY_ID} is longer than {MAX_ID_LEN} bytes"));
        }
        Some(serde_json::Value::String(id)) => id,
        Some(other) => return Err(format!("{DELAY_ID} must be a string, got {other}")),
    };
    let cancel = match event.take_control(DELAY_CANCEL) {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(cancel)) => cancel,
        Some(other) => return Err(format!("{DELAY_CANCEL} must be a boolean, got {other}")),
    };
    let at = event.take_control(DELAY_AT);
    if cancel {
        return Ok(Request::Cancel { id });
    }
    let at_ms = match at {
        None | Some(serde_json::Value::Null) => return Err(format!("{DELAY_AT} is missing")),
        Some(serde_json::Value::Number(n)) => unix_ms(&n).ok_or_else(|| {
            format!("{DELAY_AT} must be an integer number of unix milliseconds, got {n}")
        })?,
        Some(other) => {
            return Err(format!(
                "{DELAY_AT} must be an integer number of unix milliseconds, got {other}"
            ))
        }
    };
    Ok(Request::Schedule { id, at_ms })
}

/// An integral JSON number as i64 (`1.7e12` from a float-only producer is accepted when it
/// has no fraction).
fn unix_ms(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // 2^63 as f64; anything at or above does not fit in i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && f.abs() < LIMIT).then_some(f as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(control: serde_json::Value) -> Event {
        let mut value = json!({
            "id": "6f8e1c52-3a7d-4b0e-9c41-5d2a7e3f0b19",
            "kind": "youtube.reminder",
            "entity": "00000000-0000-0000-0000-000000000001",
            "time": "2026-01-01T00:00:00Z",
            "fields": {},
            "x-other": 1
        });
        for (k, v) in control.as_object().unwrap() {
            value[k] = v.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn schedule_defaults_the_id_and_strips_only_delay_fields() {
        let mut e = event(json!({"x-delay-at": 1_700_000_000_000_i64}));
        let req = take_request(&mut e).unwrap();
        assert_eq!(
            req,
            Request::Schedule {
                id: "6f8e1c52-3a7d-4b0e-9c41-5d2a7e3f0b19".into(),
                at_ms: 1_700_000_000_000
            }
        );
        assert!(!e.control.contains_key(DELAY_AT));
        assert_eq!(e.control["x-other"], 1);
    }

    #[test]
    fn explicit_id_cancel_and_float_time() {
        let mut e = event(json!({"x-delay-at": 1.5e12, "x-delay-id": "stream-1"}));
        assert_eq!(
            take_request(&mut e).unwrap(),
            Request::Schedule {
                id: "stream-1".into(),
                at_ms: 1_500_000_000_000
            }
        );
        let mut e = event(json!({"x-delay-id": "stream-1", "x-delay-cancel": true}));
        assert_eq!(
            take_request(&mut e).unwrap(),
            Request::Cancel {
                id: "stream-1".into()
            }
        );
        assert!(e.control.get(DELAY_CANCEL).is_none() && e.control.get(DELAY_ID).is_none());
    }

    #[test]
    fn bad_values_are_named() {
        for (control, needle) in [
            (json!({}), "x-delay-at is missing"),
            (json!({"x-delay-at": "soon"}), "x-delay-at must be"),
            (json!({"x-delay-at": 1.5}), "x-delay-at must be"),
            (
                json!({"x-delay-at": 1, "x-delay-id": 5}),
                "x-delay-id must be a string",
            ),
            (
                json!({"x-delay-at": 1, "x-delay-id": ""}),
                "x-delay-id is empty",
            ),
            (
                json!({"x-delay-at": 1, "x-delay-cancel": "yes"}),
                "x-delay-cancel must be a boolean",
            ),
            (
                json!({"x-delay-at": 1, "x-delay-id": "x".repeat(600)}),
                "longer than",
            ),
        ] {
            let err = take_request(&mut event(control.clone())).unwrap_err();
            assert!(err.contains(needle), "{control}: {err}");
        }
    }
}
