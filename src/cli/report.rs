//! `protond report`: the fleet report (`crate::report`) from the state store, as tables or
//! JSON, the same document `GET /api/v1/report` answers. It only reads: it must never
//! write the store, fetch, or start a deployment.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::{OutputFormat, load_config, runtime};

/// `protond report`: reads the store, builds the report, prints it.
pub(super) fn report_cmd(config: &Path, output: OutputFormat) -> Result<ExitCode> {
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        let store = crate::state::Store::open_config(&config).await?;
        let report = crate::report::build(&crate::report::read(&store).await?);
        let mut out = std::io::stdout().lock();
        match output {
            OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
            OutputFormat::Table => write!(out, "{}", crate::report::table(&report))?,
        }
        Ok(ExitCode::SUCCESS)
    })
}
