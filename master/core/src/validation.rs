//! Checks of a launch against the offers it consumes. A failed check is an
//! answer for the framework (a TASK_ERROR message), not a fault.

use cairn_model::{AgentId, Resources, TaskInfo};

/// Why `task` cannot be launched on `agent` out of `remaining` (what is left
/// of the accepted offers after the tasks before it in the same ACCEPT), or
/// `None` when it can. `id_in_use` says whether the framework already has a
/// live task with this id (or launches one earlier in the same ACCEPT).
pub(crate) fn launch_problem(
    task: &TaskInfo,
    agent: &AgentId,
    remaining: &Resources,
    id_in_use: bool,
) -> Option<String> {
    if id_in_use {
        return Some(format!(
            "Task ID '{}' is already in use by this framework",
            task.task_id
        ));
    }
    if &task.agent_id != agent {
        return Some(format!(
            "Task uses agent {} but the offers are for agent {agent}",
            task.agent_id
        ));
    }
    if task.resources.is_empty() {
        return Some("Task uses no resources".to_string());
    }
    if !remaining.contains(&task.resources) {
        return Some(format!(
            "Task uses more resources ({}) than available in the offers ({})",
            task.resources, remaining
        ));
    }
    if let Some(problem) = task.runnable().problem() {
        return Some(format!("Invalid command: {problem}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use cairn_model::{CommandInfo, KillPolicy, TaskId};

    use super::*;

    fn task(res: &str, cmd: &str) -> TaskInfo {
        TaskInfo {
            task_id: TaskId::new("t"),
            name: "t".into(),
            agent_id: AgentId::new("a1"),
            resources: Resources::parse(res).unwrap(),
            command: CommandInfo::shell(cmd),
            kill_policy: KillPolicy::default(),
            labels: vec![],
            network: cairn_model::Network::Host,
            executor: None,
            data: Vec::new(),
        }
    }

    #[test]
    fn each_problem_is_named() {
        let a1 = AgentId::new("a1");
        let offer = Resources::parse("cpus:1;mem:128").unwrap();
        assert!(launch_problem(&task("cpus:1", "true"), &a1, &offer, false).is_none());
        let msg =
            |t: &TaskInfo, a: &AgentId, used: bool| launch_problem(t, a, &offer, used).unwrap();
        assert!(msg(&task("cpus:1", "true"), &a1, true).contains("already in use"));
        assert!(msg(&task("cpus:1", "true"), &AgentId::new("a2"), false).contains("agent"));
        assert!(msg(&task("cpus:2", "true"), &a1, false).contains("more resources"));
        assert!(msg(&task("", "true"), &a1, false).contains("no resources"));
        assert!(msg(&task("cpus:1", ""), &a1, false).contains("command"));
        // The agent's own variables cannot be set by a task (for example
        // CAIRN_TASK_USER, which names the user a direct task runs as).
        let mut t = task("cpus:1", "true");
        t.command
            .environment
            .push(("CAIRN_TASK_USER".into(), "root".into()));
        assert!(msg(&t, &a1, false).contains("reserved"));
    }
}
