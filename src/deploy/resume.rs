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
use crate::swarm::{self, converge, job, spec};

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

    let (live, _) = swarm::live_releases(daemon, stack).await?;
    let app = spec::scoped(stack, "app");
    let app_state = converge::update_state(daemon, &app).await?;
    let rolled_back_state = matches!(
        app_state.as_ref().map(|(s, _)| *s),
        Some(
            UpdateState::ROLLBACK_STARTED
                | UpdateState::ROLLBACK_COMPLETED
                | UpdateState::ROLLBACK_PAUSED
        )
    );
    let mut failure: Option<String> = None;
    let mut settled_rollback = false;
    for open in &open {
        let is = |r: &Option<swarm::LiveRelease>| {
            r.as_ref()
                .is_some_and(|r| r.release == open.release && r.image == open.image)
        };
        let rolled_back_now = watched_rollback.is_some() && is(&rolling_out);
        let (outcome, detail) = if !rolled_back_now && is(&live) {
            match app_state.as_ref().map(|(s, _)| *s) {
                Some(UpdateState::COMPLETED) => (
                    Outcome::Succeeded,
                    "interrupted; Swarm completed its update, watched through update_config.monitor".to_string(),
                ),
                // Created by that run (a first deploy): no update to judge, the tasks are.
                None => match converge::wait(daemon, &services, ui, timeout).await {
                    Ok(()) => (
                        Outcome::Succeeded,
                        "interrupted; the services it created run healthy".to_string(),
                    ),
                    Err(e) => (Outcome::Failed, format!("interrupted; {e:#}")),
                },
                Some(state) => (
                    Outcome::Failed,
                    format!(
                        "interrupted; Swarm's update is {state}: {}",
                        app_state.as_ref().map(|(_, m)| m.as_str()).unwrap_or("")
                    ),
                ),
            }
        } else if rolled_back_now
            || (rolled_back_state && ran_image(daemon, &app, &open.image).await)
        {
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
        } else {
            (
                Outcome::Failed,
                "interrupted before the services ran it".to_string(),
            )
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

/// Whether a task of the service ever ran the image (Swarm keeps a few dead tasks per slot).
async fn ran_image(daemon: &Daemon, service: &str, image: &str) -> bool {
    crate::swarm::logs::tasks(daemon, service)
        .await
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
