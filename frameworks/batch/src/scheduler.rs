//! The batch scheduler: stages become runnable when what they depend on
//! has finished; their tasks go into offers as they fit (with delay
//! scheduling for a stage that prefers some agents); a failed task is
//! retried as a new task up to the stage's retries; the job ends when every
//! stage has finished, or when a task has failed more often than allowed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use cairn_model::{AttributeValue, ExecutorId};
use cairn_sdk::offers::OfferSpace;
use cairn_sdk::{
    AgentId, Driver, FrameworkId, Offer, Resources, Scheduler, TaskBuilder, TaskId, TaskInfo,
    TaskState, TaskStatus,
};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::job::{Job, Mode};
use crate::progress::{Attempt, Progress, Record};
use crate::report::{Report, StageReport};

/// How long an offer that fits nothing is refused.
const REFUSE: Duration = Duration::from_secs(1);

/// Launches of one task the cluster may lose (agent lost, launch dropped
/// in a failover) before the job gives up on it; these do not count
/// against the stage's retries, which are for the task's own failures.
const MAX_LOSSES: u32 = 5;

/// Whether a task ended through the cluster rather than through itself.
fn lost_by_cluster(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Lost
            | TaskState::Dropped
            | TaskState::Unreachable
            | TaskState::Gone
            | TaskState::GoneByOperator
            | TaskState::Unknown
    )
}

#[derive(Debug)]
struct StageRun {
    shape: Resources,
    /// Task indexes waiting for an offer.
    pending: VecDeque<usize>,
    /// Launches so far, by task index.
    attempts: Vec<u32>,
    /// Ends by the task's own failure, and losses by the cluster, by index.
    failures: Vec<u32>,
    losses: Vec<u32>,
    finished: usize,
    /// Indexes that used up their retries, with the last message.
    failed: Vec<(usize, String)>,
    retries: usize,
    started: Option<Instant>,
    ended: Option<Instant>,
    /// When it became runnable: the start of its locality wait.
    runnable_since: Option<Instant>,
    /// Where its tasks finished: (hostname, agent id) and how many.
    ran_on: BTreeMap<(String, String), usize>,
    bar: ProgressBar,
}

/// A task launched and not yet seen to end.
#[derive(Clone, Debug)]
struct Live {
    stage: usize,
    index: usize,
    agent_id: AgentId,
    hostname: String,
}

/// Per agent, the coarse-grained executor tasks are sent to.
#[derive(Debug, Default)]
struct Executors {
    by_agent: HashMap<AgentId, ExecutorId>,
    next: u64,
}

pub struct BatchScheduler {
    job: Job,
    order: Vec<usize>,
    stages: Vec<StageRun>,
    live: HashMap<TaskId, Live>,
    /// Tasks a previous run launched and did not see end: reconciled after
    /// the subscription.
    unresolved: Vec<TaskId>,
    executors: Executors,
    executor_command: String,
    progress: Option<Progress>,
    started: Instant,
    report: Option<tokio::sync::oneshot::Sender<Report>>,
    done: bool,
}

impl std::fmt::Debug for BatchScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchScheduler")
            .field("job", &self.job.name)
            .field("live", &self.live.len())
            .finish_non_exhaustive()
    }
}

fn attribute_matches(offer: &Offer, want: &str) -> bool {
    let Some((name, value)) = want.split_once(':') else {
        return false;
    };
    offer.attributes.iter().any(|a| {
        a.name == name
            && match &a.value {
                AttributeValue::Scalar(s) => value.parse::<f64>().is_ok_and(|v| v == *s),
                other => other.to_string() == value,
            }
    })
}

impl BatchScheduler {
    /// A scheduler for `job`, resuming what `previous` (from the progress
    /// log) already did.
    pub fn new(
        job: Job,
        progress: Option<(Progress, BTreeMap<String, Attempt>)>,
        executor_command: String,
        bars: &MultiProgress,
        report: tokio::sync::oneshot::Sender<Report>,
    ) -> Result<Self, String> {
        let order = job.order().map_err(|e| e.to_string())?;
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> ");
        let mut stages = Vec::with_capacity(job.stages.len());
        for s in &job.stages {
            let shape = Resources::cpus_mem(s.cpus, s.mem)?;
            let bar = bars.add(ProgressBar::new(s.tasks as u64));
            bar.set_style(style.clone());
            bar.set_prefix(s.name.clone());
            stages.push(StageRun {
                shape,
                pending: (0..s.tasks).collect(),
                attempts: vec![0; s.tasks],
                failures: vec![0; s.tasks],
                losses: vec![0; s.tasks],
                finished: 0,
                failed: Vec::new(),
                retries: 0,
                started: None,
                ended: None,
                runnable_since: None,
                ran_on: BTreeMap::new(),
                bar,
            });
        }
        let mut sched = BatchScheduler {
            job,
            order,
            stages,
            live: HashMap::new(),
            unresolved: Vec::new(),
            executors: Executors::default(),
            executor_command,
            progress: None,
            started: Instant::now(),
            report: Some(report),
            done: false,
        };
        if let Some((log, previous)) = progress {
            sched.resume(previous);
            sched.progress = Some(log);
        }
        Ok(sched)
    }

    /// Takes back what an earlier run of the same job recorded.
    fn resume(&mut self, previous: BTreeMap<String, Attempt>) {
        let mut by_index: BTreeMap<(usize, usize), Vec<(String, Attempt)>> = BTreeMap::new();
        for (id, a) in previous {
            by_index
                .entry((a.stage, a.index))
                .or_default()
                .push((id, a));
        }
        for ((stage, index), mut attempts) in by_index {
            let Some(st) = self.stages.get_mut(stage) else {
                continue;
            };
            if index >= st.attempts.len() {
                continue;
            }
            attempts.sort_by_key(|(_, a)| a.attempt);
            st.attempts[index] = attempts.iter().map(|(_, a)| a.attempt).max().unwrap_or(0);
            st.retries += attempts.len().saturating_sub(1);
            st.pending.retain(|i| *i != index);
            for (_, a) in &attempts {
                match a.ended.as_ref().and_then(|(s, _)| TaskState::parse(s)) {
                    Some(s) if lost_by_cluster(s) => st.losses[index] += 1,
                    Some(TaskState::Finished) | None => {}
                    Some(_) => st.failures[index] += 1,
                }
            }
            let Some((id, last)) = attempts.pop() else {
                continue;
            };
            match &last.ended {
                Some((state, _)) if state == TaskState::Finished.as_str() => {
                    st.finished += 1;
                    st.bar.inc(1);
                    *st.ran_on
                        .entry((last.hostname.clone(), last.agent_id.clone()))
                        .or_default() += 1;
                }
                Some((_, message)) => {
                    let retries = self.job.stages[stage].retries;
                    if st.failures[index] <= retries && st.losses[index] <= MAX_LOSSES {
                        st.pending.push_back(index);
                    } else {
                        st.failed.push((index, message.clone()));
                    }
                }
                None => {
                    let task_id = TaskId::new(id.as_str());
                    self.unresolved.push(task_id.clone());
                    self.live.insert(
                        task_id,
                        Live {
                            stage,
                            index,
                            agent_id: AgentId::new(last.agent_id.as_str()),
                            hostname: last.hostname.clone(),
                        },
                    );
                }
            }
        }
    }

    fn stage_done(&self, i: usize) -> bool {
        self.stages[i].finished == self.job.stages[i].tasks
    }

    fn runnable(&self, i: usize) -> bool {
        let name_index = |n: &str| self.job.stages.iter().position(|s| s.name == n);
        self.job.stages[i]
            .depends_on
            .iter()
            .all(|d| name_index(d).is_some_and(|j| self.stage_done(j)))
    }

    fn wants_offers(&self) -> bool {
        !self.done
            && self
                .order
                .iter()
                .any(|&i| self.runnable(i) && !self.stages[i].pending.is_empty())
    }

    fn task_id(&self, stage: usize, index: usize, attempt: u32) -> String {
        format!(
            "{}.{}.{index}.{attempt}",
            self.job.name, self.job.stages[stage].name
        )
    }

    /// The task for one attempt; in coarse mode it names the agent's
    /// executor (a new one when none runs there).
    fn build(
        &mut self,
        stage: usize,
        index: usize,
        attempt: u32,
        agent: &AgentId,
    ) -> Result<TaskInfo, String> {
        let spec = &self.job.stages[stage];
        let id = self.task_id(stage, index, attempt);
        let mut b = TaskBuilder::new(id)
            .cpus(spec.cpus)
            .mem(spec.mem)
            .shell(spec.command_for(index))
            .env("BATCH_STAGE", spec.name.clone())
            .env("BATCH_INDEX", index.to_string())
            .label("batch.job", self.job.name.clone())
            .label("batch.stage", spec.name.clone());
        if self.job.mode == Mode::Coarse {
            let exec = match self.executors.by_agent.get(agent) {
                Some(e) => e.clone(),
                None => {
                    self.executors.next += 1;
                    let e = ExecutorId::new(format!(
                        "{}-executor-{}",
                        self.job.name, self.executors.next
                    ));
                    self.executors.by_agent.insert(agent.clone(), e.clone());
                    e
                }
            };
            // The executor runs the command it finds in the task's data.
            b = b
                .executor(exec.as_str(), self.executor_command.clone())
                .data(spec.command_for(index).into_bytes());
        }
        b.build(agent).map_err(|e| e.to_string())
    }

    /// Ends the run: kills what still runs if it failed, hands the report
    /// out and removes the framework.
    async fn finish(&mut self, driver: &Driver) {
        if self.done {
            return;
        }
        self.done = true;
        let succeeded = self.stages.iter().all(|s| s.failed.is_empty())
            && (0..self.stages.len()).all(|i| self.stage_done(i));
        if !succeeded {
            for id in self.live.keys() {
                let _ = driver.kill(id, Some(Duration::from_secs(2))).await;
            }
        }
        for s in &self.stages {
            s.bar.finish();
        }
        let report = Report {
            job: self.job.name.clone(),
            succeeded,
            elapsed: self.started.elapsed(),
            stages: self
                .job
                .stages
                .iter()
                .zip(&self.stages)
                .map(|(spec, run)| StageReport {
                    name: spec.name.clone(),
                    tasks: spec.tasks,
                    finished: run.finished,
                    failed: run.failed.clone(),
                    retries: run.retries,
                    elapsed: match (run.started, run.ended) {
                        (Some(a), Some(b)) => Some(b - a),
                        _ => None,
                    },
                    ran_on: run
                        .ran_on
                        .iter()
                        .map(|((hostname, agent_id), tasks)| crate::report::RanOn {
                            hostname: hostname.clone(),
                            agent_id: agent_id.clone(),
                            tasks: *tasks,
                        })
                        .collect(),
                })
                .collect(),
        };
        if let Some(tx) = self.report.take() {
            let _ = tx.send(report);
        }
    }

    fn log(&mut self, records: &[Record]) {
        if let Some(p) = &mut self.progress
            && let Err(e) = p.write(records)
        {
            // Losing the log loses the ability to resume, not the run.
            tracing::error!(error = %e, "cannot write progress; a restart would not resume this run");
            self.progress = None;
        }
    }
}

impl Scheduler for BatchScheduler {
    async fn subscribed(&mut self, driver: &Driver, _id: &FrameworkId) {
        // Tasks an earlier run launched: the master says where they are
        // (or that it never heard of them: LOST, and they are retried).
        if !self.unresolved.is_empty() {
            let ask: Vec<(TaskId, Option<AgentId>)> = std::mem::take(&mut self.unresolved)
                .into_iter()
                .map(|t| {
                    let agent = self.live.get(&t).map(|l| l.agent_id.clone());
                    (t, agent)
                })
                .collect();
            for chunk in ask.chunks(5_000) {
                let _ = driver.reconcile(chunk).await;
            }
        }
        let _ = driver.want_offers(self.wants_offers()).await;
        if (0..self.stages.len()).all(|i| self.stage_done(i))
            || self.stages.iter().any(|s| !s.failed.is_empty())
        {
            self.finish(driver).await;
            let _ = driver.teardown().await;
        }
    }

    async fn offers(&mut self, driver: &Driver, offers: Vec<Offer>) {
        let now = Instant::now();
        let mut spaces: Vec<OfferSpace> = offers.into_iter().map(OfferSpace::new).collect();
        let mut launches: Vec<Vec<(usize, usize, u32)>> = vec![Vec::new(); spaces.len()];
        if !self.done {
            for oi in 0..self.order.len() {
                let i = self.order[oi];
                if !self.runnable(i) || self.stages[i].pending.is_empty() {
                    continue;
                }
                let since = *self.stages[i].runnable_since.get_or_insert(now);
                let prefer = self.job.stages[i].prefer.clone();
                for (si, space) in spaces.iter_mut().enumerate() {
                    if let Some(p) = &prefer
                        && !attribute_matches(&space.offer, &p.attribute)
                        && now.duration_since(since) < p.wait
                    {
                        continue;
                    }
                    let st = &mut self.stages[i];
                    while !st.pending.is_empty() && space.take(&st.shape) {
                        let Some(index) = st.pending.pop_front() else {
                            break;
                        };
                        st.attempts[index] += 1;
                        launches[si].push((i, index, st.attempts[index]));
                    }
                }
            }
        }
        let mut records = Vec::new();
        let mut accepts = Vec::new();
        for (space, wanted) in spaces.iter().zip(launches) {
            let mut tasks = Vec::with_capacity(wanted.len());
            for (stage, index, attempt) in wanted {
                match self.build(stage, index, attempt, &space.offer.agent_id) {
                    Ok(t) => {
                        records.push(Record::Launched {
                            task_id: t.task_id.to_string(),
                            stage,
                            index,
                            attempt,
                            agent_id: space.offer.agent_id.to_string(),
                            hostname: space.offer.hostname.clone(),
                        });
                        self.live.insert(
                            t.task_id.clone(),
                            Live {
                                stage,
                                index,
                                agent_id: space.offer.agent_id.clone(),
                                hostname: space.offer.hostname.clone(),
                            },
                        );
                        self.stages[stage].started.get_or_insert(now);
                        tasks.push(t);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot build a task");
                        self.stages[stage].failed.push((index, e));
                    }
                }
            }
            accepts.push((space.offer.id.clone(), tasks));
        }
        // Launches are on disk before they are made.
        self.log(&records);
        let calls = accepts.into_iter().map(|(offer, tasks)| async move {
            let launched: Vec<TaskId> = tasks.iter().map(|t| t.task_id.clone()).collect();
            let r = if tasks.is_empty() {
                driver.decline(&[offer], Some(REFUSE)).await
            } else {
                driver.accept(&[offer], tasks, Some(REFUSE)).await
            };
            (launched, r)
        });
        for (launched, r) in futures::future::join_all(calls).await {
            if let Err(e) = r {
                // Not launched (the stream went away): back in the queue;
                // a task the master did take anyway is found by the
                // reconciliation after the re-subscription.
                tracing::warn!(error = %e, "a launch was refused");
                for id in launched {
                    if let Some(l) = self.live.remove(&id) {
                        self.stages[l.stage].pending.push_front(l.index);
                        self.stages[l.stage].attempts[l.index] -= 1;
                    }
                }
            }
        }
        for (i, s) in self.stages.iter().enumerate() {
            let running = self.live.values().filter(|l| l.stage == i).count();
            s.bar
                .set_message(format!("{running} running, {} retried", s.retries));
        }
        if self.stages.iter().any(|s| !s.failed.is_empty()) {
            self.finish(driver).await;
            let _ = driver.teardown().await;
            return;
        }
        let _ = driver.want_offers(self.wants_offers()).await;
    }

    async fn update(&mut self, driver: &Driver, status: &TaskStatus) {
        if !status.state.is_terminal() {
            return;
        }
        let Some(l) = self.live.remove(&status.task_id) else {
            return;
        };
        self.log(&[Record::Ended {
            task_id: status.task_id.to_string(),
            state: status.state.as_str().to_string(),
            message: status.message.clone(),
        }]);
        let retries = self.job.stages[l.stage].retries;
        let st = &mut self.stages[l.stage];
        if status.state == TaskState::Finished {
            st.finished += 1;
            st.bar.inc(1);
            *st.ran_on
                .entry((l.hostname.clone(), l.agent_id.to_string()))
                .or_default() += 1;
            if st.finished == st.attempts.len() {
                st.ended = Some(Instant::now());
            }
        } else if lost_by_cluster(status.state) && st.losses[l.index] < MAX_LOSSES {
            st.losses[l.index] += 1;
            st.retries += 1;
            st.pending.push_back(l.index);
        } else if !lost_by_cluster(status.state) && st.failures[l.index] < retries {
            st.failures[l.index] += 1;
            st.retries += 1;
            st.pending.push_back(l.index);
        } else {
            let why = format!("{}: {}", status.state, status.message);
            st.failed.push((l.index, why));
        }
        if lost_by_cluster(status.state) {
            // Its executor (if any) is gone with it: the next task on that
            // agent starts a new one.
            self.executors.by_agent.remove(&l.agent_id);
        }
        let over = self.stages.iter().any(|s| !s.failed.is_empty())
            || (0..self.stages.len()).all(|i| self.stage_done(i));
        if over {
            self.finish(driver).await;
            // Acknowledged before the teardown ends the driver.
            let _ = driver.acknowledge(status).await;
            let _ = driver.teardown().await;
            return;
        }
        let _ = driver.want_offers(self.wants_offers()).await;
    }

    async fn failure(
        &mut self,
        _driver: &Driver,
        agent_id: &AgentId,
        executor_id: Option<&ExecutorId>,
        _status: Option<i32>,
    ) {
        // An executor ended (idle, or killed): the next task on that agent
        // starts a new one. An agent lost: its tasks come back LOST.
        match executor_id {
            Some(e) if self.executors.by_agent.get(agent_id) == Some(e) => {
                self.executors.by_agent.remove(agent_id);
            }
            Some(_) => {}
            None => {
                self.executors.by_agent.remove(agent_id);
            }
        }
    }
}
