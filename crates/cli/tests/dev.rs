//! `hookbus dev` as a process: it starts its own nats-server when nothing answers at NATS_URL,
//! prints a signed `curl` that works (the event reaches analytics, and the egress delivers it,
//! signed, to the demo endpoint), and stops everything on SIGINT, its nats-server included.

mod common;

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Process;
use hookbus_testkit::{free_port, nats_server_binary};

#[test]
fn dev_prints_a_working_curl_and_stops_cleanly_on_sigint() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let nats_port = free_port();
    let ingress_port = free_port();
    let inventory_port = free_port();
    let analytics_port = free_port();
    let notifications_port = free_port();
    let egress_port = free_port();
    let sink_port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookbus"));
    command
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
        .env(
            "HOOKBUS_NOTIFICATIONS__LISTEN",
            format!("127.0.0.1:{notifications_port}"),
        )
        .env("HOOKBUS_EGRESS__LISTEN", format!("127.0.0.1:{egress_port}"))
        .env("HOOKBUS_DEV__SINK_LISTEN", format!("127.0.0.1:{sink_port}"))
        .env("HOOKBUS_NATS_SERVER", nats_server_binary().unwrap())
        .env("RUST_LOG", "warn")
        // As in a terminal, where Ctrl-C signals the whole foreground process group.
        .process_group(0);
    let mut dev = Process::spawn("hookbus dev", command, logs.path());

    // Read the banner up to the end of the curl command.
    let deadline = Instant::now() + Duration::from_secs(120);
    let curl = loop {
        let log = dev.log();
        let mut curl = String::new();
        let mut lines = log.lines().skip_while(|l| !l.starts_with("curl "));
        for line in lines.by_ref() {
            curl.push_str(line);
            curl.push('\n');
            if !line.ends_with('\\') {
                break;
            }
        }
        if curl.ends_with("}'\n") {
            break curl;
        }
        if let Some(status) = dev.exited() {
            panic!("hookbus dev ended ({status}) before its banner: {log}");
        }
        assert!(Instant::now() < deadline, "no banner: {log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        curl.contains(&format!("127.0.0.1:{ingress_port}/webhooks/demo")),
        "{curl}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", nats_port)).is_ok(),
        "dev started a nats-server"
    );
    // The banner names the console's sign-in page, which answers there.
    let log = dev.log();
    let console = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("console"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no console link in the banner: {log}"))
        .to_owned();
    assert!(console.ends_with("/console/sign-in"), "{console}");
    let page = Command::new("curl")
        .args(["-sS", &console])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&page.stdout).contains("API token"),
        "{console} did not answer the sign-in page"
    );

    let run = |curl: &str| {
        let out = Command::new("bash").arg("-c").arg(curl).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let first: serde_json::Value = serde_json::from_str(&run(&curl)).unwrap();
    assert_eq!(first["duplicate"], false, "{first}");
    let second: serde_json::Value = serde_json::from_str(&run(&curl)).unwrap();
    assert_eq!(second["duplicate"], true, "{second}");

    // The egress delivers it to the demo endpoint, whose signature check passed.
    let id = first["id"].as_str().unwrap().to_owned();
    let sink = format!("curl -sS http://127.0.0.1:{sink_port}/");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let json: serde_json::Value = serde_json::from_str(&run(&sink)).unwrap_or_default();
        let deliveries: Vec<_> = json
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["webhook_id"] == id.as_str())
            .collect();
        if let Some(delivery) = deliveries.first() {
            assert_eq!(delivery["verified"], true, "{json}");
            assert_eq!(delivery["event_type"], "ping", "{json}");
            assert_eq!(delivery["body"]["zen"], "Design for failure.", "{json}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo endpoint never received {id}: {json}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

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

    dev.signal_group("INT");
    let status = dev.wait_exit("Ctrl-C", Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", nats_port)).is_err(),
        "the nats-server that dev started is gone"
    );
    assert!(
        data.path().join("nats").is_dir(),
        "JetStream store under the data directory"
    );
    let leftover = Command::new("pgrep")
        .args(["-f", &data.path().join("nats").display().to_string()])
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "no nats-server left running: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );
}
