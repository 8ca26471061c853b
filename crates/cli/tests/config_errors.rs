//! `hookbus ingress` refuses to start on a bad configuration, and says which key is wrong.

use std::process::Command;

fn start_with(toml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), toml).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookbus"));
    command.arg("--config").arg(file.path()).arg("ingress");
    // Never reach a real broker: validation must fail before any connection.
    command.env(
        "NATS_URL",
        format!("nats://127.0.0.1:{}", hookbus_testkit::free_port()),
    );
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (file, environment, the key the error must name)
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn bad_configurations_stop_start_up_naming_the_key() {
    let cases: [Case; 4] = [
        ("[ingress]\nbody_limt = 5\n", &[], "ingress.body_limt"),
        (
            "[ingress]\npublish_timeout = \"later\"\n",
            &[],
            "ingress.publish_timeout",
        ),
        (
            "[ingress.sources.gh]\nverifier = \"github\"\n",
            &[],
            "ingress.sources.gh.secrets",
        ),
        (
            "",
            &[("HOOKBUS_INGRESS__TOLERANCE", "forever")],
            "HOOKBUS_INGRESS__TOLERANCE",
        ),
    ];
    for (toml, env, key) in cases {
        let (ok, stderr) = start_with(toml, env);
        assert!(!ok, "{toml:?} started");
        assert!(stderr.contains(key), "{toml:?}: {stderr}");
    }
}
