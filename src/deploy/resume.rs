//! Runs that were killed: a deploy or rollback interrupted after it changed the services left
//! Swarm's update unjudged (still rolling out, in its monitor window, or rolled back while
//! nobody watched) and its record `in-progress`. The next deploy or rollback judges that first,
//! under the deploy lock: it waits for Swarm's verdict through the whole monitor window, records
//! it, and a rollback is that run's failure (exit 5). A new update — even of labels only — over
//! an update in progress would replace it, and Swarm would never roll it back.

use std::time::Duration;

use anyhow::{Context, Result};
use bollard::models::ServiceUpdateStatusStateEnum as UpdateState;
use bollard::query_parameters::ListServicesOptions;

use super::diagnose;
use super::record::{self, DeployRecord, Outcome};
use crate::docker::Daemon;
use crate::exit::Failure;
use crate::output::Ui;
use crate::project::Project;
use crate::state::{self, State};
use crate::swarm::{self, api::SwarmApi, converge, job, spec};

/// The services of a stack on the swarm, one-off jobs left out.
pub async fn stack_services(daemon: &Daemon, stack: &str) -> Result<Vec<String>> {
    let listed = daemon
        .client
        .list_services(Some(ListServicesOptions {
            filters: Some(std::collections::HashMap::from([(
                "label".to_string(),
                vec![format!("{}={stack}", spec::NAMESPACE_LABEL)],
            )])),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("listing the services of stack {stack}"))?;
    Ok(listed
        .into_iter()
        .filter_map(|s| s.spec)
        .filter(|s| {
            s.mode
                .as_ref()
                .is_none_or(|m| m.replicated_job.is_none() && m.global_job.is_none())
        })
        .filter_map(|s| s.name)
        .collect())
}

/// Release jobs a killed deploy left behind (`<stack>_release-<release>`). Only called under
/// the deploy lock, so no other run's job is running.
pub async fn remove_leftover_jobs(daemon: &Daemon, stack: &str, ui: &Ui) -> Result<()> {
    let listed = daemon
        .client
        .list_services(Some(ListServicesOptions {
            filters: Some(std::collections::HashMap::from([(
                "label".to_string(),
                vec![
                    format!("{}={stack}", spec::NAMESPACE_LABEL),
                    super::release::JOB_LABEL.to_string(),
                ],
            )])),
            ..Default::default()
        }))
        .await
        .with_context(|| format!("listing the release jobs of stack {stack}"))?;
    for name in listed
        .into_iter()
        .filter_map(|s| s.spec.and_then(|s| s.name))
    {
        ui.note(format!(
            "removing the release job {name} an interrupted deploy left"
        ));
        job::remove(daemon, &name).await?;
    }
    Ok(())
}

/// Judges what killed runs left: waits out an update in progress, then settles every
/// `in-progress` record by what the swarm shows. Returns one line per judged run; a rollback
/// (watched now, or found for a run recorded here) is `Failure::RolledBack`.
pub async fn judge_interrupted(
    project: &Project,
    env: &str,
    daemon: &Daemon,
    ui: &Ui,
    timeout: Duration,
) -> Result<Vec<String>> {
    let stack = project.config.app.stack_name();
    let services = stack_services(daemon, stack).await?;
    let open: Vec<DeployRecord> =
        record::in_progress(&record::history(&State::read(&project.state_dir())?, env)?)
            .into_iter()
            .cloned()
            .collect();
    let mut judged = Vec::new();
    // Swarm's own verdict first: whoever started the update, it is watched to its end. What
    // the app runs now is the release being rolled out: after an automatic rollback Swarm
    // drops the previous spec, so it is read before.
    let busy = converge::updates_in_progress(daemon, &services).await?;
    let (rolling_out, _) = swarm::live_releases(daemon, stack).await?;
    let mut watched_rollback = None;
    if !busy.is_empty() {
        ui.note(format!(
            "an interrupted update of {} is still in progress; watching it to Swarm's verdict (update_config.monitor) before anything else",
            busy.join(", ")
        ));
        let judged = converge::wait_unjudged(daemon, &busy, ui, timeout).await?;
        if let Some((name, message)) = judged.first() {
            ui.note("Swarm rolled the interrupted update back; waiting until the previous release serves");
            let waited = super::wait_rolled_back(daemon, &services, timeout).await;
            watched_rollback = Some((
                format!(
                    "{name}: the update failed while Swarm watched it and it rolled back: {message}"
                ),
                waited,
            ));
        }
    }

    let seen = observe(
        daemon,
        stack,
        &open,
        rolling_out.clone(),
        watched_rollback.is_some(),
    )
    .await?;
    let mut failure: Option<String> = None;
    let mut settled_rollback = false;
    for open in &open {
        let (outcome, detail) = match verdict(open, &seen) {
            Verdict::Succeeded => (
                Outcome::Succeeded,
                "interrupted; Swarm completed its update, watched through update_config.monitor"
                    .to_string(),
            ),
            // Created by that run (a first deploy): no update to judge, the tasks are.
            Verdict::TasksDecide => match converge::wait(daemon, &services, ui, timeout).await {
                Ok(()) => (
                    Outcome::Succeeded,
                    "interrupted; the services it created run healthy".to_string(),
                ),
                Err(e) => (Outcome::Failed, format!("interrupted; {e:#}")),
            },
            Verdict::Failed(detail) => (Outcome::Failed, detail),
            Verdict::RolledBack => {
                let detail = rollback_detail(
                    daemon,
                    &services,
                    &open.release,
                    &open.image,
                    watched_rollback
                        .as_ref()
                        .map(|(m, w)| (m.as_str(), w.as_ref().err())),
                )
                .await;
                settled_rollback = true;
                failure = Some(detail.clone());
                (Outcome::RolledBack, detail)
            }
        };
        judged.push(format!(
            "{} ({} started {}): {}",
            open.release,
            match open.kind {
                record::Kind::Deploy => "deploy",
                record::Kind::Rollback => "rollback",
            },
            open.started_at,
            match outcome {
                Outcome::Succeeded => "succeeded",
                Outcome::RolledBack => "rolled back",
                _ => "failed",
            }
        ));
        settle(project, env, open, outcome, &detail)?;
    }
    // A rollback watched now of a run this checkout has no record of (a fresh clone): still
    // this run's failure to report, and recorded so.
    if let Some((message, waited)) = &watched_rollback
        && !settled_rollback
    {
        let (release, image, git_sha) = rolling_out
            .as_ref()
            .map(|b| (b.release.clone(), b.image.clone(), b.git_sha.clone()))
            .unwrap_or_default();
        let detail = rollback_detail(
            daemon,
            &services,
            &release,
            &image,
            Some((message.as_str(), waited.as_ref().err())),
        )
        .await;
        let now = state::now_rfc3339();
        let entry = DeployRecord {
            release,
            kind: record::Kind::Deploy,
            outcome: Outcome::RolledBack,
            image,
            image_id: None,
            git_sha,
            spec_digest: String::new(),
            started_at: now.clone(),
            at: now,
            seconds: 0.0,
            detail: Some(detail.clone()),
        };
        let dir = project.state_dir();
        let mut st = State::read(&dir)?;
        record::push(&mut st, env, entry)?;
        st.write(&dir)?;
        failure = Some(detail);
    }
    for line in &judged {
        ui.note(format!("judged an interrupted run: {line}"));
    }
    match failure {
        Some(detail) => Err(Failure::RolledBack(format!(
            "{detail}\n  the interrupted release was never good; nothing new was deployed\n  fix: correct the release, commit, and `beamops deploy {env}` again"
        ))
        .into()),
        None => Ok(judged),
    }
}

/// What the swarm shows about the runs a killed deploy left `in-progress`, read once: the
/// input of [`verdict`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    /// The release the app service runs now.
    pub live: Option<swarm::LiveRelease>,
    /// The release it ran before this run watched an update to its end (what was being rolled
    /// out, when Swarm then rolled it back).
    pub rolling_out: Option<swarm::LiveRelease>,
    /// This run watched Swarm roll an interrupted update back.
    pub watched_rollback: bool,
    /// The app service's update status.
    pub app_state: Option<(UpdateState, String)>,
    /// Images (of the open records) some task of the app service ran, dead tasks included;
    /// only asked when the app service was rolled back.
    pub ran: Vec<String>,
}

/// What the swarm shows, for [`verdict`].
pub(crate) async fn observe(
    daemon: &impl SwarmApi,
    stack: &str,
    open: &[DeployRecord],
    rolling_out: Option<swarm::LiveRelease>,
    watched_rollback: bool,
) -> Result<Seen> {
    let (live, _) = swarm::live_releases(daemon, stack).await?;
    let app = spec::scoped(stack, "app");
    let app_state = converge::update_state(daemon, &app).await?;
    let mut seen = Seen {
        live,
        rolling_out,
        watched_rollback,
        app_state,
        ran: Vec::new(),
    };
    if seen.rolled_back() {
        for record in open {
            if ran_image(daemon, &app, &record.image).await {
                seen.ran.push(record.image.clone());
            }
        }
    }
    Ok(seen)
}

impl Seen {
    fn rolled_back(&self) -> bool {
        matches!(
            self.app_state.as_ref().map(|(s, _)| *s),
            Some(
                UpdateState::ROLLBACK_STARTED
                    | UpdateState::ROLLBACK_COMPLETED
                    | UpdateState::ROLLBACK_PAUSED
            )
        )
    }
}

/// How an interrupted run ended, as far as the swarm tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its release is live and Swarm completed the update (through the monitor window).
    Succeeded,
    /// Its release is live with no update to judge (that run created the services): whether
    /// the tasks run healthy now decides.
    TasksDecide,
    Failed(String),
    /// Swarm rolled its release back (watched now, or found rolled back with a task that ran it).
    RolledBack,
}

/// The decision for one `in-progress` record: pure, over what [`observe`] read.
pub(crate) fn verdict(open: &DeployRecord, seen: &Seen) -> Verdict {
    let is = |r: &Option<swarm::LiveRelease>| {
        r.as_ref()
            .is_some_and(|r| r.release == open.release && r.image == open.image)
    };
    let rolled_back_now = seen.watched_rollback && is(&seen.rolling_out);
    if !rolled_back_now && is(&seen.live) {
        return match seen.app_state.as_ref() {
            Some((UpdateState::COMPLETED, _)) => Verdict::Succeeded,
            None => Verdict::TasksDecide,
            Some((state, message)) => {
                Verdict::Failed(format!("interrupted; Swarm's update is {state}: {message}"))
            }
        };
    }
    if rolled_back_now || (seen.rolled_back() && seen.ran.contains(&open.image)) {
        return Verdict::RolledBack;
    }
    Verdict::Failed("interrupted before the services ran it".to_string())
}

/// Whether a task of the service ever ran the image (Swarm keeps a few dead tasks per slot).
async fn ran_image(daemon: &impl SwarmApi, service: &str, image: &str) -> bool {
    daemon
        .tasks(service)
        .await
        .unwrap_or_default()
        .iter()
        .any(|t| {
            t.spec
                .as_ref()
                .and_then(|s| s.container_spec.as_ref())
                .and_then(|c| c.image.as_deref())
                .is_some_and(|i| i == image || i.starts_with(&format!("{image}@")))
        })
}

/// The rollback's detail: which release, whether the old one serves again, and the task Swarm
/// blamed with its failed health check and logs.
async fn rollback_detail(
    daemon: &Daemon,
    services: &[String],
    release: &str,
    image: &str,
    watched: Option<(&str, Option<&anyhow::Error>)>,
) -> String {
    let mut failing = Vec::new();
    for service in services {
        let message = converge::update_state(daemon, service)
            .await
            .ok()
            .flatten()
            .map(|(_, m)| m);
        if let Some(task) = diagnose::failing_task(daemon, service, image, message.as_deref()).await
        {
            failing.push(task);
        }
    }
    format!(
        "{release}: {image} was rolled back by Swarm{}\n{}",
        match watched {
            Some((_, None)) => "; the previous release serves again".to_string(),
            Some((_, Some(e))) => format!("; the rollback has not converged: {e:#}"),
            None => " while no beamops run watched it".to_string(),
        },
        if failing.is_empty() {
            watched.map(|(m, _)| m.to_string()).unwrap_or_default()
        } else {
            failing.join("\n")
        }
    )
}

/// Replaces an in-progress record with its verdict.
fn settle(
    project: &Project,
    env: &str,
    open: &DeployRecord,
    outcome: Outcome,
    detail: &str,
) -> Result<()> {
    let mut entry = open.clone();
    entry.outcome = outcome;
    entry.at = state::now_rfc3339();
    entry.detail = Some(detail.to_string());
    let dir = project.state_dir();
    let mut st = State::read(&dir)?;
    record::push(&mut st, env, entry)?;
    st.write(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::fake::FakeSwarm;
    use crate::swarm::stack::StackFile;
    use std::collections::BTreeMap;

    const STACK: &str = "demo";

    /// A deploy of `release` (image `example/app:<release>`) as `roll_out` does it: the real
    /// converge over the fake swarm. Err when Swarm rolled it back.
    fn deploy(swarm: &FakeSwarm, release: &str) -> Result<()> {
        let text = format!(
            r#"
services:
  app:
    image: example/app:{release}
    deploy:
      replicas: 2
      update_config: {{failure_action: rollback, monitor: 5s}}
      labels: {{beamops.release: "{release}", beamops.git_sha: "sha-{release}"}}
"#
        );
        let file = StackFile::parse(
            std::path::Path::new("/p/deploy/stack.yml"),
            &text,
            &BTreeMap::new(),
        )?;
        let ui = crate::output::Ui::new(crate::output::Format::Json, true, false);
        crate::docker::runtime()?
            .block_on(converge::converge(
                swarm,
                STACK,
                &file,
                &ui,
                Duration::from_millis(700),
                &BTreeMap::new(),
            ))
            .map(|_| ())
    }

    fn open(release: &str) -> DeployRecord {
        DeployRecord {
            release: release.into(),
            kind: record::Kind::Deploy,
            outcome: Outcome::InProgress,
            image: format!("example/app:{release}"),
            image_id: None,
            git_sha: format!("sha-{release}"),
            spec_digest: String::new(),
            started_at: "2026-11-30T10:00:00Z".into(),
            at: "2026-11-30T10:00:00Z".into(),
            seconds: 0.0,
            detail: None,
        }
    }

    fn live(release: &str) -> swarm::LiveRelease {
        swarm::LiveRelease {
            release: release.into(),
            git_sha: format!("sha-{release}"),
            image: format!("example/app:{release}"),
        }
    }

    type Kill = fn(&FakeSwarm);
    /// (case, what the killed run left, the open records' releases, whether this run watched
    /// a rollback, the release being rolled out before it, the verdicts).
    type Row<'a> = (
        &'a str,
        Kill,
        Vec<&'a str>,
        bool,
        Option<&'a str>,
        Vec<Verdict>,
    );

    /// What a killed run left on the swarm → the verdict on its `in-progress` record(s).
    #[test]
    fn a_killed_runs_record_is_judged_by_what_the_swarm_shows() {
        let cases: Vec<Row> = vec![
            (
                "the update to r2 completed after the kill",
                |s| {
                    deploy(s, "r1").unwrap();
                    deploy(s, "r2").unwrap();
                },
                vec!["r2"],
                false,
                None,
                vec![Verdict::Succeeded],
            ),
            (
                "a first deploy created the services: its tasks decide",
                |s| deploy(s, "r1").unwrap(),
                vec!["r1"],
                false,
                None,
                vec![Verdict::TasksDecide],
            ),
            (
                "Swarm rolled r2 back while no run watched; r3 never reached the services",
                |s| {
                    deploy(s, "r1").unwrap();
                    s.fail_image("example/app:r2");
                    deploy(s, "r2").unwrap_err();
                },
                vec!["r2", "r3"],
                false,
                None,
                vec![
                    Verdict::RolledBack,
                    Verdict::Failed("interrupted before the services ran it".into()),
                ],
            ),
            (
                "killed before any service changed",
                |s| {
                    deploy(s, "r1").unwrap();
                    deploy(s, "r1b").unwrap();
                },
                vec!["r2"],
                false,
                None,
                vec![Verdict::Failed(
                    "interrupted before the services ran it".into(),
                )],
            ),
            (
                "Swarm paused the update",
                |s| {
                    deploy(s, "r1").unwrap();
                    deploy(s, "r2").unwrap();
                    s.set_update_status("demo_app", "paused", "update paused due to failure");
                },
                vec!["r2"],
                false,
                None,
                vec![Verdict::Failed(
                    "interrupted; Swarm's update is paused: update paused due to failure".into(),
                )],
            ),
            (
                "this run watched Swarm roll the interrupted r2 back",
                |s| {
                    deploy(s, "r1").unwrap();
                    s.fail_image("example/app:r2");
                    deploy(s, "r2").unwrap_err();
                },
                vec!["r2"],
                true,
                Some("r2"),
                vec![Verdict::RolledBack],
            ),
        ];
        for (name, kill, records, watched, rolling_out, expected) in cases {
            let swarm = FakeSwarm::new();
            swarm.put_image("example/app:r1", "sha256:r1");
            swarm.put_image("example/app:r1b", "sha256:r1b");
            swarm.put_image("example/app:r2", "sha256:r2");
            kill(&swarm);
            let open: Vec<DeployRecord> = records.iter().map(|r| open(r)).collect();
            let seen = crate::docker::runtime()
                .unwrap()
                .block_on(observe(
                    &swarm,
                    STACK,
                    &open,
                    rolling_out.map(live),
                    watched,
                ))
                .unwrap();
            let verdicts: Vec<Verdict> = open.iter().map(|o| verdict(o, &seen)).collect();
            assert_eq!(verdicts, expected, "{name}: {seen:?}");
        }
    }
}
