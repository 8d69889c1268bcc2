//! `bext cache purge`: the purge API from the command line (through the
//! admin API's blocking client, `admin::post`), so deploy scripts need no curl. Runs in the CLI process, never in the proxy.

use std::net::ToSocketAddrs;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--admin {0}: only http://HOST:PORT is supported")]
    AdminUrl(String),
    #[error("nothing to purge: give --tag, --url, --prefix or --all")]
    Nothing,
    #[error("give only one of --tag, --url, --prefix, --all")]
    Several,
    #[error("cannot reach {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("talking to {0}: {1}")]
    Io(String, std::io::Error),
    #[error("purge failed: HTTP {0}: {1}")]
    Status(u16, String),
    #[error("unexpected reply from {0}")]
    Reply(String),
}

/// What to purge, from the command line.
#[derive(Debug, Default, Clone)]
pub struct PurgeArgs {
    pub tags: Vec<String>,
    pub url: Option<String>,
    pub prefix: Option<String>,
    pub host: Option<String>,
    pub all: bool,
}

impl PurgeArgs {
    /// The JSON body for the purge API.
    pub fn body(&self) -> Result<serde_json::Value, CliError> {
        let kinds = [
            !self.tags.is_empty(),
            self.url.is_some(),
            self.prefix.is_some(),
            self.all,
        ];
        match kinds.iter().filter(|k| **k).count() {
            0 => return Err(CliError::Nothing),
            1 => {}
            _ => return Err(CliError::Several),
        }
        Ok(if self.all {
            serde_json::json!({ "all": true })
        } else if let Some(url) = &self.url {
            serde_json::json!({ "url": url })
        } else if let Some(prefix) = &self.prefix {
            match &self.host {
                Some(h) => serde_json::json!({ "prefix": prefix, "host": h }),
                None => serde_json::json!({ "prefix": prefix }),
            }
        } else if self.tags.len() == 1 {
            serde_json::json!({ "tag": self.tags[0] })
        } else {
            serde_json::json!({ "tags": self.tags })
        })
    }
}

/// POSTs the purge to `admin` (`http://127.0.0.1:8080`) and returns the reply body.
pub fn purge(admin: &str, token: Option<&str>, args: &PurgeArgs) -> Result<String, CliError> {
    let body = args.body()?.to_string();
    let authority = admin
        .strip_prefix("http://")
        .map(|r| r.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| CliError::AdminUrl(admin.to_string()))?;
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| CliError::Connect(authority.into(), e))?
        .next()
        .ok_or_else(|| CliError::AdminUrl(admin.to_string()))?;
    let (status, rest) = crate::admin::post(
        addr,
        authority,
        "/__bext/cache/purge",
        token,
        &body,
        Duration::from_secs(60),
    )
    .map_err(|e| match e {
        crate::admin::CallError::Connect(e) => CliError::Connect(authority.into(), e),
        crate::admin::CallError::Io(e) => CliError::Io(authority.into(), e),
        crate::admin::CallError::Reply => CliError::Reply(authority.into()),
    })?;
    if status != 200 {
        return Err(CliError::Status(status, rest));
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let one = PurgeArgs {
            tags: vec!["post:1".into()],
            ..Default::default()
        };
        assert_eq!(one.body().unwrap(), serde_json::json!({"tag": "post:1"}));
        let two = PurgeArgs {
            tags: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        assert_eq!(two.body().unwrap(), serde_json::json!({"tags": ["a", "b"]}));
        assert!(PurgeArgs::default().body().is_err());
        let both = PurgeArgs {
            all: true,
            url: Some("http://h/".into()),
            ..Default::default()
        };
        assert!(both.body().is_err());
    }
}
