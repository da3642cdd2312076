//! `beamops deploy <env>` and `beamops rollback <env>`: build → tag with the git sha → push →
//! release command as a Swarm job → services updated from the stack file → wait; every run
//! recorded in the state and as service labels. See docs/deploy.md.

pub mod chapters;
pub mod diagnose;
pub mod record;
pub mod registry;
pub mod release;
pub mod resume;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::action::record::{ReleaseImageRecord, StackRecord};
use crate::docker::Daemon;
use crate::engine::{Engine, UpOptions};
use crate::exit::{Exit, Failure, exit_for};
use crate::output::Ui;
use crate::project::Project;
use crate::state::{self, RunLock, State};
use crate::swarm::{self, converge, spec};
use record::{DeployRecord, Kind, Outcome};

/// Service labels naming the release a service runs (from the stack file's variables).
pub use crate::swarm::{GIT_SHA_LABEL, RELEASE_LABEL};

pub struct Options {
    /// Deploy a working tree with uncommitted changes (its tag ends in `-dirty`).
    pub allow_dirty: bool,
    pub lock_wait: Duration,
    /// `--yes` for a protected environment.
    pub yes: bool,
    /// `--message`: shown to whoever finds the deploy lock held.
    pub message: Option<String>,
    /// `deploy --force`: redeploy a commit that is already live and healthy.
    pub force: bool,
}

/// What a deploy or rollback did: the `--format json` summary (docs/json.md).
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub environment: String,
    pub kind: Kind,
    /// False when there was nothing to do: the commit was live and healthy already, and the
    /// run changed nothing (no release command, no service update, no new release id).
    pub changed: bool,
    /// Runs that were killed earlier and that this run judged first, one line each.
    pub interrupted: Vec<String>,
    pub release: String,
    pub image: String,
    pub image_id: Option<String>,
    pub git_sha: String,
    /// The release that was live before this one.
    pub previous_release: Option<String>,
    /// The registry reference pushed, when the environment has a registry.
    pub pushed: Option<String>,
    pub release_command: Option<release::JobRun>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
    pub converge_seconds: f64,
    /// Docker secret versions no service uses any more, removed after the deploy.
    pub pruned_secrets: Vec<String>,
    /// Release images removed from the Engine's node: older than the newest
    /// `deploy.keep_releases` and used by no service or container.
    pub pruned_images: Vec<String>,
    pub spec_digest: String,
    pub seconds: f64,
}

/// The release a run is rolling out, as the stack file's variables name it.
struct Target {
    release: String,
    image: String,
    image_id: Option<String>,
    git_sha: String,
}

impl Target {
    fn from(record: &DeployRecord) -> Target {
        Target {
            release: record.release.clone(),
            image: record.image.clone(),
            image_id: record.image_id.clone(),
            git_sha: record.git_sha.clone(),
        }
    }

    fn from_live(live: &swarm::LiveRelease) -> Target {
        Target {
            release: live.release.clone(),
            image: live.image.clone(),
            image_id: None,
            git_sha: live.git_sha.clone(),
        }
    }

    /// The release variables of the deploy target: first in `crate::rollout`'s precedence.
    fn variables(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (swarm::APP_IMAGE_VARIABLE.to_string(), self.image.clone()),
            (swarm::RELEASE_VARIABLE.to_string(), self.release.clone()),
            (swarm::GIT_SHA_VARIABLE.to_string(), self.git_sha.clone()),
        ])
    }
}

fn up_options(lock_wait: Duration) -> UpOptions {
    UpOptions {
        dry_run: false,
        force: false,
        no_deps: false,
        lock_wait,
    }
}

fn prepare<'a>(
    project: &'a Project,
    env_name: &str,
    ui: &'a Ui,
    opts: &Options,
) -> Result<Engine<'a>> {
    let mut engine = Engine::new(project, env_name, ui)?;
    engine.yes = opts.yes;
    engine.message = opts.message.clone();
    // An aws environment is deployed through one of its managers: the engine's connection
    // resolves its ssh:// address and pins its host key (docker/target.rs).
    Ok(engine)
}

/// An aws environment where more than one node may run the app needs `image.registry`: without
/// one the image is built on the first manager's Engine only, and a task placed on any other
/// node fails with "No such image". Checked before anything is built or connected to.
pub fn registry_problem(config: &crate::config::Config, env_name: &str) -> Option<Failure> {
    let env = config.environment(env_name)?;
    if env.provider != crate::config::Provider::Aws || config.image.registry.is_some() {
        return None;
    }
    let (_, _, max_workers) = env.worker_bounds();
    let mut nodes = Vec::new();
    if env.managers > 1 {
        nodes.push(format!(
            "environments.{env_name}.managers is {}",
            env.managers
        ));
    }
    if max_workers > 0 {
        nodes.push(format!(
            "chapter 10's autoscaling group may run up to {max_workers} workers (environments.{env_name}.max_workers{})",
            if env.max_workers.is_some() { "" } else { ", by default" }
        ));
    }
    if nodes.is_empty() {
        return None;
    }
    Some(Failure::refused(
        format!(
            "{env_name} has more than one node that can run the app ({}), but beamops.yaml sets no image.registry: the image would exist on the first manager only, and tasks elsewhere would fail with \"No such image\"",
            nodes.join("; ")
        ),
        format!(
            "  fix: set image.registry in beamops.yaml (the deploy pushes there and every node pulls), or make {env_name} a single node: managers: 1 and max_workers: 0"
        ),
    ))
}

/// `beamops deploy <env>`.
pub fn deploy(project: &Project, env_name: &str, ui: &Ui, opts: &Options) -> Result<DeployReport> {
    if let Some(problem) = registry_problem(&project.config, env_name) {
        return Err(problem.into());
    }
    let started = Instant::now();
    let started_at = state::now_rfc3339();
    let mut engine = prepare(project, env_name, ui, opts)?;
    let rev = crate::action::docker::revision(&project.root)?;
    if rev.dirty && !opts.allow_dirty {
        return Err(Failure::refused(
            "the working tree has uncommitted changes; a deploy ships a commit, so it can be rolled back to",
            "  fix: commit (or stash) first, or pass --allow-dirty to ship a `-dirty` image anyway",
        )
        .into());
    }
    engine.confirm_protected("deploy")?;
    let run = RunLock::acquire(&project.state_dir(), opts.lock_wait, |m| ui.note(m))?;
    // The swarm-wide deploy lock, so two machines cannot deploy one stack at once; held with `run`
    // until this function returns. Re-entrant: the chapters `up_locked` runs below take it too.
    let mut deploy_lock = engine.deploy_lock("deploy", opts.lock_wait)?;

    let up = up_options(opts.lock_wait);
    let roles = chapters::of(&engine)?;
    ui.note(format!(
        "deploy: building the release image ({}) and the secrets ({})",
        roles.build.label(),
        roles.secrets.label()
    ));
    engine.up_locked(&[roles.build, roles.secrets], &up, &run)?;
    // On an Engine that was no swarm yet there was nothing to lock; chapter 07 made the swarm,
    // so the push, the release job and the rollout run under the lock from here.
    if deploy_lock.is_none() {
        deploy_lock = engine.deploy_lock("deploy", opts.lock_wait)?;
    }
    let _deploy_lock = deploy_lock;

    // The run's one connection, shared with the chapters the engine runs.
    let connection = engine.docker.clone();
    let (rt, daemon) = connection.daemon()?;
    let config = &project.config;
    // A killed run's leftovers first: its release job, and its update, which is judged before
    // anything new is rolled out (resume.rs).
    rt.block_on(resume::remove_leftover_jobs(
        daemon,
        config.app.stack_name(),
        ui,
    ))?;
    let interrupted = rt.block_on(resume::judge_interrupted(
        project,
        env_name,
        daemon,
        ui,
        converge_timeout(project)?,
    ))?;
    // The tag the build gave the image: a generated file chapter 03 or 07 just (re)wrote makes
    // the tree dirty after the check above, and then the build says so in its tag.
    let local = State::read(&project.state_dir())?
        .find_record::<ReleaseImageRecord>(env_name)?
        .and_then(|r| r.sha_tag().map(str::to_string))
        .unwrap_or_else(|| format!("{}:{}", config.image_repository(), rev.tag()));
    let image_id = rt
        .block_on(daemon.client.inspect_image(&local))
        .with_context(|| format!("the build did not leave {local} on the Engine"))?
        .id;
    let image = match &config.image.registry {
        Some(registry) => format!("{registry}/{local}"),
        None => local.clone(),
    };
    let history = record::history(&State::read(&project.state_dir())?, env_name)?;
    // The swarm knows what is live even when this checkout (a fresh CI clone) has no history.
    let (live, _) = rt.block_on(swarm::live_releases(daemon, config.app.stack_name()))?;
    let target = Target {
        release: record::next_release_after(
            &history,
            live.as_ref().map(|l| l.release.as_str()),
            &rev.sha,
        ),
        image,
        image_id,
        git_sha: rev.sha.clone(),
    };
    if !opts.force
        && let Some(live) = &live
        && live.git_sha == rev.sha
        && live.image == target.image
        && !rev.dirty
        && let Some(report) = rt.block_on(already_live(
            project,
            env_name,
            daemon,
            live,
            target.image_id.clone(),
            &roles.stack.key(),
            (&started_at, started),
        ))?
    {
        // Nothing to deploy takes no lock, but a killed run's lock is not left behind.
        let timeout = project.config.deploy.lock_timeout()?;
        let stack = project.config.app.stack_name();
        if let Err(e) = rt.block_on(crate::swarm::lock::clear_dead(
            daemon,
            stack,
            timeout,
            &|m| ui.note(m),
        )) {
            ui.warning(format!(
                "could not check for a killed run's deploy lock: {e:#}"
            ));
        }
        return Ok(DeployReport {
            interrupted,
            ..report
        });
    }
    let previous_release = live
        .map(|l| l.release)
        .or_else(|| record::live_in(&history).map(|r| r.release.clone()));
    // Recorded before anything changes: a run killed from here on is judged by the next one.
    finish(
        project,
        env_name,
        &target,
        Kind::Deploy,
        Outcome::InProgress,
        &started_at,
        started,
        None,
    )?;
    let pushed = match &config.image.registry {
        Some(registry) => {
            ui.note(format!("deploy: pushing {}", target.image));
            // A failed push is a failed deploy, recorded like one; no service has changed.
            if let Err(e) = rt.block_on(registry::push(daemon, &local, &target.image, registry)) {
                return Err(failed(
                    project,
                    env_name,
                    &target,
                    Kind::Deploy,
                    &started_at,
                    started,
                    e,
                ));
            }
            Some(target.image.clone())
        }
        None => None,
    };

    // The stack file on disk first: the release job is built from it.
    engine.write_chapter_files(roles.stack, &run)?;
    let job = match config.release_command() {
        Some(command) => {
            ui.note(format!("deploy: release command `{command}`"));
            match rt.block_on(release_job(
                project,
                env_name,
                daemon,
                &target,
                &roles.stack.key(),
                &command,
                ui,
            )) {
                Ok(job) => Some(job),
                Err(e) => {
                    return Err(failed(
                        project,
                        env_name,
                        &target,
                        Kind::Deploy,
                        &started_at,
                        started,
                        e,
                    ));
                }
            }
        }
        None => None,
    };
    let mut report = roll_out(
        project,
        env_name,
        &mut engine,
        &run,
        rt,
        daemon,
        &target,
        Kind::Deploy,
        roles.stack,
        (&started_at, started),
    )?;
    report.pushed = pushed;
    report.release_command = job;
    report.previous_release = previous_release;
    report.interrupted = interrupted;
    Ok(report)
}

/// The report of a deploy with nothing to do, when the commit's image is live with Swarm's
/// last update completed (or the services created and healthy) and chapter 08 would change
/// nothing; None when something is left to do.
async fn already_live(
    project: &Project,
    env_name: &str,
    daemon: &Daemon,
    live: &swarm::LiveRelease,
    image_id: Option<String>,
    stack_chapter: &str,
    (started_at, started): (&str, Instant),
) -> Result<Option<DeployReport>> {
    let _ = started_at;
    let stack = project.config.app.stack_name();
    let app = spec::scoped(stack, "app");
    if converge::update_state(daemon, &app)
        .await?
        .is_some_and(|(state, _)| state != bollard::models::ServiceUpdateStatusStateEnum::COMPLETED)
    {
        return Ok(None);
    }
    let target = Target {
        image_id,
        ..Target::from_live(live)
    };
    let file = parsed_stack(project, env_name, &target, stack_chapter)?;
    // An unreadable converge record: explicitly not known to be live, so the deploy goes on
    // and its converge records anew.
    let images: BTreeMap<String, String> = match State::read(&project.state_dir())?
        .find_record_where(env_name, |r: &StackRecord| r.stack == stack)
    {
        Ok(r) => r.map(|r| r.images).unwrap_or_default(),
        Err(_) => return Ok(None),
    };
    if !converge::pending(daemon, stack, &file, &images)
        .await?
        .is_empty()
    {
        return Ok(None);
    }
    Ok(Some(DeployReport {
        environment: env_name.to_string(),
        kind: Kind::Deploy,
        changed: false,
        interrupted: Vec::new(),
        release: target.release.clone(),
        image: target.image.clone(),
        image_id: target.image_id.clone(),
        git_sha: target.git_sha.clone(),
        previous_release: None,
        pushed: None,
        release_command: None,
        updated: Vec::new(),
        unchanged: file
            .services
            .keys()
            .map(|k| spec::scoped(stack, k))
            .collect(),
        converge_seconds: 0.0,
        pruned_secrets: Vec::new(),
        pruned_images: Vec::new(),
        spec_digest: spec_digest(project, env_name, &target),
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// `beamops rollback <env> [--to RELEASE]`.
pub fn rollback(
    project: &Project,
    env_name: &str,
    ui: &Ui,
    opts: &Options,
    to: Option<&str>,
) -> Result<DeployReport> {
    let started = Instant::now();
    let started_at = state::now_rfc3339();
    let mut engine = prepare(project, env_name, ui, opts)?;
    engine.confirm_protected("rollback")?;
    let run = RunLock::acquire(&project.state_dir(), opts.lock_wait, |m| ui.note(m))?;
    let _deploy_lock = engine.deploy_lock("rollback", opts.lock_wait)?;
    let roles = chapters::of(&engine)?;

    // The run's one connection, shared with the chapters the engine runs.
    let connection = engine.docker.clone();
    let (rt, daemon) = connection.daemon()?;
    let stack = project.config.app.stack_name();
    rt.block_on(resume::remove_leftover_jobs(daemon, stack, ui))?;
    let interrupted = rt.block_on(resume::judge_interrupted(
        project,
        env_name,
        daemon,
        ui,
        converge_timeout(project)?,
    ))?;
    // Judging may have settled records: read the history again.
    let history = record::history(&State::read(&project.state_dir())?, env_name)?;
    let known = record::known_releases(&history);
    let listing = || {
        if known.is_empty() {
            "  no successful deploy is recorded for this environment".to_string()
        } else {
            format!(
                "  known releases (newest first):\n    {}",
                known.join("\n    ")
            )
        }
    };
    let (live, before) = rt.block_on(swarm::live_releases(daemon, stack))?;
    // This checkout's history is trusted when it knows the release the swarm runs; otherwise
    // (a fresh CI clone, a laptop that did not deploy the last release) the swarm's own record
    // of the spec before the last update names the previous release — but only after an update
    // that completed: after a Swarm rollback that previous spec is the failed release.
    let history_current = match (&live, record::live_in(&history)) {
        (Some(live), Some(ours)) => live.release == ours.release,
        (None, _) => true,
        (Some(_), None) => false,
    };
    let target = match to {
        Some(wanted) => match record::find(&history, wanted) {
            Some(found) => Target::from(found),
            None => match &before {
                Some(b) if b.release == wanted || b.git_sha.starts_with(wanted) => {
                    Target::from_live(b)
                }
                _ => anyhow::bail!("no successful release `{wanted}` in {env_name}\n{}", listing()),
            },
        },
        None if history_current => Target::from(record::previous_in(&history).with_context(|| {
            format!(
                "nothing to roll back to in {env_name}: no earlier successful release with another image\n{}",
                listing()
            )
        })?),
        None => {
            let settled = rt.block_on(converge::last_update_completed(
                daemon,
                &spec::scoped(stack, "app"),
            ))?;
            match (&before, settled) {
                (Some(b), true) => Target::from_live(b),
                _ => anyhow::bail!(
                    "this checkout's history does not know the release live in {env_name} ({}), and the swarm's previous spec is not a release that completed\n  fix: `beamops rollback {env_name} --to <release>` naming one, or run rollback where the last deploy ran\n{}",
                    live.as_ref().map(|l| l.release.as_str()).unwrap_or("?"),
                    listing()
                ),
            }
        }
    };
    let previous_release = live
        .map(|l| l.release)
        .or_else(|| record::live_in(&history).map(|r| r.release.clone()));
    if project.config.image.registry.is_none()
        && rt
            .block_on(daemon.client.inspect_image(&target.image))
            .is_err()
    {
        anyhow::bail!(
            "{} (release {}) is no longer on {}\n  fix: check out {} and `beamops deploy {env_name}` it again",
            target.image,
            target.release,
            daemon.host,
            target.git_sha
        );
    }
    ui.note(format!(
        "rollback: {} → {} ({})",
        previous_release.as_deref().unwrap_or("?"),
        target.release,
        target.image
    ));
    engine.write_chapter_files(roles.stack, &run)?;
    finish(
        project,
        env_name,
        &target,
        Kind::Rollback,
        Outcome::InProgress,
        &started_at,
        started,
        None,
    )?;
    let mut report = roll_out(
        project,
        env_name,
        &mut engine,
        &run,
        rt,
        daemon,
        &target,
        Kind::Rollback,
        roles.stack,
        (&started_at, started),
    )?;
    report.previous_release = previous_release;
    report.interrupted = interrupted;
    Ok(report)
}

async fn release_job(
    project: &Project,
    env_name: &str,
    daemon: &Daemon,
    target: &Target,
    stack_chapter: &str,
    command: &str,
    ui: &Ui,
) -> Result<release::JobRun> {
    let stack = project.config.app.stack_name();
    let file = parsed_stack(project, env_name, target, stack_chapter)?;
    let (resolved, _) = converge::resolve(daemon, stack, &file, true).await?;
    let app = spec::services(stack, &file, &resolved)?
        .into_iter()
        .map(|(_, s)| s)
        .find(|s| {
            s.task_template
                .as_ref()
                .and_then(|t| t.container_spec.as_ref())
                .and_then(|c| c.image.as_deref())
                == Some(target.image.as_str())
        })
        .with_context(|| {
            format!(
                "no service in {} runs ${{{}}}: the release command has no app spec to run in",
                swarm::STACK_FILE,
                swarm::APP_IMAGE_VARIABLE
            )
        })?;
    let name = spec::scoped(stack, &format!("release-{}", target.release));
    let job = release::job_spec(&app, &name, command, &target.release, stack_chapter);
    release::run(daemon, job, command, ui, converge_timeout(project)?).await
}

/// The app stack file with the target's variables, owned by `stack_chapter` (the chapter whose
/// `stack-converged` converges it).
fn parsed_stack(
    project: &Project,
    env_name: &str,
    target: &Target,
    stack_chapter: &str,
) -> Result<swarm::stack::StackFile> {
    let text = std::fs::read_to_string(project.root.join(swarm::STACK_FILE))
        .with_context(|| format!("reading {}", swarm::STACK_FILE))?;
    let mut file = swarm::parse_stack(project, env_name, &text, &target.variables())?;
    // As chapter 08's converge labels it, so the specs compare equal.
    file.owner = swarm::owner(
        project,
        stack_chapter,
        swarm::STACK_FILE,
        project.config.app.stack_name(),
    );
    Ok(file)
}

fn converge_timeout(project: &Project) -> Result<Duration> {
    let text = &project.config.chapters.swarm.converge_timeout;
    humantime::parse_duration(text)
        .with_context(|| format!("chapters.swarm.converge_timeout `{text}` is not a duration"))
}

/// sha256 of the stack file and the variables it is interpolated with: what the services run.
fn spec_digest(project: &Project, env_name: &str, target: &Target) -> String {
    let text = std::fs::read(project.root.join(swarm::STACK_FILE)).unwrap_or_default();
    let mut vars = swarm::secret_variables(project, env_name).unwrap_or_default();
    vars.extend(target.variables());
    let mut input = text;
    input.push(0);
    input.extend(serde_json::to_vec(&vars).unwrap_or_default());
    crate::fsutil::sha256_hex(&input)
}

/// Records a deploy that failed before any service changed, and hands its error back.
fn failed(
    project: &Project,
    env_name: &str,
    target: &Target,
    kind: Kind,
    started_at: &str,
    started: Instant,
    error: anyhow::Error,
) -> anyhow::Error {
    let detail = Some(format!("{error:#}"));
    match finish(
        project,
        env_name,
        target,
        kind,
        Outcome::Failed,
        started_at,
        started,
        detail,
    ) {
        Ok(_) => error,
        Err(recording) => error.context(format!(
            "recording the failed deploy also failed: {recording:#}"
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    project: &Project,
    env_name: &str,
    target: &Target,
    kind: Kind,
    outcome: Outcome,
    started_at: &str,
    started: Instant,
    detail: Option<String>,
) -> Result<DeployRecord> {
    let entry = DeployRecord {
        release: target.release.clone(),
        kind,
        outcome,
        image: target.image.clone(),
        image_id: target.image_id.clone(),
        git_sha: target.git_sha.clone(),
        spec_digest: spec_digest(project, env_name, target),
        started_at: started_at.to_string(),
        at: state::now_rfc3339(),
        seconds: started.elapsed().as_secs_f64(),
        detail,
    };
    let dir = project.state_dir();
    let mut state = State::read(&dir)?;
    record::push(&mut state, env_name, entry.clone())?;
    state.write(&dir)?;
    Ok(entry)
}

/// Chapter 08 with the target's variables: the services updated from the stack file, then the
/// wait. A Swarm rollback is waited out (the old release serves again) and is exit 5.
#[allow(clippy::too_many_arguments)]
fn roll_out(
    project: &Project,
    env_name: &str,
    engine: &mut Engine,
    run: &RunLock,
    rt: &tokio::runtime::Runtime,
    daemon: &Daemon,
    target: &Target,
    kind: Kind,
    stack_chapter: &'static crate::chapter::Manifest,
    (started_at, started): (&str, Instant),
) -> Result<DeployReport> {
    engine.ui.note(format!(
        "{}: updating the services to {} ({})",
        if kind == Kind::Deploy {
            "deploy"
        } else {
            "rollback"
        },
        target.release,
        target.image
    ));
    engine.stack_variables = target.variables();
    let file = parsed_stack(project, env_name, target, &stack_chapter.key())?;
    let services: Vec<String> = file
        .services
        .keys()
        .map(|k| spec::scoped(project.config.app.stack_name(), k))
        .collect();
    let mut converged_now: Option<StackRecord> = None;
    let result = engine
        .up_locked(&[stack_chapter], &up_options(Duration::ZERO), run)
        .and_then(|plans| {
            // Healthy is not yet done: a task failing in the monitor window still rolls back.
            // The services this run's converge updated: its typed output (a satisfied stack,
            // applied by an earlier run, updated nothing now).
            let app_stack = project.config.app.stack_name();
            converged_now = plans
                .iter()
                .find_map(|p| p.applied::<StackRecord>().transpose())
                .transpose()?
                .filter(|r| r.stack == app_stack);
            let updated = converged_now
                .as_ref()
                .map(|r| r.updated.clone())
                .unwrap_or_default();
            rt.block_on(converge::wait_update_settled(
                daemon,
                &updated,
                engine.ui,
                converge_timeout(project)?,
            ))
        });
    if let Err(e) = result {
        if exit_for(&e) != Exit::RolledBack {
            return Err(failed(
                project, env_name, target, kind, started_at, started, e,
            ));
        }
        engine
            .ui
            .note("Swarm is rolling the update back; waiting until the previous release serves");
        let waited = rt.block_on(wait_rolled_back(
            daemon,
            &services,
            converge_timeout(project)?,
        ));
        let mut failing = Vec::new();
        for service in &services {
            // Only services whose update Swarm rolled back; their status names the task.
            let Some((state, message)) = rt.block_on(converge::update_state(daemon, service))?
            else {
                continue;
            };
            if !matches!(
                state,
                bollard::models::ServiceUpdateStatusStateEnum::ROLLBACK_STARTED
                    | bollard::models::ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED
                    | bollard::models::ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED
                    | bollard::models::ServiceUpdateStatusStateEnum::PAUSED
            ) {
                continue;
            }
            if let Some(task) = rt.block_on(diagnose::failing_task(
                daemon,
                service,
                &target.image,
                Some(&message),
            )) {
                failing.push(task);
            }
        }
        let detail = format!(
            "{}: {} was rolled back{}\n{}",
            target.release,
            target.image,
            match &waited {
                Ok(()) => "; the previous release serves again".to_string(),
                Err(e) => format!("; the rollback has not converged: {e:#}"),
            },
            if failing.is_empty() {
                format!("{e:#}")
            } else {
                failing.join("\n")
            }
        );
        finish(
            project,
            env_name,
            target,
            kind,
            Outcome::RolledBack,
            started_at,
            started,
            Some(detail.clone()),
        )?;
        return Err(Failure::RolledBack(detail).into());
    }
    let entry = finish(
        project,
        env_name,
        target,
        kind,
        Outcome::Succeeded,
        started_at,
        started,
        None,
    )?;

    // This run's converge, else the last one recorded (nothing changed now).
    let converged = match converged_now {
        Some(r) => Some(r),
        None => State::read(&project.state_dir())?
            .find_record_where(env_name, |r: &StackRecord| {
                r.stack == project.config.app.stack_name()
            })?,
    };
    // Secret versions chapter 07 replaced are unused once the services moved on.
    let keep = crate::secrets::current_secret_names(project, env_name)?
        .into_values()
        .collect();
    // The deploy succeeded and is recorded so: a cleanup that fails is a warning, not exit 1.
    let pruned = rt
        .block_on(crate::secrets::docker::prune_unused(
            daemon,
            project.config.app.stack_name(),
            &keep,
        ))
        .unwrap_or_else(|e| {
            engine
                .ui
                .warning(format!("unused secret versions were not removed: {e:#}"));
            Vec::new()
        });
    // Old release images pile up on the node with every deploy; rollbacks reach back this far.
    let images = rt
        .block_on(crate::docker::prune::prune_release_images(
            daemon,
            &project.config.image_repository(),
            project.config.deploy.keep_releases,
            false,
        ))
        .unwrap_or_else(|e| {
            engine
                .ui
                .warning(format!("old release images were not removed: {e:#}"));
            Default::default()
        });
    Ok(DeployReport {
        environment: env_name.to_string(),
        kind,
        changed: true,
        interrupted: Vec::new(),
        release: entry.release,
        image: entry.image,
        image_id: entry.image_id,
        git_sha: entry.git_sha,
        previous_release: None,
        pushed: None,
        release_command: None,
        updated: converged
            .as_ref()
            .map(|r| r.updated.clone())
            .unwrap_or_default(),
        unchanged: converged
            .as_ref()
            .map(|r| r.unchanged.clone())
            .unwrap_or_default(),
        converge_seconds: converged.as_ref().map_or(0.0, |r| r.converge_seconds),
        pruned_secrets: pruned,
        pruned_images: images
            .removed
            .iter()
            .map(|i| i.tags.first().cloned().unwrap_or_else(|| i.id.clone()))
            .collect(),
        spec_digest: entry.spec_digest,
        seconds: entry.seconds,
    })
}

/// After Swarm reported the rollback: until every service runs all its tasks healthy on the
/// (previous) spec it rolled back to.
pub(crate) async fn wait_rolled_back(
    daemon: &Daemon,
    services: &[String],
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut lagging = Vec::new();
        for name in services {
            let p = converge::progress(daemon, name).await?;
            if p.healthy < p.desired || p.lagging.is_some() {
                lagging.push(
                    p.lagging
                        .unwrap_or_else(|| format!("{name}: {}/{}", p.healthy, p.desired)),
                );
            }
        }
        if lagging.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{}", lagging.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
