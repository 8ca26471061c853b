use std::time::Duration;

use async_nats::{Client, ConnectOptions};
use secrecy::ExposeSecret;

use crate::NatsConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot read {what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot reach NATS at {url} within {timeout:?}: {reason}; start a nats-server with JetStream (-js) or set NATS_URL"
    )]
    Unreachable {
        url: String,
        timeout: Duration,
        reason: String,
    },
    #[error(
        "the nats-server at {url} is version {version}; hookbus needs 2.12 or newer with JetStream (per-message TTL, schedules, atomic batches)"
    )]
    TooOld { url: String, version: String },
    #[error(
        "ingress.body_limit ({body_limit} bytes) plus {headroom} bytes of envelope headroom exceeds the NATS server's max_payload ({max_payload} bytes): raise max_payload in the nats-server configuration or lower ingress.body_limit"
    )]
    PayloadTooLarge {
        body_limit: u64,
        headroom: u64,
        max_payload: u64,
    },
}

/// Connects to the broker. Reconnects forever afterwards, quickly at first.
pub async fn connect(config: &NatsConfig, name: &str) -> Result<Client, ConnectError> {
    let mut options = ConnectOptions::new()
        .name(name)
        .connection_timeout(config.connect_timeout.min(Duration::from_secs(5)))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 100).min(2_000))
        })
        .require_tls(config.require_tls);
    if let Some(path) = &config.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| ConnectError::File {
                what: "nats.credentials_file",
                path: path.display().to_string(),
                source,
            })?;
    }
    let token = match (&config.token, &config.token_file) {
        (Some(token), _) => Some(token.expose_secret().to_owned()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| ConnectError::File {
                    what: "nats.token_file",
                    path: path.display().to_string(),
                    source,
                })?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if let Some(token) = token {
        options = options.token(token);
    }
    if let Some(path) = &config.tls_ca_file {
        options = options.add_root_certificates(path.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }

    let unreachable = |reason: String| ConnectError::Unreachable {
        url: config.url.clone(),
        timeout: config.connect_timeout,
        reason,
    };
    // `nats://a:4222,nats://b:4222`: every server of a cluster, tried in turn.
    let servers: Vec<&str> = config
        .url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let mut last_error;
    loop {
        match tokio::time::timeout_at(deadline, options.clone().connect(servers.as_slice())).await {
            Ok(Ok(client)) => {
                let version = client.server_info().version;
                if !supports_version(&version) {
                    return Err(ConnectError::TooOld {
                        url: config.url.clone(),
                        version,
                    });
                }
                return Ok(client);
            }
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => return Err(unreachable("timed out".into())),
        }
        if tokio::time::Instant::now() + Duration::from_millis(250) >= deadline {
            return Err(unreachable(last_error));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether a server version string (`2.15.1`, `v2.12.0-beta`) is 2.12 or newer, the oldest that
/// hookbus runs on.
pub fn supports_version(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 12)
}

/// Whether the client is connected right now.
pub fn is_connected(client: &Client) -> bool {
    matches!(
        client.connection_state(),
        async_nats::connection::State::Connected
    )
}

/// Refuses a body limit that, with the envelope around it, would not fit the server's
/// `max_payload`.
pub fn ensure_fits_max_payload(
    client: &Client,
    body_limit: u64,
    headroom: u64,
) -> Result<(), ConnectError> {
    let max_payload = client.server_info().max_payload as u64;
    if body_limit + headroom > max_payload {
        return Err(ConnectError::PayloadTooLarge {
            body_limit,
            headroom,
            max_payload,
        });
    }
    Ok(())
}

/// Flushes what the client still buffers (acks, last publishes) before the process exits, for at
/// most 2 s: with the broker gone a flush would wait for it forever, and what is unacked is
/// redelivered anyway.
pub async fn flush_before_exit(client: &Client) {
    match tokio::time::timeout(Duration::from_secs(2), client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not flush to the broker before exiting"),
        Err(_) => tracing::warn!("the broker did not take the last buffered messages within 2 s"),
    }
}

#[cfg(test)]
mod tests {
    use super::supports_version;

    #[test]
    fn server_versions_from_2_12_on_are_accepted() {
        for ok in ["2.12.0", "2.15.1", "v2.12.3-beta.1", "3.0.0"] {
            assert!(supports_version(ok), "{ok}");
        }
        for old in ["2.9.10", "2.11.11", "v2.10.0", "garbage"] {
            assert!(!supports_version(old), "{old}");
        }
    }
}
