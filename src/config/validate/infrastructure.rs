//! Chapters 02 and 06: the Terraform state, the GitHub repository, the AWS network.

use std::sync::LazyLock;

use regex_lite::Regex;

use super::{Problem, port_problem, problem, re, shape};
use crate::config::Config;

static GITHUB_REPOSITORY: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9_.-]{1,100}$"));
static PLATFORM: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9]+_[a-z0-9]+$"));
static DYNAMODB_TABLE: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_.-]{3,255}$"));
static COLOR: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9a-fA-F]{6}$"));
static BUCKET: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"));
/// A login name ssh passes on (`-l`): no option-like or shell-special characters.
static SSH_USER: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z_][a-z0-9_-]{0,31}$"));
static ROLE_ARN: LazyLock<Regex> =
    LazyLock::new(|| re(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"));

/// `a.b.c.d/n` with no host bits set (any prefix 0–32).
pub fn ipv4_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let (Ok(address), Ok(prefix)) = (address.parse::<std::net::Ipv4Addr>(), prefix.parse::<u32>())
    else {
        return false;
    };
    prefix <= 32 && (prefix == 32 || u32::from(address) & (u32::MAX >> prefix) == 0)
}

/// Chapters 02 and 06: the Terraform state, the GitHub repository and the AWS network.
pub(super) fn infrastructure(config: &Config, out: &mut Vec<Problem>) {
    for (name, env) in &config.environments {
        if env.provider != crate::config::Provider::Aws {
            continue;
        }
        if let Some(user) = &env.ssh_user
            && !SSH_USER.is_match(user)
        {
            out.push(problem(
                &["environments", name, "ssh_user"],
                format!(
                    "environments.{name}.ssh_user `{}` is not a login name",
                    user.escape_debug()
                ),
                "write the managers' login, e.g. admin (chapter 06's Debian image)",
            ));
        }
        if let Some(arn) = &env.deploy_role_arn
            && !ROLE_ARN.is_match(arn)
        {
            out.push(problem(
                &["environments", name, "deploy_role_arn"],
                format!(
                    "environments.{name}.deploy_role_arn `{}` is not an IAM role ARN",
                    arn.escape_debug()
                ),
                "write arn:aws:iam::<account id>:role/<name> (chapter 02's deploy_role_arn output)",
            ));
        }
        // A missing region is reported by the chapters that need one (blocked, not a bad file).
        if let Some(region) = &env.region
            && !shape::is_aws_region(region)
        {
            out.push(problem(
                &["environments", name, "region"],
                format!(
                    "environments.{name}.region `{}` is not an AWS region",
                    region.escape_debug()
                ),
                "write a region code, e.g. eu-west-1",
            ));
        }
    }
    let tf = &config.chapters.terraform;
    if tf.state.backend == crate::config::StateBackend::S3 {
        match &tf.state.bucket {
            Some(b) if BUCKET.is_match(b) => {}
            other => out.push(problem(
                &["chapters", "terraform", "state", "bucket"],
                match other {
                    Some(b) => format!(
                        "chapters.terraform.state.bucket `{}` is not an S3 bucket name",
                        b.escape_debug()
                    ),
                    None => "chapters.terraform.state.backend is s3 but no bucket is given".into(),
                },
                "name the bucket that holds the state (3–63 lowercase letters, digits, `.`, `-`)",
            )),
        }
        if !tf.state.region.as_deref().is_some_and(shape::is_aws_region) {
            out.push(problem(
                &["chapters", "terraform", "state", "region"],
                "chapters.terraform.state.backend is s3 but the bucket's region is missing or not a region".into(),
                "give the bucket's region, e.g. eu-west-1",
            ));
        }
    }
    if let Some(table) = &tf.state.dynamodb_table
        && !DYNAMODB_TABLE.is_match(table)
    {
        out.push(problem(
            &["chapters", "terraform", "state", "dynamodb_table"],
            format!(
                "chapters.terraform.state.dynamodb_table `{}` is not a DynamoDB table name",
                table.escape_debug()
            ),
            "3–255 letters, digits, `_`, `-` or `.`; the table's partition key is `LockID`",
        ));
    }
    if let Some(endpoint) = &tf.state.endpoint {
        // Credentials never go in a file: an address with user:password@ is refused.
        let ok = reqwest::Url::parse(endpoint).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
        });
        if !ok {
            out.push(problem(
                &["chapters", "terraform", "state", "endpoint"],
                format!(
                    "chapters.terraform.state.endpoint `{}` is not an http(s) address without credentials",
                    endpoint.escape_debug()
                ),
                "write the S3-compatible store's address, e.g. http://127.0.0.1:9000; credentials \
                 come from the environment (AWS_ACCESS_KEY_ID, AWS_PROFILE…), never this file",
            ));
        }
    }
    for platform in &tf.lock_platforms {
        if !PLATFORM.is_match(platform) {
            out.push(problem(
                &["chapters", "terraform", "lock_platforms"],
                format!(
                    "chapters.terraform.lock_platforms: `{}` is not a Terraform platform",
                    platform.escape_debug()
                ),
                "write OS_ARCH, e.g. linux_amd64 or darwin_arm64",
            ));
        }
    }
    let gh = &tf.github;
    if let Some(repo) = &gh.repository
        && !GITHUB_REPOSITORY.is_match(repo)
    {
        out.push(problem(
            &["chapters", "terraform", "github", "repository"],
            format!(
                "chapters.terraform.github.repository `{}` is not owner/name",
                repo.escape_debug()
            ),
            "write it as on GitHub, e.g. acme/coordination",
        ));
    }
    if !matches!(gh.visibility.as_str(), "private" | "public" | "internal") {
        out.push(problem(
            &["chapters", "terraform", "github", "visibility"],
            format!(
                "chapters.terraform.github.visibility `{}` is not a GitHub visibility",
                gh.visibility.escape_debug()
            ),
            "use private, public or internal",
        ));
    }
    for label in &gh.labels {
        if !COLOR.is_match(&label.color) {
            out.push(problem(
                &["chapters", "terraform", "github", "labels"],
                format!(
                    "label `{}`: color `{}` is not six hex digits",
                    label.name.escape_debug(),
                    label.color.escape_debug()
                ),
                "write the colour without `#`, e.g. d73a4a",
            ));
        }
    }
    for m in &gh.milestones {
        if let Some(due) = &m.due_date
            && !re(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$").is_match(due)
        {
            out.push(problem(
                &["chapters", "terraform", "github", "milestones"],
                format!(
                    "milestone `{}`: due_date `{}` is not a date",
                    m.title.escape_debug(),
                    due.escape_debug()
                ),
                "write YYYY-MM-DD",
            ));
        }
    }
    let p = &config.chapters.production;
    let vpc_prefix = p
        .vpc_cidr
        .split_once('/')
        .and_then(|(_, n)| n.parse::<u32>().ok());
    if !ipv4_cidr(&p.vpc_cidr) || !vpc_prefix.is_some_and(|n| (16..=24).contains(&n)) {
        out.push(problem(
            &["chapters", "production", "vpc_cidr"],
            format!(
                "chapters.production.vpc_cidr `{}` is not an IPv4 network from /16 to /24",
                p.vpc_cidr.escape_debug()
            ),
            "write e.g. 10.20.0.0/16 (each zone gets a /8 more of it)",
        ));
    }
    if !(1..=6).contains(&p.zones) {
        out.push(problem(
            &["chapters", "production", "zones"],
            format!("chapters.production.zones is {}", p.zones),
            "use 1 to 6 availability zones",
        ));
    }
    for cidr in &p.ssh_allow {
        if !ipv4_cidr(cidr) || cidr == "0.0.0.0/0" {
            out.push(problem(
                &["chapters", "production", "ssh_allow"],
                format!(
                    "chapters.production.ssh_allow: `{}` is not a network SSH may be allowed from",
                    cidr.escape_debug()
                ),
                "list IPv4 networks with no host bits set, e.g. 203.0.113.7/32; never 0.0.0.0/0",
            ));
        }
    }
    if p.lb_port == 0 {
        out.push(port_problem(&["chapters", "production", "lb_port"]));
    }
    if !shape::is_instance_type(&p.instance_type, false) {
        out.push(problem(
            &["chapters", "production", "instance_type"],
            format!(
                "chapters.production.instance_type `{}` is not an EC2 instance type",
                p.instance_type.escape_debug()
            ),
            "write e.g. t3.small",
        ));
    }
    if !shape::is_image_owner(&p.base_image.owner) {
        out.push(problem(
            &["chapters", "production", "base_image", "owner"],
            format!(
                "chapters.production.base_image.owner `{}` is not an AWS account",
                p.base_image.owner.escape_debug()
            ),
            "pin the publisher's 12-digit account id (Debian: 136693071363)",
        ));
    }
    if p.base_image.name.trim().is_empty() || p.base_image.name.contains('"') {
        out.push(problem(
            &["chapters", "production", "base_image", "name"],
            "chapters.production.base_image.name is not an image name filter".into(),
            "write a name with `*` wildcards, e.g. debian-12-amd64-*",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::ipv4_cidr;

    #[test]
    fn cidrs_need_zero_host_bits() {
        assert!(ipv4_cidr("203.0.113.7/32"));
        assert!(ipv4_cidr("10.20.0.0/16"));
        assert!(!ipv4_cidr("10.20.0.1/16"));
        assert!(!ipv4_cidr("10.20.0.0/33"));
        assert!(!ipv4_cidr("10.20.0.0"));
    }

    #[test]
    fn ssh_from_anywhere_even_managers_and_a_bad_bucket_are_refused() {
        let src = "version: 1\napp:\n  name: c\n  otp_app: c\n  elixir: 1.18.3\n  otp: \"27\"\nenvironments:\n  prod:\n    provider: aws\n    region: eu-west-1\n    managers: 2\n    ssh_user: \"-oProxyCommand=x\"\n    deploy_role_arn: arn:aws:iam::123:role/x\nchapters:\n  terraform:\n    state:\n      backend: s3\n  production:\n    ssh_allow: [0.0.0.0/0]\n";
        let config: crate::config::Config = serde_yaml_ng::from_str(src).unwrap();
        let problems: Vec<String> = super::super::all(&config)
            .into_iter()
            .map(|p| p.path.join("."))
            .collect();
        for key in [
            "environments.prod.managers",
            "environments.prod.ssh_user",
            "environments.prod.deploy_role_arn",
            "chapters.terraform.state.bucket",
            "chapters.terraform.state.region",
            "chapters.production.ssh_allow",
        ] {
            assert!(problems.iter().any(|p| p == key), "{key}: {problems:?}");
        }
        let fine = src
            .replace("-oProxyCommand=x", "admin")
            .replace("123:role", "123456789012:role");
        let config: crate::config::Config = serde_yaml_ng::from_str(&fine).unwrap();
        let problems: Vec<String> = super::super::all(&config)
            .into_iter()
            .map(|p| p.path.join("."))
            .collect();
        assert!(
            !problems
                .iter()
                .any(|p| p.ends_with("ssh_user") || p.ends_with("deploy_role_arn")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_state_endpoint_with_credentials_or_a_bad_table_is_refused() {
        let base = "version: 1\napp:\n  name: c\n  otp_app: c\n  elixir: 1.18.3\n  otp: \"27\"\nchapters:\n  terraform:\n    state:\n      backend: s3\n      bucket: state-bucket\n      region: eu-west-1\n";
        let problems = |extra: &str| -> Vec<String> {
            let config: crate::config::Config =
                serde_yaml_ng::from_str(&format!("{base}{extra}")).unwrap();
            super::super::all(&config)
                .into_iter()
                .map(|p| p.path.join("."))
                .collect()
        };
        assert!(
            problems("      endpoint: http://127.0.0.1:9000\n      dynamodb_table: tf-locks\n")
                .is_empty()
        );
        for (extra, key) in [
            (
                "      endpoint: http://key:secret@127.0.0.1:9000\n",
                "chapters.terraform.state.endpoint",
            ),
            (
                "      endpoint: s3.example\n",
                "chapters.terraform.state.endpoint",
            ),
            (
                "      dynamodb_table: \"a b\"\n",
                "chapters.terraform.state.dynamodb_table",
            ),
        ] {
            assert!(problems(extra).iter().any(|p| p == key), "{extra}");
        }
    }
}
