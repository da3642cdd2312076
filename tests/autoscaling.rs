//! Chapter 10 (autoscaling): the aws environment root it renders (linted, never applied here)
//! and the node lifecycle its scripts drive, run for real against a local AWS API (moto) and a
//! Docker-in-Docker swarm (tests/common/dind.rs).

#[allow(dead_code)]
#[path = "common/busybox.rs"]
mod busybox;
mod common;
#[path = "common/dind.rs"]
mod dind;
#[path = "common/local_aws.rs"]
mod local_aws;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestProject, example_copy, http_get_at, render_env_into};
use dind::{Lab, Node};
use local_aws::{LocalAws, Moto};

/// The example named `app`, its aws environment `production` with autoscaling bounds, and
/// `chapters` (top-level YAML, may be empty).
pub fn aws_project(app: &str, chapters: &str) -> TestProject {
    let p = example_copy(app);
    let yaml = p.read("beamops.yaml");
    let production = "  production:\n    provider: aws\n    replicas: 3\n    region: eu-west-1\n    protected: true\n";
    assert!(
        yaml.contains(production),
        "the example's production environment changed"
    );
    p.write(
        "beamops.yaml",
        &format!(
            "{}{chapters}",
            yaml.replace(
                production,
                &format!(
                    "{production}    managers: 3\n    workers: 2\n    min_workers: 1\n    max_workers: 6\n    domain: coord.example.com\n"
                )
            )
        ),
    );
    p
}

/// Every input chapter 10's root needs, from beamops.yaml.
const COMPLETE: &str = "chapters:\n  autoscaling:\n    certificate_arn: arn:aws:acm:eu-west-1:123456789012:certificate/0f7e3d4c-1111-2222-3333-444455556666\n    access_logs_bucket: coordination-alb-logs\n";

const ROOT_FILES: [&str; 4] = [
    "terraform/production/autoscaling.tf",
    "terraform/production/node/beamops-node",
    "terraform/production/node/beamops-node-bootstrap.service",
    "terraform/production/node/beamops-node-watch.service",
];

fn tool(name: &str) -> Option<std::path::PathBuf> {
    let path = common::tool_path();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A tool the test needs: CI must have it (.ci/setup installs it); elsewhere its absence is
/// said out loud and that part is skipped.
fn required_tool(name: &str, test: &str) -> Option<std::path::PathBuf> {
    let found = tool(name);
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: `{name}` is missing (.ci/setup installs it)"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! SKIPPED part of {test}: `{name}` is not installed !!!!!\n"
        );
    }
    found
}

#[test]
fn chapter_10_renders_the_workers_group_only_for_aws_environments() {
    // Without the certificate, the log bucket and a manager's API, the root says what is
    // missing (the terraform-applied action reports it blocked instead of running Terraform).
    let p = aws_project("coordination", "");
    render_env_into(&p, "10", "production");
    let tf = p.read(ROOT_FILES[0]);
    for key in ["certificate_arn", "access_logs_bucket"] {
        assert!(
            tf.contains(&format!(
                "# beamops:missing chapters.autoscaling.{key} in beamops.yaml"
            )),
            "{key} missing is not said"
        );
    }
    let p = aws_project("coordination", COMPLETE);
    let files = render_env_into(&p, "10", "production");
    assert_eq!(files, ROOT_FILES);
    let local = common::render_into(&p, "10");
    assert!(
        local.is_empty(),
        "a local environment gets no ASG: {local:?}"
    );
    for f in &files {
        insta::assert_snapshot!(f.replace('/', "_"), p.read(f));
    }
    let tf = p.read(ROOT_FILES[0]);
    assert!(!tf.contains("beamops:missing"), "{tf}");
    // beamops.yaml's bounds and options reach the group and the policy.
    for line in [
        "min_size                  = 1",
        "max_size                  = 6",
        "desired_capacity          = 2",
        "target_value = 60",
        "http_tokens                 = \"required\"",
        "path                = \"/health\"",
        "autoscaling:EC2_INSTANCE_TERMINATING",
    ] {
        assert!(tf.contains(line), "autoscaling.tf lacks `{line}`");
    }
    let mode = std::fs::metadata(p.file(ROOT_FILES[1])).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o755);
}

#[test]
fn the_rendered_root_parses_is_formatted_and_passes_checkov() {
    let test = "the_rendered_root_parses_is_formatted_and_passes_checkov";
    // The whole root: chapter 02's versions and OIDC, chapter 06's network and managers (and
    // their modules), chapter 10's files.
    let p = aws_project("coordination", COMPLETE);
    for chapter in ["02", "06", "10"] {
        render_env_into(&p, chapter, "production");
    }
    let root = p.file("terraform");

    // HCL: every block parses, and the instance profile grants exactly two actions.
    let body: hcl::Body = hcl::from_str(&p.read(ROOT_FILES[0])).expect("autoscaling.tf parses");
    let actions: Vec<String> = body
        .blocks()
        .filter(|b| {
            b.identifier() == "data" && b.labels().get(1).map(|l| l.as_str()) == Some("worker")
        })
        .flat_map(|b| b.body().blocks().filter(|s| s.identifier() == "statement"))
        .flat_map(|s| s.body().attributes().filter(|a| a.key() == "actions"))
        .map(|a| a.expr().to_string().split_whitespace().collect::<String>())
        .collect();
    assert_eq!(
        actions,
        [
            "[\"ssm:GetParameter\"]",
            "[\"autoscaling:CompleteLifecycleAction\"]"
        ],
        "least privilege"
    );
    // What a worker reads: the join token, the node-leave key and the manager's host key.
    let resources: Vec<String> = body
        .blocks()
        .filter(|b| {
            b.identifier() == "data" && b.labels().get(1).map(|l| l.as_str()) == Some("worker")
        })
        .flat_map(|b| b.body().blocks().filter(|s| s.identifier() == "statement"))
        .flat_map(|s| s.body().attributes().filter(|a| a.key() == "resources"))
        .map(|a| a.expr().to_string().split_whitespace().collect::<String>())
        .collect();
    assert!(
        resources[0].contains("module.managers.worker_join_token_parameter_arn")
            && resources[0].contains("module.managers.node_leave_parameter_arns"),
        "{resources:?}"
    );
    // The managers write the workers' private key and cannot read it back.
    let module = "terraform/modules/swarm-managers";
    let leave: hcl::Body = hcl::from_str(&p.read(&format!("{module}/node-leave.tf"))).unwrap();
    let statements: Vec<(String, String)> = leave
        .blocks()
        .filter(|b| b.identifier() == "data")
        .flat_map(|b| b.body().blocks().filter(|s| s.identifier() == "statement"))
        .map(|s| {
            let get = |key: &str| {
                s.body()
                    .attributes()
                    .find(|a| a.key() == key)
                    .map(|a| a.expr().to_string().split_whitespace().collect::<String>())
                    .unwrap_or_default()
            };
            (get("actions"), get("resources"))
        })
        .collect();
    assert_eq!(statements.len(), 2, "{statements:?}");
    assert!(
        statements
            .iter()
            .any(|(actions, resources)| actions == "[\"ssm:PutParameter\"]"
                && resources.contains("local.node_leave_key_parameter_arn")),
        "the managers create the private key by its name's ARN: {statements:?}"
    );
    for (actions, resources) in &statements {
        assert!(
            !(actions.contains("ssm:GetParameter") && resources.contains("node_leave_key")),
            "a manager may read the workers' private key: {statements:?}"
        );
    }
    // No credential reaches Terraform's state: a managed aws_ssm_parameter's value is read back
    // on every refresh, `ignore_changes` or not, so no parameter holding a key or a token may be
    // a resource anywhere in the root or its modules (the managers create those). Only these,
    // which hold no secret, are: every other one is refused until someone decides about it.
    let mut tf_files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "tf") {
                tf_files.push(path);
            }
        }
    }
    let mut parameters = Vec::new();
    for file in &tf_files {
        let body: hcl::Body = hcl::from_str(&std::fs::read_to_string(file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for block in body.blocks().filter(|b| {
            b.identifier() == "resource"
                && b.labels().first().map(|l| l.as_str()) == Some("aws_ssm_parameter")
        }) {
            let attr = |key: &str| {
                block
                    .body()
                    .attributes()
                    .find(|a| a.key() == key)
                    .map(|a| a.expr().to_string())
                    .unwrap_or_default()
            };
            let (name, value) = (attr("name"), attr("value"));
            assert!(
                name.ends_with("/swarm/node-leave-public-key\"")
                    || name.ends_with("/swarm/node-leave-known-hosts/${count.index}\""),
                "{}: aws_ssm_parameter {name} may hold a credential: Terraform would keep its value in the state",
                file.display()
            );
            assert_eq!(value, "\"pending\"", "{}: {name}", file.display());
            parameters.push(name);
        }
    }
    assert_eq!(parameters.len(), 2, "{parameters:?}");
    for credential in ["join-token", "worker-join-token", "node-leave-key"] {
        assert!(
            !parameters
                .iter()
                .any(|n| n.ends_with(&format!("/{credential}\""))),
            "{credential} is a Terraform resource: {parameters:?}"
        );
    }

    if let Some(terraform) = required_tool("terraform", test) {
        let out = Command::new(terraform)
            .args(["fmt", "-check", "-diff", "-recursive"])
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "terraform fmt -check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Some(shellcheck) = required_tool("shellcheck", test) {
        let out = Command::new(shellcheck)
            .arg(p.file(ROOT_FILES[1]))
            .arg(p.file("terraform/modules/swarm-managers/node-leave.sh"))
            .arg(p.file("terraform/modules/swarm-managers/node-leave-setup.sh"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shellcheck: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    if let Some(checkov) = required_tool("checkov", test) {
        let out = Command::new(checkov)
            .args([
                "--directory",
                ".",
                "--framework",
                "terraform",
                "--quiet",
                "--compact",
            ])
            .args(["--output", "json", "--skip-download"])
            .current_dir(&root)
            .env("BC_SKIP_MAPPING", "TRUE")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("checkov JSON ({e}): {text}"));
        let summary = &report["summary"];
        eprintln!("checkov: {summary}");
        assert_eq!(summary["failed"], 0, "checkov failed checks: {text}");
        assert!(summary["passed"].as_u64().unwrap_or(0) > 10, "{summary}");
        // Each skip carries its reason inline, next to the resource.
        for skipped in report["results"]["skipped_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let why = skipped["check_result"]["suppress_comment"]
                .as_str()
                .unwrap_or("");
            assert!(why.len() > 20, "a skip without a reason: {skipped}");
        }
    }
}

/// The host-mode port every worker's app task answers on: what the ALB's target group targets.
const APP_PORT: u16 = 8080;

/// A local string from the rendered root's `locals` block, read through the HCL parser: the
/// test names the group, hooks and parameter exactly as the Terraform does.
fn local(body: &hcl::Body, name: &str) -> String {
    body.blocks()
        .filter(|b| b.identifier() == "locals")
        .flat_map(|b| b.body().attributes())
        .find(|a| a.key() == name)
        .and_then(|a| match a.expr() {
            hcl::Expression::String(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no string local `{name}` in autoscaling.tf"))
}

/// Removes the test's images from the outer Engine: every tag of the repository, and the
/// release build's intermediate stages (labelled `dev.beamops.build=<app>`).
struct OuterImage(String);

impl Drop for OuterImage {
    fn drop(&mut self) {
        let repo = self.0.split(':').next().unwrap_or(&self.0).to_string();
        let label = format!("label=dev.beamops.build={repo}");
        for query in [
            vec!["images", "-q", self.0.as_str()],
            vec!["images", "-q", "--filter", label.as_str()],
        ] {
            let out = dind::docker(&query);
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = dind::docker(&["rmi", "-f", id]);
            }
        }
    }
}

/// Copies `content` to `path` inside a node's container with `mode`.
fn put_file(node: &Node, path: &str, content: &[u8], mode: u32) {
    let dir = Path::new(path).parent().unwrap().display().to_string();
    let out = dind::docker(&["exec", &node.name, "mkdir", "-p", &dir]);
    assert!(out.status.success());
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), content).unwrap();
    beamops::fsutil::set_mode(tmp.path(), mode).unwrap();
    let out = dind::docker(&[
        "cp",
        &tmp.path().display().to_string(),
        &format!("{}:{path}", node.name),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `docker exec NODE ARGS…`: (exit code, stdout + stderr).
fn exec(node: &Node, args: &[&str]) -> (i32, String) {
    let mut all = vec!["exec", node.name.as_str()];
    all.extend_from_slice(args);
    let out = dind::docker(&all);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// `beamops-node COMMAND` in the node, as its systemd unit runs it.
fn node_command(node: &Node, command: &str) -> Command {
    let mut cmd = Command::new("docker");
    cmd.args(["exec", &node.name, "/usr/local/sbin/beamops-node", command]);
    cmd
}

fn run_node_command(node: &Node, command: &str) -> String {
    let out = node_command(node, command).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} {command}: {text}", node.name);
    text
}

/// Nodes as the manager lists them: hostname → (role, status, availability, labels).
fn node_list(manager: &Node) -> BTreeMap<String, String> {
    let ids = manager.docker_ok(&["node", "ls", "-q"]);
    let mut out = BTreeMap::new();
    for id in ids.lines() {
        let line = manager.docker_ok(&[
            "node",
            "inspect",
            id,
            "--format",
            "{{.Description.Hostname}}\t{{.Spec.Role}} {{.Status.State}} {{.Spec.Availability}} {{json .Spec.Labels}}",
        ]);
        let (host, rest) = line.split_once('\t').unwrap();
        out.insert(host.to_string(), rest.to_string());
    }
    out
}

/// Running tasks of a service: node hostnames.
fn running_on(manager: &Node, service: &str) -> Vec<String> {
    let out = manager.docker(&[
        "service",
        "ps",
        service,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}} {{.CurrentState}}",
    ]);
    let mut nodes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" Running"))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    nodes.sort();
    nodes
}

fn node_id(node: &Node) -> String {
    node.docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"])
}

fn wait_for<T>(what: &str, secs: u64, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs}s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The load balancer as the test plays it: requests go round-robin to the registered targets
/// (a node is registered once its bootstrap has completed the launch lifecycle action, and
/// deregistered before its termination hook runs, as the autoscaling group does with its
/// target groups).
struct Balancer {
    targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<BTreeMap<String, (u64, u64)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Balancer {
    fn start(first: &str) -> Balancer {
        let targets = Arc::new(Mutex::new(vec![first.to_string()]));
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let thread = {
            let (targets, stop, counts) = (targets.clone(), stop.clone(), counts.clone());
            std::thread::spawn(move || {
                let mut next = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let target = {
                        let t = targets.lock().unwrap();
                        next = next.wrapping_add(1);
                        t[next % t.len()].clone()
                    };
                    let ok = matches!(http_get_at(&target, APP_PORT, "/health"), Some((200, _)));
                    let mut c = counts.lock().unwrap();
                    let entry: &mut (u64, u64) = c.entry(target).or_default();
                    if ok {
                        entry.0 += 1;
                    } else {
                        entry.1 += 1;
                    }
                    drop(c);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Balancer {
            targets,
            stop,
            counts,
            thread: Some(thread),
        }
    }

    fn register(&self, ip: &str) {
        self.targets.lock().unwrap().push(ip.to_string());
    }

    fn deregister(&self, ip: &str) {
        self.targets.lock().unwrap().retain(|t| t != ip);
    }

    fn finish(mut self) -> BTreeMap<String, (u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.counts.lock().unwrap().clone()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Run on a worker: what a node holding the node-leave key can ask a manager for, outside
/// `beamops-node` (a compromised worker). The key comes from SSM into an agent, as the script
/// does; `@forward` tries to forward the manager's Docker socket instead of running a command.
const AS_WORKER: &str = r#"#!/usr/bin/env bash
set -u
set -a
. /etc/beamops/node.env
set +a
param() {
  aws --region "$NODE_REGION" ssm get-parameter --with-decryption --query Parameter.Value \
    --output text --name "$1"
}
eval "$(ssh-agent -s)" >/dev/null
trap 'ssh-agent -k >/dev/null 2>&1' EXIT
param "$NODE_LEAVE_KEY_PARAMETER" | ssh-add -q -
param "${NODE_LEAVE_KNOWN_HOSTS_PARAMETERS##*,}" >/tmp/leave-known-hosts
host=$(cut -d' ' -f1 /tmp/leave-known-hosts)
opts=(-F none -o BatchMode=yes -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null
  -o UserKnownHostsFile=/tmp/leave-known-hosts)
case "${1-}" in
@forward)
  rm -f /tmp/forwarded.sock
  ssh "${opts[@]}" -N -L /tmp/forwarded.sock:/var/run/docker.sock "beamops-leave@$host" &
  pid=$!
  sleep 3
  docker -H unix:///tmp/forwarded.sock version --format '{{.Server.Version}}'
  rc=$?
  kill "$pid"
  exit "$rc"
  ;;
"") ssh "${opts[@]}" "beamops-leave@$host" ;;
*) ssh "${opts[@]}" "beamops-leave@$host" "$1" ;;
esac
"#;

/// Chapter 10's world on a Docker-in-Docker swarm: node 1 is the one manager (chapter 06's
/// managers module on it: sshd with the node-leave forced command, set up by the module's own
/// script), nodes 2 and 3 are the group's instances, not yet in the swarm; moto plays SSM, EC2
/// and autoscaling, reached through the test's endpoint, which also plays each node's IMDSv2.
struct AwsSwarm {
    lab: Lab,
    moto: Moto,
    aws: LocalAws,
    /// The instance ids of nodes 2 and 3.
    instances: Vec<String>,
    group: String,
    launch_hook: String,
    terminate_hook: String,
    parameter: String,
    token_value: String,
    script: Vec<u8>,
}

impl AwsSwarm {
    /// `p` is an aws project (chapters 06 and 10 are rendered into it); `images` are loaded
    /// into every node.
    fn start(prefix: &str, p: &TestProject, images: &[&str]) -> AwsSwarm {
        for chapter in ["06", "10"] {
            render_env_into(p, chapter, "production");
        }
        let tf: hcl::Body = hcl::from_str(&p.read(ROOT_FILES[0])).unwrap();
        let group = local(&tf, "worker_name");
        let launch_hook = local(&tf, "launch_hook");
        let terminate_hook = local(&tf, "terminate_hook");
        let parameter = local(&tf, "join_token_parameter");
        let script = std::fs::read(p.file(ROOT_FILES[1])).unwrap();

        // Fresh Engines with the AWS CLI, curl and OpenSSH, as chapter 06's image has them.
        let started = Instant::now();
        let image = dind::ensure_image_with(
            "aws-ssh",
            &["awscli", "curl", "openssh-server", "openssh-client"],
        );
        eprintln!(
            "node image {image} ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        let lab = Lab::start_with(prefix, 3, &image);
        for image in images {
            lab.load_image(image);
        }
        let manager = &lab.nodes[0];
        manager.docker_ok(&["swarm", "init", "--advertise-addr", &manager.ip]);
        eprintln!(
            "3 nodes up, 1 manager, images loaded in {:.1}s",
            started.elapsed().as_secs_f64()
        );

        let moto =
            Moto::start().expect("moto_server (pip install 'moto[server]', .ci/requirements.txt)");
        let aws = LocalAws::start(&lab.gateway(), moto.port);
        let cli = |args: &[&str]| moto.aws(args);
        cli(&[
            "ec2",
            "create-launch-template",
            "--launch-template-name",
            &group,
            "--launch-template-data",
            r#"{"ImageId":"ami-12c6146b","InstanceType":"t3.small","MetadataOptions":{"HttpTokens":"required"}}"#,
        ]);
        cli(&[
            "autoscaling",
            "create-auto-scaling-group",
            "--auto-scaling-group-name",
            &group,
            "--launch-template",
            &format!("LaunchTemplateName={group}"),
            "--min-size",
            "1",
            "--max-size",
            "6",
            "--desired-capacity",
            "2",
            "--availability-zones",
            "eu-west-1a",
        ]);
        for (hook, transition, default) in [
            (
                &launch_hook,
                "autoscaling:EC2_INSTANCE_LAUNCHING",
                "ABANDON",
            ),
            (
                &terminate_hook,
                "autoscaling:EC2_INSTANCE_TERMINATING",
                "CONTINUE",
            ),
        ] {
            cli(&[
                "autoscaling",
                "put-lifecycle-hook",
                "--auto-scaling-group-name",
                &group,
                "--lifecycle-hook-name",
                hook,
                "--lifecycle-transition",
                transition,
                "--heartbeat-timeout",
                "120",
                "--default-result",
                default,
            ]);
        }
        let instances: Vec<String> = cli(&[
            "autoscaling",
            "describe-auto-scaling-instances",
            "--query",
            "AutoScalingInstances[].InstanceId",
            "--output",
            "text",
        ])
        .split_whitespace()
        .map(String::from)
        .collect();
        assert_eq!(instances.len(), 2, "moto launched the group's 2 instances");
        aws.add_instance(&lab.nodes[1].ip, &instances[0]);
        aws.add_instance(&lab.nodes[2].ip, &instances[1]);
        // The manager is an instance too (its own IMDS: address, instance-profile credentials).
        aws.add_instance(&manager.ip, "i-0000000000000000m");
        let token = manager.docker_ok(&["swarm", "join-token", "-q", "worker"]);
        let token_value = format!("{}:2377 {token}", manager.ip);

        let swarm = AwsSwarm {
            lab,
            moto,
            aws,
            instances,
            group,
            launch_hook,
            terminate_hook,
            parameter,
            token_value,
            script,
        };
        // Terraform creates the public key's and the host keys' parameters with the placeholder
        // `pending`; the first manager creates the private key's (and the join tokens').
        for name in [
            swarm.leave_parameter("node-leave-public-key"),
            swarm.leave_parameter("node-leave-known-hosts/0"),
            swarm.leave_parameter("node-leave-known-hosts/1"),
        ] {
            swarm.moto.put_secure_parameter(&name, "pending");
        }
        swarm.set_up_node_leave(p);
        // Manager 1 is gone: its parameter names an address with no SSH server on a worker
        // (its own loopback), with manager 0's host key. Workers must move on to manager 0.
        let line = swarm.moto.aws(&[
            "ssm",
            "get-parameter",
            "--name",
            &swarm.leave_parameter("node-leave-known-hosts/0"),
            "--with-decryption",
            "--query",
            "Parameter.Value",
            "--output",
            "text",
        ]);
        let key = line
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ");
        swarm.moto.put_secure_parameter(
            &swarm.leave_parameter("node-leave-known-hosts/1"),
            &format!("127.0.0.1 {key}"),
        );
        swarm
    }

    fn manager(&self) -> &Node {
        &self.lab.nodes[0]
    }

    /// The managers module's parameters sit next to the worker join token.
    fn leave_parameter(&self, leaf: &str) -> String {
        let prefix = self
            .parameter
            .strip_suffix("worker-join-token")
            .expect("the join token parameter's name");
        format!("{prefix}{leaf}")
    }

    /// What the first manager's user data does after the swarm init: the module's
    /// node-leave-setup.sh, run for real (sshd plays the AMI's, started the way systemd would).
    fn set_up_node_leave(&self, p: &TestProject) {
        let manager = self.manager();
        let module = "terraform/modules/swarm-managers";
        put_file(
            manager,
            "/usr/local/bin/beamops-node-leave",
            p.read(&format!("{module}/node-leave.sh")).as_bytes(),
            0o755,
        );
        put_file(
            manager,
            "/usr/local/sbin/beamops-node-leave-setup",
            p.read(&format!("{module}/node-leave-setup.sh")).as_bytes(),
            0o700,
        );
        let env = format!(
            "NODE_LEAVE_REGION=eu-west-1\nNODE_LEAVE_KEY_PARAMETER={}\nNODE_LEAVE_PUBLIC_KEY_PARAMETER={}\n\
             NODE_LEAVE_KNOWN_HOSTS_PARAMETER={}\nNODE_LEAVE_FIRST=true\nNODE_LEAVE_MAX_WAIT=120\n\
             AWS_ENDPOINT_URL={url}\nAWS_EC2_METADATA_SERVICE_ENDPOINT={url}/\n",
            self.leave_parameter("node-leave-key"),
            self.leave_parameter("node-leave-public-key"),
            self.leave_parameter("node-leave-known-hosts/0"),
            url = self.aws.url(),
        );
        put_file(
            manager,
            "/etc/beamops/node-leave.env",
            env.as_bytes(),
            0o644,
        );
        let (code, out) = exec(
            manager,
            &[
                "sh",
                "-c",
                "ssh-keygen -A && mkdir -p /run/sshd && /usr/sbin/sshd",
            ],
        );
        assert_eq!(code, 0, "sshd on the manager: {out}");
        let (code, out) = exec(manager, &["/usr/local/sbin/beamops-node-leave-setup"]);
        assert_eq!(code, 0, "node-leave setup: {out}");
        assert!(out.contains("key pair made"), "{out}");
        assert!(out.contains("published its host key"), "{out}");
        // Run twice (a reboot): the same key stays.
        let calls = self.aws.calls().len();
        let (code, again) = exec(manager, &["/usr/local/sbin/beamops-node-leave-setup"]);
        assert_eq!(code, 0, "node-leave setup again: {again}");
        assert!(!again.contains("key pair made"), "{again}");
        assert!(
            self.aws.calls()[calls..]
                .iter()
                .all(|c| c.action != "AmazonSSM.PutParameter"),
            "a second setup wrote a parameter"
        );
        let keys = exec(
            manager,
            &["cat", "/home/beamops-leave/.ssh/authorized_keys"],
        )
        .1;
        assert!(
            keys.starts_with("restrict,command=\"/usr/local/bin/beamops-node-leave\" ssh-ed25519 "),
            "{keys}"
        );
        let known = self.moto.aws(&[
            "ssm",
            "get-parameter",
            "--name",
            &self.leave_parameter("node-leave-known-hosts/0"),
            "--with-decryption",
            "--query",
            "Parameter.Value",
            "--output",
            "text",
        ]);
        let host_key = exec(manager, &["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).1;
        assert!(
            known.starts_with(&format!("{} ssh-ed25519 ", manager.ip))
                && host_key.contains(known.split_whitespace().nth(2).unwrap()),
            "the manager's address and host key are pinned: {known} / {host_key}"
        );
        // The private key went to SSM through a file the AWS CLI read: in no argv, no file left.
        let (_, left) = exec(
            manager,
            &[
                "sh",
                "-c",
                "ls /tmp; grep -rl 'OPENSSH PRIVATE' /tmp /root /etc/beamops || true",
            ],
        );
        assert!(!left.contains("key"), "a key file was left: {left}");
    }

    fn node_env(&self) -> String {
        format!(
            "NODE_REGION=eu-west-1\nNODE_TOKEN_PARAMETER={}\nNODE_LEAVE_KEY_PARAMETER={}\n\
             NODE_LEAVE_KNOWN_HOSTS_PARAMETERS={},{}\nNODE_ASG_NAME={}\nNODE_LAUNCH_HOOK={}\n\
             NODE_TERMINATE_HOOK={}\nNODE_HOOK_TIMEOUT=120\nNODE_READY_TIMEOUT=90\n\
             NODE_APP_PORT={APP_PORT}\nNODE_HEALTH_PATH=/health\nNODE_POLL_SECONDS=1\n\
             # The local AWS API and instance metadata; on EC2 these two lines do not exist.\n\
             AWS_ENDPOINT_URL={url}\nAWS_EC2_METADATA_SERVICE_ENDPOINT={url}/\n",
            self.parameter,
            self.leave_parameter("node-leave-key"),
            // Manager 1 first: it is gone (its address answers no SSH), so every request
            // shows the worker moving on to the next manager.
            self.leave_parameter("node-leave-known-hosts/1"),
            self.leave_parameter("node-leave-known-hosts/0"),
            self.group,
            self.launch_hook,
            self.terminate_hook,
            url = self.aws.url(),
        )
    }

    /// The launch template's user data, as cloud-init writes it.
    fn install(&self, node: &Node) {
        put_file(node, "/usr/local/sbin/beamops-node", &self.script, 0o755);
        put_file(
            node,
            "/etc/beamops/node.env",
            self.node_env().as_bytes(),
            0o644,
        );
        put_file(
            node,
            "/usr/local/sbin/as-worker",
            AS_WORKER.as_bytes(),
            0o755,
        );
    }

    /// `beamops-node bootstrap` on a node of the group (the token written `token_after` the
    /// start when given): seconds to the first task on it and to ready, and its log. Asserts
    /// the node joined as a labelled, ready worker and completed its launch action once.
    fn bootstrap(&self, node: &Node, iid: &str, token_after: Option<Duration>) -> (f64, f64) {
        let started = Instant::now();
        let mut child = node_command(node, "bootstrap")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(after) = token_after {
            std::thread::sleep(after);
            self.moto
                .put_secure_parameter(&self.parameter, &self.token_value);
        }
        let mut secs = None;
        while secs.is_none() && child.try_wait().unwrap().is_none() {
            let out = node.docker(&["ps", "-q", "--filter", "label=com.docker.swarm.task.id"]);
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                secs = Some(started.elapsed().as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "bootstrap of {}: {log}", node.name);
        let secs = secs.unwrap_or_else(|| {
            let out = node.docker(&["ps", "-q", "--filter", "label=com.docker.swarm.task.id"]);
            assert!(
                !String::from_utf8_lossy(&out.stdout).trim().is_empty(),
                "no task on {}",
                node.name
            );
            started.elapsed().as_secs_f64()
        });
        if token_after.is_some() {
            assert!(log.contains("holds no join token yet; waiting"), "{log}");
        }
        assert!(
            log.contains("was completed already")
                || log.contains("manager 127.0.0.1 did not answer; trying the next one"),
            "the requests went on to the next manager: {log}"
        );
        let ready_secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{}: bootstrap → first task {secs:.1}s, → ready {ready_secs:.1}s\n{log}",
            node.name
        );
        let nodes = node_list(self.manager());
        let entry = &nodes[&node.name];
        assert!(
            entry.starts_with("worker ready active"),
            "{}: {entry}",
            node.name
        );
        for label in [
            format!("\"beamops.instance-id\":\"{iid}\""),
            format!("\"beamops.asg\":\"{}\"", self.group),
            "\"beamops.ready\":\"true\"".to_string(),
            "\"beamops.pool\":\"worker\"".to_string(),
        ] {
            assert!(
                entry.contains(&label),
                "{}: {entry} lacks {label}",
                node.name
            );
        }
        let calls = self.aws.calls();
        assert!(
            calls.iter().any(|c| c.peer == node.ip
                && c.action == "AmazonSSM.GetParameter"
                && c.body.contains(&self.parameter)
                && c.body.contains("\"WithDecryption\": true")),
            "{} read the token from SSM: {calls:#?}",
            node.name
        );
        let completes = self.aws.completes(&self.launch_hook, iid);
        assert_eq!(
            completes.len(),
            1,
            "one launch action completed: {calls:#?}"
        );
        assert!(
            completes[0].body.contains("LifecycleActionResult=CONTINUE"),
            "{:?}",
            completes[0]
        );
        (secs, ready_secs)
    }

    /// What a worker holding the key (`from`) gets from the manager: (exit code, output).
    fn as_worker(&self, from: &Node, request: &str) -> (i32, String) {
        exec(from, &["/usr/local/sbin/as-worker", request])
    }

    /// A worker's key can drain no other node, run no docker and no shell, forward nothing;
    /// the swarm is unchanged. `own` proves the key itself works.
    fn assert_worker_key_confined(&self, from: &Node, other: &Node) {
        let manager = self.manager();
        let before = node_list(manager);
        let (other_id, manager_id) = (node_id(other), node_id(manager));
        for (request, refusal) in [
            (
                format!("drain {other_id} 30"),
                "is not the calling node".to_string(),
            ),
            (
                format!("remove {other_id} 5"),
                "is not the calling node".to_string(),
            ),
            (
                format!("label {other_id} i-0123456789abcdef0 {}", self.group),
                "is not the calling node".to_string(),
            ),
            (
                format!("drain {manager_id} 30"),
                "is not the calling node".to_string(),
            ),
            (
                "docker system dial-stdio".to_string(),
                "unknown request".to_string(),
            ),
            ("sh -c id".to_string(), "unknown request".to_string()),
            (String::new(), "unknown request".to_string()),
            (
                format!("drain {other_id};id"),
                "is no swarm node id".to_string(),
            ),
            // Its own node, but longer than the hook timeout (NODE_LEAVE_MAX_WAIT=120).
            (
                format!("drain {} 121", node_id(from)),
                "longer than the hook timeout".to_string(),
            ),
            (
                format!("remove {} 9999", node_id(from)),
                "longer than the hook timeout".to_string(),
            ),
        ] {
            let (code, out) = self.as_worker(from, &request);
            assert_eq!(code, 77, "`{request}` from {}: {out}", from.name);
            assert!(
                out.contains("refused: ") && out.contains(&refusal),
                "`{request}`: {out}"
            );
        }
        // `docker -H ssh://…` needs the Engine's socket; a forward to it is refused.
        let (code, out) = self.as_worker(from, "@forward");
        assert_ne!(code, 0, "the manager's Docker socket was forwarded: {out}");
        assert_eq!(
            node_list(manager),
            before,
            "a refused request changed the swarm"
        );
        // The key works for the caller's own node (an idempotent request).
        let (code, out) = self.as_worker(from, &format!("ready {}", node_id(from)));
        assert_eq!(code, 0, "the key on its own node: {out}");
        eprintln!(
            "the worker key from {} was refused everything but its own node",
            from.name
        );
    }

    /// Scale-in of `node`: the group deregisters it from the load balancer, holds it in
    /// Terminating:Wait (its metadata says `Terminated`); its running `watch` drains it.
    /// Returns the drain's seconds. Asserts the steps' order, the node removed and left, the
    /// termination action completed once by the node, and a second drain doing nothing.
    fn scale_in(&self, node: &Node, iid: &str, balancer: &Balancer) -> f64 {
        let manager = self.manager();
        let watcher = node_command(node, "watch")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        balancer.deregister(&node.ip);
        // The load balancer's deregistration delay: requests in flight to the node finish.
        std::thread::sleep(Duration::from_secs(1));
        self.moto.aws(&[
            "autoscaling",
            "terminate-instance-in-auto-scaling-group",
            "--instance-id",
            iid,
            "--should-decrement-desired-capacity",
        ]);
        let started = Instant::now();
        self.aws.set_lifecycle_state(&node.ip, "Terminated");
        let out = watcher.wait_with_output().unwrap();
        let drain_secs = started.elapsed().as_secs_f64();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "watch/drain on {}: {log}", node.name);
        eprintln!("{}: drained in {drain_secs:.1}s\n{log}", node.name);
        // In this order: drained, tasks elsewhere, left, removed (the manager's forced
        // command says so), lifecycle action completed.
        let order = [
            "beamops-node-leave: node ",
            "set to drain",
            "no task runs on",
            "left the swarm",
            "removed from the swarm",
            &format!(
                "lifecycle action {} for {iid} completed: CONTINUE",
                self.terminate_hook
            ),
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|step| {
                log.find(step)
                    .unwrap_or_else(|| panic!("drain log lacks `{step}`: {log}"))
            })
            .collect();
        assert!(
            at.windows(2).all(|w| w[0] < w[1]),
            "drain steps out of order: {log}"
        );
        let nodes = node_list(manager);
        assert!(
            !nodes.contains_key(&node.name),
            "{} is still listed: {nodes:?}",
            node.name
        );
        assert_eq!(
            node.docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]),
            "inactive"
        );
        let completes = self.aws.completes(&self.terminate_hook, iid);
        assert_eq!(completes.len(), 1, "{:#?}", self.aws.calls());
        assert!(completes[0].body.contains("LifecycleActionResult=CONTINUE"));
        assert_eq!(
            completes[0].peer, node.ip,
            "the node completed its own action"
        );
        eprintln!(
            "moto answered CompleteLifecycleAction with HTTP {:?} (not implemented in moto 5.2.5; the request is asserted)",
            completes[0].moto_status
        );

        // Drained twice: nothing more happens.
        let calls_before = self.aws.calls().len();
        let again = run_node_command(node, "drain");
        assert!(again.contains("drained and completed already"), "{again}");
        assert_eq!(
            node_list(manager),
            nodes,
            "a second drain changed the swarm"
        );
        assert_eq!(
            self.aws.calls().len(),
            calls_before,
            "a second drain called AWS"
        );
        drain_secs
    }
}

#[test]
fn a_worker_joins_from_ssm_serves_and_drains_on_its_termination_hook_without_a_failed_request() {
    let test = "a_worker_joins_from_ssm_serves_and_drains_on_its_termination_hook_without_a_failed_request";
    if !common::multinode_tests_enabled(test, "a Docker-in-Docker swarm and a local AWS API") {
        return;
    }
    let all = Instant::now();
    let prefix = format!("boas{}", std::process::id());
    let p = aws_project("coordination", "");

    // The app: a busybox httpd answering /health (no Erlang: the release is in the heavy
    // test below).
    let app = format!("{prefix}-web:latest");
    let _app_image = OuterImage(app.clone());
    busybox::build(
        &app,
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nCMD [\"/bin/busybox\", \"sh\", \"-c\", \"trap 'exit 0' TERM; /bin/busybox httpd -f -p 4000 -h /www & wait\"]\n",
        &[("www/health", b"ok\n", 0o644)],
    );
    let swarm = AwsSwarm::start(&prefix, &p, &[&app]);
    let (manager, n2, n3) = (swarm.manager(), &swarm.lab.nodes[1], &swarm.lab.nodes[2]);
    let instances = swarm.instances.clone();

    // The app: global on every node's host port (each worker is one ALB target), and a
    // replicated service whose tasks must move off a drained node.
    let web = format!("{prefix}-web");
    let jobs = format!("{prefix}-jobs");
    manager.docker_ok(&[
        "service",
        "create",
        "-d",
        "--no-resolve-image",
        "--name",
        &web,
        "--mode",
        "global",
        "--publish",
        &format!("mode=host,target=4000,published={APP_PORT}"),
        &app,
    ]);
    manager.docker_ok(&[
        "service",
        "create",
        "-d",
        "--no-resolve-image",
        "--name",
        &jobs,
        "--replicas",
        "2",
        "--replicas-max-per-node",
        "1",
        "--stop-grace-period",
        "2s",
        &app,
    ]);
    wait_for("the app answers on the manager", 60, || {
        matches!(
            http_get_at(&manager.ip, APP_PORT, "/health"),
            Some((200, _))
        )
        .then_some(())
    });
    let balancer = Balancer::start(&manager.ip);

    // Bootstrap: n2 starts while the parameter still holds `pending` (the test writes the
    // token 3 s later, as the first manager would); n3 once it is there.
    let mut first_task = Vec::new();
    for (node, iid, token_after) in [
        (n2, &instances[0], Some(Duration::from_secs(3))),
        (n3, &instances[1], None),
    ] {
        swarm.install(node);
        let (secs, ready) = swarm.bootstrap(node, iid, token_after);
        first_task.push((node.name.clone(), secs, ready));
        // Requests reach the node only after its launch action is completed.
        balancer.register(&node.ip);
    }
    assert_eq!(
        running_on(manager, &jobs).len(),
        2,
        "both jobs run once the workers joined"
    );

    // Bootstrapped twice: the same swarm, labels and lifecycle requests.
    let before = node_list(manager);
    let calls_before = swarm.aws.calls().len();
    let again = run_node_command(n2, "bootstrap");
    assert!(again.contains("already in the swarm"), "{again}");
    assert!(again.contains("completed already"), "{again}");
    assert_eq!(
        node_list(manager),
        before,
        "a second bootstrap changed the swarm"
    );
    assert_eq!(
        swarm.aws.calls().len(),
        calls_before,
        "a second bootstrap asked AWS again: {:#?}",
        &swarm.aws.calls()[calls_before..]
    );

    // The node-leave key in a worker's hands drains no other node and opens no Engine.
    swarm.assert_worker_key_confined(n3, n2);

    let jobs_on_n2 = running_on(manager, &jobs).contains(&n2.name);
    let drain_secs = swarm.scale_in(n2, &instances[0], &balancer);
    let jobs_now = running_on(manager, &jobs);
    assert_eq!(
        jobs_now.len(),
        2,
        "both jobs run after the drain: {jobs_now:?}"
    );
    assert!(!jobs_now.contains(&n2.name), "{jobs_now:?}");

    // The requests kept going a little after the drain.
    std::thread::sleep(Duration::from_secs(2));
    let counts = balancer.finish();
    let ok: u64 = counts.values().map(|c| c.0).sum();
    let failed: u64 = counts.values().map(|c| c.1).sum();
    eprintln!("figures: bootstrap → first task on the new node / → ready (s): {first_task:?}");
    eprintln!(
        "figures: drain of {} (a jobs task on it: {jobs_on_n2}) {drain_secs:.1}s",
        n2.name
    );
    eprintln!(
        "figures: requests through the balancer: {ok} ok, {failed} failed, per target {counts:?}"
    );
    eprintln!("whole test {:.1}s", all.elapsed().as_secs_f64());
    assert!(
        counts.get(&n2.ip).is_some_and(|c| c.0 > 0),
        "n2 served while registered: {counts:?}"
    );
    assert_eq!(failed, 0, "requests failed: {counts:?}");
    assert!(jobs_on_n2, "a jobs task ran on n2 before the drain");
}

/// The app's /health on a node's published port: (Erlang node name, the peers it sees).
fn health(node: &Node) -> Option<(String, BTreeSet<String>)> {
    let (200, body) = http_get_at(&node.ip, APP_PORT, "/health")? else {
        return None;
    };
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let peers = v["cluster"]
        .as_array()?
        .iter()
        .filter_map(|p| p.as_str().map(String::from))
        .collect();
    Some((v["node"].as_str()?.to_string(), peers))
}

/// The app's tasks run on exactly `hosts` and the Erlang cluster is whole: each task's node
/// sees every other task's node and no other (no node that went away is left in any view).
fn cluster_whole(swarm: &AwsSwarm, service: &str, hosts: &[&str]) -> Option<BTreeSet<String>> {
    let mut running = running_on(swarm.manager(), service);
    running.dedup();
    let mut want: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    want.sort();
    if running != want {
        return None;
    }
    let seen: Vec<(String, BTreeSet<String>)> = hosts
        .iter()
        .map(|h| swarm.lab.node_by_hostname(h).and_then(health))
        .collect::<Option<_>>()?;
    let names: BTreeSet<String> = seen.iter().map(|(name, _)| name.clone()).collect();
    (names.len() == hosts.len()
        && seen.iter().all(|(name, peers)| {
            let mut others = names.clone();
            others.remove(name);
            *peers == others
        }))
    .then_some(names)
}

#[test]
fn the_release_keeps_its_erlang_cluster_whole_while_a_worker_joins_and_drains() {
    let test = "the_release_keeps_its_erlang_cluster_whole_while_a_worker_joins_and_drains";
    if !common::multinode_tests_enabled(test, "a Docker-in-Docker swarm and a local AWS API")
        || !common::heavy_tests_enabled(test, "the release image on a Docker-in-Docker swarm")
    {
        return;
    }
    let all = Instant::now();
    let app = format!("boar{}", std::process::id());
    let service = format!("{app}_app");
    let p = aws_project(&app, "");

    // The release image (chapter 03, on its base images), then into every node.
    let _image = OuterImage(app.clone());
    let started = Instant::now();
    common::up_json(&p, "chapter-03");
    eprintln!(
        "release image built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let swarm = AwsSwarm::start(&app, &p, &[&format!("{app}:latest")]);
    let (manager, n2, n3) = (swarm.manager(), &swarm.lab.nodes[1], &swarm.lab.nodes[2]);
    let instances = swarm.instances.clone();
    swarm
        .moto
        .put_secure_parameter(&swarm.parameter, &swarm.token_value);

    // Deployed as chapters 07 and 08 would: the cookie a swarm secret, DNS clustering over the
    // overlay (dnsrr: no IPVS here), one task per node through the host-mode port. Two
    // replicas on a one-node swarm: one runs on the manager, the other waits for a worker.
    let cookie = format!("cookie-{app}-{:x}", std::process::id() ^ 0x5eed_c0de);
    manager.create_secret(&format!("{app}_release_cookie_v1"), &cookie);
    manager.create_secret(
        &format!("{app}_secret_key_base_v1"),
        &format!("{cookie}{cookie}{cookie}{cookie}"),
    );
    let yaml = p.read("beamops.yaml");
    let local = "  local:\n    provider: local\n    replicas: 1\n";
    assert!(
        yaml.contains(local),
        "the example's local environment changed"
    );
    p.write(
        "beamops.yaml",
        &(yaml.replace(
            local,
            &format!(
                "  local:\n    provider: local\n    replicas: 2\n    docker_host: {}\n",
                manager.host()
            ),
        ) + &format!(
            "\nchapters:\n  swarm:\n    database: false\n    publish: {APP_PORT}\n    publish_mode: host\n    endpoint_mode: dnsrr\n"
        )),
    );
    p.commit_all("the swarm of this test");
    let deploy = {
        let dir = p.path().to_path_buf();
        std::thread::spawn(move || {
            common::beamops_in(&dir)
                .args(["up", "chapter-08", "--format", "json"])
                .output()
                .unwrap()
        })
    };
    wait_for("the first task runs on the manager", 180, || {
        (running_on(manager, &service) == [manager.name.clone()]).then_some(())
    });
    let balancer = Balancer::start(&manager.ip);

    // Scale-out: n2 boots, joins from SSM, and the waiting task lands on it.
    swarm.install(n2);
    let (first_task_secs, ready_secs) = swarm.bootstrap(n2, &instances[0], None);
    balancer.register(&n2.ip);
    let out = deploy.join().unwrap();
    assert!(
        out.status.success(),
        "up chapter-08: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let names = wait_for("the cluster forms across the manager and n2", 120, || {
        cluster_whole(&swarm, &service, &[&manager.name, &n2.name])
    });
    eprintln!("cluster across the manager and n2: {names:?}");

    // n3: a worker of the group with room for a task (its own bootstrap would wait for an app
    // task that is not there to come; it joins from the same token, as the script does).
    swarm.install(n3);
    n3.docker_ok(&[
        "swarm",
        "join",
        "--advertise-addr",
        &n3.ip,
        "--token",
        swarm.token_value.split_whitespace().nth(1).unwrap(),
        &format!("{}:2377", manager.ip),
    ]);
    swarm.assert_worker_key_confined(n3, n2);

    // Scale-in of n2: its task moves to n3, the cluster is whole again without n2.
    let drain_secs = swarm.scale_in(n2, &instances[0], &balancer);
    let started = Instant::now();
    let names_after = wait_for(
        "the cluster is whole across the manager and n3",
        120,
        || cluster_whole(&swarm, &service, &[&manager.name, &n3.name]),
    );
    let heal_secs = started.elapsed().as_secs_f64();
    assert!(
        names.iter().any(|n| !names_after.contains(n)),
        "n2's Erlang node is gone from every view: {names:?} → {names_after:?}"
    );
    // The load balancer's health check finds the task on n3.
    balancer.register(&n3.ip);
    std::thread::sleep(Duration::from_secs(3));
    let counts = balancer.finish();
    let ok: u64 = counts.values().map(|c| c.0).sum();
    let failed: u64 = counts.values().map(|c| c.1).sum();
    eprintln!(
        "figures (release): bootstrap → first task on n2 {first_task_secs:.1}s, → ready {ready_secs:.1}s; drain {drain_secs:.1}s; cluster whole {heal_secs:.1}s after the drain; requests {ok} ok, {failed} failed, per target {counts:?}"
    );
    eprintln!("whole test {:.1}s", all.elapsed().as_secs_f64());
    assert!(
        counts.get(&n2.ip).is_some_and(|c| c.0 > 0),
        "n2 served while registered: {counts:?}"
    );
    assert!(
        counts.get(&n3.ip).is_some_and(|c| c.0 > 0),
        "n3 served after the drain: {counts:?}"
    );
    assert_eq!(failed, 0, "requests failed: {counts:?}");
}
