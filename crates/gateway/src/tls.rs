//! TLS termination: certificates chosen by SNI from the names they are valid for, ALPN h2 and
//! http/1.1, TLS 1.2 or 1.3 minimum (never below).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use portcullis_config::{CertFiles, ConfigError, ListenerTls, TlsVersion};

/// Picks the certificate valid for the client's SNI name; the first one otherwise.
#[derive(Debug)]
struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let default = self.certs.first().cloned();
        let Some(sni) = hello.server_name() else {
            return default;
        };
        let Ok(name) = ServerName::try_from(sni) else {
            return default;
        };
        self.certs
            .iter()
            .find(|ck| {
                ck.end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
            })
            .cloned()
            .or(default)
    }
}

fn load_pair(
    c: &CertFiles,
    provider: &rustls::crypto::CryptoProvider,
    at: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Arc<CertifiedKey>, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            at(
                &format!("{}.cert", c.field),
                format!("cannot read certificate {}: {e}", c.cert.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(at(
            &format!("{}.cert", c.field),
            format!("{} holds no PEM certificate", c.cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|e| {
        at(
            &format!("{}.key", c.field),
            format!("cannot read private key {}: {e}", c.key.display()),
        )
    })?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        at(
            &format!("{}.key", c.field),
            format!("unusable private key: {e}"),
        )
    })?;
    let ck = CertifiedKey::new(certs, signing);
    if let Err(e) = ck.keys_match() {
        return Err(at(
            &c.field,
            format!("the key does not belong to the certificate: {e}"),
        ));
    }
    Ok(Arc::new(ck))
}

/// Builds a listener's rustls server config. Blocking (reads files).
pub fn server_config(
    tls: &ListenerTls,
    at: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = tls
        .certificates
        .iter()
        .map(|c| load_pair(c, &provider, at))
        .collect::<Result<Vec<_>, _>>()?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| at("", format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Builds a client TLS config for an upstream from files. Blocking.
pub fn upstream_client_config(
    tls: &portcullis_config::UpstreamTls,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let ca = tls.ca.as_deref().map(read).transpose()?;
    let client = match &tls.client_cert {
        Some((c, k)) => Some((read(c)?, read(k)?)),
        None => None,
    };
    portcullis_client::tls_client_config(
        ca.as_deref(),
        client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        tls.insecure_skip_verify,
        alpn,
    )
    .map_err(|e| e.to_string())
}
