//! HTTP Signatures as Mastodon speaks them (draft-cavage-http-signatures,
//! `rsa-sha256`), and the SHA-256 `Digest` header they cover.
//!
//! A signature names the headers it covers; the signing string is one line
//! per name, `name: value`, with the pseudo-header `(request-target)` as
//! `METHOD PATH` in lower case. Outgoing requests sign
//! `(request-target) host date` and, with a body, `digest` ([`OUTGOING`]).
//! Parsing is strict and bounded: it reads bytes from anyone.

use data_encoding::BASE64;

/// The headers every outgoing request signs, and every inbox POST must.
pub const OUTGOING: [&str; 4] = ["(request-target)", "host", "date", "digest"];

/// Longest `Signature` header read: a keyId URL, a header list and a
/// 4096-bit signature fit many times over.
pub const MAX_HEADER: usize = 8 * 1024;

/// Why a signature header or digest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is longer than [`MAX_HEADER`].
    #[error("the Signature header is over {MAX_HEADER} bytes")]
    TooLong,
    /// A parameter is not `name="value"` or `name=number`.
    #[error("the Signature header is malformed: {0}")]
    Malformed(&'static str),
    /// A parameter the scheme requires is absent.
    #[error("the Signature header has no {0}")]
    Missing(&'static str),
    /// The algorithm is one this node does not verify.
    #[error("the signature algorithm {0:?} is not rsa-sha256 or hs2019")]
    Algorithm(String),
    /// A header the signature covers is not in the request.
    #[error("the signed header {0:?} is not in the request")]
    Absent(String),
    /// The signature does not cover a header it must.
    #[error("the signature does not cover {0}")]
    NotCovered(&'static str),
    /// The signature is not valid under the key.
    #[error("the signature does not verify")]
    Invalid,
}

/// A parsed `Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The URL of the signing key (`https://host/actor#main-key`).
    pub key_id: String,
    /// The algorithm named, if any (`rsa-sha256`, `hs2019`).
    pub algorithm: Option<String>,
    /// The covered headers, lower case, in order. Defaults to `date`.
    pub headers: Vec<String>,
    /// The signature bytes.
    pub signature: Vec<u8>,
    /// `(created)`, seconds since the epoch, if given.
    pub created: Option<i64>,
    /// `(expires)`, seconds since the epoch, if given.
    pub expires: Option<i64>,
}

impl Signature {
    /// Reads a `Signature` header value: comma-separated `name="value"`
    /// (or `name=number` for created and expires). Unknown names are
    /// ignored; a name given twice is refused.
    pub fn parse(value: &str) -> Result<Signature, SignatureError> {
        if value.len() > MAX_HEADER {
            return Err(SignatureError::TooLong);
        }
        let mut key_id = None;
        let mut algorithm = None;
        let mut headers = None;
        let mut signature = None;
        let mut created = None;
        let mut expires = None;
        let mut rest = value.trim();
        while !rest.is_empty() {
            let (name, after) = rest
                .split_once('=')
                .ok_or(SignatureError::Malformed("a parameter without '='"))?;
            let name = name.trim().to_ascii_lowercase();
            let after = after.trim_start();
            let (text, after) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted
                    .find('"')
                    .ok_or(SignatureError::Malformed("an unclosed quote"))?;
                (&quoted[..end], &quoted[end + 1..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                let text = after[..end].trim_end();
                if text.contains('"') {
                    return Err(SignatureError::Malformed("a quote in an unquoted value"));
                }
                (text, &after[end..])
            };

            if text.contains('\\') {
                return Err(SignatureError::Malformed("an escape in a value"));
            }
            let slot = match name.as_str() {
                "keyid" => Some(&mut key_id),
                "algorithm" => Some(&mut algorithm),
                "headers" => Some(&mut headers),
                "signature" => Some(&mut signature),
                "created" => Some(&mut created),
                "expires" => Some(&mut expires),
                _ => None,
            };
            if let Some(slot) = slot {
                if slot.is_some() {
                    return Err(SignatureError::Malformed("a parameter given twice"));
                }
                *slot = Some(text.to_string());
            }
            rest = after.trim_start();
            match rest.strip_prefix(',') {
                Some(next) => rest = next.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(SignatureError::Malformed("text after a value")),
            }
        }
        let number = |v: Option<String>| -> Result<Option<i64>, SignatureError> {
            v.map(|v| {
                v.parse::<i64>()
                    .map_err(|_| SignatureError::Malformed("a time that is not a number"))
            })
            .transpose()
        };
        let signature = BASE64
            .decode(
                signature
                    .ok_or(SignatureError::Missing("signature"))?
                    .as_bytes(),
            )
            .map_err(|_| SignatureError::Malformed("a signature that is not base64"))?;
        let headers = match headers {
            Some(h) => h
                .split_ascii_whitespace()
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>(),
            None => vec!["date".to_string()],
        };
        if headers.is_empty() {
            return Err(SignatureError::Malformed("an empty header list"));
        }
        if let Some(a) = &algorithm
            && !matches!(a.to_ascii_lowercase().as_str(), "rsa-sha256" | "hs2019")
        {
            return Err(SignatureError::Algorithm(a.clone()));
        }
        Ok(Signature {
            key_id: key_id.ok_or(SignatureError::Missing("keyId"))?,
            algorithm,
            headers,
            signature,
            created: number(created)?,
            expires: number(expires)?,
        })
    }

    /// The header value, as [`Signature::parse`] reads it.
    pub fn to_header(&self) -> String {
        let mut out = format!("keyId=\"{}\"", self.key_id);
        if let Some(a) = &self.algorithm {
            out.push_str(&format!(",algorithm=\"{a}\""));
        }
        out.push_str(&format!(",headers=\"{}\"", self.headers.join(" ")));
        if let Some(c) = self.created {
            out.push_str(&format!(",created={c}"));
        }
        if let Some(e) = self.expires {
            out.push_str(&format!(",expires={e}"));
        }
        out.push_str(&format!(
            ",signature=\"{}\"",
            BASE64.encode(&self.signature)
        ));
        out
    }

    /// Refuses a signature that leaves out one of `required`.
    pub fn covers(&self, required: &[&'static str]) -> Result<(), SignatureError> {
        for name in required {
            if !self.headers.iter().any(|h| h == name) {
                return Err(SignatureError::NotCovered(name));
            }
        }
        Ok(())
    }

    /// The string this signature signs, for a request with `method` and
    /// `target` (path and query), whose headers `header` looks up by
    /// lower-case name.
    pub fn signing_string<'a>(
        &self,
        method: &str,
        target: &str,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<String, SignatureError> {
        signing_string(&self.headers, method, target, |name| match name {
            "(created)" => self.created.map(|c| c.to_string()),
            "(expires)" => self.expires.map(|e| e.to_string()),
            _ => header(name).map(str::to_string),
        })
    }
}

/// One line per name in `names`: `name: value`, the request target as
/// `(request-target): method target` in lower-case method.
pub fn signing_string(
    names: &[impl AsRef<str>],
    method: &str,
    target: &str,
    value: impl Fn(&str) -> Option<String>,
) -> Result<String, SignatureError> {
    let mut lines = Vec::with_capacity(names.len());
    for name in names {
        let name = name.as_ref();
        let v = if name == "(request-target)" {
            format!("{} {target}", method.to_ascii_lowercase())
        } else {
            value(name).ok_or_else(|| SignatureError::Absent(name.to_string()))?
        };
        lines.push(format!("{name}: {v}"));
    }
    Ok(lines.join("\n"))
}

/// The `Digest` header value for a body: `SHA-256=` and its base64.
pub fn digest(body: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, body);
    format!("SHA-256={}", BASE64.encode(hash.as_ref()))
}

/// Whether a `Digest` header value carries the body's SHA-256 (among other
/// algorithms it may list; only SHA-256 counts).
pub fn digest_matches(header: &str, body: &[u8]) -> bool {
    let ours = digest(body);
    let ours = &ours["SHA-256=".len()..];
    header.split(',').any(|part| {
        let part = part.trim();
        part.split_once('=')
            .is_some_and(|(alg, value)| alg.eq_ignore_ascii_case("sha-256") && value == ours)
    })
}

/// Verifies `signature` over `message` under an RSA public key in PKCS#1
/// DER (see [`super::key::pkcs1_from_pem`]).
pub fn verify_rsa(public_pkcs1: &[u8], message: &[u8], signature: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_pkcs1,
    )
    .verify(message, signature)
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_mastodon_sends() {
        let s = Signature::parse(
            r#"keyId="https://m.example/users/bob#main-key",algorithm="rsa-sha256",headers="(request-target) host date digest content-type",signature="AAEC""#,
        )
        .unwrap();
        assert_eq!(s.key_id, "https://m.example/users/bob#main-key");
        assert_eq!(s.headers.len(), 5);
        assert_eq!(s.signature, vec![0, 1, 2]);
        assert_eq!(Signature::parse(&s.to_header()).unwrap(), s);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "",
            "keyId=\"a\"",
            "signature=\"AAEC\"",
            "keyId=\"a\",keyId=\"b\",signature=\"AAEC\"",
            "keyId=\"a,signature=\"AAEC\"",
            "keyId=\"a\",signature=\"not base64!\"",
            "keyId=\"a\",algorithm=\"ed25519\",signature=\"AAEC\"",
            "keyId=\"a\" x,signature=\"AAEC\"",
            "keyId=\"a\",headers=\"\",signature=\"AAEC\"",
        ] {
            assert!(Signature::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Signature::parse(&"x".repeat(MAX_HEADER + 1)),
            Err(SignatureError::TooLong)
        );
    }

    #[test]
    fn the_signing_string_is_one_line_per_header() {
        let s = signing_string(&OUTGOING, "POST", "/inbox", |n| Some(format!("<{n}>"))).unwrap();
        assert_eq!(
            s,
            "(request-target): post /inbox\nhost: <host>\ndate: <date>\ndigest: <digest>"
        );
    }

    proptest::proptest! {
        /// Any header this node writes reads back as itself.
        #[test]
        fn headers_read_back_as_written(
            key_id in "[ -!#-\\[\\]-~]{1,80}",
            algorithm in proptest::option::of(proptest::sample::select(vec!["rsa-sha256", "hs2019"])),
            headers in proptest::collection::vec("[a-z()-]{1,20}", 1..6),
            signature in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            created in proptest::option::of(proptest::num::i64::ANY),
            expires in proptest::option::of(proptest::num::i64::ANY),
        ) {
            let s = Signature {
                key_id,
                algorithm: algorithm.map(str::to_string),
                headers,
                signature,
                created,
                expires,
            };
            proptest::prop_assert_eq!(Signature::parse(&s.to_header()), Ok(s));
        }

        /// Any parsed header writes back to one that parses the same.
        #[test]
        fn parsed_headers_write_back(text in ".{0,300}") {
            if let Ok(s) = Signature::parse(&text) {
                proptest::prop_assert_eq!(Signature::parse(&s.to_header()), Ok(s));
            }
        }
    }

    #[test]
    fn digests_match_only_their_body() {
        let d = digest(b"hello");
        assert!(digest_matches(&d, b"hello"));
        assert!(digest_matches(&format!("SHA-512=x, {d}"), b"hello"));
        assert!(!digest_matches(&d, b"hellO"));
        assert!(!digest_matches("SHA-256=", b""));
    }
}
