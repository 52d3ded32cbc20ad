//! Certificates made per run with rcgen: a root CA and leaves signed by it,
//! plus deliberately wrong ones (self-signed, wrong name, expired).

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A root CA.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

/// A server certificate chain with its key.
pub struct ServerCert {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

impl TestCa {
    /// A fresh root.
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "pulp-auth-proxy test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// The root as PEM, for `upstream.ca_file`.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes the root as PEM, for `upstream.ca_file`.
    pub fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.pem()).unwrap();
        // Whatever the umask: the proxy refuses a CA file others may change.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// A leaf for `localhost` and `127.0.0.1`.
    pub fn leaf(&self) -> ServerCert {
        self.leaf_with(&["localhost", "127.0.0.1", "::1"], false)
    }

    /// A leaf for `localhost` and `127.0.0.1` written as PEM files, for a
    /// server that reads its certificate from disk (Pulp's content app).
    /// The key file is 0600.
    pub fn write_leaf_pem(&self, cert: &Path, key: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let mut params =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&leaf_key, &self.cert, &self.key).unwrap();
        std::fs::write(cert, leaf.pem()).unwrap();
        std::fs::write(key, leaf_key.serialize_pem()).unwrap();
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// A leaf for other names only: the host name check must fail.
    pub fn wrong_name(&self) -> ServerCert {
        self.leaf_with(&["pulp.other.test"], false)
    }

    /// A leaf that expired in 2020.
    pub fn expired(&self) -> ServerCert {
        self.leaf_with(&["localhost", "127.0.0.1"], true)
    }

    fn leaf_with(&self, names: &[&str], expired: bool) -> ServerCert {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        ServerCert {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A self-signed leaf for `127.0.0.1`: trusted by nobody.
pub fn self_signed() -> ServerCert {
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    ServerCert {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}
