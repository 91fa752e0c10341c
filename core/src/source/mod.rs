//! The source kit: what every event source worker (YouTube, X, and the sources to come)
//! needs besides its protocol code.
//!
//! A source worker watches an outside service for the entities the coordinator assigns
//! it and publishes what happens as events. Everything around the protocol is the same
//! from one source to the next, and used to be copied and adapted per worker, where the
//! copies drifted apart (one worker's publish-failure counter lost its `kind` label).
//! It lives here once:
//!
//! - [`SourceError`]: the errors a source worker reports.
//! - [`publish`]: claim in the seen window, publish through the outbox, count per kind.
//! - [`metrics`]: the publish counters, under the source's metric name prefix.
//! - [`housekeeping`](mod@housekeeping): the periodic seen-window purge and outbox flush.
//! - [`http`]: the HTTP client every source calls its service with.
//! - [`background`]: the background tasks a runner waits for at shutdown.
//! - [`source_task_runner!`](crate::source_task_runner): the
//!   [`TaskRunner`](crate::worker_runtime::TaskRunner) impl of a source's runner.

pub mod background;
mod error;
pub mod housekeeping;
pub mod http;
pub mod metrics;
pub mod publish;

pub use background::Background;
pub use error::SourceError;
pub use housekeeping::{housekeeping, Housekeeping, HOUSEKEEPING_INTERVAL};
pub use http::http_client;
pub use metrics::PublishMetrics;
pub use publish::{Namespaces, Publisher};

/// What [`source_task_runner!`](crate::source_task_runner) expands to needs, reachable
/// through `$crate` so a source crate does not have to depend on it itself.
#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
}

/// Implements [`TaskRunner`](crate::worker_runtime::TaskRunner) for a source's runner
/// type by forwarding to its inherent `async fn start(&self, Task)` and
/// `async fn stop(&self, Uuid)`, whose errors (a [`SourceError`] or any other error)
/// become the runtime's boxed [`TaskError`](crate::worker_runtime::TaskError); and
/// `Debug` from its inherent `fn tasks(&self) -> Vec<Uuid>`.
///
/// A macro rather than a blanket impl over a trait: the runners keep `start`/`stop` as
/// inherent methods that tests call directly, and a second trait with the same method
/// names would make those calls ambiguous.
///
/// ```ignore
/// stargazer_core::source_task_runner!(TwitterRunner);
/// ```
#[macro_export]
macro_rules! source_task_runner {
    ($runner:ty) => {
        /// The coordinator drives the runner through the shared worker runtime.
        #[$crate::source::__private::async_trait]
        impl $crate::worker_runtime::TaskRunner for $runner {
            async fn start(
                &self,
                task: $crate::model::Task,
            ) -> ::std::result::Result<(), $crate::worker_runtime::TaskError> {
                <$runner>::start(self, task)
                    .await
                    .map_err(::std::convert::Into::into)
            }

            async fn stop(
                &self,
                task_id: $crate::Uuid,
            ) -> ::std::result::Result<(), $crate::worker_runtime::TaskError> {
                <$runner>::stop(self, task_id)
                    .await
                    .map_err(::std::convert::Into::into)
            }
        }

        /// Names the tasks the runner holds.
        impl ::std::fmt::Debug for $runner {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(::std::stringify!($runner))
                    .field("tasks", &self.tasks())
                    .finish_non_exhaustive()
            }
        }
    };
}
