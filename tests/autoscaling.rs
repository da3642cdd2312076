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

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestProject, example_copy, http_get_at, render_env_into};
use dind::{Lab, Node};
use local_aws::{LocalAws, Moto};

/// The example, its aws environment `production` with autoscaling bounds, and `chapters`
/// (top-level YAML, may be empty).
pub fn aws_project(chapters: &str) -> TestProject {
    let p = example_copy("coordination");
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
const COMPLETE: &str = "chapters:\n  autoscaling:\n    manager_docker_host: tcp://manager.internal:2376\n    certificate_arn: arn:aws:acm:eu-west-1:123456789012:certificate/0f7e3d4c-1111-2222-3333-444455556666\n    access_logs_bucket: coordination-alb-logs\n";

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
    let p = aws_project("");
    render_env_into(&p, "10", "production");
    let tf = p.read(ROOT_FILES[0]);
    for key in [
        "certificate_arn",
        "access_logs_bucket",
        "manager_docker_host",
    ] {
        assert!(
            tf.contains(&format!(
                "# beamops:missing chapters.autoscaling.{key} in beamops.yaml"
            )),
            "{key} missing is not said"
        );
    }
    let p = aws_project(COMPLETE);
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
    let p = aws_project(COMPLETE);
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

fn multinode_tests_enabled(test: &str) -> bool {
    common::multinode_tests_enabled(test, "a Docker-in-Docker swarm and a local AWS API")
}

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

/// Removes the test's images from the outer Engine.
struct OuterImage(String);

impl Drop for OuterImage {
    fn drop(&mut self) {
        let _ = dind::docker(&["rmi", "-f", &self.0]);
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

#[test]
fn a_worker_joins_from_ssm_serves_and_drains_on_its_termination_hook_without_a_failed_request() {
    let test = "a_worker_joins_from_ssm_serves_and_drains_on_its_termination_hook_without_a_failed_request";
    if !multinode_tests_enabled(test) {
        return;
    }
    let all = Instant::now();
    let prefix = format!("boas{}", std::process::id());

    // What chapter 10 renders for an aws environment: the script and the names it must use.
    let p = aws_project("");
    render_env_into(&p, "10", "production");
    let tf: hcl::Body = hcl::from_str(&p.read(ROOT_FILES[0])).unwrap();
    let group = local(&tf, "worker_name");
    let launch_hook = local(&tf, "launch_hook");
    let terminate_hook = local(&tf, "terminate_hook");
    let parameter = local(&tf, "join_token_parameter");
    let script = std::fs::read(p.file(ROOT_FILES[1])).unwrap();

    // The app: a busybox httpd answering /health (no Erlang: see docs/autoscaling.md).
    let app = format!("{prefix}-web:latest");
    let _app_image = OuterImage(app.clone());
    busybox::build(
        &app,
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nCMD [\"/bin/busybox\", \"sh\", \"-c\", \"trap 'exit 0' TERM; /bin/busybox httpd -f -p 4000 -h /www & wait\"]\n",
        &[("www/health", b"ok\n", 0o644)],
    );

    // Three fresh Engines with the AWS CLI and curl, as chapter 06's image has them.
    let started = Instant::now();
    let image = dind::ensure_image_with("aws", &["awscli", "curl"]);
    eprintln!(
        "node image {image} ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let lab = Lab::start_with(&prefix, 3, &image);
    lab.load_image(&app);
    let (manager, n2, n3) = (&lab.nodes[0], &lab.nodes[1], &lab.nodes[2]);
    manager.docker_ok(&["swarm", "init", "--advertise-addr", &manager.ip]);
    eprintln!(
        "3 nodes up, 1 manager, app image loaded in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // The local AWS API: moto on 127.0.0.1, reached by the nodes through the test's endpoint
    // on the lab bridge, which also plays each node's instance metadata (IMDSv2).
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
    aws.add_instance(&n2.ip, &instances[0]);
    aws.add_instance(&n3.ip, &instances[1]);
    // What chapter 08's first manager does on AWS: the worker token into the SecureString.
    let token = manager.docker_ok(&["swarm", "join-token", "-q", "worker"]);
    // Terraform creates it with a placeholder; the token comes once the first manager is up
    // (written below, while the first worker's bootstrap already waits for it).
    moto.put_secure_parameter(&parameter, "pending");
    let token_value = format!("{}:2377 {token}", manager.ip);

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

    let node_env = || {
        format!(
            "NODE_REGION=eu-west-1\nNODE_TOKEN_PARAMETER={parameter}\nNODE_MANAGER_DOCKER_HOST={}\nNODE_ASG_NAME={group}\nNODE_LAUNCH_HOOK={launch_hook}\n\
             NODE_TERMINATE_HOOK={terminate_hook}\nNODE_HOOK_TIMEOUT=120\nNODE_READY_TIMEOUT=90\n\
             NODE_APP_PORT={APP_PORT}\nNODE_HEALTH_PATH=/health\nNODE_POLL_SECONDS=1\n\
             # The local AWS API and instance metadata; on EC2 these two lines do not exist.\n\
             AWS_ENDPOINT_URL={url}\nAWS_EC2_METADATA_SERVICE_ENDPOINT={url}/\n",
            manager.host(),
            url = aws.url(),
        )
    };
    for node in [n2, n3] {
        put_file(node, "/usr/local/sbin/beamops-node", &script, 0o755);
        put_file(node, "/etc/beamops/node.env", node_env().as_bytes(), 0o644);
    }

    // Bootstrap: join from SSM, label, ready once the app answers; the first task's arrival
    // is timed from the bootstrap's start.
    let mut first_task = Vec::new();
    for (node, iid) in [(n2, &instances[0]), (n3, &instances[1])] {
        let started = Instant::now();
        let mut child = node_command(node, "bootstrap")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if node.name == n2.name {
            std::thread::sleep(Duration::from_secs(3));
            moto.put_secure_parameter(&parameter, &token_value);
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
        if node.name == n2.name {
            assert!(log.contains("holds no join token yet; waiting"), "{log}");
        }
        let ready_secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{}: bootstrap → first task {secs:.1}s, → ready {ready_secs:.1}s\n{log}",
            node.name
        );
        first_task.push((node.name.clone(), secs, ready_secs));
        let nodes = node_list(manager);
        let entry = &nodes[&node.name];
        assert!(
            entry.starts_with("worker ready active"),
            "{}: {entry}",
            node.name
        );
        for label in [
            format!("\"beamops.instance-id\":\"{iid}\""),
            "\"beamops.ready\":\"true\"".to_string(),
            "\"beamops.pool\":\"worker\"".to_string(),
        ] {
            assert!(
                entry.contains(&label),
                "{}: {entry} lacks {label}",
                node.name
            );
        }
        // Requests reach the node only after its launch action is completed.
        balancer.register(&node.ip);
        let calls = aws.calls();
        assert!(
            calls.iter().any(|c| c.peer == node.ip
                && c.action == "AmazonSSM.GetParameter"
                && c.body.contains(&parameter)
                && c.body.contains("\"WithDecryption\": true")),
            "{} read the token from SSM: {calls:#?}",
            node.name
        );
        let completes = aws.completes(&launch_hook, iid);
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
    }
    assert_eq!(
        running_on(manager, &jobs).len(),
        2,
        "both jobs run once the workers joined"
    );

    // Bootstrapped twice: the same swarm, labels and lifecycle requests.
    let before = node_list(manager);
    let calls_before = aws.calls().len();
    let again = run_node_command(n2, "bootstrap");
    assert!(again.contains("already in the swarm"), "{again}");
    assert!(again.contains("completed already"), "{again}");
    assert_eq!(
        node_list(manager),
        before,
        "a second bootstrap changed the swarm"
    );
    assert!(
        aws.calls()[calls_before..]
            .iter()
            .all(|c| c.action != "CompleteLifecycleAction" && c.action != "AmazonSSM.GetParameter"),
        "a second bootstrap asked AWS again: {:#?}",
        &aws.calls()[calls_before..]
    );

    // Scale-in of n2: the group deregisters it from the target group, then holds it in
    // Terminating:Wait, which its instance metadata shows as target lifecycle state
    // `Terminated`; the watcher (its systemd unit) drains it.
    let jobs_on_n2 = running_on(manager, &jobs).contains(&n2.name);
    let watcher = node_command(n2, "watch")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    balancer.deregister(&n2.ip);
    // The load balancer's deregistration delay: requests in flight to n2 finish.
    std::thread::sleep(Duration::from_secs(1));
    cli(&[
        "autoscaling",
        "terminate-instance-in-auto-scaling-group",
        "--instance-id",
        &instances[0],
        "--should-decrement-desired-capacity",
    ]);
    let started = Instant::now();
    aws.set_lifecycle_state(&n2.ip, "Terminated");
    let out = watcher.wait_with_output().unwrap();
    let drain_secs = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "watch/drain on n2: {log}");
    eprintln!("{}: drained in {drain_secs:.1}s\n{log}", n2.name);
    // In this order: drained, tasks elsewhere, left, removed, lifecycle action completed.
    let order = [
        "set to drain",
        "no task runs on",
        "left the swarm",
        "removed from the swarm",
        &format!(
            "lifecycle action {terminate_hook} for {} completed: CONTINUE",
            instances[0]
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
        !nodes.contains_key(&n2.name),
        "n2 is still listed: {nodes:?}"
    );
    assert_eq!(
        n2.docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]),
        "inactive"
    );
    let jobs_now = running_on(manager, &jobs);
    assert_eq!(
        jobs_now.len(),
        2,
        "both jobs run after the drain: {jobs_now:?}"
    );
    assert!(!jobs_now.contains(&n2.name), "{jobs_now:?}");
    let completes = aws.completes(&terminate_hook, &instances[0]);
    assert_eq!(completes.len(), 1, "{:#?}", aws.calls());
    assert!(completes[0].body.contains("LifecycleActionResult=CONTINUE"));
    assert_eq!(
        completes[0].peer, n2.ip,
        "the node completed its own action"
    );

    // Drained twice: nothing more happens.
    let calls_before = aws.calls().len();
    let again = run_node_command(n2, "drain");
    assert!(again.contains("drained and completed already"), "{again}");
    assert_eq!(
        node_list(manager),
        nodes,
        "a second drain changed the swarm"
    );
    assert_eq!(aws.calls().len(), calls_before, "a second drain called AWS");

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
    eprintln!(
        "figures: moto answered CompleteLifecycleAction with HTTP {:?} (not implemented in moto 5.2.5; the request is asserted)",
        completes[0].moto_status
    );
    eprintln!("whole test {:.1}s", all.elapsed().as_secs_f64());
    assert!(
        counts.get(&n2.ip).is_some_and(|c| c.0 > 0),
        "n2 served while registered: {counts:?}"
    );
    assert_eq!(failed, 0, "requests failed: {counts:?}");
    assert!(jobs_on_n2, "a jobs task ran on n2 before the drain");
}
