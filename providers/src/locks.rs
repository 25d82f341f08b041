//! One async lock per machine name, so calls on the same name run one after another while calls on
//! different names run in parallel. A table is shared by cloning it: the daemon gives every
//! provider it builds for one state directory the same table ([`NameLocks::shared`]), so the old
//! and the new provider of a reload never work on the same name at once. Entries disappear when
//! nobody holds or waits for them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Table = Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>;

/// A table of per-name locks; clones share it.
#[derive(Clone, Debug, Default)]
pub struct NameLocks {
    locks: Table,
}

/// Held while a call works on a name.
pub struct NameGuard {
    table: Table,
    name: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl NameLocks {
    /// A table of its own.
    pub fn new() -> NameLocks {
        NameLocks::default()
    }

    /// The process's table for `scope` (the daemon's state directory): every call with the same
    /// scope gets the same table.
    pub fn shared(scope: &Path) -> NameLocks {
        static TABLES: OnceLock<Mutex<HashMap<PathBuf, NameLocks>>> = OnceLock::new();
        let mut tables = TABLES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tables.entry(scope.to_path_buf()).or_default().clone()
    }

    /// Waits for the name's lock. Waiters are served in arrival order (tokio's mutex is fair).
    pub async fn lock(&self, name: &str) -> NameGuard {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            locks.entry(name.to_string()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        NameGuard {
            table: self.locks.clone(),
            name: name.to_string(),
            guard: Some(guard),
        }
    }

    /// Whether both handles are the same table.
    pub fn same_table(&self, other: &NameLocks) -> bool {
        Arc::ptr_eq(&self.locks, &other.locks)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().map(|l| l.len()).unwrap_or(0)
    }
}

impl Drop for NameGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self
            .table
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

    #[tokio::test]
    async fn clones_and_shared_scopes_are_one_table() {
        let dir = Path::new("/nonexistent/drover-locks-test");
        let a = NameLocks::shared(dir);
        let b = NameLocks::shared(dir);
        assert!(a.same_table(&b));
        assert!(!a.same_table(&NameLocks::shared(&dir.join("other"))));
        let held = a.lock("m").await;
        let mut waiting = Box::pin(b.lock("m"));
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        drop(held);
        drop(waiting.await);
    }
}
