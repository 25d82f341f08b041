//! One async lock per machine name, so calls on the same name run one after another while calls on
//! different names run in parallel. Entries disappear when nobody holds or waits for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug, Default)]
pub(crate) struct NameLocks {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Held while a call works on a name.
pub(crate) struct NameGuard<'a> {
    owner: &'a NameLocks,
    name: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl NameLocks {
    /// Waits for the name's lock. Waiters are served in arrival order (tokio's mutex is fair).
    pub(crate) async fn lock(&self, name: &str) -> NameGuard<'_> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            locks.entry(name.to_string()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        NameGuard {
            owner: self,
            name: name.to_string(),
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().map(|l| l.len()).unwrap_or(0)
    }
}

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self
            .owner
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the map's own reference left: nobody holds or awaits this name.
        if locks
            .get(&self.name)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_name_waits_other_names_do_not() {
        let locks = NameLocks::default();
        let first = locks.lock("a").await;
        // Another name is free at once.
        let other = locks.lock("b").await;
        drop(other);
        // The same name is not, until the first guard goes.
        let mut second = Box::pin(locks.lock("a"));
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        drop(first);
        let second = second.await;
        drop(second);
        assert_eq!(locks.len(), 0, "entries are dropped when unused");
    }
}
