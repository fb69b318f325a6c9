//! The `stagecast` binary: parse the configuration, start the server, wait
//! for Ctrl-C.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = stagecast_server::Config::parse();
    let api_key_path = stagecast_server::auth::api_key_path(&config);
    let mut running = stagecast_server::start(config).await?;

    if running.api_key_was_generated {
        // Printed, not logged: logs are kept and shipped, the terminal is not.
        println!("API key (shown once, stored in {}): {}", api_key_path.display(), running.state.api_key);
    }
    let base = running.base_url();
    println!(
        "Stagecast is running: sample app {base}/  control plane {base}/v1  media udp+tcp {}",
        running.media_addr
    );

    tokio::select! {
        signal = tokio::signal::ctrl_c() => {
            signal?;
            tracing::info!("shutting down");
            running.task.abort();
        }
        result = &mut running.task => {
            result?;
            anyhow::bail!("the HTTP server stopped");
        }
    }
    Ok(())
}
