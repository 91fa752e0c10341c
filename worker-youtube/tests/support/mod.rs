//! Test support from `stargazer-testkit`: the WebSub hub (subscribe → 202 → verification
//! GET against the callback → signed deliveries), the YouTube server (Data API
//! `videos.list` and the public channel feed) with the Atom documents the hub pushes, and
//! the fake coordinator and observer queue on the real RabbitMQ exchange.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code, unused_imports)]

pub(crate) use stargazer_testkit::backends::unique;
pub(crate) use stargazer_testkit::coordinator;
pub(crate) use stargazer_testkit::observer::{Observer, ObserverOptions};
pub(crate) use stargazer_testkit::servers::hub::Hub;
pub(crate) use stargazer_testkit::servers::youtube::{
    new_channel_id, notification_xml, tombstone_xml, topic, Video, Youtube,
};
pub(crate) use stargazer_testkit::{eventually, AMQP_URL, MONGO_URL};

/// How this crate's tests observe the real exchange (`Observer::start(OBSERVER, patterns)`).
pub(crate) const OBSERVER: ObserverOptions<'static> = ObserverOptions {
    queue_prefix: "test.worker-youtube",
    require_json: true,
};
