//! Chapters 02 and 06: Terraform (state, provider mirror, the GitHub repository) and the AWS
//! production hosts (network, machine image, managers). Keys: docs/config.md, docs/terraform.md.

use serde::{Deserialize, Serialize};

/// Chapter 02: how Terraform runs and what the GitHub repository module declares.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TerraformOptions {
    /// A directory of provider packages in Terraform's filesystem-mirror layout
    /// (`HOST/NAMESPACE/TYPE/VERSION/OS_ARCH/`), relative to the project or absolute: for
    /// air-gapped sites. beamops then runs Terraform with a CLI configuration of its own that
    /// installs providers from there only; the user's `~/.terraformrc` is never rewritten.
    #[serde(default)]
    pub provider_mirror: Option<String>,
    /// Platforms whose provider hashes `.terraform.lock.hcl` records (`terraform providers
    /// lock -platform=…`), e.g. `[linux_amd64, darwin_arm64]`. Empty: the ones `init` records.
    #[serde(default)]
    pub lock_platforms: Vec<String>,
    /// Where each environment root keeps its state.
    #[serde(default)]
    pub state: StateOptions,
    #[serde(default)]
    pub github: GithubOptions,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// A file under `.beamops/terraform/` (git-ignored), locked by the OS while a run holds it.
    #[default]
    Local,
    /// An S3 object per root, locked with S3's own lock file (`use_lockfile`, Terraform ≥ 1.10):
    /// for environments a team and CI share.
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StateOptions {
    #[serde(default)]
    pub backend: StateBackend,
    /// The S3 bucket (backend `s3`).
    #[serde(default)]
    pub bucket: Option<String>,
    /// The bucket's region (backend `s3`).
    #[serde(default)]
    pub region: Option<String>,
    /// Object key prefix; each root's state is `<prefix>/<root>.tfstate`. Default: `app.name`.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// A DynamoDB table (partition key `LockID`) that locks the state too, beside S3's lock
    /// file: for teams whose older Terraform (< 1.10) still shares the state.
    #[serde(default)]
    pub dynamodb_table: Option<String>,
    /// An S3-compatible endpoint instead of AWS's (a local store, moto in tests): path-style
    /// addressing, and no STS account checks. Never credentials: they come from the
    /// environment. AWS's own `AWS_ENDPOINT_URL_S3` works too, for stores that accept
    /// virtual-hosted addressing.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// The GitHub repository as code (chapter 02).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubOptions {
    /// `owner/name`; default: the `origin` remote when it is a github.com address.
    #[serde(default)]
    pub repository: Option<String>,
    /// Repository description.
    #[serde(default)]
    pub description: Option<String>,
    /// `private` or `public`.
    #[serde(default = "default_visibility")]
    pub visibility: String,
    /// The default branch, protected.
    #[serde(default = "default_branch")]
    pub default_branch: String,
    /// Status checks the default branch requires; none: the jobs chapter 04's ci.yml defines
    /// for this project (`cicd::required_checks`), so the two cannot drift apart.
    #[serde(default)]
    pub required_checks: Option<Vec<String>>,
    /// GitHub user ids (numbers) whose review the `production` environment requires.
    #[serde(default)]
    pub production_reviewers: Vec<u64>,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub milestones: Vec<Milestone>,
    #[serde(default)]
    pub issues: Vec<Issue>,
}

impl Default for GithubOptions {
    fn default() -> Self {
        GithubOptions {
            repository: None,
            description: None,
            visibility: default_visibility(),
            default_branch: default_branch(),
            required_checks: None,
            production_reviewers: Vec::new(),
            labels: Vec::new(),
            milestones: Vec::new(),
            issues: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub name: String,
    /// Six hex digits without `#`.
    pub color: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Milestone {
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub due_date: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issue {
    pub title: String,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub labels: Vec<String>,
}

fn default_visibility() -> String {
    "private".into()
}
fn default_branch() -> String {
    "main".into()
}

/// Chapter 06: the AWS network, the machine image and the managers of an `aws` environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductionOptions {
    /// Use the region's default VPC and its subnets instead of creating a VPC.
    #[serde(default)]
    pub default_vpc: bool,
    /// The VPC's network when beamops creates one.
    #[serde(default = "default_vpc_cidr")]
    pub vpc_cidr: String,
    /// Public subnets, one per availability zone (1–6).
    #[serde(default = "default_zones")]
    pub zones: u32,
    /// Networks (CIDR) allowed to reach port 22; empty: no SSH from anywhere.
    #[serde(default)]
    pub ssh_allow: Vec<String>,
    /// The port the load balancer listens on (HTTP).
    #[serde(default = "default_lb_port")]
    pub lb_port: u16,
    /// Instance type of the Swarm nodes and of the Packer build.
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
    /// The base image Packer starts from: the newest image of this owner whose name matches.
    #[serde(default)]
    pub base_image: BaseImage,
    /// An EC2 key pair for SSH (`DOCKER_HOST=ssh://` to a manager); none: no key on the nodes.
    #[serde(default)]
    pub key_name: Option<String>,
    /// Size (GB) of the encrypted volume for PostgreSQL's data on the first manager, when the
    /// stack runs PostgreSQL (`chapters.swarm.database`).
    #[serde(default = "default_database_volume_gb")]
    pub database_volume_gb: u32,
}

impl Default for ProductionOptions {
    fn default() -> Self {
        ProductionOptions {
            default_vpc: false,
            vpc_cidr: default_vpc_cidr(),
            zones: default_zones(),
            ssh_allow: Vec::new(),
            lb_port: default_lb_port(),
            instance_type: default_instance_type(),
            base_image: BaseImage::default(),
            key_name: None,
            database_volume_gb: default_database_volume_gb(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseImage {
    /// The AWS account that publishes the image (Debian's by default), so a look-alike image
    /// from another account is never picked.
    #[serde(default = "default_image_owner")]
    pub owner: String,
    /// A name filter (`*` wildcards).
    #[serde(default = "default_image_name")]
    pub name: String,
}

impl Default for BaseImage {
    fn default() -> Self {
        BaseImage {
            owner: default_image_owner(),
            name: default_image_name(),
        }
    }
}

fn default_database_volume_gb() -> u32 {
    20
}
fn default_vpc_cidr() -> String {
    "10.20.0.0/16".into()
}
fn default_zones() -> u32 {
    2
}
fn default_lb_port() -> u16 {
    80
}
fn default_instance_type() -> String {
    "t3.small".into()
}
/// Debian's AWS account (https://wiki.debian.org/Cloud/AmazonEC2Image).
fn default_image_owner() -> String {
    "136693071363".into()
}
fn default_image_name() -> String {
    "debian-12-amd64-*".into()
}
