//! The admin listener (health, readiness, metrics, routes), logs, graceful shutdown, and the
//! command line: help, errors, and settings from flags, environment and config file.
mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::yaml::{docs, ingress, svc};
use support::{Gatehouse, admin_get, free_port, origin, service_yaml, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// `app.test` → Service `web` (these endpoints); `broken.test` → a Service that does not exist.
fn manifests(endpoints: &[SocketAddr]) -> String {
    docs(&[
        service_yaml("default", "web", endpoints),
        ingress("web")
            .prefix("app.test", "/", svc("web", 80))
            .yaml(),
        ingress("broken")
            .prefix("broken.test", "/", svc("missing", 80))
            .yaml(),
    ])
}

// === admin endpoints ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_once_started() {
    let gh = Gatehouse::start(&manifests(&[origin::echo("a").await]));
    assert_eq!(gh.admin("/healthz"), (200, "ok\n".into()));
    assert_eq!(gh.admin("/readyz"), (200, "ready\n".into()));
    assert_eq!(gh.admin("/nope").0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_connections_reloads_and_warnings() {
    let gh = Gatehouse::start(&manifests(&[origin::echo("a").await]));
    let client = gh.client_for(&["app.test", "broken.test", "none.test"]);
    for _ in 0..3 {
        assert_eq!(
            client
                .get("http://app.test/")
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        client
            .get("http://broken.test/")
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        client
            .get("http://none.test/")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let web = [
        "namespace=\"default\"",
        "ingress=\"web\"",
        "service=\"web\"",
        "host=\"app.test\"",
        "method=\"GET\"",
        "status=\"200\"",
    ];
    assert_eq!(gh.metric("gatehouse_requests_total", &web), 3.0);
    assert_eq!(
        gh.metric(
            "gatehouse_requests_total",
            &["ingress=\"broken\"", "status=\"503\""]
        ),
        1.0
    );
    // No route: empty Ingress labels, the host folded (clients cannot make series up).
    assert_eq!(
        gh.metric(
            "gatehouse_requests_total",
            &["ingress=\"\"", "host=\"_other\"", "status=\"404\""]
        ),
        1.0
    );
    assert_eq!(
        gh.metric("gatehouse_request_duration_seconds_count", &[]),
        5.0
    );
    assert!(
        gh.metric(
            "gatehouse_request_duration_seconds_bucket",
            &["le=\"+Inf\""]
        ) == 5.0
    );
    assert_eq!(
        gh.metric("gatehouse_upstream_response_seconds_count", &[]),
        3.0
    );
    // The client still holds keep-alive connections; they are counted until it lets them go.
    let active = || gh.metric("gatehouse_active_connections", &["listener=\"http\""]);
    assert!(active() >= 1.0);
    drop(client);
    tokio::task::block_in_place(|| {
        wait_until("connections to close", Duration::from_secs(5), || {
            active() == 0.0
        })
    });
    assert!(gh.metric("gatehouse_config_reloads_total", &[]) >= 1.0);
    assert_eq!(gh.metric("gatehouse_config_reload_errors_total", &[]), 0.0);
    assert_eq!(gh.metric("gatehouse_config_warnings", &[]), 1.0);
    assert_eq!(gh.metric("gatehouse_config_hosts", &[]), 2.0);
    assert!(gh.metric("gatehouse_translate_seconds_count", &[]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_dump_shows_hosts_paths_backends_ingresses_and_warnings() {
    let origin = origin::echo("a").await;
    let gh = Gatehouse::start(&manifests(&[origin]));
    let routes = gh.routes();
    let app = &routes["hosts"]["app.test"]["Prefix /"];
    assert_eq!(app["ingress"], "default/web");
    assert_eq!(app["backend"]["service"], "default/web");
    assert_eq!(app["backend"]["endpoints"][0], origin.to_string());
    assert!(routes["hosts"]["broken.test"]["Prefix /"]["backend"]["unavailable"].is_string());
    assert_eq!(
        routes["ingresses"],
        serde_json::json!(["default/broken", "default/web"])
    );
    let warnings = routes["warnings"].to_string();
    assert!(
        warnings.contains("Ingress default/broken")
            && warnings.contains("Service default/missing not found"),
        "{warnings}"
    );
}

// === logs ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_line_per_request() {
    let gh = Gatehouse::start(&manifests(&[origin::echo("a").await]));
    let client = gh.client_for(&["app.test", "none.test"]);
    for i in 0..3 {
        client
            .get(format!("http://app.test/item/{i}?q=1"))
            .header("x-request-id", format!("rid-{i}"))
            .send()
            .await
            .unwrap();
    }
    client.post("http://none.test/form").send().await.unwrap();
    for i in 0..3 {
        let line = gh.wait_log(&[&format!("path=/item/{i}")], Duration::from_secs(2));
        for part in [
            "access",
            "method=GET",
            "host=app.test",
            "status=200",
            &format!("rid-{i}"),
        ] {
            assert!(line.contains(part), "{part} missing: {line}");
        }
    }
    let line = gh.wait_log(&["path=/form"], Duration::from_secs(2));
    assert!(
        line.contains("method=POST") && line.contains("status=404"),
        "{line}"
    );
    let lines = gh
        .log_text()
        .lines()
        .filter(|l| l.contains("access") && l.contains("status="))
        .count();
    assert_eq!(lines, 4, "{}", gh.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_json_object_per_line() {
    let gh = Gatehouse::start_with(
        &[("main.yaml", &manifests(&[origin::echo("a").await]))],
        &["--log-format=json"],
    );
    gh.client_for(&["app.test"])
        .get("http://app.test/j?a=1&b=2")
        .header("x-request-id", "rid-json")
        .header("user-agent", "probe/1.0")
        .header("referer", "http://from.test/")
        .send()
        .await
        .unwrap();
    gh.wait_log(&["rid-json"], Duration::from_secs(2));
    let mut access = None;
    for line in gh.log_text().lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if value["target"] == "access" {
            access = Some(value);
        }
    }
    let access = access.expect("an access line");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["host"], "app.test");
    assert_eq!(access["path"], "/j");
    assert_eq!(access["status"], 200);
    assert_eq!(access["request_id"], "rid-json");
    assert_eq!(access["query"], "a=1&b=2");
    assert_eq!(access["protocol"], "HTTP/1.1");
    assert_eq!(access["scheme"], "http");
    assert_eq!(access["http_user_agent"], "probe/1.0");
    assert_eq!(access["http_referer"], "http://from.test/");
    assert_eq!(access["namespace"], "default");
    assert_eq!(access["ingress"], "web");
    assert_eq!(access["service"], "web");
    assert_eq!(access["upstream_status"], 200);
    // Durations are integers (microseconds), never float noise.
    assert!(access["duration_us"].is_u64(), "{access}");
    assert!(access["upstream_response_time_us"].is_u64(), "{access}");
    assert!(access["request_length"].as_u64().unwrap() > 50, "{access}");
    assert!(access["bytes"].as_u64().unwrap() > 0, "{access}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_can_be_switched_off() {
    let gh = Gatehouse::start_with(
        &[("main.yaml", &manifests(&[origin::echo("a").await]))],
        &["--access-log=false"],
    );
    gh.client_for(&["app.test"])
        .get("http://app.test/quiet")
        .send()
        .await
        .unwrap();
    assert!(!gh.log_text().contains("/quiet"), "{}", gh.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_filter_decides_whether_access_lines_are_written() {
    let manifest = manifests(&[origin::echo("a").await]);
    // The access lines' target named in the filter: written although the rest is at warn.
    let gh = Gatehouse::start_with(
        &[("main.yaml", &manifest)],
        &["--log-level=warn,access=info"],
    );
    let resp = gh
        .client_for(&["app.test"])
        .get("http://app.test/kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let line = gh.wait_log(&["path=/kept"], Duration::from_secs(2));
    assert!(line.contains("status=200"), "{line}");
    // At warn alone the filter drops them: none is written, the request is served the same.
    let gh = Gatehouse::start_with(&[("main.yaml", &manifest)], &["--log-level=warn"]);
    let client = gh.client_for(&["app.test"]);
    let resp = client.get("http://app.test/dropped").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("/dropped"));
    // A request after it, answered, so the first one's record is over.
    client.get("http://app.test/after").send().await.unwrap();
    assert!(!gh.log_text().contains("/dropped"), "{}", gh.log_text());
}

// === graceful shutdown ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_reports_not_ready_finishes_in_flight_and_exits_zero() {
    let (slow, mut started) = origin::slow("slow", Duration::from_secs(2)).await;
    let mut gh = Gatehouse::start(&manifests(&[slow]));
    let in_flight = tokio::spawn(
        gh.client_for(&["app.test"])
            .get("http://app.test/long")
            .send(),
    );
    started.recv().await.expect("request reached the origin");

    let mut child = gh.terminate();
    let (admin, http) = (gh.admin, gh.http);
    tokio::task::block_in_place(|| {
        wait_until("/readyz to say not ready", Duration::from_secs(2), || {
            matches!(admin_get(admin, "/readyz"), Ok((503, _)))
        })
    });
    // Readiness fails first, then the listeners close (moments apart on a busy machine).
    tokio::task::block_in_place(|| {
        wait_until(
            "the listener to stop accepting",
            Duration::from_secs(2),
            || std::net::TcpStream::connect(http).is_err(),
        )
    });

    let resp = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["origin"], "slow");
    let status = tokio::task::block_in_place(|| wait_exit(&mut child, Duration::from_secs(10)));
    assert!(status.success(), "exit status {status}");
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "still running after {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// === command line ===

/// Runs the binary to completion (it must exit by itself within 10 s).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gatehouse");
    wait_exit(&mut child, Duration::from_secs(10));
    child.wait_with_output().expect("output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The binary allocates with jemalloc (gateway/main.rs says why): asked through jemalloc's own
/// environment variable, it prints its statistics at exit.
#[test]
fn the_binary_allocates_with_jemalloc() {
    let out = run(&["--version"], &[("_RJEM_MALLOC_CONF", "stats_print:true")]);
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Begin jemalloc statistics"),
        "no jemalloc statistics: {err}"
    );
}

/// Long flags `--help` lists, each with the lines that explain it.
fn flags_in_help() -> Vec<(String, String)> {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed
            .strip_prefix("--")
            .or_else(|| trimmed.split_once(", --").map(|(_, r)| r))
        {
            let name = rest.split([' ', '=']).next().unwrap_or_default().to_owned();
            flags.push((name, String::new()));
        } else if let Some((_, text)) = flags.last_mut() {
            text.push_str(trimmed);
            text.push('\n');
        }
    }
    flags
}

#[test]
fn help_explains_every_flag_and_its_environment_variable() {
    let flags = flags_in_help();
    assert!(flags.len() > 15, "{flags:?}");
    for (flag, text) in &flags {
        let explanation = text.lines().next().unwrap_or_default();
        assert!(
            explanation.len() >= 10,
            "--{flag} is not explained: {text:?}"
        );
        if flag != "help" && flag != "version" {
            let env = format!("[env: GATEHOUSE_{}=", flag.to_uppercase().replace('-', "_"));
            assert!(text.contains(&env), "--{flag} has no {env}]: {text}");
        }
    }
    for flag in [
        "manifests",
        "http-listen",
        "admin-listen",
        "watch-ingress-without-class",
        "upstream-response-timeout",
        "log-format",
        "config",
    ] {
        assert!(
            flags.iter().any(|(f, _)| f == flag),
            "--{flag} missing from --help"
        );
    }
}

#[test]
fn every_flag_is_also_a_config_file_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatehouse.yaml");
    std::fs::write(&config, "no-such-setting: 1\n").unwrap();
    let out = run(&["--config", config.to_str().unwrap()], &[]);
    let err = stderr(&out);
    // The error lists every setting the file takes.
    for (flag, _) in flags_in_help() {
        if !["help", "version", "config"].contains(&flag.as_str()) {
            assert!(
                err.contains(&flag),
                "--{flag} cannot be set in the config file: {err}"
            );
        }
    }
}

fn assert_one_line_error(out: &Output, parts: &[&str]) {
    assert!(!out.status.success(), "exit status {}", out.status);
    let err = stderr(out);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("gatehouse: "), "{err}");
    for part in parts {
        assert!(err.contains(part), "{part:?} missing from {err}");
    }
}

#[test]
fn bad_flags_give_a_one_line_error_naming_them() {
    assert_one_line_error(&run(&["--bogus"], &[]), &["--bogus"]);
    assert_one_line_error(&run(&["--confg", "x"], &[]), &["--confg", "--config"]);
    assert_one_line_error(
        &run(&["--http-listen", "nope"], &[]),
        &["--http-listen", "nope"],
    );
    assert_one_line_error(
        &run(&["--upstream-connect-timeout", "5 parsecs"], &[]),
        &["--upstream-connect-timeout"],
    );
    assert_one_line_error(
        &run(&["--log-format", "xml"], &[]),
        &["--log-format", "xml"],
    );
    assert_one_line_error(
        &run(&[], &[("GATEHOUSE_DRAIN_TIMEOUT", "soon")]),
        &["drain-timeout", "soon"],
    );
}

#[test]
fn bad_config_file_gives_a_one_line_error_naming_the_file_and_setting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.yaml");
    let file = path.to_str().unwrap();
    for (text, what) in [
        ("http-lisen: 0.0.0.0:80\n", "http-lisen"),
        ("http-listen: nope\n", "http-listen"),
        ("drain-timeout: soon\n", "drain-timeout"),
        ("log-format: xml\n", "xml"),
        ("[not, a, map]\n", file),
    ] {
        std::fs::write(&path, text).unwrap();
        assert_one_line_error(&run(&["--config", file], &[]), &[file, what]);
    }
    let missing = dir.path().join("missing.yaml");
    assert_one_line_error(
        &run(&["--config", missing.to_str().unwrap()], &[]),
        &["missing.yaml"],
    );
}

/// A gateway started with its own environment and config file; killed on drop.
struct Launched {
    child: Child,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on `yaml` with a config file `config`, environment `env` and `args`.
fn launch(yaml: &str, config: &str, env: &[(&str, &str)], args: &[&str]) -> Launched {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("main.yaml"), yaml).unwrap();
    let config_path = dir.path().join("gatehouse.yaml");
    std::fs::write(&config_path, config).unwrap();
    let admin = free_port();
    let child = Command::new(BIN)
        .arg(format!("--manifests={}", manifests.display()))
        .arg(format!("--config={}", config_path.display()))
        .arg(format!("--http-listen={}", free_port()))
        .arg(format!("--https-listen={}", free_port()))
        .arg(format!("--admin-listen={admin}"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gatehouse");
    let launched = Launched {
        child,
        admin,
        _dir: dir,
    };
    wait_until("ready", Duration::from_secs(20), || {
        matches!(admin_get(admin, "/readyz"), Ok((200, _)))
    });
    launched
}

impl Launched {
    /// The hosts in service.
    fn hosts(&self) -> Vec<String> {
        let (_, body) = admin_get(self.admin, "/routes").unwrap();
        let routes: Value = serde_json::from_str(&body).unwrap();
        routes["hosts"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }
}

#[test]
fn settings_come_from_flag_then_environment_then_file_then_default() {
    // One Ingress per class name; the hosts in service show which class was chosen.
    let yaml = docs(&["flag", "env", "file", "gatehouse"].map(|class| {
        ingress(class)
            .class(Some(class))
            .prefix(&format!("{class}.test"), "/", svc("web", 80))
            .yaml()
    }));
    let file = "ingress-class: file\n";
    let env = [("GATEHOUSE_INGRESS_CLASS", "env")];
    assert_eq!(
        launch(&yaml, file, &env, &["--ingress-class=flag"]).hosts(),
        ["flag.test"]
    );
    assert_eq!(launch(&yaml, file, &env, &[]).hosts(), ["env.test"]);
    assert_eq!(launch(&yaml, file, &[], &[]).hosts(), ["file.test"]);
    assert_eq!(launch(&yaml, "", &[], &[]).hosts(), ["gatehouse.test"]);
}

#[test]
fn watch_ingress_without_class_is_settable_every_way() {
    let yaml = docs(&[
        ingress("classless")
            .class(None)
            .prefix("classless.test", "/", svc("web", 80))
            .yaml(),
        ingress("classy")
            .prefix("classy.test", "/", svc("web", 80))
            .yaml(),
    ]);
    let env_true = [("GATEHOUSE_WATCH_INGRESS_WITHOUT_CLASS", "true")];
    let both = ["classless.test", "classy.test"];
    assert_eq!(launch(&yaml, "", &[], &[]).hosts(), ["classy.test"]);
    assert_eq!(
        launch(&yaml, "", &[], &["--watch-ingress-without-class"]).hosts(),
        both
    );
    assert_eq!(
        launch(&yaml, "", &[], &["--watch-ingress-without-class=true"]).hosts(),
        both
    );
    assert_eq!(launch(&yaml, "", &env_true, &[]).hosts(), both);
    assert_eq!(
        launch(&yaml, "watch-ingress-without-class: true\n", &[], &[]).hosts(),
        both
    );
    // An explicit false on the command line beats the environment and the file.
    let off = launch(
        &yaml,
        "watch-ingress-without-class: true\n",
        &env_true,
        &["--watch-ingress-without-class=false"],
    );
    assert_eq!(off.hosts(), ["classy.test"]);
}

/// A wrapper (the Helm chart's `extraArgs`) appends flags after its own: the last one wins
/// instead of "cannot be used multiple times".
#[test]
fn a_flag_given_twice_takes_its_last_value() {
    let yaml = docs(&["first", "second"].map(|class| {
        ingress(class)
            .class(Some(class))
            .prefix(&format!("{class}.test"), "/", svc("web", 80))
            .yaml()
    }));
    let launched = launch(
        &yaml,
        "",
        &[],
        &["--ingress-class=first", "--ingress-class", "second"],
    );
    assert_eq!(launched.hosts(), ["second.test"]);
}
