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
    assert_eq!(config.service.sources().unwrap().len(), 7);
    let inventory = hookbus_inventory::Config::load(&loader).unwrap();
    assert_eq!(inventory.service.low_stock_threshold, 5);
    let analytics = hookbus_analytics::Config::load(&loader).unwrap();
    assert_eq!(analytics.service.subjects, ["events.>"]);
    let notifications = hookbus_notifications::Config::load(&loader).unwrap();
    let rules = hookbus_notifications::Rules::compile(&notifications.service).unwrap();
    assert_eq!(rules.rules().len(), 3);
    rules.filter_subjects().unwrap();
    // The egress's two secrets come from the environment (or files), never from the example.
    let loader = Loader::with_env(
        Some(std::path::Path::new(EXAMPLE)),
        [
            ("HOOKBUS_EGRESS__API_TOKEN", "example-token-0123456789"),
            (
                "HOOKBUS_EGRESS__ENCRYPTION_KEY",
                "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .unwrap();
    let egress = hookbus_egress::Config::load(&loader).unwrap();
    assert_eq!(egress.service.listen.port(), 8081);
    assert_eq!(egress.service.retry_schedule.len(), 7);
    let error = hookbus_egress::Config::load(
        &Loader::with_env(Some(std::path::Path::new(EXAMPLE)), std::iter::empty()).unwrap(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("egress.api_token"), "{error}");
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
        "sink_listen",
        // inventory
        "database_url",
        "api_token",
        "low_stock_threshold",
        "thresholds",
        "consumer",
        "concurrency",
        "ack_wait",
        "extra_subjects",
        "relay_interval",
        "start",
        // analytics
        "subjects",
        // notifications
        "max_deliveries",
        "retry_backoff",
        "webhook_timeout",
        "smtp",
        "url_file",
        "from",
        "timeout",
        "rules",
        "channel",
        "to",
        "subject",
        "template",
        "text_field",
        // egress
        "api_token_file",
        "encryption_key",
        "encryption_key_file",
        "allow_private_networks",
        "allowed_subnets",
        "request_timeout",
        "retry_schedule",
        "retry_jitter",
        "disable_after",
        "rotation_overlap",
        "retention",
        "max_concurrent_requests",
        "default_max_in_flight",
        "dispatcher",
        "dispatch_concurrency",
        "partitions",
        "endpoint_buffer",
        "partition_max_ack_pending",
        "replica_timeout",
        // egress.console
        "enabled",
        "public_url",
        "session_ttl",
        "portal_link_ttl",
        "portal_session_ttl",
        "frame_ancestors",
        "brand_name",
        "accent_color",
        "logo_file",
    ];
    let words: std::collections::HashSet<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    for key in keys {
        assert!(words.contains(key), "{key} is not documented");
    }
}
