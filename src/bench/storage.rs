//! `yottastore bench storage` (being written).

use clap::Args;

#[derive(Args)]
pub struct StorageBenchArgs {}

pub fn run(_args: StorageBenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench storage is being written")
}
