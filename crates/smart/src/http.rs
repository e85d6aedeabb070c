//! The HTTP reads the SMART client makes of a server's published documents (its
//! configuration, its keys): JSON asked for, transport failures said without the URL.

use crate::error::SmartError;

/// A party's published keys (a JWKS document at `url`), read tolerantly
/// ([`jose::parse_jwks`]) within 512 KB.
pub async fn fetch_jwks(
    http: &reqwest::Client,
    url: &str,
) -> Result<jose::jwk::JwkSet, SmartError> {
    let response = get_json(http, url).await?;
    if !response.status().is_success() {
        return Err(SmartError::IdToken(format!(
            "jwks_uri answered {}",
            response.status().as_u16()
        )));
    }
    let body = fhir::http::read_capped(response, 512 * 1024)
        .await
        .map_err(|e| SmartError::Unreachable(e.to_string()))?;
    jose::parse_jwks(&body).map_err(|e| SmartError::IdToken(format!("JWKS: {e}")))
}

/// `GET url` asking for JSON; a transport failure is `Unreachable`, said without the URL.
pub(crate) async fn get_json(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
) -> Result<reqwest::Response, SmartError> {
    http.get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| SmartError::Unreachable(e.without_url().to_string()))
}
