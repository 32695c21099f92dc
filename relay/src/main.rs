//! The relay binary: parse the command line, start logging, and run the chosen command. The same
//! binary serves HTTP locally and Lambda invocations in AWS (detected by `AWS_LAMBDA_RUNTIME_API`).

use std::process::ExitCode;

use clap::Parser;
use relay::config::{CatalogFormat, Cli, Command, Config, StoreUri};
use relay::store::dynamodb::{DynamoStore, TABLE, TableCreated};
use relay::telemetry::{self, Runtime};
use relay::{lambda, startup};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.serve).await,
        Command::Openapi => print_openapi(&cli.serve).await,
        Command::CreateTable => create_table(&cli.serve).await,
        Command::CountShards { shards } => count_shards(&cli.serve, shards).await,
        Command::MetricsCatalog { format } => {
            match format {
                CatalogFormat::Json => {
                    match serde_json::to_string_pretty(&telemetry::names::catalog()) {
                        Ok(json) => println!("{json}"),
                        Err(error) => {
                            eprintln!("cannot render the catalog: {error}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                CatalogFormat::Markdown => print!("{}", telemetry::names::catalog_markdown()),
            }
            ExitCode::SUCCESS
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    let on_lambda = lambda::is_running_on_lambda();
    let runtime = if on_lambda {
        Runtime::Lambda
    } else {
        Runtime::Server
    };
    let _logs = (!config.no_telemetry).then(|| telemetry::init_logging(&config, runtime));
    let result = if on_lambda {
        lambda::run(config).await.map_err(|e| e.to_string())
    } else {
        startup::run(config).await.map_err(|e| e.to_string())
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(message = "Relay failed to start or stopped on an error.", error = %error);
            ExitCode::FAILURE
        }
    }
}

async fn print_openapi(config: &Config) -> ExitCode {
    let memory = Config {
        store: StoreUri::Memory,
        ..config.clone()
    };
    let store = match startup::open_store(&memory).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    match startup::build(config, store, Runtime::Server)
        .openapi
        .document()
        .to_pretty_json()
    {
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

/// The DynamoDB table `--store` names, or the usage of `command` on stderr.
fn dynamodb_table<'a>(config: &'a Config, command: &str) -> Option<&'a str> {
    match &config.store {
        StoreUri::Dynamodb { table } => Some(table),
        _ => {
            eprintln!(
                "{command} works on a DynamoDB table: run `relay --store dynamodb:TABLE {command}` \
                 (or set RELAY_STORE=dynamodb:TABLE)"
            );
            None
        }
    }
}

/// `relay count-shards N`: raise the shards of the table's counters.
async fn count_shards(config: &Config, shards: usize) -> ExitCode {
    let Some(table) = dynamodb_table(config, "count-shards") else {
        return ExitCode::from(2);
    };
    let raised = match DynamoStore::connect(table, config.dynamodb_endpoint.as_deref()).await {
        Ok(store) => store.raise_counter_shards(shards).await,
        Err(error) => Err(error),
    };
    match raised {
        Ok(Ok(())) => {
            println!("The counters of `{table}` have {shards} shards.");
            ExitCode::SUCCESS
        }
        Ok(Err(why)) => {
            eprintln!("cannot set {shards} shards on `{table}`: {why}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("cannot set the shards of `{table}`: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `relay create-table`: create the DynamoDB table that `--store dynamodb:TABLE` names.
async fn create_table(config: &Config) -> ExitCode {
    let Some(table) = dynamodb_table(config, "create-table") else {
        return ExitCode::from(2);
    };
    let created = match DynamoStore::connect(table, config.dynamodb_endpoint.as_deref()).await {
        Ok(store) => store.create_table().await,
        Err(error) => Err(error),
    };
    match created {
        Ok(TableCreated::Created) => {
            println!(
                "Created the DynamoDB table `{table}`, with TTL on `{}`.",
                TABLE.ttl_attribute
            );
            ExitCode::SUCCESS
        }
        Ok(TableCreated::AlreadyExisted) => {
            println!(
                "The DynamoDB table `{table}` already exists with the expected keys; TTL is on `{}`.",
                TABLE.ttl_attribute
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot create the DynamoDB table `{table}`: {error}");
            ExitCode::FAILURE
        }
    }
}
