//! The control plane's API as the CLI sees it: HTTPS trusting only the control plane's CA, a
//! bearer token, and errors turned into [`CliError`]s with the right exit code.

use std::sync::Arc;
use std::time::Duration;

use atoll_api::ErrorBody;
use reqwest::{Method, StatusCode};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::error::{CliError, Exit, Result};

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    pub fn from_config(config: &Config) -> Result<Client> {
        let url = config.url.clone().ok_or_else(|| {
            CliError::user(
                "no control plane configured: run `atoll login` (or `atoll dev`), or set ATOLL_URL",
            )
        })?;
        let token = config.token.clone().ok_or_else(|| {
            CliError::user("no token configured: run `atoll login`, or set ATOLL_TOKEN")
        })?;
        let ca = config.ca_file.as_ref().ok_or_else(|| {
            CliError::user(
                "no CA certificate configured: run `atoll login --ca-file`, or set ATOLL_CA_FILE",
            )
        })?;
        let pem = std::fs::read(ca)
            .map_err(|e| CliError::user(format!("CA certificate {}: {e}", ca.display())))?;
        Client::new(url, token, &pem)
            .map_err(|e| CliError::user(format!("CA certificate {}: {}", ca.display(), e.message)))
    }

    pub fn new(url: String, token: String, ca_pem: &[u8]) -> Result<Client> {
        let mut roots = rustls::RootCertStore::empty();
        let mut any = false;
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| CliError::user(format!("not a PEM certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| CliError::user(format!("unusable certificate: {e}")))?;
            any = true;
        }
        if !any {
            return Err(CliError::user("no certificate found in the PEM file"));
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::user(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| CliError::user(format!("HTTP client setup: {e}")))?;
        Ok(Client {
            http,
            url: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send::<(), T>(Method::GET, path, None).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send::<(), T>(Method::DELETE, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(Method::PATCH, path, Some(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(Method::PUT, path, Some(body)).await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let url = format!("{}{path}", self.url);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| unreachable(&self.url, &e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unreachable(&self.url, &e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                CliError::server(format!(
                    "the control plane sent an answer this CLI cannot read: {e}"
                ))
            });
        }
        let exit = if status.is_server_error() {
            Exit::Server
        } else {
            Exit::User
        };
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => {
                let message = match status {
                    StatusCode::UNAUTHORIZED => format!(
                        "{} (run `atoll login` with a valid token)",
                        body.error.message
                    ),
                    _ => body.error.message,
                };
                Err(CliError {
                    exit,
                    message,
                    diagnostics: body.error.diagnostics,
                })
            }
            Err(_) => Err(CliError {
                exit,
                message: format!("{url}: HTTP {status}"),
                diagnostics: Vec::new(),
            }),
        }
    }
}

fn unreachable(url: &str, e: &reqwest::Error) -> CliError {
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    CliError::server(format!("cannot reach the control plane at {url}: {cause}"))
}
