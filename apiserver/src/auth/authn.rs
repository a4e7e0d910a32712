//! Authentication: who made a request.
//!
//! - Client certificates, already verified against `--client-ca-file` by
//!   rustls during the handshake: the subject's CN is the user, each O a
//!   group (kube-apiserver's x509 authenticator).
//! - Bearer tokens from `--token-auth-file`, kube's static-token CSV:
//!   `token,user,uid,"group1,group2"`. A token that is presented but unknown
//!   fails the request (401) even when anonymous requests are allowed, as
//!   kube-apiserver's union authenticator does.
//! - Anonymous: `system:anonymous` in `system:unauthenticated`.

use std::collections::HashMap;
use std::path::Path;

use super::User;

/// The user of an anonymous request.
pub const ANONYMOUS: &str = "system:anonymous";
/// The group of anonymous requests.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";

/// Tokens from a `--token-auth-file`.
#[derive(Debug, Clone, Default)]
pub struct TokenFile {
    tokens: HashMap<String, User>,
}

impl TokenFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<TokenFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("token file {}: {e}", path.display()))?;
        TokenFile::parse(&text).map_err(|e| format!("token file {}: {e}", path.display()))
    }

    /// Parses the CSV text: at least three columns (token, user, uid), an
    /// optional fourth of comma-separated groups (quoted). Blank lines and
    /// lines starting with `#` are skipped; a later duplicate token wins.
    pub fn parse(text: &str) -> Result<TokenFile, String> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let record = csv_fields(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            if record.len() < 3 {
                return Err(format!(
                    "line {}: must have at least 3 columns (token, user name, user uid), found {}",
                    i + 1,
                    record.len()
                ));
            }
            if record[0].is_empty() {
                tracing::warn!(line = i + 1, "skipping an empty token in the token file");
                continue;
            }
            let groups = record
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let user = User {
                name: record[1].clone(),
                uid: record[2].clone(),
                groups,
                extra: Default::default(),
            };
            tokens.insert(record[0].clone(), user);
        }
        Ok(TokenFile { tokens })
    }

    /// The user of `token`, if known.
    pub fn user(&self, token: &str) -> Option<&User> {
        self.tokens.get(token)
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Splits one CSV record: commas separate fields, double quotes enclose
/// fields that contain commas (`""` is a quote inside them), leading
/// spaces are trimmed.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".into()),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => out.push(field),
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field);
                        return Ok(out);
                    }
                    Some(',') => {
                        out.push(field);
                        break;
                    }
                    Some('"') => return Err("bare \" in a non-quoted field".into()),
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value, if it is one.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// The user a verified client certificate (DER) names: CN and O entries.
/// `None` when it has no CN (kube refuses such certificates too).
pub fn certificate_user(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(User {
        name,
        uid: String::new(),
        groups,
        extra: Default::default(),
    })
}

/// `user` with `system:authenticated` added (once).
pub fn authenticated(mut user: User) -> User {
    if !user.groups.iter().any(|g| g == AUTHENTICATED) {
        user.groups.push(AUTHENTICATED.into());
    }
    user
}

/// The anonymous user.
pub fn anonymous() -> User {
    User {
        name: ANONYMOUS.into(),
        uid: String::new(),
        groups: vec![UNAUTHENTICATED.into()],
        extra: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_in_kubes_csv_format() {
        let f = TokenFile::parse(
            "# comment\nt1,alice,u1,\"dev,ops\"\n\nt2, bob ,u2\nt3,carol,u3,\"\"\n",
        )
        .unwrap();
        assert_eq!(f.len(), 3);
        let alice = f.user("t1").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "u1");
        assert_eq!(alice.groups, vec!["dev", "ops"]);
        assert_eq!(f.user("t2").unwrap().name, "bob ");
        assert!(f.user("t3").unwrap().groups.is_empty());
        assert!(f.user("nope").is_none());
        let err = TokenFile::parse("t1,alice\n").unwrap_err();
        assert!(err.contains("at least 3 columns"), "{err}");
        assert!(TokenFile::parse("t1,alice,u1,\"dev").is_err());
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
