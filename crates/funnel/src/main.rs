//! The `funnel` binary: parses configuration and hands over to the libraries.

mod bench;
mod cli;
mod projections;
mod simulate;

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    cli::init_tracing(&cli.log_format);
    cli::run(cli).await
}
