//! The agent's long-running tasks, in one place.
//!
//! Every task that runs for the agent's lifetime (the network reconcile loop, the factory
//! address, the rollback timer, and next the failover monitor and the sync scheduler) is
//! registered with [`Tasks`] under a name. [`Tasks::supervise`] watches them: a task that
//! ends or panics is logged and started again after a backoff ([`backoff`]: 1 s, doubling,
//! at most 30 s; reset once a run has lasted a minute); on shutdown every task is stopped.
//! What each task is doing is published as a `watch` of [`TaskStatus`] (in status, under
//! `agent.tasks`).
//!
//! The release build aborts on panic (`panic = "abort"`): there a panic ends the agent and
//! init restarts it; the supervisor restarts what ends or, in debug builds, panics.

use crate::model::TaskStatus;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
type Make = Arc<dyn Fn() -> BoxFuture + Send + Sync>;

/// A run that lasted this long was healthy: the next restart waits only the first step.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// How long to wait before the `restarts`-th restart in a row.
pub fn backoff(restarts: u32) -> Duration {
    let secs = 1u64 << restarts.saturating_sub(1).min(5);
    Duration::from_secs(secs.min(30))
}

struct Task {
    index: usize,
    make: Make,
    /// Restarts since the last healthy run.
    streak: u32,
    started: Instant,
}

/// The registry and supervisor of the agent's tasks.
pub struct Tasks {
    set: JoinSet<()>,
    running: HashMap<Id, Task>,
    status: watch::Sender<Vec<TaskStatus>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks::new()
    }
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks {
            set: JoinSet::new(),
            running: HashMap::new(),
            status: watch::Sender::new(Vec::new()),
        }
    }

    /// Registers and starts a task; `make` is called again for every restart.
    pub fn spawn<F, Fut>(&mut self, name: &str, make: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let make: Make = Arc::new(move || Box::pin(make()));
        let index = self.status.borrow().len();
        self.status.send_modify(|s| {
            s.push(TaskStatus {
                name: name.to_string(),
                running: true,
                restarts: 0,
                last_exit: None,
            })
        });
        self.start(index, make, 0, Duration::ZERO);
    }

    fn start(&mut self, index: usize, make: Make, streak: u32, delay: Duration) {
        let run = make();
        let handle = self.set.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            run.await
        });
        self.running.insert(
            handle.id(),
            Task {
                index,
                make,
                streak,
                started: Instant::now() + delay,
            },
        );
    }

    /// What every task is doing.
    pub fn status(&self) -> watch::Receiver<Vec<TaskStatus>> {
        self.status.subscribe()
    }

    /// Restarts tasks that end until `stop` completes, then stops them all.
    pub async fn supervise(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(done) = self.set.join_next_with_id() => {
                    let (id, why) = match done {
                        Ok((id, ())) => (id, "ended".to_string()),
                        Err(e) => (e.id(), if e.is_panic() { "panicked".into() } else { "was cancelled".into() }),
                    };
                    self.restart(id, why);
                }
            }
        }
        self.set.shutdown().await;
        self.status
            .send_modify(|s| s.iter_mut().for_each(|t| t.running = false));
    }

    fn restart(&mut self, id: Id, why: String) {
        let Some(task) = self.running.remove(&id) else {
            return;
        };
        let streak = if task.started.elapsed() >= HEALTHY_RUN {
            1
        } else {
            task.streak + 1
        };
        let delay = backoff(streak);
        let name = self
            .status
            .borrow()
            .get(task.index)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        tracing::error!(task = %name, "task {why}: restarting in {delay:?}");
        self.status.send_modify(|s| {
            if let Some(t) = s.get_mut(task.index) {
                t.restarts += 1;
                t.last_exit = Some(why.clone());
            }
        });
        self.start(task.index, task.make, streak, delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_doubles_from_one_second_up_to_thirty() {
        let steps: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(steps, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ends_or_panics_is_restarted_and_all_stop_on_shutdown() {
        let mut tasks = Tasks::new();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        tasks.spawn("flaky", move || {
            let r = r.clone();
            async move {
                let n = r.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                if n == 0 {
                    panic!("first run fails");
                }
                // Later runs end normally, which is also a restart.
            }
        });
        let forever = Arc::new(AtomicU32::new(0));
        let f = forever.clone();
        tasks.spawn("steady", move || {
            let f = f.clone();
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await
            }
        });
        let status = tasks.status();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let supervisor = tokio::spawn(tasks.supervise(async {
            let _ = stop_rx.await;
        }));
        // Run 1 panics at 10 ms; run 2 starts 1 s later and ends at 1.02 s; run 3 starts
        // 2 s after that and ends at 3.03 s; run 4 would wait 4 s more.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        {
            let s = status.borrow();
            assert_eq!(s[0].name, "flaky");
            assert_eq!(s[0].restarts, 3);
            assert_eq!(s[0].last_exit.as_deref(), Some("ended"));
            assert_eq!((s[1].restarts, s[1].running), (0, true));
        }
        assert_eq!(
            forever.load(Ordering::SeqCst),
            1,
            "a running task is left alone"
        );
        let _ = stop_tx.send(());
        supervisor.await.unwrap();
        assert!(status.borrow().iter().all(|t| !t.running));
    }
}
