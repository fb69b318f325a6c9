//! TLS for tests: a self-signed certificate made here (rcgen), written as
//! PEM files for `--tls-cert/--tls-key`, and clients that trust exactly it:
//! an HTTPS request over hyper, a WSS connection over tokio-tungstenite,
//! and a bare handshake that reports the certificate the server presented.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use axum::body::Body;
use base64::Engine;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::Connector;

use super::Ws;

/// The name the test certificates are issued for and clients verify.
pub const HOST: &str = "localhost";

/// A certificate and its key.
pub struct TestCert {
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCert {
    /// A fresh self-signed certificate for `localhost`.
    pub fn new() -> Result<Self> {
        let made = rcgen::generate_simple_self_signed(vec![HOST.to_owned()])?;
        let der = made.cert.der().clone();
        Ok(Self {
            cert_pem: pem("CERTIFICATE", &der),
            key_pem: pem("PRIVATE KEY", &made.signing_key.serialize_der()),
            der,
        })
    }

    /// Write `cert.pem` and `key.pem` into `dir`; their paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A client configuration that trusts `cert` only.
pub fn client_config(cert: &CertificateDer<'static>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(HOST)?;
    Ok(TlsConnector::from(config).connect(name, tcp).await?)
}

/// The certificate the server at `addr` presents in a new handshake.
pub async fn presented_cert(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<CertificateDer<'static>> {
    let stream = connect(addr, config).await?;
    let (_, session) = stream.get_ref();
    let chain = session.peer_certificates().context("no certificate presented")?;
    Ok(chain.first().context("empty chain")?.clone().into_owned())
}

/// One HTTPS request on a new connection: status and body.
pub async fn request(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> Result<(u16, hyper::HeaderMap, Vec<u8>)> {
    let stream = connect(addr, config).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut req = Request::builder().method(method).uri(path).header("host", format!("{HOST}:{}", addr.port()));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = match body {
        Some(json) => req.header("content-type", "application/json").body(Body::from(json.to_string()))?,
        None => req.body(Body::empty())?,
    };
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(Body::new(res.into_body()), 1 << 20).await?;
    Ok((status, headers, bytes.to_vec()))
}

/// [`request`] returning the JSON body.
pub async fn json(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    api_key: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value)> {
    let auth = format!("Bearer {api_key}");
    let (status, _, bytes) = request(addr, config, method, path, &[("authorization", &auth)], body).await?;
    let value = if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes)? };
    Ok((status, value))
}

/// A WSS connection to `url` with `token` as the subprotocol.
pub async fn wss_connect(url: &str, token: &str, config: Arc<rustls::ClientConfig>) -> Result<Ws> {
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(token)?);
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(Connector::Rustls(config)))
        .await
        .map_err(|e| anyhow!("WSS connect to {url}: {e}"))?;
    Ok(ws)
}
