//! `hookbus-notifications`: notifications as its own process.

/// The same allocator as the `hookbus` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = hookbus_config::config_arg("hookbus-notifications").map_err(anyhow::Error::msg)?;
    hookbus_notifications::service_main(config).await
}
