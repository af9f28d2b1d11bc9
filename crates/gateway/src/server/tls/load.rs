//! Reading a listener's TLS files into a rustls server config: certificates chosen by SNI,
//! the client certificate verifier (CA bundle and CRLs), session resumption.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ProducesTickets, ResolvesServerCert,
    ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;

use portcullis_config::{
    CertFiles, ClientAuth, ClientAuthMode, ConfigError, ListenerTls, TlsVersion,
};

/// TLS 1.2 sessions remembered by ID (clients that do not take tickets). Each entry holds the
/// session's secrets and, on mTLS listeners, the client's certificate chain: a few KiB at most.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// Places a problem on a config field.
pub type At<'a> = &'a dyn Fn(&str, String) -> ConfigError;

/// Size and modification time of a file: a change of either means the file changed. `None`
/// for a file that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

/// The stamp of `path` now (following symlinks, as Kubernetes secret volumes need).
pub fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// Files read and their stamps.
pub type FileStamps = [(PathBuf, Option<Stamp>)];

/// Resumption state: ticket keys and the session ID cache. Kept while the client-auth files
/// stay the same, so clients resume across certificate swaps and reloads; replaced when they
/// change, so no session admitted under an old CA or CRL outlives it.
pub struct Sessions {
    ticketer: Option<Arc<dyn ProducesTickets>>,
    cache: Arc<dyn StoresServerSessions>,
}

impl Sessions {
    /// Fresh ticket keys (made in memory, rotated every 6 hours by rustls; the previous key
    /// still opens tickets for one more period) and an empty cache; or nothing when off.
    pub fn new(on: bool, at: At<'_>, field: &str) -> Result<Arc<Self>, ConfigError> {
        if !on {
            return Ok(Arc::new(Self {
                ticketer: None,
                cache: Arc::new(NoServerSessionStorage {}),
            }));
        }
        let ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| {
            at(
                &format!("{field}.session_tickets"),
                format!("cannot make session ticket keys: {e}"),
            )
        })?;
        Ok(Arc::new(Self {
            ticketer: Some(ticketer),
            cache: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
        }))
    }
}

/// A certificate the listener serves, for the expiry metric.
#[derive(Debug, Clone)]
pub struct Served {
    /// The certificate file as configured.
    pub file: PathBuf,
    /// Its leaf's `notAfter`, Unix seconds.
    pub not_after: i64,
}

/// A listener's TLS files, read: the server config and what it was made from.
pub struct Loaded {
    /// The rustls config new connections use.
    pub config: Arc<rustls::ServerConfig>,
    /// Every file read, with its stamp taken before reading it: certificates and keys first,
    /// then the client CA bundle and CRL.
    pub files: Vec<(PathBuf, Option<Stamp>)>,
    /// How many of `files` are the client-auth ones (at the end).
    pub client_auth_files: usize,
    /// Resumption state in use.
    pub sessions: Arc<Sessions>,
    /// Served certificates and their expiry.
    pub served: Vec<Served>,
}

impl Loaded {
    /// The stamps of the client-auth files as read.
    pub fn client_auth_stamps(&self) -> &FileStamps {
        &self.files[self.files.len() - self.client_auth_files..]
    }
}

/// Reads the files of `tls` and builds the server config. `reuse` is the resumption state to
/// keep when the client-auth files are unchanged since it was made. Blocking (reads files).
pub fn load(
    tls: &ListenerTls,
    field: &str,
    reuse: Option<(&Arc<Sessions>, &FileStamps)>,
    at: At<'_>,
) -> Result<Loaded, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut files = Vec::new();
    let mut certs = Vec::new();
    let mut served = Vec::new();
    for c in &tls.certificates {
        files.push((c.cert.clone(), stamp(&c.cert)));
        files.push((c.key.clone(), stamp(&c.key)));
        let ck = load_pair(c, &provider, at)?;
        let not_after = ck
            .end_entity_cert()
            .ok()
            .and_then(|der| not_after(der))
            .unwrap_or(0);
        served.push(Served {
            file: c.cert.clone(),
            not_after,
        });
        certs.push(ck);
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| at(field, format!("TLS setup failed: {e}")))?;
    let before = files.len();
    let builder = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            files.push((ca.ca.clone(), stamp(&ca.ca)));
            if let Some(crl) = &ca.crl {
                files.push((crl.clone(), stamp(crl)));
            }
            builder.with_client_cert_verifier(client_verifier(ca, &provider, at)?)
        }
    };
    let client_auth_files = files.len() - before;
    let mut cfg = builder.with_cert_resolver(Arc::new(SniResolver { certs }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let sessions = match reuse {
        Some((s, stamps)) if stamps == &files[before..] => s.clone(),
        _ => Sessions::new(tls.session_tickets, at, field)?,
    };
    match &sessions.ticketer {
        Some(t) => cfg.ticketer = t.clone(),
        // No tickets: no TLS 1.3 NewSessionTicket messages either.
        None => cfg.send_tls13_tickets = 0,
    }
    cfg.session_storage = sessions.cache.clone();
    Ok(Loaded {
        config: Arc::new(cfg),
        files,
        client_auth_files,
        sessions,
        served,
    })
}

/// The `notAfter` of a DER certificate, Unix seconds.
fn not_after(der: &[u8]) -> Option<i64> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The verifier of client certificates: chains to the CA bundle, not revoked by the CRLs.
fn client_verifier(
    ca: &ClientAuth,
    provider: &Arc<CryptoProvider>,
    at: At<'_>,
) -> Result<Arc<dyn ClientCertVerifier>, ConfigError> {
    let ca_field = format!("{}.ca", ca.field);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca.ca)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            at(
                &ca_field,
                format!("cannot read CA bundle {}: {e}", ca.ca.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(at(
            &ca_field,
            format!("{} holds no PEM certificate", ca.ca.display()),
        ));
    }
    let mut roots = RootCertStore::empty();
    for (i, c) in certs.into_iter().enumerate() {
        roots.add(c).map_err(|e| {
            at(
                &ca_field,
                format!(
                    "certificate {} of {} is not a usable CA: {e}",
                    i + 1,
                    ca.ca.display()
                ),
            )
        })?;
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(path) = &ca.crl {
        let crls = read_crls(path).map_err(|m| at(&format!("{}.crl", ca.field), m))?;
        // Only the client's own certificate is looked up: intermediates rarely have lists of
        // their own, and a missing one would refuse every client.
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
    }
    if ca.mode == ClientAuthMode::Optional {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|e| {
        let f = match e {
            rustls::server::VerifierBuilderError::InvalidCrl(_) => format!("{}.crl", ca.field),
            _ => ca_field.clone(),
        };
        at(
            &f,
            format!("cannot verify client certificates with these files: {e}"),
        )
    })
}

/// CRLs from a file of PEM `X509 CRL` blocks, or one DER list.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let pem: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?;
    if !pem.is_empty() {
        return Ok(pem);
    }
    // DER: an ASN.1 SEQUENCE.
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Err(format!(
        "{} holds no certificate revocation list (PEM `X509 CRL` or DER)",
        path.display()
    ))
}

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
    provider: &CryptoProvider,
    at: At<'_>,
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
