//! Prometheus' and Alertmanager's HTTP APIs, as the checks of chapters 11 and 12 read them.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::exit::Failure;

/// One HTTP API (Prometheus or Alertmanager) at `base`, e.g. `http://127.0.0.1:9090`.
pub struct Api {
    pub base: String,
    client: reqwest::blocking::Client,
}

impl Api {
    pub fn new(base: String) -> Result<Api> {
        let client = crate::http::client()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Api { base, client })
    }

    /// GET `path` with `query`, as JSON. A refused connection is an error naming the address.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .client
            .get(&url)
            .query(query)
            .send()
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .with_context(|| format!("GET {url}: the answer is not JSON"))?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {body}");
        }
        Ok(body)
    }

    /// Prometheus' `/api/v1/…`: the `data` of a `status: success` answer.
    pub fn prometheus(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let body = self.get(path, query)?;
        if body["status"] != "success" {
            bail!(
                "{}{path}: {} {}",
                self.base,
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or_default()
            );
        }
        Ok(body["data"].clone())
    }

    /// An instant query: the result vector.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.prometheus("/api/v1/query", &[("query", expr)])?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// True when the API answers at all (`/-/ready`).
    pub fn ready(&self) -> bool {
        self.client
            .get(format!("{}/-/ready", self.base))
            .send()
            .is_ok_and(|r| r.status().is_success())
    }
}

/// Prometheus' targets of `job`, by task id: (health, last error, scrape URL).
pub fn task_targets(
    api: &Api,
    job: &str,
) -> Result<std::collections::BTreeMap<String, (String, String, String)>> {
    let data = api.prometheus("/api/v1/targets", &[("state", "active")])?;
    let mut out = std::collections::BTreeMap::new();
    for target in data["activeTargets"].as_array().into_iter().flatten() {
        if target["labels"]["job"] != job {
            continue;
        }
        let Some(task) = target["labels"]["task"].as_str() else {
            continue;
        };
        out.insert(
            task.to_string(),
            (
                target["health"].as_str().unwrap_or("unknown").to_string(),
                target["lastError"].as_str().unwrap_or_default().to_string(),
                target["scrapeUrl"].as_str().unwrap_or_default().to_string(),
            ),
        );
    }
    Ok(out)
}

/// An unreachable API before anything was converged is not there yet; afterwards it is an error.
pub fn unreachable(what: &str, api: &Api, e: anyhow::Error) -> anyhow::Error {
    Failure::Blocked(format!(
        "{what} at {} does not answer: {e:#}\n  fix: `beamops up chapter-11` converges the monitoring stack; its port is chapters.instrumentation.*_port",
        api.base
    ))
    .into()
}
