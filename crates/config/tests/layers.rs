use std::time::Duration;

use hookbus_config::{ByteSize, ConfigError, Loader, duration};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Section {
    #[serde(with = "duration")]
    timeout: Duration,
    limit: ByteSize,
    names: Vec<String>,
}

impl Default for Section {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            limit: ByteSize(10),
            names: vec![],
        }
    }
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_file_then_environment() {
    let f = file("[ingress]\ntimeout = \"5s\"\nlimit = \"1KiB\"\n");
    let loader = Loader::with_env(Some(f.path()), env(&[])).unwrap();
    let s: Section = loader.section("ingress").unwrap();
    assert_eq!(
        (s.timeout, s.limit),
        (Duration::from_secs(5), ByteSize(1024))
    );

    let loader = Loader::with_env(
        Some(f.path()),
        env(&[
            ("HOOKBUS_INGRESS__TIMEOUT", "250ms"),
            ("HOOKBUS_INGRESS__NAMES", "[a, b]"),
            ("HOOKBUS_CONFIG", "x"),
        ]),
    )
    .unwrap();
    let s: Section = loader.section("ingress").unwrap();
    assert_eq!(s.timeout, Duration::from_millis(250));
    assert_eq!(
        s.limit,
        ByteSize(1024),
        "file value kept where the environment is silent"
    );
    assert_eq!(s.names, ["a", "b"]);

    let s: Section = Loader::with_env(None, env(&[]))
        .unwrap()
        .section("ingress")
        .unwrap();
    assert_eq!(s.timeout, Duration::from_secs(1));
}

#[test]
fn errors_name_the_key() {
    let f = file("[ingress]\ntimeout = \"soon\"\n");
    let err = Loader::with_env(Some(f.path()), env(&[]))
        .unwrap()
        .section::<Section>("ingress")
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "ingress.timeout"),
        "{err}"
    );
    assert!(err.to_string().contains("soon"), "{err}");

    let err = Loader::with_env(None, env(&[("HOOKBUS_INGRESS__TIMOUT", "1s")]))
        .unwrap()
        .section::<Section>("ingress")
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "ingress.timout"),
        "{err}"
    );

    let err = Loader::with_env(Some(file("[ingres]\n").path()), env(&[])).unwrap_err();
    assert!(err.to_string().contains("ingres"), "{err}");

    let err =
        Loader::with_env(Some(std::path::Path::new("/nonexistent.toml")), env(&[])).unwrap_err();
    assert!(err.to_string().contains("/nonexistent.toml"), "{err}");
}

#[test]
fn nats_url_comes_from_the_conventional_variable() {
    #[derive(Deserialize)]
    struct Nats {
        url: String,
    }
    let loader = Loader::with_env(None, env(&[("NATS_URL", "nats://127.0.0.1:1")])).unwrap();
    assert_eq!(
        loader.section::<Nats>("nats").unwrap().url,
        "nats://127.0.0.1:1"
    );
}
