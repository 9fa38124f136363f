//! Certificates made in the tests (with rcgen) and TLS clients that trust them.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A self-signed certificate for `localhost` and 127.0.0.1, with its key, written to
/// files the server can be pointed at.
pub struct TestCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub der: CertificateDer<'static>,
}

impl TestCert {
    /// A new certificate (rcgen's default validity, far from its ends), in `dir`
    /// under `name`.
    pub fn new(dir: &std::path::Path, name: &str) -> Self {
        Self::make(dir, name, false)
    }

    /// A certificate that expired on 1 January 2000.
    pub fn expired(dir: &std::path::Path, name: &str) -> Self {
        Self::make(dir, name, true)
    }

    fn make(dir: &std::path::Path, name: &str, expired: bool) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(1999, 1, 1);
            params.not_after = rcgen::date_time_ymd(2000, 1, 1);
        }
        let cert = params.self_signed(&key).unwrap();
        let (cert_file, key_file) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Self { cert_file, key_file, der: cert.der().clone() }
    }

    /// Puts this certificate's files where `other`'s are (what an operator's
    /// renewal does before its SIGHUP).
    pub fn install_as(&self, other: &TestCert) {
        std::fs::copy(&self.cert_file, &other.cert_file).unwrap();
        std::fs::copy(&self.key_file, &other.key_file).unwrap();
    }
}

/// A directory of its own for a test's certificates.
pub fn dir(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("wsbroker-tls-{test}-{}", std::process::id()))
}

/// A TLS client trusting the certificates `trusted`, over TLS 1.2 and 1.3, or one
/// version only.
pub fn connector(
    trusted: &[&CertificateDer<'static>],
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add((*cert).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        version.map_or_else(|| vec![&rustls::version::TLS13, &rustls::version::TLS12], |v| vec![v]);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A TLS session with the server at `addr`.
pub async fn tls_connect(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// A WebSocket client over TLS, joined to `room`.
pub async fn wss(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
    room: &str,
) -> tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>> {
    let tls = tls_connect(connector, addr).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}{room}", addr.port()), tls).await.unwrap();
    ws
}

/// The certificate the server presented on `tls`.
pub fn presented(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}
