//! Sign-In with Ethereum (EIP-4361): the message a member signs to prove a
//! wallet, its checks, and signature verification for EOAs (EIP-191) and
//! contract wallets (EIP-1271).
//!
//! [`SiweMessage::parse`] accepts exactly the EIP's ABNF and names the line
//! and field of the first problem; `to_string()` writes the EIP's text. Two
//! forms the grammar allows but that could not be written back unchanged
//! are refused: a chain id with leading zeros and a `Resources:` line with
//! no resources. So every accepted message re-serialises byte for byte, and
//! a signature over the text is a signature over the parsed fields.
//!
//! Verifying a proof is [`verify`]: parse, compare the fields with what this
//! server asked for ([`SiweMessage::expect`]), then check the signature
//! ([`SiweMessage::verify_signature`]).

mod rfc3986;
mod verify;

use std::fmt;
use std::str::FromStr;

use alloy_primitives::Address;
use chrono::{DateTime, SecondsFormat, Utc};

pub use verify::{
    verify, verify_text_signature, ContractSignature, Expected, Mismatch, Proof, SignatureError,
    UriMatch, Verified, VerifyError, DEFAULT_CLOCK_SKEW,
};

/// The only message version EIP-4361 defines; written and required as the
/// `Version:` line, so it is not a field.
pub const VERSION: &str = "1";

const HEADER_SUFFIX: &str = " wants you to sign in with your Ethereum account:";
const URI: &str = "URI: ";
const VERSION_PREFIX: &str = "Version: ";
const CHAIN_ID: &str = "Chain ID: ";
const NONCE: &str = "Nonce: ";
const ISSUED_AT: &str = "Issued At: ";
const EXPIRATION_TIME: &str = "Expiration Time: ";
const NOT_BEFORE: &str = "Not Before: ";
const REQUEST_ID: &str = "Request ID: ";
const RESOURCES: &str = "Resources:";
const RESOURCE: &str = "- ";

/// Shortest nonce EIP-4361 allows.
pub const MIN_NONCE_LEN: usize = 8;

/// A Sign-In with Ethereum message.
///
/// Fields are public so a server can build the message it asks a wallet to
/// sign; [`SiweMessage::validate`] checks such a message against the grammar
/// before it is shown (a parsed message is always valid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiweMessage {
    /// The URI scheme of the requesting origin; absent means `https`.
    pub scheme: Option<String>,
    /// The RFC 3986 authority (host and optional port) asking for the
    /// signature.
    pub domain: String,
    /// The signing account; written EIP-55 checksummed.
    pub address: Address,
    /// A human-readable line the member agrees to.
    pub statement: Option<String>,
    /// The RFC 3986 URI the sign-in is for.
    pub uri: String,
    /// The EIP-155 chain the session is bound to, and where a contract
    /// wallet's EIP-1271 check must be made.
    pub chain_id: u64,
    /// At least [`MIN_NONCE_LEN`] ASCII letters and digits, chosen by the
    /// server against replay.
    pub nonce: String,
    pub issued_at: Timestamp,
    pub expiration_time: Option<Timestamp>,
    pub not_before: Option<Timestamp>,
    pub request_id: Option<String>,
    /// RFC 3986 URIs, one per `- ` line.
    pub resources: Vec<String>,
}

/// An RFC 3339 timestamp, kept as written: a message is signed as text, and
/// `2021-09-30T16:25:24.000Z` must not come back as `…24Z`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    text: String,
    at: DateTime<Utc>,
}

/// A string that is not an RFC 3339 `date-time`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimestampError(String);

impl Timestamp {
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        let at = rfc3986::parse_date_time(text).map_err(TimestampError)?;
        Ok(Timestamp {
            text: text.to_string(),
            at,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }
}

impl From<DateTime<Utc>> for Timestamp {
    /// Written in UTC with as many fractional digits as the instant needs,
    /// so the text denotes exactly `at`.
    fn from(at: DateTime<Utc>) -> Self {
        Timestamp {
            text: at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            at,
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Which part of the message a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The first line, `… wants you to sign in with your Ethereum account:`.
    Header,
    Scheme,
    Domain,
    Address,
    Statement,
    Uri,
    Version,
    ChainId,
    Nonce,
    IssuedAt,
    ExpirationTime,
    NotBefore,
    RequestId,
    /// The `Resources:` line.
    Resources,
    /// The resource at this index (0-based) of the `- ` list.
    Resource(usize),
    /// Empty lines, line order, and lines that belong nowhere.
    Layout,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Field::Header => "header",
            Field::Scheme => "scheme",
            Field::Domain => "domain",
            Field::Address => "address",
            Field::Statement => "statement",
            Field::Uri => "URI",
            Field::Version => "Version",
            Field::ChainId => "Chain ID",
            Field::Nonce => "Nonce",
            Field::IssuedAt => "Issued At",
            Field::ExpirationTime => "Expiration Time",
            Field::NotBefore => "Not Before",
            Field::RequestId => "Request ID",
            Field::Resources => "Resources",
            Field::Resource(i) => return write!(f, "resource {}", i + 1),
            Field::Layout => "layout",
        };
        f.write_str(name)
    }
}

/// What is wrong at a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the message ends before this line")]
    Missing,
    #[error("expected a line starting with {0:?}")]
    ExpectedPrefix(&'static str),
    #[error("expected an empty line{0}")]
    ExpectedBlank(&'static str),
    #[error("lines must end with a line feed alone, not a carriage return and line feed")]
    CarriageReturn,
    #[error("{0}")]
    Unexpected(String),
    #[error("{0}")]
    Invalid(String),
}

/// Why a text is not an EIP-4361 message, or a built message would not be
/// one: the 1-based line, the field, and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} ({field}): {problem}")]
pub struct ParseError {
    pub line: usize,
    pub field: Field,
    pub problem: Problem,
}

fn invalid(line: usize, field: Field, why: impl Into<String>) -> ParseError {
    ParseError {
        line,
        field,
        problem: Problem::Invalid(why.into()),
    }
}

impl fmt::Display for SiweMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = &self.scheme {
            write!(f, "{scheme}://")?;
        }
        // Address's Display is the EIP-55 checksummed form.
        write!(f, "{}{HEADER_SUFFIX}\n{}\n\n", self.domain, self.address)?;
        if let Some(statement) = &self.statement {
            writeln!(f, "{statement}")?;
        }
        write!(
            f,
            "\n{URI}{}\n{VERSION_PREFIX}{VERSION}\n{CHAIN_ID}{}\n{NONCE}{}\n{ISSUED_AT}{}",
            self.uri, self.chain_id, self.nonce, self.issued_at
        )?;
        if let Some(t) = &self.expiration_time {
            write!(f, "\n{EXPIRATION_TIME}{t}")?;
        }
        if let Some(t) = &self.not_before {
            write!(f, "\n{NOT_BEFORE}{t}")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, "\n{REQUEST_ID}{id}")?;
        }
        if !self.resources.is_empty() {
            write!(f, "\n{RESOURCES}")?;
            for resource in &self.resources {
                write!(f, "\n{RESOURCE}{resource}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for SiweMessage {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SiweMessage::parse(s)
    }
}

/// The message's lines, handed out in order with their line numbers.
struct Lines<'a> {
    lines: Vec<&'a str>,
    next: usize,
}

impl<'a> Lines<'a> {
    /// 1-based number of the line `take` returns next.
    fn number(&self) -> usize {
        self.next + 1
    }

    fn peek(&self) -> Option<&'a str> {
        self.lines.get(self.next).copied()
    }

    fn take(&mut self, field: Field) -> Result<(usize, &'a str), ParseError> {
        let line = self.number();
        let text = self.peek().ok_or(ParseError {
            line,
            field,
            problem: Problem::Missing,
        })?;
        if text.ends_with('\r') {
            return Err(ParseError {
                line,
                field,
                problem: Problem::CarriageReturn,
            });
        }
        self.next += 1;
        Ok((line, text))
    }

    fn take_prefixed(
        &mut self,
        prefix: &'static str,
        field: Field,
    ) -> Result<(usize, &'a str), ParseError> {
        let (line, text) = self.take(field)?;
        match text.strip_prefix(prefix) {
            Some(value) => Ok((line, value)),
            None => Err(ParseError {
                line,
                field,
                problem: Problem::ExpectedPrefix(prefix),
            }),
        }
    }

    fn take_blank(&mut self, hint: &'static str) -> Result<(), ParseError> {
        let (line, text) = self.take(Field::Layout)?;
        if text.is_empty() {
            Ok(())
        } else {
            Err(ParseError {
                line,
                field: Field::Layout,
                problem: Problem::ExpectedBlank(hint),
            })
        }
    }
}

impl SiweMessage {
    /// Parses an EIP-4361 message, refusing anything the EIP's ABNF does not
    /// produce (and the two non-canonical forms named in the module docs).
    pub fn parse(text: &str) -> Result<SiweMessage, ParseError> {
        let mut lines = Lines {
            lines: text.split('\n').collect(),
            next: 0,
        };

        let (line, header) = lines.take(Field::Header)?;
        let origin = header.strip_suffix(HEADER_SUFFIX).ok_or_else(|| {
            invalid(
                line,
                Field::Header,
                format!("expected \"<domain>{HEADER_SUFFIX}\""),
            )
        })?;
        // An authority holds no '/', so "://" can only end a scheme.
        let (scheme, domain) = match origin.split_once("://") {
            Some((scheme, domain)) => {
                rfc3986::check_scheme(scheme).map_err(|e| invalid(line, Field::Scheme, e))?;
                (Some(scheme.to_string()), domain)
            }
            None => (None, origin),
        };
        check_domain(domain).map_err(|e| invalid(line, Field::Domain, e))?;

        let (line, address) = lines.take(Field::Address)?;
        let address = parse_address(address).map_err(|e| invalid(line, Field::Address, e))?;
        lines.take_blank(" after the address")?;

        let statement = parse_statement(&mut lines)?;

        let (line, uri) = lines.take_prefixed(URI, Field::Uri)?;
        rfc3986::check_uri(uri).map_err(|e| invalid(line, Field::Uri, e))?;

        let (line, version) = lines.take_prefixed(VERSION_PREFIX, Field::Version)?;
        if version != VERSION {
            return Err(invalid(
                line,
                Field::Version,
                format!("must be {VERSION}, found {version:?}"),
            ));
        }

        let (line, chain_id) = lines.take_prefixed(CHAIN_ID, Field::ChainId)?;
        let chain_id = parse_chain_id(chain_id).map_err(|e| invalid(line, Field::ChainId, e))?;

        let (line, nonce) = lines.take_prefixed(NONCE, Field::Nonce)?;
        check_nonce(nonce).map_err(|e| invalid(line, Field::Nonce, e))?;

        let (line, issued_at) = lines.take_prefixed(ISSUED_AT, Field::IssuedAt)?;
        let issued_at =
            Timestamp::parse(issued_at).map_err(|e| invalid(line, Field::IssuedAt, e.0))?;

        let mut message = SiweMessage {
            scheme,
            domain: domain.to_string(),
            address,
            statement,
            uri: uri.to_string(),
            chain_id,
            nonce: nonce.to_string(),
            issued_at,
            expiration_time: None,
            not_before: None,
            request_id: None,
            resources: Vec::new(),
        };
        parse_optional_lines(&mut lines, &mut message)?;
        // Signatures are checked over `to_string()`, so a message that would
        // not come back unchanged must not get through. The grammar checks
        // above already ensure it; this keeps it true if they ever drift.
        if message.to_string() != text {
            return Err(invalid(
                1,
                Field::Layout,
                "the message is not in the canonical form it would be written back in",
            ));
        }
        Ok(message)
    }

    /// Checks a message built in code against the grammar, naming the line
    /// and field `to_string()` would put a bad value on. A message that
    /// passes parses back to itself.
    pub fn validate(&self) -> Result<(), ParseError> {
        if let Some(scheme) = &self.scheme {
            rfc3986::check_scheme(scheme).map_err(|e| invalid(1, Field::Scheme, e))?;
        }
        check_domain(&self.domain).map_err(|e| invalid(1, Field::Domain, e))?;
        let mut line = 4;
        if let Some(statement) = &self.statement {
            check_statement(statement).map_err(|e| invalid(line, Field::Statement, e))?;
            line += 1;
        }
        line += 1;
        rfc3986::check_uri(&self.uri).map_err(|e| invalid(line, Field::Uri, e))?;
        line += 3;
        check_nonce(&self.nonce).map_err(|e| invalid(line, Field::Nonce, e))?;
        // A Timestamp is valid when made, except one made from an instant
        // RFC 3339 cannot write (years past 9999).
        let times = [
            (Field::IssuedAt, Some(&self.issued_at)),
            (Field::ExpirationTime, self.expiration_time.as_ref()),
            (Field::NotBefore, self.not_before.as_ref()),
        ];
        for (field, time) in times {
            if let Some(time) = time {
                line += 1;
                Timestamp::parse(time.as_str()).map_err(|e| invalid(line, field, e.0))?;
            }
        }
        if let Some(id) = &self.request_id {
            line += 1;
            rfc3986::check_pchars(id, "request id")
                .map_err(|e| invalid(line, Field::RequestId, e))?;
        }
        line += 1;
        for (i, resource) in self.resources.iter().enumerate() {
            rfc3986::check_uri(resource)
                .map_err(|e| invalid(line + 1 + i, Field::Resource(i), e))?;
        }
        Ok(())
    }
}

/// `[ statement LF ] LF` after the empty line that follows the address.
fn parse_statement(lines: &mut Lines<'_>) -> Result<Option<String>, ParseError> {
    let line = lines.number();
    let Some(first) = lines.peek() else {
        return Err(ParseError {
            line,
            field: Field::Statement,
            problem: Problem::Missing,
        });
    };
    if first.is_empty() {
        // Two empty lines and then the URI: no statement. Three: an empty
        // statement, which the grammar also allows.
        lines.next += 1;
        if lines.peek() != Some("") {
            return Ok(None);
        }
        lines.next += 1;
        return Ok(Some(String::new()));
    }
    // Messages written to an earlier draft of the EIP put one empty line,
    // not two, between the address and the URI when there is no statement.
    // "URI: …" would read as a statement then; say what is really wrong.
    if first.starts_with(URI)
        && lines
            .lines
            .get(lines.next + 1)
            .is_some_and(|l| !l.is_empty())
    {
        return Err(ParseError {
            line,
            field: Field::Layout,
            problem: Problem::ExpectedBlank(
                ": without a statement, EIP-4361 puts two empty lines between the address and \"URI: \"",
            ),
        });
    }
    let (line, statement) = lines.take(Field::Statement)?;
    check_statement(statement).map_err(|e| invalid(line, Field::Statement, e))?;
    lines.take_blank(" after the statement")?;
    Ok(Some(statement.to_string()))
}

/// The optional lines after `Issued At`, each at most once and in the EIP's
/// order, then the end of the message.
fn parse_optional_lines(
    lines: &mut Lines<'_>,
    message: &mut SiweMessage,
) -> Result<(), ParseError> {
    const ORDER: [&str; 4] = [EXPIRATION_TIME, NOT_BEFORE, REQUEST_ID, RESOURCES];
    // How far through ORDER the message has got, and which lines it had.
    let mut reached = 0;
    let mut seen = [false; ORDER.len()];
    let mut resources_line = None;
    while lines.peek().is_some() {
        let (line, text) = lines.take(Field::Layout)?;
        if reached == ORDER.len() {
            if let Some(resource) = text.strip_prefix(RESOURCE) {
                let index = message.resources.len();
                rfc3986::check_uri(resource)
                    .map_err(|e| invalid(line, Field::Resource(index), e))?;
                message.resources.push(resource.to_string());
                continue;
            }
        }
        let position = ORDER
            .iter()
            .position(|prefix| text.starts_with(prefix.trim_end()));
        match position {
            Some(p) if p >= reached => {
                reached = p + 1;
                seen[p] = true;
                match p {
                    0 => {
                        let t = timestamp(line, Field::ExpirationTime, text, EXPIRATION_TIME)?;
                        message.expiration_time = Some(t);
                    }
                    1 => {
                        let t = timestamp(line, Field::NotBefore, text, NOT_BEFORE)?;
                        message.not_before = Some(t);
                    }
                    2 => {
                        let id = value(line, Field::RequestId, text, REQUEST_ID)?;
                        rfc3986::check_pchars(id, "request id")
                            .map_err(|e| invalid(line, Field::RequestId, e))?;
                        message.request_id = Some(id.to_string());
                    }
                    _ => {
                        if text != RESOURCES {
                            return Err(invalid(
                                line,
                                Field::Resources,
                                format!("expected exactly {RESOURCES:?}, with the resources on the lines after it"),
                            ));
                        }
                        resources_line = Some(line);
                    }
                }
            }
            Some(p) => {
                let name = ORDER[p].trim_end_matches([':', ' ']);
                let why = if seen[p] {
                    format!("{name:?} appears twice")
                } else {
                    format!(
                        "{name:?} is out of order: it must come before {:?}",
                        ORDER[reached - 1].trim_end_matches([':', ' '])
                    )
                };
                return Err(ParseError {
                    line,
                    field: Field::Layout,
                    problem: Problem::Unexpected(why),
                });
            }
            None => {
                let why = if text.is_empty() && lines.peek().is_none() {
                    "the message must end without a line break after its last line".to_string()
                } else {
                    format!(
                        "{:?} is not a line of an EIP-4361 message here; after \"Issued At\" come optionally {}",
                        text,
                        if reached == ORDER.len() {
                            "\"- <resource URI>\" lines, then the end".to_string()
                        } else {
                            ORDER[reached..]
                                .iter()
                                .map(|p| format!("{:?}", p.trim_end_matches([':', ' '])))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    )
                };
                return Err(ParseError {
                    line,
                    field: Field::Layout,
                    problem: Problem::Unexpected(why),
                });
            }
        }
    }
    if let (Some(line), true) = (resources_line, message.resources.is_empty()) {
        return Err(invalid(
            line,
            Field::Resources,
            "lists no resources; leave the line out instead (it could not be written back)",
        ));
    }
    Ok(())
}

fn value<'a>(
    line: usize,
    field: Field,
    text: &'a str,
    prefix: &'static str,
) -> Result<&'a str, ParseError> {
    text.strip_prefix(prefix).ok_or(ParseError {
        line,
        field,
        problem: Problem::ExpectedPrefix(prefix),
    })
}

fn timestamp(
    line: usize,
    field: Field,
    text: &str,
    prefix: &'static str,
) -> Result<Timestamp, ParseError> {
    let value = value(line, field, text, prefix)?;
    Timestamp::parse(value).map_err(|e| invalid(line, field, e.0))
}

fn check_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        // The grammar allows an empty authority, but no origin has one and
        // no server could expect it.
        return Err("the domain is empty".to_string());
    }
    rfc3986::check_authority(domain)
}

/// `"0x" 40HEXDIG` in EIP-55 mixed-case checksum form.
fn parse_address(text: &str) -> Result<Address, String> {
    let hex = text
        .strip_prefix("0x")
        .filter(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("expected \"0x\" and 40 hex digits, found {text:?}"))?;
    let address: Address = hex
        .parse()
        .map_err(|e| format!("{text:?} is not an address: {e}"))?;
    let checksummed = address.to_checksum(None);
    if checksummed == text {
        Ok(address)
    } else {
        Err(format!(
            "{text:?} is not in EIP-55 checksum case; it would be {checksummed}"
        ))
    }
}

fn check_statement(statement: &str) -> Result<(), String> {
    match statement.bytes().position(|b| !rfc3986::is_statement_char(b)) {
        None => Ok(()),
        Some(at) => Err(format!(
            "{} is not allowed: a statement is one line of letters, digits, spaces and URI punctuation",
            rfc3986::describe_char(statement, at)
        )),
    }
}

fn parse_chain_id(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected decimal digits, found {text:?}"));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(format!("{text:?} has a leading zero"));
    }
    text.parse()
        .map_err(|_| format!("{text} is too large for a chain id"))
}

fn check_nonce(nonce: &str) -> Result<(), String> {
    if let Some(at) = nonce.bytes().position(|b| !b.is_ascii_alphanumeric()) {
        return Err(format!(
            "{} is not allowed: a nonce is ASCII letters and digits only",
            rfc3986::describe_char(nonce, at)
        ));
    }
    if nonce.len() < MIN_NONCE_LEN {
        return Err(format!(
            "{nonce:?} is {} characters; a nonce has at least {MIN_NONCE_LEN}",
            nonce.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
