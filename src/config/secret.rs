//! Secrets in config: any string may be written `{ env = "VAR" }`, `{ file = "/path" }` or
//! `{ credential = "name" }` (systemd `LoadCredential=`). They are resolved once at load and the
//! value can only be read through [`Secret::expose`]; `Debug` and `Display` print a placeholder.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use toml::de::DeValue;

use super::reader::{Cx, FromToml, TableReader, Value};

/// A resolved config string that may be sensitive.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: Arc<str>,
    /// True when it came from env / file / credential: such values are also scrubbed from
    /// every outcome message (see [`crate::redact`]).
    from_source: bool,
}

impl Secret {
    pub fn literal(s: impl Into<Arc<str>>) -> Self {
        Self {
            value: s.into(),
            from_source: false,
        }
    }

    /// The secret value itself: only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn is_from_source(&self) -> bool {
        self.from_source
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromToml for Secret {
    fn from_toml(v: &Value<'_>, cx: &mut Cx) -> Result<Self, String> {
        match v.get_ref() {
            DeValue::String(s) => Ok(Secret::literal(s.as_ref())),
            DeValue::Table(_) => {
                let mut t = TableReader::new(v, "secret", cx).expect("is a table");
                let env: Option<String> = t.opt("env", cx);
                let file: Option<PathBuf> = t.opt("file", cx);
                let credential: Option<String> = t.opt("credential", cx);
                t.finish(cx);
                let value = match (env, file, credential) {
                    (Some(var), None, None) => std::env::var(&var)
                        .map_err(|_| format!("environment variable `{var}` is not set"))?,
                    (None, Some(path), None) => read_secret_file(&path)?,
                    (None, None, Some(name)) => {
                        if name.contains('/') || name.is_empty() {
                            return Err(format!(
                                "credential name {name:?} must be a plain file name"
                            ));
                        }
                        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                            format!(
                                "credential `{name}` needs $CREDENTIALS_DIRECTORY (set by systemd LoadCredential=)"
                            )
                        })?;
                        read_secret_file(&PathBuf::from(dir).join(&name))?
                    }
                    _ => {
                        return Err(
                            "a secret is a string or exactly one of { env = \"VAR\" }, { file = \"/path\" }, { credential = \"name\" }"
                                .to_string(),
                        );
                    }
                };
                Ok(Secret {
                    value: value.into(),
                    from_source: true,
                })
            }
            other => Err(format!(
                "expected a string or a secret table, found {}",
                super::reader::type_name(other)
            )),
        }
    }
}

/// Reads a secret file; one trailing newline is not part of the secret.
fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    let mut s = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read secret file {}: {}", path.display(), e.kind()))?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}
