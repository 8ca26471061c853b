//! `hookbus-ingress`: the ingress as its own process. Configured by `--config <file>` or
//! `HOOKBUS_CONFIG`, and the environment.

/// The same allocator as the `hookbus` binary (see its main for why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = hookbus_config::config_arg("hookbus-ingress").map_err(anyhow::Error::msg)?;
    hookbus_ingress::service_main(config).await
}
