//! `hookbus-analytics`: analytics as its own process.

/// The same allocator as the `hookbus` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config = args.next().map(Into::into),
            other => anyhow::bail!(
                "unknown argument {other:?}; usage: hookbus-analytics [--config FILE]"
            ),
        }
    }
    hookbus_analytics::service_main(config).await
}
