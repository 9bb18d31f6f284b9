//! `database.url`: which back end, and how to name it in logs without its password.

use std::path::{Path, PathBuf};

/// Where the fleet state lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A MySQL/MariaDB server; `url` is the configured one (with its password).
    MySql { url: String },
    /// An embedded SQLite file.
    Sqlite { path: PathBuf },
}

/// The SQLite file used when no URL is configured.
pub const SQLITE_FILE: &str = "nodewarden.db";

impl DatabaseTarget {
    /// `url` from the configuration (`None` or empty: SQLite in `data_dir`). Accepts
    /// `mysql://user:password@host:port/database` and `sqlite://path`.
    pub fn from_config(url: Option<&str>, data_dir: &Path) -> Result<DatabaseTarget, String> {
        let url = match url.map(str::trim) {
            None | Some("") => {
                return Ok(DatabaseTarget::Sqlite {
                    path: data_dir.join(SQLITE_FILE),
                });
            }
            Some(url) => url,
        };
        if let Some(rest) = url
            .strip_prefix("mysql://")
            .or_else(|| url.strip_prefix("mariadb://"))
        {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if host.is_empty() {
                return Err(format!("database.url {} names no host", redact(url)));
            }
            let database = path.split('?').next().unwrap_or("");
            if database.is_empty() {
                return Err(format!(
                    "database.url {} names no database (mysql://user:password@host:3306/nodewarden)",
                    redact(url)
                ));
            }
            // sqlx only knows the mysql scheme; MariaDB speaks the same protocol.
            return Ok(DatabaseTarget::MySql {
                url: format!("mysql://{rest}"),
            });
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or("");
            if path.is_empty() {
                return Err(format!("database.url {url} names no file"));
            }
            return Ok(DatabaseTarget::Sqlite {
                path: PathBuf::from(path),
            });
        }
        Err(format!(
            "database.url {} is not a mysql:// or sqlite:// URL",
            redact(url)
        ))
    }

    /// How logs and errors name the database: the URL without its password, or the file.
    pub fn display(&self) -> String {
        match self {
            DatabaseTarget::MySql { url } => redact(url),
            DatabaseTarget::Sqlite { path } => format!("sqlite://{}", path.display()),
        }
    }

    /// The password in the URL, to scrub from driver messages.
    pub fn password(&self) -> Option<String> {
        match self {
            DatabaseTarget::MySql { url } => password_of(url),
            DatabaseTarget::Sqlite { .. } => None,
        }
    }

    /// `text` with every occurrence of the password (raw and percent-encoded) replaced.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = redact(text);
        if let Some(password) = self.password() {
            let decoded = percent_decode(&password);
            for secret in [password, decoded] {
                if !secret.is_empty() {
                    text = text.replace(&secret, "***");
                }
            }
        }
        text
    }
}

impl std::fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    Some(userinfo.split_once(':')?.1.to_string())
}

/// Any `scheme://user:password@…` in `text` with the password replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let (before, after) = rest.split_at(start + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***@");
                    out.push_str(host);
                }
                None => out.push_str(authority),
            },
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_url_means_sqlite_in_the_data_dir() {
        let t = DatabaseTarget::from_config(None, Path::new("/var/lib/nw")).unwrap();
        assert_eq!(
            t,
            DatabaseTarget::Sqlite {
                path: PathBuf::from("/var/lib/nw/nodewarden.db")
            }
        );
        let t = DatabaseTarget::from_config(Some(" "), Path::new("/d")).unwrap();
        assert!(matches!(t, DatabaseTarget::Sqlite { .. }));
    }

    #[test]
    fn mysql_url_is_displayed_without_password() {
        let t = DatabaseTarget::from_config(
            Some("mysql://ops:s3cr%40t@db.example:3306/fleet"),
            Path::new("/d"),
        )
        .unwrap();
        assert_eq!(t.display(), "mysql://ops:***@db.example:3306/fleet");
        assert_eq!(format!("{t:?}"), "mysql://ops:***@db.example:3306/fleet");
        assert_eq!(
            t.scrub("access denied for ops with s3cr@t and s3cr%40t"),
            "access denied for ops with *** and ***"
        );
    }

    #[test]
    fn mariadb_scheme_is_accepted() {
        let t = DatabaseTarget::from_config(Some("mariadb://u@h/db"), Path::new("/d")).unwrap();
        assert_eq!(
            t,
            DatabaseTarget::MySql {
                url: "mysql://u@h/db".into()
            }
        );
    }

    #[test]
    fn bad_urls_are_clear_errors_without_the_password() {
        let e =
            DatabaseTarget::from_config(Some("mysql://u:pw@h:3306"), Path::new("/d")).unwrap_err();
        assert!(e.contains("names no database"), "{e}");
        assert!(!e.contains("pw"), "{e}");
        let e =
            DatabaseTarget::from_config(Some("postgres://u:pw@h/db"), Path::new("/d")).unwrap_err();
        assert!(e.contains("not a mysql:// or sqlite://"), "{e}");
        assert!(!e.contains(":pw"), "{e}");
    }

    #[test]
    fn redact_handles_several_urls_and_plain_text() {
        assert_eq!(
            redact("a mysql://u:p@h/x and mysql://v:q@i:1/y."),
            "a mysql://u:***@h/x and mysql://v:***@i:1/y."
        );
        assert_eq!(redact("no url here"), "no url here");
        assert_eq!(redact("mysql://u@h/db"), "mysql://u@h/db");
    }
}
