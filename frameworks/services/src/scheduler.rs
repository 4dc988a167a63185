//! The replica sets: apps, their instances, and the decisions that keep
//! each app at its spec (placement under constraints, replacement with
//! backoff, killing the unhealthy, rolling updates, unreachable instances).
//!
//! [`Shared`] holds the state and makes the decisions without I/O; the SDK
//! callbacks ([`ServicesScheduler`]) and a ticker carry them out.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_sdk::offers::OfferSpace;
use cairn_sdk::{Driver, Offer, Resources, TaskBuilder, TaskId, TaskInfo, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};

use crate::constraints::{Place, first_unmet};
use crate::dns::{Directory, Endpoint};
use crate::executor::InstanceSpec;
use crate::spec::{App, KillSelection};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
}

/// Unix time in seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppState {
    pub spec: App,
    pub version: String,
    /// Numbers the app's instances.
    pub next_index: u64,
    /// Failures in a row (an instance that ran long enough resets it).
    pub failures: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for an offer it fits, and why it has none yet.
    Pending { reason: String },
    /// Backing off after failures, until this Unix time.
    Delayed { until: f64 },
    /// Sent to the master; `state` follows its updates.
    Launched,
    /// Asked to end.
    Killing { why: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Instance {
    /// The task id.
    pub id: String,
    pub app: String,
    pub version: String,
    pub phase: Phase,
    /// The task's newest state (`TASK_RUNNING`...), once launched.
    pub state: Option<String>,
    pub healthy: Option<bool>,
    pub agent_id: Option<String>,
    pub hostname: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub attributes: Vec<(String, String)>,
    pub ports: Vec<u64>,
    pub created: f64,
    pub running_since: Option<f64>,
    pub unreachable_since: Option<f64>,
    pub message: Option<String>,
}

impl Instance {
    fn place(&self) -> Option<Place<'_>> {
        Some(Place {
            hostname: self.hostname.as_deref()?,
            attributes: &self.attributes,
        })
    }

    fn is_running(&self) -> bool {
        !matches!(self.phase, Phase::Killing { .. })
            && self.state.as_deref() == Some("TASK_RUNNING")
    }

    /// Running, and healthy if the app has a health check.
    pub fn is_healthy(&self, app: &App) -> bool {
        self.is_running() && (app.health_check.is_none() || self.healthy == Some(true))
    }

    fn is_placed(&self) -> bool {
        matches!(self.phase, Phase::Launched | Phase::Killing { .. })
    }
}

/// What the decisions ask the scheduler to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Kill { task: String, why: String },
}

/// Apply's verdict on one app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    Created,
    Updated,
    Scaled,
    Unchanged,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    apps: BTreeMap<String, AppState>,
    instances: BTreeMap<String, Instance>,
}

/// How long an instance must have run for its end not to count as one of
/// a run of failures.
const FAILURE_RESET: f64 = 10.0;

#[derive(Debug)]
pub struct Shared {
    pub apps: BTreeMap<String, AppState>,
    pub instances: BTreeMap<String, Instance>,
    /// Apps deleted while instances of them remain.
    pub deleting: BTreeMap<String, App>,
    pub driver: Option<Driver>,
    pub dir: Option<PathBuf>,
    pub directory: Directory,
    /// The command agents start an instance's executor with.
    pub executor_command: String,
}

impl Shared {
    pub fn new(dir: Option<PathBuf>, executor_command: String) -> Result<Self, StateError> {
        let mut saved = Saved::default();
        if let Some(d) = &dir {
            let path = d.join("services.json");
            match std::fs::read(&path) {
                Ok(bytes) => {
                    saved = serde_json::from_slice(&bytes).map_err(|e| StateError::Read {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StateError::Read {
                        path,
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(Shared {
            apps: saved.apps,
            instances: saved.instances,
            deleting: BTreeMap::new(),
            driver: None,
            dir,
            directory: Directory::default(),
            executor_command,
        })
    }

    /// Writes the apps and instances (before what they record is acted on).
    pub fn save(&self) -> Result<(), StateError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = dir.join("services.json");
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join("services.json.tmp");
            let saved = SavedRef {
                apps: &self.apps,
                instances: &self.instances,
            };
            let bytes = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| StateError::Write { path, source })
    }

    /// Creates or updates each app; returns what happened to each.
    pub fn apply(&mut self, apps: Vec<App>) -> Vec<(String, Applied)> {
        let mut out = Vec::new();
        for spec in apps {
            let version = spec.version();
            let name = spec.name.clone();
            self.deleting.remove(&name);
            let verdict = match self.apps.get_mut(&name) {
                None => {
                    self.apps.insert(
                        name.clone(),
                        AppState {
                            spec,
                            version,
                            next_index: 0,
                            failures: 0,
                        },
                    );
                    Applied::Created
                }
                Some(a) if a.spec == spec => Applied::Unchanged,
                Some(a) if a.version == version => {
                    a.spec = spec;
                    Applied::Scaled
                }
                Some(a) => {
                    a.spec = spec;
                    a.version = version;
                    a.failures = 0;
                    Applied::Updated
                }
            };
            out.push((name, verdict));
        }
        out
    }

    pub fn scale(&mut self, name: &str, instances: u32) -> bool {
        match self.apps.get_mut(name) {
            Some(a) => {
                a.spec.instances = instances;
                true
            }
            None => false,
        }
    }

    /// Forgets the app; its instances are killed.
    pub fn delete(&mut self, name: &str) -> bool {
        match self.apps.remove(name) {
            Some(a) => {
                self.deleting.insert(name.to_string(), a.spec);
                true
            }
            None => false,
        }
    }

    pub fn pending_count(&self) -> usize {
        self.instances
            .values()
            .filter(|i| matches!(i.phase, Phase::Pending { .. }))
            .count()
    }

    fn new_instance(&mut self, app: &str, now: f64) -> Option<()> {
        let a = self.apps.get_mut(app)?;
        a.next_index += 1;
        let id = format!("{app}.{}.{}", a.version, a.next_index);
        let delay = a.spec.backoff.delay(a.failures).as_secs_f64();
        let phase = if delay > 0.0 {
            Phase::Delayed { until: now + delay }
        } else {
            Phase::Pending {
                reason: "waiting for offers".into(),
            }
        };
        self.instances.insert(
            id.clone(),
            Instance {
                id,
                app: app.to_string(),
                version: a.version.clone(),
                phase,
                state: None,
                healthy: None,
                agent_id: None,
                hostname: None,
                ip: None,
                attributes: Vec::new(),
                ports: Vec::new(),
                created: now,
                running_since: None,
                unreachable_since: None,
                message: None,
            },
        );
        Some(())
    }

    fn kill(&mut self, id: &str, why: &str, actions: &mut Vec<Action>) {
        let Some(i) = self.instances.get_mut(id) else {
            return;
        };
        match i.phase {
            // Never sent: nothing to end.
            Phase::Pending { .. } | Phase::Delayed { .. } => {
                self.instances.remove(id);
            }
            Phase::Launched => {
                i.phase = Phase::Killing {
                    why: why.to_string(),
                };
                actions.push(Action::Kill {
                    task: id.to_string(),
                    why: why.to_string(),
                });
            }
            Phase::Killing { .. } => {}
        }
    }

    /// Brings every app toward its spec at `now`; returns the kills to
    /// carry out.
    pub fn plan(&mut self, now: f64) -> Vec<Action> {
        let mut actions = Vec::new();
        // Deleted apps: every instance goes.
        let gone: Vec<String> = self
            .instances
            .values()
            .filter(|i| !self.apps.contains_key(&i.app))
            .map(|i| i.id.clone())
            .collect();
        for id in gone {
            self.kill(&id, "app deleted", &mut actions);
        }
        self.deleting
            .retain(|name, _| self.instances.values().any(|i| &i.app == name));
        // Backoffs that are over.
        for i in self.instances.values_mut() {
            if let Phase::Delayed { until } = i.phase
                && now >= until
            {
                i.phase = Phase::Pending {
                    reason: "waiting for offers".into(),
                };
            }
        }
        let names: Vec<String> = self.apps.keys().cloned().collect();
        for name in names {
            self.plan_app(&name, now, &mut actions);
        }
        actions
    }

    fn plan_app(&mut self, name: &str, now: f64, actions: &mut Vec<Action>) {
        let Some(a) = self.apps.get(name) else { return };
        let spec = a.spec.clone();
        let version = a.version.clone();
        let target = spec.instances as usize;
        let mine = |s: &Self| -> Vec<Instance> {
            s.instances
                .values()
                .filter(|i| i.app == name)
                .cloned()
                .collect()
        };
        // The unhealthy are killed (and replaced once they end).
        for i in mine(self) {
            if i.is_running() && spec.health_check.is_some() && i.healthy == Some(false) {
                self.kill(&i.id, "failed its health checks", actions);
            }
        }
        let insts = mine(self);
        let expired = |i: &Instance| {
            i.state.as_deref() == Some("TASK_UNREACHABLE")
                && i.unreachable_since
                    .is_some_and(|t| now - t >= spec.unreachable.inactive_after.as_secs_f64())
        };
        let active = |i: &Instance| !matches!(i.phase, Phase::Killing { .. }) && !expired(i);
        let new: Vec<&Instance> = insts
            .iter()
            .filter(|i| i.version == version && active(i))
            .collect();
        let old: Vec<&Instance> = insts
            .iter()
            .filter(|i| i.version != version && active(i))
            .collect();
        let killing = insts
            .iter()
            .filter(|i| matches!(i.phase, Phase::Killing { .. }))
            .count();
        let healthy = insts
            .iter()
            .filter(|i| active(i) && i.is_healthy(&spec))
            .count();

        // Too many of the current version: pending ones go first, then
        // those not healthy, then by the app's kill selection.
        if new.len() > target {
            let mut extra: Vec<&Instance> = new.clone();
            extra.sort_by(|x, y| {
                let rank = |i: &Instance| match i.phase {
                    Phase::Pending { .. } | Phase::Delayed { .. } => 0,
                    _ if !i.is_healthy(&spec) => 1,
                    _ => 2,
                };
                let age = match spec.unreachable.kill_selection {
                    KillSelection::YoungestFirst => y.created.total_cmp(&x.created),
                    KillSelection::OldestFirst => x.created.total_cmp(&y.created),
                };
                rank(x).cmp(&rank(y)).then(age)
            });
            let ids: Vec<String> = extra
                .iter()
                .take(new.len() - target)
                .map(|i| i.id.clone())
                .collect();
            for id in ids {
                self.kill(&id, "more instances than the spec asks for", actions);
            }
            return;
        }
        if old.is_empty() {
            for _ in new.len()..target {
                self.new_instance(name, now);
            }
            return;
        }
        // A rolling update: start new ones within the over-capacity, end
        // old ones while enough stay healthy.
        let max_total =
            target + (target as f64 * spec.upgrade.maximum_over_capacity).floor() as usize;
        let min_healthy = (target as f64 * spec.upgrade.minimum_health_capacity).ceil() as usize;
        let in_use = new.len() + old.len() + killing;
        let start = (target - new.len()).min(max_total.saturating_sub(in_use));
        for _ in 0..start {
            self.new_instance(name, now);
        }
        let mut can_kill_healthy = healthy.saturating_sub(min_healthy);
        let mut old_sorted: Vec<&Instance> = old.clone();
        // Those not healthy first: ending them costs no capacity.
        old_sorted.sort_by_key(|i| i.is_healthy(&spec));
        let mut kills = Vec::new();
        for i in old_sorted {
            if !i.is_healthy(&spec) {
                kills.push(i.id.clone());
            } else if can_kill_healthy > 0 {
                can_kill_healthy -= 1;
                kills.push(i.id.clone());
            }
        }
        for id in kills {
            self.kill(&id, "replaced by a new version", actions);
        }
    }

    /// Places pending instances in `offers`; returns the tasks to launch
    /// per offer (offers with none are to be declined).
    pub fn place(&mut self, offers: Vec<Offer>, now: f64) -> Vec<(Offer, Vec<TaskInfo>)> {
        let mut spaces: Vec<OfferSpace> = offers.into_iter().map(OfferSpace::new).collect();
        let mut launches: Vec<Vec<TaskInfo>> = vec![Vec::new(); spaces.len()];
        let pending: Vec<String> = self
            .instances
            .values()
            .filter(|i| matches!(i.phase, Phase::Pending { .. }))
            .map(|i| i.id.clone())
            .collect();
        for id in pending {
            let Some(app_name) = self.instances.get(&id).map(|i| i.app.clone()) else {
                continue;
            };
            let Some(app) = self.apps.get(&app_name).map(|a| a.spec.clone()) else {
                continue;
            };
            let constraints = app.parsed_constraints();
            let shape = match shape(&app) {
                Some(s) => s,
                None => continue,
            };
            let mut reason: Option<String> = None;
            let mut chosen = None;
            for (k, space) in spaces.iter_mut().enumerate() {
                let fits = space.fits(&shape)
                    && space
                        .left()
                        .range(&cairn_model::ResourceName::Ports)
                        .map_or(0, |r| r.count())
                        >= app.ports as u64;
                if !fits {
                    continue;
                }
                let attrs: Vec<(String, String)> = space
                    .offer
                    .attributes
                    .iter()
                    .map(|a| (a.name.clone(), a.value.to_string()))
                    .collect();
                let candidate = Place {
                    hostname: &space.offer.hostname,
                    attributes: &attrs,
                };
                let placed: Vec<Place<'_>> = self
                    .instances
                    .values()
                    .filter(|i| i.app == app_name && i.is_placed())
                    .filter_map(Instance::place)
                    .collect();
                if let Some(c) = first_unmet(&constraints, &candidate, &placed) {
                    reason = Some(format!("constraint unmet: {}", c.text));
                    continue;
                }
                let ports = if app.ports > 0 {
                    match space.take_ports(app.ports) {
                        Some(p) => p,
                        None => continue,
                    }
                } else {
                    Vec::new()
                };
                if !space.take(&shape) {
                    continue;
                }
                chosen = Some((k, ports, attrs));
                break;
            }
            let Some(inst) = self.instances.get_mut(&id) else {
                continue;
            };
            match chosen {
                Some((k, ports, attrs)) => {
                    let offer = &spaces[k].offer;
                    inst.phase = Phase::Launched;
                    inst.state = Some("TASK_STAGING".into());
                    inst.agent_id = Some(offer.agent_id.to_string());
                    inst.hostname = Some(offer.hostname.clone());
                    inst.ip = resolve(&offer.hostname);
                    inst.attributes = attrs;
                    inst.ports = ports.clone();
                    inst.created = now;
                    match task_for(&app, inst, &offer.agent_id, &self.executor_command) {
                        Ok(t) => launches[k].push(t),
                        Err(e) => {
                            inst.phase = Phase::Pending {
                                reason: format!("cannot build its task: {e}"),
                            };
                        }
                    }
                }
                None => {
                    let why = reason.unwrap_or_else(|| {
                        if spaces.is_empty() {
                            "waiting for offers".into()
                        } else {
                            format!(
                                "no offer large enough (needs cpus {}, mem {}, disk {}, {} ports)",
                                app.cpus, app.mem, app.disk, app.ports
                            )
                        }
                    });
                    inst.phase = Phase::Pending { reason: why };
                }
            }
        }
        spaces
            .into_iter()
            .zip(launches)
            .map(|(s, l)| (s.offer, l))
            .collect()
    }

    /// Takes in a task's update; returns whether the instance is unknown
    /// and still alive (to be killed).
    pub fn update(&mut self, status: &TaskStatus, now: f64) -> bool {
        let id = status.task_id.as_str();
        let Some(inst) = self.instances.get_mut(id) else {
            return !status.state.is_terminal();
        };
        inst.state = Some(status.state.as_str().to_string());
        if !status.message.is_empty() {
            inst.message = Some(status.message.clone());
        }
        if status.healthy.is_some() {
            inst.healthy = status.healthy;
        }
        match status.state {
            TaskState::Running => {
                inst.running_since.get_or_insert(now);
                inst.unreachable_since = None;
            }
            TaskState::Unreachable => {
                inst.unreachable_since.get_or_insert(now);
            }
            _ => {}
        }
        if status.state.is_terminal() {
            let killed = matches!(inst.phase, Phase::Killing { .. });
            let ran = inst.running_since.map_or(0.0, |t| now - t);
            let app = inst.app.clone();
            self.instances.remove(id);
            if !killed && let Some(a) = self.apps.get_mut(&app) {
                a.failures = if ran >= FAILURE_RESET {
                    1
                } else {
                    a.failures + 1
                };
            }
        }
        false
    }

    /// The healthy endpoints of every service, for DNS and the balancers.
    pub fn endpoints(&self) -> BTreeMap<String, Vec<Endpoint>> {
        let mut out: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
        for a in self.apps.values() {
            let Some(svc) = &a.spec.service else { continue };
            let list = out.entry(svc.name.clone()).or_default();
            for i in self.instances.values().filter(|i| i.app == a.spec.name) {
                if !i.is_healthy(&a.spec) {
                    continue;
                }
                let (Some(ip), Some(port)) = (i.ip, i.ports.get(svc.port_index)) else {
                    continue;
                };
                list.push(Endpoint {
                    name: i.id.replace('.', "-"),
                    ip,
                    port: u16::try_from(*port).unwrap_or(0),
                });
            }
            list.sort();
        }
        out
    }

    /// Refreshes the directory DNS and the balancers read.
    pub fn publish(&self) {
        let endpoints = self.endpoints();
        if let Ok(mut d) = self.directory.write() {
            *d = endpoints;
        }
    }
}

#[derive(Serialize)]
struct SavedRef<'a> {
    apps: &'a BTreeMap<String, AppState>,
    instances: &'a BTreeMap<String, Instance>,
}

fn resolve(host: &str) -> Option<Ipv4Addr> {
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    use std::net::ToSocketAddrs;
    (host, 0)
        .to_socket_addrs()
        .ok()?
        .find_map(|a| match a.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
}

/// The scalar resources of one instance.
fn shape(app: &App) -> Option<Resources> {
    let mut r = Resources::cpus_mem(app.cpus, app.mem).ok()?;
    if app.disk > 0.0 {
        r = r.with_scalar(
            cairn_model::ResourceName::Disk,
            cairn_model::Scalar::from_f64(app.disk).ok()?,
        );
    }
    Some(r)
}

fn task_for(
    app: &App,
    inst: &Instance,
    agent: &cairn_sdk::AgentId,
    executor_command: &str,
) -> Result<TaskInfo, cairn_sdk::SdkError> {
    let spec = InstanceSpec {
        containers: app.containers(),
        env: app.env.clone(),
        ports: inst.ports.clone(),
        health_check: app.health_check.clone(),
        host: inst.hostname.clone().unwrap_or_default(),
    };
    let data = serde_json::to_vec(&spec).unwrap_or_default();
    let ranges: Vec<(u64, u64)> = inst.ports.iter().map(|p| (*p, *p)).collect();
    let mut b = TaskBuilder::new(inst.id.clone())
        .name(app.name.clone())
        .cpus(app.cpus)
        .mem(app.mem)
        .ports(&ranges)
        .executor(inst.id.clone(), executor_command.to_string())
        .data(data)
        .label("app", app.name.clone())
        .label("version", inst.version.clone());
    if app.disk > 0.0 {
        b = b.disk(app.disk);
    }
    for (k, v) in &app.labels {
        b = b.label(k.clone(), v.clone());
    }
    b.build(agent)
}

/// The SDK's side: offers, updates, (re)subscriptions.
#[derive(Debug)]
pub struct ServicesScheduler {
    pub shared: Arc<Mutex<Shared>>,
}

/// Carries out `actions` (kills) with the driver.
pub async fn carry_out(driver: &Driver, actions: Vec<Action>) {
    for a in actions {
        match a {
            Action::Kill { task, why } => {
                tracing::info!(instance = %task, %why, "killing an instance");
                let _ = driver
                    .kill(&TaskId::new(task.as_str()), Some(Duration::from_secs(3)))
                    .await;
            }
        }
    }
}

impl cairn_sdk::Scheduler for ServicesScheduler {
    async fn subscribed(&mut self, driver: &Driver, framework_id: &cairn_sdk::FrameworkId) {
        tracing::info!(%framework_id, "subscribed");
        let tasks: Vec<(TaskId, Option<cairn_sdk::AgentId>)> = match self.shared.lock() {
            Ok(mut s) => {
                s.driver = Some(driver.clone());
                s.instances
                    .values()
                    .filter(|i| i.is_placed())
                    .map(|i| {
                        (
                            TaskId::new(i.id.as_str()),
                            i.agent_id.as_deref().map(cairn_sdk::AgentId::new),
                        )
                    })
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        // What ran before a restart of the framework: the master says
        // where each stands.
        if !tasks.is_empty() {
            let _ = driver.reconcile(&tasks).await;
        }
        let _ = driver.revive().await;
    }

    async fn offers(&mut self, driver: &Driver, offers: Vec<Offer>) {
        let now = unix_now();
        let (placed, actions, saved) = match self.shared.lock() {
            Ok(mut s) => {
                let actions = s.plan(now);
                let placed = s.place(offers, now);
                let saved = s.save();
                (placed, actions, saved)
            }
            Err(_) => return,
        };
        if let Err(e) = &saved {
            // Nothing is launched that the state does not record.
            tracing::error!(error = %e, "cannot record the launches; declining the offers");
        }
        for (offer, tasks) in placed {
            if tasks.is_empty() || saved.is_err() {
                let _ = driver
                    .decline(
                        std::slice::from_ref(&offer.id),
                        Some(Duration::from_secs(1)),
                    )
                    .await;
            } else if let Err(e) = driver.launch(&offer, tasks).await {
                tracing::warn!(error = %e, "launch failed");
            }
        }
        carry_out(driver, actions).await;
    }

    async fn update(&mut self, driver: &Driver, status: &TaskStatus) {
        let now = unix_now();
        let (unknown, actions) = match self.shared.lock() {
            Ok(mut s) => {
                let unknown = s.update(status, now);
                let actions = s.plan(now);
                let _ = s.save();
                s.publish();
                (unknown, actions)
            }
            Err(_) => return,
        };
        if unknown {
            tracing::info!(task = %status.task_id, "killing a task no app claims");
            let _ = driver.kill(&status.task_id, None).await;
        }
        carry_out(driver, actions).await;
    }
}

/// Every 250 ms: backoffs that ended, unreachable instances to replace,
/// offers wanted or not, the service directory.
pub async fn tick(shared: Arc<Mutex<Shared>>) {
    let mut wanted = None;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = unix_now();
        let (driver, actions, pending) = match shared.lock() {
            Ok(mut s) => {
                let actions = s.plan(now);
                s.publish();
                (s.driver.clone(), actions, s.pending_count() > 0)
            }
            Err(_) => return,
        };
        let Some(driver) = driver else { continue };
        carry_out(&driver, actions).await;
        if wanted != Some(pending) && driver.want_offers(pending).await.is_ok() {
            wanted = Some(pending);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn shared(yaml: &str) -> Shared {
        let mut s = Shared::new(None, "executor".into()).unwrap();
        s.apply(crate::spec::parse(yaml).unwrap());
        s
    }

    /// Marks every pending instance launched on its own host and running.
    fn run_all(s: &mut Shared, now: f64, healthy: Option<bool>) {
        for (n, i) in s.instances.values_mut().enumerate() {
            if matches!(i.phase, Phase::Pending { .. }) {
                i.phase = Phase::Launched;
                i.state = Some("TASK_RUNNING".into());
                i.healthy = healthy;
                i.hostname = Some(format!("h{n}"));
                i.created = now;
                i.running_since = Some(now);
            }
        }
    }

    fn status(id: &str, state: TaskState) -> TaskStatus {
        TaskStatus::from_executor(TaskId::new(id), state, "", cairn_model::Time::now())
    }

    fn ended(s: &mut Shared, actions: &[Action], now: f64) {
        for Action::Kill { task, .. } in actions {
            s.update(&status(task, TaskState::Killed), now);
        }
    }

    fn healthy(s: &Shared) -> usize {
        let app = &s.apps["r"].spec;
        s.instances.values().filter(|i| i.is_healthy(app)).count()
    }

    #[test]
    fn a_rolling_update_never_drops_below_the_minimum_healthy() {
        let v1 = "name: r\ncommand: a\ninstances: 4\nhealth_check: {type: command, command: 'true'}\n\
                  upgrade: {minimum_health_capacity: 0.5, maximum_over_capacity: 0.0}\n";
        let mut s = shared(v1);
        s.plan(0.0);
        run_all(&mut s, 0.0, Some(true));
        assert_eq!(healthy(&s), 4);
        s.apply(crate::spec::parse(&v1.replace("command: a", "command: b")).unwrap());
        let version = s.apps["r"].version.clone();
        for step in 1..20 {
            let now = f64::from(step);
            let actions = s.plan(now);
            assert!(healthy(&s) >= 2, "step {step}: {} healthy", healthy(&s));
            let live = s.instances.len();
            assert!(
                live <= 4,
                "step {step}: {live} instances beyond the capacity"
            );
            ended(&mut s, &actions, now);
            run_all(&mut s, now, Some(true));
            assert!(healthy(&s) >= 2);
        }
        assert_eq!(s.instances.len(), 4);
        assert!(
            s.instances
                .values()
                .all(|i| i.version == version && i.is_healthy(&s.apps["r"].spec))
        );
    }

    #[test]
    fn failures_back_off_and_show_as_delayed() {
        let mut s = shared("name: r\ncommand: a\nbackoff: {initial: 10s, factor: 2.0, max: 1m}\n");
        s.plan(0.0);
        run_all(&mut s, 0.0, None);
        let first = s.instances.keys().next().unwrap().clone();
        s.update(&status(&first, TaskState::Failed), 1.0);
        s.plan(1.0);
        // The first restart is at once.
        assert!(matches!(
            s.instances.values().next().unwrap().phase,
            Phase::Pending { .. }
        ));
        run_all(&mut s, 1.0, None);
        let second = s.instances.keys().next().unwrap().clone();
        s.update(&status(&second, TaskState::Failed), 2.0);
        s.plan(2.0);
        let i = s.instances.values().next().unwrap();
        assert_eq!(i.phase, Phase::Delayed { until: 12.0 });
        s.plan(12.0);
        assert!(matches!(
            s.instances.values().next().unwrap().phase,
            Phase::Pending { .. }
        ));
    }

    #[test]
    fn an_unreachable_instance_is_replaced_after_its_wait_and_the_youngest_goes_when_it_returns() {
        let mut s = shared("name: r\ncommand: a\nunreachable: {inactive_after: 30s}\n");
        s.plan(0.0);
        run_all(&mut s, 0.0, None);
        let old = s.instances.keys().next().unwrap().clone();
        s.update(&status(&old, TaskState::Unreachable), 10.0);
        assert!(s.plan(20.0).is_empty());
        assert_eq!(s.instances.len(), 1, "replaced before its wait was over");
        s.plan(40.0);
        assert_eq!(s.instances.len(), 2, "not replaced after its wait");
        run_all(&mut s, 41.0, None);
        // It comes back: one of the two goes, the younger (the replacement).
        s.update(&status(&old, TaskState::Running), 50.0);
        let actions = s.plan(50.0);
        assert_eq!(actions.len(), 1);
        let Action::Kill { task, .. } = &actions[0];
        assert_ne!(task, &old);
    }

    #[test]
    fn scaling_down_ends_pending_ones_first_and_deleting_kills_all() {
        let mut s = shared("name: r\ncommand: a\ninstances: 3\n");
        s.plan(0.0);
        run_all(&mut s, 0.0, None);
        s.scale("r", 5);
        s.plan(1.0);
        assert_eq!(s.pending_count(), 2);
        s.scale("r", 3);
        assert!(
            s.plan(2.0).is_empty(),
            "running instances were killed before pending ones"
        );
        assert_eq!(s.instances.len(), 3);
        s.delete("r");
        assert_eq!(s.plan(3.0).len(), 3);
    }
}
