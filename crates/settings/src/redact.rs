//! One redaction for everything that may carry a secret: database, NATS and
//! RPC URLs, libpq connection strings, and bare tokens.
//!
//! It works on the text as written, without a URL parser: the values that
//! end up in error messages are exactly the malformed ones, and passwords
//! are often pasted unencoded, so `postgres://u:p/a?s#s@w@host/db` must lose
//! `p/a?s#s@w` although no parser would read it that way. When in doubt it
//! hides more: the userinfo runs to the *last* `@`.

const MASK: &str = "***";

/// Query and key=value names whose values are secrets.
const SECRET_KEYS: [&str; 9] = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "signature",
];

/// Schemes whose path is a database name, worth showing. Every other URL's
/// path and query are hidden: RPC providers put API keys there (`/v3/<key>`).
const DATABASE_SCHEMES: [&str; 2] = ["postgres", "postgresql"];

/// Schemes where a user name without password is a token (`nats://TOKEN@host`).
const TOKEN_USER_SCHEMES: [&str; 4] = ["nats", "tls", "ws", "wss"];

/// `text` safe to print: passwords, tokens, secret query parameters and
/// (outside database URLs) paths and queries replaced by `***`. A list of
/// servers (`nats://a:4222,nats://b:4222`) is redacted server by server; a
/// string that is not a URL is returned as is unless it looks like a token.
pub fn redact(text: &str) -> String {
    split_servers(text)
        .into_iter()
        .map(redact_one)
        .collect::<Vec<_>>()
        .join(",")
}

/// A string that is most likely a credential (a bot token, an API key):
/// one word of at least 32 characters, or of at least 16 mixing letters and
/// digits.
pub fn looks_like_token(text: &str) -> bool {
    let t = text.trim();
    if t.is_empty() || t.chars().any(char::is_whitespace) {
        return false;
    }
    let letters = t.chars().any(|c| c.is_ascii_alphabetic());
    let digits = t.chars().any(|c| c.is_ascii_digit());
    t.len() >= 32 || (t.len() >= 16 && letters && digits)
}

/// Splits at commas that start another `scheme://` URL; other commas (in a
/// password, say) stay inside their URL.
fn split_servers(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in text.match_indices(',') {
        if i >= start && scheme_of(text[i + 1..].trim_start()).is_some() {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `Some((scheme, rest))` when `text` starts with `scheme://`.
fn scheme_of(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

fn redact_one(text: &str) -> String {
    let leading = &text[..text.len() - text.trim_start().len()];
    let trimmed = text.trim();
    let body = match scheme_of(trimmed) {
        Some((scheme, rest)) => redact_url(scheme, rest),
        None if has_secret_key(trimmed) => redact_key_values(trimmed),
        None if trimmed.contains('@') => redact_authority_and_tail("", trimmed),
        None if looks_like_token(trimmed) => "[redacted]".to_owned(),
        None => trimmed.to_owned(),
    };
    format!("{leading}{body}")
}

fn redact_url(scheme: &str, rest: &str) -> String {
    format!(
        "{scheme}://{}",
        redact_authority_and_tail(&scheme.to_ascii_lowercase(), rest)
    )
}

/// `[userinfo@]host[:port][/path][?query][#fragment]`.
fn redact_authority_and_tail(scheme: &str, rest: &str) -> String {
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let mut out = String::new();
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _password)) => {
                out.push_str(user);
                out.push(':');
                out.push_str(MASK);
            }
            None if TOKEN_USER_SCHEMES.contains(&scheme) || looks_like_token(userinfo) => {
                out.push_str(MASK);
            }
            None => out.push_str(userinfo),
        }
        out.push('@');
    }
    let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (host, tail) = after.split_at(host_end);
    out.push_str(host);
    let (tail, fragment) = match tail.split_once('#') {
        Some((t, f)) => (t, Some(f)),
        None => (tail, None),
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let database = DATABASE_SCHEMES.contains(&scheme);
    if database || path.is_empty() || path == "/" {
        out.push_str(path);
    } else {
        out.push('/');
        out.push_str(MASK);
    }
    if let Some(query) = query {
        out.push('?');
        if database {
            out.push_str(&redact_query(query));
        } else {
            out.push_str(MASK);
        }
    }
    if fragment.is_some() {
        out.push('#');
        out.push_str(MASK);
    }
    out
}

fn is_secret_key(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| key.contains(s))
}

fn has_secret_key(text: &str) -> bool {
    text.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .any(|(key, _)| is_secret_key(key))
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_key(key) => format!("{key}={MASK}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// libpq's `host=h user=u password='p w'`: secret values hidden, including
/// quoted values that run over several words.
fn redact_key_values(text: &str) -> String {
    let mut out = Vec::new();
    let mut in_quoted_secret = false;
    for word in text.split_whitespace() {
        if in_quoted_secret {
            in_quoted_secret = !word.ends_with('\'');
            continue;
        }
        match word.split_once('=') {
            Some((key, value)) if is_secret_key(key) => {
                in_quoted_secret =
                    value.starts_with('\'') && (value.len() == 1 || !value.ends_with('\''));
                out.push(format!("{key}={MASK}"));
            }
            _ => out.push(word.to_owned()),
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each password must vanish, and what identifies the server must stay.
    fn hides(url: &str, secret: &str, expected: &str) {
        let shown = redact(url);
        assert!(!shown.contains(secret), "{url} → {shown}");
        assert_eq!(shown, expected, "{url}");
    }

    #[test]
    fn plain_passwords_are_masked_and_the_rest_kept() {
        hides(
            "postgres://gatehouse_app:s3cret@127.0.0.1:6432/gatehouse",
            "s3cret",
            "postgres://gatehouse_app:***@127.0.0.1:6432/gatehouse",
        );
        hides(
            "nats://user:hunter2@host:4222",
            "hunter2",
            "nats://user:***@host:4222",
        );
    }

    #[test]
    fn passwords_with_slash_question_hash_or_at_are_masked() {
        for (password, tail) in [
            ("pa/ss", "@db.internal:5432/gatehouse"),
            ("pa?ss", "@db.internal:5432/gatehouse"),
            ("pa#ss", "@db.internal:5432/gatehouse"),
            ("pa@ss", "@db.internal:5432/gatehouse"),
            ("p/a?s#s@w", "@db.internal:5432/gatehouse"),
            ("@/?#", "@db.internal:5432/gatehouse"),
        ] {
            let url = format!("postgres://owner:{password}{tail}");
            hides(
                &url,
                password,
                "postgres://owner:***@db.internal:5432/gatehouse",
            );
        }
        // The same in a NATS server list, where each server has its own.
        hides(
            "nats://a:x/y@n1:4222,nats://b:p#q@n2:4222",
            "x/y",
            "nats://a:***@n1:4222,nats://b:***@n2:4222",
        );
        assert!(!redact("nats://a:x/y@n1:4222,nats://b:p#q@n2:4222").contains("p#q"));
    }

    #[test]
    fn percent_encoded_passwords_and_secret_parameters_are_masked() {
        hides(
            "postgres://u:p%40ss%2F@h/db?sslmode=require&password=x%3Fy",
            "p%40ss",
            "postgres://u:***@h/db?sslmode=require&password=***",
        );
        assert!(!redact("postgres://u@h/db?password=x%3Fy").contains("x%3Fy"));
    }

    #[test]
    fn urls_without_passwords_are_unchanged() {
        for url in [
            "postgres://gatehouse_owner@127.0.0.1:5432/gatehouse",
            "postgres://u@h:5432/db",
            "postgres://h/db?sslmode=require",
            "nats://127.0.0.1:4222",
            "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
            "ws://127.0.0.1:8765",
            "http://127.0.0.1:8766/",
            "https://discord.com",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn api_keys_in_rpc_paths_queries_and_fragments_are_hidden() {
        hides(
            "https://eth-mainnet.example.com/v3/0123456789abcdef",
            "0123456789abcdef",
            "https://eth-mainnet.example.com/***",
        );
        hides(
            "wss://node.example/v3/topsecret",
            "topsecret",
            "wss://node.example/***",
        );
        hides(
            "https://rpc.example:8443/?apikey=abc#frag",
            "abc",
            "https://rpc.example:8443/?***#***",
        );
    }

    #[test]
    fn token_users_are_hidden_where_they_are_tokens() {
        // nats://TOKEN@host is NATS token authentication.
        hides("nats://s3cr3t@host:4222", "s3cr3t", "nats://***@host:4222");
        // A database user name is not a secret…
        assert_eq!(
            redact("postgres://gatehouse_owner@h/db"),
            "postgres://gatehouse_owner@h/db"
        );
        // …unless it looks like a key.
        assert!(!redact("https://0123456789abcdef0123@rpc.example").contains("0123456789abcdef"));
    }

    #[test]
    fn connection_strings_and_schemeless_servers_lose_their_passwords() {
        hides(
            "host=127.0.0.1 user=u password=s3cret dbname=g",
            "s3cret",
            "host=127.0.0.1 user=u password=*** dbname=g",
        );
        hides(
            "host=h password='two words' dbname=g",
            "words",
            "host=h password=*** dbname=g",
        );
        hides(
            "user:pa@ss@127.0.0.1:4222",
            "pa@ss",
            "user:***@127.0.0.1:4222",
        );
    }

    #[test]
    fn other_strings_pass_unless_they_look_like_tokens() {
        for text in [
            "not a url",
            "127.0.0.1:4222",
            "gatehouse",
            "",
            "/var/lib/gatehouse",
        ] {
            assert_eq!(redact(text), text);
        }
        for token in [
            "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs",
            "0123456789abcdef0123456789abcdef",
            "sk_live_4eC39HqLyjWDarjtT1",
        ] {
            assert!(looks_like_token(token), "{token}");
            assert_eq!(redact(token), "[redacted]");
        }
        assert!(!looks_like_token("gatehouse_owner"));
        assert!(!looks_like_token("two words that are long enough"));
    }
}
