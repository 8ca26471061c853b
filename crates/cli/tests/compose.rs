//! `deploy/docker-compose.yml` as docker would read it: it parses, every hookbus container runs a
//! binary this workspace builds, every environment variable it sets is one its service accepts
//! (the service's own configuration loads from exactly that environment), and every healthcheck
//! asks the service's own port. That the healthcheck routes answer 200 is shown by
//! `end_to_end.rs`, which runs the services as processes on this same environment. Where a Docker
//! engine answers, `docker compose up --wait` runs the file for real.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::SERVICES;
use hookbus_config::Loader;
use serde::Deserialize;

/// The binary targets of the workspace, from `cargo metadata`.
fn workspace_binaries() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(common::repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Whether the service of `section` reads the environment variable `key`.
fn accepts(section: &str, key: &str) -> bool {
    match key {
        "NATS_URL" | "RUST_LOG" | "OTEL_EXPORTER_OTLP_ENDPOINT" => true,
        "DATABASE_URL" => hookbus_config::SQL_SECTIONS.contains(&section),
        other => ["NATS", "TELEMETRY", &section.to_ascii_uppercase()]
            .iter()
            .any(|s| other.starts_with(&format!("HOOKBUS_{s}__"))),
    }
}

/// Loads the configuration `section`'s service reads, from `env` alone.
fn load(section: &str, env: &BTreeMap<String, String>) -> Result<(), String> {
    let loader = Loader::with_env(None, env.clone()).map_err(|e| e.to_string())?;
    let loaded = match section {
        "ingress" => hookbus_ingress::Config::load(&loader).map(drop),
        "egress" => hookbus_egress::Config::load(&loader).map(drop),
        "inventory" => hookbus_inventory::Config::load(&loader).map(drop),
        "notifications" => hookbus_notifications::Config::load(&loader).map(drop),
        "analytics" => hookbus_analytics::Config::load(&loader).map(drop),
        other => panic!("no service reads [{other}]"),
    };
    loaded.map_err(|e| e.to_string())
}

/// What a container (compose) or a Deployment (Kubernetes) of a hookbus service must hold: its
/// command is a binary the workspace builds, every variable it sets (`keys`) is one the service
/// reads, the service's configuration loads from `env`, and every probe (path, port) asks a
/// health route on the port the service listens on.
fn check_service(
    binaries: &BTreeSet<String>,
    name: &str,
    command: &[String],
    keys: &[&String],
    env: &BTreeMap<String, String>,
    probes: &[(String, String)],
) {
    let binary = command.first().expect("a command");
    assert!(
        binaries.contains(binary),
        "{name} runs {binary}, which the workspace does not build ({binaries:?})"
    );
    let section = binary.trim_start_matches("hookbus-");
    for key in keys {
        assert!(
            accepts(section, key),
            "{name}: {key} is not a key of [{section}], [nats] or [telemetry]"
        );
    }
    load(section, env).unwrap_or_else(|e| panic!("{name}: its environment does not load: {e}"));
    let listen = &env[&format!("HOOKBUS_{}__LISTEN", section.to_ascii_uppercase())];
    assert!(!probes.is_empty(), "{name}: no HTTP probes");
    for (path, port) in probes {
        assert!(
            listen.ends_with(&format!(":{port}")),
            "{name}: a probe asks port {port}, the service listens on {listen}"
        );
        assert!(
            ["/readyz", "/healthz"].contains(&path.as_str()),
            "{name}: a probe asks {path}"
        );
    }
}

#[test]
fn every_hookbus_container_runs_a_workspace_binary_configured_by_keys_it_accepts() {
    let compose = common::compose();
    let binaries = workspace_binaries();
    let hookbus: Vec<_> = compose.values().filter(|s| s.built_here).collect();
    let names: BTreeSet<&str> = hookbus.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        SERVICES.iter().copied().collect::<BTreeSet<_>>(),
        "one container per service"
    );
    for service in hookbus {
        let name = &service.name;
        let keys: Vec<&String> = service.environment.keys().collect();
        let (port, path) = service.health_route();
        let probes = [(path, port.to_string())];
        check_service(
            &binaries,
            name,
            &service.command,
            &keys,
            &service.environment,
            &probes,
        );
        // A key the service does not know is refused, so the load above checked every key.
        let section = service.section();
        let mut unknown = service.environment.clone();
        unknown.insert(
            format!("HOOKBUS_{}__NO_SUCH_KEY", section.to_ascii_uppercase()),
            "1".into(),
        );
        assert!(
            load(section, &unknown).is_err(),
            "{name}: unknown keys pass"
        );
        for dependency in &service.depends_on {
            assert!(
                compose.contains_key(dependency),
                "{name} depends on {dependency}, which is not a service"
            );
        }
    }
}

#[test]
fn compose_up_where_a_docker_engine_answers() {
    let engine = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("docker")
            .arg("info")
            .output()
            .is_ok_and(|o| o.status.success());
    if !engine {
        eprintln!("no Docker engine with the compose plugin here: `docker compose up` not run");
        return;
    }
    let file = common::repo_root().join("deploy/docker-compose.yml");
    let compose = |args: &[&str]| {
        Command::new("docker")
            .args(["compose", "-f"])
            .arg(&file)
            .args(args)
            .status()
            .unwrap()
    };
    let up = compose(&[
        "up",
        "--build",
        "--detach",
        "--wait",
        "--wait-timeout",
        "600",
    ]);
    let down = compose(&["down", "--volumes"]);
    assert!(up.success(), "docker compose up: {up:?}");
    assert!(down.success(), "docker compose down: {down:?}");
}

/// A hookbus Deployment of `deploy/k8s/`.
struct Deployment {
    name: String,
    command: Vec<String>,
    /// The shared ConfigMap `hookbus-env`, then the container's own `env`: a literal value, or
    /// `None` where it comes from the Secret.
    env: Vec<(String, Option<String>)>,
    /// (path, port) of each HTTP probe.
    probes: Vec<(String, String)>,
}

fn kubernetes_services() -> Vec<Deployment> {
    let dir = common::repo_root().join("deploy/k8s");
    let mut shared = Vec::new();
    let mut deployments = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") || path.ends_with("nats-helm-values.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde_yaml_ng::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            match value["kind"].as_str() {
                Some("ConfigMap") if value["metadata"]["name"] == "hookbus-env" => {
                    for (key, value) in value["data"].as_mapping().unwrap() {
                        let value = value.as_str().unwrap_or_default().to_owned();
                        shared.push((key.as_str().unwrap().to_owned(), Some(value)));
                    }
                }
                Some("Deployment") => deployments.push(value),
                _ => {}
            }
        }
    }
    deployments
        .iter()
        .map(|deployment| {
            let name = deployment["metadata"]["name"].as_str().unwrap().to_owned();
            let container = &deployment["spec"]["template"]["spec"]["containers"][0];
            let command = container["command"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{name}: no command"))
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            let mut env = shared.clone();
            for var in container["env"].as_sequence().into_iter().flatten() {
                let key = var["name"].as_str().unwrap().to_owned();
                env.push((key, var["value"].as_str().map(str::to_owned)));
            }
            let probes = ["livenessProbe", "readinessProbe", "startupProbe"]
                .iter()
                .filter_map(|probe| {
                    let get = &container[*probe]["httpGet"];
                    let path = get["path"].as_str()?.to_owned();
                    let port = match &get["port"] {
                        serde_yaml_ng::Value::Number(n) => n.to_string(),
                        other => {
                            let named = other.as_str().unwrap();
                            let port = container["ports"]
                                .as_sequence()
                                .unwrap()
                                .iter()
                                .find(|p| p["name"] == named)
                                .unwrap_or_else(|| panic!("{name}: no port named {named}"));
                            port["containerPort"].as_u64().unwrap().to_string()
                        }
                    };
                    Some((path, port))
                })
                .collect();
            Deployment {
                name,
                command,
                env,
                probes,
            }
        })
        .filter(|d| d.command.first().is_some_and(|c| c.starts_with("hookbus")))
        .collect()
}

#[test]
fn every_kubernetes_deployment_runs_a_workspace_binary_configured_by_keys_it_accepts() {
    let compose = common::compose();
    let binaries = workspace_binaries();
    let services = kubernetes_services();
    let names: BTreeSet<&str> = services.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        SERVICES.iter().copied().collect::<BTreeSet<_>>(),
        "one Deployment per service"
    );
    for deployment in &services {
        let section = deployment.command[0].trim_start_matches("hookbus-");
        // The literal values over the compose file's (which has working values for the secrets).
        let mut env = compose[section].environment.clone();
        for (key, value) in &deployment.env {
            match value {
                Some(value) => {
                    env.insert(key.clone(), value.clone());
                }
                None => {
                    env.entry(key.clone())
                        .or_insert_with(|| "from-a-secret".into());
                }
            }
        }
        let keys: Vec<&String> = deployment.env.iter().map(|(key, _)| key).collect();
        check_service(
            &binaries,
            &deployment.name,
            &deployment.command,
            &keys,
            &env,
            &deployment.probes,
        );
    }
}
