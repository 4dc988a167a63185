//! Reliable status updates: one stream per task, one update in flight,
//! re-sent with exponential backoff until the framework acknowledges it, in
//! order. Duplicate and stale acknowledgements change nothing.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use cairn_model::{FrameworkId, StatusUuid, TaskId, TaskStatus, Time};

/// Backoff of re-sends: `initial`, doubling up to `max`.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// Mesos's: 10 s doubling to 10 min.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(600),
        }
    }
}

#[derive(Debug)]
struct InFlight {
    retry_at: Time,
    backoff: Duration,
}

#[derive(Debug, Default)]
struct Stream {
    /// Front is the update in flight (when `in_flight` is set).
    queue: VecDeque<TaskStatus>,
    in_flight: Option<InFlight>,
}

/// What the manager asks its owner to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    pub framework_id: FrameworkId,
    pub status: TaskStatus,
}

/// See the module documentation. Sending is the owner's job: every method
/// returns the updates to (re-)send to the master now.
#[derive(Debug)]
pub struct StatusUpdateManager {
    policy: RetryPolicy,
    streams: BTreeMap<(FrameworkId, TaskId), Stream>,
    /// Whether there is a master to send to; while not, updates queue.
    connected: bool,
}

impl StatusUpdateManager {
    pub fn new(policy: RetryPolicy) -> Self {
        StatusUpdateManager {
            policy,
            streams: BTreeMap::new(),
            connected: false,
        }
    }

    /// Queues an update (it must carry a uuid). It goes out at once if its
    /// stream has nothing in flight and a master is connected.
    pub fn enqueue(
        &mut self,
        now: Time,
        framework_id: FrameworkId,
        status: TaskStatus,
    ) -> Vec<Forward> {
        let key = (framework_id, status.task_id.clone());
        let stream = self.streams.entry(key.clone()).or_default();
        stream.queue.push_back(status);
        self.maybe_send(now, &key).into_iter().collect()
    }

    fn maybe_send(&mut self, now: Time, key: &(FrameworkId, TaskId)) -> Option<Forward> {
        if !self.connected {
            return None;
        }
        let initial = self.policy.initial;
        let stream = self.streams.get_mut(key)?;
        if stream.in_flight.is_some() {
            return None;
        }
        let front = stream.queue.front()?.clone();
        stream.in_flight = Some(InFlight {
            retry_at: now + initial,
            backoff: initial,
        });
        Some(Forward {
            framework_id: key.0.clone(),
            status: front,
        })
    }

    /// The framework acknowledged `uuid`. Returns the next update of the
    /// stream to send, if any, and whether the stream is now empty.
    pub fn acknowledge(
        &mut self,
        now: Time,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        uuid: StatusUuid,
    ) -> (Vec<Forward>, bool) {
        let key = (framework_id.clone(), task_id.clone());
        let Some(stream) = self.streams.get_mut(&key) else {
            return (Vec::new(), false);
        };
        let matches =
            stream.in_flight.is_some() && stream.queue.front().and_then(|s| s.uuid) == Some(uuid);
        if !matches {
            // Duplicate or stale: nothing changes.
            return (Vec::new(), false);
        }
        stream.queue.pop_front();
        stream.in_flight = None;
        if stream.queue.is_empty() {
            self.streams.remove(&key);
            return (Vec::new(), true);
        }
        (self.maybe_send(now, &key).into_iter().collect(), false)
    }

    /// Re-sends what is due, doubling each one's backoff.
    pub fn retry_due(&mut self, now: Time) -> Vec<Forward> {
        if !self.connected {
            return Vec::new();
        }
        let max = self.policy.max;
        let mut out = Vec::new();
        for ((fw, _), stream) in &mut self.streams {
            let Some(f) = stream.in_flight.as_mut() else {
                continue;
            };
            if f.retry_at > now {
                continue;
            }
            f.backoff = (f.backoff * 2).min(max);
            f.retry_at = now + f.backoff;
            if let Some(front) = stream.queue.front() {
                out.push(Forward {
                    framework_id: fw.clone(),
                    status: front.clone(),
                });
            }
        }
        out
    }

    /// A master session started: every stream's front goes out now (what was
    /// in flight may have been lost with the old session).
    pub fn connected(&mut self, now: Time) -> Vec<Forward> {
        self.connected = true;
        for stream in self.streams.values_mut() {
            stream.in_flight = None;
        }
        let keys: Vec<_> = self.streams.keys().cloned().collect();
        keys.iter()
            .filter_map(|k| self.maybe_send(now, k))
            .collect()
    }

    /// Whether a master session is up (registered, and not disconnected since).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn disconnected(&mut self) {
        self.connected = false;
    }

    /// Forgets every stream of a framework (it was removed; nobody will
    /// acknowledge).
    pub fn drop_framework(&mut self, framework_id: &FrameworkId) {
        self.streams.retain(|(fw, _), _| fw != framework_id);
    }

    /// Whether `uuid` is the update of this stream awaiting acknowledgement
    /// (an acknowledgement of it takes effect).
    pub fn is_in_flight(
        &self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        uuid: StatusUuid,
    ) -> bool {
        self.streams
            .get(&(framework_id.clone(), task_id.clone()))
            .is_some_and(|s| {
                s.in_flight.is_some() && s.queue.front().and_then(|f| f.uuid) == Some(uuid)
            })
    }

    /// Whether `uuid` is queued on this stream.
    pub fn is_queued(
        &self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        uuid: StatusUuid,
    ) -> bool {
        self.streams
            .get(&(framework_id.clone(), task_id.clone()))
            .is_some_and(|s| s.queue.iter().any(|q| q.uuid == Some(uuid)))
    }

    /// Replays a recorded acknowledgement (nothing is in flight while
    /// recovering): pops the stream's oldest update if it is `uuid`. Returns
    /// whether the stream is now empty.
    pub fn replay_ack(
        &mut self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        uuid: StatusUuid,
    ) -> bool {
        let key = (framework_id.clone(), task_id.clone());
        let Some(stream) = self.streams.get_mut(&key) else {
            return false;
        };
        if stream.queue.front().and_then(|s| s.uuid) == Some(uuid) {
            stream.queue.pop_front();
        }
        if stream.queue.is_empty() {
            self.streams.remove(&key);
            return true;
        }
        false
    }

    pub fn has_stream(&self, framework_id: &FrameworkId, task_id: &TaskId) -> bool {
        self.streams
            .contains_key(&(framework_id.clone(), task_id.clone()))
    }

    /// Updates not yet acknowledged, per task, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = (&FrameworkId, &TaskStatus)> {
        self.streams
            .iter()
            .flat_map(|((fw, _), s)| s.queue.iter().map(move |st| (fw, st)))
    }

    pub fn poll_timeout(&self) -> Option<Time> {
        if !self.connected {
            return None;
        }
        self.streams
            .values()
            .filter_map(|s| s.in_flight.as_ref().map(|f| f.retry_at))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use cairn_model::{Source, TaskState};

    use super::*;

    fn status(task: &str, state: TaskState, u: u8) -> TaskStatus {
        TaskStatus {
            task_id: TaskId::new(task),
            state,
            message: String::new(),
            source: Source::Executor,
            reason: None,
            agent_id: None,
            executor_id: None,
            timestamp: Time::ZERO,
            uuid: Some(StatusUuid([u; 16])),
            exit_code: None,
            healthy: None,
        }
    }

    fn t(s: u64) -> Time {
        Time::from_micros(s * 1_000_000)
    }

    fn fw() -> FrameworkId {
        FrameworkId::new("f")
    }

    #[test]
    fn one_update_in_flight_per_task_in_order() {
        let mut m = StatusUpdateManager::new(RetryPolicy::default());
        m.connected(t(0));
        let a = m.enqueue(t(0), fw(), status("t", TaskState::Starting, 1));
        assert_eq!(a.len(), 1);
        // RUNNING waits behind STARTING.
        assert!(
            m.enqueue(t(0), fw(), status("t", TaskState::Running, 2))
                .is_empty()
        );
        // Another task's stream is independent.
        assert_eq!(
            m.enqueue(t(0), fw(), status("u", TaskState::Starting, 3))
                .len(),
            1
        );
        let (next, done) = m.acknowledge(t(1), &fw(), &TaskId::new("t"), StatusUuid([1; 16]));
        assert!(!done);
        assert_eq!(next[0].status.state, TaskState::Running);
        let (next, done) = m.acknowledge(t(1), &fw(), &TaskId::new("t"), StatusUuid([2; 16]));
        assert!(next.is_empty() && done);
    }

    #[test]
    fn unacknowledged_updates_are_resent_with_doubling_backoff() {
        let policy = RetryPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(40),
        };
        let mut m = StatusUpdateManager::new(policy);
        m.connected(t(0));
        m.enqueue(t(0), fw(), status("t", TaskState::Running, 1));
        assert_eq!(m.poll_timeout(), Some(t(10)));
        assert!(m.retry_due(t(9)).is_empty());
        assert_eq!(m.retry_due(t(10)).len(), 1);
        assert_eq!(m.poll_timeout(), Some(t(30)));
        assert_eq!(m.retry_due(t(30)).len(), 1);
        assert_eq!(m.poll_timeout(), Some(t(70)));
        assert_eq!(m.retry_due(t(70)).len(), 1);
        assert_eq!(m.poll_timeout(), Some(t(110)), "capped at 40 s");
    }

    #[test]
    fn duplicate_and_stale_acks_change_nothing() {
        let mut m = StatusUpdateManager::new(RetryPolicy::default());
        m.connected(t(0));
        m.enqueue(t(0), fw(), status("t", TaskState::Running, 1));
        m.enqueue(t(0), fw(), status("t", TaskState::Finished, 2));
        // An ack for the queued (not in-flight) update is stale.
        let (next, done) = m.acknowledge(t(1), &fw(), &TaskId::new("t"), StatusUuid([2; 16]));
        assert!(next.is_empty() && !done);
        m.acknowledge(t(1), &fw(), &TaskId::new("t"), StatusUuid([1; 16]));
        // The same ack again: nothing.
        let (next, done) = m.acknowledge(t(1), &fw(), &TaskId::new("t"), StatusUuid([1; 16]));
        assert!(next.is_empty() && !done);
        assert_eq!(m.pending().count(), 1);
    }

    #[test]
    fn updates_wait_while_disconnected_and_go_out_on_reconnect() {
        let mut m = StatusUpdateManager::new(RetryPolicy::default());
        assert!(
            m.enqueue(t(0), fw(), status("t", TaskState::Running, 1))
                .is_empty()
        );
        assert_eq!(m.poll_timeout(), None);
        let sent = m.connected(t(5));
        assert_eq!(sent.len(), 1);
        m.disconnected();
        // In flight when the session broke: re-sent on the next session.
        assert_eq!(m.connected(t(6)).len(), 1);
    }
}
