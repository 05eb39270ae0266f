//! The ResourceSupervisor: watches the process's memory and CPU and acts
//! before the node is in trouble.
//!
//! Every `interval` it samples the resident set against the container's
//! memory limit (the cgroup's, which is what the kernel kills by; the
//! host's total only when there is none), the memory still available and
//! the process's CPU. Above the high watermark it acts, in order, each
//! action logged with the figures before and after:
//!
//! 1. **collect**: every arbiter thread (and the supervisor's own) hands
//!    mimalloc's freed pages back to the OS. Rust has no collector to run;
//!    this is what frees memory that is free but still resident.
//! 2. **close idle connections**: every database pool with idle
//!    connections is rebuilt empty (`DbPool::rebuild`): the idle ones
//!    close at once (each holds memory on both ends), the busy ones when
//!    they come back; checkouts open what they need again.
//! 3. **shed**: new sockets are refused with HTTP 503 and `Retry-After`
//!    ([`Admission`]) until memory falls 10 points below the mark, so the
//!    node keeps serving the sockets it holds rather than dying with all of
//!    them.
//!
//! Idle sockets hold no buffers to shrink (their read and write buffers are
//! freed between frames).
//!
//! Every sample also checks each pool's health (`SELECT 1` on an idle
//! connection): a pool that fails [`FAILED_CHECKS_BEFORE_REBUILD`] checks
//! in a row is rebuilt (**rebuild_pool**), for connections left hanging by
//! a failover or a cut network that would otherwise each wait out a
//! timeout before bb8 drops them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use aurum_schema::pool::{PoolHealth, PoolSet};
use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System};

/// Whether the socket listener takes new sockets; shared by the
/// supervisor (which sheds) and the listener (which refuses).
#[derive(Debug, Default)]
pub struct Admission {
    shedding: AtomicBool,
    draining: AtomicBool,
}

impl Admission {
    /// Why new sockets are refused now, if they are.
    pub fn refusal(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Relaxed) {
            Some("draining")
        } else if self.shedding.load(Ordering::Relaxed) {
            Some("shedding")
        } else {
            None
        }
    }

    pub fn is_shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// The node's live tasks: every socket's connection (from accept to its
/// session's end) and the background work the application spawns through
/// [`TaskCensus::spawn`]. Each is counted by a guard it owns, so a task
/// that ends, however it ends, is no longer counted. (The runtimes' own
/// task counts cannot do this: actix runs its actors and tasks on a tokio
/// `LocalSet`, whose tasks those counts leave out.)
#[derive(Debug, Default)]
pub struct TaskCensus {
    alive: std::sync::atomic::AtomicUsize,
}

impl TaskCensus {
    /// Counts a task for as long as the guard lives.
    pub fn guard(self: &Arc<Self>) -> TaskGuard {
        self.add();
        TaskGuard(Arc::clone(self))
    }

    pub(crate) fn add(&self) {
        self.alive.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self) {
        self.alive.fetch_sub(1, Ordering::Relaxed);
    }

    /// Spawns `task` on the current arbiter, counted until it ends.
    pub fn spawn(self: &Arc<Self>, task: impl std::future::Future<Output = ()> + 'static) {
        let guard = self.guard();
        actix::spawn(async move {
            let _counted = guard;
            task.await;
        });
    }

    /// Tasks alive now.
    pub fn alive(&self) -> usize {
        self.alive.load(Ordering::Relaxed)
    }
}

/// Keeps one task counted in its [`TaskCensus`].
#[derive(Debug)]
pub struct TaskGuard(Arc<TaskCensus>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.remove();
    }
}

/// How soon a supervised actor that failed runs again: at once the first
/// time, then after a pause that doubles from 10 ms to 1 s while failures
/// follow one another within 10 s, so an actor that fails on every message
/// does not spin a core (nor flood the log) restarting.
#[derive(Debug, Default)]
pub struct RestartPacing {
    streak: u32,
    last: Option<std::time::Instant>,
}

impl RestartPacing {
    const CALM: Duration = Duration::from_secs(10);
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const MAX_PAUSE: Duration = Duration::from_secs(1);

    /// The pause before the restart that follows a failure at `now`.
    pub fn next_pause(&mut self, now: std::time::Instant) -> Duration {
        let in_a_row = self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < Self::CALM);
        self.streak = if in_a_row {
            self.streak.saturating_add(1)
        } else {
            0
        };
        self.last = Some(now);
        if self.streak == 0 {
            return Duration::ZERO;
        }
        Self::FIRST_PAUSE
            .saturating_mul(1_u32 << (self.streak - 1).min(16))
            .min(Self::MAX_PAUSE)
    }
}

/// Holds a restarted actor's mailbox for its pacing pause (see
/// [`RestartPacing`]): messages wait there meanwhile, or are refused as
/// busy once it is full.
pub(crate) fn pause_after_restart<A>(pause: Duration, ctx: &mut Context<A>)
where
    A: Actor<Context = Context<A>>,
{
    if !pause.is_zero() {
        tracing::warn!(?pause, "pausing a restarted actor: it keeps failing");
        ctx.wait(actix::fut::wrap_future(tokio::time::sleep(pause)));
    }
}

/// Runs a body of a supervised actor's; a panic in it stops the actor, so
/// that its supervisor restarts it (see each actor's `restarting`) instead
/// of the arbiter's task dying with it, or the actor going on half-updated.
pub(crate) fn stop_on_panic<A>(
    actor: &mut A,
    ctx: &mut Context<A>,
    name: &str,
    body: impl FnOnce(&mut A, &mut Context<A>),
) where
    A: Actor<Context = Context<A>>,
{
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(actor, ctx))).is_err() {
        tracing::error!("the {name} panicked; restarting it");
        ctx.stop();
    }
}

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Resources {
    /// Resident memory against the container's limit (else the host's).
    pub memory_percent: f64,
    /// What the limit leaves (MiB).
    pub memory_available_mb: u64,
    /// The process's CPU since the last sample; 100 is one core.
    pub cpu_percent: f64,
    /// Resident memory (MiB).
    pub rss_mb: u64,
    /// Whether the limit is the container's.
    pub container_limit: bool,
    /// Tasks alive on the process's runtimes (see [`TaskCensus`]).
    pub active_tasks: usize,
}

/// What the supervisor last did, for `/health`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Action {
    pub action: &'static str,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    pub memory_percent_before: f64,
    pub memory_percent_after: f64,
}

#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    pub interval: Duration,
    /// Percent of the limit above which it acts.
    pub high_watermark: f64,
    /// The threads that allocate: each collects its own heap.
    pub arbiters: Vec<ArbiterHandle>,
    pub tasks: Arc<TaskCensus>,
    /// The pools it checks and rebuilds.
    pub pools: PoolSet,
}

/// Health checks a pool fails in a row before it is rebuilt.
pub const FAILED_CHECKS_BEFORE_REBUILD: u32 = 3;

/// How long a health check's `SELECT 1` may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A typed handle on the supervisor; cheap to clone.
#[derive(Clone)]
pub struct SupervisorHandle {
    state: Arc<Shared>,
}

struct Shared {
    admission: Arc<Admission>,
    last_sample: std::sync::Mutex<Option<Resources>>,
    last_action: std::sync::Mutex<Option<Action>>,
}

impl Shared {
    fn last_sample(&self) -> Option<Resources> {
        *self
            .last_sample
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SupervisorHandle {
    /// Starts sampling on the current arbiter; `admission` is the
    /// listener's.
    pub fn start(settings: SupervisorSettings, admission: Arc<Admission>) -> Self {
        let state = Arc::new(Shared {
            admission,
            last_sample: std::sync::Mutex::new(None),
            last_action: std::sync::Mutex::new(None),
        });
        let shared = Arc::clone(&state);
        ResourceSupervisor::create(move |_| ResourceSupervisor {
            checks: std::collections::HashMap::new(),
            settings,
            state: shared,
            system: System::new_with_specifics(RefreshKind::nothing())
                .inspect_err(
                    |error| tracing::warn!(%error, "resources cannot be read; the supervisor stays idle"),
                )
                .ok(),
            pid: sysinfo::get_current_pid().ok(),
        });
        Self { state }
    }

    /// The latest sample, once there is one.
    pub fn resources(&self) -> Option<Resources> {
        self.state.last_sample()
    }

    pub fn last_action(&self) -> Option<Action> {
        self.state
            .last_action
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn admission(&self) -> &Arc<Admission> {
        &self.state.admission
    }
}

/// What the supervisor does about one sample, given whether it sheds now:
/// its actions, and whether it sheds after them.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub collect: bool,
    pub shed: bool,
}

/// Above the mark: collect, and shed if still above it after collecting
/// (`after`). Shedding stops only 10 points below the mark, so a node at
/// the mark does not flap between taking and refusing sockets.
pub fn decide(before: f64, after: impl FnOnce() -> f64, mark: f64, shedding: bool) -> Decision {
    if before <= mark {
        return Decision {
            collect: false,
            shed: shedding && before > mark - 10.0,
        };
    }
    Decision {
        collect: true,
        shed: shedding || after() > mark,
    }
}

struct ResourceSupervisor {
    /// Per pool (by address): failed checks in a row, and whether one is
    /// in flight.
    checks: std::collections::HashMap<usize, PoolChecks>,
    settings: SupervisorSettings,
    state: Arc<Shared>,
    system: Option<System>,
    pid: Option<sysinfo::Pid>,
}

impl Actor for ResourceSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        ctx.run_interval(self.settings.interval, Self::tick);
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct PoolChecks {
    failed_in_a_row: u32,
    in_flight: bool,
}

impl ResourceSupervisor {
    fn sample(&mut self) -> Option<Resources> {
        let pid = self.pid?;
        let system = self.system.as_mut()?;
        system.refresh_memory();
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        let process = system.process(pid)?;
        let rss = process.memory();
        let (limit, available, container_limit) = match system.cgroup_limits() {
            Some(cgroup) if cgroup.total_memory > 0 => (cgroup.total_memory, cgroup.free_memory, true),
            _ => (system.total_memory(), system.available_memory(), false),
        };
        if limit == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
        let memory_percent = rss as f64 / limit as f64 * 100.0;
        Some(Resources {
            memory_percent,
            memory_available_mb: available / (1024 * 1024),
            cpu_percent: f64::from(process.cpu_usage()),
            rss_mb: rss / (1024 * 1024),
            container_limit,
            active_tasks: self.settings.tasks.alive(),
        })
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.check_pools(ctx);
        let Some(before) = self.sample() else {
            return;
        };
        self.remember(before);
        metrics::gauge!("memory_usage_percent").set(before.memory_percent);
        let mark = self.settings.high_watermark;
        let shedding = self.state.admission.is_shedding();
        let mut after = before.memory_percent;
        let decision = decide(
            before.memory_percent,
            || {
                self.collect();
                after = self
                    .sample()
                    .map_or(before.memory_percent, |sample| sample.memory_percent);
                after
            },
            mark,
            shedding,
        );
        if decision.collect {
            tracing::warn!(
                before = format_args!("{:.1}%", before.memory_percent),
                after = format_args!("{after:.1}%"),
                mark,
                "memory above the high watermark: returned freed memory to the OS"
            );
            self.acted("collect", before.memory_percent, after);
            self.close_idle_connections(before.memory_percent, after);
        }
        if decision.shed != shedding {
            self.state
                .admission
                .shedding
                .store(decision.shed, Ordering::Relaxed);
            if decision.shed {
                tracing::warn!(
                    memory = format_args!("{after:.1}%"),
                    mark,
                    "still above the high watermark: refusing new sockets until 10 points below it"
                );
                self.acted("shed", before.memory_percent, after);
            } else {
                tracing::info!(
                    memory = format_args!("{after:.1}%"),
                    mark,
                    "memory back down: taking new sockets again"
                );
                self.acted("admit", before.memory_percent, after);
            }
        }
    }

    /// Rebuilds every pool that holds idle connections, which closes them.
    fn close_idle_connections(&self, before: f64, after: f64) {
        let mut closed = 0;
        for (_, pool) in self.settings.pools.all() {
            let idle = pool.state().idle_connections;
            if idle > 0 {
                pool.rebuild();
                closed += idle;
            }
        }
        if closed > 0 {
            tracing::warn!(
                closed,
                "memory above the high watermark: closed idle database connections"
            );
            self.acted("close_idle_connections", before, after);
        }
    }

    /// Starts a health check of every pool that has none in flight; a
    /// pool that failed too many in a row is rebuilt.
    fn check_pools(&mut self, ctx: &mut Context<Self>) {
        for (name, pool) in self.settings.pools.all() {
            let key = pool.identity();
            let checks = self.checks.entry(key).or_default();
            if checks.in_flight {
                continue;
            }
            checks.in_flight = true;
            let checked = pool.clone();
            let check = async move { checked.check(CHECK_TIMEOUT).await };
            ctx.spawn(check.into_actor(self).map(move |health, supervisor, _| {
                let checks = supervisor.checks.entry(key).or_default();
                checks.in_flight = false;
                match health {
                    PoolHealth::Healthy => checks.failed_in_a_row = 0,
                    PoolHealth::Unchecked => {}
                    PoolHealth::Failed => {
                        checks.failed_in_a_row += 1;
                        tracing::warn!(
                            pool = name,
                            failed = checks.failed_in_a_row,
                            "database pool health check failed"
                        );
                        if checks.failed_in_a_row >= FAILED_CHECKS_BEFORE_REBUILD {
                            checks.failed_in_a_row = 0;
                            pool.rebuild();
                            tracing::warn!(pool = name, "database pool rebuilt after failed health checks");
                            let memory = supervisor.resources_now();
                            supervisor.acted("rebuild_pool", memory, memory);
                        }
                    }
                }
            }));
        }
    }

    /// The latest memory figure, for an action's record.
    fn resources_now(&self) -> f64 {
        self.state
            .last_sample()
            .map_or(0.0, |sample| sample.memory_percent)
    }

    /// Collects on every arbiter thread and on this one.
    fn collect(&self) {
        for arbiter in &self.settings.arbiters {
            arbiter.spawn_fn(aurum_alloc::collect_this_thread);
        }
        aurum_alloc::collect_this_thread();
    }

    fn remember(&self, sample: Resources) {
        *self
            .state
            .last_sample
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sample);
    }

    fn acted(&self, action: &'static str, before: f64, after: f64) {
        metrics::counter!("resource_actions_total", "action" => action).increment(1);
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        *self
            .state
            .last_action
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Action {
            action,
            at_ms,
            memory_percent_before: before,
            memory_percent_after: after,
        });
    }
}

#[cfg(test)]
mod pacing_tests {
    use std::time::{Duration, Instant};

    use super::RestartPacing;

    #[test]
    fn a_lone_failure_restarts_at_once_and_a_loop_backs_off_to_a_second() {
        let mut pacing = RestartPacing::default();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(pacing.next_pause(at(0)), Duration::ZERO);
        let pauses: Vec<u128> = (1..=9).map(|n| pacing.next_pause(at(n)).as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        // Ten calm seconds later, a failure is a first one again.
        assert_eq!(pacing.next_pause(at(20_000)), Duration::ZERO);
        assert_eq!(pacing.next_pause(at(20_001)), Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_mark_nothing_happens() {
        assert_eq!(
            decide(50.0, || unreachable!(), 80.0, false),
            Decision {
                collect: false,
                shed: false
            }
        );
    }

    #[test]
    fn above_the_mark_it_collects_and_sheds_only_if_that_was_not_enough() {
        assert_eq!(
            decide(85.0, || 70.0, 80.0, false),
            Decision {
                collect: true,
                shed: false
            }
        );
        assert_eq!(
            decide(85.0, || 83.0, 80.0, false),
            Decision {
                collect: true,
                shed: true
            }
        );
    }

    #[test]
    fn shedding_stops_only_ten_points_below_the_mark() {
        assert_eq!(
            decide(75.0, || unreachable!(), 80.0, true),
            Decision {
                collect: false,
                shed: true
            }
        );
        assert_eq!(
            decide(69.0, || unreachable!(), 80.0, true),
            Decision {
                collect: false,
                shed: false
            }
        );
    }
}
