use std::time::Duration;

use cairn_model::{
    AgentId, CommandInfo, ExecutorId, ExecutorInfo, KillPolicy, Network, RangeSet, ResourceName,
    Resources, Scalar, TaskId, TaskInfo,
};

use crate::SdkError;

/// Builds a [`TaskInfo`]: resources, command, environment.
///
/// ```
/// use cairn_sdk::{AgentId, TaskBuilder};
/// let task = TaskBuilder::new("web-1")
///     .cpus(0.5)
///     .mem(128.0)
///     .shell("python3 -m http.server $PORT")
///     .env("PORT", "8080")
///     .build(&AgentId::new("agent-1"))
///     .unwrap();
/// assert_eq!(task.resources.to_string(), "cpus:0.5;mem:128");
/// ```
#[derive(Clone, Debug)]
pub struct TaskBuilder {
    id: String,
    name: Option<String>,
    scalars: Vec<(ResourceName, f64)>,
    ports: Vec<(u64, u64)>,
    command: CommandInfo,
    kill_grace: Option<Duration>,
    labels: Vec<(String, String)>,
    network: Network,
    executor: Option<(String, CommandInfo)>,
    data: Vec<u8>,
}

impl TaskBuilder {
    pub fn new(id: impl Into<String>) -> Self {
        TaskBuilder {
            id: id.into(),
            name: None,
            scalars: Vec::new(),
            ports: Vec::new(),
            command: CommandInfo::shell(""),
            kill_grace: None,
            labels: Vec::new(),
            network: Network::Host,
            executor: None,
            data: Vec::new(),
        }
    }

    /// Runs the task under the framework's own executor `id` (started on
    /// the agent with `sh -c command` the first time; later tasks with the
    /// same id on that agent go to the same process) instead of a command
    /// executor of its own. As in Mesos, such a task has no command of its
    /// own: what the executor should do goes in [`TaskBuilder::data`]. See
    /// [`crate::executor`].
    pub fn executor(mut self, id: impl Into<String>, command: impl Into<String>) -> Self {
        self.executor = Some((id.into(), CommandInfo::shell(command.into())));
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets `name` to `amount`, replacing an earlier setting.
    fn scalar(mut self, name: ResourceName, amount: f64) -> Self {
        self.scalars.retain(|(n, _)| *n != name);
        self.scalars.push((name, amount));
        self
    }

    pub fn cpus(self, cpus: f64) -> Self {
        self.scalar(ResourceName::Cpus, cpus)
    }

    /// Memory in MB.
    pub fn mem(self, mb: f64) -> Self {
        self.scalar(ResourceName::Mem, mb)
    }

    /// Disk in MB.
    pub fn disk(self, mb: f64) -> Self {
        self.scalar(ResourceName::Disk, mb)
    }

    /// Ports from the agent's `ports` resource, as inclusive ranges.
    pub fn ports(mut self, ranges: &[(u64, u64)]) -> Self {
        self.ports.extend_from_slice(ranges);
        self
    }

    /// Runs `sh -c command`.
    pub fn shell(mut self, command: impl Into<String>) -> Self {
        self.command.shell = true;
        self.command.value = command.into();
        self
    }

    /// Executes `program` directly with `args` (argv[0] is `program`).
    pub fn exec(mut self, program: impl Into<String>, args: &[&str]) -> Self {
        let program = program.into();
        self.command.shell = false;
        self.command.arguments = std::iter::once(program.clone())
            .chain(args.iter().map(|a| (*a).to_string()))
            .collect();
        self.command.value = program;
        self
    }

    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.command.environment.push((name.into(), value.into()));
        self
    }

    /// Unix user to run as (default: the framework's user).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.command.user = Some(user.into());
        self
    }

    /// Time between SIGTERM and SIGKILL when the task is killed.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = Some(grace);
        self
    }

    /// The network the task sees (default: the host's).
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// Opaque bytes for the task's executor (at most 1 MiB).
    pub fn data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = data.into();
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// The task, to run on `agent` (the offer's agent). Fails on an invalid
    /// id, a negative or non-finite amount, or an empty command.
    pub fn build(self, agent: &AgentId) -> Result<TaskInfo, SdkError> {
        let task_id =
            TaskId::parse("task_id", &self.id).map_err(|e| SdkError::InvalidTask(e.to_string()))?;
        let mut resources = Resources::new();
        for (name, amount) in self.scalars {
            let s = Scalar::from_f64(amount)
                .map_err(|e| SdkError::InvalidTask(format!("{name}: {e}")))?;
            resources.add_scalar(name, s);
        }
        if !self.ports.is_empty() {
            let set = RangeSet::from_ranges(self.ports).map_err(SdkError::InvalidTask)?;
            resources = resources.with_ranges(ResourceName::Ports, set);
        }
        if self.executor.is_none()
            && let Some(problem) = self.command.problem()
        {
            return Err(SdkError::InvalidTask(problem));
        }
        let executor = match self.executor {
            None => None,
            Some((id, command)) => {
                let executor_id = ExecutorId::parse("executor.executor_id", &id)
                    .map_err(|e| SdkError::InvalidTask(e.to_string()))?;
                if let Some(problem) = command.problem() {
                    return Err(SdkError::InvalidTask(format!("executor: {problem}")));
                }
                Some(ExecutorInfo {
                    name: id,
                    executor_id,
                    command,
                })
            }
        };
        Ok(TaskInfo {
            name: self.name.unwrap_or_else(|| self.id.clone()),
            task_id,
            agent_id: agent.clone(),
            resources,
            command: self.command,
            kill_policy: KillPolicy {
                grace_period: self.kill_grace,
            },
            labels: self.labels,
            network: self.network,
            executor,
            data: self.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_amounts_and_empty_commands_are_refused() {
        let a = AgentId::new("a");
        assert!(
            TaskBuilder::new("t")
                .cpus(f64::NAN)
                .shell("true")
                .build(&a)
                .is_err()
        );
        assert!(
            TaskBuilder::new("t")
                .cpus(-1.0)
                .shell("true")
                .build(&a)
                .is_err()
        );
        assert!(TaskBuilder::new("t").cpus(1.0).build(&a).is_err());
        assert!(
            TaskBuilder::new("a/b")
                .cpus(1.0)
                .shell("true")
                .build(&a)
                .is_err()
        );
        let t = TaskBuilder::new("t")
            .cpus(1.0)
            .exec("/bin/echo", &["hi"])
            .build(&a)
            .unwrap();
        assert_eq!(t.command.arguments, vec!["/bin/echo", "hi"]);
        assert!(!t.command.shell);
    }
}
