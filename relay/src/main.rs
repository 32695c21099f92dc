//! The relay binary: parse the command line, start logging, and run the chosen command.

use std::process::ExitCode;

use clap::Parser;
use relay::config::{Cli, Command};
use relay::startup;
use relay::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            telemetry::init_logging(cli.serve.log_format);
            match startup::run(cli.serve).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(message = "Relay failed to start or stopped on an error.", error = %error);
                    ExitCode::FAILURE
                }
            }
        }
        Command::Openapi => {
            let spec = startup::build(
                &cli.serve,
                startup::open_store(&relay::config::StoreUri::Memory).unwrap_or_else(|e| {
                    eprintln!("{e}");
                    std::process::exit(1)
                }),
            )
            .openapi;
            match spec.to_pretty_json() {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("cannot render the OpenAPI document: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
