//! Grafana's provisioned files checked without a Grafana: every dashboard parses, uids are
//! unique, every datasource a panel names is a provisioned one (by uid), every panel queries
//! something. (PromEx's "dashboards that show nothing" start with a datasource that is not
//! there.)

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Datasources {
    datasources: Vec<Datasource>,
}

#[derive(Debug, Deserialize)]
struct Datasource {
    name: String,
    uid: String,
    #[serde(rename = "type")]
    kind: String,
}

/// What the check found: one line per problem, empty when all is well.
pub fn problems(datasources_yml: &str, dashboards: &[(String, String)]) -> Result<Vec<String>> {
    let sources: Datasources =
        serde_yaml_ng::from_str(datasources_yml).context("parsing the provisioned datasources")?;
    let mut out = Vec::new();
    let mut by_uid: BTreeMap<&str, &str> = BTreeMap::new();
    for source in &sources.datasources {
        if by_uid.insert(&source.uid, &source.kind).is_some() {
            out.push(format!(
                "datasource uid {} is provisioned twice ({})",
                source.uid, source.name
            ));
        }
    }
    let mut uids = BTreeSet::new();
    for (name, text) in dashboards {
        let dashboard: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                out.push(format!("dashboard {name}: not JSON: {e}"));
                continue;
            }
        };
        match dashboard["uid"].as_str() {
            Some(uid) if !uid.is_empty() && uid.len() <= 40 => {
                if !uids.insert(uid.to_string()) {
                    out.push(format!(
                        "dashboard {name}: uid {uid} is used by another dashboard"
                    ));
                }
            }
            other => out.push(format!(
                "dashboard {name}: uid {other:?} is missing or longer than Grafana's 40 characters"
            )),
        }
        if dashboard["title"].as_str().is_none_or(str::is_empty) {
            out.push(format!("dashboard {name}: no title"));
        }
        let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
        if panels.is_empty() {
            out.push(format!("dashboard {name}: no panels"));
        }
        let mut ids = BTreeSet::new();
        for panel in &panels {
            let title = panel["title"].as_str().unwrap_or_default();
            let at = format!("dashboard {name} panel \"{title}\"");
            if !ids.insert(panel["id"].as_u64()) {
                out.push(format!("{at}: id {} is used twice", panel["id"]));
            }
            let mut sources = vec![&panel["datasource"]];
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            if !targets
                .iter()
                .any(|t| t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()))
            {
                out.push(format!("{at}: no query"));
            }
            for target in panel["targets"].as_array().into_iter().flatten() {
                sources.push(&target["datasource"]);
            }
            for source in sources {
                if source.is_null() {
                    continue;
                }
                let uid = source["uid"].as_str().unwrap_or_default();
                match by_uid.get(uid) {
                    None => out.push(format!(
                        "{at}: datasource uid {uid:?} is not provisioned (provisioned: {})",
                        by_uid.keys().copied().collect::<Vec<_>>().join(", ")
                    )),
                    Some(kind) if source["type"].as_str().is_some_and(|t| t != *kind) => {
                        out.push(format!(
                            "{at}: datasource {uid} is a {kind}, the panel says {}",
                            source["type"]
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCES: &str =
        "apiVersion: 1\ndatasources:\n  - name: Prometheus\n    uid: p\n    type: prometheus\n";

    fn dashboard(uid: &str, ds: &str, expr: &str) -> String {
        serde_json::json!({"uid": uid, "title": "t", "panels": [{"id": 1, "title": "x",
            "datasource": {"type": "prometheus", "uid": ds}, "targets": [{"refId": "A", "expr": expr}]}]})
        .to_string()
    }

    #[test]
    fn a_good_set_has_no_problems_and_each_fault_is_named() {
        let good = [("a".to_string(), dashboard("a", "p", "up"))];
        assert!(problems(SOURCES, &good).unwrap().is_empty());
        let bad = [
            ("a".to_string(), dashboard("same", "p", "up")),
            ("b".to_string(), dashboard("same", "nope", "")),
        ];
        let found = problems(SOURCES, &bad).unwrap().join("\n");
        assert!(found.contains("uid same is used by another"), "{found}");
        assert!(found.contains("\"nope\" is not provisioned"), "{found}");
        assert!(found.contains("no query"), "{found}");
    }
}
