//! `hookbus-ingress`: the ingress as its own process. Configured by `--config <file>` or
//! `HOOKBUS_CONFIG`, and the environment.

/// The same allocator as the `hookbus` binary (see its main for why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = hookbus_service::ServiceArgs::from_env();
    Ok(hookbus_ingress::service_main(args.config).await?)
}
