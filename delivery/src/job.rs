//! The bookkeeping every adapter's send job shares: the claim check before a send, the
//! record handed to the log writer with the outcome, giving a message back for a later
//! try, and retries of transient failures. An adapter's job holds a [`Delivery`] beside
//! what is its own (the network client, the composed message).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

use crate::claims::{retry_backoff, Claims, Recheck};
use crate::recorder::Recorder;
use crate::scheduler::Attempt;
use crate::{delivery_record, Outcome, Recipient};

/// One event on its way to one chat, as far as the engine is concerned.
pub struct Delivery {
    im: &'static str,
    event: Uuid,
    /// Who receives it.
    pub recipient: Recipient,
    leased_until: Instant,
    claims: Arc<Claims>,
    recorder: Recorder,
    /// Transient failures so far.
    attempts: u32,
    done: Option<oneshot::Sender<Outcome>>,
}

impl Delivery {
    /// The delivery of `event` to `recipient` on `im`, whose claim this instance won
    /// (leased until `leased_until`), and the receiver that learns its outcome.
    pub fn new(
        im: &'static str,
        event: Uuid,
        recipient: Recipient,
        leased_until: Instant,
        claims: Arc<Claims>,
        recorder: Recorder,
    ) -> (Self, oneshot::Receiver<Outcome>) {
        let (done, rx) = oneshot::channel();
        let delivery = Self {
            im,
            event,
            recipient,
            leased_until,
            claims,
            recorder,
            attempts: 0,
            done: Some(done),
        };
        (delivery, rx)
    }

    /// The event's id.
    pub fn event(&self) -> Uuid {
        self.event
    }

    /// Makes sure this instance still holds the chat's claim before a call that could
    /// deliver: `None` to go on, else how the attempt ends.
    pub async fn hold_claim(&mut self) -> Option<Attempt> {
        match self
            .claims
            .recheck(self.event, &self.recipient.chat_id, &mut self.leased_until)
            .await
        {
            Recheck::Held => None,
            Recheck::Lost(outcome) => {
                self.finish(outcome);
                Some(Attempt::Skipped)
            }
            Recheck::Unknown => Some(Attempt::Retry(retry_backoff(self.attempts.min(5)))),
        }
    }

    /// Tells the event's tracker `outcome` (it may be gone on shutdown: nothing to tell).
    pub fn finish(&mut self, outcome: Outcome) {
        if let Some(done) = self.done.take() {
            let _ = done.send(outcome);
        }
    }

    /// Hands the record `status` to the log writer, which reports `outcome` once it is
    /// stored; the job is done.
    pub async fn record(&mut self, status: String, outcome: Outcome) -> Attempt {
        let record = delivery_record(self.im, self.event, &self.recipient.chat_id, &status);
        if let Some(done) = self.done.take() {
            self.recorder
                .finish_after_recording(vec![record], done, outcome)
                .await;
        }
        Attempt::Done
    }

    /// Records a permanent refusal as failed.
    pub async fn fail(&mut self, reason: String) -> Attempt {
        self.record(format!("failed: {reason}"), Outcome::Failed(reason))
            .await
    }

    /// Gives the message back unsent: its event is requeued.
    pub fn defer(&mut self, reason: String) -> Attempt {
        tracing::warn!(im = self.im, event_id = %self.event, chat_id = %self.recipient.chat_id, %reason, "giving the message back for a later try");
        self.finish(Outcome::Deferred(reason));
        Attempt::Deferred(Duration::ZERO)
    }

    /// A transient failure: tried again after a growing pause, and given back once
    /// `max_attempts` have failed.
    pub fn retry(&mut self, cause: &dyn std::fmt::Display, max_attempts: u32) -> Attempt {
        self.attempts += 1;
        if self.attempts >= max_attempts {
            return self.defer(cause.to_string());
        }
        Attempt::Retry(retry_backoff(self.attempts))
    }
}
