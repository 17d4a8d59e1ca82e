//! Per-key async locks: commands on the same stream wait for each other in this process,
//! commands on different streams run in parallel.
//!
//! The store's optimistic concurrency keeps the ledger correct on its own: a command that
//! lost a race rereads and decides again. But under a burst on one stream (200 spends on
//! one wallet at once) most attempts would lose, and the service gives up after a bounded
//! number of retries. Queueing commands per stream in front of the service turns that
//! burst into a line, so every spend is decided on the exact balance at its turn and the
//! outcome does not depend on scheduling. Several writer processes still fall back on the
//! store's checks.
//!
//! Deadlock freedom: a command takes all its keys at once through [`KeyedLocks::lock`],
//! which takes them in sorted order, and never takes more while holding some.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// Most keys one command locks.
pub const KEYS_PER_LOCK_MAX: usize = 4;

#[derive(Debug, Default)]
pub struct KeyedLocks {
    table: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Holds the locks of some keys; releasing them on drop.
#[derive(Debug)]
pub struct KeyGuards {
    table: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    held: Vec<(String, OwnedMutexGuard<()>)>,
}

impl KeyedLocks {
    /// Waits until this caller holds every key in `keys` (duplicates are taken once).
    pub async fn lock(&self, keys: impl IntoIterator<Item = String>) -> KeyGuards {
        let mut keys: Vec<String> = keys.into_iter().collect();
        keys.sort();
        keys.dedup();
        assert!(
            keys.len() <= KEYS_PER_LOCK_MAX,
            "a command locks at most {KEYS_PER_LOCK_MAX} keys"
        );
        let mut guards = KeyGuards {
            table: self.table.clone(),
            held: Vec::with_capacity(keys.len()),
        };
        for key in keys {
            let lock = self
                .table
                .lock()
                .expect("lock table poisoned")
                .entry(key.clone())
                .or_default()
                .clone();
            let guard = lock.lock_owned().await;
            guards.held.push((key, guard));
        }
        guards
    }

    /// Keys currently locked or waited for.
    pub fn len(&self) -> usize {
        self.table.lock().expect("lock table poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuards {
    fn drop(&mut self) {
        let mut table = self.table.lock().expect("lock table poisoned");
        for (key, guard) in self.held.drain(..).rev() {
            drop(guard);
            // Only the table refers to the lock now: nobody holds or waits for it.
            if table
                .get(&key)
                .is_some_and(|lock| Arc::strong_count(lock) == 1)
            {
                table.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn holders_of_a_key_never_overlap_and_the_table_empties() {
        let locks = Arc::new(KeyedLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for index in 0..64 {
            let (locks, inside) = (locks.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                // Every task takes "shared" plus its own key, in varying order.
                let keys = if index % 2 == 0 {
                    vec!["shared".to_owned(), format!("own-{index}")]
                } else {
                    vec![format!("own-{index}"), "shared".to_owned()]
                };
                let _guards = locks.lock(keys).await;
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "one holder at a time"
                );
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert!(locks.is_empty());
    }
}
