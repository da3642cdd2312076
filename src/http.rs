//! The one way beamops builds an HTTP client (GitHub's API for chapter 04, Prometheus and
//! Alertmanager for chapters 11 and 12).

/// A blocking client builder with beamops' user agent. reqwest is built without a default TLS
/// provider (Cargo.toml: `rustls-no-provider`), and building a client without one panics: the
/// ring provider the rest of beamops' TLS uses is installed here, once per process.
pub fn client() -> reqwest::blocking::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder().user_agent(concat!("beamops/", env!("CARGO_PKG_VERSION")))
}
