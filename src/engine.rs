//! The chapter engine: plan (render + check), up (write + check → apply → verify), down, status.
//! It knows manifests, templates, the lock, the state and the `Action` trait — no chapter by name.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::action::{Action, ActionContext, Check};
use crate::chapter::{self, Manifest};
use crate::config::Environment;
use crate::exit::{Exit, Failure};
use crate::lockfile::LockFile;
use crate::output::Ui;
use crate::plan::{self, FilePlan, FileStatus, Planned};
use crate::project::Project;
use crate::render::{self, Rendered};
use crate::state::{self, ActionRecord, Outcome, RunLock, State};

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ActionStatus {
    Satisfied,
    Pending,
    Blocked,
    /// A check refused to go on to protect data (a key inside the project…): exit 4.
    Refused,
    Failed,
    Skipped,
    Applied,
    Undone,
    NotImplemented,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionPlan {
    pub id: String,
    pub description: String,
    pub status: ActionStatus,
    pub detail: String,
    /// Its `blocked` stops nothing (`Action::optional`): the rest of the run applies, and the
    /// chapter counts as done for the chapters that need it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// What this run's apply recorded (its typed record's JSON), read with
    /// [`ChapterPlan::applied`]; none when the action did not apply in this run.
    #[serde(skip)]
    pub record: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChapterPlan {
    pub chapter: String,
    pub label: String,
    pub title: String,
    pub implemented: bool,
    /// Set when the chapter is here only because a requested chapter needs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needed_by: Option<String>,
    pub files: Vec<FilePlan>,
    pub actions: Vec<ActionPlan>,
}

impl ChapterPlan {
    /// The record action `R::ACTION` made in this run: a typed output for the command that ran
    /// the chapter (`deploy` waits out the monitor window of the services this run updated).
    /// `Ok(None)` when it did not apply in this run.
    pub fn applied<R: crate::action::record::Record>(
        &self,
    ) -> std::result::Result<Option<R>, crate::action::record::Unreadable> {
        match self
            .actions
            .iter()
            .find(|a| a.id == R::ACTION && a.status == ActionStatus::Applied)
            .and_then(|a| a.record.as_ref())
        {
            Some(data) => crate::action::record::parse(data),
            None => Ok(None),
        }
    }

    pub fn has_changes(&self) -> bool {
        self.files.iter().any(|f| f.status.is_change())
            || self
                .actions
                .iter()
                .any(|a| matches!(a.status, ActionStatus::Pending))
    }

    /// Everything rendered is on disk and every action is satisfied.
    pub fn satisfied(&self) -> bool {
        self.implemented
            && !self.has_changes()
            && self.actions.iter().all(|a| {
                matches!(a.status, ActionStatus::Satisfied | ActionStatus::Skipped)
                    || (a.optional && a.status == ActionStatus::Blocked)
            })
    }

    /// The plan's own exit code: the worst of its actions' (ranked in `exit.rs`), else pending
    /// when a file would change.
    pub fn exit(&self) -> Exit {
        if !self.implemented {
            return Exit::Ok;
        }
        let actions = Exit::worst(self.actions.iter().map(|a| match a.status {
            ActionStatus::Failed => Exit::Error,
            ActionStatus::Refused => Exit::Refused,
            ActionStatus::Blocked => Exit::Blocked,
            ActionStatus::Pending => Exit::Pending,
            _ => Exit::Ok,
        }));
        let files = if self.has_changes() {
            Exit::Pending
        } else {
            Exit::Ok
        };
        Exit::worst([actions, files])
    }
}

pub struct Engine<'a> {
    pub project: &'a Project,
    pub env_name: String,
    pub env: Environment,
    pub ui: &'a Ui,
    /// `--yes`: the confirmation a protected environment asks for.
    pub yes: bool,
    /// `up --no-cache`, handed to every action.
    pub no_cache: bool,
    /// `--message`: why this run changes the swarm, shown to whoever finds the deploy lock held.
    pub message: Option<String>,
    /// Stack variables that win over the recorded ones (`deploy` names the release it rolls out).
    pub stack_variables: std::collections::BTreeMap<String, String>,
    /// The run's one Engine connection, opened by the first action that needs it; `deploy`
    /// shares it for its own calls.
    pub docker: Rc<crate::docker::Connection>,
    /// Check results of this run (see [`CheckCache`]).
    checks: CheckCache,
    /// None: the embedded chapters and their actions. Tests set their own.
    catalog: Option<Catalog>,
    /// Set while `up` plans before writing: every chapter it runs is checked again once its
    /// files are written, so a check may leave a costly preview of unwritten files to then.
    rechecked_after_writing: Cell<bool>,
}

/// Builds a chapter's actions (a test's fakes).
type ActionBuilder = Box<dyn Fn(&Manifest) -> Vec<Box<dyn Action>>>;

/// Cached checks by (chapter key, action id, stack variables).
type CheckEntries = HashMap<(String, String, String), CachedCheck>;

struct CachedCheck {
    needs: &'static [&'static str],
    check: Check,
    /// The action left part of its answer to the check after writing
    /// ([`ActionContext::defer`]).
    deferred: bool,
}

/// Chapters and actions other than the embedded ones ([`Engine::with_catalog`]).
struct Catalog {
    chapters: Vec<&'static Manifest>,
    actions: ActionBuilder,
    /// The deploy locks taken, by command: there is no swarm to take them on.
    locks: RefCell<Vec<String>>,
}

/// A deploy lock this run holds; released when dropped (also when an action fails).
pub struct HeldLock(#[allow(dead_code)] Option<crate::swarm::lock::Guard>);

/// What each action's check found in this run, so `up` checks an action once (its plan, the
/// plan again under the run lock, the deploy-lock decision and the step itself all ask) unless
/// something it depends on changed since:
/// - its own apply, or an apply of an action it `needs` (transitively), forgets it;
/// - files written to disk by this run forget every result (a check may read any file);
/// - other stack variables (a deploy's target) are another key;
/// - a run that had to wait for the run lock forgets every result (the other run changed things).
///
/// Errors are never kept: the next ask checks again.
#[derive(Default)]
struct CheckCache {
    entries: RefCell<CheckEntries>,
    /// Checks actually run, for the tests.
    runs: Cell<usize>,
}

impl CheckCache {
    fn forget_all(&self) {
        self.entries.borrow_mut().clear();
    }

    /// `applied` changed: forget it and every cached check that needs it, transitively.
    fn forget_dependents(&self, applied: &str) {
        let mut entries = self.entries.borrow_mut();
        let mut changed = vec![applied.to_string()];
        while let Some(id) = changed.pop() {
            let gone: Vec<_> = entries
                .iter()
                .filter(|((_, action, _), cached)| {
                    *action == id || cached.needs.contains(&id.as_str())
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in gone {
                entries.remove(&key);
                if key.1 != id {
                    changed.push(key.1.clone());
                }
            }
        }
    }
}

pub struct UpOptions {
    pub dry_run: bool,
    pub force: bool,
    pub no_deps: bool,
    pub lock_wait: Duration,
}

impl<'a> Engine<'a> {
    pub fn new(project: &'a Project, env_name: &str, ui: &'a Ui) -> Result<Self> {
        let env = project.config.require_environment(env_name)?.clone();
        Ok(Engine {
            project,
            env_name: env_name.to_string(),
            env,
            ui,
            yes: false,
            no_cache: false,
            message: None,
            stack_variables: Default::default(),
            docker: Rc::new(crate::docker::Connection::for_environment(
                project, env_name,
            )),
            checks: CheckCache::default(),
            catalog: None,
            rechecked_after_writing: Cell::new(false),
        })
    }

    fn render(&self, chapter: &Manifest) -> Result<Vec<Rendered>> {
        let ctx = render::context(self.project, &self.env_name)?;
        render::render_chapter(chapter, &ctx)
    }

    /// The chapter's actions, as its manifest's specs build them (or the test catalog's fakes).
    fn actions(&self, chapter: &Manifest) -> Vec<Box<dyn Action>> {
        match &self.catalog {
            Some(catalog) => (catalog.actions)(chapter),
            None => chapter
                .actions
                .iter()
                .map(|a| a.build(&chapter.key()))
                .collect(),
        }
    }

    fn by_key(&self, key: &str) -> Option<&'static Manifest> {
        match &self.catalog {
            Some(catalog) => catalog.chapters.iter().copied().find(|c| c.key() == key),
            None => chapter::by_key(key),
        }
    }

    fn with_dependencies(&self, targets: &[&'static Manifest]) -> Result<Vec<&'static Manifest>> {
        match &self.catalog {
            Some(catalog) => chapter::with_dependencies_by(targets, &|need| {
                catalog
                    .chapters
                    .iter()
                    .copied()
                    .find(|c| c.slug == need || c.key() == need || c.label() == need)
                    .with_context(|| format!("unknown chapter `{need}`"))
            }),
            None => chapter::with_dependencies(targets),
        }
    }

    /// Every chapter this engine runs: the embedded ones (with any extra directory's), or the
    /// test catalog's. `deploy` finds its chapters among them by what they provide.
    pub fn chapters(&self) -> Vec<&'static Manifest> {
        match &self.catalog {
            Some(catalog) => catalog.chapters.clone(),
            None => chapter::all(),
        }
    }

    /// `chapter` and every chapter it needs, dependencies first.
    pub fn needs_of(&self, chapter: &'static Manifest) -> Result<Vec<&'static Manifest>> {
        self.with_dependencies(&[chapter])
    }

    /// The engine over `chapters` instead of the embedded manifests, with `actions` building
    /// each chapter's actions: how a test feeds made-up chapters and fake actions.
    pub fn with_catalog(
        mut self,
        chapters: Vec<&'static Manifest>,
        actions: impl Fn(&Manifest) -> Vec<Box<dyn Action>> + 'static,
    ) -> Self {
        self.catalog = Some(Catalog {
            chapters,
            actions: Box::new(actions),
            locks: RefCell::new(Vec::new()),
        });
        self
    }

    fn context<'b>(
        &'b self,
        rendered: &'b [Rendered],
        previous: Option<&'b ActionRecord>,
        purge: bool,
        planned: &'b Planned,
    ) -> ActionContext<'b> {
        ActionContext {
            project: self.project,
            env_name: &self.env_name,
            env: &self.env,
            rendered,
            previous,
            ui: self.ui,
            purge,
            no_cache: self.no_cache,
            stack_variables: &self.stack_variables,
            planned,
            docker: &self.docker,
            rechecked_after_writing: self.rechecked_after_writing.get(),
            deferred: Cell::new(false),
        }
    }

    /// `action.check`, once per run unless something it depends on changed (`CheckCache`).
    fn cached_check(
        &self,
        action: &dyn Action,
        chapter: &Manifest,
        cx: &ActionContext,
    ) -> Result<Check> {
        let key = (
            chapter.key(),
            action.id(),
            serde_json::to_string(&self.stack_variables).unwrap_or_default(),
        );
        if let Some(entry) = self.checks.entries.borrow().get(&key)
            // A deferred answer is good only for the plan before writing.
            && (!entry.deferred || cx.rechecked_after_writing)
        {
            return Ok(entry.check.clone());
        }
        self.checks.runs.set(self.checks.runs.get() + 1);
        let check = action.check(cx)?;
        self.checks.entries.borrow_mut().insert(
            key,
            CachedCheck {
                needs: action.needs(),
                check: check.clone(),
                deferred: cx.deferred(),
            },
        );
        Ok(check)
    }

    /// How many checks this engine has actually run (the rest came from its cache).
    pub fn checks_run(&self) -> usize {
        self.checks.runs.get()
    }

    /// An action's check. `planned` is what earlier steps of the same plan will have done
    /// (empty once they really ran): a failure of an input such a step still has to make is
    /// reported as pending, with the step it waits for.
    fn check_action(
        &self,
        action: &dyn Action,
        rendered: &[Rendered],
        state: &State,
        chapter: &Manifest,
        planned: &Planned,
    ) -> ActionPlan {
        let id = action.id();
        let (status, detail) = if !action.implemented() {
            (ActionStatus::NotImplemented, "not implemented".to_string())
        } else if !action.providers().contains(&self.env.provider) {
            (
                ActionStatus::Skipped,
                format!(
                    "not applicable to {} ({})",
                    self.env_name, self.env.provider
                ),
            )
        } else {
            let previous = state
                .chapter(&self.env_name, &chapter.key())
                .and_then(|c| c.actions.get(&id));
            let waits_for = planned.pending_of(action.needs());
            match (
                self.cached_check(
                    action,
                    chapter,
                    &self.context(rendered, previous, false, planned),
                ),
                waits_for,
            ) {
                (Ok(Check::Satisfied(d)), _) => (ActionStatus::Satisfied, d),
                (Ok(Check::Pending(d)), _) => (ActionStatus::Pending, d),
                (Ok(Check::Blocked(d)), _) => (ActionStatus::Blocked, d),
                // What an earlier step of this plan makes is not there yet: pending, not failed.
                (Ok(Check::Failed(d)), Some(need)) => waiting(need, &d),
                (Err(e), Some(need)) if crate::exit::exit_for(&e) != Exit::Refused => {
                    waiting(need, &format!("{e:#}"))
                }
                (Ok(Check::Failed(d)), None) => (ActionStatus::Failed, d),
                // A check's error still says what kind of stop it is: blocked (3), refused (4).
                (Err(e), _) => match crate::exit::exit_for(&e) {
                    Exit::Blocked => (ActionStatus::Blocked, format!("{e:#}")),
                    Exit::Refused => (ActionStatus::Refused, format!("{e:#}")),
                    _ => (ActionStatus::Failed, format!("{e:#}")),
                },
            }
        };
        ActionPlan {
            id,
            description: action.describe(),
            status,
            detail,
            optional: action.optional(),
            record: None,
        }
    }

    /// One chapter's plan; `planned` holds what the plan's earlier chapters do and gains this
    /// chapter's file writes and pending actions for the chapters after it.
    pub fn plan_chapter(
        &self,
        chapter: &Manifest,
        lock: &LockFile,
        state: &State,
        planned: &mut Planned,
    ) -> Result<ChapterPlan> {
        let rendered = self.render(chapter)?;
        let files = if chapter.implemented {
            plan::plan_files(self.project, &chapter.key(), &rendered, lock)?
        } else {
            Vec::new()
        };
        let mut actions = Vec::new();
        for action in self.actions(chapter) {
            let step = self.check_action(action.as_ref(), &rendered, state, chapter, planned);
            if step.status == ActionStatus::Pending {
                planned
                    .pending
                    .entry(step.id.clone())
                    .or_insert_with(|| chapter.label());
            }
            actions.push(step);
        }
        planned.add_files(&files);
        Ok(ChapterPlan {
            chapter: chapter.key(),
            label: chapter.label(),
            title: chapter.title.clone(),
            implemented: chapter.implemented,
            needed_by: None,
            files,
            actions,
        })
    }

    /// Plans for `targets` and, first, for the chapters they need that are not yet satisfied.
    pub fn plan(&self, targets: &[&'static Manifest], with_deps: bool) -> Result<Vec<ChapterPlan>> {
        let lock = LockFile::read(&self.project.root)?;
        let state = State::read(&self.project.state_dir())?;
        let ordered = if with_deps {
            self.with_dependencies(targets)?
        } else {
            targets.to_vec()
        };
        let mut plans = Vec::new();
        let mut planned = Planned::default();
        for chapter in ordered {
            let mut plan = self.plan_chapter(chapter, &lock, &state, &mut planned)?;
            let requested = targets.iter().any(|t| t.id == chapter.id);
            if !requested {
                if plan.satisfied() {
                    continue;
                }
                plan.needed_by = targets
                    .iter()
                    .find(|t| {
                        self.with_dependencies(&[t])
                            .is_ok_and(|d| d.iter().any(|c| c.id == chapter.id))
                    })
                    .map(|t| t.label());
            }
            plans.push(plan);
        }
        Ok(plans)
    }

    pub fn up(&self, targets: &[&'static Manifest], opts: &UpOptions) -> Result<Vec<ChapterPlan>> {
        if opts.no_deps {
            // Only the needed chapters are planned here (they come first, so what the targets
            // do cannot change their plan); they are never written or checked again, so
            // their checks may not defer.
            let needed: Vec<&'static Manifest> = self
                .with_dependencies(targets)?
                .into_iter()
                .filter(|c| !targets.iter().any(|t| t.id == c.id))
                .collect();
            let unmet: Vec<String> = self
                .plan(&needed, false)?
                .iter()
                .filter(|p| !p.satisfied())
                .map(|p| p.label.clone())
                .collect();
            if !unmet.is_empty() {
                anyhow::bail!(
                    "--no-deps: needed chapters are not satisfied: {}\n  fix: run without --no-deps, or `beamops up {}` first",
                    unmet.join(", "),
                    unmet.join(" ")
                );
            }
        }
        let plans = if opts.dry_run {
            self.plan(targets, !opts.no_deps)?
        } else {
            self.plan_before_writing(targets, !opts.no_deps)?
        };
        if let Some(p) = plans.iter().find(|p| !p.implemented) {
            return Err(Failure::NotImplemented(format!(
                "{} ({}){}",
                p.label,
                p.chapter,
                p.needed_by
                    .as_ref()
                    .map(|t| format!(", needed by {t},"))
                    .unwrap_or_default()
            ))
            .into());
        }
        refuse_conflicts(&plans, opts.force)?;
        if opts.dry_run {
            return Ok(plans);
        }
        self.confirm_protected("up")?;

        let waited = Cell::new(false);
        let run = RunLock::acquire(&self.project.state_dir(), opts.lock_wait, |m| {
            waited.set(true);
            self.ui.note(m)
        })?;
        if waited.get() {
            // The run we waited for changed things: what was checked before it is stale.
            self.checks.forget_all();
        }
        // Private plan copies a killed run left (they hold a saved plan: state and variables).
        crate::terraform::preview::sweep(&self.project.state_dir());
        self.up_locked(targets, opts, &run)
    }

    /// The plan of a run that writes each chapter's files and then checks its actions again
    /// before applying any: those checks decide, so these may leave a costly preview of files
    /// not yet written (Terraform's plan of a private copy) to them.
    fn plan_before_writing(
        &self,
        targets: &[&'static Manifest],
        with_deps: bool,
    ) -> Result<Vec<ChapterPlan>> {
        self.rechecked_after_writing.set(true);
        let plans = self.plan(targets, with_deps);
        self.rechecked_after_writing.set(false);
        plans
    }

    /// `up` for a caller that already holds the run lock (`deploy` holds it across several
    /// chapters and its own steps) and has asked for confirmation.
    pub fn up_locked(
        &self,
        targets: &[&'static Manifest],
        opts: &UpOptions,
        _run: &RunLock,
    ) -> Result<Vec<ChapterPlan>> {
        let state_dir = self.project.state_dir();
        // Another run, or a person, may have changed files while we waited: plan again under
        // the lock, and refuse again if a file was edited meanwhile.
        let plans = self.plan_before_writing(targets, !opts.no_deps)?;
        refuse_conflicts(&plans, opts.force)?;
        let mut lock = LockFile::read(&self.project.root)?;
        let mut state = State::read(&state_dir)?;
        let mut done = Vec::new();
        // Held from the first swarm change to the end of the run; released on drop, also when
        // an action fails.
        let mut swarm_lock: Option<HeldLock> = None;
        for mut plan in plans {
            let chapter = self.by_key(&plan.chapter).expect("planned chapters exist");
            self.write_files(&plan, &mut lock)?;
            let rendered = self.render(chapter)?;
            let bar = self.ui.progress(
                chapter.actions.len() as u64,
                format!("{} {}", plan.label, plan.title),
            );
            plan.actions = Vec::new();
            for action in self.actions(chapter) {
                bar.set_message(format!("{}: {}", plan.label, action.describe()));
                // The deploy lock, before the first swarm change; checked here rather than in
                // the plan because an earlier chapter of this run (a rebuilt image) may have
                // made it pending. run_action checks again under the lock.
                if swarm_lock.is_none()
                    && action.touches_swarm()
                    && self
                        .check_action(
                            action.as_ref(),
                            &rendered,
                            &state,
                            chapter,
                            &Planned::default(),
                        )
                        .status
                        == ActionStatus::Pending
                {
                    swarm_lock = self.deploy_lock("up", opts.lock_wait)?;
                }
                let result = self.run_action(action.as_ref(), chapter, &rendered, &mut state);
                state.write(&state_dir)?;
                bar.inc(1);
                let step = result?;
                plan.actions.push(step);
            }
            bar.finish_and_clear();
            done.push(plan);
        }
        // Nothing to change on the swarm, so no lock was taken: a lock a killed run left is
        // still cleared, so the next run finishes the job without `lock release`.
        if swarm_lock.is_none()
            && self.catalog.is_none()
            && done
                .iter()
                .filter_map(|p| self.by_key(&p.chapter))
                .any(|c| self.actions(c).iter().any(|a| a.touches_swarm()))
            && let Err(e) =
                crate::swarm::lock::clear_dead_for_environment(self.project, &self.docker, &|m| {
                    self.ui.note(m)
                })
        {
            self.ui.warning(format!(
                "could not check for a killed run's deploy lock: {e:#}"
            ));
        }
        Ok(done)
    }

    /// The stack's deploy lock on the environment's swarm (None before the swarm exists).
    /// `--lock-wait` bounds the wait, as it does for the local run lock.
    pub fn deploy_lock(&self, command: &str, wait: Duration) -> Result<Option<HeldLock>> {
        if let Some(catalog) = &self.catalog {
            // A test's engine has no swarm: it notes when the lock would have been taken.
            catalog.locks.borrow_mut().push(command.to_string());
            return Ok(Some(HeldLock(None)));
        }
        let holder = crate::swarm::lock::Holder::current(command, self.message.clone());
        Ok(crate::swarm::lock::acquire_for_environment(
            self.project,
            &self.env_name,
            &self.docker,
            &holder,
            wait,
            |m| self.ui.note(m),
        )?
        .map(|guard| HeldLock(Some(guard))))
    }

    /// The deploy locks a test catalog's engine took, in order (by command).
    pub fn locks_taken(&self) -> Vec<String> {
        self.catalog
            .as_ref()
            .map(|c| c.locks.borrow().clone())
            .unwrap_or_default()
    }

    fn write_files(&self, plan: &ChapterPlan, lock: &mut LockFile) -> Result<()> {
        if plan.files.iter().any(|f| f.status.is_change()) {
            // A check may read any file (a build context, the stack file): check again.
            self.checks.forget_all();
        }
        for f in &plan.files {
            if let Some(dir) = self.project.root.join(&f.path).parent() {
                crate::fsutil::sweep_temp_files(dir);
            }
            plan::apply_file(self.project, f, lock)
                .with_context(|| format!("writing {}", f.path))?;
            lock.write_if_changed(&self.project.root)?;
        }
        Ok(())
    }

    /// Writes `chapter`'s files (refusing on a conflict, as `up` does) without running its
    /// actions: `deploy` needs the stack file on disk before the release job, which must run
    /// before the services change.
    pub fn write_chapter_files(&self, chapter: &'static Manifest, _run: &RunLock) -> Result<()> {
        let lock_before = LockFile::read(&self.project.root)?;
        let state = State::read(&self.project.state_dir())?;
        let plan = self.plan_chapter(chapter, &lock_before, &state, &mut Planned::default())?;
        refuse_conflicts(std::slice::from_ref(&plan), false)?;
        let mut lock = lock_before;
        self.write_files(&plan, &mut lock)
    }

    /// check → apply → verify, recording the outcome. Blocked and failed checks stop the run.
    fn run_action(
        &self,
        action: &dyn Action,
        chapter: &Manifest,
        rendered: &[Rendered],
        state: &mut State,
    ) -> Result<ActionPlan> {
        let key = chapter.key();
        // Earlier steps of this run have been applied: the check sees the world as it is.
        let none = Planned::default();
        let mut step = self.check_action(action, rendered, state, chapter, &none);
        let record =
            |state: &mut State, outcome: Outcome, applied: Option<&crate::action::Applied>| {
                let actions = &mut state.chapter_mut(&self.env_name, &key).actions;
                let same = actions
                    .get(&step.id)
                    .is_some_and(|r| r.outcome == outcome && applied.is_none());
                if !same {
                    // A failed or blocked run keeps what the last apply recorded (image ids,
                    // secret versions): the next run must still know what exists.
                    let earlier = actions.get(&step.id).cloned();
                    actions.insert(
                        step.id.clone(),
                        ActionRecord {
                            outcome,
                            inputs_digest: match applied {
                                Some(a) => a.inputs_digest.clone(),
                                None => earlier.as_ref().and_then(|r| r.inputs_digest.clone()),
                            },
                            data: match applied {
                                Some(a) => a.data.clone().into_value(),
                                None => earlier.map(|r| r.data).unwrap_or_default(),
                            },
                            at: state::now_rfc3339(),
                        },
                    );
                }
            };
        match step.status {
            ActionStatus::Satisfied => {
                // Keep what an earlier apply recorded (an image id…); only a new outcome is news.
                let actions = &mut state.chapter_mut(&self.env_name, &key).actions;
                if !actions
                    .get(&step.id)
                    .is_some_and(|r| matches!(r.outcome, Outcome::Applied | Outcome::Satisfied))
                {
                    record(state, Outcome::Satisfied, None);
                }
            }
            ActionStatus::Skipped
            | ActionStatus::NotImplemented
            | ActionStatus::Applied
            | ActionStatus::Undone => {}
            ActionStatus::Blocked if step.optional => {
                record(state, Outcome::Blocked, None);
                self.ui.warning(format!(
                    "{} {}: blocked: {}",
                    chapter.label(),
                    step.id,
                    step.detail
                ));
            }
            ActionStatus::Blocked => {
                record(state, Outcome::Blocked, None);
                return Err(Failure::Blocked(format!("{}: {}", step.id, step.detail)).into());
            }
            ActionStatus::Refused => {
                record(state, Outcome::Failed, None);
                return Err(Failure::refused(
                    format!("{} {}", chapter.label(), step.id),
                    step.detail.clone(),
                )
                .into());
            }
            ActionStatus::Failed => {
                record(state, Outcome::Failed, None);
                anyhow::bail!("{} {}: {}", chapter.label(), step.id, step.detail);
            }
            ActionStatus::Pending => {
                self.ui
                    .detail(format!("applying {}: {}", step.id, step.detail));
                let previous = state
                    .chapter(&self.env_name, &key)
                    .and_then(|c| c.actions.get(&step.id))
                    .cloned();
                let cx = self.context(rendered, previous.as_ref(), false, &none);
                let applied = action.apply(&cx).and_then(|a| {
                    // Verify against what this apply will record, not the record it replaces.
                    let fresh = ActionRecord {
                        outcome: Outcome::Applied,
                        inputs_digest: a.inputs_digest.clone(),
                        data: a.data.clone().into_value(),
                        at: state::now_rfc3339(),
                    };
                    action.verify(&self.context(rendered, Some(&fresh), false, &none))?;
                    Ok(a)
                });
                // Applied or not, what it changed may change its check and its dependents'.
                self.checks.forget_dependents(&step.id);
                match applied {
                    Ok(a) => {
                        record(state, Outcome::Applied, Some(&a));
                        step.status = ActionStatus::Applied;
                        step.detail = a.summary;
                        step.record = Some(a.data.into_value());
                    }
                    Err(e) => {
                        let outcome = if crate::exit::exit_for(&e) == Exit::Blocked {
                            Outcome::Blocked
                        } else {
                            Outcome::Failed
                        };
                        record(state, outcome, None);
                        return Err(e.context(format!("{} {}", chapter.label(), step.id)));
                    }
                }
            }
        }
        Ok(step)
    }

    pub fn down(
        &self,
        chapter: &'static Manifest,
        purge: bool,
        lock_wait: Duration,
    ) -> Result<ChapterPlan> {
        if !chapter.implemented {
            return Err(Failure::NotImplemented(chapter.label()).into());
        }
        self.confirm_protected("down")?;
        let state_dir = self.project.state_dir();
        let _run = RunLock::acquire(&state_dir, lock_wait, |m| self.ui.note(m))?;
        let mut state = State::read(&state_dir)?;
        let rendered = self.render(chapter)?;
        let _swarm_lock = if self
            .actions(chapter)
            .iter()
            .any(|a| a.touches_swarm() && a.providers().contains(&self.env.provider))
        {
            self.deploy_lock("down", lock_wait)?
        } else {
            None
        };
        let mut steps = Vec::new();
        for action in self.actions(chapter).iter().rev() {
            let id = action.id();
            if !action.providers().contains(&self.env.provider) {
                continue;
            }
            let previous = state
                .chapter(&self.env_name, &chapter.key())
                .and_then(|c| c.actions.get(&id))
                .cloned();
            let none = Planned::default();
            let cx = self.context(&rendered, previous.as_ref(), purge, &none);
            let (status, detail) = match action.undo(&cx)? {
                Some(summary) => {
                    state
                        .chapter_mut(&self.env_name, &chapter.key())
                        .actions
                        .insert(
                            id.clone(),
                            ActionRecord {
                                outcome: Outcome::Undone,
                                inputs_digest: None,
                                data: serde_json::Value::Null,
                                at: state::now_rfc3339(),
                            },
                        );
                    state.write(&state_dir)?;
                    (ActionStatus::Undone, summary)
                }
                None => (ActionStatus::Skipped, "nothing to undo".to_string()),
            };
            steps.push(ActionPlan {
                id,
                description: action.describe(),
                status,
                detail,
                optional: action.optional(),
                record: None,
            });
        }
        Ok(ChapterPlan {
            chapter: chapter.key(),
            label: chapter.label(),
            title: chapter.title.clone(),
            implemented: true,
            needed_by: None,
            files: Vec::new(),
            actions: steps,
        })
    }

    /// `up`, `down` and `deploy` on a protected environment need --yes or a typed confirmation.
    pub fn confirm_protected(&self, verb: &str) -> Result<()> {
        if !self.env.protected || self.yes {
            return Ok(());
        }
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            return Err(Failure::refused(
                format!("environment `{}` is protected", self.env_name),
                format!("  fix: pass --yes to `{verb}` it from a script or CI"),
            )
            .into());
        }
        eprint!(
            "environment `{}` is protected; type its name to {verb} it: ",
            self.env_name
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() == self.env_name {
            Ok(())
        } else {
            Err(Failure::refused("confirmation did not match", "nothing was changed").into())
        }
    }

    /// Drift: files that differ from what beamops recorded, and actions no longer satisfied.
    pub fn status(&self) -> Result<Vec<Drift>> {
        let lock = LockFile::read(&self.project.root)?;
        let state = State::read(&self.project.state_dir())?;
        let mut drift = Vec::new();
        for (path, rec) in &lock.files {
            let what = match std::fs::read(self.project.root.join(path)) {
                Err(_) => Some("missing"),
                Ok(c) if crate::fsutil::sha256_hex(&c) != rec.sha256 => Some("edited"),
                Ok(_) => None,
            };
            if let Some(what) = what {
                drift.push(Drift {
                    chapter: rec.chapter.clone(),
                    subject: path.clone(),
                    kind: what.into(),
                    detail: format!("{path} was {what} since beamops wrote it"),
                });
            }
        }
        if let Some(env_state) = state.environments.get(&self.env_name) {
            for (key, chapter_state) in &env_state.chapters {
                let Some(chapter) = self.by_key(key) else {
                    continue;
                };
                let rendered = self.render(chapter)?;
                for action in self.actions(chapter) {
                    let Some(rec) = chapter_state.actions.get(&action.id()) else {
                        continue;
                    };
                    if !matches!(rec.outcome, Outcome::Applied | Outcome::Satisfied) {
                        continue;
                    }
                    let plan = self.check_action(
                        action.as_ref(),
                        &rendered,
                        &state,
                        chapter,
                        &Planned::default(),
                    );
                    if plan.status != ActionStatus::Satisfied
                        && plan.status != ActionStatus::Skipped
                    {
                        drift.push(Drift {
                            chapter: key.clone(),
                            subject: plan.id,
                            kind: "action".into(),
                            detail: plan.detail,
                        });
                    }
                }
            }
        }
        Ok(drift)
    }
}

/// A check that failed on what `need` (pending in `chapter` earlier in the same plan) makes.
fn waiting((need, chapter): (&str, &str), detail: &str) -> (ActionStatus, String) {
    (
        ActionStatus::Pending,
        format!("after {need} ({chapter}), which this plan applies first; checked now: {detail}"),
    )
}

/// Edited generated files stop the run before anything is written (exit 4), unless --force.
fn refuse_conflicts(plans: &[ChapterPlan], force: bool) -> Result<()> {
    let conflicts: Vec<&FilePlan> = plans
        .iter()
        .flat_map(|p| &p.files)
        .filter(|f| f.status == FileStatus::Conflict)
        .collect();
    if conflicts.is_empty() || force {
        return Ok(());
    }
    let detail: String = conflicts
        .iter()
        .map(|f| {
            format!(
                "{} ({}):\n{}",
                f.path,
                f.note.as_deref().unwrap_or("conflict"),
                crate::output::colour_diff(f.diff.as_deref().unwrap_or(""))
            )
        })
        .collect();
    Err(Failure::refused(
        format!(
            "{} file(s) changed since beamops wrote them; nothing was written. Keep your edits, or run again with --force to take beamops' version",
            conflicts.len()
        ),
        detail,
    )
    .into())
}

#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    pub chapter: String,
    pub subject: String,
    pub kind: String,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    //! The engine without Docker: made-up chapters and fake actions over a world in memory.

    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet};
    use std::rc::Rc;

    use super::*;
    use crate::action::record::{self, StackRecord};
    use crate::action::{Applied, Check};

    #[derive(Default)]
    struct World {
        done: BTreeSet<String>,
        checks: BTreeMap<String, usize>,
        /// Actions whose apply fails.
        failing: BTreeSet<String>,
        /// Each check run: the action and whether a check after writing follows it.
        seen: Vec<(String, bool)>,
        /// Actions that, like a Terraform root not yet written, defer to the check after.
        deferring: BTreeSet<String>,
    }

    struct Fake {
        id: &'static str,
        needs: &'static [&'static str],
        swarm: bool,
        world: Rc<RefCell<World>>,
    }

    impl Action for Fake {
        fn id(&self) -> String {
            self.id.into()
        }
        fn describe(&self) -> String {
            format!("fake {}", self.id)
        }
        fn needs(&self) -> &'static [&'static str] {
            self.needs
        }
        fn touches_swarm(&self) -> bool {
            self.swarm
        }
        fn check(&self, cx: &ActionContext) -> Result<Check> {
            let mut world = self.world.borrow_mut();
            *world.checks.entry(self.id.into()).or_default() += 1;
            world
                .seen
                .push((self.id.into(), cx.rechecked_after_writing));
            if cx.rechecked_after_writing
                && world.deferring.contains(self.id)
                && !world.done.contains(self.id)
            {
                return Ok(cx.defer("previewed once written".into()).unwrap());
            }
            if let Some(missing) = self.needs.iter().find(|n| !world.done.contains(**n)) {
                return Ok(Check::Failed(format!("{missing} is not there")));
            }
            Ok(if world.done.contains(self.id) {
                Check::Satisfied("there".into())
            } else {
                Check::Pending("make it".into())
            })
        }
        fn apply(&self, _cx: &ActionContext) -> Result<Applied> {
            let mut world = self.world.borrow_mut();
            anyhow::ensure!(!world.failing.contains(self.id), "{} broke", self.id);
            world.done.insert(self.id.into());
            let data = if self.id == "stack-converged" {
                record::to_data(&StackRecord {
                    stack: "demo".into(),
                    created: vec![],
                    updated: vec!["demo_app".into()],
                    unchanged: vec![],
                    removed: vec![],
                    pruned: vec![],
                    converge_seconds: 1.0,
                    images: BTreeMap::new(),
                    left_out: BTreeMap::new(),
                })
            } else {
                record::Data::default()
            };
            Ok(Applied {
                summary: "made".into(),
                data,
                inputs_digest: None,
            })
        }
    }

    fn manifest(id: u8, slug: &str, needs: &[&str]) -> &'static Manifest {
        let yaml = format!(
            "id: {id}\nslug: {slug}\ntitle: {slug}\nsummary: test\nimplemented: true\nneeds: [{}]\n",
            needs.join(", ")
        );
        Box::leak(Box::new(serde_yaml_ng::from_str(&yaml).unwrap()))
    }

    struct Setup {
        _dir: tempfile::TempDir,
        project: &'static Project,
        ui: &'static Ui,
        world: Rc<RefCell<World>>,
        chapters: Vec<&'static Manifest>,
    }

    /// base ← mid ← top: `mid` makes what `top`'s converge needs; `top` changes the swarm.
    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("beamops.yaml"),
            "version: 1\napp:\n  name: demo\n  otp_app: demo\n  elixir: 1.18.3\n  otp: 27.3.4.1\nenvironments:\n  local: {}\n",
        )
        .unwrap();
        let project = Box::leak(Box::new(Project::discover(Some(dir.path())).unwrap()));
        let ui = Box::leak(Box::new(Ui::new(crate::output::Format::Json, true, false)));
        Setup {
            _dir: dir,
            project,
            ui,
            world: Rc::default(),
            chapters: vec![
                manifest(1, "base", &[]),
                manifest(2, "mid", &["base"]),
                manifest(3, "top", &["mid"]),
            ],
        }
    }

    fn engine_for(s: &Setup) -> Engine<'static> {
        let world = s.world.clone();
        Engine::new(s.project, "local", s.ui).unwrap().with_catalog(
            s.chapters.clone(),
            move |chapter| {
                let fake = |id, needs, swarm| -> Box<dyn Action> {
                    Box::new(Fake {
                        id,
                        needs,
                        swarm,
                        world: world.clone(),
                    })
                };
                match chapter.slug.as_str() {
                    "base" => vec![fake("swarm-mode", &[], true)],
                    "mid" => vec![fake("image", &[], false)],
                    _ => vec![
                        fake("config", &[], false),
                        fake("stack-converged", &["swarm-mode", "image"], true),
                    ],
                }
            },
        )
    }

    fn up_options() -> UpOptions {
        UpOptions {
            dry_run: false,
            force: false,
            no_deps: false,
            lock_wait: Duration::ZERO,
        }
    }

    fn statuses(plans: &[ChapterPlan]) -> Vec<(String, String, ActionStatus)> {
        plans
            .iter()
            .flat_map(|p| {
                p.actions
                    .iter()
                    .map(|a| (p.label.clone(), a.id.clone(), a.status))
            })
            .collect()
    }

    #[test]
    fn a_plan_puts_needed_chapters_first_and_a_failure_on_a_pending_need_is_pending() {
        let s = setup();
        s.world.borrow_mut().done.insert("swarm-mode".into());
        let plans = engine_for(&s).plan(&[s.chapters[2]], true).unwrap();
        // base is satisfied, so left out; mid is there because top needs it.
        let labels: Vec<_> = plans.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["chapter-02", "chapter-03"]);
        assert_eq!(plans[0].needed_by.as_deref(), Some("chapter-03"));
        assert_eq!(
            statuses(&plans),
            [
                ("chapter-02".into(), "image".into(), ActionStatus::Pending),
                ("chapter-03".into(), "config".into(), ActionStatus::Pending),
                // Fails on `image`, which this plan applies first: pending, naming it.
                (
                    "chapter-03".into(),
                    "stack-converged".into(),
                    ActionStatus::Pending
                ),
            ]
        );
        assert!(
            plans[1].actions[1]
                .detail
                .starts_with("after image (chapter-02), which this plan applies first"),
            "{}",
            plans[1].actions[1].detail
        );
        assert_eq!(plans[1].exit(), Exit::Pending);
        // Without the earlier chapter in the plan, the same failure is a failure.
        let alone = engine_for(&s).plan(&[s.chapters[2]], false).unwrap();
        assert_eq!(alone[0].actions[1].status, ActionStatus::Failed);
        assert_eq!(alone[0].exit(), Exit::Error);
    }

    #[test]
    fn no_deps_refuses_unsatisfied_needs_and_a_cycle_is_named() {
        let s = setup();
        let err = engine_for(&s)
            .up(
                &[s.chapters[2]],
                &UpOptions {
                    no_deps: true,
                    ..up_options()
                },
            )
            .unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("needed chapters are not satisfied: chapter-01, chapter-02"),
            "{err:#}"
        );
        assert!(s.world.borrow().done.is_empty(), "nothing applied");
        let a = manifest(7, "a", &["b"]);
        let b = manifest(8, "b", &["a"]);
        let err = Engine::new(s.project, "local", s.ui)
            .unwrap()
            .with_catalog(vec![a, b], |_| Vec::new())
            .plan(&[a], true)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("cycle: 07-a → 08-b → 07-a"),
            "{err:#}"
        );
    }

    #[test]
    fn up_checks_each_action_once_unless_something_it_needs_was_applied() {
        let s = setup();
        s.world.borrow_mut().done.insert("config".into());
        let engine = engine_for(&s);
        let done = engine.up(&[s.chapters[2]], &up_options()).unwrap();
        let checks = s.world.borrow().checks.clone();
        // Satisfied: one check for the whole run (plan, plan under the lock, the step).
        assert_eq!(checks["config"], 1);
        // Applied without needs: checked once, then verified once.
        assert_eq!(checks["swarm-mode"], 2);
        assert_eq!(checks["image"], 2);
        // Needs swarm-mode and image: checked in the plan, again after each of them applied
        // (the first apply makes the cached answer stale), then verified.
        assert_eq!(checks["stack-converged"], 3);
        assert_eq!(
            statuses(&done)
                .into_iter()
                .map(|(_, id, st)| (id, st))
                .collect::<Vec<_>>(),
            [
                ("swarm-mode".into(), ActionStatus::Applied),
                ("image".into(), ActionStatus::Applied),
                ("config".into(), ActionStatus::Satisfied),
                ("stack-converged".into(), ActionStatus::Applied),
            ]
        );
        // The deploy lock: taken once, before the first swarm change that had work to do.
        assert_eq!(engine.locks_taken(), ["up"]);
        // No action asked for the Engine: the run's connection was never opened.
        assert!(!engine.docker.is_open());
        // The run's typed output: the services its converge updated.
        let converged: StackRecord = done[2].applied().unwrap().unwrap();
        assert_eq!(converged.updated, ["demo_app"]);
        // A second run has nothing to do: one check each, no lock.
        let second = engine_for(&s);
        let before = s.world.borrow().checks.clone();
        second.up(&[s.chapters[2]], &up_options()).unwrap();
        let after = s.world.borrow().checks.clone();
        for (id, n) in &after {
            assert_eq!(n - before[id], 1, "{id} checked more than once");
        }
        assert!(
            second.locks_taken().is_empty(),
            "{:?}",
            second.locks_taken()
        );
    }

    #[test]
    fn only_the_plan_before_up_writes_may_leave_a_preview_to_the_check_after() {
        let s = setup();
        s.world.borrow_mut().deferring.insert("image".into());
        s.world.borrow_mut().done.insert("config".into());
        let take = || std::mem::take(&mut s.world.borrow_mut().seen);
        // `plan` and `up --dry-run` show every check's own answer: nothing may defer.
        let engine = engine_for(&s);
        engine.plan(&[s.chapters[2]], true).unwrap();
        let dry = UpOptions {
            dry_run: true,
            ..up_options()
        };
        engine.up(&[s.chapters[2]], &dry).unwrap();
        let seen = take();
        assert!(
            !seen.is_empty() && seen.iter().all(|(_, after)| !after),
            "{seen:?}"
        );

        // A real run: its plan before writing may defer; the deferred answer is checked again
        // before anything is applied, every other answer still counts once for the run.
        let engine = engine_for(&s);
        let done = engine.up(&[s.chapters[2]], &up_options()).unwrap();
        let seen = take();
        let (before, after) = seen.split_at(4);
        assert!(before.iter().all(|(_, after)| *after), "{seen:?}");
        assert!(after.iter().all(|(_, after)| !after), "{seen:?}");
        let count = |id: &str| after.iter().filter(|(a, _)| a == id).count();
        assert_eq!(count("config"), 0, "{seen:?}");
        assert_eq!(
            count("image"),
            2,
            "its step's own check and its verify: {seen:?}"
        );
        assert_eq!(count("swarm-mode"), 1, "its verify only: {seen:?}");
        assert!(
            done.iter().all(|p| p.exit() == Exit::Ok),
            "{:?}",
            statuses(&done)
        );

        // A plan after a plan before writing (nothing written between) never shows a
        // deferred answer: the deferring check runs again, the others come from the cache.
        s.world.borrow_mut().done.remove("image");
        let engine = engine_for(&s);
        engine.plan_before_writing(&[s.chapters[1]], true).unwrap();
        take();
        let plans = engine.plan(&[s.chapters[1]], true).unwrap();
        assert_eq!(take(), [("image".to_string(), false)]);
        assert_eq!(plans[0].actions[0].detail, "make it");
    }

    #[test]
    fn records_are_typed_kept_through_failures_and_unreadable_ones_are_named() {
        let s = setup();
        engine_for(&s).up(&[s.chapters[2]], &up_options()).unwrap();
        let state = State::read(&s.project.state_dir()).unwrap();
        let recorded: StackRecord = state.find_record("local").unwrap().unwrap();
        assert_eq!(recorded.updated, ["demo_app"]);
        // A later failed apply keeps what the last apply recorded (the next run must know it).
        {
            let mut world = s.world.borrow_mut();
            world.done.remove("stack-converged");
            world.failing.insert("stack-converged".into());
        }
        assert!(engine_for(&s).up(&[s.chapters[2]], &up_options()).is_err());
        let state = State::read(&s.project.state_dir()).unwrap();
        let rec = &state.chapter("local", "03-top").unwrap().actions["stack-converged"];
        assert_eq!(rec.outcome, Outcome::Failed);
        assert_eq!(
            rec.typed::<StackRecord>().unwrap().unwrap().updated,
            ["demo_app"]
        );
        // A record whose field was renamed is an error naming the action, not "nothing updated".
        let mut state = state;
        let rec = state
            .chapter_mut("local", "03-top")
            .actions
            .get_mut("stack-converged")
            .unwrap();
        let data = rec.data.as_object_mut().unwrap();
        let updated = data.remove("updated").unwrap();
        data.insert("services_updated".into(), updated);
        let err = state.find_record::<StackRecord>("local").unwrap_err();
        assert!(format!("{err:#}").contains("stack-converged"), "{err:#}");
    }
}
