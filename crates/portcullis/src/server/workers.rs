//! Thread-per-core serving: accepted connections are dealt round-robin to a fixed set of worker
//! threads, each driving its own single-threaded Tokio runtime.
//!
//! Why: on a work-stealing runtime the task serving a browser connection and the task driving the
//! pooled upstream connection it borrows often sit on different threads, so every proxied
//! request pays cross-thread wake-ups (futex calls, cache-line traffic) and its latency depends on
//! which thread the scheduler picks. Here a connection lives on one worker for its whole life,
//! and the upstream pool is per worker too ([`PerWorker`]), so a request is served, forwarded and
//! answered on one thread. The main runtime keeps the control plane: accepting, signals, reload,
//! the admin listener, discovery, sweepers and the Redis driver.

use std::{
    cell::Cell,
    io,
    sync::atomic::{AtomicUsize, Ordering},
};

use tokio::{runtime, sync::oneshot};

thread_local! {
    /// This thread's worker number, set once when a worker thread starts.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The worker this thread is, if it is one.
fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// The number of workers when the configuration does not say: one per CPU the process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The running workers. Dropping it stops them: each runtime is dropped on its own thread, which
/// cancels the connections still open there (the drain deadline has passed by then).
pub struct Workers {
    handles: Vec<runtime::Handle>,
    next: AtomicUsize,
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub fn start(count: usize) -> io::Result<Self> {
        let count = count.max(1);
        let mut handles = Vec::with_capacity(count);
        let mut stop = Vec::with_capacity(count);
        for index in 0..count {
            let rt = runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            stop.push(tx);
            std::thread::Builder::new()
                .name(format!("portcullis-worker-{index}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(Some(index)));
                    // Sender dropped or fired: either way, stop.
                    rt.block_on(async {
                        let _ = rx.await;
                    });
                })?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        })
    }

    /// The next worker, round-robin.
    pub fn next(&self) -> &runtime::Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }
}

/// One value per worker thread (plus one shared by every other thread), so per-thread state such
/// as an upstream connection pool is never touched from two threads.
#[derive(Debug)]
pub struct PerWorker<T> {
    /// Index 0 serves threads that are not workers; worker `i` uses `1 + i % (len - 1)`.
    values: Box<[T]>,
}

impl<T> PerWorker<T> {
    /// One value for each of `workers` workers and one for the other threads.
    pub fn new(workers: usize, mut make: impl FnMut() -> T) -> Self {
        match Self::try_new(workers, || Ok::<T, std::convert::Infallible>(make())) {
            Ok(values) => values,
            Err(never) => match never {},
        }
    }

    /// [`PerWorker::new`] for a fallible `make`.
    pub fn try_new<E>(workers: usize, mut make: impl FnMut() -> Result<T, E>) -> Result<Self, E> {
        let values = (0..=workers.max(1))
            .map(|_| make())
            .collect::<Result<Vec<T>, E>>()?;
        Ok(PerWorker {
            values: values.into_boxed_slice(),
        })
    }

    /// This thread's value.
    pub fn get(&self) -> &T {
        let slot = match current() {
            Some(i) => 1 + i % (self.values.len() - 1),
            None => 0,
        };
        &self.values[slot]
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn each_worker_thread_sees_its_own_value() {
        let made = AtomicUsize::new(0);
        let values = Arc::new(PerWorker::new(2, || made.fetch_add(1, Ordering::Relaxed)));
        assert_eq!(*values.get(), 0, "a non-worker thread uses slot 0");
        let workers = Workers::start(2).expect("threads");
        let mut seen = Vec::new();
        for _ in 0..4 {
            let values = Arc::clone(&values);
            let got = workers
                .next()
                .spawn(async move {
                    (
                        *values.get(),
                        std::thread::current().name().map(str::to_owned),
                    )
                })
                .await
                .expect("the task completes");
            seen.push(got);
        }
        assert_eq!(seen[0].0, 1);
        assert_eq!(seen[1].0, 2);
        assert_eq!(
            seen[2], seen[0],
            "round-robin comes back to the first worker"
        );
        assert_eq!(seen[0].1.as_deref(), Some("portcullis-worker-0"));
        assert_eq!(seen[1].1.as_deref(), Some("portcullis-worker-1"));
    }

    #[tokio::test]
    async fn dropping_the_workers_cancels_their_tasks() {
        let workers = Workers::start(1).expect("threads");
        let task = workers.next().spawn(std::future::pending::<()>());
        drop(workers);
        assert!(task.await.expect_err("cancelled").is_cancelled());
    }
}
