//! `yottastore debug ...` (hidden): tools for crash and fault tests (being written).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum DebugCommand {}

pub fn run(command: DebugCommand) -> anyhow::Result<()> {
    match command {}
}
