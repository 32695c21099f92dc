//! Where the admin token comes from when it is not given directly: a Secrets Manager secret, read once
//! at start (`--admin-token-secret`), so the token never sits in a process's arguments or a Lambda
//! function's configuration. Must never: log the value, or start with a token it could not read.

use aws_sdk_secretsmanager::Client;

use crate::config::{AdminToken, Config};

/// Why the admin token could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the admin token secret {secret}: {reason}")]
    Unreadable { secret: String, reason: String },
    #[error("the admin token secret {secret} is not a usable token: {reason}")]
    Invalid { secret: String, reason: String },
}

/// `config` with its admin token filled in from `--admin-token-secret`, when that is set.
pub async fn resolve(mut config: Config) -> Result<Config, SecretError> {
    let Some(secret) = config.admin_token_secret.clone() else {
        return Ok(config);
    };
    let shared = aws_config::load_from_env().await;
    let output = Client::new(&shared)
        .get_secret_value()
        .secret_id(&secret)
        .send()
        .await
        .map_err(|e| SecretError::Unreadable {
            secret: secret.clone(),
            reason: aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
        })?;
    let value = output.secret_string().ok_or_else(|| SecretError::Invalid {
        secret: secret.clone(),
        reason: "it holds binary data, not a string".into(),
    })?;
    let token: AdminToken = value
        .trim()
        .parse()
        .map_err(|reason| SecretError::Invalid {
            secret: secret.clone(),
            reason,
        })?;
    config.admin_token = Some(token);
    Ok(config)
}
