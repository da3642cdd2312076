//! The state backend of a root, from `chapters.terraform.state` in `beamops.yaml`, as
//! `terraform init -backend-config=KEY=VALUE` pairs. Nothing here is a secret: credentials come
//! from the environment Terraform inherits (the AWS profile chain, GitHub OIDC in CI).
//!
//! S3 locks with its own lock file (`use_lockfile`, Terraform ≥ 1.10: a `<key>.tflock` object
//! written with a conditional PUT), and with a DynamoDB table as well when one is configured.

use crate::config::StateOptions;

/// The object key of a root's state: `<prefix>/<last directory of the root>.tfstate`, so
/// `terraform/staging` is `<prefix>/staging.tfstate` (what chapter 02's `versions.tf` says).
pub fn state_key(prefix: &str, root: &str) -> String {
    let name = root
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(root);
    format!("{}/{name}.tfstate", prefix.trim_end_matches('/'))
}

/// `-backend-config` pairs for an S3 backend holding `root`'s state.
pub fn s3_config(state: &StateOptions, key_prefix: &str, root: &str) -> Vec<(String, String)> {
    let mut config = vec![("key".to_string(), state_key(key_prefix, root))];
    if let Some(bucket) = &state.bucket {
        config.push(("bucket".into(), bucket.clone()));
    }
    if let Some(region) = &state.region {
        config.push(("region".into(), region.clone()));
    }
    config.push(("encrypt".into(), "true".into()));
    config.push(("use_lockfile".into(), "true".into()));
    if let Some(table) = &state.dynamodb_table {
        config.push(("dynamodb_table".into(), table.clone()));
    }
    if let Some(endpoint) = &state.endpoint {
        let url = super::hcl_string(endpoint);
        let endpoints = if state.dynamodb_table.is_some() {
            format!("{{s3={url},dynamodb={url}}}")
        } else {
            format!("{{s3={url}}}")
        };
        config.push(("endpoints".into(), endpoints));
        // A bucket name cannot be a host name under an address such as 127.0.0.1:9000, and
        // an S3-compatible store has no STS to ask for the account.
        config.push(("use_path_style".into(), "true".into()));
        config.push(("skip_credentials_validation".into(), "true".into()));
        config.push(("skip_requesting_account_id".into(), "true".into()));
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_keys_its_state_by_its_directory_and_locks_with_s3() {
        assert_eq!(
            state_key("app/", "terraform/staging"),
            "app/staging.tfstate"
        );
        let state = StateOptions {
            bucket: Some("b".into()),
            region: Some("eu-west-1".into()),
            endpoint: Some("http://127.0.0.1:9000".into()),
            ..Default::default()
        };
        let config = s3_config(&state, "app", "terraform/github");
        let get = |k: &str| {
            config
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("key"), Some("app/github.tfstate"));
        assert_eq!(get("use_lockfile"), Some("true"));
        assert_eq!(get("endpoints"), Some(r#"{s3="http://127.0.0.1:9000"}"#));
        assert_eq!(get("dynamodb_table"), None);
        let plain = s3_config(
            &StateOptions {
                dynamodb_table: Some("locks".into()),
                ..state.clone()
            },
            "app",
            "terraform/x",
        );
        assert!(plain.contains(&("dynamodb_table".into(), "locks".into())));
    }
}
