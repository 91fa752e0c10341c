//! Local servers speaking the protocols of the external services Stargazer talks to: the
//! shared ones of `stargazer-testkit`, re-exported under the paths the harness and the
//! tests use. Each binds `127.0.0.1:0`, serves until it is dropped, and records what it
//! was asked so tests can assert on the conversation.

pub use stargazer_testkit::servers::{
    bilibili, deepl, hub, serve, telegram, twitch, x, youtube, Served,
};

pub(crate) use stargazer_testkit::servers::lock;
