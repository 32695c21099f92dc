//! The command line and environment, parsed once into typed values (clap derive; every flag has an
//! environment variable). Nothing else in the crate reads the environment for settings.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::filter::LevelFilter;

use crate::domain::MESSAGE_BYTES_CEILING;
use crate::store::sqlite::IntegrityCheck;

/// relay: an observability-first HTTP message relay.
///
/// Run with no arguments to serve the API and web app on http://127.0.0.1:8080, storing messages in
/// ./data/relay.db (created on first start; survives restarts).
#[derive(Debug, Parser)]
#[command(name = "relay", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API and the web app (the default when no command is given).
    Serve,
    /// Print the OpenAPI 3.1 document of the API and exit.
    Openapi,
    /// Create the DynamoDB table named by `--store dynamodb:TABLE` (keys, expiry index, TTL) and exit.
    /// Does nothing to a table that already has the expected keys, except enable TTL if it is off.
    CreateTable,
    /// Raise the number of shards of the table's counters (`--store dynamodb:TABLE`) to SHARDS, safely
    /// while relays serve: every count reads up to the number the table holds. Never lowers it.
    CountShards {
        /// The new number of shards (16 to 1000).
        shards: usize,
    },
    /// Print the metric catalog (every metric's name, kind, unit, labels and help) and exit.
    MetricsCatalog {
        #[arg(long, value_enum, default_value_t = CatalogFormat::Json)]
        format: CatalogFormat,
    },
}

/// Everything the server needs to start.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "RELAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where messages live: `sqlite:PATH` (durable, the default), `dynamodb:TABLE` (AWS; credentials
    /// and region from the usual AWS environment) or `memory:` (lost on exit).
    #[arg(long, env = "RELAY_STORE", default_value = "sqlite:./data/relay.db")]
    pub store: StoreUri,

    /// How the SQLite database is checked for corruption at start: `quick` (`PRAGMA quick_check`,
    /// every page and record), `full` (`PRAGMA integrity_check`, indexes too, slower) or `off`.
    /// A corrupt file is refused, with the way to recover it.
    #[arg(long, env = "RELAY_INTEGRITY_CHECK", value_enum, default_value_t = IntegrityCheck::Quick)]
    pub integrity_check: IntegrityCheck,

    /// DynamoDB endpoint for a local DynamoDB-API server, e.g. `http://127.0.0.1:8000`
    /// (`AWS_ENDPOINT_URL` works too; this flag wins). Unset: the region's DynamoDB.
    #[arg(long, env = "RELAY_DYNAMODB_ENDPOINT")]
    pub dynamodb_endpoint: Option<String>,

    /// The environment name put on every log line and metric (`local`, `dev`, `prod`, ...).
    #[arg(long = "env", env = "RELAY_ENV", default_value = "local")]
    pub environment: String,

    /// Log line format: `json` (one object per line, for machines) or `pretty` (for people).
    #[arg(long, env = "RELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Share of requests, 0.0 to 1.0, that log the relay's lines at debug whatever RUST_LOG says,
    /// decided once per request; every line of such a request carries `sampled: true`. For JSON lines
    /// with a `target=level` RUST_LOG (with span directives or pretty lines it is off, said on stderr).
    #[arg(long, env = "RELAY_DEBUG_SAMPLE_RATE", default_value_t = 0.0, value_parser = sample_rate)]
    pub debug_sample_rate: f64,

    /// The debug buffer: while a request runs, its lines down to this level (`debug`, `trace`) that
    /// RUST_LOG would not write are kept, and written before its request line if it fails (5xx, a
    /// panic, a timeout) or is slower than --log-buffer-slow; otherwise dropped. `off` by default.
    /// For JSON lines with a `target=level` RUST_LOG, like --debug-sample-rate.
    #[arg(long, env = "RELAY_LOG_BUFFER", default_value = "off", value_parser = buffer_level)]
    pub log_buffer: LevelFilter,

    /// With --log-buffer: a request slower than this writes its buffer too.
    #[arg(long, env = "RELAY_LOG_BUFFER_SLOW", default_value = "1s", value_parser = positive_duration)]
    pub log_buffer_slow: Duration,

    /// With --log-buffer: most bytes of lines one request keeps; past that the oldest are dropped,
    /// and the flush says how many with one WARN line.
    #[arg(long, env = "RELAY_LOG_BUFFER_MAX_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(1024..=16 * 1024 * 1024))]
    pub log_buffer_max_bytes: u32,

    /// Bearer token required by `PUT /saved`. Without one, the saved string cannot be changed. Prefer
    /// the RELAY_ADMIN_TOKEN variable or --admin-token-secret: a flag shows in `ps`.
    #[arg(
        long,
        env = "RELAY_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_secret"
    )]
    pub admin_token: Option<AdminToken>,

    /// The ARN (or name) of a Secrets Manager secret holding the admin token, read once at start
    /// (credentials and region from the usual AWS environment). What the AWS stacks use.
    #[arg(long, env = "RELAY_ADMIN_TOKEN_SECRET")]
    pub admin_token_secret: Option<String>,

    /// Largest accepted request body, in bytes (larger requests get 413).
    #[arg(long, env = "RELAY_MAX_BODY_BYTES", default_value_t = 256 * 1024,
          value_parser = clap::value_parser!(u32).range(1024..=4 * 1024 * 1024))]
    pub max_body_bytes: u32,

    /// Largest accepted message, in bytes of UTF-8 (at most 358400, what a DynamoDB item can hold).
    #[arg(long, env = "RELAY_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(1..=MESSAGE_BYTES_CEILING as i64))]
    pub max_message_bytes: u32,

    /// Requests per second allowed per client IP on the API routes; `0` turns rate limiting off.
    #[arg(long, env = "RELAY_RATE_LIMIT", default_value_t = 50)]
    pub rate_limit: u32,

    /// Requests a client may send in a burst above its rate (defaults to twice the rate).
    #[arg(long, env = "RELAY_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,

    /// Behind one proxy that appends to `X-Forwarded-For`: key the rate limit on the address it added
    /// (the rightmost). The same as `--trusted-proxy-hops 1`. Only behind such a proxy: otherwise
    /// clients can pick their own bucket.
    #[arg(long, env = "RELAY_TRUST_FORWARDED_FOR", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub trust_forwarded_for: bool,

    /// How many proxies in front of the relay append to `X-Forwarded-For` and are trusted: the rate
    /// limit keys on the address the outermost one added (the Nth entry from the right). 0: the
    /// connection's own peer address (or API Gateway's source IP in Lambda).
    #[arg(long, env = "RELAY_TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: u8,

    /// Longest time a request may take before it is answered with 503.
    #[arg(long, env = "RELAY_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Browser origins allowed to call the API cross-origin (comma-separated), e.g.
    /// `https://app.example.com`. Empty: same-origin only.
    #[arg(long, env = "RELAY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// How long a message read may be served from the in-process cache; `0s` turns the cache off.
    #[arg(long, env = "RELAY_CACHE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub cache_ttl: Duration,

    /// Most bytes the read cache holds, as its weigher counts them: per message about twice its text
    /// (the text and its rendered JSON) plus a fixed overhead per entry.
    #[arg(long, env = "RELAY_CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_max_bytes: u64,

    /// How often expired messages are removed (and uncounted). The count of messages may include
    /// messages that expired less than this long ago.
    #[arg(long, env = "RELAY_SWEEP_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,

    /// Turn logs and metrics off entirely (no request fields or line, no recorder): only for
    /// measuring what telemetry costs. Never in production.
    #[arg(long, env = "RELAY_NO_TELEMETRY", hide = true, action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_telemetry: bool,

    /// Most connections open at once. At the cap, new connections wait in the kernel's queue until one
    /// closes. Lowered to fit under the open-file limit, which the relay raises to its hard maximum.
    #[arg(long, env = "RELAY_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Longest a client may take to send a request's line and headers, from their first byte.
    #[arg(long, env = "RELAY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub header_read_timeout: Duration,

    /// How long a connection may stay open with no request in flight and no traffic (keep-alive).
    /// Behind a load balancer, keep it longer than the balancer's own idle timeout (60 s on AWS's).
    #[arg(long, env = "RELAY_IDLE_TIMEOUT", default_value = "75s", value_parser = positive_duration)]
    pub idle_timeout: Duration,

    /// How long graceful shutdown waits for in-flight requests after SIGTERM/SIGINT.
    #[arg(long, env = "RELAY_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl Config {
    /// A configuration for tests and embedding: memory store, defaults everywhere else. Never reads the
    /// `RELAY_*` environment, so a developer's settings cannot leak into a test.
    pub fn for_tests() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.get_matches_from(["relay", "--store", "memory:"]);
        match Cli::from_arg_matches(&matches) {
            Ok(cli) => cli.serve,
            Err(error) => error.exit(),
        }
    }

    pub fn rate_limit_burst(&self) -> u32 {
        self.rate_limit_burst
            .unwrap_or(self.rate_limit.saturating_mul(2))
            .max(1)
    }

    /// The trusted `X-Forwarded-For` hops: `--trusted-proxy-hops`, or 1 for `--trust-forwarded-for`.
    pub fn forwarded_hops(&self) -> u8 {
        match (self.trusted_proxy_hops, self.trust_forwarded_for) {
            (0, true) => 1,
            (hops, _) => hops,
        }
    }
}

/// A share from 0.0 to 1.0, as `0.01`.
fn sample_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not between 0.0 and 1.0"))
    }
}

/// A log level for the debug buffer: `off`, or one of `error` to `trace`.
fn buffer_level(text: &str) -> Result<LevelFilter, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not off, error, warn, info, debug or trace"))
}

/// A duration above zero, as `10s`, `1m30s`, `500ms`.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be above zero".to_owned()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(error.to_string()),
    }
}

/// Which store to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUri {
    Memory,
    Sqlite(PathBuf),
    /// A DynamoDB table (see `relay create-table`).
    Dynamodb {
        table: String,
    },
}

impl FromStr for StoreUri {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("memory", "")) => Ok(Self::Memory),
            Some(("sqlite", path)) if !path.is_empty() => Ok(Self::Sqlite(PathBuf::from(path))),
            // DynamoDB's own rule for table names, checked here so a typo fails at start-up.
            Some(("dynamodb", table))
                if (3..=255).contains(&table.len())
                    && table
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) =>
            {
                Ok(Self::Dynamodb {
                    table: table.to_owned(),
                })
            }
            _ => Err(format!(
                "`{s}` is not a store: use `sqlite:PATH` (e.g. sqlite:./data/relay.db), \
                 `dynamodb:TABLE` (3-255 of a-z A-Z 0-9 _ . -) or `memory:`"
            )),
        }
    }
}

impl fmt::Display for StoreUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory:"),
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Dynamodb { table } => write!(f, "dynamodb:{table}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CatalogFormat {
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The admin token. Its `Debug` never shows the value, so it cannot leak through a logged config.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl FromStr for AdminToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() < 16 {
            return Err("the admin token must be at least 16 characters".into());
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin token must be visible ASCII (no spaces)".into());
        }
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn store_uris_parse() {
        assert_eq!("memory:".parse(), Ok(StoreUri::Memory));
        assert_eq!(
            "sqlite:/tmp/x.db".parse(),
            Ok(StoreUri::Sqlite(PathBuf::from("/tmp/x.db")))
        );
        assert!("sqlite:".parse::<StoreUri>().is_err());
        assert!("postgres://x".parse::<StoreUri>().is_err());
        let table = StoreUri::Dynamodb {
            table: "relay-dev.messages_1".into(),
        };
        assert_eq!("dynamodb:relay-dev.messages_1".parse(), Ok(table.clone()));
        assert_eq!(table.to_string(), "dynamodb:relay-dev.messages_1");
        assert!("dynamodb:".parse::<StoreUri>().is_err());
        assert!("dynamodb:ab".parse::<StoreUri>().is_err());
        assert!("dynamodb:no spaces".parse::<StoreUri>().is_err());
    }

    #[test]
    fn switches_default_off_and_turn_on_by_flag() {
        let yes = Cli::try_parse_from(["relay", "--trust-forwarded-for"])
            .map(|c| c.serve.trust_forwarded_for);
        assert_eq!(yes.ok(), Some(true));
        let no = Cli::try_parse_from(["relay"]).map(|c| c.serve.trust_forwarded_for);
        assert_eq!(no.ok(), Some(false));
    }

    #[test]
    fn durations_take_units() {
        let cli = Cli::parse_from(["relay", "--request-timeout", "250ms", "--cache-ttl", "0s"]);
        assert_eq!(cli.serve.request_timeout, Duration::from_millis(250));
        assert!(cli.serve.cache_ttl.is_zero());
        assert!(Cli::try_parse_from(["relay", "--sweep-interval", "ten"]).is_err());
    }

    #[test]
    fn admin_tokens_are_long_and_never_printed() {
        assert!("short".parse::<AdminToken>().is_err());
        let token: AdminToken = "0123456789abcdef-secret"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{token:?}").contains("secret"));
    }

    /// Run in a child process (this test binary again) with `RELAY_*` set, since a test cannot safely set
    /// its own process's environment.
    #[test]
    fn test_configurations_ignore_the_relay_environment() {
        if std::env::var_os("RELAY_CONFIG_TEST_CHILD").is_some() {
            let parsed = Cli::parse_from(["relay"]).serve;
            assert_eq!(parsed.rate_limit, 7, "the child sees the environment");
            assert_eq!(parsed.environment, "from-env");
            let config = Config::for_tests();
            assert_eq!(config.rate_limit, 50, "for_tests keeps the default");
            assert_eq!(config.environment, "local");
            assert_eq!(config.store, StoreUri::Memory);
            return;
        }
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
        let output = std::process::Command::new(exe)
            .args([
                "--exact",
                "config::tests::test_configurations_ignore_the_relay_environment",
            ])
            .env("RELAY_CONFIG_TEST_CHILD", "1")
            .env("RELAY_RATE_LIMIT", "7")
            .env("RELAY_ENV", "from-env")
            .env("RELAY_STORE", "sqlite:/nonexistent/relay.db")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(
            stdout.contains("1 passed"),
            "the child ran the test: {stdout}"
        );
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let cli = Cli::parse_from(["relay"]);
        assert_eq!(cli.serve.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            cli.serve.store,
            StoreUri::Sqlite(PathBuf::from("./data/relay.db"))
        );
        assert_eq!(cli.serve.rate_limit_burst(), 100);
    }
}
