//! TLS termination: the certificate each handshake gets, and certificate
//! reloads.
//!
//! Each TLS listener has a [`Resolver`] (rustls `ResolvesServerCert`)
//! over an `ArcSwap<CertSet>`. The client's SNI picks a certificate by its
//! names, exact first, then a wildcard covering one label (`*.example.com`
//! matches `a.example.com`, not `example.com` nor `a.b.example.com`, RFC
//! 6125 §6.4.3); `sni` certificates are tried in file order, then the
//! default certificate's names; no match (or no SNI) gets the default.
//!
//! A reload ([`TlsListeners::prepare`], then [`PreparedCerts::commit`])
//! reads every file again; new handshakes use the new certificates, open
//! connections keep theirs. A file that cannot be loaded rejects the whole
//! reload and the old certificates stay.

use crate::certs::{self, CertError, LoadedCert};
use crate::config::{Listener, ListenerTls};
use arc_swap::ArcSwap;
use pingora_core::listeners::tls::TlsSettings;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The certificates of one listener, indexed by name.
pub struct CertSet {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    /// Indexes `sni` (first listed wins a shared name), then `default`.
    pub fn new(default: LoadedCert, sni: Vec<LoadedCert>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for c in sni.iter().chain(std::iter::once(&default)) {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(rest) => wildcard.entry(rest.to_string()),
                    None => exact.entry(n.clone()),
                }
                .or_insert_with(|| c.key.clone());
            }
        }
        CertSet {
            default: default.key,
            exact,
            wildcard,
        }
    }

    /// Reads every file of `tls`.
    pub fn load(tls: &ListenerTls) -> Result<Self, CertError> {
        let default = certs::load(&tls.default.cert, &tls.default.key)?;
        let sni = tls
            .sni
            .iter()
            .map(|p| certs::load(&p.cert, &p.key))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CertSet::new(default, sni))
    }

    /// The certificate for a client that sent `sni`.
    pub fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// A listener's certificate resolver; its set is swapped on reload.
pub struct Resolver {
    certs: ArcSwap<CertSet>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certs.load().pick(hello.server_name()))
    }
}

/// The TLS listeners of this process, by listen address.
#[derive(Default)]
pub struct TlsListeners {
    resolvers: Vec<(String, Arc<Resolver>)>,
}

impl TlsListeners {
    /// Loads the certificates of `listener` and returns pingora's settings
    /// for it (ALPN h2 + http/1.1 unless `http2: false`), remembering its
    /// resolver for reloads.
    pub fn add(&mut self, listener: &Listener, tls: &ListenerTls) -> Result<TlsSettings, String> {
        let set = CertSet::load(tls).map_err(|e| e.to_string())?;
        let resolver = Arc::new(Resolver {
            certs: ArcSwap::from_pointee(set),
        });
        // paths are ignored once a resolver is set
        let mut settings = TlsSettings::intermediate("", "").map_err(|e| e.to_string())?;
        settings.set_cert_resolver(resolver.clone());
        if tls.http2 {
            settings.enable_h2();
        }
        self.resolvers.push((listener.addr.clone(), resolver));
        Ok(settings)
    }

    /// Reads the certificate files `listen` names for each running TLS
    /// listener (matched by address). Nothing changes until
    /// [`PreparedCerts::commit`]. A listener whose entry is gone or no
    /// longer has `tls` keeps its certificates (that change needs a binary
    /// upgrade).
    pub fn prepare(&self, listen: &[Listener]) -> Result<PreparedCerts, CertError> {
        let mut sets = Vec::new();
        for (addr, resolver) in &self.resolvers {
            let Some(tls) = listen
                .iter()
                .find(|l| &l.addr == addr)
                .and_then(|l| l.tls.as_ref())
            else {
                continue;
            };
            sets.push((resolver.clone(), CertSet::load(tls)?));
        }
        Ok(PreparedCerts { sets })
    }
}

/// Certificates read by [`TlsListeners::prepare`], not yet in use.
pub struct PreparedCerts {
    sets: Vec<(Arc<Resolver>, CertSet)>,
}

impl PreparedCerts {
    /// New handshakes use these certificates from now on.
    pub fn commit(self) {
        for (resolver, set) in self.sets {
            resolver.certs.store(Arc::new(set));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_for(name: &str) -> LoadedCert {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "sy-tls-unit-{}-{}",
            std::process::id(),
            name.replace('*', "star")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (cp, kp) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cp, c.cert.pem()).unwrap();
        std::fs::write(&kp, c.key_pair.serialize_pem()).unwrap();
        certs::load(cp.to_str().unwrap(), kp.to_str().unwrap()).unwrap()
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let d = key_for("default.test");
        let api = key_for("api.example.com");
        let wild = key_for("*.example.com");
        let (dk, ak, wk) = (d.key.clone(), api.key.clone(), wild.key.clone());
        let set = CertSet::new(d, vec![api, wild]);
        assert!(Arc::ptr_eq(&set.pick(Some("API.example.com.")), &ak));
        assert!(Arc::ptr_eq(&set.pick(Some("www.example.com")), &wk));
        assert!(Arc::ptr_eq(&set.pick(Some("a.b.example.com")), &dk));
        assert!(Arc::ptr_eq(&set.pick(Some("example.com")), &dk));
        assert!(Arc::ptr_eq(&set.pick(Some("default.test")), &dk));
        assert!(Arc::ptr_eq(&set.pick(None), &dk));
    }
}
