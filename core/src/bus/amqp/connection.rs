//! The connection supervisor: watches the connection, reconnects with backoff and
//! shuts it down when the bus closes.

use super::*;

/// Keeps the connection: publishes it, waits for its loss, reconnects with backoff, and
/// closes it when the bus closes.
pub(super) async fn supervise(inner: Arc<Inner>, first: Connection) {
    let mut next = Some(first);
    let mut backoff = Backoff::default();
    let mut generation = 0;
    loop {
        let connection = match next.take() {
            Some(connection) => connection,
            None => {
                let attempt = tokio::select! {
                    _ = inner.closed.cancelled() => break,
                    // Start after the node just lost (or last tried).
                    attempt = inner.open_connection(
                        inner.current_endpoint.load(Ordering::Relaxed) + 1
                    ) => attempt,
                };
                match attempt {
                    Ok(connection) => {
                        backoff.reset();
                        tracing::info!(
                            name = %inner.name,
                            url = %inner.endpoints[inner.current_endpoint.load(Ordering::Relaxed)].display,
                            "reconnected to the broker"
                        );
                        connection
                    }
                    Err(error) => {
                        let delay = backoff.next_delay();
                        if matches!(error, BusError::TopologyMissing { .. }) {
                            tracing::error!(url = %inner.display_url, %error, ?delay, "broker topology missing; retrying");
                        } else {
                            tracing::warn!(
                                url = %inner.display_url, %error, ?delay,
                                "cannot connect to the broker; retrying"
                            );
                        }
                        match sleep_unless_cancelled(delay, &inner.closed).await {
                            Waited::Cancelled => break,
                            Waited::Elapsed => continue,
                        }
                    }
                }
            }
        };
        generation += 1;
        let lost = Arc::new(Notify::new());
        connection.on_error({
            let lost = lost.clone();
            let closed = inner.closed.clone();
            move |error| {
                // Our own close also ends in this callback; that is no loss.
                if closed.is_cancelled() {
                    tracing::debug!(%error, "broker connection ended after close");
                } else {
                    tracing::warn!(%error, "broker connection error");
                }
                lost.notify_one();
            }
        });
        let session = Arc::new(Session {
            generation,
            connection,
        });
        inner.link.send_replace(Link::Up(session.clone()));
        let mut check = tokio::time::interval(HEALTH_CHECK_INTERVAL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = inner.closed.cancelled() => {
                    shut_down(&inner, &session).await;
                    return;
                }
                _ = lost.notified() => break,
                _ = inner.kick.notified() => {}
                _ = check.tick() => {}
            }
            if !session.connection.status().connected() {
                break;
            }
        }
        tracing::warn!(
            name = %inner.name,
            state = ?session.connection.status().state(),
            "broker connection lost; reconnecting"
        );
        inner.link.send_replace(Link::Down);
        lock(&inner.publishers.idle).clear();
    }
    inner.link.send_replace(Link::Closed);
}

pub(super) async fn shut_down(inner: &Inner, session: &Session) {
    inner.link.send_replace(Link::Closed);
    lock(&inner.publishers.idle).clear();
    if session.connection.status().connected() {
        match tokio::time::timeout(CLOSE_TIMEOUT, session.connection.close(200, "bus closed")).await
        {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "closing the broker connection failed"),
            Err(_) => tracing::debug!("closing the broker connection timed out"),
        }
    }
}
