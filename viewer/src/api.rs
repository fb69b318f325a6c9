//! The demo backend calls the page makes (`/api/list`, `/api/chat-token`,
//! `/api/channels/{id}`).

use js_sys::{Array, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response};

/// Reads `obj[key]` (undefined when absent or not an object).
pub fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// `obj[key]` as a string, if it is one.
pub fn get_str(obj: &JsValue, key: &str) -> Option<String> {
    get(obj, key).as_string()
}

/// A readable message from a thrown JS value.
pub fn js_error_text(e: &JsValue) -> String {
    get_str(e, "errorMessage")
        .or_else(|| get_str(e, "message"))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "unknown error".to_owned())
}

/// `POST url` with a JSON body; the parsed JSON answer, or the error text
/// (the backend's `message` for a 4xx/5xx).
pub async fn post_json(url: &str, body: Option<&str>) -> Result<JsValue, String> {
    fetch_json("POST", url, body).await.map_err(|(_, message)| message)
}

/// `method url` with an optional JSON body; the parsed JSON answer, or the
/// HTTP status (0 when there was no answer) and the error text.
async fn fetch_json(method: &str, url: &str, body: Option<&str>) -> Result<JsValue, (u16, String)> {
    let no_answer = |e: String| (0, e);
    let init = RequestInit::new();
    init.set_method(method);
    if let Some(body) = body {
        init.set_body(&JsValue::from_str(body));
    }
    let request =
        Request::new_with_str_and_init(url, &init).map_err(|e| no_answer(js_error_text(&e)))?;
    if body.is_some() {
        request
            .headers()
            .set("Content-Type", "application/json")
            .map_err(|e| no_answer(js_error_text(&e)))?;
    }
    let window = web_sys::window().ok_or_else(|| no_answer("no window".to_owned()))?;
    let response: Response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(|e| no_answer(js_error_text(&e)))?
        .dyn_into()
        .map_err(|_| no_answer("fetch did not return a Response".to_owned()))?;
    let json = match response.json() {
        Ok(p) => JsFuture::from(p).await.unwrap_or(JsValue::NULL),
        Err(_) => JsValue::NULL,
    };
    if response.ok() {
        Ok(json)
    } else {
        let status = response.status();
        Err((status, get_str(&json, "message").unwrap_or_else(|| format!("HTTP {status}"))))
    }
}

/// What `/api/list` says about one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub live: bool,
    pub playback_url: Option<String>,
    pub host_name: Option<String>,
    pub channel_id: Option<String>,
}

/// The group's entry in `/api/list` (asked by `groupId`, so it is found
/// however many groups there are): `Ok(None)` when the group does not
/// exist (any more), `Err` when the backend could not be asked.
pub async fn group_status(group_id: &str) -> Result<Option<GroupStatus>, String> {
    let url = format!("/api/list?groupId={}", String::from(js_sys::encode_uri_component(group_id)));
    let list = post_json(&url, None).await?;
    if !Array::is_array(&list) {
        return Err("/api/list did not answer a list".to_owned());
    }
    let item = Array::from(&list)
        .iter()
        .find(|i| get_str(i, "groupId").as_deref() == Some(group_id));
    Ok(item.map(|i| GroupStatus {
        live: get(&i, "live").as_bool().unwrap_or(false),
        playback_url: get_str(&i, "playbackUrl"),
        host_name: get_str(&get(&i, "stageAttributes"), "username"),
        channel_id: get_str(&i, "channelId"),
    }))
}

/// An HLS resource (`HEAD` or `GET`, never from a cache): its body (empty
/// for `HEAD`; `None` unless 2xx) and how far the server's clock is ahead
/// of this device's (ms), from its `x-server-time-ms`, taking the middle of
/// the round trip as the moment the server read its clock.
pub async fn hls_fetch(method: &str, url: &str) -> (Option<String>, Option<f64>) {
    let init = RequestInit::new();
    init.set_method(method);
    init.set_cache(web_sys::RequestCache::NoStore);
    let (Ok(request), Some(window)) = (Request::new_with_str_and_init(url, &init), web_sys::window()) else {
        return (None, None);
    };
    let sent = js_sys::Date::now();
    let Some(response) = JsFuture::from(window.fetch_with_request(&request))
        .await
        .ok()
        .and_then(|r| r.dyn_into::<Response>().ok())
    else {
        return (None, None);
    };
    let received = js_sys::Date::now();
    let server = response.headers().get("x-server-time-ms").ok().flatten().and_then(|t| t.parse::<f64>().ok());
    let offset = server.map(|s| s - (sent + received) / 2.0);
    let body = match (response.ok(), response.text()) {
        (true, Ok(p)) => JsFuture::from(p).await.ok().and_then(|t| t.as_string()),
        _ => None,
    };
    (body, offset)
}

/// What `/api/channels/{id}` says about a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStatus {
    pub name: String,
    pub live: bool,
    pub playback_url: String,
}

/// The channel's state and playback URL: `Ok(None)` when the channel does
/// not exist (any more), `Err` when the backend could not be asked.
pub async fn channel_status(channel_id: &str) -> Result<Option<ChannelStatus>, String> {
    let url = format!("/api/channels/{}", String::from(js_sys::encode_uri_component(channel_id)));
    let channel = match fetch_json("GET", &url, None).await {
        Ok(channel) => channel,
        Err((404, _)) => return Ok(None),
        Err((_, message)) => return Err(message),
    };
    let playback_url =
        get_str(&channel, "playbackUrl").ok_or("/api/channels did not answer a channel")?;
    Ok(Some(ChannelStatus {
        name: get_str(&channel, "name").unwrap_or_default(),
        live: get_str(&channel, "state").as_deref() == Some("LIVE"),
        playback_url,
    }))
}

/// One recording of a channel, as `/recordings/{channelId}` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub id: String,
    pub start_time: String,
    pub duration_seconds: f64,
    pub playback_url: String,
    /// The first thumbnail, if there is one.
    pub thumbnail: Option<String>,
    /// No broadcast goes into it any more.
    pub ended: bool,
}

/// The recordings of a channel, newest first (with the page's playback
/// token for a private channel).
pub async fn recordings(channel_id: &str, token: Option<&str>) -> Result<Vec<Recording>, String> {
    let mut url = format!("/recordings/{}", String::from(js_sys::encode_uri_component(channel_id)));
    if let Some(token) = token {
        url.push_str(&format!("?token={}", String::from(js_sys::encode_uri_component(token))));
    }
    let body = fetch_json("GET", &url, None).await.map_err(|(_, message)| message)?;
    let list = get(&body, "recordings");
    if !Array::is_array(&list) {
        return Err("/recordings did not answer a list".to_owned());
    }
    Ok(Array::from(&list)
        .iter()
        .filter_map(|r| {
            Some(Recording {
                id: get_str(&r, "id")?,
                start_time: get_str(&r, "startTime").unwrap_or_default(),
                duration_seconds: get(&r, "durationSeconds").as_f64().unwrap_or(0.0),
                playback_url: get_str(&r, "playbackUrl")?,
                thumbnail: Array::from(&get(&r, "thumbnails")).iter().next().and_then(|t| t.as_string()),
                ended: get_str(&r, "state").as_deref() == Some("ENDED"),
            })
        })
        .collect())
}

/// Resolves after `ms` milliseconds.
pub async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = JsFuture::from(promise).await;
}
