use std::collections::VecDeque;
use std::time::Duration;

use cairn_sdk::{
    AgentId, Driver, ExecutorId, FrameworkId, FrameworkInfo, Offer, OfferId, Scheduler,
    SchedulerDriver, TaskStatus,
};
use tokio::sync::mpsc;

/// What a test framework saw.
#[derive(Clone, Debug)]
pub enum Ev {
    Offers(Vec<Offer>),
    Rescind(OfferId),
    Update(TaskStatus),
    Failure(AgentId),
    Error(String),
}

struct Recorder {
    tx: mpsc::UnboundedSender<Ev>,
    subscribed: Option<tokio::sync::oneshot::Sender<(Driver, FrameworkId)>>,
}

impl Scheduler for Recorder {
    async fn subscribed(&mut self, driver: &Driver, id: &FrameworkId) {
        if let Some(tx) = self.subscribed.take() {
            let _ = tx.send((driver.clone(), id.clone()));
        }
    }
    async fn offers(&mut self, _d: &Driver, offers: Vec<Offer>) {
        let _ = self.tx.send(Ev::Offers(offers));
    }
    async fn rescinded(&mut self, _d: &Driver, id: &OfferId) {
        let _ = self.tx.send(Ev::Rescind(id.clone()));
    }
    async fn update(&mut self, _d: &Driver, status: &TaskStatus) {
        let _ = self.tx.send(Ev::Update(status.clone()));
    }
    async fn failure(
        &mut self,
        _d: &Driver,
        agent: &AgentId,
        _e: Option<&ExecutorId>,
        _s: Option<i32>,
    ) {
        let _ = self.tx.send(Ev::Failure(agent.clone()));
    }
    async fn error(&mut self, _d: &Driver, message: &str) {
        let _ = self.tx.send(Ev::Error(message.to_string()));
    }
}

/// A framework on the SDK that records its events for a test to wait on.
/// Dropping it stops the driver (with a failover timeout of 0, the master
/// then removes the framework and kills its tasks).
pub struct TestFramework {
    pub driver: Driver,
    pub id: FrameworkId,
    rx: mpsc::UnboundedReceiver<Ev>,
    backlog: VecDeque<Ev>,
    task: tokio::task::JoinHandle<()>,
}

impl TestFramework {
    pub async fn start(master: &str, info: FrameworkInfo) -> TestFramework {
        TestFramework::start_driver(SchedulerDriver::new(master, info)).await
    }

    /// Runs `driver` (set up as the test needs: credentials...).
    pub async fn start_driver(driver: SchedulerDriver) -> TestFramework {
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, sub_rx) = tokio::sync::oneshot::channel();
        let recorder = Recorder {
            tx,
            subscribed: Some(sub_tx),
        };
        let task = tokio::spawn(async move {
            let _ = driver.run(recorder).await;
        });
        let (driver, id) = tokio::time::timeout(Duration::from_secs(20), sub_rx)
            .await
            .expect("framework subscribed within 20 s")
            .expect("driver running");
        TestFramework {
            driver,
            id,
            rx,
            backlog: VecDeque::new(),
            task,
        }
    }

    pub async fn named(master: &str, name: &str) -> TestFramework {
        TestFramework::start(master, FrameworkInfo::new(name, "")).await
    }

    /// The first event (earlier ones not taken stay queued) matching `pick`.
    pub async fn wait<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pick: impl FnMut(&Ev) -> Option<T>,
    ) -> T {
        if let Some(pos) = self.backlog.iter().position(|e| pick(e).is_some()) {
            let ev = self.backlog.remove(pos).expect("present");
            return pick(&ev).expect("matched");
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out after {timeout:?} waiting for {what}; unmatched events: {:?}",
                        self.backlog
                    )
                })
                .expect("driver alive");
            if let Some(v) = pick(&ev) {
                return v;
            }
            self.backlog.push_back(ev);
        }
    }

    pub async fn offers(&mut self, timeout: Duration) -> Vec<Offer> {
        self.wait(timeout, "offers", |e| match e {
            Ev::Offers(o) => Some(o.clone()),
            _ => None,
        })
        .await
    }

    /// Launches the task `builder` describes on the first offer that comes
    /// (declining nothing else: the offer's rest returns at once).
    pub async fn launch_one(&mut self, builder: cairn_sdk::TaskBuilder, timeout: Duration) {
        let offer = self.offers(timeout).await.remove(0);
        let task = builder.build(&offer.agent_id).expect("a valid task");
        self.driver
            .accept(
                std::slice::from_ref(&offer.id),
                vec![task],
                Some(Duration::ZERO),
            )
            .await
            .expect("the accept reaches the master");
    }

    /// The next update for `task` that satisfies `pred`.
    pub async fn update(
        &mut self,
        task: &str,
        timeout: Duration,
        pred: impl Fn(&TaskStatus) -> bool,
    ) -> TaskStatus {
        let what = format!("an update for {task}");
        self.wait(timeout, &what, |e| match e {
            Ev::Update(s) if s.task_id.as_str() == task && pred(s) => Some(s.clone()),
            _ => None,
        })
        .await
    }

    pub async fn terminal(&mut self, task: &str, timeout: Duration) -> TaskStatus {
        self.update(task, timeout, |s| s.state.is_terminal()).await
    }
}

impl Drop for TestFramework {
    fn drop(&mut self) {
        self.driver.stop();
        self.task.abort();
    }
}
