//! The command line and environment, parsed once into typed values (clap derive; every flag has a
//! `HEALTHCHECK_*` environment variable, which is how the Lambda entry is configured). Nothing else in
//! the crate reads the environment for settings, and nothing here does I/O.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;

use crate::names::{Budgets, ProbeName};

/// healthcheck: the relayops canary.
///
/// Probes a relay from outside (the web app, an API round trip, readiness, the saved string, the
/// timestamp log), prints what it saw, writes reports, optionally publishes CloudWatch metrics, and
/// exits non-zero when any probe failed or was slower than its budget.
#[derive(Debug, Parser)]
#[command(name = "healthcheck", version, about, long_about = None, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the canary's metric catalog (namespace, metrics, dimensions, units) and exit.
    MetricsCatalog {
        #[arg(long, value_enum, default_value_t = CatalogFormat::Json)]
        format: CatalogFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CatalogFormat {
    Json,
    Markdown,
}

/// Everything one canary run needs, as given on the command line or in the environment.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Base URL of the relay, e.g. `https://relay.example.com` or `http://127.0.0.1:8080`. A base path
    /// (an API Gateway stage such as `/prod`) is kept.
    #[arg(long, env = "HEALTHCHECK_TARGET", required = true)]
    pub target: Option<String>,

    /// The stage this run checks: the `Stage` dimension of every metric (`local`, `dev`, `prod`, ...).
    #[arg(long, env = "HEALTHCHECK_STAGE", default_value = "local")]
    pub stage: String,

    /// Write the JSON report to this file.
    #[arg(long, env = "HEALTHCHECK_REPORT_JSON")]
    pub report_json: Option<PathBuf>,

    /// Write the Markdown report (a CI step summary) to this file.
    #[arg(long, env = "HEALTHCHECK_REPORT_MD")]
    pub report_md: Option<PathBuf>,

    /// Write a JUnit XML report (one test case per probe) to this file.
    #[arg(long, env = "HEALTHCHECK_JUNIT")]
    pub junit: Option<PathBuf>,

    /// Publish `Success` and `Duration` per probe to CloudWatch (namespace `Relay/Canary`), using the
    /// standard AWS configuration (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL`).
    #[arg(long, env = "HEALTHCHECK_CLOUDWATCH")]
    pub cloudwatch: bool,

    /// The probes to run, comma-separated.
    #[arg(long, env = "HEALTHCHECK_PROBES", value_enum, value_delimiter = ',',
          default_values_t = ProbeName::ALL.to_vec())]
    pub probes: Vec<ProbeName>,

    /// Longest wait for any one HTTP request (connect included) before the probe fails.
    #[arg(long, env = "HEALTHCHECK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// How many more times a failed probe is tried (0: no retries, the default, so every failure shows).
    #[arg(long, env = "HEALTHCHECK_RETRIES", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=5))]
    pub retries: u32,

    /// Pause before each retry.
    #[arg(long, env = "HEALTHCHECK_RETRY_DELAY", default_value = "1s", value_parser = parse_duration)]
    pub retry_delay: Duration,

    /// Latency budget of the website probe (the page and its assets). Slower is a failure.
    #[arg(long, env = "HEALTHCHECK_BUDGET_WEBSITE", default_value = "2s", value_parser = parse_duration)]
    pub budget_website: Duration,

    /// Latency budget of the API round trip (create, read, count, delete). Slower is a failure.
    #[arg(long, env = "HEALTHCHECK_BUDGET_API_ROUNDTRIP", default_value = "3s", value_parser = parse_duration)]
    pub budget_api_roundtrip: Duration,

    /// Latency budget of the readiness probe. Slower is a failure.
    #[arg(long, env = "HEALTHCHECK_BUDGET_READYZ", default_value = "1s", value_parser = parse_duration)]
    pub budget_readyz: Duration,

    /// Latency budget of the saved-string page probe. Slower is a failure.
    #[arg(long, env = "HEALTHCHECK_BUDGET_SAVED", default_value = "1s", value_parser = parse_duration)]
    pub budget_saved: Duration,

    /// Latency budget of the timestamp-log read probe. Slower is a failure.
    #[arg(long, env = "HEALTHCHECK_BUDGET_APP_READ", default_value = "1s", value_parser = parse_duration)]
    pub budget_app_read: Duration,

    /// Colour the terminal view: `auto` (when stdout is a terminal and NO_COLOR is unset), `always`, `never`.
    #[arg(long, env = "HEALTHCHECK_COLOR", value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// A run's settings, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Target,
    pub stage: Stage,
    pub probes: Vec<ProbeName>,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_delay: Duration,
    pub budgets: Budgets,
}

impl Settings {
    /// Settings for `target` with every default: all probes, default budgets, stage `local`.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            stage: Stage::local(),
            probes: ProbeName::ALL.to_vec(),
            timeout: Duration::from_secs(5),
            retries: 0,
            retry_delay: Duration::from_secs(1),
            budgets: Budgets::default(),
        }
    }

    /// Validate what clap parsed.
    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        let target = args
            .target
            .as_deref()
            .ok_or(ConfigError::MissingTarget)?
            .parse()?;
        let mut probes = Vec::new();
        for probe in &args.probes {
            if !probes.contains(probe) {
                probes.push(*probe);
            }
        }
        if probes.is_empty() {
            return Err(ConfigError::NoProbes);
        }
        Ok(Self {
            target,
            stage: args.stage.parse()?,
            probes,
            timeout: args.timeout,
            retries: args.retries,
            retry_delay: args.retry_delay,
            budgets: Budgets {
                website: args.budget_website,
                api_roundtrip: args.budget_api_roundtrip,
                readyz: args.budget_readyz,
                saved: args.budget_saved,
                app_read: args.budget_app_read,
            },
        })
    }
}

/// The relay's base URL: http or https, no query or fragment, no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target(Url);

impl Target {
    /// The absolute URL of `path` (which starts with `/`) under the base, keeping any base path.
    pub fn url(&self, path: &str) -> Result<Url, ConfigError> {
        let base = self.0.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}")).map_err(|e| ConfigError::Target(e.to_string()))
    }
}

impl FromStr for Target {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = Url::parse(s.trim())
            .map_err(|e| ConfigError::Target(format!("`{s}` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::Target(format!(
                "`{s}`: the scheme must be http or https"
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::Target(format!("`{s}` has no host")));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::Target(format!(
                "`{s}`: give the base URL only, without a query or fragment"
            )));
        }
        Ok(Self(url))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str().trim_end_matches('/'))
    }
}

/// The stage name: 1-64 characters of `A-Za-z0-9._-`, a safe CloudWatch dimension value and file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage(String);

impl Stage {
    pub fn local() -> Self {
        Self("local".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Stage {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ConfigError::Stage(s.chars().take(80).collect()))
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--target (HEALTHCHECK_TARGET) is required: the relay's base URL")]
    MissingTarget,
    #[error("--target (HEALTHCHECK_TARGET): {0}")]
    Target(String),
    #[error(
        "--stage (HEALTHCHECK_STAGE) `{0}` must be 1-64 characters of letters, digits, `.`, `_` or `-`"
    )]
    Stage(String),
    #[error("--probes (HEALTHCHECK_PROBES) names no probe")]
    NoProbes,
}

/// `250ms`, `10s`, `5m`, or a bare number of seconds (the relay's duration syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 250ms, 10s or 5m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("`{s}`: the unit must be ms, s or m")),
    };
    if duration.is_zero() {
        return Err(format!("`{s}`: must be more than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let cli =
            Cli::try_parse_from(["healthcheck", "--target", "http://127.0.0.1:8080"]).unwrap();
        let settings = Settings::from_args(&cli.run).unwrap();
        assert_eq!(settings.stage.as_str(), "local");
        assert_eq!(settings.probes, ProbeName::ALL);
        assert_eq!(settings.timeout, Duration::from_secs(5));
        assert_eq!(settings.retries, 0, "retries are off by default");
        assert_eq!(settings.budgets, Budgets::default());
        assert!(!cli.run.cloudwatch);
    }

    #[test]
    fn the_metrics_catalog_needs_no_target() {
        let cli =
            Cli::try_parse_from(["healthcheck", "metrics-catalog", "--format", "json"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::MetricsCatalog {
                format: CatalogFormat::Json
            })
        ));
        let missing = Cli::try_parse_from(["healthcheck"]).unwrap_err();
        assert!(missing.to_string().contains("--target"), "{missing}");
    }

    #[test]
    fn probes_and_budgets_parse() {
        let cli = Cli::try_parse_from([
            "healthcheck",
            "--target",
            "https://relay.example.com/prod/",
            "--probes",
            "readyz,app-read,readyz",
            "--budget-readyz",
            "250ms",
            "--retries",
            "2",
        ])
        .unwrap();
        let settings = Settings::from_args(&cli.run).unwrap();
        assert_eq!(settings.probes, [ProbeName::Readyz, ProbeName::AppRead]);
        assert_eq!(settings.budgets.readyz, Duration::from_millis(250));
        assert_eq!(settings.retries, 2);
        assert!(Cli::try_parse_from(["healthcheck", "--target", "x", "--probes", "nope"]).is_err());
        assert!(Cli::try_parse_from(["healthcheck", "--target", "x", "--retries", "9"]).is_err());
    }

    #[test]
    fn targets_keep_their_base_path() {
        let target: Target = "https://abc.execute-api.us-west-2.amazonaws.com/prod/"
            .parse()
            .unwrap();
        assert_eq!(
            target.url("/readyz").unwrap().as_str(),
            "https://abc.execute-api.us-west-2.amazonaws.com/prod/readyz"
        );
        let local: Target = "http://127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            local.url("/app?limit=1").unwrap().as_str(),
            "http://127.0.0.1:8080/app?limit=1"
        );
        assert_eq!(local.to_string(), "http://127.0.0.1:8080");
        for bad in ["127.0.0.1:8080", "ftp://x", "http://x/?q=1", "not a url"] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn stages_are_safe_dimension_values() {
        assert!("prod".parse::<Stage>().is_ok());
        assert!("pr-42.dev_1".parse::<Stage>().is_ok());
        for bad in ["", "has space", "a/b", "x".repeat(65).as_str()] {
            assert!(bad.parse::<Stage>().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("1h").is_err());
    }
}
