//! A local AWS for tests: moto's server on 127.0.0.1 (SSM, EC2, autoscaling), and an endpoint
//! on a lab network that the Docker-in-Docker nodes reach it through. That endpoint
//! - forwards every AWS API request to moto and records it (who sent it, the action, the body),
//!   so a test asserts on what a node asked for even where moto's answer is wrong;
//! - plays each node's instance metadata service, IMDSv2 only (a PUT for a session token
//!   first, then the token on every read), keyed by the node's address: instance id, private
//!   address, the autoscaling target lifecycle state, and instance-profile credentials, so the
//!   AWS CLI on a node finds credentials the way it does on EC2.
//!
//! moto 5.2.5 does not implement `CompleteLifecycleAction` (it answers HTTP 500 with an HTML
//! page): for that action alone the endpoint answers AWS's documented empty success after
//! recording the request and moto's status. Nothing else is answered for moto.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const REGION: &str = "eu-west-1";

/// `moto_server` on 127.0.0.1 at a free port; killed when dropped.
pub struct Moto {
    pub port: u16,
    child: Child,
    aws: std::path::PathBuf,
}

fn venv_tool(name: &str) -> Option<std::path::PathBuf> {
    let path = crate::common::tool_path();
    std::env::split_paths(&path)
        .chain(std::iter::once(std::path::PathBuf::from(
            "/work/main/.ci/venv/bin",
        )))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Moto {
    pub fn start() -> Result<Moto, String> {
        let server = venv_tool("moto_server").ok_or("no moto_server on PATH")?;
        let aws = venv_tool("aws").ok_or("no aws CLI on PATH")?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let moto = Moto { port, child, aws };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("moto_server did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(moto)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The AWS CLI against moto; panics with its output on failure.
    pub fn aws(&self, args: &[&str]) -> String {
        let out = Command::new(&self.aws)
            .args(args)
            .env("AWS_ENDPOINT_URL", self.url())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", REGION)
            .env_remove("AWS_PROFILE")
            .output()
            .expect("the aws CLI");
        assert!(
            out.status.success(),
            "aws {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A SecureString parameter; the value goes through a 0600 file, never argv.
    pub fn put_secure_parameter(&self, name: &str, value: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), value).unwrap();
        let arg = format!("file://{}", file.path().display());
        self.aws(&[
            "ssm",
            "put-parameter",
            "--name",
            name,
            "--type",
            "SecureString",
            "--overwrite",
            "--value",
            &arg,
        ]);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One AWS API request a node sent.
#[derive(Debug, Clone)]
pub struct Call {
    pub peer: String,
    /// `X-Amz-Target` (JSON APIs: `AmazonSSM.GetParameter`) or the query API's `Action`.
    pub action: String,
    pub body: String,
    pub moto_status: u16,
}

#[derive(Default)]
struct Shared {
    calls: Vec<Call>,
    /// Node address → (instance id, target lifecycle state).
    instances: HashMap<String, (String, String)>,
    imds_reads: u64,
}

pub struct LocalAws {
    pub addr: String,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
}

impl LocalAws {
    /// Listens on `bind_ip` (the lab bridge's gateway) at a free port, forwarding to moto.
    pub fn start(bind_ip: &str, moto_port: u16) -> LocalAws {
        let listener = TcpListener::bind((bind_ip, 0)).expect("binding on the lab gateway");
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            let shared = shared.clone();
                            let peer = peer.ip().to_string();
                            std::thread::spawn(move || {
                                let _ = serve(stream, &peer, moto_port, &shared);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
        }
        LocalAws { addr, shared, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add_instance(&self, node_ip: &str, instance_id: &str) {
        self.shared.lock().unwrap().instances.insert(
            node_ip.to_string(),
            (instance_id.to_string(), "InService".to_string()),
        );
    }

    /// What `autoscaling/target-lifecycle-state` says for the node (`Terminated` while the
    /// termination hook holds it).
    pub fn set_lifecycle_state(&self, node_ip: &str, state: &str) {
        if let Some(entry) = self.shared.lock().unwrap().instances.get_mut(node_ip) {
            entry.1 = state.to_string();
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().unwrap().calls.clone()
    }

    /// The `CompleteLifecycleAction` requests for a hook and instance.
    pub fn completes(&self, hook: &str, instance: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| {
                c.action == "CompleteLifecycleAction"
                    && c.body.contains(&format!("LifecycleHookName={hook}&"))
                    && c.body.contains(&format!("InstanceId={instance}"))
            })
            .collect()
    }
}

impl Drop for LocalAws {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if status == 200 { "OK" } else { "Error" },
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn serve(
    mut stream: TcpStream,
    peer: &str,
    moto_port: u16,
    shared: &Mutex<Shared>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let request = read_request(&stream)?;
    if request.path.starts_with("/latest/") {
        metadata(&mut stream, peer, &request, shared);
        return Ok(());
    }
    let body = String::from_utf8_lossy(&request.body).into_owned();
    let action = request
        .header("x-amz-target")
        .map(str::to_string)
        .or_else(|| {
            body.split('&')
                .find_map(|kv| kv.strip_prefix("Action="))
                .map(str::to_string)
        })
        .unwrap_or_default();
    // Forward to moto, asking it to close the connection after its answer.
    let mut upstream = TcpStream::connect(("127.0.0.1", moto_port))?;
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
    for (k, v) in &request.headers {
        if !k.eq_ignore_ascii_case("connection") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    upstream.write_all(head.as_bytes())?;
    upstream.write_all(&request.body)?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    let status = String::from_utf8_lossy(&answer[..answer.len().min(16)])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    shared.lock().unwrap().calls.push(Call {
        peer: peer.to_string(),
        action: action.clone(),
        body,
        moto_status: status,
    });
    if action == "CompleteLifecycleAction" && status != 200 {
        // moto's gap (see the module comment): AWS's answer to a completed action.
        respond(
            &mut stream,
            200,
            "text/xml",
            b"<CompleteLifecycleActionResponse xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\"><CompleteLifecycleActionResult/><ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata></CompleteLifecycleActionResponse>",
        );
        return Ok(());
    }
    stream.write_all(&answer)?;
    Ok(())
}

const ROLE: &str = "beamops-test-worker";

fn metadata(stream: &mut TcpStream, peer: &str, request: &Request, shared: &Mutex<Shared>) {
    let token = format!("imds-token-{peer}");
    if request.path == "/latest/api/token" {
        if request.method != "PUT"
            || request
                .header("x-aws-ec2-metadata-token-ttl-seconds")
                .is_none()
        {
            return respond(stream, 400, "text/plain", b"IMDSv2: PUT with a TTL");
        }
        return respond(stream, 200, "text/plain", token.as_bytes());
    }
    // IMDSv2 is required (the launch template's http_tokens = "required").
    if request.header("x-aws-ec2-metadata-token") != Some(token.as_str()) {
        return respond(stream, 401, "text/plain", b"Unauthorized");
    }
    let mut shared = shared.lock().unwrap();
    shared.imds_reads += 1;
    let Some((instance, state)) = shared.instances.get(peer).cloned() else {
        return respond(stream, 404, "text/plain", b"unknown instance");
    };
    drop(shared);
    let path = request.path.trim_start_matches("/latest/meta-data/");
    let credentials = format!("iam/security-credentials/{ROLE}");
    let body = match path {
        "instance-id" => instance,
        "local-ipv4" => peer.to_string(),
        "autoscaling/target-lifecycle-state" => state,
        "iam/security-credentials/" | "iam/security-credentials" => ROLE.to_string(),
        p if p == credentials => serde_json::json!({
            "Code": "Success",
            "Type": "AWS-HMAC",
            "AccessKeyId": "testing",
            "SecretAccessKey": "testing",
            "Token": "testing",
            "LastUpdated": "2026-01-01T00:00:00Z",
            "Expiration": "2099-01-01T00:00:00Z",
        })
        .to_string(),
        _ => return respond(stream, 404, "text/plain", b"Not Found"),
    };
    respond(stream, 200, "text/plain", body.as_bytes());
}
