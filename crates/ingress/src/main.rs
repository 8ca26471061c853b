//! `hookbus-ingress`: the ingress as its own process. Configured by `--config <file>` or
//! `HOOKBUS_CONFIG`, and the environment.

/// The same allocator as the `hookbus` binary (see its main for why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config = args.next().map(Into::into),
            other => {
                anyhow::bail!("unknown argument {other:?}; usage: hookbus-ingress [--config FILE]")
            }
        }
    }
    hookbus_ingress::service_main(config).await
}
