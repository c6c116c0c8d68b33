//! `--web.config.file`: the Prometheus exporter-toolkit web configuration — TLS certificate and
//! key, and basic-auth users with bcrypt hashes — so Prometheus's own `tls_config` and
//! `basic_auth` scrape the sidecar unchanged.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum WebConfigError {
    #[error("--web.config.file {path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
    /// Accepted for compatibility with exporter-toolkit files; HTTP/2 is not offered.
    #[serde(default)]
    pub http_server_config: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
pub struct TlsServerConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Other exporter-toolkit TLS settings (client auth, cipher suites) are not supported yet;
    /// they are refused rather than silently ignored.
    #[serde(flatten)]
    pub unsupported: BTreeMap<String, serde_yaml::Value>,
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let err = |detail: String| WebConfigError::Invalid {
            path: path.to_path_buf(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut cfg: WebConfig = serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(tls) = cfg.tls_server_config.as_mut() {
            if let Some(k) = tls.unsupported.keys().next() {
                return Err(err(format!(
                    "tls_server_config.{k} is not supported (only cert_file and key_file)"
                )));
            }
            tls.cert_file = base.join(&tls.cert_file);
            tls.key_file = base.join(&tls.key_file);
        }
        for (user, hash) in &cfg.basic_auth_users {
            if !hash.starts_with("$2") {
                return Err(err(format!(
                    "basic_auth_users.{user}: not a bcrypt hash (expected $2a$/$2b$/$2y$…)"
                )));
            }
        }
        Ok(cfg)
    }

    /// A rustls server config from the certificate chain and key files.
    pub fn tls_acceptor(
        &self,
        path: &Path,
    ) -> Result<Option<tokio_rustls::TlsAcceptor>, WebConfigError> {
        let Some(tls) = &self.tls_server_config else {
            return Ok(None);
        };
        let err = |detail: String| WebConfigError::Invalid {
            path: path.to_path_buf(),
            detail,
        };
        let read = |p: &Path| std::fs::read(p).map_err(|e| err(format!("{}: {e}", p.display())));
        let certs = rustls_pemfile::certs(&mut read(&tls.cert_file)?.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("{}: {e}", tls.cert_file.display())))?;
        if certs.is_empty() {
            return Err(err(format!(
                "{}: no PEM certificate",
                tls.cert_file.display()
            )));
        }
        let key = rustls_pemfile::private_key(&mut read(&tls.key_file)?.as_slice())
            .map_err(|e| err(format!("{}: {e}", tls.key_file.display())))?
            .ok_or_else(|| err(format!("{}: no PEM private key", tls.key_file.display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                err(format!(
                    "certificate and key do not match or are unusable: {e}"
                ))
            })?;
        Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

/// Basic-auth check shared by every route. bcrypt is slow on purpose (tens of ms), so
/// credentials that verified once are remembered (a handful, for the life of the process).
#[derive(Clone)]
pub struct BasicAuth {
    users: Arc<BTreeMap<String, String>>,
    verified: Arc<Mutex<HashSet<String>>>,
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> Self {
        Self {
            users: Arc::new(users),
            verified: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    fn check(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization.and_then(|v| v.strip_prefix("Basic ")) else {
            return false;
        };
        if self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(value)
        {
            return true;
        }
        let Some(decoded) = base64_decode(value.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        let ok = self
            .users
            .get(user)
            .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false));
        if ok {
            let mut v = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if v.len() < 64 {
                v.insert(value.to_string());
            }
        }
        ok
    }
}

pub async fn require_basic_auth(
    auth: axum::extract::State<BasicAuth>,
    req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let a = auth.0.clone();
    let ok = tokio::task::spawn_blocking(move || a.check(header.as_deref()))
        .await
        .unwrap_or(false);
    if ok {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"ebpf-sidecar\"")],
            "Unauthorized\n",
        )
            .into_response()
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("YWxpY2U6c2VjcmV0").unwrap(), b"alice:secret");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("!!").is_none());
    }

    #[test]
    fn basic_auth() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let a = BasicAuth::new([("alice".to_string(), hash)].into());
        assert!(a.check(Some("Basic YWxpY2U6c2VjcmV0")));
        assert!(a.check(Some("Basic YWxpY2U6c2VjcmV0")), "cached");
        assert!(!a.check(Some("Basic YWxpY2U6d3Jvbmc="))); // alice:wrong
        assert!(!a.check(None));
        assert!(!a.check(Some("Bearer x")));
    }

    #[test]
    fn config_errors_name_the_field() {
        let dir = std::env::temp_dir().join("ebpf-sidecar-webcfg-test");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("web.yml");
        std::fs::write(&p, "basic_auth_users:\n  bob: plain\n").unwrap();
        assert!(
            WebConfig::load(&p)
                .unwrap_err()
                .to_string()
                .contains("basic_auth_users.bob")
        );
        std::fs::write(
            &p,
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: x\n",
        )
        .unwrap();
        assert!(
            WebConfig::load(&p)
                .unwrap_err()
                .to_string()
                .contains("client_auth_type")
        );
        std::fs::write(&p, "nonsense: 1\n").unwrap();
        assert!(WebConfig::load(&p).is_err());
        std::fs::write(
            &p,
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n",
        )
        .unwrap();
        assert_eq!(
            WebConfig::load(&p)
                .unwrap()
                .tls_server_config
                .unwrap()
                .cert_file,
            dir.join("c.pem")
        );
    }
}
