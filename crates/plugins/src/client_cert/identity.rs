//! The identity in a client certificate: what the `client_cert` plugin matches on and passes
//! upstream. Parsed once per connection, right after the handshake verified the certificate.

use std::sync::OnceLock;

use base64::Engine as _;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

/// The identity in a client certificate the TLS handshake verified.
#[derive(Debug)]
pub struct ClientIdentity {
    subject: String,
    common_name: Option<String>,
    uri_sans: Vec<String>,
    fingerprint: String,
    not_after: i64,
    der: Vec<u8>,
    /// Header values, made once per connection rather than once per request.
    values: HeaderValues,
}

#[derive(Debug, Default)]
struct HeaderValues {
    subject: Option<HeaderValue>,
    uri_sans: Vec<HeaderValue>,
    fingerprint: Option<HeaderValue>,
    escaped_pem: OnceLock<Option<HeaderValue>>,
}

/// A client certificate that could not be read (it was verified, so this is rare: an
/// encoding the verifier accepts and the parser does not).
#[derive(Debug, thiserror::Error)]
#[error("unreadable client certificate: {0}")]
pub struct IdentityError(String);

impl ClientIdentity {
    /// Reads the identity from a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError(e.to_string()))?;
        let subject = rfc4514(cert.subject());
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let uri_sans: Vec<String> = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let fingerprint = hex(&Sha256::digest(der));
        let values = HeaderValues {
            subject: header_value(&subject),
            uri_sans: uri_sans.iter().filter_map(|u| header_value(u)).collect(),
            fingerprint: header_value(&fingerprint),
            escaped_pem: OnceLock::new(),
        };
        Ok(Self {
            subject,
            common_name,
            uri_sans,
            fingerprint,
            not_after: cert.validity().not_after.timestamp(),
            der: der.to_vec(),
            values,
        })
    }

    /// The subject DN as RFC 4514 text (`CN=acme-1,O=Acme`), as nginx's `$ssl_client_s_dn`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The subject's first common name (CN), if it has one.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// URI subject alternative names (SPIFFE IDs live here).
    pub fn uri_sans(&self) -> &[String] {
        &self.uri_sans
    }

    /// SHA-256 of the DER certificate, lowercase hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The certificate's `notAfter`, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The DER certificate.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject DN as a header value.
    pub fn subject_header(&self) -> Option<&HeaderValue> {
        self.values.subject.as_ref()
    }

    /// The URI SANs as header values.
    pub fn uri_san_headers(&self) -> &[HeaderValue] {
        &self.values.uri_sans
    }

    /// The fingerprint as a header value.
    pub fn fingerprint_header(&self) -> Option<&HeaderValue> {
        self.values.fingerprint.as_ref()
    }

    /// The PEM certificate, URL-encoded (as Envoy's `x-forwarded-client-cert` `Cert=` and
    /// nginx's `$ssl_client_escaped_cert`). Made on first use, then kept with the connection.
    pub fn escaped_pem_header(&self) -> Option<&HeaderValue> {
        self.values
            .escaped_pem
            .get_or_init(|| header_value(&url_encode(&pem(&self.der))))
            .as_ref()
    }
}

/// A header value for `s`; control characters (which a DN could hold) are escaped `\XX`.
fn header_value(s: &str) -> Option<HeaderValue> {
    if s.bytes().all(|b| b >= 0x20 && b != 0x7f) {
        return HeaderValue::from_bytes(s.as_bytes()).ok();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if (c as u32) < 0x20 || c == '\x7f' {
            out.push_str(&format!("\\{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    HeaderValue::from_bytes(out.as_bytes()).ok()
}

/// A distinguished name as RFC 4514 text: RDNs last to first, separated by `,`; values with
/// special characters escaped.
fn rfc4514(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<_> = name.iter_rdn().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match x509_parser::objects::oid2abbrev(attr.attr_type(), registry) {
                Ok(abbrev) => out.push_str(abbrev),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            match attr.as_str() {
                Ok(v) => escape_value(&mut out, v),
                Err(_) => {
                    // Not a string type: `#` and the hex of its DER value, as RFC 4514 says.
                    out.push('#');
                    out.push_str(&hex(attr.attr_value().data));
                }
            }
        }
    }
    out
}

fn escape_value(out: &mut String, v: &str) {
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

fn hex(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(HEX[(x >> 4) as usize] as char);
        s.push(HEX[(x & 15) as usize] as char);
    }
    s
}

/// PEM text of a DER certificate, 64 characters a line.
fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn url_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let mut s = String::new();
        escape_value(&mut s, " a,b+c ");
        assert_eq!(s, "\\ a\\,b\\+c\\ ");
        assert_eq!(header_value("a\nb").expect("value").as_bytes(), b"a\\0Ab");
        assert_eq!(
            url_encode("-----BEGIN CERT/+=\n"),
            "-----BEGIN%20CERT%2F%2B%3D%0A"
        );
    }
}
