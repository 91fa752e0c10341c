//! [`FaultyStorage`]: a storage that delegates to a real one and fails the calls a test
//! chooses, the way an unreachable database fails them, to prove a service survives
//! storage outages (503s, retries, nothing lost).

use std::sync::Arc;

use async_trait::async_trait;
use stargazer_core::storage::{
    AccessStore, DelayStore, DeliveryStore, EntityStore, Result, StateStore, Storage, StorageError,
    StorageHealth, UserStore,
};

/// Decides, per call, whether it fails: given the [`Storage`] method's name, `true` makes
/// the call fail with a connection error instead of reaching the real storage.
pub type FaultPolicy = dyn Fn(&'static str) -> bool + Send + Sync;

/// Delegates every [`Storage`] call to `inner` unless the policy fails it.
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    policy: Box<FaultPolicy>,
}

impl FaultyStorage {
    /// Wraps `inner`; `policy` is asked before every call.
    pub fn new(
        inner: Arc<dyn Storage>,
        policy: impl Fn(&'static str) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            policy: Box::new(policy),
        }
    }

    fn check(&self, method: &'static str) -> Result<()> {
        if (self.policy)(method) {
            Err(StorageError::Backend(format!(
                "connection refused (10.1.2.3:27017) during {method}"
            )))
        } else {
            Ok(())
        }
    }
}

macro_rules! delegate {
    ($(impl $capability:ident { $(fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)* })*) => {
        $(
            #[async_trait]
            impl $capability for FaultyStorage {
                $(
                    async fn $name(&self $(, $arg: $ty)*) -> $ret {
                        self.check(stringify!($name))?;
                        self.inner.$name($($arg),*).await
                    }
                )*
            }
        )*
    };
}

impl Storage for FaultyStorage {}

/// The ping reads through `kv_get`, and so fails with it.
#[async_trait]
impl StorageHealth for FaultyStorage {
    async fn ping(&self) -> Result<()> {
        self.kv_get("stargazer", "ping").await.map(drop)
    }
}

stargazer_core::with_storage_methods!(delegate);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn chosen_calls_fail_and_the_others_reach_the_real_storage() {
        let inner = stargazer_core::storage::connect("sqlite::memory:")
            .await
            .unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let switch = down.clone();
        let storage = FaultyStorage::new(inner, move |method| {
            method == "list_entities" && switch.load(Ordering::SeqCst)
        });
        assert!(storage.list_entities().await.unwrap().is_empty());
        down.store(true, Ordering::SeqCst);
        let err = storage.list_entities().await.unwrap_err();
        assert!(err.to_string().contains("list_entities"), "{err}");
        assert!(storage.list_groups().await.is_ok());
    }
}
