//! Test support: the X API v2 server, fake coordinator and observer queue on the real
//! RabbitMQ exchange, all from `stargazer-testkit`.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code, unused_imports)]

pub(crate) use stargazer_testkit::backends::unique;
pub(crate) use stargazer_testkit::coordinator;
pub(crate) use stargazer_testkit::observer::{Observer, ObserverOptions};
pub(crate) use stargazer_testkit::servers::x::{new_user_id, Media, Retweeted, XServer};
pub(crate) use stargazer_testkit::{eventually, AMQP_URL, MONGO_URL};

/// The bearer token the tests' X server accepts.
pub(crate) const TOKEN: &str = "test-bearer-token";

/// How this crate's tests observe the real exchange (`Observer::start(OBSERVER, patterns)`).
pub(crate) const OBSERVER: ObserverOptions<'static> = ObserverOptions {
    queue_prefix: "test.worker-twitter",
    require_json: false,
};
