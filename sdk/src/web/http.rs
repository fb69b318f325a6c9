//! The media-plane HTTP calls (WHIP / WHEP-style) with `fetch`.

use super::js_error_text;
use stagecast_protocol::ApiError;
use thiserror::Error;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response};

/// A failed media-plane request.
#[derive(Debug, Clone, Error)]
pub enum HttpError {
    /// The server answered with an error status (and usually `{code, message}`).
    #[error("HTTP {status}")]
    Status { status: u16, body: Option<ApiError> },
    /// No answer: network failure, CORS, bad URL.
    #[error("network error: {0}")]
    Network(String),
}

/// The answer to a WHIP/WHEP offer.
#[derive(Debug, Clone)]
pub struct SdpAnswer {
    pub sdp: String,
    /// Absolute URL of the session resource (for `DELETE`).
    pub location: Option<String>,
    /// Absolute URL of the session's WHEP layer controls, if linked.
    pub layers: Option<String>,
}

fn net(e: JsValue) -> HttpError {
    HttpError::Network(js_error_text(&e))
}

async fn send(
    method: &str,
    url: &str,
    token: &str,
    body: Option<(&str, &str)>,
) -> Result<Response, HttpError> {
    let init = RequestInit::new();
    init.set_method(method);
    if let Some((_, body)) = body {
        init.set_body(&JsValue::from_str(body));
    }
    let request = Request::new_with_str_and_init(url, &init).map_err(net)?;
    let headers = request.headers();
    headers
        .set("Authorization", &format!("Bearer {token}"))
        .map_err(net)?;
    if let Some((content_type, _)) = body {
        headers.set("Content-Type", content_type).map_err(net)?;
    }
    let window = web_sys::window().ok_or_else(|| HttpError::Network("no window".into()))?;
    let response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(net)?;
    response.dyn_into::<Response>().map_err(net)
}

async fn text(response: &Response) -> Result<String, HttpError> {
    let promise = response.text().map_err(net)?;
    Ok(JsFuture::from(promise)
        .await
        .map_err(net)?
        .as_string()
        .unwrap_or_default())
}

/// POSTs an SDP offer; `201` + answer + `Location` on success.
pub async fn post_offer(url: &str, token: &str, offer: &str) -> Result<SdpAnswer, HttpError> {
    let response = send("POST", url, token, Some(("application/sdp", offer))).await?;
    let status = response.status();
    let body = text(&response).await?;
    if !(200..300).contains(&status) {
        return Err(HttpError::Status {
            status,
            body: crate::core::wire::parse_api_error(&body),
        });
    }
    let header = |name| response.headers().get(name).ok().flatten();
    let absolute = |to: String| web_sys::Url::new_with_base(&to, url).ok().map(|u| u.href());
    Ok(SdpAnswer {
        sdp: body,
        location: header("Location").and_then(absolute),
        layers: header("Link")
            .and_then(|link| crate::core::ice::link_with_rel(&link, crate::core::layers::LAYER_REL))
            .and_then(absolute),
    })
}

/// `GET` (`body: None`) or `POST` JSON to a session's layer controls; the
/// answer's text on success.
pub async fn layer_controls(url: &str, token: &str, body: Option<&str>) -> Result<String, HttpError> {
    let (method, body) = match body {
        Some(b) => ("POST", Some(("application/json", b))),
        None => ("GET", None),
    };
    let response = send(method, url, token, body).await?;
    match response.status() {
        s if (200..300).contains(&s) => text(&response).await,
        status => Err(HttpError::Status { status, body: None }),
    }
}

/// `OPTIONS` of a WHIP endpoint: its `Link` header (ICE servers, RFC 9725
/// §4.4), if it answered with one.
pub async fn options_link(url: &str, bearer: &str) -> Result<Option<String>, HttpError> {
    let response = send("OPTIONS", url, bearer, None).await?;
    Ok(response.headers().get("Link").ok().flatten())
}

/// DELETEs a session resource; failures are ignored by callers (the
/// server also ends sessions when their peer connection dies).
pub async fn delete(url: &str, token: &str) -> Result<(), HttpError> {
    let response = send("DELETE", url, token, None).await?;
    match response.status() {
        s if (200..300).contains(&s) || s == 404 => Ok(()),
        status => Err(HttpError::Status { status, body: None }),
    }
}
