//! `[server]` and `[server.tls]`.

use std::time::Duration;

use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::files::read_bounded_file;

use crate::config::model::*;
use crate::config::raw::*;
use crate::config::spans::KeyPath;

use super::Validator;

impl Validator<'_> {
    pub(super) fn server(&mut self, v: Value) -> Option<ServerConfig> {
        let p = KeyPath::root().key("server");
        let raw: RawServer = de_unit(v, &p, &mut self.issues)?;
        let listen = match raw.listen {
            Some(l) => self.socket_addr(&l, p.key("listen")),
            None => {
                self.err(
                    p.clone(),
                    "missing required key `listen`; valid: an address like \"0.0.0.0:8080\"",
                );
                None
            }
        };
        let workers = raw.workers.unwrap_or(0);
        let workers = self.usize_of(workers, p.key("workers"));
        let max_body = self.size(raw.max_body, p.key("max_body"), 16 << 20);
        let max_in_flight = self.at_least_one(raw.max_in_flight, p.key("max_in_flight"), 4096);
        let max_in_flight = self.usize_of(max_in_flight, p.key("max_in_flight"));
        let shutdown_grace = self.duration(
            raw.shutdown_grace,
            p.key("shutdown_grace"),
            Duration::from_secs(30),
        );
        let request_header_timeout = self.positive_duration(
            raw.request_header_timeout,
            p.key("request_header_timeout"),
            Duration::from_secs(10),
        );
        let feedback_path = match raw.feedback_path {
            None => Some("/_cutover/feedback".to_string()),
            Some(s) if s.is_empty() => None,
            Some(s) => {
                if !s.starts_with('/')
                    || s.contains(['?', '#'])
                    || s.chars().any(char::is_whitespace)
                {
                    self.err(
                        p.key("feedback_path"),
                        format!("bad feedback path {s:?}; valid: \"\" (disabled) or a path starting with `/`, without query or spaces"),
                    );
                }
                Some(s)
            }
        };
        let tls = raw.tls.and_then(|t| self.tls(t, &p.key("tls")));
        let feedback_token = raw.feedback_token_env.as_deref().and_then(|name| {
            self.token_env(
                name,
                p.key("feedback_token_env"),
                "the feedback bearer token",
                "the key",
            )
        });
        let max_buffered = self.size(raw.max_buffered, p.key("max_buffered"), 256 << 20);
        if max_buffered < max_body {
            self.err(
                p.key("max_buffered"),
                format!("max_buffered ({max_buffered} bytes) is smaller than max_body ({max_body} bytes), so a body within max_body could never be taken; valid: at least max_body"),
            );
        }
        Some(ServerConfig {
            listen: listen?,
            workers,
            max_body,
            max_in_flight,
            shutdown_grace,
            trust_forwarded_for: raw.trust_forwarded_for.unwrap_or(false),
            feedback_path,
            feedback_token_env: raw.feedback_token_env,
            feedback_token,
            max_buffered,
            tls,
            request_header_timeout,
        })
    }

    pub(super) fn tls(&mut self, raw: RawTls, p: &KeyPath) -> Option<TlsConfig> {
        let cert_path = self.file_path(&raw.cert);
        let key_path = self.file_path(&raw.key);
        let cert_pem = self.pem_certificates(
            &cert_path,
            p.key("cert"),
            "TLS certificate",
            "a PEM certificate chain",
        );
        let key_pem = match read_bounded_file(&key_path) {
            Ok(bytes) => match PrivateKeyDer::from_pem_slice(&bytes) {
                Ok(_) => Some(bytes),
                Err(e) => {
                    self.err(p.key("key"), format!("no private key in {} ({e}); valid: a PEM file with one PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1)", key_path.display()));
                    None
                }
            },
            Err(e) => {
                self.err(p.key("key"), format!("unreadable TLS key file {}: {e}; valid: a readable PEM file (relative paths start at the config file's directory)", key_path.display()));
                None
            }
        };
        Some(TlsConfig {
            cert_path,
            key_path,
            cert_pem: cert_pem?,
            key_pem: key_pem?,
        })
    }
}
