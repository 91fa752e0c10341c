//! Declaring the topology: passively first, then actively; `stargazer admin broker
//! setup`.

use super::*;

/// What [`setup`] did with one part of the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupStep {
    /// The part, e.g. "queue `stargazer.dead`".
    pub entity: String,
    /// `declared` or the problem found.
    pub outcome: std::result::Result<(), String>,
}

/// Declares the whole topology (both exchanges, `stargazer.dead` and every queue of
/// `topology` with bindings and arguments) on `url` with a credential allowed to configure
/// it, as `stargazer admin broker setup` does. Declaring is idempotent; a part that exists
/// with other properties (a queue from a deployment without dead-lettering) is reported in
/// its step and the rest is still declared. Fails only when the broker cannot be reached.
///
/// `url` may list several nodes of one cluster (comma-separated): the first that accepts
/// the connection is used. Queues are declared as [`Topology::queue_type`]; a queue that
/// exists with the other type is reported in its step with the migration steps.
pub async fn setup(url: &str, topology: &Topology) -> Result<Vec<SetupStep>> {
    let mut failures = Vec::new();
    let mut connected = None;
    for endpoint in endpoints(url)? {
        let properties = connection_properties("stargazer-broker-setup");
        let connect = Connection::connect_uri(endpoint.uri, properties);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(connection)) => {
                connected = Some(connection);
                break;
            }
            Ok(Err(e)) => failures.push(format!("{}: {e}", endpoint.display)),
            Err(_) => failures.push(format!(
                "{}: no connection within {CONNECT_TIMEOUT:?}",
                endpoint.display
            )),
        }
    }
    let Some(connection) = connected else {
        return Err(BusError::Broker(format!(
            "cannot connect to the broker: {}",
            failures.join("; ")
        )));
    };
    let mut declarer = Declarer::new(&connection, topology.queue_type);
    let mut steps = Vec::new();
    for exchange in &topology::EXCHANGES {
        let outcome = declarer.exchange(exchange, Mode::Setup).await;
        steps.push(SetupStep {
            entity: format!("exchange `{}`", exchange.name),
            outcome: outcome
                .map(|_| ())
                .map_err(|f| f.into_error("declare").to_string()),
        });
    }
    for queue in topology.all_queues() {
        let outcome = declarer.queue(&queue, Mode::Setup).await;
        steps.push(SetupStep {
            entity: format!("queue `{}`", queue.name),
            outcome: outcome
                .map(|_| ())
                .map_err(|f| f.into_error("declare").to_string()),
        });
    }
    // Best effort: everything is declared (or reported) already.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "setup done")).await;
    // lapin's I/O thread notices the close on its next turn; a process that exits right
    // after this (the setup command) would otherwise see it fail on a stopped runtime and
    // log an error.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(steps)
}

/// How a part of the topology is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Look for it (passive); create it only when missing. For the fixed parts each
    /// service checks on connect.
    Check,
    /// [`Mode::Check`], then re-declare an existing queue with its arguments and bind it:
    /// for the queue a consumer owns, and for explicit declares.
    Ensure,
    /// Declare actively and report any mismatch: the topology credential's setup.
    Setup,
}

/// Whether a declare found the part or made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Declared {
    Existed,
    Created,
}

/// Declares on one connection, replacing its channel after each refusal (a refused
/// method closes the channel it was sent on).
pub(super) struct Declarer<'a> {
    pub(super) connection: &'a Connection,
    pub(super) channel: Option<Channel>,
    /// The type queues are declared with.
    pub(super) queue_type: QueueType,
    /// Set when a queue was found to exist with the other type (and kept as it is).
    pub(super) other_type: bool,
}

impl<'a> Declarer<'a> {
    pub(super) fn new(connection: &'a Connection, queue_type: QueueType) -> Self {
        Self {
            connection,
            channel: None,
            queue_type,
            other_type: false,
        }
    }

    pub(super) async fn channel(&mut self) -> lapin::Result<Channel> {
        if let Some(channel) = self.channel.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let channel = self.connection.create_channel().await?;
        self.channel = Some(channel.clone());
        Ok(channel)
    }

    /// Runs one declaration method; a refusal closed the channel, so it is forgotten.
    pub(super) async fn call<F, Fut>(&mut self, method: F) -> lapin::Result<()>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: std::future::Future<Output = lapin::Result<()>>,
    {
        let channel = self.channel().await?;
        let result = method(channel).await;
        if result.is_err() {
            self.channel = None;
        }
        result
    }

    pub(super) async fn declare_exchange(
        &mut self,
        spec: &ExchangeSpec,
        passive: bool,
    ) -> lapin::Result<()> {
        let kind = match spec.kind {
            ExchangeType::Topic => ExchangeKind::Topic,
        };
        let name = spec.name;
        self.call(|channel| async move {
            channel
                .exchange_declare(
                    name,
                    kind,
                    ExchangeDeclareOptions {
                        passive,
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
        })
        .await
    }

    pub(super) async fn declare_queue(
        &mut self,
        spec: &QueueSpec,
        passive: bool,
    ) -> lapin::Result<()> {
        let arguments = field_table(&spec.kind.arguments(self.queue_type));
        let name = spec.name.clone();
        self.call(|channel| async move {
            channel
                .queue_declare(
                    &name,
                    QueueDeclareOptions {
                        passive,
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    arguments,
                )
                .await
                .map(|_| ())
        })
        .await
    }

    pub(super) async fn bind(&mut self, spec: &QueueSpec, pattern: &str) -> lapin::Result<()> {
        let name = spec.name.clone();
        let exchange = spec.kind.exchange();
        let pattern = pattern.to_owned();
        self.call(|channel| async move {
            channel
                .queue_bind(
                    &name,
                    exchange,
                    &pattern,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
        })
        .await
    }

    /// Declares an exchange as `mode` says.
    pub(super) async fn exchange(
        &mut self,
        spec: &ExchangeSpec,
        mode: Mode,
    ) -> std::result::Result<Declared, Failure> {
        let entity = format!("exchange `{}`", spec.name);
        if mode != Mode::Setup {
            match self.declare_exchange(spec, true).await {
                Ok(()) => return Ok(Declared::Existed),
                Err(e) if soft_error(&e) == Some(AMQPSoftError::NOTFOUND) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match self.declare_exchange(spec, false).await {
            Ok(()) => {
                if mode != Mode::Setup {
                    tracing::info!(exchange = spec.name, "declared missing exchange");
                }
                Ok(Declared::Created)
            }
            Err(e) => Err(refusal(&entity, mode, e)),
        }
    }

    /// Declares a queue and its bindings as `mode` says.
    pub(super) async fn queue(
        &mut self,
        spec: &QueueSpec,
        mode: Mode,
    ) -> std::result::Result<Declared, Failure> {
        let entity = format!("queue `{}`", spec.name);
        let mut declared = Declared::Created;
        if mode != Mode::Setup {
            match self.declare_queue(spec, true).await {
                Ok(()) => declared = Declared::Existed,
                Err(e) if soft_error(&e) == Some(AMQPSoftError::NOTFOUND) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if declared == Declared::Existed && mode == Mode::Check {
            return Ok(declared);
        }
        match self.declare_queue(spec, false).await {
            Ok(()) => {
                if declared == Declared::Created && mode != Mode::Setup {
                    tracing::info!(queue = %spec.name, "declared missing queue");
                }
            }
            // Not this credential's queue: it exists, which is all a service needs.
            Err(e)
                if declared == Declared::Existed
                    && soft_error(&e) == Some(AMQPSoftError::ACCESSREFUSED) =>
            {
                return Ok(declared);
            }
            Err(e) if declared == Declared::Existed && lacks_dead_lettering(&e, spec) => {
                tracing::error!(
                    queue = %spec.name,
                    cause = %e,
                    "queue exists without `{DEAD_LETTER_ARGUMENT} = {DEAD_LETTER_EXCHANGE}` \
                     (declared by an older deployment): the broker drops what it rejects \
                     instead of dead-lettering it; drain and delete the queue, then run \
                     `{SETUP_COMMAND}` (docs/ARCHITECTURE.md §4)"
                );
                return Ok(declared);
            }
            Err(e) if declared == Declared::Existed && other_queue_type(&e) => {
                tracing::error!(
                    queue = %spec.name,
                    cause = %e,
                    "queue exists with another type than `amqp_queue_type = {}`; it is \
                     consumed as it is (a classic queue lives on one node and counts no \
                     deliveries). To migrate: stop the publishers, let the consumers drain \
                     the queue, delete it, then run `{SETUP_COMMAND}` (docs/ARCHITECTURE.md §4)",
                    self.queue_type
                );
                // Still bound below: it is the queue this consumer reads.
                self.other_type = true;
            }
            Err(e) => return Err(refusal(&entity, mode, e)),
        }
        for pattern in &spec.bindings {
            match self.bind(spec, pattern).await {
                Ok(()) => {}
                Err(e)
                    if declared == Declared::Existed
                        && soft_error(&e) == Some(AMQPSoftError::ACCESSREFUSED) =>
                {
                    // Bindings of a queue this credential does not own are the setup's.
                    break;
                }
                Err(e) => {
                    return Err(refusal(
                        &format!("binding `{pattern}` of {entity}"),
                        mode,
                        e,
                    ))
                }
            }
        }
        Ok(declared)
    }
}

/// Whether `error` is the broker refusing `spec` because the existing queue was declared
/// without the dead-letter argument.
pub(super) fn lacks_dead_lettering(error: &lapin::Error, spec: &QueueSpec) -> bool {
    spec.kind == QueueKind::Work
        && soft_error(error) == Some(AMQPSoftError::PRECONDITIONFAILED)
        && error.to_string().contains(DEAD_LETTER_ARGUMENT)
}

/// Whether `error` is the broker refusing a queue declare because the existing queue has
/// another type (`inequivalent arg 'x-queue-type'`).
pub(super) fn other_queue_type(error: &lapin::Error) -> bool {
    soft_error(error) == Some(AMQPSoftError::PRECONDITIONFAILED)
        && error.to_string().contains(QUEUE_TYPE_ARGUMENT)
}

/// Turns a refused active declare into the failure to report.
pub(super) fn refusal(entity: &str, mode: Mode, error: lapin::Error) -> Failure {
    match soft_error(&error) {
        Some(AMQPSoftError::ACCESSREFUSED) if mode != Mode::Setup => Failure::Missing {
            entity: entity.to_owned(),
            detail: error.to_string(),
        },
        Some(AMQPSoftError::ACCESSREFUSED) => Failure::Permanent(format!(
            "{entity}: this credential may not configure it ({error}); use a topology credential"
        )),
        Some(AMQPSoftError::PRECONDITIONFAILED) if other_queue_type(&error) => {
            Failure::Permanent(format!(
                "{entity} exists with another queue type than `amqp_queue_type` ({error}); \
                 to migrate, stop the publishers, let the consumers drain the queue, delete \
                 it and run `{SETUP_COMMAND}` again (docs/ARCHITECTURE.md §4)"
            ))
        }
        Some(AMQPSoftError::PRECONDITIONFAILED) => Failure::Permanent(format!(
            "{entity} exists with other properties than the topology's ({error}); \
             a queue declared without `{DEAD_LETTER_ARGUMENT} = {DEAD_LETTER_EXCHANGE}` must \
             be drained and deleted, then declared again (docs/ARCHITECTURE.md §4)"
        )),
        _ => error.into(),
    }
}
