//! A real S3 server for the fleet tests: moto's, run by `tests/support/s3_server.py` on 127.0.0.1 with a free port,
//! its bucket created at start; it can be stopped, paused (a store that hangs) and restarted on the same port
//! (the bucket comes back empty), and the test reads, lists and corrupts its objects through `object_store`.

use std::io::{BufRead, BufReader, Read};
use std::path::Path as FsPath;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};

/// The key pair every client uses: moto accepts any, as long as requests are signed.
const KEY_ID: &str = "test";
const SECRET: &str = "test";
const REGION: &str = "us-east-1";

/// Exit code of the script when moto, boto3 or werkzeug is missing: a reason to skip, not a failure.
const MISSING_MOTO: i32 = 3;

/// moto's S3 on 127.0.0.1 with one bucket. Dropping it kills the server.
pub struct S3Server {
    port: u16,
    bucket: String,
    process: Option<Process>,
    /// Everything the servers (every start) wrote to stderr: moto's access log, for failure messages.
    log: Arc<Mutex<String>>,
    store: AmazonS3,
}

/// One run of the script.
struct Process {
    child: Child,
    /// The script exits when this pipe closes, so a test process that dies without dropping us leaves no server.
    _stdin: ChildStdin,
}

/// Why a start did not give a server.
enum StartError {
    /// python3 or moto is missing: the test skips.
    Unavailable(String),
    /// Anything else: the test fails.
    Failed(String),
}

impl S3Server {
    /// Starts the server on a free port with `bucket` created. `None` (after printing why) when python3 or moto
    /// is missing, so the caller can skip; any other failure panics.
    pub async fn start(bucket: &str) -> Option<S3Server> {
        let log = Arc::new(Mutex::new(String::new()));
        let (bucket_name, sink) = (bucket.to_owned(), Arc::clone(&log));
        let started = tokio::task::spawn_blocking(move || spawn(0, &bucket_name, &sink)).await.unwrap();
        let (process, port) = match started {
            Ok(started) => started,
            Err(StartError::Unavailable(reason)) => {
                eprintln!("no S3 server: {reason}");
                return None;
            }
            Err(StartError::Failed(reason)) => panic!("the S3 server did not start: {reason}"),
        };
        let store = store_client(port, bucket);
        Some(S3Server { port, bucket: bucket.to_owned(), process: Some(process), log, store })
    }

    /// The port it listens on, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://BUCKET/PREFIX`, the value of `--shared-cache`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The environment a Mirage process needs to reach this server (`AWS_*`).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// What the server processes logged (moto's access log: one line per request).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Kills the server, as a crash would (open connections are reset), and waits until it is gone: afterwards
    /// connecting is refused. Every object is lost.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            tokio::task::spawn_blocking(move || {
                let _ = process.child.kill();
                let _ = process.child.wait();
            })
            .await
            .unwrap();
        }
    }

    /// Starts the server again on the same port, the bucket recreated empty, and waits until it answers. Retries
    /// for a few seconds while the port is still taken by the old server's sockets.
    pub async fn restart(&mut self) {
        self.stop().await;
        let (port, bucket, sink) = (self.port, self.bucket.clone(), Arc::clone(&self.log));
        let started = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match spawn(port, &bucket, &sink) {
                    Ok((process, _)) => return Ok(process),
                    Err(StartError::Failed(reason)) if Instant::now() < deadline => {
                        eprintln!("S3 server restart on port {port} failed, retrying: {reason}");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(StartError::Failed(reason) | StartError::Unavailable(reason)) => return Err(reason),
                }
            }
        })
        .await
        .unwrap();
        match started {
            Ok(process) => self.process = Some(process),
            Err(reason) => panic!("the S3 server did not restart on port {}: {reason}", self.port),
        }
    }

    /// Freezes the server (SIGSTOP): connections are still accepted by the kernel but nothing answers, a store
    /// that hangs rather than refuses. `resume` undoes it; a paused server is still killed on drop.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let process = self.process.as_ref().expect("the S3 server is running");
        let sent = Command::new("kill").args([signal, &process.child.id().to_string()]).status();
        assert!(sent.is_ok_and(|status| status.success()), "kill {signal} failed");
    }

    // -----------------------------------------------------------------------------------------------------------
    // Objects
    // -----------------------------------------------------------------------------------------------------------

    /// Every key under `prefix` (a whole path segment, as `object_store` lists), sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let prefix = Path::parse(prefix).unwrap_or_else(|e| panic!("{prefix:?}: {e}"));
        let listed: Vec<_> = self.store.list(Some(&prefix)).collect().await;
        let mut keys: Vec<String> = listed
            .into_iter()
            .map(|meta| meta.unwrap_or_else(|e| panic!("listing {prefix}: {e}")).location.to_string())
            .collect();
        keys.sort();
        keys
    }

    /// The object's bytes, or `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Option<Bytes> {
        match self.store.get(&path(key)).await {
            Ok(found) => Some(found.bytes().await.unwrap_or_else(|e| panic!("reading {key}: {e}"))),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("getting {key}: {e}"),
        }
    }

    /// Writes (or overwrites) the object.
    pub async fn put(&self, key: &str, body: Bytes) {
        self.store.put(&path(key), PutPayload::from_bytes(body)).await.unwrap_or_else(|e| panic!("putting {key}: {e}"));
    }

    /// A create-only write (`If-None-Match: *`, how a fill lease is taken): whether it created the object. False
    /// when the object already exists.
    pub async fn create(&self, key: &str, body: Bytes) -> bool {
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.store.put_opts(&path(key), PutPayload::from_bytes(body), options).await {
            Ok(_) => true,
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => false,
            Err(e) => panic!("creating {key}: {e}"),
        }
    }

    /// Whether the object exists.
    pub async fn exists(&self, key: &str) -> bool {
        match self.store.head(&path(key)).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => panic!("head {key}: {e}"),
        }
    }

    /// Deletes the object (no error when it does not exist).
    pub async fn delete(&self, key: &str) {
        self.store.delete(&path(key)).await.unwrap_or_else(|e| panic!("deleting {key}: {e}"));
    }

    /// Polls (every 50 ms, at most `limit`) until the object exists; returns its bytes, or `None` when it never
    /// appeared. Mirage writes to the store in the background, after it has answered.
    pub async fn wait_for(&self, key: &str, limit: Duration) -> Option<Bytes> {
        self.wait_for_object(key, limit, |_| true).await
    }

    /// Polls (every 50 ms, at most `limit`) until the object exists and `done` holds for its bytes; returns them.
    pub async fn wait_for_object(&self, key: &str, limit: Duration, done: impl Fn(&Bytes) -> bool) -> Option<Bytes> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(body) = self.get(key).await.filter(|body| done(body)) {
                return Some(body);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(process) = &mut self.process {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

fn path(key: &str) -> Path {
    Path::parse(key).unwrap_or_else(|e| panic!("{key:?}: {e}"))
}

/// A client of the test's own, with short timeouts and one retry: a test must fail fast, not wait out the
/// default three minutes of retries when the server is down.
fn store_client(port: u16, bucket: &str) -> AmazonS3 {
    // reqwest is built without a default TLS provider; building any client needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let retry = RetryConfig { max_retries: 1, retry_timeout: Duration::from_secs(5), ..RetryConfig::default() };
    AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(REGION)
        .with_access_key_id(KEY_ID)
        .with_secret_access_key(SECRET)
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_retry(retry)
        // `with_client_options` replaces the builder's options, `with_allow_http` included: plain HTTP is allowed
        // here, on the options themselves.
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(true)
                .with_timeout(Duration::from_secs(5))
                .with_connect_timeout(Duration::from_secs(2)),
        )
        .build()
        .unwrap_or_else(|e| panic!("S3 client for 127.0.0.1:{port}/{bucket}: {e}"))
}

/// Runs the script on `port` (0: any) and waits (at most 20 s) for its `PORT n` line.
fn spawn(port: u16, bucket: &str, log: &Arc<Mutex<String>>) -> Result<(Process, u16), StartError> {
    let script = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/s3_server.py");
    let mut command = Command::new("python3");
    command.arg(&script);
    if port != 0 {
        command.arg(port.to_string());
    }
    command.args(["--bucket", bucket]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // The developer's own AWS settings (a profile, a real endpoint) have nothing to do with this server.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StartError::Unavailable(format!("python3 is not installed ({e})")));
        }
        Err(e) => return Err(StartError::Failed(format!("spawning python3: {e}"))),
    };
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    // Drains stderr for the whole run: a full pipe would block the server.
    let sink = Arc::clone(log);
    let drained = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = port_tx.send(line);
        // Nothing else is printed; keep reading so the pipe never fills.
        let _ = stdout.read_to_end(&mut Vec::new());
    });
    let line = port_rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    if let Some(port) = line.trim().strip_prefix("PORT ").and_then(|port| port.parse().ok()) {
        return Ok((Process { child, _stdin: stdin }, port));
    }
    // No port line: it exited (or hangs: kill it), and stderr says why.
    let _ = child.kill();
    let status = child.wait().ok().and_then(|status| status.code());
    let stderr = drained.join().unwrap_or_default();
    if status == Some(MISSING_MOTO) {
        Err(StartError::Unavailable(stderr.trim().to_owned()))
    } else {
        Err(StartError::Failed(format!("exit code {status:?}, stderr:\n{stderr}")))
    }
}
