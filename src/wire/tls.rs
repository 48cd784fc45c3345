//! TLS on the workers' gRPC (tonic's rustls), for clusters whose frontends and workers talk
//! across networks they do not trust: workers serve TLS, optionally requiring client
//! certificates from a CA; frontends and pulling decode workers verify them and may present
//! their own certificate.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::error::{Error, Result};

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config(format!("{what} {}: {e}", path.display())))
}

/// A worker's TLS: its certificate and key, and the CA its peers' (and clients') certificates
/// are signed by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate (chain) presented to the other side.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// PEM CA certificate the other side's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// The name the other side's certificate must carry (default: the host of its address).
    pub domain: Option<String>,
}

impl TlsFiles {
    /// Whether any TLS setting is given.
    pub fn is_set(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.ca.is_some()
    }

    fn identity(&self) -> Result<Option<Identity>> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Ok(Some(Identity::from_pem(
                read(c, "TLS certificate")?,
                read(k, "TLS key")?,
            ))),
            (None, None) => Ok(None),
            _ => Err(Error::Config(
                "a TLS certificate and its key go together".into(),
            )),
        }
    }

    /// What a worker serves with: its identity, and with `require_client_cert`, client
    /// certificates checked against the CA.
    pub fn server(&self, require_client_cert: bool) -> Result<Option<ServerTlsConfig>> {
        let Some(identity) = self.identity()? else {
            if require_client_cert || self.ca.is_some() {
                return Err(Error::Config(
                    "serving TLS needs --tls-cert and --tls-key".into(),
                ));
            }
            return Ok(None);
        };
        let mut cfg = ServerTlsConfig::new().identity(identity);
        if require_client_cert {
            let ca = self.ca.as_ref().ok_or_else(|| {
                Error::Config("requiring client certificates needs --tls-ca".into())
            })?;
            cfg = cfg.client_ca_root(Certificate::from_pem(read(ca, "TLS CA")?));
        }
        Ok(Some(cfg))
    }

    /// What a client (frontend, pulling worker) connects with: the CA to verify the server
    /// by, and its own certificate if it has one. None without a CA: plain TCP.
    pub fn client(&self) -> Result<Option<ClientTlsConfig>> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let mut cfg =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "TLS CA")?));
        if let Some(id) = self.identity()? {
            cfg = cfg.identity(id);
        }
        if let Some(d) = &self.domain {
            cfg = cfg.domain_name(d.clone());
        }
        Ok(Some(cfg))
    }
}

/// The endpoint of the worker at `addr` (host:port): https with `tls`, else http.
pub fn endpoint(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
) -> std::result::Result<Endpoint, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("bad worker address {addr}: {e}"))?;
    match tls {
        Some(t) => ep
            .tls_config(t.clone())
            .map_err(|e| format!("TLS settings for {addr}: {e}")),
        None => Ok(ep),
    }
}

/// The KV data socket's TLS (rustls directly: the socket is not gRPC), from the same files.
pub mod kv {
    use std::sync::Arc;

    use rustls::crypto::{CryptoProvider, ring};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ClientConfig, RootCertStore, ServerConfig};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    use super::{TlsFiles, read};
    use crate::error::{Error, Result};

    /// What a pulling worker connects to a source's KV socket with.
    #[derive(Debug, Clone)]
    pub struct KvClientTls {
        config: Arc<ClientConfig>,
        domain: Option<String>,
    }

    impl KvClientTls {
        /// The rustls settings.
        pub fn config(&self) -> Arc<ClientConfig> {
            self.config.clone()
        }

        /// The name the source's certificate must carry: the configured one, else `host`.
        pub fn server_name(&self, host: &str) -> Result<ServerName<'static>> {
            let name = self.domain.as_deref().unwrap_or(host);
            ServerName::try_from(name.to_string())
                .map_err(|e| Error::Config(format!("TLS server name {name}: {e}")))
        }
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(ring::default_provider())
    }

    fn certs(
        files: &TlsFiles,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>> {
        let (Some(c), Some(k)) = (&files.cert, &files.key) else {
            return Ok(None);
        };
        let pem = read(c, "TLS certificate")?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("TLS certificate {}: {e}", c.display())))?;
        let key = PrivateKeyDer::from_pem_slice(&read(k, "TLS key")?)
            .map_err(|e| Error::Config(format!("TLS key {}: {e}", k.display())))?;
        Ok(Some((certs, key)))
    }

    fn roots(files: &TlsFiles) -> Result<Option<Arc<RootCertStore>>> {
        let Some(ca) = &files.ca else {
            return Ok(None);
        };
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&read(ca, "TLS CA")?) {
            let cert = cert.map_err(|e| Error::Config(format!("TLS CA {}: {e}", ca.display())))?;
            store
                .add(cert)
                .map_err(|e| Error::Config(format!("TLS CA {}: {e}", ca.display())))?;
        }
        Ok(Some(Arc::new(store)))
    }

    fn tls_err(e: rustls::Error) -> Error {
        Error::Config(format!("TLS settings: {e}"))
    }

    /// What the KV socket serves with: as the gRPC server, None when that serves plain TCP.
    pub fn server(
        files: &TlsFiles,
        require_client_cert: bool,
    ) -> Result<Option<Arc<ServerConfig>>> {
        let Some((certs, key)) = certs(files)? else {
            return Ok(None);
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?;
        let builder = match (require_client_cert, roots(files)?) {
            (true, Some(roots)) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| Error::Config(format!("TLS client verifier: {e}")))?,
            ),
            (true, None) => {
                return Err(Error::Config(
                    "requiring client certificates needs --tls-ca".into(),
                ));
            }
            (false, _) => builder.with_no_client_auth(),
        };
        Ok(Some(Arc::new(
            builder.with_single_cert(certs, key).map_err(tls_err)?,
        )))
    }

    /// What a puller connects with: as its gRPC client, None without a CA (plain TCP).
    pub fn client(files: &TlsFiles) -> Result<Option<KvClientTls>> {
        let Some(roots) = roots(files)? else {
            return Ok(None);
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_root_certificates(roots);
        let config = match certs(files)? {
            Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(tls_err)?,
            None => builder.with_no_client_auth(),
        };
        Ok(Some(KvClientTls {
            config: Arc::new(config),
            domain: files.domain.clone(),
        }))
    }
}
