//! Where a libpq tool (pgbench, psql) connects, taken from the URL the store
//! is given, so both clients reach the same PgBouncer as the same role.
//!
//! Host, port, user and database go on the tool's command line; the
//! password only ever goes into the child's environment (`PGPASSWORD`),
//! because command lines are visible to every user of the machine (`ps`).

use std::{ffi::OsString, fmt};

use anyhow::{bail, Context};
use tokio::process::Command;

#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub host: Option<String>,
    pub port: Option<String>,
    pub user: Option<String>,
    pub dbname: Option<String>,
    password: Option<String>,
    sslmode: Option<String>,
}

/// Never prints the password: these end up in error messages.
impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnInfo")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

impl ConnInfo {
    /// Parses a `postgres[ql]://user:password@host:port/db?sslmode=…` URL or
    /// a libpq `key=value …` string (unquoted values), the forms
    /// `--database-url` takes.
    pub fn parse(text: &str) -> anyhow::Result<ConnInfo> {
        let text = text.trim();
        let mut info = ConnInfo {
            host: None,
            port: None,
            user: None,
            dbname: None,
            password: None,
            sslmode: None,
        };
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            let url = url::Url::parse(text).map_err(|e| {
                anyhow::anyhow!("{} is not a database URL: {e}", settings::redact(text))
            })?;
            let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            info.host = url
                .host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned());
            info.port = url.port().map(|p| p.to_string());
            info.user = nonempty(&percent_decode(url.username())?);
            info.password = url.password().map(percent_decode).transpose()?;
            info.dbname = nonempty(&percent_decode(url.path().trim_start_matches('/'))?);
            for (key, value) in url.query_pairs() {
                info.set(&key, value.into_owned())?;
            }
        } else {
            for pair in text.split_whitespace() {
                if pair.contains(['\'', '\\']) {
                    bail!("quoted values in a key=value database URL are not supported here; use a postgres:// URL");
                }
                let (key, value) = pair.split_once('=').with_context(|| {
                    format!(
                        "{:?} in the database URL is not key=value",
                        settings::redact(pair)
                    )
                })?;
                info.set(key, value.to_owned())?;
            }
        }
        Ok(info)
    }

    fn set(&mut self, key: &str, value: String) -> anyhow::Result<()> {
        match key {
            "host" | "hostaddr" => self.host = Some(value),
            "port" => self.port = Some(value),
            "user" => self.user = Some(value),
            "password" => self.password = Some(value),
            "dbname" => self.dbname = Some(value),
            "sslmode" => self.sslmode = Some(value),
            // Settings of the session rather than of where it goes: the
            // tools' defaults serve.
            "application_name"
            | "connect_timeout"
            | "options"
            | "keepalives"
            | "keepalives_idle"
            | "target_session_attrs"
            | "channel_binding" => {}
            other => bail!("the database URL's {other:?} is not supported by `bench db`"),
        }
        Ok(())
    }

    pub fn with_dbname(&self, dbname: &str) -> ConnInfo {
        ConnInfo {
            dbname: Some(dbname.to_owned()),
            ..self.clone()
        }
    }

    /// The database, as libpq defaults it (to the user name).
    pub fn database(&self) -> Option<&str> {
        self.dbname.as_deref().or(self.user.as_deref())
    }

    /// `-h HOST -p PORT -U USER`: everything but the password and database
    /// (pgbench takes the database last, psql after `-d`).
    pub fn args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        for (flag, value) in [("-h", &self.host), ("-p", &self.port), ("-U", &self.user)] {
            if let Some(v) = value {
                args.push(flag.into());
                args.push(v.into());
            }
        }
        args
    }

    /// Hands the password (and TLS mode) to the child through its
    /// environment.
    pub fn apply_env(&self, cmd: &mut Command) {
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        if let Some(m) = &self.sslmode {
            cmd.env("PGSSLMODE", m);
        }
    }
}

/// `text` with the database replaced by `dbname`, in the same form (URL or
/// key=value): the runtime URL of the throwaway copy.
pub fn replace_dbname(text: &str, dbname: &str) -> anyhow::Result<String> {
    let text = text.trim();
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        let mut url = url::Url::parse(text).map_err(|e| {
            anyhow::anyhow!("{} is not a database URL: {e}", settings::redact(text))
        })?;
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "dbname")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.set_path(&format!("/{dbname}"));
        if pairs.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        Ok(url.into())
    } else {
        let mut parts: Vec<String> = text
            .split_whitespace()
            .filter(|p| !p.starts_with("dbname="))
            .map(str::to_owned)
            .collect();
        parts.push(format!("dbname={dbname}"));
        Ok(parts.join(" "))
    }
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .context("a bad %-escape in the database URL")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the database URL does not decode to UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_becomes_flags_and_the_password_stays_off_the_command_line() {
        let info =
            ConnInfo::parse("postgresql://gatehouse_app:s%40cret@127.0.0.1:6432/bench_x").unwrap();
        let args: Vec<String> = info
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            ["-h", "127.0.0.1", "-p", "6432", "-U", "gatehouse_app"]
        );
        assert_eq!(info.database(), Some("bench_x"));
        assert_eq!(info.password.as_deref(), Some("s@cret"));
        assert!(!args.iter().any(|a| a.contains("cret")));
        assert!(!format!("{info:?}").contains("cret"));

        let mut cmd = Command::new("true");
        info.apply_env(&mut cmd);
        let env: Vec<_> = cmd.as_std().get_envs().collect();
        assert!(env
            .iter()
            .any(|(k, v)| *k == "PGPASSWORD" && v.is_some_and(|v| v == "s@cret")));
    }

    #[test]
    fn query_parameters_and_key_value_strings_are_understood() {
        let info = ConnInfo::parse("postgres://u@h/db?sslmode=require&port=7000").unwrap();
        assert_eq!(info.port.as_deref(), Some("7000"));
        assert_eq!(info.sslmode.as_deref(), Some("require"));
        let kv = ConnInfo::parse("host=/run/pg port=5433 user=app password=pw dbname=d").unwrap();
        assert_eq!(kv.host.as_deref(), Some("/run/pg"));
        assert_eq!(kv.database(), Some("d"));
        // libpq's default database is the user's name.
        let no_db = ConnInfo::parse("postgres://app@127.0.0.1").unwrap();
        assert_eq!(no_db.database(), Some("app"));
        assert!(ConnInfo::parse("host=h password='a b'").is_err());
        assert!(ConnInfo::parse("postgres://u@h/db?target_port=1").is_err());
    }

    #[test]
    fn the_copy_keeps_everything_but_the_database() {
        assert_eq!(
            replace_dbname(
                "postgresql://app:pw@127.0.0.1:6432/orig?sslmode=disable",
                "copy"
            )
            .unwrap(),
            "postgresql://app:pw@127.0.0.1:6432/copy?sslmode=disable"
        );
        assert_eq!(
            replace_dbname("postgres://app@h/orig?dbname=other", "copy").unwrap(),
            "postgres://app@h/copy"
        );
        assert_eq!(
            replace_dbname("host=h user=app dbname=orig", "copy").unwrap(),
            "host=h user=app dbname=copy"
        );
    }
}
