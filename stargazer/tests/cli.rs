//! The binary as an operator meets it: help, configuration errors, standalone start and
//! clean stop on SIGINT/SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn stargazer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stargazer"));
    // Keep the developer's environment out of the tests.
    for (key, _) in std::env::vars() {
        if key.starts_with("STARGAZER_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "stargazer-cli-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn help_lists_every_role() {
    let output = stargazer().arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for role in [
        "api",
        "coordinator",
        "worker-youtube",
        "worker-twitter",
        "worker-bilibili",
        "middleware-delay",
        "middleware-translate",
        "middleware-live-check",
        "bot-telegram",
        "bot-discord",
        "bot-qq",
        "standalone",
        "admin",
    ] {
        assert!(
            text.lines().any(|line| line.trim_start().starts_with(role)),
            "{role} missing from:\n{text}"
        );
    }
}

#[test]
fn bad_value_is_one_line_naming_the_key_and_exit_code_2() {
    let output = stargazer()
        .env("STARGAZER_API__LISTEN", "not-an-address")
        .arg("api")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("api.listen"), "{stderr}");
}

#[test]
fn broken_file_and_unknown_key_are_reported() {
    let dir = temp_dir("config");
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "[api\nlisten = 1").unwrap();
    let output = stargazer()
        .arg("--config")
        .arg(&broken)
        .arg("api")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("broken.toml"));

    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "amqp_ur = \"amqp://x\"\n").unwrap();
    let output = stargazer()
        .arg("--config")
        .arg(&unknown)
        .arg("api")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("amqp_ur") && stderr.contains("unknown key"),
        "{stderr}"
    );

    let wrong_scheme = stargazer()
        .env("STARGAZER_AMQP_URL", "http://x")
        .arg("api")
        .output()
        .unwrap();
    assert_eq!(wrong_scheme.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong_scheme.stderr).contains("amqp_url"));
}

/// Every section is read and checked at load, whatever role runs: an unknown key or a
/// malformed URL in any section exits 2 at once with one line naming the key, even in a
/// process whose role never reads that section.
#[test]
fn every_section_rejects_unknown_keys_and_malformed_urls_before_connecting() {
    let dir = temp_dir("sections");
    let cases = [
        ("[api]\nlistn = \"127.0.0.1:1\"", "api.listn"),
        ("[api]\npublic_url = \"not a url\"", "api.public_url"),
        ("[coordinator]\nheartbeat = 5", "coordinator.heartbeat"),
        (
            "[worker]\ncoordinator_url = \"http://x\"",
            "worker.coordinator_url",
        ),
        ("[worker]\nname = \"w1\"", "worker.name"),
        ("[youtube]\nreminder_lead = 5", "youtube.reminder_lead"),
        ("[youtube]\nhub_url = \"not a url\"", "youtube.hub_url"),
        ("[twitter]\napi_base = \"api.x.com\"", "twitter.api_base"),
        ("[twitter]\ntoken = \"t\"", "twitter.token"),
        ("[delay]\nqueue_name = \"q\"", "delay.queue_name"),
        (
            "[translate]\ndeepl_base_url = \"ftp://deepl\"",
            "translate.deepl_base_url",
        ),
        ("[translate]\nkey = \"k\"", "translate.key"),
        ("[live_check]\ninterval_ms = 5", "live_check.interval_ms"),
        (
            "[live_check]\napi_base_url = \"//nohost\"",
            "live_check.api_base_url",
        ),
        ("[telegram]\napi_url = \"telegram\"", "telegram.api_url"),
        ("[telegram]\nbot_token = \"t\"", "telegram.bot_token"),
    ];
    for (index, (text, key)) in cases.into_iter().enumerate() {
        let file = dir.join(format!("case{index}.toml"));
        std::fs::write(&file, text).unwrap();
        // middleware-delay reads none of these sections but [delay]; the backends are
        // unreachable, so only a check at load can make it exit at once.
        let (_, stderr, code) = run_within(
            {
                let mut cmd = stargazer();
                cmd.arg("--config")
                    .arg(&file)
                    .env("STARGAZER_AMQP_URL", "amqp://127.0.0.1:1")
                    .env("STARGAZER_MONGO_URL", "mongodb://127.0.0.1:1")
                    .arg("middleware-delay");
                cmd
            },
            Duration::from_secs(10),
        );
        assert_eq!(code, Some(2), "{text}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{text}: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "{text}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `cmd` to completion within `limit` (killed and failed past it): stdout, stderr and
/// exit code.
fn run_within(mut cmd: Command, limit: Duration) -> (String, String, Option<i32>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.code(),
    )
}

/// A malformed or mistyped backend URL stops the process at once with exit code 2 and one
/// line naming the key; the password it carries is never printed.
#[test]
fn malformed_backend_urls_exit_2_with_the_password_masked() {
    let dir = temp_dir("urls");
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "STARGAZER_MONGO_URL",
            "mongodb://admin:hunter2@db:99999999/stargazer",
            &["api"],
            "mongo_url",
        ),
        (
            "STARGAZER_MONGO_URL",
            "mongodb://admin:hunter2@/stargazer",
            &["coordinator"],
            "mongo_url",
        ),
        (
            "STARGAZER_MONGO_URL",
            "mongdb://admin:hunter2@db/stargazer",
            &["admin", "credential", "list"],
            "mongo_url",
        ),
        (
            "STARGAZER_AMQP_URL",
            "amqp://worker:hunter2@rabbitmq:notaport/%2f",
            &["middleware-delay"],
            "amqp_url",
        ),
        (
            "STARGAZER_AMQP_URL",
            "amqps//worker:hunter2@rabbitmq/%2f",
            &["bot-telegram"],
            "amqp_url",
        ),
        (
            "STARGAZER_LOG_LEVEL",
            "info",
            &["standalone", "--mongo", "mongodb://admin:hunter2@db:0x/x"],
            "mongo_url",
        ),
        (
            "STARGAZER_LOG_LEVEL",
            "info",
            &["standalone", "--amqp", "amqp://u:hunter2@@host:notaport"],
            "amqp_url",
        ),
    ];
    for (var, value, args, key) in cases {
        let mut cmd = stargazer();
        cmd.current_dir(&dir).env(var, value).args(*args);
        let (stdout, stderr, code) = run_within(cmd, Duration::from_secs(30));
        assert_eq!(code, Some(2), "{args:?} with {value}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(key), "{stderr}");
        assert!(
            stderr.contains(":***@"),
            "the URL is shown masked: {stderr}"
        );
        assert!(
            !stdout.contains("hunter2") && !stderr.contains("hunter2"),
            "{stdout}{stderr}"
        );
    }
}

/// While a backend is unreachable the role keeps retrying and says so, without printing
/// the password of its URL.
#[cfg(unix)]
#[test]
fn unreachable_backends_are_logged_without_their_password() {
    let dir = temp_dir("unreachable");
    for (var, value, role, expected) in [
        (
            "STARGAZER_MONGO_URL",
            "mongodb://admin:hunter2@127.0.0.1:1/stargazer?serverSelectionTimeoutMS=200",
            "api",
            "storage unavailable",
        ),
        (
            "STARGAZER_AMQP_URL",
            "amqp://worker:hunter2@127.0.0.1:1/%2f",
            "middleware-delay",
            "broker unavailable",
        ),
    ] {
        let mut child = stargazer()
            .current_dir(&dir)
            .env(var, value)
            .env("STARGAZER_SQLITE_PATH", ":memory:")
            .env("STARGAZER_API__LISTEN", "127.0.0.1:0")
            .arg(role)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Two retries logged: the process is waiting for the backend, not exiting.
        while seen
            .iter()
            .filter(|l: &&String| l.contains(expected))
            .count()
            < 2
        {
            assert!(
                Instant::now() < deadline,
                "{role}: no `{expected}` retries logged: {seen:#?}"
            );
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                seen.push(line);
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "{role} exited: {seen:#?}"
        );
        // Piped, not a terminal: plain lines, no colour codes.
        assert!(
            seen.iter().all(|line| !line.contains('\u{1b}')),
            "{role} logged colour codes: {seen:#?}"
        );
        // The start-up line names the endpoints the service talks to.
        assert!(
            seen.iter().any(|line| line.contains("starting")),
            "{role}: no start-up line: {seen:#?}"
        );
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap();
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
        assert!(
            !seen.iter().any(|line| line.contains("hunter2")),
            "{role}: {seen:#?}"
        );
    }
}

/// Starts `stargazer standalone` in `dir` (its SQLite file there) on free ports, with
/// `envs` on top; the child and the api's `host:port` from the start-up summary.
#[cfg(unix)]
fn start_standalone(dir: &std::path::Path, envs: &[(&str, &str)]) -> (std::process::Child, String) {
    let mut child = stargazer()
        .current_dir(dir)
        .env("STARGAZER_API__LISTEN", "127.0.0.1:0")
        .env("STARGAZER_COORDINATOR__LISTEN", "127.0.0.1:0")
        .envs(envs.iter().copied())
        .arg("standalone")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut api_url = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while api_url.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(rest) = line.trim_start().strip_prefix("api") {
                api_url = rest.split_whitespace().next().map(str::to_owned);
            }
        }
    }
    let api_url = api_url.expect("standalone printed its summary with the api address");
    (child, api_url.trim_start_matches("http://").to_owned())
}

/// Sends SIGINT and waits (30 s at most) for a successful exit.
#[cfg(unix)]
fn interrupt_and_wait(mut child: std::process::Child) {
    let status = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "standalone did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "exit status {exit:?}");
}

#[cfg(unix)]
#[test]
fn standalone_starts_on_embedded_backends_and_stops_on_sigint() {
    let dir = temp_dir("standalone");
    let (child, addr) = start_standalone(&dir, &[]);
    let response = http_get(&addr, "/healthz");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // No settings page was built here: `/`, where `/settings` links point, says how.
    let page = http_get(&addr, "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("npm ci &amp;&amp; npm run build"), "{page}");
    assert!(
        dir.join("stargazer.db").exists(),
        "SQLite file created in the working directory"
    );
    interrupt_and_wait(child);
}

/// The value of the sample `name` in a Prometheus text body, if present.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

/// `stargazer admin entity add`, a second process on the SQLite file of a running
/// standalone, is seen by its coordinator, which hands the new channel to the YouTube
/// worker without a restart.
#[cfg(unix)]
#[test]
fn an_entity_added_with_the_admin_cli_is_tracked_by_a_running_standalone() {
    let dir = temp_dir("admin-entity");
    // A worker that can start: the hub and Data API are unreachable ports, which only
    // makes its subscription attempts fail; being handed the task is what counts here.
    let (child, addr) = start_standalone(
        &dir,
        &[
            ("STARGAZER_YOUTUBE_API_KEY", "test-key"),
            ("STARGAZER_YOUTUBE__HUB_URL", "http://127.0.0.1:9/subscribe"),
            ("STARGAZER_YOUTUBE__DATA_API_BASE", "http://127.0.0.1:9"),
            ("STARGAZER_YOUTUBE__FEED_BASE", "http://127.0.0.1:9"),
            ("STARGAZER_YOUTUBE__LISTEN", "127.0.0.1:0"),
            ("STARGAZER_YOUTUBE__PUBLIC_URL", "http://127.0.0.1:9"),
        ],
    );
    let tasks = "stargazer_coordinator_tasks{kind=\"youtube\"}";
    let unassigned = "stargazer_coordinator_unassigned_tasks{kind=\"youtube\"}";
    let metrics = http_get(&addr, "/metrics");
    assert_eq!(sample(&metrics, tasks).unwrap_or(0.0), 0.0, "{metrics}");

    let output = stargazer()
        .current_dir(&dir)
        .args([
            "admin",
            "entity",
            "add",
            "--name",
            "en=Pekora",
            "--youtube",
            "UC1DCedRgGHBdm81E1llLhOQ",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = http_get(&addr, "/metrics");
        if sample(&metrics, tasks) == Some(1.0) && sample(&metrics, unassigned) == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the running standalone did not take up the new channel: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    interrupt_and_wait(child);
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl").args(args).output().unwrap();
    assert!(output.status.success(), "rabbitmqctl {args:?}: {output:?}");
}

/// `admin broker setup` declares the topology of the configured deployment on a fresh
/// vhost (queue names from the configuration), is idempotent, and without a broker URL
/// stops with exit code 2 naming `amqp_url`.
#[test]
fn broker_setup_declares_the_configured_topology() {
    let vhost = format!("sg-cli-{}", uuid::Uuid::new_v4().simple());
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let url = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}");
    for _ in 0..2 {
        let output = stargazer()
            .env("STARGAZER_TELEGRAM__QUEUE", "stargazer.bot.telegram_eu")
            .args(["admin", "broker", "setup", "--amqp-url", &url])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{output:?}");
        for entity in [
            "exchange `stargazer`",
            "exchange `stargazer.dlx`",
            "queue `stargazer.dead`",
            "queue `stargazer.middleware.delay`",
            "queue `stargazer.middleware.translate`",
            "queue `stargazer.middleware.live_check`",
            "queue `stargazer.bot.telegram_eu`",
        ] {
            assert!(
                stdout
                    .lines()
                    .any(|line| line == format!("ok      {entity}")),
                "{entity} missing from:\n{stdout}"
            );
        }
    }
    let listing = Command::new("rabbitmqctl")
        .args(["list_queues", "-p", &vhost, "name", "arguments", "-q"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("stargazer.bot.telegram_eu") && l.contains("stargazer.dlx")),
        "{listing}"
    );
    rabbitmqctl(&["delete_vhost", &vhost]);

    let output = stargazer()
        .args(["admin", "broker", "setup"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("amqp_url"));
}
