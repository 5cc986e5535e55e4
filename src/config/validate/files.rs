//! Files the config names: paths relative to the config's directory, and
//! PEM files read now, with a cap, so that a bad file is a config error
//! rather than a runtime failure.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::spans::KeyPath;

use super::Validator;

impl Validator<'_> {
    pub(super) fn file_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A PEM file of at least one certificate, read now so that a bad file
    /// is a config error rather than a runtime failure. `kind` names the
    /// file in the message when it cannot be read, `valid` what it should
    /// hold.
    pub(super) fn pem_certificates(
        &mut self,
        path: &Path,
        p: KeyPath,
        kind: &str,
        valid: &str,
    ) -> Option<Vec<u8>> {
        match read_bounded_file(path) {
            Ok(bytes) => {
                let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
                match certs {
                    Ok(c) if !c.is_empty() => Some(bytes),
                    Ok(_) => {
                        self.err(p, format!("no certificate in {}; valid: a PEM file with at least one BEGIN CERTIFICATE block", path.display()));
                        None
                    }
                    Err(e) => {
                        self.err(
                            p,
                            format!("bad PEM in {}: {e}; valid: {valid}", path.display()),
                        );
                        None
                    }
                }
            }
            Err(e) => {
                self.err(p, format!("unreadable {kind} file {}: {e}; valid: a readable PEM file (relative paths start at the config file's directory)", path.display()));
                None
            }
        }
    }
}

/// PEM files (certificates, keys, CAs) larger than this are refused: a
/// path like `/dev/zero` or a log file by mistake must not make the loader
/// read forever.
const MAX_PEM_FILE: u64 = 1 << 20;

/// Read a file referenced by the config, at most [`MAX_PEM_FILE`] bytes.
pub(super) fn read_bounded_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_PEM_FILE / 1024
        )));
    }
    Ok(bytes)
}
