//! Admission control: at most `running` jobs at once, at most `queued` more waiting for a slot,
//! and anything past that refused at once rather than left to pile up.
//!
//! Waiting is cancellation-safe: a client that goes away while queued drops its wait, which
//! gives its queue place back; a running job's slot is released when its permit drops.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The running slots and the queue are both full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every sandbox slot is busy and the queue is full; retry shortly")]
pub struct Overloaded;

/// A running slot; released on drop.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max_running: usize,
    queued: AtomicUsize,
    max_queued: usize,
}

impl Admission {
    pub fn new(max_running: usize, max_queued: usize) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max_running)),
            max_running,
            queued: AtomicUsize::new(0),
            max_queued,
        }
    }

    /// A running slot: at once when one is free, after waiting in the queue when the queue has
    /// room, else [`Overloaded`].
    pub async fn enter(&self) -> Result<Slot, Overloaded> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        let place = self.queued.fetch_add(1, Ordering::AcqRel);
        let _queued = QueuePlace(&self.queued);
        if place >= self.max_queued {
            return Err(Overloaded);
        }
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Ok(Slot { _permit: permit })
    }

    pub fn running(&self) -> usize {
        self.max_running - self.slots.available_permits()
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire).min(self.max_queued)
    }
}

/// One place in the queue, given back on drop (including when the waiting future is dropped).
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn runs_then_queues_then_refuses() {
        let admission = Arc::new(Admission::new(2, 1));
        let a = admission.enter().await.unwrap();
        let _b = admission.enter().await.unwrap();
        assert_eq!(admission.running(), 2);
        let waiting = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.enter().await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(admission.queued(), 1);
        assert_eq!(admission.enter().await.unwrap_err(), Overloaded);
        drop(a);
        waiting.await.unwrap().unwrap();
        assert_eq!(admission.queued(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_its_place_back() {
        let admission = Admission::new(1, 1);
        let _running = admission.enter().await.unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(20), admission.enter()).await;
        assert!(gave_up.is_err(), "no slot was free");
        assert_eq!(admission.queued(), 0);
        // The place is free again: another wait is queued, not refused.
        let again = tokio::time::timeout(Duration::from_millis(20), admission.enter()).await;
        assert!(again.is_err(), "queued, not refused");
    }
}
