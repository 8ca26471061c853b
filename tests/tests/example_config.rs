//! `deploy/hookbus.example.toml` documents every key: it must load as is, and each key the
//! services read must appear in it.

use hookbus_config::Loader;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/hookbus.example.toml"
);

#[test]
fn the_example_configuration_loads() {
    let loader = Loader::with_env(Some(std::path::Path::new(EXAMPLE)), std::iter::empty()).unwrap();
    let config = hookbus_ingress::Config::load(&loader).unwrap();
    assert_eq!(config.ingress.sources().unwrap().len(), 7);
    let inventory = hookbus_inventory::Config::load(&loader).unwrap();
    assert_eq!(inventory.inventory.low_stock_threshold, 5);
    let analytics = hookbus_analytics::Config::load(&loader).unwrap();
    assert_eq!(analytics.analytics.subjects, ["events.>"]);
}

#[test]
fn the_example_names_every_key() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let keys = [
        "url",
        "credentials_file",
        "token_file",
        "tls_ca_file",
        "tls_cert_file",
        "tls_key_file",
        "require_tls",
        "connect_timeout",
        "duplicate_window",
        "max_age",
        "replicas",
        "log_format",
        "listen",
        "body_limit",
        "publish_timeout",
        "max_in_flight",
        "tolerance",
        "retry_after",
        "drain_timeout",
        "verifier",
        "secrets",
        "secrets_file",
        "rate_limit",
        "type_header",
        "type_pointer",
        "id_header",
        "id_pointer",
        "header",
        "prefix",
        "encoding",
        "algorithm",
        "payload",
        "timestamp_header",
        "data_dir",
        "embedded_nats",
    ];
    let words: std::collections::HashSet<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    for key in keys {
        assert!(words.contains(key), "{key} is not documented");
    }
}
