//! `hookbus-analytics`: analytics as its own process.

/// The same allocator as the `hookbus` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = hookbus_service::ServiceArgs::from_env();
    Ok(hookbus_analytics::service_main(args.config).await?)
}
