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
