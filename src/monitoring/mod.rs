//! Chapters 11 and 12: the monitoring stack's files and its live APIs.
//!
//! `api.rs` talks to Prometheus and Alertmanager over HTTP (reqwest); `dashboards.rs` checks the
//! provisioned Grafana dashboards structurally; this file knows where the rendered files are and
//! which PromQL expressions they hold.

pub mod api;
pub mod dashboards;

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use regex::Regex;
use serde::Deserialize;

/// The monitoring stack file chapter 11 renders and converges.
pub const STACK_FILE: &str = "deploy/monitoring.yml";
pub const RULES_FILE: &str = "deploy/monitoring/rules/alerts.yml";
pub const RULES_TEST_FILE: &str = "deploy/monitoring/rules/alerts.test.yml";
pub const PROMETHEUS_FILE: &str = "deploy/monitoring/prometheus.yml";
pub const ALERTMANAGER_FILE: &str = "deploy/monitoring/alertmanager.yml";
pub const DATASOURCES_FILE: &str = "deploy/monitoring/grafana/datasources.yml";
pub const DASHBOARDS_DIR: &str = "deploy/monitoring/grafana/dashboards";
/// The services whose images no Debian suite packages: pulled where a registry answers,
/// otherwise reported blocked and left out of the converge.
pub const PULL_ONLY_SERVICES: &[&str] = &["grafana", "loki", "promtail"];

/// One alerting rule as `alerts.yml` writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Rule {
    pub alert: String,
    pub expr: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RuleGroup {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

/// The rule groups of a rendered `alerts.yml`.
pub fn rule_groups(text: &str) -> Result<Vec<RuleGroup>> {
    let file: RuleFile = serde_yaml_ng::from_str(text).context("parsing the alert rules")?;
    Ok(file.groups)
}

/// One PromQL expression and where it comes from (`rule AppDown`, `dashboard x panel "y"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    pub origin: String,
    pub expr: String,
}

/// Every expression of the rules and of the dashboards' panels.
pub fn expressions(rules: &str, dashboards: &[(String, String)]) -> Result<Vec<Expression>> {
    let mut out = Vec::new();
    for group in rule_groups(rules)? {
        for rule in group.rules {
            out.push(Expression {
                origin: format!("rule {}", rule.alert),
                expr: rule.expr,
            });
        }
    }
    for (name, text) in dashboards {
        let dashboard: serde_json::Value =
            serde_json::from_str(text).with_context(|| format!("parsing dashboard {name}"))?;
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(Expression {
                        origin: format!(
                            "dashboard {name} panel \"{}\"",
                            panel["title"].as_str().unwrap_or_default()
                        ),
                        expr: expr.to_string(),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The metric names an expression selects (`name{…}`), which must have series for the
/// expression to mean anything: `rate(x_total{a="b"}[5m]) > 1` → `x_total`.
pub fn metrics_of(expr: &str) -> BTreeSet<String> {
    let selector = Regex::new(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{").expect("static regex");
    selector
        .captures_iter(expr)
        .map(|c| c[1].to_string())
        .filter(|name| !matches!(name.as_str(), "by" | "without" | "on" | "ignoring"))
        .collect()
}

/// Where the monitoring stack's published ports answer: the Engine's own host (127.0.0.1 for
/// a local socket, the host of a `tcp://` or `ssh://` address).
pub fn api_host(docker_host: &str) -> String {
    let rest = docker_host
        .strip_prefix("tcp://")
        .or_else(|| docker_host.strip_prefix("ssh://"))
        .or_else(|| docker_host.strip_prefix("https://"))
        .or_else(|| docker_host.strip_prefix("http://"));
    let Some(rest) = rest else {
        return "127.0.0.1".into();
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = host.strip_prefix('[') {
        format!("[{}]", v6.split(']').next().unwrap_or_default())
    } else {
        host.split(':').next().unwrap_or_default().to_string()
    };
    if host.is_empty() {
        "127.0.0.1".into()
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_of_expressions() {
        let got = metrics_of(
            r#"sum by (service) (rate(coordination_http_requests_total{service="a", code=~"5.."}[5m])) / sum by (service) (rate(coordination_http_requests_total{service="a"}[5m])) > 0.05"#,
        );
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec!["coordination_http_requests_total"]
        );
        let got = metrics_of(
            r#"beam_cluster_peers{service="s"} < on (service) group_left () (count by (service) (up{job="swarm-tasks"} == 1) - 1)"#,
        );
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec!["beam_cluster_peers", "up"]
        );
    }

    #[test]
    fn api_hosts_follow_the_engine_address() {
        assert_eq!(api_host("unix:///var/run/docker.sock"), "127.0.0.1");
        assert_eq!(api_host("tcp://10.0.0.5:2376"), "10.0.0.5");
        assert_eq!(api_host("ssh://deploy@swarm1.example"), "swarm1.example");
        assert_eq!(
            api_host("ssh://deploy@swarm1.example:2222"),
            "swarm1.example"
        );
    }
}
