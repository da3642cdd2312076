//! Which credentials a root's providers need, found without asking anyone: the check that
//! lets `plan`/`up` say *exactly* what is missing (exit 3) before Terraform runs.
//!
//! Credentials are never passed on a command line or written anywhere by beamops: Terraform
//! inherits the environment and each provider reads its usual chain.

/// A provider source in `required_providers` → what it needs, when nothing provides it.
pub fn missing_for(tf_text: &str) -> Vec<String> {
    // A template that lacks an input says so in a comment the check reports.
    let mut missing: Vec<String> = tf_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("# beamops:missing "))
        .map(str::to_string)
        .collect();
    let uses = |source: &str| {
        tf_text.lines().any(|l| {
            let l = l.trim();
            l.starts_with("source") && l.contains(&format!("\"{source}\""))
        })
    };
    if uses("hashicorp/aws") && !aws_available() {
        missing.push(
            "AWS credentials: none of AWS_PROFILE, AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY, \
             AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (GitHub OIDC in CI), container \
             credentials, or ~/.aws/credentials / ~/.aws/config is set"
                .to_string(),
        );
    }
    if uses("integrations/github") && !github_available() {
        missing.push(
            "a GitHub token: GITHUB_TOKEN (or GH_TOKEN) is not set; it needs Administration, \
             Environments, Issues and Contents: write on the repository"
                .to_string(),
        );
    }
    missing
}

fn set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

fn aws_available() -> bool {
    if set("AWS_PROFILE")
        || (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY"))
        || (set("AWS_ROLE_ARN") && set("AWS_WEB_IDENTITY_TOKEN_FILE"))
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    {
        return true;
    }
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let file = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(default)))
            .is_some_and(|p| p.is_file())
    };
    file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials")
        || file("AWS_CONFIG_FILE", ".aws/config")
}

fn github_available() -> bool {
    set("GITHUB_TOKEN") || set("GH_TOKEN")
}
