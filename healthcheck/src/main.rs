//! The `healthcheck` command: parse the command line, run the probes, show them, write the reports,
//! publish to CloudWatch when asked, and exit 0 only when every probe passed within its budget.
//!
//! Exit codes: 0 all probes passed; 1 a probe failed (this wins over 2); 2 the canary itself could not
//! run or report (bad flags, a report file not written, CloudWatch refused the data).
//! It must never judge a probe itself: outcomes come from the library, this file only shows, writes
//! and publishes them.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use healthcheck::catalog;
use healthcheck::config::{CatalogFormat, Cli, ColorChoice, Command, Settings};
use healthcheck::publish::Publisher;
use healthcheck::{logging, run_canary, terminal};

const PROBE_FAILED: u8 = 1;
const CANARY_BROKEN: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::MetricsCatalog { format }) = cli.command {
        match format {
            CatalogFormat::Json => println!("{}", catalog::to_json()),
            CatalogFormat::Markdown => print!("{}", catalog::to_markdown()),
        }
        return ExitCode::SUCCESS;
    }

    let settings = match Settings::from_args(&cli.run) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("healthcheck: {error}");
            return ExitCode::from(CANARY_BROKEN);
        }
    };
    // JSON lines on stderr, quiet unless RUST_LOG asks: stdout is the terminal view.
    logging::init(settings.stage.as_str(), "warn", logging::Output::Stderr);
    let report = run_canary(&settings).await;

    let color = match cli.run.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    print!("{}", terminal::render(&report, color));

    let mut broken = false;
    let outputs = [
        (
            cli.run.report_json.as_deref(),
            report.to_json(),
            "JSON report",
        ),
        (
            cli.run.report_md.as_deref(),
            report.to_markdown(),
            "Markdown report",
        ),
        (cli.run.junit.as_deref(), report.to_junit(), "JUnit report"),
    ];
    for (path, text, what) in outputs {
        if let Some(path) = path {
            match write(path, &text) {
                Ok(()) => println!("{what}: {}", path.display()),
                Err(error) => {
                    eprintln!(
                        "healthcheck: cannot write the {what} to {}: {error}",
                        path.display()
                    );
                    broken = true;
                }
            }
        }
    }

    if cli.run.cloudwatch {
        match Publisher::from_env().await.publish(&report).await {
            Ok(count) => println!(
                "CloudWatch: {count} data points in {} (Stage={})",
                catalog::NAMESPACE,
                report.stage
            ),
            Err(error) => {
                eprintln!("healthcheck: {error}");
                broken = true;
            }
        }
    }

    if !report.ok {
        ExitCode::from(PROBE_FAILED)
    } else if broken {
        ExitCode::from(CANARY_BROKEN)
    } else {
        ExitCode::SUCCESS
    }
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}
