//! `hookbus dev` as a process: it starts its own nats-server when nothing answers at NATS_URL,
//! prints a signed `curl` that works, and stops everything on SIGINT.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hookbus_testkit::{free_port, nats_server_binary};

#[test]
fn dev_prints_a_working_curl_and_stops_cleanly_on_sigint() {
    let data = tempfile::tempdir().unwrap();
    let nats_port = free_port();
    let ingress_port = free_port();
    let inventory_port = free_port();
    let analytics_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookbus"))
        .arg("dev")
        .arg("--data-dir")
        .arg(data.path())
        .env("NATS_URL", format!("nats://127.0.0.1:{nats_port}"))
        .env(
            "HOOKBUS_INGRESS__LISTEN",
            format!("127.0.0.1:{ingress_port}"),
        )
        .env(
            "HOOKBUS_INVENTORY__LISTEN",
            format!("127.0.0.1:{inventory_port}"),
        )
        .env(
            "HOOKBUS_ANALYTICS__LISTEN",
            format!("127.0.0.1:{analytics_port}"),
        )
        .env("HOOKBUS_NATS_SERVER", nats_server_binary().unwrap())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    // Read the banner up to the end of the curl command.
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut curl = String::new();
    let mut in_curl = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("curl ") {
            in_curl = true;
        }
        if in_curl {
            curl.push_str(&line);
            curl.push('\n');
            if !line.ends_with('\\') {
                break;
            }
        }
    }
    assert!(
        curl.contains(&format!("127.0.0.1:{ingress_port}/webhooks/demo")),
        "{curl}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", nats_port)).is_ok(),
        "dev started a nats-server"
    );

    let run = |curl: &str| {
        let out = Command::new("bash").arg("-c").arg(curl).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let first: serde_json::Value = serde_json::from_str(&run(&curl)).unwrap();
    assert_eq!(first["duplicate"], false, "{first}");
    let second: serde_json::Value = serde_json::from_str(&run(&curl)).unwrap();
    assert_eq!(second["duplicate"], true, "{second}");

    // The event reaches analytics, running in the same process (counted once).
    let stats = format!("curl -sS http://127.0.0.1:{analytics_port}/v1/stats/events");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let json: serde_json::Value = serde_json::from_str(&run(&stats)).unwrap_or_default();
        let pings: Vec<_> = json["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["source"] == "demo" && i["type"] == "ping")
            .collect();
        if let [one] = pings.as_slice() {
            assert_eq!(one["count"], 1, "{json}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "analytics never counted the ping: {json}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "hookbus dev did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", nats_port)).is_err(),
        "the nats-server that dev started is gone"
    );
    assert!(
        data.path().join("nats").is_dir(),
        "JetStream store under the data directory"
    );
}
