//! The `mirage` binary: help text, flag validation, graceful SIGTERM and JSON logs.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{Route, Upstream, client, get, photo};

/// The flags of README's "Flags" table, in the order it lists them: the table is the documentation of `serve`.
fn readme_flags() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme.split("\n## Flags\n").nth(1).unwrap().split("\n## ").next().unwrap();
    table
        .lines()
        .filter_map(|line| line.strip_prefix("| `--"))
        .map(|rest| format!("--{}", rest.split(['`', ' ']).next().unwrap()))
        .collect()
}

fn mirage() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mirage"));
    command.env_remove("RUST_LOG");
    command
}

/// A `mirage serve` child process, killed if the test ends early.
struct Server {
    child: Option<Child>,
    addr: SocketAddr,
}

impl Server {
    /// Starts `mirage serve` on a free loopback port and waits until `/healthz` answers.
    async fn start(cache_dir: &std::path::Path, flags: &[&str]) -> Server {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = mirage()
            .args(["serve", "--listen", &addr.to_string(), "--cache-dir", cache_dir.to_str().unwrap()])
            .arg("--allow-private-networks")
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mirage");
        let server = Server { child: Some(child), addr };
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let health = client.get(format!("http://{addr}/healthz")).send().await;
            if health.is_ok_and(|response| response.status() == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "mirage did not answer /healthz within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (at most 10 s) for the process to exit; returns its status and what it wrote to stderr.
    async fn wait(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("mirage did not exit within 10 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let output = child.wait_with_output().unwrap();
        (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn serve_help_lists_every_flag() {
    let output = mirage().args(["serve", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let documented = readme_flags();
    assert!(documented.len() >= 30, "README's Flags table was not found: {documented:?}");
    for flag in &documented {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "`mirage serve --help` does not mention {flag}:\n{help}"
        );
    }
    // And the other way round: every flag `serve` takes is in the README's table.
    for flag in help
        .split_whitespace()
        .filter(|word| word.starts_with("--"))
        .map(|word| word.trim_end_matches([',', '.', ';', ':', ')']))
    {
        let flag = flag.split('=').next().unwrap_or(flag);
        if flag == "--help" {
            continue;
        }
        assert!(documented.iter().any(|d| d == flag), "{flag} is not in README's Flags table");
    }
    let top = mirage().arg("--help").output().unwrap();
    assert!(top.status.success());
    assert!(String::from_utf8_lossy(&top.stdout).contains("serve"));
}

#[test]
fn invalid_flags_are_refused_before_serving() {
    for bad in [
        &["--max-inflight-fetches", "0"][..],
        &["--memory-cache-size", "12parsecs"],
        &["--min-ttl", "2d", "--max-ttl", "1d"],
        &["--fetch-timeout", "0s"],
        &["--allow-net", "not-a-cidr"],
    ] {
        let output = mirage()
            .args(["serve", "--listen", "127.0.0.1:0", "--no-disk-cache"])
            .args(bad)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{bad:?} was accepted");
        assert!(!output.stderr.is_empty(), "{bad:?}: no message on stderr");
    }
}

#[test]
fn config_is_built_from_flags_as_typed() {
    let parse =
        |argv: &[&str]| mirage::config::ServeArgs::try_parse_from(argv).map_err(|e| e.to_string())?.into_config();
    let config =
        parse(&["serve", "--no-disk-cache", "--fetch-timeout", "500ms", "--memory-cache-size", "1KiB"]).unwrap();
    assert_eq!(config.pipeline.fetch.total_timeout, Duration::from_millis(500));
    assert_eq!(config.pipeline.cache.memory_bytes, 1024);
    assert!(config.pipeline.cache.disk.is_none());
    assert!(parse(&["serve", "--no-disk-cache", "--min-ttl", "2d", "--max-ttl", "1d"]).is_err());
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_zero() {
    let upstream = Upstream::start().await;
    upstream.route("/slow.jpg", Route::image(photo()).delay(Duration::from_millis(800)));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let url = format!("http://{}/?{}", server.addr, upstream.url("/slow.jpg"));
    let in_flight = tokio::spawn({
        let client = client();
        async move { get(&client, &url).await }
    });
    upstream.wait_for_hits("/slow.jpg", 1).await;

    server.terminate();
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the request in flight at SIGTERM was not finished");
    assert!(reply.body == photo());
    let (status, stderr) = server.wait().await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}; stderr:\n{stderr}");
}

#[tokio::test]
async fn json_log_format_writes_one_object_per_line() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--log-format", "json"]).await;
    let reply = get(&client(), &format!("http://{}/?{}", server.addr, upstream.url("/a.jpg"))).await;
    assert_eq!(reply.status, 200);
    server.terminate();
    let (status, stderr) = server.wait().await;
    assert!(status.success(), "exit status {status:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        assert!(line.starts_with('{') && line.ends_with('}'), "not a JSON object: {line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("\"status\":200") && l.contains("\"x_cache\":\"MISS\"")),
        "no access-log line for the request:\n{stderr}"
    );
}
