//! Handshake outcomes: full or resumed, and why a failed one failed, counted per listener.

use prometheus::IntCounter;
use rustls::{CertificateError, HandshakeKind};

use crate::metrics::Metrics;

/// Why a handshake failed, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The listener requires a client certificate and none came.
    NoCertificate,
    /// The client certificate does not chain to the configured CAs.
    UnknownCa,
    /// The client certificate has expired (or is not valid yet).
    Expired,
    /// The client certificate is on the CRL.
    Revoked,
    /// Another problem with the client certificate (signature, usage, revocation status
    /// unknown, encoding).
    BadCertificate,
    /// The handshake did not finish within `header_read_timeout`.
    Timeout,
    /// Anything else: no shared version or cipher, not TLS, the client refused our
    /// certificate, the connection closed.
    Other,
}

impl Failure {
    /// Every reason, in label order.
    pub const ALL: [Failure; 7] = [
        Failure::NoCertificate,
        Failure::UnknownCa,
        Failure::Expired,
        Failure::Revoked,
        Failure::BadCertificate,
        Failure::Timeout,
        Failure::Other,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::NoCertificate => "no_certificate",
            Failure::UnknownCa => "unknown_ca",
            Failure::Expired => "expired",
            Failure::Revoked => "revoked",
            Failure::BadCertificate => "bad_certificate",
            Failure::Timeout => "timeout",
            Failure::Other => "other",
        }
    }

    /// The reason of a failed handshake, from the error the TLS acceptor returned.
    pub fn of(e: &std::io::Error) -> Failure {
        let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return Failure::Other;
        };
        match err {
            rustls::Error::NoCertificatesPresented => Failure::NoCertificate,
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => Failure::UnknownCa,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => Failure::Expired,
                CertificateError::Revoked => Failure::Revoked,
                _ => Failure::BadCertificate,
            },
            _ => Failure::Other,
        }
    }
}

/// A listener's handshake counters, resolved once so counting is an atomic add.
pub struct Counters {
    full: IntCounter,
    resumed: IntCounter,
    failed: IntCounter,
    reasons: [IntCounter; Failure::ALL.len()],
}

impl Counters {
    /// The counters of `listener`; every series exists from the start, at 0.
    pub fn new(metrics: &Metrics, listener: &str) -> Self {
        let result = |r: &str| metrics.tls_handshakes.with_label_values(&[listener, r]);
        Self {
            full: result("full"),
            resumed: result("resumed"),
            failed: result("failed"),
            reasons: Failure::ALL.map(|f| {
                metrics
                    .tls_failures
                    .with_label_values(&[listener, f.label()])
            }),
        }
    }

    /// Counts a completed handshake.
    pub fn completed(&self, kind: Option<HandshakeKind>) {
        match kind {
            Some(HandshakeKind::Resumed) => self.resumed.inc(),
            _ => self.full.inc(),
        }
    }

    /// Counts a failed one.
    pub fn failed(&self, why: Failure) {
        self.failed.inc();
        if let Some(i) = Failure::ALL.iter().position(|f| *f == why) {
            self.reasons[i].inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Failure;
    use rustls::CertificateError;

    fn io(e: rustls::Error) -> std::io::Error {
        // What tokio-rustls returns for a failed handshake.
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn reasons_come_from_the_rustls_error() {
        let cert = |c| io(rustls::Error::InvalidCertificate(c));
        assert_eq!(
            Failure::of(&io(rustls::Error::NoCertificatesPresented)),
            Failure::NoCertificate
        );
        assert_eq!(
            Failure::of(&cert(CertificateError::UnknownIssuer)),
            Failure::UnknownCa
        );
        assert_eq!(
            Failure::of(&cert(CertificateError::Expired)),
            Failure::Expired
        );
        assert_eq!(
            Failure::of(&cert(CertificateError::NotValidYet)),
            Failure::Expired
        );
        assert_eq!(
            Failure::of(&cert(CertificateError::Revoked)),
            Failure::Revoked
        );
        assert_eq!(
            Failure::of(&cert(CertificateError::UnknownRevocationStatus)),
            Failure::BadCertificate
        );
        assert_eq!(
            Failure::of(&io(rustls::Error::HandshakeNotComplete)),
            Failure::Other
        );
        assert_eq!(
            Failure::of(&std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            Failure::Other
        );
        let labels: Vec<&str> = Failure::ALL.iter().map(|f| f.label()).collect();
        assert_eq!(
            labels,
            [
                "no_certificate",
                "unknown_ca",
                "expired",
                "revoked",
                "bad_certificate",
                "timeout",
                "other"
            ]
        );
    }
}
