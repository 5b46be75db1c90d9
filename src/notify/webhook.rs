//! The `webhook` receiver: the [`Notification`] itself as JSON, POSTed to `url`, with
//! `X-Bakewatch-Id` (for deduplication: delivery is at-least-once) and, with `hmac_secret`,
//! `X-Bakewatch-Signature: sha256=<hex HMAC-SHA256 of the raw body>`.
//!
//! ```toml
//! [[notifier]]
//! name = "hooks"
//! type = "webhook"
//! url = "https://hooks.example.com/bakewatch"
//! headers = { Authorization = { env = "HOOK_TOKEN" } }
//! hmac_secret = { file = "/etc/bakewatch/hook.key" }
//! tls = { ca_file = "/etc/bakewatch/ca.pem" }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

use super::shared;
use super::{Notification, SendError, Sent};
use crate::config::Secret;
use crate::config::reader::{At, Cx, TableReader};

/// Header carrying the notification's id.
pub const ID_HEADER: &str = "x-bakewatch-id";
/// Header carrying the body's HMAC-SHA256, as `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-bakewatch-signature";

/// Headers bakewatch sets itself; `headers` may not override them.
const RESERVED: &[&str] = &["content-type", ID_HEADER, SIGNATURE_HEADER];

#[derive(Debug)]
pub struct Webhook {
    url: Url,
    /// The configured headers; values from secrets are marked sensitive.
    headers: HeaderMap,
    /// Header values that came from env / file / credential.
    header_secrets: Vec<Secret>,
    hmac_secret: Option<Secret>,
    client: reqwest::Client,
    timeout: Duration,
}

impl Webhook {
    pub fn parse(t: &mut TableReader, cx: &mut Cx, timeout: Duration) -> Option<Webhook> {
        let before = cx.diags.len();
        let url = shared::req_url(t, cx, "url");
        let mut headers = HeaderMap::new();
        let mut header_secrets = Vec::new();
        if let Some(map) = t.opt::<BTreeMap<String, Secret>>("headers", cx) {
            let span = t.span_of("headers");
            for (name, value) in map {
                let Ok(hn) = HeaderName::from_bytes(name.as_bytes()) else {
                    cx.error(
                        span.clone(),
                        format!("headers: {name:?} is not a valid header name"),
                    );
                    continue;
                };
                if RESERVED.contains(&hn.as_str()) {
                    cx.error(
                        span.clone(),
                        format!("headers: {name:?} is set by bakewatch itself"),
                    );
                    continue;
                }
                let Ok(mut hv) = HeaderValue::from_str(value.expose()) else {
                    cx.error(
                        span.clone(),
                        format!("headers: the value of {name:?} is not a valid header value"),
                    );
                    continue;
                };
                if value.is_from_source() {
                    hv.set_sensitive(true);
                    header_secrets.push(value);
                }
                headers.append(hn, hv);
            }
        }
        let hmac_secret = t.opt::<At<Secret>>("hmac_secret", cx).and_then(|s| {
            if s.value.expose().is_empty() {
                cx.error(s.span, "hmac_secret: is empty");
                None
            } else {
                Some(s.value)
            }
        });
        let client = shared::build_client(t, cx, timeout, true);
        if cx.diags.len() > before {
            return None;
        }
        Some(Webhook {
            url: url?,
            headers,
            header_secrets,
            hmac_secret,
            client: client?,
            timeout,
        })
    }

    pub async fn send(&self, n: &Notification, reference: Option<&str>) -> Result<Sent, SendError> {
        let _ = reference;
        let body = serde_json::to_vec(n)
            .map_err(|e| SendError::reject(format!("cannot encode the notification: {e}")))?;
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let id = HeaderValue::from_str(&n.id)
            .map_err(|_| SendError::reject("the notification id is not a valid header value"))?;
        headers.insert(HeaderName::from_static(ID_HEADER), id);
        if let Some(secret) = &self.hmac_secret {
            headers.insert(
                HeaderName::from_static(SIGNATURE_HEADER),
                HeaderValue::from_str(&signature(secret.expose().as_bytes(), &body))
                    .expect("hex is a valid header value"),
            );
        }
        let req = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .headers(headers)
            .body(body);
        shared::execute(req, self.timeout)
            .await
            .map(|_| Sent::default())
            .map_err(|e| shared::scrub(e, &self.secret_values()))
    }

    pub fn secret_values(&self) -> Vec<String> {
        let mut out = shared::secret_strings(self.hmac_secret.iter().chain(&self.header_secrets));
        out.extend(shared::url_secrets(&self.url));
        out
    }
}

/// `sha256=<hex of HMAC-SHA256(key, body)>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
