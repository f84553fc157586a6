//! The `funnel` binary: parses configuration and hands over to the libraries.

mod bench;
mod cli;
mod projections;
mod simulate;

use clap::Parser as _;

// Events, headers and rows are allocated on one thread and freed on another all the time
// (the read-ahead of a projection, the group commit); glibc's allocator spent a quarter of the
// projector's CPU on that in a profile of a rebuild, mimalloc much less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    cli::init_tracing(&cli.log_format);
    cli::run(cli).await
}
