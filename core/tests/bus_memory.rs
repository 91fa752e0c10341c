//! The bus contract suite against the in-process bus ([`MemoryBus`]).

#[macro_use]
mod bus_suite;

use std::sync::Arc;

use stargazer_core::bus::memory::MemoryBus;
use stargazer_core::bus::{self, Bus, BusError};

async fn memory_bus() -> (Arc<dyn Bus>, ()) {
    (
        Arc::new(MemoryBus::with_options(bus_suite::test_options())),
        (),
    )
}

/// Queues of the in-process bus vanish with it.
async fn no_cleanup(_scope: ()) {}

bus_contract_tests!(memory_bus, no_cleanup);

#[tokio::test]
async fn connect_picks_the_implementation_from_the_url() {
    let bus = bus::connect("memory://").await.expect("memory url");
    bus.close().await;
    assert!(matches!(
        bus::connect("kafka://localhost").await,
        Err(BusError::InvalidUrl(_))
    ));
}
