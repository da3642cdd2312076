//! Chapters 11 and 12: the monitoring stack's images, the stack itself, and proofs against its
//! live APIs (every app task a target with `up == 1`; rules and routing loaded; every rule and
//! panel expression answering).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::query_parameters::ListTasksOptions;

use super::record::ExpressionsRecord;
use super::{Action, ActionContext, Applied, Check};
use crate::config::Provider;
use crate::docker::{self, Daemon, images};
use crate::monitoring::{self, api::Api};
use crate::swarm::{self, stack::StackFile};

/// How often a wait asks again.
const POLL: Duration = Duration::from_secs(2);

fn prometheus(cx: &ActionContext) -> Result<Api> {
    let host = monitoring::api_host(&docker::host_for(cx.project, cx.env_name)?);
    Api::new(format!(
        "http://{host}:{}",
        cx.project.config.chapters.instrumentation.prometheus_port
    ))
}

fn alertmanager(cx: &ActionContext) -> Result<Api> {
    let host = monitoring::api_host(&docker::host_for(cx.project, cx.env_name)?);
    Api::new(format!(
        "http://{host}:{}",
        cx.project.config.chapters.instrumentation.alertmanager_port
    ))
}

fn verify_timeout(cx: &ActionContext) -> Result<Duration> {
    crate::config::validate::duration(&cx.project.config.chapters.instrumentation.verify_timeout)
        .map_err(|why| anyhow::anyhow!("chapters.instrumentation.verify_timeout {why}"))
}

/// Polls `check` until it is satisfied or `timeout` passes; the last check's words on failure.
fn wait_for(
    cx: &ActionContext,
    what: &str,
    timeout: Duration,
    check: impl Fn() -> Result<Check>,
) -> Result<String> {
    let started = Instant::now();
    let spinner = cx.ui.spinner(format!("waiting: {what}"));
    loop {
        let last = check();
        match last {
            Ok(Check::Satisfied(detail)) => {
                spinner.finish_and_clear();
                return Ok(format!(
                    "{detail} (after {:.1}s)",
                    started.elapsed().as_secs_f64()
                ));
            }
            other if started.elapsed() >= timeout => {
                spinner.finish_and_clear();
                let why = match other {
                    Ok(Check::Pending(d) | Check::Failed(d) | Check::Blocked(d)) => d,
                    Ok(Check::Satisfied(_)) => unreachable!(),
                    Err(e) => format!("{e:#}"),
                };
                bail!("{what}: not so after {}s: {why}", timeout.as_secs());
            }
            _ => std::thread::sleep(POLL),
        }
    }
}

/// Prometheus and Alertmanager on the Engine: pulled, else built from Debian's packages.
pub struct MonitoringImages;

impl Action for MonitoringImages {
    fn id(&self) -> String {
        "monitoring-images".into()
    }
    fn describe(&self) -> String {
        "Prometheus and Alertmanager images on the Engine (pulled, or built from Debian's packages)"
            .into()
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        let wanted = images::monitoring_images(&cx.project.config)?;
        let (rt, daemon) = cx.engine()?;
        let missing: Vec<String> = wanted
            .iter()
            .filter(|i| {
                rt.block_on(daemon.client.inspect_image(&i.reference))
                    .is_err()
            })
            .map(|i| i.reference.clone())
            .collect();
        Ok(if missing.is_empty() {
            Check::Satisfied(format!(
                "{} present",
                wanted
                    .iter()
                    .map(|i| i.reference.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            Check::Pending(format!("missing {}", missing.join(", ")))
        })
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        let outcomes = images::ensure_images(
            cx.project,
            cx.env_name,
            cx.ui,
            false,
            images::monitoring_images(&cx.project.config)?,
        )?;
        Ok(Applied {
            summary: outcomes
                .iter()
                .map(|o| format!("{} {:?}", o.image, o.action).to_lowercase())
                .collect::<Vec<_>>()
                .join(", "),
            data: super::record::to_data(&super::record::MonitoringImagesRecord(outcomes)),
            inputs_digest: None,
        })
    }
}

/// Leaves the `keys` services whose image this Engine does not have out of `file` (after a
/// pull, when `pull` carries the ui to say so), with the secrets, configs and volumes only they
/// use. Returns service key → image of what it left out.
pub fn leave_out_missing(
    file: &mut StackFile,
    keys: &[String],
    daemon: &Daemon,
    rt: &tokio::runtime::Runtime,
    pull: Option<&crate::output::Ui>,
) -> BTreeMap<String, String> {
    let mut missing = BTreeMap::new();
    for (key, service) in &file.services {
        if !keys.contains(key) {
            continue;
        }
        let present = || {
            rt.block_on(daemon.client.inspect_image(&service.image))
                .is_ok()
        };
        if present() {
            continue;
        }
        if let Some(ui) = pull {
            ui.detail(format!("pulling {}", service.image));
            if rt.block_on(images::pull(daemon, &service.image)).is_ok() && present() {
                continue;
            }
        }
        missing.insert(key.clone(), service.image.clone());
    }
    if missing.is_empty() {
        return missing;
    }
    file.services.retain(|key, _| !missing.contains_key(key));
    let used = |pick: &dyn Fn(&swarm::stack::Service) -> Vec<String>| -> BTreeSet<String> {
        file.services.values().flat_map(pick).collect()
    };
    let secrets = used(&|s| s.secrets.iter().map(|r| r.long().source).collect());
    let configs = used(&|s| s.configs.iter().map(|r| r.long().source).collect());
    let volumes = used(&|s| {
        s.volumes
            .iter()
            .filter_map(|v| swarm::stack::VolumeMount::parse(v).ok())
            .map(|m| m.source)
            .collect()
    });
    file.secrets.retain(|k, _| secrets.contains(k));
    file.configs.retain(|k, _| configs.contains(k));
    file.volumes.retain(|k, _| volumes.contains(k));
    missing
}

/// Grafana, Loki and Promtail: no Debian suite packages them, so without a registry that has
/// their images they cannot run here. Reported blocked (exit 3) — never waited for, never
/// faked — while the rest of the chapter applies.
pub struct PullOnlyImages;

impl Action for PullOnlyImages {
    fn id(&self) -> String {
        "pull-only-images".into()
    }
    fn describe(&self) -> String {
        "Grafana, Loki and Promtail running (their images come only from a registry)".into()
    }
    fn providers(&self) -> &'static [Provider] {
        &[Provider::Local]
    }
    fn needs(&self) -> &'static [&'static str] {
        &["stack-converged"]
    }
    fn optional(&self) -> bool {
        true
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        let text = cx.file(monitoring::STACK_FILE).with_context(|| {
            format!(
                "{} is missing\n  fix: beamops up chapter-11 renders it",
                monitoring::STACK_FILE
            )
        })?;
        let mut file = swarm::parse_stack_file(
            cx.project,
            cx.env_name,
            monitoring::STACK_FILE,
            &text,
            &BTreeMap::new(),
        )?;
        let (rt, daemon) = cx.engine()?;
        let keys: Vec<String> = monitoring::PULL_ONLY_SERVICES
            .iter()
            .map(|k| k.to_string())
            .collect();
        let missing = leave_out_missing(&mut file, &keys, daemon, rt, None);
        if !missing.is_empty()
            && let Some((need, chapter)) = cx.planned.pending_of(self.needs())
        {
            // That converge pulls them first: only after it is "no registry has them" known.
            return Ok(Check::Pending(format!(
                "after {need} ({chapter}), which this plan applies first and which pulls {} — not on the Engine now",
                missing.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        if missing.is_empty() {
            return Ok(Check::Satisfied(format!(
                "{} converged with the stack",
                monitoring::PULL_ONLY_SERVICES.join(", ")
            )));
        }
        Ok(Check::Blocked(format!(
            "image not available: {} — no registry answered and no Debian suite packages them; the services stay in {} for an Engine that can pull them, and are left out here",
            missing
                .iter()
                .map(|(service, image)| format!("{service} ({image})"))
                .collect::<Vec<_>>()
                .join(", "),
            monitoring::STACK_FILE
        )))
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        // Reached only when the check said pending, which it never does: the stack's apply
        // pulls and converges these services.
        let check = self.check(cx)?;
        bail!("pull-only-images has nothing to apply: {check:?}")
    }
}

/// Every app task (of the chapter 08 stack) a Prometheus target with `up == 1`.
pub struct PrometheusTargets;

impl PrometheusTargets {
    fn inspect(&self, cx: &ActionContext) -> Result<Check> {
        let service = format!("{}_app", cx.project.config.app.stack_name());
        let (rt, daemon) = cx.engine()?;
        let tasks = rt
            .block_on(daemon.client.list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([
                    ("service".to_string(), vec![service.clone()]),
                    ("desired-state".to_string(), vec!["running".to_string()]),
                ])),
            })))
            .with_context(|| format!("listing the tasks of {service}"))?;
        let running: Vec<String> = tasks
            .into_iter()
            .filter(|t| {
                t.status
                    .as_ref()
                    .and_then(|s| s.state)
                    .is_some_and(|s| s == bollard::models::TaskState::RUNNING)
            })
            .filter_map(|t| t.id)
            .collect();
        if running.is_empty() {
            return Ok(Check::Pending(format!("no running task of {service} yet")));
        }
        let api = prometheus(cx)?;
        let targets = match monitoring::api::task_targets(&api, "swarm-tasks") {
            Ok(t) => t,
            Err(e) => {
                return Ok(Check::Pending(format!(
                    "Prometheus at {} does not answer yet: {e:#}",
                    api.base
                )));
            }
        };
        let mut wrong = Vec::new();
        for task in &running {
            match targets.get(task) {
                None => wrong.push(format!("task {task}: not a target yet")),
                Some((health, error, url)) if health != "up" => wrong.push(format!(
                    "task {task}: {health} at {url}{}",
                    if error.is_empty() {
                        String::new()
                    } else {
                        format!(" ({error})")
                    }
                )),
                Some(_) => {}
            }
        }
        Ok(if wrong.is_empty() {
            Check::Satisfied(format!(
                "{} of {} running task(s) of {service} are targets with up == 1",
                running.len(),
                running.len()
            ))
        } else {
            Check::Pending(wrong.join("; "))
        })
    }
}

impl Action for PrometheusTargets {
    fn id(&self) -> String {
        "prometheus-targets".into()
    }
    fn describe(&self) -> String {
        "every app task a Prometheus target with up == 1 (Prometheus' HTTP API)".into()
    }
    fn providers(&self) -> &'static [Provider] {
        &[Provider::Local]
    }
    fn needs(&self) -> &'static [&'static str] {
        &["stack-converged"]
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        self.inspect(cx)
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        let summary = wait_for(
            cx,
            "every app task a target with up == 1",
            verify_timeout(cx)?,
            || self.inspect(cx),
        )?;
        Ok(Applied {
            summary,
            data: Default::default(),
            inputs_digest: None,
        })
    }
}

/// The rendered alert rules loaded in Prometheus and the rendered routing in Alertmanager,
/// as their APIs report them.
pub struct AlertingLoaded;

impl AlertingLoaded {
    fn inspect(&self, cx: &ActionContext) -> Result<Check> {
        let rules = cx
            .file(monitoring::RULES_FILE)
            .with_context(|| format!("{} is missing", monitoring::RULES_FILE))?;
        let wanted: BTreeSet<(String, String)> = monitoring::rule_groups(&rules)?
            .into_iter()
            .flat_map(|g| g.rules.into_iter().map(move |r| (g.name.clone(), r.alert)))
            .collect();
        let api = prometheus(cx)?;
        let data = match api.prometheus("/api/v1/rules", &[("type", "alert")]) {
            Ok(d) => d,
            Err(e) => {
                return Ok(Check::Pending(format!(
                    "Prometheus at {} does not answer yet: {e:#}",
                    api.base
                )));
            }
        };
        let mut loaded = BTreeSet::new();
        for group in data["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                if rule["health"] == "err" {
                    return Ok(Check::Failed(format!(
                        "rule {} does not evaluate: {}",
                        rule["name"], rule["lastError"]
                    )));
                }
                loaded.insert((
                    group["name"].as_str().unwrap_or_default().to_string(),
                    rule["name"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        let missing: Vec<String> = wanted
            .difference(&loaded)
            .map(|(g, r)| format!("{g}/{r}"))
            .collect();
        if !missing.is_empty() {
            return Ok(Check::Pending(format!(
                "rules not loaded in Prometheus yet: {}",
                missing.join(", ")
            )));
        }
        let routing = cx
            .file(monitoring::ALERTMANAGER_FILE)
            .with_context(|| format!("{} is missing", monitoring::ALERTMANAGER_FILE))?;
        let routing: serde_json::Value = serde_yaml_ng::from_str(&routing)
            .with_context(|| format!("parsing {}", monitoring::ALERTMANAGER_FILE))?;
        let am = alertmanager(cx)?;
        let status = match am.get("/api/v2/status", &[]) {
            Ok(s) => s,
            Err(e) => {
                return Ok(Check::Pending(format!(
                    "Alertmanager at {} does not answer yet: {e:#}",
                    am.base
                )));
            }
        };
        let live: serde_json::Value =
            serde_yaml_ng::from_str(status["config"]["original"].as_str().unwrap_or_default())
                .context("parsing Alertmanager's loaded configuration")?;
        let receivers = |v: &serde_json::Value| -> BTreeSet<String> {
            v["receivers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["name"].as_str().map(String::from))
                .collect()
        };
        // Alertmanager shows a webhook's URL as `<secret>`: compared where it shows it.
        let webhooks = |v: &serde_json::Value| -> Vec<String> {
            v["receivers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["webhook_configs"].as_array().cloned().unwrap_or_default())
                .map(|w| w["url"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        let (live_hooks, wanted_hooks) = (webhooks(&live), webhooks(&routing));
        let hooks_agree = live_hooks.len() == wanted_hooks.len()
            && live_hooks
                .iter()
                .zip(&wanted_hooks)
                .all(|(live, wanted)| live == "<secret>" || live == wanted);
        if live["route"]["receiver"] != routing["route"]["receiver"]
            || receivers(&live) != receivers(&routing)
            || !hooks_agree
        {
            return Ok(Check::Pending(format!(
                "Alertmanager's loaded routing differs from {} (route to {}, receivers {:?})",
                monitoring::ALERTMANAGER_FILE,
                live["route"]["receiver"],
                receivers(&live)
            )));
        }
        Ok(Check::Satisfied(format!(
            "{} alert rule(s) loaded in Prometheus; Alertmanager routes to {}",
            wanted.len(),
            routing["route"]["receiver"].as_str().unwrap_or_default()
        )))
    }
}

impl Action for AlertingLoaded {
    fn id(&self) -> String {
        "alerting-loaded".into()
    }
    fn describe(&self) -> String {
        "alert rules loaded in Prometheus and routing in Alertmanager (their APIs say so)".into()
    }
    fn providers(&self) -> &'static [Provider] {
        &[Provider::Local]
    }
    fn needs(&self) -> &'static [&'static str] {
        &["stack-converged"]
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        self.inspect(cx)
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        let summary = wait_for(cx, "rules and routing loaded", verify_timeout(cx)?, || {
            self.inspect(cx)
        })?;
        Ok(Applied {
            summary,
            data: Default::default(),
            inputs_digest: None,
        })
    }
}

/// Every rule's and every dashboard panel's PromQL evaluated on the live Prometheus: it must
/// evaluate, and every metric it reads must have series; an expression that selects nothing
/// right now (an alert that is not firing) is named, with its metrics.
pub struct ExpressionsAnswer;

impl ExpressionsAnswer {
    fn inspect(&self, cx: &ActionContext) -> Result<(Check, Option<ExpressionsRecord>)> {
        let rules = cx
            .file(monitoring::RULES_FILE)
            .with_context(|| format!("{} is missing", monitoring::RULES_FILE))?;
        let mut dashboards = Vec::new();
        for name in ["coordination", "beam"] {
            let path = format!("{}/{name}.json", monitoring::DASHBOARDS_DIR);
            if let Some(text) = cx.file(&path) {
                dashboards.push((name.to_string(), text));
            }
        }
        let expressions = monitoring::expressions(&rules, &dashboards)?;
        let api = prometheus(cx)?;
        if !api.ready() {
            return Ok((
                Check::Pending(format!("Prometheus at {} does not answer yet", api.base)),
                None,
            ));
        }
        let mut failing = Vec::new();
        let mut waiting = BTreeMap::<String, Vec<String>>::new();
        let mut empty = Vec::new();
        let mut counts = BTreeMap::new();
        let mut metric_counts = BTreeMap::new();
        for e in &expressions {
            for metric in monitoring::metrics_of(&e.expr) {
                let n = match metric_counts.get(&metric) {
                    Some(n) => *n,
                    None => {
                        let n = api
                            .query(&format!("count({{__name__=\"{metric}\"}})"))?
                            .first()
                            .and_then(|s| s["value"][1].as_str()?.parse::<u64>().ok())
                            .unwrap_or(0);
                        metric_counts.insert(metric.clone(), n);
                        n
                    }
                };
                if n == 0 {
                    waiting.entry(metric).or_default().push(e.origin.clone());
                }
            }
            match api.query(&e.expr) {
                Ok(series) => {
                    counts.insert(e.origin.clone(), series.len());
                    if series.is_empty() {
                        empty.push(e.origin.clone());
                    }
                }
                Err(err) => failing.push(format!("{}: {err:#}", e.origin)),
            }
        }
        let data = Some(ExpressionsRecord {
            expressions: expressions.len(),
            series: counts,
            empty: empty.clone(),
            metrics: metric_counts,
        });
        if !failing.is_empty() {
            return Ok((Check::Failed(failing.join("; ")), data));
        }
        if !waiting.is_empty() {
            return Ok((
                Check::Pending(
                    waiting
                        .iter()
                        .map(|(metric, users)| {
                            format!("no series of {metric} yet (read by {})", users.join(", "))
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                data,
            ));
        }
        Ok((
            Check::Satisfied(format!(
                "{} expression(s) evaluated, every metric they read has series; {} select nothing right now (alerts not firing): {}",
                expressions.len(),
                empty.len(),
                if empty.is_empty() {
                    "none".to_string()
                } else {
                    empty.join(", ")
                }
            )),
            data,
        ))
    }
}

impl Action for ExpressionsAnswer {
    fn id(&self) -> String {
        "expressions-answer".into()
    }
    fn describe(&self) -> String {
        "every alert rule's and dashboard panel's PromQL evaluated on the live Prometheus".into()
    }
    fn providers(&self) -> &'static [Provider] {
        &[Provider::Local]
    }
    fn needs(&self) -> &'static [&'static str] {
        &["stack-converged", "alerting-loaded", "prometheus-targets"]
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        Ok(self.inspect(cx)?.0)
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        let summary = wait_for(
            cx,
            "every expression's metrics have series",
            verify_timeout(cx)?,
            || Ok(self.inspect(cx)?.0),
        )?;
        let (_, data) = self.inspect(cx)?;
        Ok(Applied {
            summary,
            data: data.map(|r| super::record::to_data(&r)).unwrap_or_default(),
            inputs_digest: None,
        })
    }
}

/// Chapter 11 on a Phoenix project: PromEx is a dependency, started before the Repo, and its
/// plug is in the endpoint. beamops writes `prom_ex.ex` once but never edits mix.exs,
/// application.ex or the endpoint (as `libcluster-wired` for chapter 09): it names each line.
pub struct PromExWired;

impl PromExWired {
    /// None for a project without Phoenix (the app serves its own `/metrics`); else what is missing.
    fn missing(cx: &ActionContext) -> Option<Vec<String>> {
        let deps = crate::render::mix_deps(&cx.project.root);
        if !deps.iter().any(|d| d == "phoenix") {
            return None;
        }
        let otp_app = &cx.project.config.app.otp_app;
        let module = crate::render::elixir_module(otp_app);
        let read = |relative: &str| std::fs::read_to_string(cx.path(relative)).unwrap_or_default();
        let mut missing = Vec::new();
        if !deps.iter().any(|d| d == "prom_ex") {
            missing.push("add {:prom_ex, \"~> 1.11\"} to deps in mix.exs".to_string());
        }
        let application = format!("lib/{otp_app}/application.ex");
        let text = read(&application);
        let prom_ex = format!("{module}.PromEx");
        // The child itself, not `PromEx.CoordinationPlugin` or another module under it.
        let started = text.match_indices(&prom_ex).find(|(at, _)| {
            !text[at + prom_ex.len()..]
                .chars()
                .next()
                .is_some_and(|c| c == '.' || c.is_alphanumeric())
        });
        match started {
            None => missing.push(format!(
                "add {prom_ex} to the children in {application}, before {module}.Repo"
            )),
            Some((at, _)) => {
                if text
                    .find(&format!("{module}.Repo"))
                    .is_some_and(|repo| repo < at)
                {
                    missing.push(format!(
                        "start {prom_ex} before {module}.Repo in {application}: the Ecto plugin attaches its telemetry handlers when PromEx starts, so started after the Repo its panels stay empty"
                    ));
                }
            }
        }
        let endpoint = format!("lib/{otp_app}_web/endpoint.ex");
        if !read(&endpoint).contains("PromEx.Plug") {
            missing.push(format!(
                "add `plug PromEx.Plug, prom_ex_module: {prom_ex}` to {endpoint}, before the router"
            ));
        }
        Some(missing)
    }
}

impl Action for PromExWired {
    fn id(&self) -> String {
        "prom-ex-wired".into()
    }
    fn describe(&self) -> String {
        "a Phoenix project depends on PromEx, starts it before the Repo and serves its plug".into()
    }
    fn check(&self, cx: &ActionContext) -> Result<Check> {
        Ok(match Self::missing(cx) {
            None => {
                Check::Satisfied("not a Phoenix project: the app serves its own /metrics".into())
            }
            Some(missing) if missing.is_empty() => {
                Check::Satisfied("PromEx started before the Repo, its plug in the endpoint".into())
            }
            Some(missing) => Check::Failed(missing.join("; ")),
        })
    }
    fn apply(&self, cx: &ActionContext) -> Result<Applied> {
        match Self::missing(cx) {
            Some(missing) if !missing.is_empty() => bail!(
                "PromEx is not wired into the project (beamops does not edit mix.exs, application.ex or the endpoint):\n  fix: {}",
                missing.join("\n  fix: ")
            ),
            _ => Ok(Applied {
                summary: "nothing to wire".into(),
                ..Default::default()
            }),
        }
    }
}
