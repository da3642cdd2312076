//! Typed records: what each action leaves in `.beamops/state.json` for its next run and for the
//! commands that build on it (`deploy` needs the image chapter 03 built and the services a run
//! updated; chapter 08 needs the secret versions chapter 07 created).
//!
//! Each record is a serde struct named after its action ([`Record::ACTION`]); the JSON on disk is
//! the struct's (docs/json.md), so a renamed field breaks the shape tests below, not a wait in
//! `deploy`. A record is read through [`crate::state::ActionRecord::typed`] or
//! [`crate::state::State::find_record`], never by string key: an unreadable one is an error that
//! names it, and a caller that can go on treats it explicitly as "not applied".
//!
//! Older shapes: fields added after a record was first written are `Option`s or documented
//! migrations (`#[serde(default)]` with the meaning of their absence), each covered by a test
//! with the JSON an older beamops wrote.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A record type and the action id it is stored under.
pub trait Record: Serialize + DeserializeOwned {
    /// The id of the action that writes it (`Action::id`).
    const ACTION: &'static str;
}

/// `swarm-mode` (chapters 07, 08): the node this Engine is in the swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmModeRecord {
    pub node_id: String,
}
impl Record for SwarmModeRecord {
    const ACTION: &'static str = "swarm-mode";
}

/// `base-images` (chapter 03): one line per base image, as `images bootstrap` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BaseImagesRecord(pub Vec<crate::docker::images::ImageOutcome>);
impl Record for BaseImagesRecord {
    const ACTION: &'static str = "base-images";
}

/// `release-image` (chapter 03): the image built (or re-tagged) and its tags, the sha tag first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseImageRecord {
    /// The local image id.
    pub id: String,
    /// `<repository>:<sha12>[-dirty]`, then `<repository>:latest`.
    pub tags: Vec<String>,
    /// False when the context was unchanged and only tags were added.
    pub built: bool,
    /// Build steps the layer cache answered; only written by a build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_steps: Option<u64>,
}
impl Record for ReleaseImageRecord {
    const ACTION: &'static str = "release-image";
}

impl ReleaseImageRecord {
    /// The immutable tag the build gave the image (`<repository>:<sha12>`), what a deploy ships.
    pub fn sha_tag(&self) -> Option<&str> {
        self.tags.first().map(String::as_str)
    }
}

/// `dev-environment` (chapter 05): the compose project it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevEnvironmentRecord {
    pub project: String,
}
impl Record for DevEnvironmentRecord {
    const ACTION: &'static str = "dev-environment";
}

/// `docker-secrets` (chapter 07): per key, the current Docker secret and the value's keyed HMAC.
pub use crate::secrets::Applied as DockerSecretsRecord;
impl Record for DockerSecretsRecord {
    const ACTION: &'static str = "docker-secrets";
}

/// `stack-converged` (chapter 08): what the last converge did to each service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackRecord {
    pub stack: String,
    pub created: Vec<String>,
    /// Services whose spec this converge changed: Swarm rolls their update out, and `deploy`
    /// waits until each one's update is completed (a task failing in the monitor window).
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
    /// Configs and secrets of this owner that no service uses any more, removed. Migration:
    /// absent in records written before objects were named by content (nothing was pruned).
    #[serde(default)]
    pub pruned: Vec<String>,
    pub converge_seconds: f64,
    /// Service → local image id the converge saw. Migration: records written before beamops
    /// remembered image ids lack it; absent means "no id known", so a rebuilt image under the
    /// same tag is detected from the next converge on (what those versions did).
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    /// `pull_only` services left out because no registry had their image: service → image.
    /// Absent in records of stacks without `pull_only` services (and before the parameter).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub left_out: BTreeMap<String, String>,
}
impl Record for StackRecord {
    const ACTION: &'static str = "stack-converged";
}

/// `cluster-formed` (chapter 09): the tasks asked and what each node saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub service: String,
    /// Task ids, sorted: a check that cannot ask compares the running tasks with these.
    pub tasks: Vec<String>,
    /// Node name → the peers it saw.
    pub nodes: BTreeMap<String, Vec<String>>,
    /// How many nodes were asked through a probe job; absent in records written before probe
    /// jobs existed, when every node was asked by exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_through_job: Option<usize>,
    pub seconds: f64,
}
impl Record for ClusterRecord {
    const ACTION: &'static str = "cluster-formed";
}

/// `workflows-valid` (chapter 04): the workflows linted and whether zizmor ran too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowsRecord {
    pub workflows: Vec<String>,
    pub zizmor: bool,
}
impl Record for WorkflowsRecord {
    const ACTION: &'static str = "workflows-valid";
}

/// `monitoring-images` (chapter 11): one line per monitoring image, as `images bootstrap` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MonitoringImagesRecord(pub Vec<crate::docker::images::ImageOutcome>);
impl Record for MonitoringImagesRecord {
    const ACTION: &'static str = "monitoring-images";
}

/// `expressions-answer` (chapter 12): how many series each rule's and panel's PromQL returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpressionsRecord {
    pub expressions: usize,
    /// Origin (rule or panel) → series the expression returned.
    pub series: BTreeMap<String, usize>,
    /// Origins whose expression returned no series.
    pub empty: Vec<String>,
    /// Metric → series Prometheus has of it.
    pub metrics: BTreeMap<String, u64>,
}
impl Record for ExpressionsRecord {
    const ACTION: &'static str = "expressions-answer";
}

/// `terraform-applied` (chapters 02, 06, 10): the root applied and its outputs, the sensitive
/// ones dropped before they reach the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TerraformRecord {
    pub root: String,
    pub outputs: serde_json::Map<String, serde_json::Value>,
}
impl Record for TerraformRecord {
    const ACTION: &'static str = "terraform-applied";
}

/// A record that does not parse as its type: the error names the action and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error(
    "the state's record of {action} is unreadable ({reason})\n  fix: `beamops up` applies {action} again and records it anew"
)]
pub struct Unreadable {
    pub action: &'static str,
    pub reason: String,
}

/// `data` as the record of `R`: `Ok(None)` for no data (an action found satisfied before it ever
/// applied, or undone), an error naming the action for data of another shape.
pub fn parse<R: Record>(data: &serde_json::Value) -> Result<Option<R>, Unreadable> {
    if data.is_null() {
        return Ok(None);
    }
    serde_json::from_value(data.clone())
        .map(Some)
        .map_err(|e| Unreadable {
            action: R::ACTION,
            reason: e.to_string(),
        })
}

/// An action's record as an apply hands it to the engine: made only from a typed record, so no
/// action writes a JSON shape that has no struct.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Data(serde_json::Value);

impl Data {
    /// The JSON stored in `.beamops/state.json`.
    pub fn into_value(self) -> serde_json::Value {
        self.0
    }
}

/// The JSON a record is stored as.
pub fn to_data<R: Record>(record: &R) -> Data {
    Data(serde_json::to_value(record).expect("records serialise: plain structs with string keys"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The exact JSON the releases before typed records wrote (`json!` in each action), read
    /// as the typed record and written back unchanged: the on-disk shape is compatible both ways.
    fn round_trip<R: Record + std::fmt::Debug>(written: serde_json::Value) -> R {
        let record: R = parse(&written).unwrap().expect("data present");
        assert_eq!(to_data(&record).into_value(), written, "{}", R::ACTION);
        record
    }

    #[test]
    fn release_image_records_of_both_shapes_read() {
        let built: ReleaseImageRecord = round_trip(json!({
            "id": "sha256:abc", "tags": ["app:0123456789ab", "app:latest"],
            "built": true, "cached_steps": 7
        }));
        assert_eq!(built.sha_tag(), Some("app:0123456789ab"));
        assert_eq!(built.cached_steps, Some(7));
        let tagged: ReleaseImageRecord = round_trip(json!({
            "id": "sha256:abc", "tags": ["app:0123456789ab-dirty", "app:latest"], "built": false
        }));
        assert_eq!(tagged.sha_tag(), Some("app:0123456789ab-dirty"));
    }

    #[test]
    fn stack_records_of_both_shapes_read() {
        let now: StackRecord = round_trip(json!({
            "stack": "demo", "created": [], "updated": ["demo_app"], "unchanged": ["demo_db"],
            "removed": [], "pruned": ["demo_page_1a2b3c4d"], "converge_seconds": 3.5,
            "images": {"demo_app": "sha256:1"}
        }));
        assert_eq!(now.updated, ["demo_app"]);
        // Written before image ids were remembered: read, with no id known.
        let older: StackRecord = parse(&json!({
            "stack": "demo", "created": ["demo_app"], "updated": [], "unchanged": [],
            "removed": [], "converge_seconds": 1.0
        }))
        .unwrap()
        .unwrap();
        assert!(older.images.is_empty());
        assert!(older.pruned.is_empty());
        assert_eq!(older.created, ["demo_app"]);
    }

    #[test]
    fn cluster_swarm_dev_and_secrets_records_read() {
        let c: ClusterRecord = round_trip(json!({
            "service": "demo_app", "tasks": ["t1", "t2"],
            "nodes": {"app@10.0.0.2": ["app@10.0.0.3"], "app@10.0.0.3": ["app@10.0.0.2"]},
            "asked_through_job": 0, "seconds": 2.0
        }));
        assert_eq!(c.tasks, ["t1", "t2"]);
        let older: ClusterRecord = parse(&json!({
            "service": "demo_app", "tasks": ["t1"], "nodes": {}, "seconds": 1.0
        }))
        .unwrap()
        .unwrap();
        assert_eq!(older.asked_through_job, None);
        let _: SwarmModeRecord = round_trip(json!({"node_id": "n1"}));
        let _: DevEnvironmentRecord = round_trip(json!({"project": "demo-dev"}));
        let s: DockerSecretsRecord = round_trip(json!({
            "stack": "demo",
            "secrets": {"DB_PASSWORD": {"name": "demo_db_password_v2", "version": 2, "hmac": "ab"}}
        }));
        assert_eq!(s.secrets["DB_PASSWORD"].name, "demo_db_password_v2");
    }

    #[test]
    fn a_record_of_another_shape_is_an_error_naming_it_never_a_default() {
        // `updated` renamed: deploy must not read "no service updated" and skip its wait.
        let renamed = json!({
            "stack": "demo", "created": [], "services_updated": ["demo_app"], "unchanged": [],
            "removed": [], "converge_seconds": 1.0
        });
        let err = parse::<StackRecord>(&renamed).unwrap_err();
        assert_eq!(err.action, "stack-converged");
        assert!(err.to_string().contains("updated"), "{err}");
        let err = parse::<ReleaseImageRecord>(&json!({"tags": "app:1"})).unwrap_err();
        assert!(err.to_string().contains("release-image"), "{err}");
        // No data at all is "never applied", not an error.
        assert!(
            parse::<StackRecord>(&serde_json::Value::Null)
                .unwrap()
                .is_none()
        );
    }
}
