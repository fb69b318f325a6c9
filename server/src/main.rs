//! The `stagecast` binary: parse the configuration, start the server, wait
//! for Ctrl-C (stop) or SIGTERM (drain, then stop).

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
        println!("API key (shown once, stored in {}): {}", api_key_path.display(), running.state.auth.api_key());
    }
    let base = running.base_url();
    println!(
        "Stagecast is running: sample app {base}/  control plane {base}/v1  media udp+tcp {}",
        running.media_addr
    );

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        signal = tokio::signal::ctrl_c() => {
            signal?;
            tracing::info!("shutting down");
        }
        _ = terminate.recv() => {
            // Drain (as LiveKit does): what runs goes on, anything new is
            // refused, and the process ends when nothing is left; a second
            // signal, or the drain timeout, ends it at once.
            let state = &running.state;
            state.ops.start_draining();
            let timeout = state.config.drain_timeout;
            tracing::info!(?timeout, "SIGTERM: draining; existing stages and broadcasts go on, new ones are refused");
            tokio::select! {
                _ = stagecast_server::ops::drained(&state.stages, &state.channels) => tracing::info!("drained: no stage or broadcast left"),
                _ = tokio::time::sleep(timeout) => tracing::warn!("drain timeout: exiting with stages or broadcasts left"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted while draining"),
                _ = terminate.recv() => tracing::info!("a second SIGTERM while draining"),
            }
        }
        result = &mut running.task => {
            result?;
            anyhow::bail!("the HTTP server stopped");
        }
    }
    running.task.abort();
    Ok(())
}
