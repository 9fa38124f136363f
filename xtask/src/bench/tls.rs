//! The certificate the TLS scenarios serve: self-signed for `localhost`, generated
//! for each run into `target/bench/tls`, and trusted by wsload (`--tls-ca`).

use std::path::PathBuf;

use crate::project::Project;

/// The certificate and key files of a run.
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Generates an ECDSA P-256 certificate for `localhost` (what browsers and servers
/// use most) and writes it with its key.
pub fn generate(project: &Project) -> Result<Certificate, String> {
    let dir = project.join("target/bench/tls");
    let signed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .map_err(|e| format!("cannot generate a certificate: {e}"))?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&cert, signed.cert.pem()))
        .and_then(|()| std::fs::write(&key, signed.signing_key.serialize_pem()))
        .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
    Ok(Certificate { cert, key })
}
